"""What a PostgreSQL live table has besides its rows, carried to the table a full swap makes live.

A full cutover (or a rollback of one) renames live away and another table to live's name; grants,
owner, comments, NOT NULL, constraints and indexes belong to the table, not to the name, so the new
live had none of them: a BI role's SELECT failed, lookups lost their index. ``carry`` gives the
incoming table live's surroundings before the swap (indexes are built under temporary names, so
readers of live are not blocked meanwhile); the step it returns, run after the renames, gives them
live's names and the old table's derived ones (index names are unique per schema), so the old
table keeps its indexes for a rollback (an index or constraint on a column the new table lacks is
left out, with a warning). What cannot be carried (triggers, rules, row security,
publications, foreign keys that point at live) is refused, all inside the caller's transaction.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from lake.sql import literal, quote
from rebuild.errors import StoreError

log = logging.getLogger(__name__)
OLD, NEW = "__previous", "__incoming"  # index name suffixes: the old table's, the new one's before the swap
MAX_NAME = 63  # PostgreSQL's identifier length (NAMEDATALEN - 1)
ACL = (
    "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END, "
    "a.privilege_type, a.is_grantable FROM pg_class c, "
    "aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a WHERE c.oid = %s::regclass ORDER BY 1, 2"
)
COLUMN_ACL = (
    "SELECT t.attname, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END, "
    "a.privilege_type, a.is_grantable FROM pg_attribute t, aclexplode(t.attacl) a "
    "WHERE t.attrelid = %s::regclass AND t.attnum > 0 AND NOT t.attisdropped ORDER BY 1, 2, 3"
)
INDEXES = (
    "SELECT i.relname, quote_ident(i.relname), format('%%I.%%I', n.nspname, t.relname), x.indisunique, "
    "pg_get_indexdef(x.indexrelid), c.conname IS NOT NULL, pg_get_constraintdef(c.oid) "
    "FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
    "JOIN pg_namespace n ON n.oid = t.relnamespace "
    "LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid AND c.conrelid = x.indrelid "
    "WHERE x.indrelid = %s::regclass ORDER BY 1"
)
UNCARRIED = {  # what belongs to live's table and is not carried: a query for each, of names
    "triggers": "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal",
    "rules": "SELECT rulename FROM pg_rewrite WHERE ev_class = %s::regclass AND rulename <> '_RETURN'",
    "row security policies": "SELECT polname FROM pg_policy WHERE polrelid = %s::regclass UNION ALL "
                             "SELECT 'row level security' FROM pg_class WHERE oid = %s::regclass AND relrowsecurity",
    "publications": "SELECT p.pubname FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid "
                    "WHERE r.prrelid = %s::regclass",
    "foreign keys pointing at it": "SELECT conrelid::regclass::text || '.' || conname FROM pg_constraint "
                                   "WHERE contype = 'f' AND confrelid = %s::regclass",
}  # fmt: skip


@dataclass(frozen=True)
class Index:
    """An index of a table, or its constraint when it has one (PRIMARY KEY, UNIQUE, EXCLUDE)."""

    name: str
    definition: str  # the constraint's definition, or the index's from USING on
    constraint: bool
    unique: bool

    def create(self, table: str, name: str) -> str:
        if self.constraint:
            return f"ALTER TABLE {quote(table)} ADD CONSTRAINT {quote(name)} {self.definition}"
        return f"CREATE {'UNIQUE ' if self.unique else ''}INDEX {quote(name)} ON {quote(table)} {self.definition}"

    def drop(self, table: str) -> str:
        if self.constraint:
            return f"ALTER TABLE {quote(table)} DROP CONSTRAINT {quote(self.name)}"
        return f"DROP INDEX {quote(self.name)}"

    def same(self, other: Index) -> bool:
        return (self.definition, self.constraint, self.unique) == (other.definition, other.constraint, other.unique)

    def __str__(self) -> str:
        return f"{'constraint' if self.constraint else 'index'} {self.name} ({self.definition})"


def derived(name: str, suffix: str) -> str:
    """``name`` + ``suffix`` within PostgreSQL's 63 bytes (a long name keeps a hash of itself)."""
    full = name + suffix
    if len(full.encode()) <= MAX_NAME:
        return full
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    head = name.encode()[: MAX_NAME - len(suffix) - 9].decode(errors="ignore")
    return f"{head}_{digest}{suffix}"


class Carrier:
    """Gives the table ``incoming`` (of ``view``) what ``live`` has besides its rows, on one session."""

    def __init__(self, conn: psycopg.Connection[Any], schema: str, view: str, live: str, incoming: str) -> None:
        self.conn, self.view, self.live, self.incoming = conn, view, live, incoming
        self.src, self.dst = f"{quote(schema)}.{quote(live)}", f"{quote(schema)}.{quote(incoming)}"

    def rows(self, sql: str, table: str) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, (table,) * sql.count("%s")).fetchall()  # type: ignore[arg-type]

    def run(self, what: str, sql: str) -> None:
        try:
            self.conn.execute(sql.encode("utf-8"))  # bytes: a % in a comment is no placeholder
        except psycopg.Error as exc:
            raise self.refusal(what, exc) from exc

    def refusal(self, what: str, exc: psycopg.Error) -> StoreError:
        if isinstance(exc, psycopg.IntegrityError):
            return StoreError(
                f"the rows becoming live {self.view} break live's {what}: {_first_line(exc)}; nothing was changed. "
                f"Fix the projection so its rows keep it (or drop it from live {self.view} if it should no longer "
                "hold), then rerun this command", view=self.view)
        return StoreError(
            f"cannot give the table becoming live {self.view} live's {what}: {_first_line(exc)}; nothing was "
            f"changed. Drop it from live {self.view}, rerun this command and create it again; or {_patch(self.view)}",
            view=self.view)

    def run_on_columns(self, what: str, sql: str) -> bool:
        """``run``, except that an index or constraint on a column the incoming table lacks (a full
        rebuild that dropped or renamed it) is left out with a warning: it has nothing to apply to."""
        self.conn.execute("SAVEPOINT carry")
        try:
            self.conn.execute(sql.encode("utf-8"))
        except psycopg.errors.UndefinedColumn as exc:
            self.conn.execute("ROLLBACK TO SAVEPOINT carry")
            log.warning("live %s's %s is not carried to the new %s: %s", self.view, what, self.view, _first_line(exc))
            return False
        except psycopg.Error as exc:
            raise self.refusal(what, exc) from exc
        self.conn.execute("RELEASE SAVEPOINT carry")
        return True

    def refuse_uncarried(self) -> None:
        found = {kind: [r[0] for r in self.rows(sql, self.src)] for kind, sql in UNCARRIED.items()}
        parts = [f"{kind} {names}" for kind, names in found.items() if names]
        if parts:
            raise StoreError(
                f"{self.live} has {', '.join(parts)}: they belong to the table, not to its name, and a full cutover "
                f"or rollback would leave them on the table renamed away (grants, owner, comments, constraints and "
                f"indexes are carried; these are not). Drop them, rerun this command and create them again; or "
                f"{_patch(self.view)}", view=self.view, table=self.live, uncarried={k: v for k, v in found.items() if v})

    def owner_and_grants(self) -> None:
        owner = {t: self.rows("SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = %s::regclass", t)[0][0]
                 for t in (self.src, self.dst)}
        if owner[self.src] != owner[self.dst]:
            self.run(f"owner {owner[self.src]}", f"ALTER TABLE {quote(self.incoming)} OWNER TO {quote(owner[self.src])}")
        for grantee in sorted({r[0] for r in self.rows(ACL, self.dst)}):
            self.run(f"grants (revoking the incoming table's own from {grantee})",
                     f"REVOKE ALL ON {quote(self.incoming)} FROM {grantee}")
        for grantee, privilege, grantable in self.rows(ACL, self.src):
            self.run(f"grant of {privilege} to {grantee}", f"GRANT {privilege} ON {quote(self.incoming)} TO {grantee}"
                     f"{' WITH GRANT OPTION' if grantable else ''}")
        columns = set(self.columns(self.dst))
        for column, grantee, privilege, grantable in self.rows(COLUMN_ACL, self.src):
            if column in columns:
                self.run(f"grant of {privilege} ({column}) to {grantee}",
                         f"GRANT {privilege} ({quote(column)}) ON {quote(self.incoming)} TO {grantee}"
                         f"{' WITH GRANT OPTION' if grantable else ''}")

    def columns(self, table: str) -> dict[str, tuple[bool, str | None]]:
        """Each column: NOT NULL, comment."""
        return {r[0]: (r[1], r[2]) for r in self.rows(
            "SELECT attname, attnotnull, col_description(attrelid, attnum) FROM pg_attribute "
            "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped", table)}

    def comments_and_not_null(self) -> None:
        comment = {t: self.rows("SELECT obj_description(%s::regclass, 'pg_class')", t)[0][0] for t in (self.src, self.dst)}
        if comment[self.src] != comment[self.dst]:
            self.run("comment", f"COMMENT ON TABLE {quote(self.incoming)} IS {literal(comment[self.src])}")
        live, incoming = self.columns(self.src), self.columns(self.dst)
        for column, (not_null, note) in live.items():
            if column not in incoming:
                continue
            if note != incoming[column][1]:
                self.run(f"comment on {column}", f"COMMENT ON COLUMN {quote(self.incoming)}.{quote(column)} IS {literal(note)}")
            if not_null and not incoming[column][0]:
                self.run(f"NOT NULL on {column}", f"ALTER TABLE {quote(self.incoming)} ALTER COLUMN {quote(column)} SET NOT NULL")

    def checks(self) -> None:
        """CHECK and FOREIGN KEY constraints: their names are the table's own, so they keep them."""
        sql = "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass AND contype IN ('c', 'f')"
        have = dict(self.rows(sql, self.dst))
        for name, definition in self.rows(sql, self.src):
            if have.get(name) == definition:
                continue
            if name in have:
                self.run(f"constraint {name}", f"ALTER TABLE {quote(self.incoming)} DROP CONSTRAINT {quote(name)}")
            self.run_on_columns(f"constraint {name} ({definition})",
                                f"ALTER TABLE {quote(self.incoming)} ADD CONSTRAINT {quote(name)} {definition}")

    def indexes(self, table: str) -> list[Index]:
        found = []
        for name, ident, qualified, unique, indexdef, constraint, condef in self.rows(INDEXES, table):
            if constraint:
                found.append(Index(name, condef, True, unique))
                continue
            prefix = f"CREATE {'UNIQUE ' if unique else ''}INDEX {ident} ON "
            rest = indexdef.removeprefix(prefix).removeprefix("ONLY ")
            found.append(Index(name, rest.removeprefix(qualified).lstrip(), False, unique))
        return found

    def build_indexes(self) -> list[Index]:
        """Live's indexes on the incoming table under temporary names: its own (a rollback's) when the same."""
        own, built = {i.name: i for i in self.indexes(self.dst)}, []
        for index in self.indexes(self.src):
            mine = own.pop(derived(index.name, OLD), None)
            if mine is not None and mine.same(index):
                self.run(str(index), f"ALTER INDEX {quote(mine.name)} RENAME TO {quote(derived(index.name, NEW))}")
                built.append(index)
                continue
            if mine is not None:
                self.run(str(mine), mine.drop(self.incoming))
            if self.run_on_columns(str(index), index.create(self.incoming, derived(index.name, NEW))):
                built.append(index)
        for stale in own.values():
            if stale.name.endswith(OLD):  # a previous table's index live no longer has
                self.run(str(stale), stale.drop(self.incoming))
        return built

    def names_after_swap(self, live: list[Index]) -> None:
        """The old table's indexes take derived names, the new live's take live's."""
        for index in live:
            self.run(str(index), f"ALTER INDEX {quote(index.name)} RENAME TO {quote(derived(index.name, OLD))}")
        for index in live:
            self.run(str(index), f"ALTER INDEX {quote(derived(index.name, NEW))} RENAME TO {quote(index.name)}")


def carry(conn: psycopg.Connection[Any], schema: str, view: str, live: str, incoming: str) -> Callable[[], None]:
    """Give ``incoming`` what ``live`` has besides its rows; call the result once the tables are swapped."""
    carrier = Carrier(conn, schema, view, live, incoming)
    carrier.refuse_uncarried()
    carrier.owner_and_grants()
    carrier.comments_and_not_null()
    carrier.checks()
    indexes = carrier.build_indexes()
    return lambda: carrier.names_after_swap(indexes)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _patch(view: str) -> str:
    return (f"correct live in place with a patch (`rebuild run {view} --keys ...` or `--since/--until`), "
            "whose cutover changes live's rows, not its table")
