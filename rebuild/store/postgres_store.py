"""Views in PostgreSQL (where live read models usually live); the replay computes in a local DuckDB.

``postgresql://user:pw@host/db?schema=NAME`` (schema default ``public``). ``compute()`` is a
scratch in-memory DuckDB with the configured memory limit and spill directory; ``publish`` ships
only the result (and the scope of a patch) with ADBC bulk ingest into staging tables, then one
PostgreSQL transaction renames them into the shadow and writes the run record, the checkpoint
and a backfill mark. Cutover and rollback are the shared SQL (``SQLStore``), one transaction
each: PostgreSQL's transactional DDL means readers see the old live view or the new one, never
a missing table. Every identifier is quoted.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

import duckdb
import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from lake.sql import literal, quote
from lake.storage import unreachable
from rebuild.config import redact
from rebuild.errors import StoreError
from rebuild.locks import LOCKS_DDL, Holder, PostgresLocks
from rebuild.store.base import Checkpoint, view_tables
from rebuild.store.duckdb_store import connect as duckdb_connect
from rebuild.store.pg_surroundings import MAX_NAME, carry
from rebuild.store.sqlstore import SQLStore

log = logging.getLogger(__name__)
BATCH_ROWS = 250_000
#: how long a store transaction waits for a table another session holds, unless the store URI says
#: (``?lock_timeout=30s``): while a cutover waits for live's lock, PostgreSQL makes every new reader
#: of live wait behind it
LOCK_TIMEOUT = "3s"
#: the store URI's parameters that are ours, not libpq's
OUR_PARAMS = ("schema", "lock_timeout")
PG_TIME = re.compile(r"\d+(\.\d+)?\s*(us|ms|s|min|h|d)?")
#: a cutover or rollback that waited its lock_timeout is tried this many times in all, pausing LOCK_PAUSE
#: seconds times the attempt in between: the readers go on meanwhile, and a report query that ends
#: lets the night's cutover through instead of failing it
LOCK_ATTEMPTS, LOCK_PAUSE = 4, 2.0
#: what a server says that is up but not serving yet (a restart at 3 a.m.): a job run again later may connect
NOT_READY = ("the database system is starting up", "the database system is shutting down",
             "the database system is in recovery mode")
T = TypeVar("T")
#: the metadata tables' indexes (name, table, columns): see ``PostgresStore._index_meta``
META_INDEXES = (("_rebuild_runs_started", "_rebuild_runs", "started_at"),
                ("_rebuild_runs_view_started", "_rebuild_runs", "view, started_at"),
                ("_rebuild_runs_view_status", "_rebuild_runs", "view, status"),
                ("_backfills_view", "_backfills", "view"))
HOLDERS = (
    "SELECT DISTINCT a.pid, c.relname, a.usename, a.application_name, a.state, a.xact_start "
    "FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_namespace n ON n.oid = c.relnamespace "
    "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.granted AND n.nspname = %s AND l.pid <> pg_backend_pid() "
    "ORDER BY 1, 2"
)

#: DuckDB type -> PostgreSQL type; DECIMAL(p,s) and the casts below are handled by ``pg_type``.
PG_TYPES = {
    "VARCHAR": "text", "BIGINT": "bigint", "INTEGER": "integer", "SMALLINT": "smallint",
    "DOUBLE": "double precision", "FLOAT": "real", "BOOLEAN": "boolean", "DATE": "date",
    "TIMESTAMP WITH TIME ZONE": "timestamptz", "TIMESTAMP": "timestamp", "TIME": "time",
    "INTERVAL": "interval", "UUID": "uuid", "BLOB": "bytea",
}  # fmt: skip
#: DuckDB types ADBC cannot ship as they are: cast first (DuckDB type, PostgreSQL type).
CASTS = {
    "TINYINT": ("SMALLINT", "smallint"), "UTINYINT": ("SMALLINT", "smallint"),
    "USMALLINT": ("INTEGER", "integer"), "UINTEGER": ("BIGINT", "bigint"),
    "UBIGINT": ("DECIMAL(20,0)", "numeric(20,0)"), "HUGEINT": ("DECIMAL(38,0)", "numeric(38,0)"),
    "UHUGEINT": ("DECIMAL(38,0)", "numeric(38,0)"), "JSON": ("VARCHAR", "text"), '"NULL"': ("VARCHAR", "text"),
    "TIMESTAMP_S": ("TIMESTAMP", "timestamp"), "TIMESTAMP_MS": ("TIMESTAMP", "timestamp"),
}  # fmt: skip
#: what to cast a DuckDB type PostgreSQL has no type for into, and what is lost then
NO_PG_TYPE = {"TIMESTAMP_NS": "TIMESTAMP (PostgreSQL keeps microseconds)"}
_DECIMAL = re.compile(r"DECIMAL\((\d+),\s*(\d+)\)")


def pg_type(duck: str) -> tuple[str, str]:
    """``(DuckDB cast or '', PostgreSQL type)`` for a DuckDB column type; nested types go as text."""
    upper = duck.upper()
    if upper in PG_TYPES:
        return "", PG_TYPES[upper]
    if m := _DECIMAL.fullmatch(upper):
        return "", f"numeric({m[1]},{m[2]})"
    if upper in CASTS:
        return CASTS[upper]
    if upper.endswith("[]") or upper.startswith(("STRUCT", "MAP", "UNION", "ENUM")) or "[" in upper:
        return "VARCHAR", "text"
    into = NO_PG_TYPE.get(upper, "VARCHAR")
    raise StoreError(f"PostgreSQL has no type for DuckDB's {duck}; cast the column in the projection, "
                     f"e.g. to {into}")


def _refuse_long_view_name(view: str) -> None:
    """PostgreSQL cuts a name past 63 bytes: ``VIEW__incoming`` and ``VIEW__incoming_scope`` (a patch's
    rows and scope), or ``VIEW__shadow`` and ``VIEW__shadow_scope``, would be one table."""
    longest = max((*view_tables(view), f"{view}__incoming_scope"), key=lambda t: len(t.encode()))
    if len(longest.encode()) > MAX_NAME:
        most = MAX_NAME - (len(longest.encode()) - len(view.encode()))
        raise StoreError(f"view {view!r} has a name of {len(view.encode())} bytes: its tables in PostgreSQL, such as "
                         f"{longest}, must fit PostgreSQL's {MAX_NAME}-byte names, so a view name holds at most {most} "
                         "there; give the projection a shorter name", view=view)


def _rows(table: str) -> str:
    """``VIEW's rows`` for the staging table ``table`` of a view."""
    return f"{table.split('__incoming')[0]}'s rows"


def _refused(message: str, table: str) -> StoreError:
    """ADBC's COPY refusal as a store error naming the column (PostgreSQL's CONTEXT line has it)."""
    found = re.search(r"CONTEXT:\s+COPY \S+, line \d+, column (\S+)", message)
    column = f"column {found.group(1)} of {_rows(table)}" if found else _rows(table)
    if "0x00" in message:
        return StoreError(f"PostgreSQL cannot store the NUL character (\\u0000) in text, and {column} holds one "
                          "(DuckDB and Parquet keep it): remove it in the projection, e.g. replace(col, chr(0), '')",
                          table=table)
    first = message.split("ERROR:", 1)[-1].splitlines()[0].strip()
    return StoreError(f"PostgreSQL refused the rows of {column}: {first}", table=table)


def split_schema(uri: str) -> tuple[str, str]:
    """The libpq URI without our parameters, and the schema (default ``public``)."""
    dsn, ours = split_params(uri)
    return dsn, ours["schema"]


def split_params(uri: str) -> tuple[str, dict[str, str]]:
    """The libpq URI without our parameters (libpq refuses names it does not know), and ours:
    ``schema`` (default ``public``) and ``lock_timeout`` (default ``LOCK_TIMEOUT``)."""
    # split by hand, not by urlsplit: it refuses a password with one bracket ("Invalid IPv6 URL", a traceback)
    # and takes a '#' in one for a fragment, both of which libpq reads as the password
    head, _, text = uri.partition("?")
    query = parse_qsl(text, keep_blank_values=True)
    ours = {"schema": "public", "lock_timeout": LOCK_TIMEOUT} | {k: v for k, v in query if k in OUR_PARAMS}
    if not PG_TIME.fullmatch(ours["lock_timeout"]):
        raise StoreError(f"lock_timeout={ours['lock_timeout']!r} in the store URI is not a PostgreSQL time: give "
                         "one like 3s, 500ms or 1min (0 waits without end)", uri=redact(uri))
    rest = urlencode([(k, v) for k, v in query if k not in OUR_PARAMS])
    scheme, _, where = head.partition("://")
    scheme = "postgresql" if scheme in ("postgres", "postgresql") else scheme
    return f"{scheme}://{where}" + (f"?{rest}" if rest else ""), ours


class PostgresStore(SQLStore):
    """Shadow, live, previous and the metadata tables in one PostgreSQL schema."""

    def __init__(self, uri: str, *, memory_limit: str | None = None, temp_directory: str | None = None,
                 threads: int | None = None) -> None:
        self.uri = uri
        self.dsn, ours = split_params(uri)
        self.schema, self.lock_timeout = ours["schema"], ours["lock_timeout"]
        self._settings = (memory_limit, temp_directory, threads)
        self._scratch: duckdb.DuckDBPyConnection | None = None
        self._adbc: Any = None
        self.conn = self._session()
        self._init_meta()
        self._exec(LOCKS_DDL)
        self.locks = PostgresLocks(self._session, self.schema)

    def __repr__(self) -> str:
        return f"PostgresStore({redact(self.uri)!r})"

    def _session(self) -> psycopg.Connection[Any]:
        """A new autocommit session on the store's schema, in UTC."""
        try:
            conn = psycopg.connect(self.dsn, autocommit=True)
        except psycopg.OperationalError as exc:
            # no server answered (down, restarting, unreachable): a job run again later may connect
            raise StoreError(f"cannot connect to {redact(self.uri)}: {redact(str(exc))}", uri=redact(self.uri),
                             retryable=unreachable(exc) or any(m in str(exc) for m in NOT_READY)) from exc
        with contextlib.suppress(psycopg.errors.UniqueViolation, psycopg.errors.DuplicateSchema):
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(self.schema)}")  # racing creators are fine
        conn.execute(f"SET search_path TO {quote(self.schema)}")
        conn.execute("SET TIME ZONE 'UTC'")
        return conn

    def _init_meta(self) -> None:
        try:
            super()._init_meta()
            self._index_meta()
        except psycopg.errors.UniqueViolation:  # another session created them at the same time
            super()._init_meta()
            self._index_meta()

    def _index_meta(self) -> None:
        """Indexes for the queries of every night, so that they read a view's few newest or unsettled rows,
        not a year of history: `rebuild runs` (the newest of a view, or of all) and a publish's settling of
        the view's earlier shadow scanned every run (150,000 runs: 91 ms and 44 ms; 0.1-1 ms now), and a
        backfill every view's marks. DuckDB scans these small tables fast and its indexes slow its UPDATEs.
        Only missing ones are made: a role that may use the tables but does not own them opens the store as before
        (one made before them too, with a warning: it cannot make them)."""
        made = {r[0] for r in self._query("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")}
        for name, table, columns in META_INDEXES:
            if name not in made:
                try:
                    self._exec(f"CREATE INDEX IF NOT EXISTS {name} ON {table} ({columns})")
                except psycopg.errors.InsufficientPrivilege:  # a store made before them, opened by a user of it
                    log.warning("the store %s lacks its index %s, which only the owner of %s can make: listing runs "
                                "reads every run record until one command runs as that owner", redact(self.uri), name, table)

    # -- SQL ------------------------------------------------------------------------------------
    _value_errors = (psycopg.errors.DataError,)

    def _exec(self, sql: str) -> None:
        self.conn.execute(sql.encode("utf-8"))  # bytes: psycopg never reads % as a placeholder

    def _begin(self) -> None:
        super()._begin()
        self._exec(f"SET LOCAL lock_timeout = {literal(self.lock_timeout)}")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        try:
            with super()._transaction():
                yield
        except psycopg.errors.LockNotAvailable as exc:
            raise self._tables_in_use() from exc

    def cutover(self, view: str, run_id: str, forced: bool, keep: dict[str, Any] | None = None) -> Checkpoint:
        return self._patiently(functools.partial(super().cutover, view, run_id, forced, keep))

    def rollback(self, view: str) -> Checkpoint | None:
        return self._patiently(functools.partial(super().rollback, view))

    def _patiently(self, change: Callable[[], T]) -> T:
        """``change``, tried again while other sessions hold its tables (see ``LOCK_ATTEMPTS``)."""
        for attempt in range(1, LOCK_ATTEMPTS):
            try:
                return change()
            except StoreError as exc:
                if not exc.retryable:
                    raise
                pause = LOCK_PAUSE * attempt
                log.warning("%s; trying again in %.1f s (attempt %s of %s)", exc, pause, attempt + 1, LOCK_ATTEMPTS)
                time.sleep(pause)
        return change()  # the last try: its error is the answer

    def _tables_in_use(self) -> StoreError:
        """Who held the tables a transaction waited for longer than its ``lock_timeout`` (rolled back)."""
        holders = self.conn.execute(HOLDERS, (self.schema,)).fetchall()
        named = "; ".join(f"pid {pid} ({user}, {app or 'no application name'}, {state} since {start:%Y-%m-%d %H:%M:%S}) "
                          f"on {table}" for pid, table, user, app, state, start in holders) or "sessions now gone"
        pids = ", ".join(str(pid) for pid in sorted({h[0] for h in holders})) or "PID"
        return StoreError(
            f"other sessions hold tables this change needs ({named}); PostgreSQL would make every new reader of "
            f"them wait behind it, so it waits at most {self.lock_timeout} (lock_timeout= in the store URI), and nothing was changed. Rerun the command "
            f"once they have finished (or end them: SELECT pg_terminate_backend({pids}))",
            holders=[{"pid": h[0], "table": h[1], "user": h[2], "application": h[3], "state": h[4]} for h in holders],
            retryable=True)

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql.encode("utf-8")).fetchall()

    def _types(self, table: str) -> dict[str, str]:
        rows = self.conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = to_regclass(%s) "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum", (quote(table),)
        ).fetchall()
        return dict(rows)

    def exists(self, table: str) -> bool:
        row = self.conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = %s",
            (table,),
        ).fetchone()
        return bool(row and row[0])

    def count(self, table: str) -> int:
        return int(self._query(f"SELECT count(*) FROM {quote(table)}")[0][0])

    def _rename(self, old: str, new: str) -> None:
        self._refuse_when_views_read(old)
        super()._rename(old, new)

    def _drop(self, table: str) -> None:
        self._refuse_when_views_read(table)
        super()._drop(table)

    def _carry(self, live: str, incoming: str) -> Callable[[], None]:
        self._refuse_when_views_read(live)  # before building indexes the swap would be refused after
        return carry(self.conn, self.schema, live, live, incoming)

    def drop_view(self, view: str) -> list[str]:
        for table in view_tables(view):
            if views := self._views_reading(table):
                raise StoreError(f"views {views} read {table}: drop them (or make them read another table) first, "
                                 f"then rerun; nothing was dropped", table=table, views=views)
        return super().drop_view(view)

    def _views_reading(self, table: str) -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT DISTINCT c.relname FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid "
            "JOIN pg_class c ON c.oid = r.ev_class WHERE d.classid = 'pg_rewrite'::regclass "
            "AND d.refobjid = to_regclass(%s) AND c.oid <> d.refobjid ORDER BY 1",
            (f"{quote(self.schema)}.{quote(table)}",)).fetchall()]

    def _refuse_when_views_read(self, table: str) -> None:
        """A view binds to its table, not to its name: when live is renamed away (a full cutover or
        rollback) the views on it would follow it and show the old rows, and previous cannot be dropped
        under them. Refused inside the cutover's transaction, so nothing changes."""
        views = self._views_reading(table)
        if views:
            raise StoreError(
                f"views {views} read {table}: PostgreSQL binds a view to its table, not to its name, so after this "
                f"swap they would go on reading the old rows (or keep {table} from being dropped). Drop them, rerun "
                "this command and create them again; or correct live in place with a patch (`rebuild run VIEW "
                "--keys ...` or `--since/--until`), whose cutover changes live's rows, not its table",
                table=table, views=views)

    # -- compute locally, ship the result ------------------------------------------------------
    def compute(self) -> duckdb.DuckDBPyConnection:
        if self._scratch is None:
            memory_limit, temp_directory, threads = self._settings
            self._scratch = duckdb_connect(":memory:", memory_limit, temp_directory, threads)
        return self._scratch

    def _bulk(self) -> Any:
        if self._adbc is None:
            import adbc_driver_postgresql.dbapi as adbc

            self._adbc = adbc.connect(self.dsn)
            with self._adbc.cursor() as cur:  # the store's names, as in its psycopg sessions
                cur.execute(f"SET search_path TO {quote(self.schema)}")
            self._adbc.commit()
        return self._adbc

    def ship(self, con: duckdb.DuckDBPyConnection, query: str, table: str) -> int:
        """Create ``table`` with the mapped column types and bulk-load ``query``'s rows (ADBC COPY)."""
        described = con.sql(f"DESCRIBE {query}").fetchall()
        selects, columns, uuids = [], [], []
        for name, duck_type, *_ in described:
            if len(name.encode()) > MAX_NAME:  # PostgreSQL would cut it, and live's column would be another
                raise StoreError(f"column {name!r} of {_rows(table)} has a name of {len(name.encode())} bytes, and "
                                 f"PostgreSQL's names hold at most {MAX_NAME}: name it shorter in the projection "
                                 "(AS ...); nothing was written", table=table)
            try:
                cast, pg = pg_type(duck_type)
            except StoreError as exc:
                raise StoreError(f"column {name} of {_rows(table)}: {exc}", table=table) from None
            if duck_type == "UUID":  # COPY takes a uuid as its 16 bytes (Arrow's uuid type), not as text
                selects.append(f"unhex(replace(CAST({quote(name)} AS VARCHAR), '-', '')) AS {quote(name)}")
                uuids.append(name)
            else:
                selects.append(f"CAST({quote(name)} AS {cast}) AS {quote(name)}" if cast else quote(name))
            columns.append(f"{quote(name)} {pg}")
        self._exec(f"DROP TABLE IF EXISTS {quote(table)}")
        self._exec(f"CREATE TABLE {quote(table)} ({', '.join(columns)})")
        select = f"SELECT {', '.join(selects)} FROM ({query})"
        bulk = self._bulk()
        import adbc_driver_manager

        with bulk.cursor() as cur:
            source = None
            try:
                source = con.sql(select).to_arrow_reader(BATCH_ROWS)
                rows = cur.adbc_ingest(table, _as_uuids(source, uuids), mode="append", db_schema_name=self.schema)
            except (duckdb.ConversionException, adbc_driver_manager.OperationalError) as exc:
                # a value past its PostgreSQL type (HUGEINT's 39th digit), at once or while ADBC reads the rows
                if not (found := re.search(r"Conversion Error: [^\n]*", str(exc))):
                    raise
                bulk.rollback()
                raise StoreError(f"{_rows(table)} cannot go to PostgreSQL: {found.group(0)}; cast that column in "
                                 "the projection to a type whose values fit (VARCHAR keeps every digit)",
                                 table=table) from None
            except adbc_driver_manager.DatabaseError as exc:  # PostgreSQL refused the rows (a value it cannot hold, ...)
                bulk.rollback()
                raise _refused(str(exc), table) from None
            finally:  # a result left open on ``con`` turned the caller's next statement into "open result" errors
                if source is not None:
                    source.close()
        bulk.commit()
        return int(rows)

    def _ship(self, con: duckdb.DuckDBPyConnection, view: str, rows: str, scope: str | None,
              scope_columns: Sequence[str]) -> tuple[str, str | None]:
        incoming = f"{view}__incoming"
        self.ship(con, f"SELECT * FROM {quote(rows)}", incoming)
        if scope is None:
            return incoming, None
        names = ", ".join(quote(c) for c in scope_columns)
        self.ship(con, f"SELECT DISTINCT {names} FROM {quote(scope)}", f"{incoming}_scope")
        return incoming, f"{incoming}_scope"

    def _unship(self, view: str) -> None:
        self._drop(f"{view}__incoming")
        self._drop(f"{view}__incoming_scope")

    def _take(self, incoming: str, target: str) -> None:
        self._rename(incoming, target)

    # -- reading --------------------------------------------------------------------------------
    def read(self, table: str, scope: str | None = None) -> pa.Table:
        """``table``'s rows (those in ``scope``: matched here, only they travel), in one Arrow table."""
        with self._bulk().cursor() as cur:
            cur.execute(self._select(table, scope))
            data = cur.fetch_arrow_table()
        self._bulk().commit()
        return _typed(data)

    def relation(self, con: duckdb.DuckDBPyConnection, table: str, scope: str | None = None) -> duckdb.DuckDBPyRelation:
        return con.from_arrow(self.read(table, scope))

    def relation_of_keys(self, con: duckdb.DuckDBPyConnection, table: str, keys: str,
                         columns: Sequence[str]) -> duckdb.DuckDBPyRelation:
        """The keys go to PostgreSQL and are matched there: only their rows of ``table`` travel."""
        staging = f"{table}__keys"
        names = ", ".join(quote(c) for c in columns)
        self.ship(con, f"SELECT DISTINCT {names} FROM {quote(keys)}", staging)
        try:
            return self.relation(con, table, staging)
        finally:
            self._drop(staging)

    def write_table(self, table: str, data: pa.Table) -> None:
        scratch = self.compute()
        scratch.register("__write_table", data)
        try:
            self.ship(scratch, "SELECT * FROM __write_table", f"{table}__incoming")
        finally:
            scratch.unregister("__write_table")
        with self._transaction():
            self._drop(table)
            self._rename(f"{table}__incoming", table)

    def check_view_name(self, view: str) -> None:
        _refuse_long_view_name(view)

    @contextlib.contextmanager
    def lock(self, view: str, purpose: str) -> Iterator[Holder]:
        """``pg_try_advisory_lock`` on a session of its own plus a holder row (rebuild.locks)."""
        with self.locks.hold(view, purpose) as holder:
            yield holder

    def close(self) -> None:
        for closer in (self.conn, self._adbc, self._scratch):
            if closer is not None:
                with contextlib.suppress(Exception):  # closing is best effort: nothing is pending
                    closer.close()
        self._adbc = self._scratch = None


def _as_uuids(reader: pa.RecordBatchReader, names: Sequence[str]) -> pa.RecordBatchReader:
    """``reader`` with the 16-byte binary columns ``names`` as Arrow's uuid type."""
    if not names:
        return reader
    schema = pa.schema([pa.field(f.name, pa.uuid()) if f.name in names else f for f in reader.schema])

    def batches() -> Iterator[pa.RecordBatch]:
        for batch in reader:
            yield pa.record_batch([
                pa.ExtensionArray.from_storage(pa.uuid(), column.cast(pa.binary(16))) if name in names else column
                for name, column in zip(batch.schema.names, batch.columns, strict=True)
            ], schema=schema)

    return pa.RecordBatchReader.from_batches(schema, batches())


def _numeric_type(text: pa.ChunkedArray, typmod: int) -> pa.DataType:
    """The Arrow type of a numeric column: its declared ``numeric(p,s)``; without one (a live view made
    elsewhere), a decimal of the largest scale its values have, or a double past 38 digits (or for NaN
    and Infinity). As text, 10.5 differed from a rebuilt 10.50, and tolerances were refused."""
    if typmod >= 4:
        return pa.decimal128((typmod - 4) >> 16, (typmod - 4) & 0xFFFF)
    if pc.all(pc.match_substring_regex(text, r"^-?\d+(\.\d+)?$")).as_py() is False:
        return pa.float64()
    scale = pc.max(pc.utf8_length(pc.replace_substring_regex(text, r"^[^.]*\.?", ""))).as_py() or 0
    digits = pc.max(pc.utf8_length(pc.replace_substring_regex(text, r"^-?(\d*).*$", r"\1"))).as_py() or 0
    return pa.decimal128(38, scale) if digits + scale <= 38 else pa.float64()


def _typed(data: pa.Table) -> pa.Table:
    """ADBC returns numeric as strings (with the typmod in the field metadata): back to decimals."""
    columns, fields = [], []
    for field, column in zip(data.schema, data.columns, strict=True):
        meta = field.metadata or {}
        typmod = int(meta.get(b"POSTGRESQL:typmod", b"-1"))
        if meta.get(b"POSTGRESQL:type") == b"numeric":
            chunks = [c.storage if isinstance(c, pa.ExtensionArray) else c for c in column.chunks]
            storage = pa.chunked_array(chunks, type=chunks[0].type if chunks else pa.string())
            column = pc.cast(storage, _numeric_type(storage, typmod))
        columns.append(column)
        fields.append(pa.field(field.name, column.type, nullable=field.nullable))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))
