"""Views as Parquet files in a directory, for analysts: ``parquet:///dir`` or a bare directory path.

Layout::

    DIR/_manifest.json       the only mutable file: table -> data files, runs, checkpoints, backfills
    DIR/data/*.parquet       immutable data files (a table is one or more of them)
    DIR/locks/VIEW.lock      per-view locks (rebuild.locks.FileLocks)
    DIR/_commit.lock         serializes writers of the manifest

Guarantees: every change (a publish with its run record, checkpoint and backfill mark; a
cutover; a rollback) writes new data files first, then replaces the manifest in one
``os.replace`` after fsync; a crash before the replace leaves the old state, whole. Data files
are never modified. A reader reads the manifest once and then opens the files it names, so it
sees one consistent state; files no longer named are deleted only after ``GRACE_SECONDS``, so
readers that started before a swap finish undisturbed (a reader slower than that can fail and
should re-read). Writers of the same directory are serialized by a file lock (local disks; not
on NFS or object stores). The replay computes in a scratch in-memory DuckDB.
"""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import json
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from lake.sql import literal, quote
from rebuild.errors import StoreError
from rebuild.faults import point
from rebuild.locks import FileLocks, Holder
from rebuild.store.base import (
    DROPPED, EMPTY, HELD, LIVE, PREVIOUS, SHADOW, Checkpoint, MakeRecord, Mark, Published, RunRecord, Store, building_name,
    previous_name, scope_match, scope_name, shadow_name, view_tables,
)  # fmt: skip
from rebuild.store.duckdb_store import connect as duckdb_connect
from rebuild.store.sqlstore import check_patch_columns, patch_does_not_fit

MANIFEST = "_manifest.json"
GRACE_SECONDS = 600.0
#: how long after its write a file's time may still be that of a later write (file clocks tick every few ms on
#: ext4, every second on some file systems): a manifest younger than this is compared by content, not by time
SETTLED_NS = 2_000_000_000
MERGED = 4  # the files a table grown a file at a time merges at once (ParquetStore._append)
#: DuckDB writes these to Parquet as DOUBLE, which loses digits past 2**53 and which a check compares
#: within a float's tolerance (a sum of cents one cent off passed): written as exact decimals instead
EXACT = {"HUGEINT": "DECIMAL(38,0)", "UHUGEINT": "DECIMAL(38,0)"}
_NINES = "9" * 38
#: values a Parquet file cannot keep, per DuckDB type: (SQL finding them in column {c}, what they are and
#: what to do instead); such a column is refused, naming a value
UNFIT = {
    "INTERVAL": ("datepart('microseconds', {c}) % 1000 <> 0",
                 "an INTERVAL finer than a millisecond ({value}), which the Parquet store would cut to milliseconds "
                 "(Parquet's INTERVAL): keep it as a number in the projection, e.g. epoch_us({name}) (or "
                 "dt.total_microseconds() in Polars)"),
    **dict.fromkeys(EXACT, (f"NOT {{c}} BETWEEN -{_NINES} AND {_NINES}",
                            "a number of more than 38 digits ({value}), which the Parquet store keeps as DECIMAL(38,0) "
                            "(Parquet's DOUBLE loses digits): cast it in the projection, e.g. to VARCHAR")),
}
Manifest = dict[str, Any]


class ParquetStore(Store):
    """A directory of Parquet views whose every change is one atomic manifest swap."""

    def __init__(self, path: str, *, memory_limit: str | None = None, temp_directory: str | None = None,
                 threads: int | None = None) -> None:
        self.root = Path(path).resolve()
        self.uri = f"parquet://{self.root}"
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        self.locks = FileLocks(self.root / "locks")
        self._settings = (memory_limit, temp_directory, threads)
        self._scratch: duckdb.DuckDBPyConnection | None = None
        self._parsed: tuple[tuple[int, int, int, bool], bytes, Manifest] | None = None
        if not (self.root / MANIFEST).exists():
            with self._transaction():
                pass

    def __repr__(self) -> str:
        return f"ParquetStore({str(self.root)!r})"

    # -- the manifest ---------------------------------------------------------------------------
    def _load(self) -> Manifest:
        """The manifest as it is now, to read (a transaction changes a copy of its own): parsed once per version
        of the file. It holds every run record, so a year of nightly runs of 4 views made it 2 MB, which `rebuild
        ls` parsed at each of its 20 lookups (0.46 s; 5 s at ten times the history)."""
        path = self.root / MANIFEST
        try:
            stat = path.stat()  # before reading: what is read is at least as new as what the key says
        except FileNotFoundError:
            return self._parse(None)
        # a transaction writes a new file, but the file system may give it the inode just freed, and a coarse
        # clock the time of the write before: a file written within SETTLED of its time is compared by content
        key = (stat.st_ino, stat.st_mtime_ns, stat.st_size, time.time_ns() - stat.st_mtime_ns > SETTLED_NS)
        cached = self._parsed
        if cached is not None and cached[0][:3] == key[:3] and cached[0][3]:
            return cached[2]
        text = path.read_bytes()
        manifest = cached[2] if cached is not None and cached[1] == text else self._parse(text)
        self._parsed = (key, text, manifest)
        return manifest

    def _parse(self, text: bytes | None) -> Manifest:
        """The manifest ``text`` read (None: none written yet), with the keys of an empty one."""
        try:
            data: Manifest = json.loads(text) if text is not None else {}
        except ValueError as exc:
            raise self._damaged(self.root / MANIFEST, exc) from None
        if not isinstance(data, dict):
            raise self._damaged(self.root / MANIFEST, "not a JSON object")
        for key, empty in (("generation", 0), ("tables", {}), ("runs", []), ("checkpoints", []), ("backfills", [])):
            data.setdefault(key, empty)
        return data

    def _read(self) -> Manifest:
        """The manifest parsed afresh, to change."""
        try:
            return self._parse((self.root / MANIFEST).read_bytes())
        except FileNotFoundError:
            return self._parse(None)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Manifest]:
        """The manifest to change; written atomically when the block ends without an error."""
        with open(self.root / "_commit.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                manifest = self._read()
                yield manifest
                manifest["generation"] += 1
                tmp = self.root / f"{MANIFEST}.{uuid.uuid4().hex}.tmp"
                with open(tmp, "w") as f:
                    json.dump(manifest, f, default=str)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, self.root / MANIFEST)
                _fsync_dir(self.root)
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
        self._collect(manifest)

    def _collect(self, manifest: Manifest) -> None:
        """Delete data files no table names any more, once no reader can still be using them."""
        used = {f for files in manifest["tables"].values() for f in files}
        cutoff = time.time() - GRACE_SECONDS
        for path in (self.root / "data").glob("*.parquet"):
            if path.name not in used and path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)

    def _damaged(self, path: Path | str, problem: object, table: str | None = None) -> StoreError:
        rebuild = (f"; or replace {table} with a full run: `rebuild run VIEW --full`, then cut it over (with "
                   "--force if the damaged table is the live view, which `rebuild check` cannot read)" if table else "")
        return StoreError(
            f"the Parquet store {self.root} cannot read {path} ({problem}): it was deleted or damaged outside "
            f"the workbench, which never changes a file it wrote. Restore it from a backup{rebuild}",
            path=str(path), table=table,
        )

    def _footer(self, path: str, table: str) -> pq.FileMetaData:
        try:
            return pq.read_metadata(path)
        except (OSError, pa.ArrowException) as exc:  # missing, truncated, not Parquet
            raise self._damaged(path, exc, table) from None

    def _paths(self, manifest: Manifest, table: str) -> list[str]:
        """The data files of ``table``, each checked to be there and readable (its footer)."""
        if table not in manifest["tables"]:
            raise StoreError(f"{self.root} has no table {table}", table=table)
        paths = [str(self.root / "data" / f) for f in manifest["tables"][table]]
        for path in paths:
            self._footer(path, table)
        return paths

    def _rows(self, manifest: Manifest, table: str) -> int:
        return sum(self._footer(p, table).num_rows for p in self._paths(manifest, table))

    def _source(self, manifest: Manifest, table: str) -> str:
        return f"read_parquet({literal(self._paths(manifest, table))})"

    def _write(self, con: duckdb.DuckDBPyConnection, query: str, table: str) -> str:
        """Write ``query``'s rows to a new data file (durably); returns its name."""
        name = f"{table}.{uuid.uuid4().hex[:12]}.parquet"
        path = self.root / "data" / name
        query = _for_parquet(con, query, table)
        try:
            con.execute(f"COPY ({query}) TO {literal(str(path))} (FORMAT parquet)")
        except duckdb.ConversionException:  # files of one table whose types do not unite: the caller's to say
            path.unlink(missing_ok=True)
            raise
        except duckdb.IOException as exc:  # disk full, read-only: the manifest is not replaced
            path.unlink(missing_ok=True)
            raise StoreError(
                f"cannot write {path}: {exc}; the store is unchanged (its manifest was not replaced). "
                "Free space (or fix permissions), then rerun the same command",
                path=str(path),
            ) from exc
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        return name

    # -- Store ------------------------------------------------------------------------------------
    def compute(self) -> duckdb.DuckDBPyConnection:
        if self._scratch is None:
            memory_limit, temp_directory, threads = self._settings
            self._scratch = duckdb_connect(":memory:", memory_limit, temp_directory, threads)
        return self._scratch

    def exists(self, table: str) -> bool:
        return table in self._load()["tables"]

    def count(self, table: str) -> int:
        return self._rows(self._load(), table)

    def read(self, table: str) -> pa.Table:
        # as DuckDB reads the files (a check, the other stores): pyarrow reads a UUID or INTERVAL as bytes
        return self.relation(self.compute(), table).to_arrow_table()

    def relation(self, con: duckdb.DuckDBPyConnection, table: str, scope: str | None = None) -> duckdb.DuckDBPyRelation:
        m = self._load()
        rows = f"SELECT * FROM {self._source(m, table)} t"
        if scope is None:
            return con.sql(rows)
        within = f"__within_{scope}"  # the scope's files, for as long as the relation is used
        con.execute(f"CREATE OR REPLACE TEMP VIEW {quote(within)} AS SELECT * FROM {self._source(m, scope)}")
        return con.sql(f"{rows} WHERE {scope_match(within, self._columns(m, scope))}")

    def write_table(self, table: str, data: pa.Table) -> None:
        con = self.compute()
        con.register("__write_table", data)
        try:
            with self._transaction() as m:
                m["tables"][table] = [self._write(con, "SELECT * FROM __write_table", table)]
        finally:
            con.unregister("__write_table")

    def publish(self, con: duckdb.DuckDBPyConnection, view: str, rows: str, scope: str | None,
                scope_columns: Sequence[str], key: Sequence[str], make_record: MakeRecord, *,
                append: bool = False, mark: Mark | None = None) -> Published:
        shadow, shadow_scope = shadow_name(view), scope_name(shadow_name(view))
        if scope is not None:
            names = ", ".join(quote(c) for c in scope_columns)
            con.execute(f"CREATE OR REPLACE TEMP TABLE __incoming_scope AS SELECT DISTINCT {names} FROM {quote(scope)}")
        try:
            with self._transaction() as m:
                if append and scope is not None and shadow_scope in m["tables"]:
                    self._merge_patch(con, m, shadow, rows, scope_columns)
                else:
                    m["tables"][shadow] = [self._write(con, f"SELECT * FROM {quote(rows)}", shadow)]
                    m["tables"].pop(shadow_scope, None)
                    if scope is not None:
                        m["tables"][shadow_scope] = [self._write(con, "SELECT * FROM __incoming_scope", shadow_scope)]
                published = self._published(m, shadow, scope is not None)
                _record_publish(m, *make_record(published), mark)
                point("publish.before_commit")
        finally:
            con.execute("DROP TABLE IF EXISTS temp.__incoming_scope")
        return published

    def _published(self, m: Manifest, shadow: str, patch: bool) -> Published:
        return Published(rows=self._rows(m, shadow), scope_rows=self._rows(m, scope_name(shadow)) if patch else 0)

    def _merge_patch(self, con: duckdb.DuckDBPyConnection, m: Manifest, shadow: str, rows: str,
                     columns: Sequence[str]) -> None:
        """The shadow's rows in the incoming scope are replaced; the scopes are united. The incoming
        rows and scope keys are added as files of their own, and only the shadow's files holding rows
        of the incoming scope are rewritten: a backfill's chunk writes its own rows, not the whole
        shadow again (which made a backfill of N chunks write N/2 shadows)."""
        incoming = self._write(con, f"SELECT * FROM {quote(rows)}", shadow)
        if _loose(pq.read_schema(self._paths(m, shadow)[0])) != _loose(pq.read_schema(self.root / "data" / incoming)):
            # other column types or order (a fold typed by its values): one file, one schema, as readers need
            kept = f"SELECT * FROM {self._source(m, shadow)} t WHERE NOT {scope_match('__incoming_scope', columns)}"
            m["tables"][shadow] = [self._write(con, f"{kept} UNION ALL BY NAME SELECT * FROM {quote(rows)}", shadow)]
        else:
            self._append(con, m, shadow, self._without_scope(con, m, shadow, columns), incoming)
        scope = scope_name(shadow)
        con.execute(f"CREATE OR REPLACE TEMP VIEW __united_scope AS SELECT * FROM {self._source(m, scope)}")
        try:
            new = self._write(con, f"SELECT * FROM __incoming_scope t WHERE NOT {scope_match('__united_scope', columns)}",
                              scope)
        finally:
            con.execute("DROP VIEW IF EXISTS temp.__united_scope")
        self._append(con, m, scope, m["tables"][scope], new)

    def _append(self, con: duckdb.DuckDBPyConnection, m: Manifest, table: str, files: list[str], new: str) -> None:
        """``table`` becomes ``files`` and ``new`` (unless empty), its last ``MERGED`` files merged into one
        for as long as the first of them has no more rows than the others: a table grown a file at a time
        (a backfill's shadow) keeps a few files, each of which every query opens (480 files doubled a
        backfill's publishing), and a row is rewritten about log4(files added) times."""
        files = [*files, new] if self._file_rows(new, table) or not files else files
        while len(files) >= MERGED and (self._file_rows(files[-MERGED], table)
                                        <= sum(self._file_rows(f, table) for f in files[1 - MERGED:])):
            paths = [str(self.root / "data" / f) for f in files[-MERGED:]]
            files[-MERGED:] = [self._write(con, f"SELECT * FROM read_parquet({literal(paths)})", table)]
        m["tables"][table] = files

    def _without_scope(self, con: duckdb.DuckDBPyConnection, m: Manifest, table: str, columns: Sequence[str]) -> list[str]:
        """``table``'s files, those holding rows in ``__incoming_scope`` rewritten without them (and
        left out when nothing is left)."""
        inside = scope_match("__incoming_scope", columns)
        files = f"read_parquet({literal(self._paths(m, table))}, filename = '__file')"
        hit = {Path(p).name for (p,) in con.sql(f"SELECT DISTINCT __file FROM {files} t WHERE {inside}").fetchall()}
        kept = []
        for name in m["tables"][table]:
            if name in hit:
                path = literal(str(self.root / "data" / name))
                name = self._write(con, f"SELECT * FROM read_parquet({path}) t WHERE NOT {inside}", table)
                if not self._file_rows(name, table):
                    continue
            kept.append(name)
        return kept

    def _file_rows(self, name: str, table: str) -> int:
        return self._footer(str(self.root / "data" / name), table).num_rows

    def stage(self, con: duckdb.DuckDBPyConnection, view: str, rows: str, mark: Mark, *, reset: bool) -> None:
        building = building_name(view)
        with self._transaction() as m:
            files = [] if reset else m["tables"].get(building, [])
            m["tables"][building] = [*files, self._write(con, f"SELECT * FROM {quote(rows)}", building)]
            _put(m["backfills"], mark.to_dict(), ("job_id", "item"))
            point("stage.before_commit")

    def publish_staged(self, view: str, make_record: MakeRecord, mark: Mark | None = None) -> Published:
        building, shadow = building_name(view), shadow_name(view)
        with self._transaction() as m:
            if building not in m["tables"]:
                raise StoreError(f"{view} has no bucketed run in progress ({building} is missing)", view=view)
            m["tables"][shadow] = m["tables"].pop(building)
            m["tables"].pop(scope_name(shadow), None)
            published = self._published(m, shadow, False)
            _record_publish(m, *make_record(published), mark)
            point("publish_staged.before_commit")
        return published

    # -- cutover and rollback (the same steps as SQLStore's, on file lists) -----------------------
    def cutover(self, view: str, run_id: str, forced: bool, keep: dict[str, Any] | None = None) -> Checkpoint:
        with self._transaction() as m:
            cp = _checkpoint(m, view, SHADOW)
            if cp is None or cp.run_id != run_id or shadow_name(view) not in m["tables"]:
                raise StoreError(f"{view} has no shadow of run {run_id} to cut over; run `rebuild run {view}` first", view=view)
            live_cp = _checkpoint(m, view, LIVE)
            if cp.kind != "full" and view in m["tables"] and self._changes_nothing(m, view):
                return self._cut_over_nothing(m, view, cp, forced, keep or {})
            if cp.kind == "full":
                self._swap_full(m, view)
            else:
                self._apply_patch(m, view)
            _move(m, view, LIVE, PREVIOUS)
            _move(m, view, SHADOW, LIVE)
            _keep_live(m, view, keep or {})
            for r in m["runs"]:  # the run that was previous is no rollback point any more (see SQLStore.cutover)
                if r["view"] == view and r["status"] == "previous":
                    r["status"] = "superseded"
            if live_cp is not None:
                _status(m, live_cp.run_id, "previous")
            _status(m, run_id, "live", forced)
            point("cutover.before_commit")
        return _checkpoint(m, view, LIVE)  # type: ignore[return-value]

    def _changes_nothing(self, m: Manifest, view: str) -> bool:
        """Whether the partial shadow has no row, and live none in its scope: nothing to add or delete."""
        shadow, scope = shadow_name(view), scope_name(shadow_name(view))
        if self._rows(m, shadow):
            return False
        if not self._rows(m, scope):
            return True
        con = self.compute()
        con.execute(f"CREATE OR REPLACE TEMP VIEW __scope AS SELECT * FROM {self._source(m, scope)}")
        try:
            inside = scope_match("__scope", self._columns(m, scope))
            return not con.sql(f"SELECT count(*) FROM {self._source(m, view)} t WHERE {inside}").fetchall()[0][0]
        finally:
            con.execute("DROP VIEW IF EXISTS temp.__scope")

    def _cut_over_nothing(self, m: Manifest, view: str, shadow: Checkpoint, forced: bool, keep: dict[str, Any]) -> Checkpoint:
        """A patch that changes nothing: drop it and move live's position; previous stays the rollback point."""
        m["tables"].pop(shadow_name(view))
        m["tables"].pop(scope_name(shadow_name(view)), None)
        m["checkpoints"] = [c for c in m["checkpoints"] if not (c["view"] == view and c["role"] == SHADOW)]
        _keep_live(m, view, {"lake_version": shadow.lake_version, "delta_version": shadow.delta_version, **keep})
        _status(m, shadow.run_id, EMPTY, forced)
        point("cutover.before_commit")
        return _checkpoint(m, view, LIVE) or shadow

    def _swap_full(self, m: Manifest, view: str) -> None:
        tables = m["tables"]
        tables.pop(previous_name(view), None)
        tables.pop(scope_name(previous_name(view)), None)
        if view in tables:
            tables[previous_name(view)] = tables.pop(view)
        tables[view] = tables.pop(shadow_name(view))

    def _apply_patch(self, m: Manifest, view: str) -> None:
        if view not in m["tables"]:
            raise StoreError(f"{view} has no live view to apply a partial shadow to; run `rebuild run {view} --full` "
                             "and cut that over first", view=view)
        shadow = shadow_name(view)
        check_patch_columns(view, self._columns(m, view), self._columns(m, shadow))
        scope = scope_name(shadow)
        self._replace_scope(m, view, shadow, scope, keep_as=previous_name(view))
        m["tables"][scope_name(previous_name(view))] = m["tables"].pop(scope)
        m["tables"].pop(shadow)

    def _columns(self, m: Manifest, table: str) -> list[str]:
        return [r[0] for r in self.compute().sql(f"DESCRIBE SELECT * FROM {self._source(m, table)}").fetchall()]

    def _replace_scope(self, m: Manifest, view: str, rows: str, scope: str, keep_as: str) -> None:
        """Live's rows in ``scope`` become table ``keep_as``; live gets ``rows`` instead of them."""
        con = self.compute()
        columns = self._columns(m, scope)
        con.execute(f"CREATE OR REPLACE TEMP VIEW __scope AS SELECT * FROM {self._source(m, scope)}")
        try:
            inside = scope_match("__scope", columns)
            live = self._source(m, view)
            kept = self._write(con, f"SELECT * FROM {live} t WHERE {inside}", keep_as)
            merged = self._write(con, f"SELECT * FROM {live} t WHERE NOT {inside} UNION ALL BY NAME "
                                      f"SELECT * FROM {self._source(m, rows)}", view)
        except duckdb.ConversionException as exc:  # live's text 'a|b' and the patch's list: no type holds both
            raise patch_does_not_fit(view, exc) from None
        finally:
            con.execute("DROP VIEW IF EXISTS temp.__scope")
        m["tables"][keep_as], m["tables"][view] = [kept], [merged]

    def rollback(self, view: str) -> Checkpoint | None:
        previous = previous_name(view)
        with self._transaction() as m:
            prev_cp, live_cp = _checkpoint(m, view, PREVIOUS), _checkpoint(m, view, LIVE)
            if previous not in m["tables"]:
                raise StoreError(f"{view} has nothing to roll back to (no {previous})", view=view)
            if scope_name(previous) in m["tables"]:
                self._replace_scope(m, view, previous, scope_name(previous), keep_as=previous)
            else:
                m["tables"][view], m["tables"][previous] = m["tables"][previous], m["tables"][view]
            _move(m, view, LIVE, "swap")
            _move(m, view, PREVIOUS, LIVE)
            _move(m, view, "swap", PREVIOUS)
            if live_cp is not None:
                _status(m, live_cp.run_id, "rolled_back")
            if prev_cp is not None:  # None: previous was built outside the workbench
                _status(m, prev_cp.run_id, "live")
        return _checkpoint(m, view, LIVE)

    def drop_view(self, view: str) -> list[str]:
        with self._transaction() as m:
            tables = [t for t in view_tables(view) if m["tables"].pop(t, None) is not None]
            for rows in ("checkpoints", "backfills"):
                m[rows] = [r for r in m[rows] if r["view"] != view]
            for run in m["runs"]:
                if run["view"] == view and run["status"] in HELD:
                    run["status"] = DROPPED
        return tables

    # -- metadata ---------------------------------------------------------------------------------
    def checkpoint(self, view: str, role: str) -> Checkpoint | None:
        return _checkpoint(self._load(), view, role)

    def views(self) -> list[str]:
        return sorted({str(c["view"]) for c in self._load()["checkpoints"]})

    def runs(self, view: str | None = None, limit: int = 20) -> list[RunRecord]:
        rows = (r for r in self._load()["runs"] if view is None or r["view"] == view)
        # the newest only become records: made of every run, 14,600 of them took 0.7 s
        return [_run(r) for r in heapq.nlargest(int(limit), rows, key=lambda r: datetime.fromisoformat(r["started_at"]))]

    def run(self, run_id: str) -> RunRecord | None:
        return next((_run(r) for r in self._load()["runs"] if r["run_id"] == run_id), None)

    def set_verdict(self, run_id: str, verdict: str, report: str | None) -> None:
        with self._transaction() as m:
            for r in m["runs"]:
                if r["run_id"] == run_id:
                    r["verdict"], r["report"] = verdict, report

    def forget_runs(self, run_ids: Sequence[str]) -> None:
        if run_ids:
            forgotten = set(run_ids)  # once: a set made per row made a prune quadratic (10 s for 8,000 runs)
            with self._transaction() as m:
                for rows in ("runs", "backfills"):
                    m[rows] = [r for r in m[rows] if r["run_id"] not in forgotten]

    def forget_jobs(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            forgotten = set(job_ids)
            with self._transaction() as m:
                m["backfills"] = [b for b in m["backfills"] if b["job_id"] not in forgotten]

    def marks(self, view: str, job_id: str | None = None) -> list[Mark]:
        rows = [b for b in self._load()["backfills"] if b["view"] == view and job_id in (None, b["job_id"])]
        marks = [replace(Mark(**b), updated_at=datetime.fromisoformat(b["updated_at"])) for b in rows]
        return sorted(marks, key=lambda k: (k.job_id, k.item))

    def put_mark(self, mark: Mark) -> None:
        with self._transaction() as m:
            _put(m["backfills"], mark.to_dict(), ("job_id", "item"))

    @contextlib.contextmanager
    def lock(self, view: str, purpose: str) -> Iterator[Holder]:
        """A lock file per view in ``DIR/locks/`` (see rebuild.locks)."""
        with self.locks.hold(view, purpose) as holder:
            yield holder

    def close(self) -> None:
        if self._scratch is not None:
            self._scratch.close()
            self._scratch = None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _loose(schema: pa.Schema) -> pa.Schema:
    """The schema with every column nullable: files of one table differ in that (see ``read``)."""
    return pa.schema([f.with_nullable(True) for f in schema])


def _put(rows: list[dict[str, Any]], row: dict[str, Any], key: Sequence[str]) -> None:
    rows[:] = [r for r in rows if any(r[k] != row[k] for k in key)] + [json.loads(json.dumps(row, default=str))]


def _checkpoint(m: Manifest, view: str, role: str) -> Checkpoint | None:
    return next((Checkpoint(**c) for c in m["checkpoints"] if c["view"] == view and c["role"] == role), None)


def _run(row: dict[str, Any]) -> RunRecord:
    times = {k: datetime.fromisoformat(row[k]) for k in ("started_at", "finished_at")}
    return RunRecord(**{**row, **times})


def _move(m: Manifest, view: str, source: str, target: str) -> None:
    m["checkpoints"] = [c for c in m["checkpoints"] if not (c["view"] == view and c["role"] == target)]
    for c in m["checkpoints"]:
        if c["view"] == view and c["role"] == source:
            c["role"] = target


def _keep_live(m: Manifest, view: str, keep: dict[str, Any]) -> None:
    """Set these fields of live's checkpoint (``Store.cutover``'s ``keep``)."""
    for c in m["checkpoints"]:
        if c["view"] == view and c["role"] == LIVE:
            c.update(keep)


def _status(m: Manifest, run_id: str, status: str, forced: bool | None = None) -> None:
    for r in m["runs"]:
        if r["run_id"] == run_id:
            r["status"] = status
            if forced is not None:
                r["forced"] = forced


def _record_publish(m: Manifest, record: RunRecord, checkpoint: Checkpoint, mark: Mark | None) -> None:
    for r in m["runs"]:
        if r["view"] == record.view and r["status"] in ("shadow", "backfill") and r["run_id"] != record.run_id:
            r["status"] = "superseded"
    _put(m["runs"], record.to_dict(), ("run_id",))
    _put(m["checkpoints"], checkpoint.to_dict(), ("view", "role"))
    if mark is not None:
        _put(m["backfills"], mark.to_dict(), ("job_id", "item"))


def _for_parquet(con: duckdb.DuckDBPyConnection, query: str, table: str) -> str:
    """``query`` with its HUGEINT columns cast to exact types Parquet holds (``EXACT``); a column with a
    value Parquet cannot keep (``UNFIT``) is refused, naming a value."""
    described = con.sql(f"DESCRIBE {query}").fetchall()
    for name, duck, *_ in described:
        if duck in UNFIT:
            where, problem = UNFIT[duck]
            if found := con.sql(f"SELECT {quote(name)} FROM ({query}) WHERE {where.format(c=quote(name))} "
                                "LIMIT 1").fetchall():
                raise StoreError(f"column {name} of {table} holds {problem.format(value=found[0][0], name=name)}",
                                 table=table, column=name)
    if not any(duck in EXACT for _, duck, *_ in described):
        return query
    columns = [f"CAST({quote(name)} AS {EXACT[duck]}) AS {quote(name)}" if duck in EXACT else quote(name)
               for name, duck, *_ in described]
    return f"SELECT {', '.join(columns)} FROM ({query})"
