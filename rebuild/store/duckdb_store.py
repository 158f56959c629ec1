"""The embedded default store: one DuckDB file that also runs the replay (nothing is shipped)."""

from __future__ import annotations

import contextlib
import logging
import re
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from lake.sql import literal, quote
from lake.storage import spill_outside_cwd
from rebuild.errors import ProjectionError, StoreError, ViewLocked
from rebuild.locks import FileLocks, Holder
from rebuild.store.sqlstore import SQLStore

log = logging.getLogger(__name__)
LANDING = "__landing__"  # prefix of the tables full runs write their rows to (see landing)


def connect(path: str, memory_limit: str | None = None, temp_directory: str | None = None,
            threads: int | None = None, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with the workbench's settings (UTC, memory limit, spill directory)."""
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(path, read_only=read_only)
    except duckdb.IOException as exc:
        if "Permission denied" in str(exc):  # not another process: this user may not write the file or its folder
            raise StoreError(
                f"cannot open DuckDB file {path}{' read-only' if read_only else ''}: {exc}. The workbench opens "
                "its store file for writing, also to list or plan: give this user write access to the file and "
                "its folder, or use a store it may write (--store or $REBUILD_STORE_URI)", path=path) from exc
        if "Conflicting lock" not in str(exc):  # a file that is no DuckDB database (or of a newer DuckDB)
            raise StoreError(
                f"cannot open DuckDB file {path}{' read-only' if read_only else ''}: {exc}. It is no store this "
                f"DuckDB ({duckdb.__version__}) can open: point --store (or [store] uri, $REBUILD_STORE_URI) at the "
                "DuckDB file of your views, or move this file away to start a new store there", path=path) from exc
        raise StoreError(
            f"cannot open DuckDB file {path}{' read-only' if read_only else ''}: {exc}. DuckDB lets one "
            f"process open a file for writing and then no other process, not even read-only. {_holder_advice(str(exc))}"
            "For reading while jobs write, publish views to a Parquet store (parquet://DIR) or read a copy taken "
            "while no job runs",
            path=path,
        ) from exc
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")  # progress is ours to show (and never on --json stdout)
    if memory_limit:
        con.execute(f"SET memory_limit = {literal(memory_limit)}")
    if temp_directory:
        Path(temp_directory).mkdir(parents=True, exist_ok=True)
        con.execute(f"SET temp_directory = {literal(temp_directory)}")
    elif path == ":memory:":  # a file's spills go next to it; a scratch's not into the working directory
        spill_outside_cwd(con)
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


def _holder_advice(error: str) -> str:
    """What to do about the process DuckDB's ``error`` names as the file's holder. A notebook's kernel never
    finishes by itself: its Workbench keeps the store file open from its first call until ``wb.close()``."""
    pid = re.search(r"\(PID (\d+)\)", error)
    try:
        command = Path(f"/proc/{pid.group(1)}/cmdline").read_bytes() if pid else b""
    except OSError:  # gone meanwhile, another user's, or no /proc (macOS)
        command = b""
    if b"ipykernel" in command:
        return (f"PID {pid.group(1) if pid else '?'} is a notebook's kernel: a Workbench there keeps its store file open "
                "from its first call until wb.close(), also while the notebook is idle. Run wb.close() in that "
                "notebook (its next call opens the file again) or shut its kernel down, then try again. ")
    return ("Wait for that process to finish and open it after; an analyst's read-only connection, or a Workbench "
            "in a notebook, also blocks jobs, so close it (wb.close()) when done. ")


class DuckDBStore(SQLStore):
    """Views in a DuckDB file; the replay computes in the same file, so publishing copies nothing out."""

    def __init__(self, path: str, *, memory_limit: str | None = None, temp_directory: str | None = None,
                 threads: int | None = None) -> None:
        self.path = path
        self.uri = f"duckdb://{path}"
        # an in-memory store is private to its process: its locks only guard against itself
        self.locks = FileLocks(f"{path}.locks" if path != ":memory:" else tempfile.mkdtemp(prefix="rebuild-locks-"))
        try:
            self.con = connect(path, memory_limit, temp_directory, threads)
        except StoreError:
            # DuckDB lets one process open a file for writing: say who is using it, if a view lock does.
            holders = self.locks.holders()
            if holders:
                h = holders[0]
                raise ViewLocked(
                    f"the store file {path} is locked: {h.view} is being worked on ({h.describe()}), and DuckDB "
                    "lets one process write a file at a time, so every view of this store waits for it. Wait for "
                    "it to finish, or stop that process (or use a PostgreSQL store for concurrent jobs)",
                    view=h.view, holder=h, purpose=f"opening {path}") from None
            raise
        self._init_meta()

    def __repr__(self) -> str:
        return f"DuckDBStore({self.path!r})"

    _value_errors = (duckdb.ConversionException,)

    def _exec(self, sql: str) -> None:
        self.con.execute(sql)

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        return self.con.sql(sql).fetchall()

    def _commit(self) -> None:
        try:
            self._exec("COMMIT")
        except duckdb.Error as exc:  # e.g. the WAL cannot grow: disk full, file size limit, read-only
            raise self._write_failed(exc) from exc

    def _write_failed(self, exc: duckdb.Error) -> StoreError:
        return StoreError(
            f"cannot write to DuckDB file {self.path}: {exc}; the transaction was rolled back and "
            "nothing of it was written. Free space (or fix permissions), then rerun the same command",
            path=self.path,
        )

    @contextlib.contextmanager
    def landing_writes(self) -> Iterator[None]:
        try:
            yield
        except ProjectionError as exc:  # failing to write the landing table is the store's failure
            cause = exc.__cause__
            if isinstance(cause, duckdb.Error) and self.path in str(cause):
                raise self._write_failed(cause) from cause
            raise

    def _rollback(self) -> None:
        try:
            self._exec("ROLLBACK")
        except duckdb.TransactionException:  # a failed COMMIT already ended it; keep the first error
            log.debug("no transaction to roll back on %s", self.path)

    def _types(self, table: str) -> dict[str, str]:
        return dict(self._query(f"SELECT column_name, column_type FROM (DESCRIBE {quote(table)})"))

    def compute(self) -> duckdb.DuckDBPyConnection:
        return self.con

    def _ship(self, con: duckdb.DuckDBPyConnection, view: str, rows: str, scope: str | None,
              scope_columns: Sequence[str]) -> tuple[str, str | None]:
        # The replay ran on this very connection: the rows are a temp table already.
        if scope is None:
            return rows, None
        names = ", ".join(quote(c) for c in scope_columns)
        self._exec(f"CREATE OR REPLACE TEMP TABLE __incoming_scope AS SELECT DISTINCT {names} FROM {quote(scope)}")
        return rows, "__incoming_scope"

    def _unship(self, view: str) -> None:
        self._exec("DROP TABLE IF EXISTS temp.__incoming_scope")

    def landing(self, view: str) -> str:
        # in the store's file, outside any transaction: a crash leaves it behind, and the view's
        # next full run replaces it (the runner drops it otherwise)
        return f"{LANDING}{view}"

    def _take(self, incoming: str, target: str) -> None:
        if incoming.startswith(LANDING):  # the rows are in this file already: renaming is free
            self._exec(f"ALTER TABLE {quote(incoming)} RENAME TO {quote(target)}")
        else:
            self._exec(f"CREATE TABLE {quote(target)} AS SELECT * FROM {quote(incoming)}")

    def _carry(self, live: str, incoming: str) -> Callable[[], None]:
        """Live's primary key, UNIQUE and NOT NULL constraints and comments go to the table becoming live
        (after the renames: DuckDB adds them to a table by its name). DuckDB cannot rename a table with an
        index, nor add CHECK or FOREIGN KEY constraints to one: refused, naming them."""
        self._refuse_uncarried(live)
        where = f"database_name = current_database() AND schema_name = 'main' AND table_name = {literal(live)}"
        keys = self._query(f"SELECT constraint_type, constraint_column_names FROM duckdb_constraints() WHERE {where} "
                           "AND constraint_type IN ('PRIMARY KEY', 'UNIQUE', 'NOT NULL') ORDER BY constraint_index")
        comment = self._query(f"SELECT comment FROM duckdb_tables() WHERE {where}")[0][0]
        notes = self._query(f"SELECT column_name, comment FROM duckdb_columns() WHERE {where} AND comment IS NOT NULL")
        return lambda: self._give(live, incoming, keys, comment, notes)

    def _refuse_uncarried(self, live: str) -> None:
        found = [f"{kind} {name}" for kind, name in self._query(
            "SELECT 'index', index_name FROM duckdb_indexes() WHERE database_name = current_database() AND "
            f"table_name = {literal(live)} UNION ALL SELECT lower(constraint_type), constraint_text FROM "
            f"duckdb_constraints() WHERE database_name = current_database() AND (table_name = {literal(live)} "
            f"AND constraint_type IN ('CHECK', 'FOREIGN KEY') OR referenced_table = {literal(live)}) ORDER BY 1, 2")]
        if found:
            raise StoreError(
                f"{live} has {', '.join(found)}: a full cutover or rollback renames {live}, and DuckDB cannot rename "
                "a table with an index (nor add a CHECK or FOREIGN KEY constraint to another one). Drop them, rerun "
                f"this command and create them again; or correct live in place with a patch (`rebuild run {live} "
                "--keys ...` or `--since/--until`), whose cutover changes live's rows, not its table",
                view=live, uncarried=found)

    def _give(self, view: str, incoming: str, keys: list[tuple[Any, ...]], comment: str | None,
              notes: list[tuple[Any, ...]]) -> None:
        """Add what ``_carry`` found on live to ``view``, the table that became live (``incoming`` before)."""
        columns = set(self._columns(view))
        have = {(kind, tuple(cols)) for kind, cols in self._query(
            "SELECT constraint_type, constraint_column_names FROM duckdb_constraints() WHERE database_name = "
            f"current_database() AND schema_name = 'main' AND table_name = {literal(view)}")}
        for kind, cols in keys:
            if (kind, tuple(cols)) in have or not set(cols) <= columns:
                continue
            names = ", ".join(quote(c) for c in cols)
            sql = (f"ALTER TABLE {quote(view)} ALTER COLUMN {names} SET NOT NULL" if kind == "NOT NULL"
                   else f"ALTER TABLE {quote(view)} ADD {kind} ({names})")
            try:
                self._exec(sql)
            except duckdb.ConstraintException as exc:
                raise StoreError(
                    f"the rows becoming live {view} break live's {kind} ({', '.join(cols)}): {exc}; nothing was "
                    f"changed. Fix the projection so its rows keep it (or drop it from live {view}), then rerun "
                    "this command", view=view) from exc
        self._exec(f"COMMENT ON TABLE {quote(view)} IS {literal(comment)}")
        for column, note in notes:
            if column in columns:
                self._exec(f"COMMENT ON COLUMN {quote(view)}.{quote(column)} IS {literal(note)}")

    @contextlib.contextmanager
    def lock(self, view: str, purpose: str) -> Iterator[Holder]:
        """A lock file per view in ``PATH.locks/`` (see rebuild.locks)."""
        with self.locks.hold(view, purpose) as holder:
            yield holder

    def exists(self, table: str) -> bool:
        rows = self._query(
            "SELECT count(*) FROM information_schema.tables "
            f"WHERE table_schema = 'main' AND table_name = {literal(table)}"
        )
        return bool(rows[0][0])

    def count(self, table: str) -> int:
        return int(self._query(f"SELECT count(*) FROM {quote(table)}")[0][0])

    def read(self, table: str) -> pa.Table:
        return self.con.sql(f"SELECT * FROM {quote(table)}").to_arrow_table()

    def relation(self, con: duckdb.DuckDBPyConnection, table: str, scope: str | None = None) -> duckdb.DuckDBPyRelation:
        rows = self.con.sql(self._select(table, scope))
        return rows if con is self.con else con.from_arrow(rows.to_arrow_table())

    def write_table(self, table: str, data: pa.Table) -> None:
        self.con.register("__incoming", data)
        try:
            self._exec(f"CREATE OR REPLACE TABLE {quote(table)} AS SELECT * FROM __incoming")
        finally:
            self.con.unregister("__incoming")

    def close(self) -> None:
        self.con.close()
