"""Archive a PostgreSQL event table into the lake, resuming from the last archived position.

Each poll reads the rows whose position column (an integer, usually the primary key ``id``) is
above the position stored with the last commit from this source, up to the maximum position
seen when the poll starts, in keyset pages (``WHERE id > $1 AND id <= $2 ORDER BY id``, about n
rows, never splitting the rows that share a position) fetched as Arrow through ADBC. The pages go through the same staging, checks, de-duplication
and quarantine as files; the new position is written in the same Delta commit as the events, so a
crash never archives events without their position or a position without its events. A poll that
reads rows but archives none (all duplicates or quarantined) still commits the position (an empty
commit); a poll that finds no new rows commits nothing.

The position is a Delta application transaction (``txn``: appId ``["<source>", "<stream>"]``,
version = position), which Delta's checkpoints keep: a source idle for longer than the log
retention (30 days) while other streams commit keeps its position, and reading it walks no
history. The commit also carries it as metadata (``workbench.source`` / ``workbench.stream`` /
``workbench.position``), for people reading the history; lakes polled before the ``txn`` was
written are resumed from that metadata.

Caveat: a sequence-assigned id can become visible after a larger one (two writers committing out
of order). A row that appears below an already archived position is not picked up by later polls;
when writers can commit out of order, poll a column assigned in commit order, or with a lag.

Passwords in the URI never appear in messages: errors are built from a redacted description.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa

from lake.errors import SourceError
from lake.ingest import Batch, IngestResult, ingest_batches
from lake.mapping import REQUIRED, Mapping
from lake.table import Lake

log = logging.getLogger(__name__)

# the first poll reads every position above this one: 0 and negative positions too (offsets start at 0)
BEFORE_ANY = -(2**63)
INTEGER_TYPES = {"int2", "int4", "int8", "smallint", "integer", "bigint"}
_URI_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]*@")
_PARAM_PASSWORD = re.compile(r"(?i)(password\s*=\s*)('[^']*'|[^&\s]*)")


@dataclass(frozen=True)
class _Source:
    """The table to read, and the name its positions are stored under in the lake."""

    schema: str
    table: str
    database: str
    position_column: str

    @property
    def key(self) -> str:
        return f"postgres:{self.database}/{self.schema}.{self.table}"


def ingest_postgres(
    lake: Lake,
    uri: str,
    table: str,
    *,
    stream: str | None,
    mapping: Mapping | None = None,
    position_column: str = "id",
    batch_rows: int = 100_000,
    max_rows: int | None = None,
    memory_limit: str = "2GB",
    temp_directory: str | None = None,
) -> IngestResult:
    """Archive the rows of ``table`` ([schema.]table) added since the last poll, in one commit.

    ``max_rows`` bounds one poll (the next poll continues where it stopped). Raises
    :class:`SourceError` when the server cannot be reached, the table or a mapped column does
    not exist, or the position column is not an integer.
    """
    mapping = mapping or Mapping()
    schema_name, table_name = _split_table(table)
    with _connect(uri) as conn:
        database = str(conn.info.dbname)
        source = _Source(schema_name, table_name, database, position_column)
        columns = _columns(conn, source, uri)
        _check_columns(source, columns, mapping)
        _warn_unpositioned(conn, source)
        stored = last_position(lake, source.key, stream)
        after = BEFORE_ANY if stored is None else stored
        upto = _upper_bound(conn, source, after, max_rows, uri)
    metadata = {"workbench.source": source.key, "workbench.stream": stream or ""}
    position = None
    if upto is None:  # nothing new: no commit at all
        batches: Iterator[Batch] = iter(())
        metadata = {}
    else:
        metadata["workbench.position"] = str(upto)
        position = (_app_id(source.key, stream), upto)
        batches = _pages(uri, source, list(columns), after, upto, batch_rows)
    result = ingest_batches(
        lake,
        batches,
        stream=stream,
        mapping=mapping,
        sources=[source.key],
        memory_limit=memory_limit,
        temp_directory=temp_directory,
        commit_metadata=metadata or None,
        position=position,
    )
    log.info("polled %s after position %s up to %s", source.key, after, upto)
    return result


def last_position(lake: Lake, source_key: str, stream: str | None) -> int | None:
    """The position stored with the newest commit from ``source_key`` into ``stream`` (None: none)."""
    if not lake.exists():
        return None
    stored = lake.position(_app_id(source_key, stream))
    if stored is not None:
        return stored
    # a lake polled before positions were Delta transactions: the newest commit metadata holds it
    # (unless Delta has removed that log entry: then the poll reads the table again, de-duplicated)
    for _, meta in lake.commit_metadata():
        if meta.get("workbench.source") == source_key and meta.get("workbench.stream") == (stream or ""):
            return int(meta["workbench.position"])
    return None


def _app_id(source_key: str, stream: str | None) -> str:
    """The Delta appId of a source's position: a JSON pair, so no source or stream name can make
    two pairs look the same."""
    return json.dumps([source_key, stream or ""])


# -- connection and checks ------------------------------------------------------------------------
def redact(text: str, uri: str) -> str:
    """``text`` without the password of ``uri`` (as a URI part, a parameter or a bare string)."""
    text = _PARAM_PASSWORD.sub(r"\1***", _URI_PASSWORD.sub(r"\g<head>***@", text))
    password = _password(uri)
    return text.replace(password, "***") if password else text


def _password(uri: str) -> str | None:
    from psycopg.conninfo import conninfo_to_dict

    try:
        return conninfo_to_dict(uri).get("password") or None  # type: ignore[return-value]
    except Exception:  # a malformed URI: the regexes above still hide URI-style passwords
        return None


def _where(uri: str) -> str:
    return redact(uri, uri)


def _connect(uri: str):  # type: ignore[no-untyped-def]
    import psycopg

    try:
        return psycopg.connect(uri, connect_timeout=10, autocommit=True)
    except (psycopg.Error, ValueError) as exc:
        # ``from None``: the driver's exception may carry the connection string
        raise SourceError(
            f"cannot connect to PostgreSQL at {_where(uri)}: {redact(str(exc).strip(), uri)}; "
            "check the URI and that the server is running, nothing was archived",
            file=_where(uri),
        ) from None


def _other_case(conn, source: _Source) -> str:  # type: ignore[no-untyped-def]
    """A hint when the table exists under another case: names are quoted, so `App.ev` is not `app.ev`."""
    conn.rollback()  # the failed statement aborted the transaction
    row = conn.execute(
        "SELECT table_schema, table_name FROM information_schema.tables "
        "WHERE lower(table_schema) = lower(%s) AND lower(table_name) = lower(%s) LIMIT 1",
        (source.schema, source.table),
    ).fetchone()
    if not row:
        return ""
    name = ".".join(f'"{part.replace(chr(34), chr(34) * 2)}"' if "." in part or '"' in part else part for part in row)
    return f" (there is a table {name}: names are case-sensitive, give --table {shlex.quote(name)})"


#: a part of ``[schema.]table``: in double quotes as SQL writes it (a dot inside, "" for a quote), or as written
_PART = r'"((?:[^"]|"")+)"|([^."]+)'
_TABLE = re.compile(rf"(?:{_PART})(?:\.(?:{_PART}))?")


def _split_table(table: str) -> tuple[str, str]:
    """``table`` or ``schema.table``; a name holding a dot is double-quoted (``sales."order.events"``). Unlike
    SQL, a name without quotes keeps its case too: every name is quoted in the queries."""
    match = _TABLE.fullmatch(table)
    if match is None:
        raise SourceError(f"table {table!r} is not [schema.]table (double-quote a name that holds a dot: "
                          '\'"my.schema"."order.events"\')', file=table)
    first, quoted, plain = _name(*match.group(1, 2)), *match.group(3, 4)
    if quoted is None and plain is None:
        return "public", first
    return first, _name(quoted, plain)


def _name(quoted: str | None, plain: str | None) -> str:
    return quoted.replace('""', '"') if quoted is not None else plain or ""


def _qualified(source: _Source):  # type: ignore[no-untyped-def]
    from psycopg import sql

    return sql.Identifier(source.schema, source.table)


def _columns(conn, source: _Source, uri: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Column name -> PostgreSQL type name, in table order."""
    import psycopg
    from psycopg import sql

    query = sql.SQL("SELECT * FROM {} LIMIT 0").format(_qualified(source))
    try:
        cur = conn.execute(query)
    except psycopg.errors.UndefinedTable:
        raise SourceError(
            f"PostgreSQL table {source.schema}.{source.table} does not exist in database "
            f"{source.database} at {_where(uri)}{_other_case(conn, source)}; nothing was archived",
            file=source.key,
        ) from None
    except psycopg.Error as exc:
        raise SourceError(
            f"cannot read {source.key}: {redact(str(exc).strip(), uri)}", file=source.key
        ) from None
    names = {}
    for column in cur.description or []:
        info = conn.adapters.types.get(column.type_code)
        names[column.name] = info.name if info is not None else str(column.type_code)
    return names


def _check_columns(source: _Source, columns: dict[str, str], mapping: Mapping) -> None:
    # the identity mapping lets optional envelope columns be absent; a declared mapping does not
    declared = mapping.fields if mapping != Mapping() else {c: mapping.fields[c] for c in REQUIRED}
    wanted = [*declared.values(), *mapping.metadata_fields, source.position_column]
    missing = sorted({c for c in wanted if c not in columns})
    if missing:
        fix = ("Name the table's position column with --position-column (position_column= in Python)"
               if missing == [source.position_column] else "Fix the mapping with --map")
        raise SourceError(
            f"{source.key} has no column {missing} that mapping {mapping.name!r} (or the position column "
            f"{source.position_column!r}) needs; it has {list(columns)}. {fix}; nothing was archived",
            file=source.key,
        )
    kind = columns[source.position_column]
    if kind not in INTEGER_TYPES:
        raise SourceError(
            f"position column {source.position_column!r} of {source.key} is {kind}, not an "
            "integer: pass an integer column that grows with each new row",
            file=source.key,
        )


def _warn_unpositioned(conn, source: _Source) -> None:  # type: ignore[no-untyped-def]
    """Rows whose position is NULL match no ``position > n``: no poll ever archives them. Say so
    (a column declared NOT NULL, a primary key say, is not counted)."""
    from psycopg import sql

    nullable = conn.execute(
        "SELECT NOT attnotnull FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s",
        (sql.SQL("{}").format(_qualified(source)).as_string(conn), source.position_column),
    ).fetchone()
    if not nullable or not nullable[0]:
        return
    query = sql.SQL("SELECT count(*) FROM {t} WHERE {p} IS NULL").format(
        t=_qualified(source), p=sql.Identifier(source.position_column))
    row = conn.execute(query).fetchone()
    if row and row[0]:
        log.warning("%s: %s rows have no %s (NULL), so no poll archives them; give them a position",
                    source.key, row[0], source.position_column)


def _upper_bound(conn, source: _Source, after: int, max_rows: int | None, uri: str) -> int | None:  # type: ignore[no-untyped-def]
    """The largest position this poll reads (None: no new rows): fixed before reading starts."""
    from psycopg import sql

    position = sql.Identifier(source.position_column)
    inner = sql.SQL("SELECT {p} FROM {t} WHERE {p} > %s ORDER BY {p}").format(p=position, t=_qualified(source))
    if max_rows is not None:
        inner = sql.SQL("{} LIMIT {}").format(inner, sql.Literal(int(max_rows)))
    query = sql.SQL("SELECT max({p}) FROM ({q}) AS page").format(p=position, q=inner)
    row = conn.execute(query, (after,)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


# -- reading ------------------------------------------------------------------------------------
def _pages(
    uri: str, source: _Source, columns: list[str], after: int, upto: int, rows: int
) -> Iterator[Batch]:
    """Keyset pages as typed Arrow tables with ``_line`` = the row's position.

    A page ends at the position of its ``rows``-th row and holds every row at that position, so a
    position shared by several rows (a non-unique column) is never split across pages: the next
    page starts above it, and a split run would lose its rest.
    """
    import adbc_driver_postgresql.dbapi as adbc
    from psycopg import sql

    position = sql.Identifier(source.position_column)
    query = sql.SQL(
        "SELECT {cols} FROM {t} WHERE {p} > $1 AND {p} <= COALESCE("
        "(SELECT {p} FROM {t} WHERE {p} > $1 AND {p} <= $2 ORDER BY {p} OFFSET $3 LIMIT 1), $2) ORDER BY {p}"
    ).format(cols=sql.SQL(", ").join(sql.Identifier(c) for c in columns), t=_qualified(source), p=position
    ).as_string(None)
    try:
        conn = adbc.connect(uri)
    except Exception as exc:  # the ADBC driver raises its own hierarchy
        raise SourceError(
            f"cannot connect to PostgreSQL at {_where(uri)}: {redact(str(exc).strip(), uri)}",
            file=_where(uri),
        ) from None
    with conn, conn.cursor() as cur:
        while after < upto:
            try:
                cur.execute(query, parameters=(after, upto, max(rows, 1) - 1))
                table = cur.fetch_arrow_table()
            except Exception as exc:
                raise SourceError(
                    f"reading {source.key} after position {after} failed: "
                    f"{redact(str(exc).strip(), uri)}; nothing was archived",
                    file=source.key,
                ) from None
            if table.num_rows == 0:
                return
            after = int(table.column(source.position_column)[-1].as_py())
            yield Batch(source.key, "parquet", _plain(table, source.position_column))


def _plain(table: pa.Table, position_column: str) -> pa.Table:
    """Storage types instead of driver extension types (json, numeric); ``_line`` = position."""
    fields, arrays = [], []
    for f, column in zip(table.schema, table.columns, strict=True):
        if isinstance(f.type, pa.BaseExtensionType):
            column = pa.chunked_array([c.storage for c in column.chunks], f.type.storage_type)
        fields.append(pa.field(f.name, column.type))
        arrays.append(column)
    line = table.column(position_column).cast(pa.int64())
    return pa.Table.from_arrays([*arrays, line], schema=pa.schema([*fields, pa.field("_line", pa.int64())]))
