"""Apply a plan: replay the selected events through the projection and publish the shadow.

Each method reads the events that decide the run's scope (all of them for a full run), computes
the rows of that scope from all their events, checks the projection's contract, then the store
writes the shadow, its scope, the run record and the checkpoint in one transaction.
"""

from __future__ import annotations

import html
import json
import logging
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa

from lake import Lake, Snapshot
from lake.read import CorruptFile, damaged_file, named_file
from lake.schema import bucket_sql
from lake.table import DataFile
from lake.sql import quote
from lake.storage import unreachable
from rebuild.errors import ProjectionError
from rebuild.faults import point
from rebuild.plan import Plan
from rebuild.progress import Progress, Silent
from rebuild.projection import Projection
from rebuild.decoding import check_decoding
from rebuild.replay import (
    Selection, check_merge_ops, check_output, check_partition_column, check_window_column, check_window_starts,
    NEWLY_QUARANTINED, bucket_events, events_sql, in_windows, materialize, quarantined_keys, touched_windows,
)
from rebuild.store import Checkpoint, Published, RunRecord, Store
from rebuild.store.base import LIVE, SHADOW, Mark

REBUILT, SCOPE, PARTIAL, KEYS, ALL, WINDOWS, WITHOUT = "__rebuilt", "__scope", "__partial", "__keys", "__all", "__windows", "__without"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    """A finished run: its record and the plan it executed."""

    record: RunRecord
    plan: Plan
    stats: dict[str, Any] | None = None  # a distributed run's task figures (rebuild.distributed)

    @property
    def run_id(self) -> str:
        return self.record.run_id

    def to_dict(self) -> dict[str, Any]:
        data = {**self.record.to_dict(), **self.record.report_files()}
        data["plan"] = self.plan.to_dict()
        if self.stats is not None:
            data["distributed"] = self.stats
        return data

    def summary(self) -> str:
        r = self.record
        scope = f", {r.scope_rows:,} scope keys" if r.kind == "patch" else ""
        skipped = f"; SKIPPED {len(self.plan.skipped_files)} unreadable lake file(s): " + ", ".join(
            self.plan.skipped_files) if self.plan.skipped_files else ""
        return (
            f"run {r.run_id}: {r.view} {r.mode} ({r.kind}) -> {r.rows_written:,} rows in "
            f"{self.plan.writes}{scope}; lake_version {r.lake_version}; {r.seconds:.2f}s{skipped}"
        )

    def _repr_html_(self) -> str:
        return f"<b>Run</b> {html.escape(self.summary())}"


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


@dataclass(frozen=True)
class Publishing:
    """How a run publishes: by default as a new run into the shadow. A backfill chunk appends its
    rows to the backfill's shadow patch, under the backfill's run id and status, with its mark."""

    run_id: str | None = None
    status: str = "shadow"
    append: bool = False
    mark: Mark | None = None
    #: what the error of an unreadable lake file says to do about it (a backfill has no --skip-corrupted)
    damaged: str = "restore it, or rerun with --skip-corrupted to leave it out (the run record names it)"


def execute(plan: Plan, lake: Lake, store: Store, projection: Projection, progress: Progress | None = None,
            publishing: Publishing = Publishing()) -> RunResult:
    """Run ``plan`` exactly: same snapshot, same scope, into ``VIEW__shadow``."""
    progress = progress or Silent()
    started, clock = datetime.now(UTC), time.monotonic()
    snapshot = lake.snapshot(plan.delta_version)
    con = lake.attach(store.compute())  # the lake's files may be on an object store
    steps = _STEPS[plan.method]
    rows = _rows_table(store, plan)
    progress.start(len(steps) + 1, "steps", f"{plan.view} {plan.mode}")
    try:
        if plan.exclude_quarantined:
            seen = _quarantine_seen(store, plan)
            plan = replace(plan, quarantine_version=quarantined_keys(con, lake, plan.streams, plan.after_version, seen))
        while True:  # once more per unreadable file skipped (--skip-corrupted)
            try:
                files: dict[str, int] = {}  # the lake files the steps read, each counted once
                for step in steps:
                    files |= {f.path: f.rows for f in step(con, lake, snapshot, store, projection, plan)}
                    point("run.after_step")
                    progress.advance(1, step.__name__.strip("_"))
                break
            except (duckdb.Error, ProjectionError) as exc:
                plan, snapshot = skip_or_raise(exc, plan, snapshot, projection, publishing.damaged)
        check_output(con, projection, rows)
        recorder = Recorder(plan, projection, started, clock, sum(files.values()), run_id=publishing.run_id, status=publishing.status)
        point("run.before_publish")
        scope = None if plan.kind == "full" else SCOPE
        store.publish(con, plan.view, rows, scope, _scope_columns(plan, projection), projection.key, recorder,
                      append=publishing.append, mark=publishing.mark)
        progress.advance(1, "published")
    finally:
        progress.close()
        for table in (REBUILT, SCOPE, PARTIAL, KEYS, ALL, WINDOWS, WITHOUT):
            con.execute(f"DROP TABLE IF EXISTS temp.{quote(table)}")
        if rows != REBUILT:  # the store's landing table: renamed away when published, else dropped
            con.execute(f"DROP TABLE IF EXISTS main.{quote(rows)}")
    assert recorder.record is not None
    return RunResult(record=recorder.record, plan=plan)


def _quarantine_seen(store: Store, plan: Plan) -> int | None:
    """The quarantine table's version the run of live read, when it left quarantined keys out: a
    catch-up takes out the keys quarantined since (None: not a catch-up, or not known)."""
    live = store.checkpoint(plan.view, LIVE) if plan.after_version is not None else None
    record = store.run(live.run_id) if live is not None else None
    return record.planned().get("quarantine_version") if record is not None else None


def skip_or_raise(exc: BaseException, plan: Plan, snapshot: Snapshot, projection: Projection,
                  then: str = Publishing.damaged) -> tuple[Plan, Snapshot]:
    """After a failed read: re-raise what is not a file problem; raise ``CorruptFile`` naming the
    file; or, with ``plan.skip_corrupted``, the plan and snapshot without that file. An object
    store that cannot be reached is no file problem: ``ConnectionError`` (never skipped)."""
    if unreachable(exc):
        raise ConnectionError(f"cannot reach the lake's storage while reading it for {plan.view} ({exc}); "
                              "its files may be fine") from exc
    bad = unreadable_file(exc, snapshot, projection)
    if bad is None:
        raise exc
    if not plan.skip_corrupted:
        reason = exc.__cause__ if isinstance(exc.__cause__, duckdb.Error) else exc  # not a worker's traceback
        raise CorruptFile(
            f"lake file {bad} cannot be read ({str(reason).removesuffix('; nothing was written')}); nothing was written. Run "
            f"`rebuild lake audit` to list every unreadable file; {then}",
            file=bad, view=plan.view,
        ) from exc
    log.warning("%s: skipping unreadable lake file %s (--skip-corrupted)", plan.view, bad)
    return (replace(plan, skipped_files=(*plan.skipped_files, bad)),
            replace(snapshot, files=tuple(f for f in snapshot.files if f.path != bad)))


def unreadable_file(exc: BaseException, snapshot: Snapshot, projection: Projection) -> str | None:
    """The lake file a failed read tripped over: named in DuckDB's message, else found by reading
    the projection's files page by page (only on this failure path). None: not a file problem."""
    cause = exc if isinstance(exc, duckdb.Error) else exc.__cause__
    paths = [f.path for f in snapshot.select(streams=projection.streams)]
    if not isinstance(cause, duckdb.Error):
        # a distributed task's error arrives pickled, without its cause: its message names the file
        return named_file(exc, paths) if isinstance(exc, ProjectionError) else None
    bad = damaged_file(cause, paths)
    return bad.path if bad else None


class Recorder:
    """Builds the run record and checkpoint a store writes with the shadow, and keeps the record."""

    def __init__(self, plan: Plan, projection: Projection, started: datetime, clock: float, read: int,
                 *, run_id: str | None = None, status: str = "shadow") -> None:
        self.plan, self.projection, self.started, self.clock, self.read = plan, projection, started, clock, read
        self.run_id, self.status = run_id or new_run_id(), status
        self.record: RunRecord | None = None

    def __call__(self, published: Published) -> tuple[RunRecord, Checkpoint]:
        plan, projection = self.plan, self.projection
        self.record = RunRecord(
            run_id=self.run_id, view=plan.view, mode=plan.mode, strategy=plan.strategy, kind=plan.kind,
            status=self.status, plan=json.dumps(plan.to_dict(), default=str), lake_version=plan.lake_version,
            delta_version=plan.delta_version, projection_version=projection.version,
            fingerprint=projection.fingerprint, events_read=self.read, rows_written=published.rows,
            scope_rows=published.scope_rows, started_at=self.started, finished_at=datetime.now(UTC),
            seconds=round(time.monotonic() - self.clock, 3),
        )
        checkpoint = Checkpoint(
            view=plan.view, role=SHADOW, run_id=self.run_id, lake_version=plan.lake_version,
            delta_version=plan.delta_version, projection_version=projection.version,
            fingerprint=projection.fingerprint, kind=plan.kind, rows=published.rows,
        )
        return self.record, checkpoint


def _scope_columns(plan: Plan, projection: Projection) -> tuple[str, ...]:
    if plan.method == "by_key":
        return (projection.partition_column,)
    if plan.method == "by_window":
        assert projection.window is not None
        return (projection.window.column,)
    return projection.key


# -- the methods, as lists of steps; each returns the lake files it read -------------------------
Step = Any


def full_selection(plan: Plan) -> Selection:
    """Every event a full run of ``plan`` replays (bucket by bucket in a distributed or a bucketed run)."""
    return Selection(plan.everything(), exclude_quarantined=plan.exclude_quarantined)


def _rows_table(store: Store, plan: Plan) -> str:
    """Where the run's rows are: a full run lands them in the store when it can (no copy)."""
    landed = store.landing(plan.view) if plan.method == "full" else None
    return landed or REBUILT


def _replay_all(con: duckdb.DuckDBPyConnection, lake: Lake, snapshot: Snapshot, store: Store,
                projection: Projection, plan: Plan) -> list[DataFile]:
    selection = full_selection(plan)
    sql, files, _ = events_sql(lake, snapshot, projection, selection)
    check_decoding(con, lake, snapshot, projection, selection)
    rows = _rows_table(store, plan)
    parts = [bucket_events(lake, snapshot, projection, selection, bucket).sql
             for bucket in sorted({f.bucket for f in files})] if projection.engine in ("polars", "python") else []
    with store.landing_writes():
        materialize(con, projection, sql, rows, temp=rows == REBUILT, parts=parts)
    return files


def _affected_keys(con: duckdb.DuckDBPyConnection, lake: Lake, snapshot: Snapshot, store: Store,
                   projection: Projection, plan: Plan) -> list[DataFile]:
    if plan.keys is not None and plan.since is None and plan.until is None:
        # the keys were named: no need to read their events to know which keys they are
        con.register("__named_keys", pa.table({"partition_key": list(plan.keys)}))
        con.execute(f"CREATE OR REPLACE TEMP TABLE {KEYS} AS SELECT DISTINCT partition_key FROM __named_keys")
        con.unregister("__named_keys")
        return []
    selection = Selection(plan.selection(), exclude_quarantined=plan.exclude_quarantined)
    sql, files, _ = events_sql(lake, snapshot, projection, selection)
    # new events are where a producer's new payload shape shows first
    check_decoding(con, lake, snapshot, projection, selection)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {KEYS} AS SELECT DISTINCT partition_key FROM ({sql})")
    if plan.exclude_quarantined and plan.after_version is not None:
        con.execute(f"INSERT INTO {KEYS} {NEWLY_QUARANTINED} EXCEPT SELECT partition_key FROM {KEYS}")
    _add_deduped(con, plan)
    return files


def _add_deduped(con: duckdb.DuckDBPyConnection, plan: Plan) -> None:
    """Add to ``KEYS`` the partition keys of the copies dedupes removed since live's run, which live applied."""
    if plan.dedupe_keys:
        con.register("__deduped", pa.table({"partition_key": pa.array(plan.dedupe_keys, pa.string())}))
        con.execute(f"INSERT INTO {KEYS} SELECT partition_key FROM __deduped EXCEPT SELECT partition_key FROM {KEYS}")
        con.unregister("__deduped")


def _replay_keys(con: duckdb.DuckDBPyConnection, lake: Lake, snapshot: Snapshot, store: Store,
                 projection: Projection, plan: Plan) -> list[DataFile]:
    sql, files, _ = events_sql(lake, snapshot, projection, _keys_selection(con, snapshot, plan, plan.exclude_quarantined))
    materialize(con, projection, sql, REBUILT)
    check_partition_column(con, projection, REBUILT, f"value NOT IN (SELECT partition_key FROM {KEYS})")
    column = quote(projection.partition_column)
    # the scope holds the keys as the view's column does (CAST(partition_key AS INTEGER) AS order_no):
    # PostgreSQL compares no text with an integer; a key that does not convert has no row to replace
    kind = con.sql(f"SELECT {column} FROM {REBUILT}").types[0]
    con.execute(f"CREATE OR REPLACE TEMP TABLE {SCOPE} AS SELECT * FROM "
                f"(SELECT TRY_CAST(partition_key AS {kind}) AS {column} FROM {KEYS}) WHERE {column} IS NOT NULL")
    if plan.keys is not None:
        _warn_rowless_keys(con, plan, column)
    return files


def _keys_selection(con: duckdb.DuckDBPyConnection, snapshot: Snapshot, plan: Plan, exclude_quarantined: bool) -> Selection:
    """All the events of the keys in the ``KEYS`` table, read from their buckets' files only."""
    keys = tuple(r[0] for r in con.sql(f"SELECT partition_key FROM {KEYS} ORDER BY 1").fetchall())
    buckets = tuple(r[0] for r in con.sql(f"SELECT DISTINCT {bucket_sql('partition_key', snapshot.buckets)} FROM {KEYS}").fetchall())
    return Selection(plan.everything(), keys_table=KEYS, buckets=buckets, exclude_quarantined=exclude_quarantined, keys=keys)


def _warn_rowless_keys(con: duckdb.DuckDBPyConnection, plan: Plan, column: str) -> None:
    """Named keys the patch has no row for: often a typo; a cutover would delete their live rows."""
    count, examples = con.sql(
        f"SELECT count(*), list(partition_key ORDER BY partition_key)[1:3] FROM {KEYS} "
        f"WHERE partition_key NOT IN (SELECT CAST({column} AS VARCHAR) FROM {REBUILT} WHERE {column} IS NOT NULL)"
    ).fetchall()[0]
    if count:  # the keys quoted: one holding a comma or a line break would pass for two, or for a log line
        log.warning("%s: %s of the %s named keys have no row in the patch (e.g. %s): no events in the lake, or the "
                    "projection returns none for them; a cutover deletes their rows from live, if it has any",
                    plan.view, count, len(plan.keys or ()), ", ".join(map(repr, examples)))


def _partial(con: duckdb.DuckDBPyConnection, lake: Lake, snapshot: Snapshot, store: Store,
             projection: Projection, plan: Plan) -> list[DataFile]:
    selection = Selection(plan.selection(), exclude_quarantined=plan.exclude_quarantined)
    sql, files, _ = events_sql(lake, snapshot, projection, selection)
    check_decoding(con, lake, snapshot, projection, selection)
    materialize(con, projection, sql, PARTIAL)
    con.execute(f"CREATE OR REPLACE TEMP VIEW __selected AS {sql}")
    return files


def _replay_windows(con: duckdb.DuckDBPyConnection, lake: Lake, snapshot: Snapshot, store: Store,
                    projection: Projection, plan: Plan) -> list[DataFile]:
    """Recompute the windows the selected events fall in, from all their events: also those the
    projection gives no row for over the selected events alone (a HAVING, a late event that counts
    only with the others), whose live rows would otherwise stay stale."""
    assert projection.window is not None
    column, size = quote(projection.window.column), projection.window.size
    events = "SELECT event_time FROM __selected"
    left = _newly_quarantined(con, snapshot, plan)
    if left is not None:  # their events leave their windows (and those of the keys of copies deduped, theirs)
        events += f" UNION ALL SELECT event_time FROM ({events_sql(lake, snapshot, projection, left)[0]})"
    low, high = touched_windows(con, events, size, WINDOWS)
    if low is None:
        con.execute(f"CREATE OR REPLACE TEMP TABLE {SCOPE} AS SELECT DISTINCT {column} FROM {PARTIAL}")
        con.execute(f"CREATE OR REPLACE TEMP TABLE {REBUILT} AS SELECT * FROM {PARTIAL} WHERE false")
        return []
    sql, files, _ = events_sql(lake, snapshot, projection, Selection(plan.everything(low, high), exclude_quarantined=plan.exclude_quarantined))
    materialize(con, projection, in_windows(con, sql, size, WINDOWS), REBUILT)
    described = {r[0]: r[1] for r in con.sql(f"DESCRIBE {REBUILT}").fetchall()}
    check_window_column(projection, described)  # before the starts are compared as times
    check_window_starts(con, projection, REBUILT, WINDOWS)
    # the scope: every window recomputed, as the view's column holds its start (also one that now gives
    # no row: its live row goes), and any the selected events alone gave a row for
    kind = described[projection.window.column]
    starts = f"SELECT TRY_CAST(window_start AS {kind}) AS {column} FROM {WINDOWS}"  # NULL: a column of another kind
    con.execute(f"CREATE OR REPLACE TEMP TABLE {SCOPE} AS SELECT * FROM ({starts}) WHERE {column} IS NOT NULL "
                f"UNION SELECT {column} FROM {REBUILT} UNION SELECT {column} FROM {PARTIAL}")
    return files


def _replay_scoped(con: duckdb.DuckDBPyConnection, lake: Lake, snapshot: Snapshot, store: Store,
                   projection: Projection, plan: Plan) -> list[DataFile]:
    """Recompute the whole view and keep the rows the selected events decide: those the projection
    gives over them alone and, for a ``full`` view, those that change when they are left out (a
    HAVING, a rank over all rows: the selected events alone may give no row for them), whose live
    rows would stay stale. A ``merge`` view's rows are sums per key: the first set is all of them."""
    files = _replay_all(con, lake, snapshot, store, projection, plan)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {ALL} AS SELECT * FROM {REBUILT}")
    keys = ", ".join(quote(k) for k in projection.key)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {SCOPE} AS SELECT DISTINCT {keys} FROM {PARTIAL}")
    if projection.incremental == "full":
        sql, _, _ = events_sql(lake, snapshot, projection, full_selection(plan))
        materialize(con, projection, f"SELECT * FROM ({sql}) WHERE event_id NOT IN (SELECT event_id FROM __selected)", WITHOUT)
        con.execute(f"INSERT INTO {SCOPE} SELECT {keys} FROM (SELECT * FROM {ALL} EXCEPT SELECT * FROM {WITHOUT}) "
                    f"UNION SELECT {keys} FROM (SELECT * FROM {WITHOUT} EXCEPT SELECT * FROM {ALL}) "
                    f"EXCEPT SELECT {keys} FROM {SCOPE}")
    match = " AND ".join(f"s.{quote(k)} IS NOT DISTINCT FROM a.{quote(k)}" for k in projection.key)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {REBUILT} AS SELECT a.* FROM {ALL} a WHERE EXISTS (SELECT 1 FROM {SCOPE} s WHERE {match})")
    return files


def _merge(con: duckdb.DuckDBPyConnection, lake: Lake, snapshot: Snapshot, store: Store,
           projection: Projection, plan: Plan) -> list[DataFile]:
    """Combine live's rows with the partial result over new events, column by column."""
    left = _newly_quarantined(con, snapshot, plan)
    if left is not None:
        _refuse_summed(lake, snapshot, projection, plan, con, left)
    ops = projection.merge or {}
    types = {r[0]: r[1] for r in con.sql(f"DESCRIBE {PARTIAL}").fetchall()}
    check_merge_ops(con, projection, types)
    # a temp view: create_view's stays in a DuckDB store's file, naming this run's temp tables
    con.register("__live", store.relation_of_keys(con, plan.view, PARTIAL, projection.key))
    keys = ", ".join(quote(k) for k in projection.key)
    match = " AND ".join(f"p.{quote(k)} IS NOT DISTINCT FROM l.{quote(k)}" for k in projection.key)

    def combine(column: str) -> str:
        c, op = quote(column), ops.get(column)
        if op == "sum":  # as SQL's sum: NULL only when both sides are (a sum over no values)
            return f"CAST(CASE WHEN l.{c} IS NULL THEN p.{c} WHEN p.{c} IS NULL THEN l.{c} ELSE l.{c} + p.{c} END AS {types[column]}) AS {c}"
        if op in ("min", "max"):
            return f"{'least' if op == 'min' else 'greatest'}(l.{c}, p.{c}) AS {c}"
        return f"coalesce(p.{c}, l.{c}) AS {c}"

    values = ", ".join(combine(c) for c in types if c not in projection.key)
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {REBUILT} AS SELECT {', '.join('p.' + quote(k) for k in projection.key)}"
        f"{', ' if values else ''}{values} FROM {PARTIAL} p LEFT JOIN __live l ON {match}"
    )
    con.execute(f"CREATE OR REPLACE TEMP TABLE {SCOPE} AS SELECT DISTINCT {keys} FROM {PARTIAL}")
    return []


def _newly_quarantined(con: duckdb.DuckDBPyConnection, snapshot: Snapshot, plan: Plan) -> Selection | None:
    """All the events of the keys quarantined since live's run, which a catch-up with
    --exclude-quarantined takes out, and of the keys of the copies dedupes removed since, which live
    applied (None: no such key). Fills ``KEYS``."""
    quarantined = plan.exclude_quarantined and plan.after_version is not None
    if not (quarantined or plan.dedupe_keys):
        return None
    con.execute(f"CREATE OR REPLACE TEMP TABLE {KEYS} AS "
                + (NEWLY_QUARANTINED if quarantined else "SELECT CAST(NULL AS VARCHAR) AS partition_key WHERE false"))
    _add_deduped(con, plan)
    selection = _keys_selection(con, snapshot, plan, exclude_quarantined=False)
    return selection if selection.keys else None


def _refuse_summed(lake: Lake, snapshot: Snapshot, projection: Projection, plan: Plan,
                   con: duckdb.DuckDBPyConnection, left: Selection) -> None:
    """A merge view cannot take events out of its sums: its catch-up is refused when the newly
    quarantined keys (``left``) have events live summed (up to its lake_version)."""
    summed = replace(left, filter=replace(left.filter, as_of=plan.after_version))
    examples, count = con.sql(f"SELECT list(DISTINCT partition_key ORDER BY partition_key)[1:3], count(DISTINCT partition_key) "
                              f"FROM ({events_sql(lake, snapshot, projection, summed)[0]})").fetchall()[0]
    if count:
        raise ProjectionError(
            f"{plan.view}: {count} partition key(s) were quarantined since live's run, whose events live has summed "
            f"(e.g. {', '.join(examples)}); a merge view cannot take their events out of its sums: run "
            f"`rebuild run {plan.view} --full --exclude-quarantined`", view=plan.view)


_STEPS: dict[str, list[Step]] = {
    "full": [_replay_all],
    "by_key": [_affected_keys, _replay_keys],
    "by_window": [_partial, _replay_windows],
    "merge": [_partial, _merge],
    "scoped": [_partial, _replay_scoped],
}
