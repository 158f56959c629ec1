"""Long, unattended, resumable work on one view: chunked backfills and bucketed full runs.

A **backfill** corrects ``[since, until)`` in event-time chunks. Each chunk is a targeted run
over ``[chunk start, chunk end)`` whose rows accumulate into one shadow patch (the store's
``publish(append=True)``: the shadow's rows in the chunk's scope are replaced, the scopes
united) together with the chunk's row in ``_backfills``, in one transaction. The header row
pins the lake snapshot (its Delta version), so every chunk, also after a resume, reads the
same events. Rerunning the same command after a crash skips the finished chunks; the final
shadow equals an uninterrupted run's. Until the last chunk the run record's status is
``backfill``, and cutover refuses it.

A **bucketed full run** (for ``by_key`` projections, whose rows depend on one partition key's
events) replays the lake key bucket by key bucket; each bucket's rows are appended to
``VIEW__building`` with a per-bucket row in ``_backfills``; when all buckets are there the
building table becomes the shadow in one transaction. A crash leaves live and the last good
shadow untouched, and a rerun skips the finished buckets. Used when asked (``buckets=True``,
``rebuild backfill VIEW --buckets``) or automatically for full runs estimated to read more than
``BUCKET_THRESHOLD`` events; below it the single-query run is faster.
"""

from __future__ import annotations

import html
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from lake import Lake, Snapshot, storage
from lake.read import as_utc
from lake.schema import bucket_sql
from rebuild.errors import ConfigError, ProjectionError
from rebuild.faults import point
from rebuild.options import RunOptions, parse_time
from rebuild.plan import Plan, make_plan
from rebuild.progress import Progress, Silent
from rebuild.projection import Projection
from rebuild.decoding import check_decoding
from rebuild.replay import (
    bucket_events, check_output, check_partition_column, materialize, quarantined_keys,
)
from rebuild.runner import REBUILT, Publishing, Recorder, RunResult, execute, full_selection, new_run_id, skip_or_raise
from rebuild.store import Store
from rebuild.store.base import SHADOW, Mark, scope_name, shadow_name

log = logging.getLogger(__name__)

BUCKET_THRESHOLD = 50_000_000
HEADER = -1
MAX_CHUNKS = 100_000  # more is a typo (a year off, a unit off): refuse before listing them
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def resume_command(store: Store, view: str, job_id: str) -> str:
    """The command (and notebook call) that finishes the unfinished backfill ``job_id``, with the arguments
    its header row keeps: "rerun the same command" asked the operator to know what a job or notebook ran."""
    header = next((m for m in store.marks(view, job_id) if m.item == HEADER and m.kind == "backfill"), None)
    if header is None:
        return "the same `rebuild backfill` command"
    asked = json.loads(header.params)
    chunk = chunk_text(timedelta(seconds=asked["chunk_seconds"]))
    since, until, exclude = asked["since"], asked["until"], bool(asked.get("exclude_quarantined"))
    flags = f"--since {since} --until {until} --chunk {chunk}" + (" --exclude-quarantined" if exclude else "")
    call = f"since={since!r}, until={until!r}, chunk={chunk!r}" + (", exclude_quarantined=True" if exclude else "")
    return f"`rebuild backfill {view} {flags}` (wb.backfill({view!r}, {call}))"


def parse_chunk(text: str) -> timedelta:
    """``30m``, ``6h``, ``1d``, ``2w`` as a timedelta."""
    m = re.fullmatch(r"\s*(\d+)\s*([mhdw])\s*", text or "")
    if not m or int(m[1]) == 0:
        raise ConfigError(f"--chunk {text!r} is not a duration like 6h, 1d or 1w")
    try:
        return timedelta(**{_UNITS[m[2]]: int(m[1])})
    except OverflowError:
        raise ConfigError(f"--chunk {text!r} is longer than the calendar; use a duration like 6h, 1d or 1w") from None


def chunk_text(step: timedelta) -> str:
    """``step`` as the --chunk that asks it, in the largest unit that divides it: ``1d`` for 24 hours."""
    minutes = int(step.total_seconds()) // 60
    count, unit = next((minutes // size, unit) for unit, size in (("w", 10080), ("d", 1440), ("h", 60), ("m", 1))
                       if minutes % size == 0)
    return f"{count}{unit}"


def chunks(since: datetime, until: datetime, step: timedelta) -> list[tuple[datetime, datetime]]:
    """``[since, until)`` cut into consecutive ``[start, end)`` pieces of ``step`` (the last may be shorter)."""
    count = -((since - until) // step)  # ceil((until - since) / step)
    if count > MAX_CHUNKS:
        raise ConfigError(f"--since {since.isoformat()} --until {until.isoformat()} by --chunk {step} makes {count:,} "
                          f"chunks (at most {MAX_CHUNKS:,}); check the dates, or use a longer --chunk")
    out, start = [], since
    while start < until:
        end = until if until - start <= step else start + step  # start + step may be past the calendar
        out.append((start, end))
        start = end
    return out


@dataclass(frozen=True)
class BackfillResult:
    """A finished backfill (or bucketed run): what it did and where the shadow is."""

    job_id: str
    run_id: str
    view: str
    kind: str
    chunks: int
    skipped: int
    rows: int
    scope_rows: int
    delta_version: int
    lake_version: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        unit = "buckets" if self.kind == "buckets" else "chunks"
        resumed = f" ({self.skipped} already done, resumed)" if self.skipped else ""
        return (f"{self.kind} {self.job_id} of {self.view}: {self.chunks} {unit}{resumed} -> {self.rows:,} rows in "
                f"{self.view}__shadow, lake_version {self.lake_version}, {self.seconds:.1f}s; next: "
                f"`rebuild check {self.view}` then `rebuild cutover {self.view}`")

    def _repr_html_(self) -> str:
        return f"<b>Backfill</b> {html.escape(self.summary())}"


@dataclass(frozen=True)
class _Job:
    header: Mark
    done: frozenset[int]

    def mark(self, item: int, label: str, rows: int, status: str = "done") -> Mark:
        return Mark(job_id=self.header.job_id, view=self.header.view, kind=self.header.kind, item=item,
                    label=label, status=status, delta_version=self.header.delta_version,
                    lake_version=self.header.lake_version, run_id=self.header.run_id, rows=rows,
                    params=self.header.params, updated_at=datetime.now(UTC))


def _job(store: Store, lake: Lake, projection: Projection, kind: str, params: dict[str, Any], label: str,
         snapshot: Callable[[], Snapshot]) -> _Job:
    """The unfinished job of ``kind`` with the same ``params``, or a new one pinned at ``snapshot()``."""
    view, text = projection.name, json.dumps(params, sort_keys=True)
    # a job an earlier workbench started names the same code by the fingerprint that one gave it
    same = {text, *(json.dumps({**params, "fingerprint": f}, sort_keys=True) for f in projection.earlier_fingerprints)}
    marks = store.marks(view)
    for header in reversed([m for m in marks if m.item == HEADER and m.kind == kind and m.status == "started"]):
        done = frozenset(m.item for m in marks if m.job_id == header.job_id and m.item != HEADER)
        replaced_by = _replaced_by(store, marks, header) if done else None
        if header.params not in same:
            if done and replaced_by is None:
                log.warning("%s %s of %s (%s, %s parts done) is not resumed: %s; this one starts over and replaces "
                            "its work%s", kind, header.job_id, view, header.label, len(done), *_other(header.params, params))
            continue
        if replaced_by is not None:
            log.warning("%s %s of %s cannot resume: its %s was replaced by run %s; starting over", kind,
                        header.job_id, view, "shadow" if kind == "backfill" else "building table", replaced_by)
            break
        if (gone := vacuumed(lake, header.delta_version)) is not None:
            log.warning("%s %s of %s cannot resume: the lake snapshot it is pinned to (delta_version %s) lost %s, "
                        "which compaction replaced and `rebuild lake vacuum` deleted; starting over at the latest one",
                        kind, header.job_id, view, header.delta_version, gone)
            break
        log.warning("resuming %s %s of %s: %s parts done, lake pinned at delta_version %s",
                    kind, header.job_id, view, len(done), header.delta_version)
        return _Job(header, done)
    pinned = snapshot()
    job_id = new_run_id()
    header = Mark(job_id=job_id, view=view, kind=kind, item=HEADER, label=label, status="started",
                  delta_version=pinned.delta_version, lake_version=pinned.lake_version, run_id=job_id,
                  rows=0, params=text, updated_at=datetime.now(UTC))
    store.put_mark(header)
    return _Job(header, frozenset())


def _other(started: str, params: dict[str, Any]) -> tuple[str, str]:
    """How an unfinished job's ``started`` params differ from ``params``, and how to finish it if it can be."""
    before = json.loads(started)
    if all(before.get(k) == params.get(k) for k in {*before, *params} - {"fingerprint", "version"}):
        return "other code of the projection started it (its version or logic changed since), which cannot finish it", ""
    return "it was asked other arguments", " (to finish it instead, rerun it with its own)"


def vacuumed(lake: Lake, delta_version: int) -> str | None:
    """A file of the snapshot at ``delta_version`` that is gone (compaction replaced it, vacuum deleted
    it), or None when a job pinned there can still read them all."""
    try:
        latest = {f.path for f in lake.snapshot().files}
        replaced = [f.path for f in lake.snapshot(delta_version).files if f.path not in latest]
        fs = storage.fsspec_filesystem(lake.uri, lake.storage_options) if replaced else None
        return next((path for path in replaced if fs is not None and not fs.exists(path)), None)
    except OSError as exc:  # delta-rs and fsspec say so with an OSError: the network, not the lake
        if storage.unreachable(exc):
            raise ConnectionError(f"cannot reach the lake's storage to read its Delta log ({exc}); its files may be fine") from exc
        raise


def _replaced_by(store: Store, marks: list[Mark], header: Mark) -> str | None:
    """The run that replaced what an unfinished job wrote so far, or None when it is still there.

    A backfill's chunks are in the shadow; a bucketed run's buckets in ``VIEW__building``, which
    the last job to stage a bucket (or to publish it as the shadow) wrote: its marks say which.
    """
    if header.kind == "backfill":
        shadow = store.checkpoint(header.view, SHADOW)
        return None if shadow is not None and shadow.run_id == header.run_id else (shadow.run_id if shadow else "-")
    writes = [m for m in marks if m.kind == header.kind and (m.item != HEADER or m.status == "finished")]
    last = max(writes, key=lambda m: m.updated_at, default=None)
    return None if last is None or last.job_id == header.job_id else last.job_id


def abandoned_jobs(store: Store, view: str, before: datetime) -> list[str]:
    """The long jobs of ``view`` that no run record names and whose marks last moved before ``before``:
    a bucketed run's (its run record has an id of its own), or a job killed before it published
    anything. A backfill that published a chunk is named by its run record and goes with it.
    Call it holding the view's lock, so that no job moves meanwhile."""
    named = {r.run_id for r in store.runs(view, limit=2**31)}
    jobs: dict[str, list[Mark]] = {}
    for m in store.marks(view):
        jobs.setdefault(m.job_id, []).append(m)
    return [job for job, marks in jobs.items()
            if not any(m.run_id in named for m in marks) and max(m.updated_at for m in marks) < before]


# -- backfill ----------------------------------------------------------------------------------
def backfill(lake: Lake, store: Store, projection: Projection, *, since: str | datetime, until: str | datetime,
             chunk: str = "1d", progress: Progress | None = None, exclude_quarantined: bool = False) -> BackfillResult:
    """Correct ``[since, until)`` of ``projection``'s view chunk by chunk into one shadow patch.

    Holds the view's lock throughout; resumes an unfinished backfill with the same arguments.
    """
    start, end = _time(since, "--since"), _time(until, "--until")
    if start >= end:
        raise ConfigError(f"--since {start} is not before --until {end}")
    step = parse_chunk(chunk)
    pieces = chunks(start, end, step)
    params = {"since": start.isoformat(), "until": end.isoformat(), "chunk_seconds": step.total_seconds(),
              "fingerprint": projection.fingerprint, "version": projection.version,
              "exclude_quarantined": exclude_quarantined}
    clock = time.monotonic()
    store.check_view_name(projection.name)  # before any chunk: the tables it makes must be nameable
    with store.lock(projection.name, "backfill"):
        job = _job(store, lake, projection, "backfill", params, f"{start.isoformat()}..{end.isoformat()} by {chunk}",
                   lake.snapshot)
        snapshot = lake.snapshot(job.header.delta_version)
        if not store.exists(projection.name):  # else the night's work is found unusable only at cutover
            log.warning("%s has no live view: this backfill makes a patch, which cutover applies only to live; "
                        "`rebuild run %s --full` builds the whole view", projection.name, projection.name)
        last = _run_chunks(lake, store, projection, job, pieces, snapshot, progress or Silent(), exclude_quarantined)
        store.put_mark(job.mark(HEADER, job.header.label, last.rows_written if last else 0, "finished"))
    shadow = shadow_name(projection.name)
    rows = last.rows_written if last else store.count(shadow)  # no last: killed after its last chunk
    scope_rows = last.scope_rows if last else store.count(scope_name(shadow)) if store.exists(scope_name(shadow)) else 0
    return BackfillResult(
        job_id=job.header.job_id, run_id=job.header.run_id, view=projection.name, kind="backfill",
        chunks=len(pieces), skipped=len(job.done), rows=rows, scope_rows=scope_rows,
        delta_version=job.header.delta_version, lake_version=job.header.lake_version,
        seconds=round(time.monotonic() - clock, 3),
    )


def _run_chunks(lake: Lake, store: Store, projection: Projection, job: _Job, pieces: list[tuple[datetime, datetime]],
                snapshot: Snapshot, progress: Progress, exclude_quarantined: bool) -> Any:
    todo = [i for i in range(len(pieces)) if i not in job.done]
    first, end = pieces[0][0].isoformat(), pieces[-1][1].isoformat()
    flag = " --exclude-quarantined" if exclude_quarantined else ""
    damaged = ("restore it and rerun the same backfill (it resumes after the chunks done), or "
               f"leave it out with `rebuild run {projection.name} --since {first} --until {end}{flag} --skip-corrupted`, "
               "which makes the shadow of this backfill in one run (its run record names the file)")
    progress.start(len(todo), "chunks", f"backfill {projection.name}")
    last = None
    try:
        for n, i in enumerate(todo):
            low, high = pieces[i]
            options = RunOptions(since=low.isoformat(), until=high.isoformat(), exclude_quarantined=exclude_quarantined)
            plan = make_plan(lake, store, projection, options, snapshot=snapshot)
            label = f"{low.isoformat()}..{high.isoformat()}"
            final = n == len(todo) - 1
            publishing = Publishing(run_id=job.header.run_id, status="shadow" if final else "backfill",
                                    append=bool(job.done) or n > 0, mark=job.mark(i, label, 0), damaged=damaged)
            last = execute(plan, lake, store, projection, Silent(), publishing).record
            point("backfill.after_chunk")
            progress.advance(1, f"chunk {i + 1}/{len(pieces)} {label}: {last.events_read:,} events")
    finally:
        progress.close()
    return last


def _time(value: str | datetime, flag: str) -> datetime:
    if isinstance(value, datetime):  # in UTC: a zone's wall-clock chunks meet its DST gap as an empty range
        return as_utc(value, flag)
    parsed = parse_time(value, flag)
    if parsed is None:
        raise ConfigError(f"{flag} is required for a backfill (an ISO date or time)")
    return parsed


# -- bucketed full runs ------------------------------------------------------------------------
def wants_buckets(plan: Plan, projection: Projection, asked: bool | None) -> bool:
    """Whether a run goes bucket by bucket: when asked, else for big full runs of by_key views."""
    possible = plan.method == "full" and projection.incremental == "by_key"
    if asked and not possible:
        raise ConfigError(
            f"a bucketed run needs a full run of a by_key projection; {plan.view} is "
            f"{projection.incremental} and this run is {plan.mode}: drop --buckets"
        )
    return possible if asked else bool(asked is None and possible and plan.estimated_events >= BUCKET_THRESHOLD)


def run_buckets(plan: Plan, lake: Lake, store: Store, projection: Projection, progress: Progress | None = None) -> RunResult:
    """A full run key bucket by key bucket into ``VIEW__building``, then the shadow (resumable).

    The caller holds the view's lock. A resumed run replays the snapshot its first attempt pinned.
    """
    progress = progress or Silent()
    started, clock = datetime.now(UTC), time.monotonic()
    params = {"fingerprint": projection.fingerprint, "version": projection.version,
              "exclude_quarantined": plan.exclude_quarantined}
    job = _job(store, lake, projection, "buckets", params, "full run by key bucket", lambda: lake.snapshot(plan.delta_version))
    if job.header.delta_version != plan.delta_version:
        snapshot = lake.snapshot(job.header.delta_version)
        plan = make_plan(lake, store, projection, RunOptions(full=True, exclude_quarantined=plan.exclude_quarantined),
                         snapshot=snapshot)
    snapshot = lake.snapshot(plan.delta_version)
    con = store.compute()
    if plan.exclude_quarantined:
        quarantined_keys(con, lake, plan.streams)
    read, plan = _stage_buckets(con, lake, snapshot, store, projection, plan, job, progress)
    recorder = Recorder(plan, projection, started, clock, read)
    point("buckets.before_publish")
    store.publish_staged(plan.view, recorder, mark=job.mark(HEADER, job.header.label, 0, "finished"))
    assert recorder.record is not None
    return RunResult(record=recorder.record, plan=plan)


def _stage_buckets(con: Any, lake: Lake, snapshot: Snapshot, store: Store, projection: Projection, plan: Plan,
                   job: _Job, progress: Progress) -> tuple[int, Plan]:
    todo = [b for b in range(snapshot.buckets) if b not in job.done]
    progress.start(len(todo), "buckets", f"{plan.view} full by bucket")
    read, keys_checked = 0, False
    try:
        for n, bucket in enumerate(todo):
            while True:  # once more per unreadable file skipped (--skip-corrupted)
                try:
                    part = bucket_events(lake, snapshot, projection, full_selection(plan), bucket)
                    if n == 0:  # on the first events of the whole lake: a bucket may hold none
                        check_decoding(con, lake, snapshot, projection, full_selection(plan))
                    rows = materialize(con, projection, part.sql, REBUILT)
                    break
                except (duckdb.Error, ProjectionError) as exc:
                    plan, snapshot = skip_or_raise(exc, plan, snapshot, projection)
            check_output(con, projection, REBUILT)
            if rows and not keys_checked:  # a wrong first key column shows in any bucket with rows; hashing
                # every row of every bucket would cost ~7% of a full run at 100M
                check_partition_column(con, projection, REBUILT, f"{bucket_sql('value', snapshot.buckets)} <> {bucket}")
                keys_checked = True
            point("buckets.mid_bucket")
            store.stage(con, plan.view, REBUILT, job.mark(bucket, f"bucket {bucket}", rows), reset=not job.done and n == 0)
            read += part.events
            point("buckets.after_bucket")
            progress.advance(1, f"bucket {bucket}: {rows:,} rows")
    finally:
        progress.close()
        con.execute(f"DROP TABLE IF EXISTS temp.{REBUILT}")
    return read, plan
