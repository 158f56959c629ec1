"""Replay beyond one process: key buckets become tasks on a process pool or a Dask cluster.

A full run of a projection whose rows belong to one partition key (``by_key`` projections and
Python folds) splits along the lake's key buckets (``hash(partition_key) % B``): each task
replays one bucket's events, from the files the driver chose for it in the pinned snapshot, and
writes its rows as one Parquet part at a deterministic place,

    {staging}/{view}/{run_id}/bucket=00003.parquet

so a retried task (a worker died, Dask ran it again elsewhere) overwrites its part instead of
adding a second one. ``merge`` projections (sums, counts, min/max) are split the same way and
their per-bucket partials combined with the projection's merge ops. Other projections (by_window,
full) refuse: their rows are not per key.

When every task is done, the driver loads the parts on the store's compute connection, checks the
projection's contract, and publishes the shadow, run record and checkpoint in one store
transaction (``Store.publish``, the same commit a single-process run makes); then the staging
folder is removed. A crash before that commit leaves live and the previous shadow untouched.

Executors: ``local`` (today's single process, not this module), ``processes`` (a local process
pool), ``dask`` (a ``distributed.Client`` at ``address``, or a ``LocalCluster`` without one).
The staging area is ``{lake}/_staging`` (the lake's own object store, or its folder), so every
worker that can read the lake can write its part.
"""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from lake import Lake, Snapshot, storage
from lake.sql import literal, quote
from rebuild.errors import ConfigError, ProjectionError, RebuildError
from rebuild.fold import exit_with_parent
from rebuild.options import EXECUTORS
from rebuild.plan import Plan
# HEARTBEAT: seconds without a bucket done after which a run says which buckets it still waits for (a hot
# one can take an hour, while a job's log or a bar would show nothing), as the progress log does of a step
from rebuild.progress import HEARTBEAT, Progress, Silent
from rebuild.projection import Projection
from rebuild.decoding import check_decoding
from rebuild.replay import (
    Selection, bucket_events, check_output, events_sql, materialize, quarantined_keys,
)
from rebuild.runner import REBUILT, Recorder, RunResult, full_selection, new_run_id, skip_or_raise
from rebuild.store import Store

log = logging.getLogger(__name__)

STAGING = "_staging"
PART = "__part"


@dataclass(frozen=True)
class BucketTask:
    """One bucket of a distributed run: everything a worker needs, decided by the driver."""

    run_id: str
    view: str
    bucket: int
    sql: str  # the bucket's events (file list from the pinned snapshot, filters, decoded payload)
    events: int  # rows of the bucket's files (what the run record counts as read)
    projection: Projection
    part_uri: str
    lake_uri: str
    storage_options: dict[str, str] = field(default_factory=dict)
    exclude_quarantined: bool = False
    threads: int | None = None
    memory_limit: str | None = None


@dataclass(frozen=True)
class PartResult:
    """What a task wrote: its part (None when the bucket gave no rows) and what it cost."""

    bucket: int
    part_uri: str | None
    rows: int
    events: int
    seconds: float
    peak_rss_mb: float
    types: tuple[tuple[str, str], ...]
    worker: str

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class Waiting:
    """No bucket finished for ``HEARTBEAT`` seconds; these are still to do (running or queued)."""

    buckets: tuple[int, ...]
    workers: int | None = None  # connected to the dask scheduler (None: a process pool's)

    def note(self, quiet: float) -> str:
        shown = ", ".join(str(b) for b in self.buckets[:5])
        more = f" and {len(self.buckets) - 5} more" if len(self.buckets) > 5 else ""
        if self.workers == 0:  # an empty cluster: nothing runs until a worker joins
            return (f"none done for {quiet:.0f}s: no worker is connected to the dask scheduler, so bucket(s) "
                    f"{shown}{more} wait for one (start workers, or stop this run)")
        return f"none done for {quiet:.0f}s; still replaying bucket(s) {shown}{more}"


@dataclass(frozen=True)
class DistributedStats:
    """Per-run figures for benchmarks and docs: tasks, events, and the busiest task's cost."""

    executor: str
    tasks: int
    events: int
    rows: int
    seconds: float
    task_seconds: float
    max_task_rss_mb: float
    workers: int

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def check_distributable(projection: Projection, plan: Plan) -> str:
    """How parts combine: ``concat`` (rows per partition key) or ``merge``; else ConfigError."""
    if plan.method != "full":
        raise ConfigError(
            f"a distributed run rebuilds a whole view; this {plan.view} run is {plan.method}: drop "
            "--executor (incremental and targeted runs read few events and run in one process)"
        )
    if projection.incremental == "by_key" or projection.engine == "python":
        return "concat"
    if projection.incremental == "merge":
        return "merge"
    raise ConfigError(
        f"{projection.name} ({projection.incremental}) cannot be split by key bucket: its rows are not "
        "per partition key and it has no merge ops. Run it with --executor local"
    )


def part_uri(staging: str, view: str, run_id: str, bucket: int) -> str:
    """The one place a bucket's part goes: a retry overwrites it."""
    return f"{staging}/{view}/{run_id}/bucket={bucket:05d}.parquet"


# -- on the worker -------------------------------------------------------------------------------
def replay_bucket(task: BucketTask) -> PartResult:
    """Replay one bucket and write its part (runs on a worker; no store, no lock, no commit)."""
    started = time.monotonic()
    con = storage.spill_outside_cwd(duckdb.connect())  # a worker's working directory may be anywhere
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute("SET enable_progress_bar = false")
        if task.threads:
            con.execute(f"SET threads = {int(task.threads)}")
        if task.memory_limit:
            con.execute(f"SET memory_limit = {literal(task.memory_limit)}")
        storage.attach(con, task.lake_uri, task.storage_options)
        if task.exclude_quarantined:
            quarantined_keys(con, Lake(task.lake_uri, storage_options=task.storage_options), task.projection.streams)
        # one process per task already: a fold must not start a process pool of its own
        rows = materialize(con, task.projection, task.sql, PART, fold_workers=1)
        check_output(con, task.projection, PART)
        types = tuple((str(n), str(t)) for n, t in con.sql(f"SELECT column_name, column_type FROM (DESCRIBE {PART})").fetchall())
        written = _write_part(con, task) if rows else None
    finally:
        con.close()
    return PartResult(
        bucket=task.bucket, part_uri=written, rows=rows, events=task.events,
        seconds=round(time.monotonic() - started, 3), peak_rss_mb=_peak_rss_mb(), types=types,
        worker=f"{os.uname().nodename}:{os.getpid()}",
    )


def _write_part(con: duckdb.DuckDBPyConnection, task: BucketTask) -> str:
    """Write the part at its path in one piece: a local file is renamed into place, an object
    store PUT is atomic; either way a retry replaces the part."""
    if storage.is_remote(task.part_uri):
        con.execute(f"COPY {PART} TO {literal(task.part_uri)} (FORMAT parquet)")
        return task.part_uri
    folder = os.path.dirname(task.part_uri)
    os.makedirs(folder, exist_ok=True)
    temporary = f"{task.part_uri}.{os.getpid()}.tmp"
    con.execute(f"COPY {PART} TO {literal(temporary)} (FORMAT parquet)")
    os.replace(temporary, task.part_uri)
    return task.part_uri


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


def _run_pickled(payload: bytes) -> PartResult:
    import cloudpickle

    return replay_bucket(cloudpickle.loads(payload))


# -- executors: tasks in, results out (in completion order) --------------------------------------
def _processes(tasks: Sequence[BucketTask], workers: int | None, address: str | None) -> Iterator[PartResult | Waiting]:
    import cloudpickle  # a projection defined in a notebook travels by value

    # spawn, not fork: the driver holds DuckDB connections (and their threads) a fork would copy
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1, mp_context=context,
                               initializer=exit_with_parent, initargs=(os.getpid(),))
    try:
        futures = {pool.submit(_run_pickled, cloudpickle.dumps(t)): t for t in tasks}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=HEARTBEAT, return_when=FIRST_COMPLETED)
            if not finished:
                yield Waiting(tuple(sorted(futures[f].bucket for f in pending)))
            for future in finished:
                try:
                    yield future.result()
                except BrokenProcessPool as exc:  # killed, or out of memory: a process pool does not retry
                    raise RebuildError(
                        f"a worker process died while replaying {futures[future].view} bucket {futures[future].bucket} "
                        "(killed, or out of memory: see the system log); nothing was written. Rerun the same command, "
                        "with fewer --workers if memory is short, or use --executor dask, which retries a lost task"
                        + _unguarded_script(), view=futures[future].view, bucket=futures[future].bucket,
                    ) from exc
    finally:
        _stop(pool)


def _stop(pool: ProcessPoolExecutor) -> None:
    """End the pool without waiting for its tasks: after a failed bucket or Ctrl-C their parts are of no
    use, and the pool's own shutdown would first replay every bucket left (hours in a night's job)."""
    processes = list((pool._processes or {}).values())  # Python 3.14 has pool.terminate_workers()
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
        process.join()


def _unguarded_script() -> str:
    """A hint for a run started by a script: each worker process imports the script again, so one
    without a main guard runs again in every worker (which then fails: the store is locked)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    cli = getattr(getattr(main, "run", None), "__module__", None) == "_rebuild_cli"  # the console script
    if path is None or cli or Path(path).parent == Path(__file__).parent:  # a notebook, or `python -m rebuild`
        return ""
    return (f". If this run was started by {path}: every worker process imports that script again, so start the "
            "run under `if __name__ == \"__main__\":`")


@contextlib.contextmanager
def _quiet_cluster() -> Iterator[None]:
    """Without -v (the root logger above INFO), a cluster's start and stop are no news: ``distributed``
    logs ~50 INFO lines per run, which a job's log would carry between its progress lines."""
    logger = logging.getLogger("distributed")
    before = logger.level
    if logging.getLogger().getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(before)


@contextlib.contextmanager
def _interrupt_deferred() -> Iterator[list[int]]:
    """Ctrl-C while a LocalCluster starts leaves it half started, and ``distributed``'s exit hook then
    prints a traceback closing it. Inside this block Ctrl-C is noted; the caller acts on it after."""
    if threading.current_thread() is not threading.main_thread():
        yield []
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield caught
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)


def _dask(tasks: Sequence[BucketTask], workers: int | None, address: str | None) -> Iterator[PartResult | Waiting]:
    try:
        from distributed import Client, LocalCluster, wait as dask_wait
    except ImportError as exc:  # the dask extra (and the dev extras) install it
        raise ConfigError(f"--executor dask needs the `distributed` package ({exc}): install the workbench's dask extra, "
                          "pip install 'projection-rebuild-workbench[dask]' (in a checkout: pip install '.[dask]')") from exc
    with _quiet_cluster():
        cluster = None
        if address is None:
            with _interrupt_deferred() as interrupted:
                try:
                    cluster = LocalCluster(n_workers=workers or os.cpu_count() or 1, threads_per_worker=1,
                                           processes=True, dashboard_address=":0")
                except Exception:
                    if not interrupted:
                        raise
                    # Ctrl-C at a terminal reaches the worker processes starting too, and the cluster
                    # failed ("Nanny failed to start", told as a bug): the person stopped the run
                    cluster = None
            if interrupted:
                if cluster is not None:
                    cluster.close()
                raise KeyboardInterrupt
        try:
            client = Client(address or cluster)
        except OSError as exc:  # a scheduler that is down or unreachable: not a disk problem
            if cluster is not None:
                cluster.close()
            raise ConfigError(f"cannot reach the dask scheduler at {address}: {exc}; start it, or fix --address; "
                              "nothing was written", address=address) from exc
        try:
            if tasks:
                _check_workers(client, tasks[0], address or "a LocalCluster")
            # deterministic keys and retries: a task lost with its worker runs again and rewrites its part
            futures = {client.submit(replay_bucket, t, key=f"replay-{t.run_id}-{t.bucket:05d}", retries=3, pure=False): t
                       for t in tasks}
            pending = set(futures)
            while pending:
                try:
                    finished, pending = dask_wait(list(pending), timeout=HEARTBEAT, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    connected = len(client.nthreads())
                    if not connected and cluster is not None:  # its nannies restart a crashed worker, not a stopped one
                        raise RebuildError("the run's local dask cluster has no workers left (were they sent a Ctrl-C or "
                                           "SIGTERM?); nothing was written: rerun the same command") from None
                    yield Waiting(tuple(sorted(futures[f].bucket for f in pending)), connected)
                    continue
                for future in finished:
                    yield future.result()
        finally:
            client.close()
            if cluster is not None:
                cluster.close()


def _check_workers(client: Any, task: BucketTask, cluster: str) -> None:
    """A worker that cannot unpickle a task (the workbench or the projection's module is not installed
    there) drops its connection instead of failing the task, and the run waited forever: each worker
    unpickles one task first, as plain bytes, so that an import error comes back as an error."""
    import pickle

    from distributed.protocol.pickle import dumps

    try:
        client.run(pickle.loads, dumps(task))
    except ImportError as exc:
        raise ConfigError(
            f"the dask workers at {cluster} cannot load the run's tasks ({exc}): install the workbench, and the "
            "module of the projection, in every worker's Python environment (the same versions as here), then "
            "rerun; nothing was written", address=cluster) from exc


_EXECUTORS: dict[str, Callable[[Sequence[BucketTask], int | None, str | None], Iterator[PartResult | Waiting]]] = {
    "processes": _processes,
    "dask": _dask,
}


# -- on the driver ---------------------------------------------------------------------------------
def plan_tasks(plan: Plan, lake: Lake, snapshot: Snapshot, projection: Projection, run_id: str, staging: str,
               threads: int | None = None, memory_limit: str | None = None) -> list[BucketTask]:
    """One task per key bucket that has files in the snapshot (an empty bucket yields no rows)."""
    parts = (bucket_events(lake, snapshot, projection, full_selection(plan), bucket) for bucket in range(snapshot.buckets))
    return [BucketTask(
        run_id=run_id, view=plan.view, bucket=part.bucket, sql=part.sql, events=part.events, projection=projection,
        part_uri=part_uri(staging, plan.view, run_id, part.bucket), lake_uri=lake.uri,
        storage_options=dict(lake.storage_options), exclude_quarantined=plan.exclude_quarantined,
        threads=threads, memory_limit=memory_limit,
    ) for part in parts if part.files]


def run_distributed(plan: Plan, lake: Lake, store: Store, projection: Projection, *, executor: str,
                    address: str | None = None, workers: int | None = None, progress: Progress | None = None,
                    threads: int | None = 1, memory_limit: str | None = None) -> RunResult:
    """A full run as bucket tasks on ``executor``, committed once through the store.

    The caller holds the view's lock. The result's record carries the run id the parts were
    staged under; ``RunResult.stats`` has the per-task figures (``DistributedStats``).
    """
    if executor not in _EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; known: {list(EXECUTORS)}")
    how = check_distributable(projection, plan)
    progress = progress or Silent()
    started, clock = datetime.now(UTC), time.monotonic()
    snapshot = lake.snapshot(plan.delta_version)
    run_id = new_run_id()
    staging = f"{lake.uri}/{STAGING}"
    tasks = plan_tasks(plan, lake, snapshot, projection, run_id, staging, threads, memory_limit)
    log.info("%s: %s bucket tasks on %s%s", plan.view, len(tasks), executor, f" at {address}" if address else "")
    progress.start(len(tasks) + 1, "buckets", f"{plan.view} full on {executor}")
    done: dict[int, PartResult] = {}
    quiet = time.monotonic()  # since the last bucket done
    try:
        while True:  # once more per unreadable file skipped (--skip-corrupted), rerunning only its bucket
            try:
                for result in _EXECUTORS[executor]([t for t in tasks if t.bucket not in done], workers, address):
                    if isinstance(result, Waiting):  # a job's log shows the run is alive, and what it waits for
                        progress.advance(0, result.note(time.monotonic() - quiet))
                        continue
                    done[result.bucket], quiet = result, time.monotonic()
                    progress.advance(1, f"bucket {result.bucket}: {result.rows:,} rows")
                break
            except (duckdb.Error, ProjectionError) as exc:
                plan, snapshot = skip_or_raise(exc, plan, snapshot, projection)
                before = {t.bucket: t.sql for t in tasks}
                tasks = plan_tasks(plan, lake, snapshot, projection, run_id, staging, threads, memory_limit)
                done = {b: r for b, r in done.items() if any(t.bucket == b and t.sql == before[b] for t in tasks)}
        results = [done[t.bucket] for t in tasks]
        con = lake.attach(store.compute())
        # as a run in one process does (the tasks' from_json is silent), once the tasks have read every file: an
        # unreadable one is named, or left out of the snapshot (--skip-corrupted), as for them
        if plan.exclude_quarantined:  # the keys the tasks left out, left out of the count too
            quarantined_keys(con, lake, plan.streams)
        check_decoding(con, lake, snapshot, projection, full_selection(plan))
        _load_parts(con, lake, snapshot, projection, plan, results, how)
        check_output(con, projection, REBUILT)
        # recorded under the run id the parts were staged under
        recorder = Recorder(plan, projection, started, clock, sum(r.events for r in results), run_id=run_id)
        store.publish(con, plan.view, REBUILT, None, projection.key, projection.key, recorder)
        con.execute(f"DROP TABLE IF EXISTS temp.{quote(REBUILT)}")
        progress.advance(1, "published")
    finally:
        progress.close()
        _remove_parts(f"{staging}/{plan.view}/{run_id}", lake)
    record = recorder.record
    assert record is not None
    stats = DistributedStats(
        executor=executor, tasks=len(results), events=sum(r.events for r in results),
        rows=record.rows_written, seconds=round(time.monotonic() - clock, 3),
        task_seconds=round(sum(r.seconds for r in results), 3),
        max_task_rss_mb=max((r.peak_rss_mb for r in results), default=0.0),
        workers=len({r.worker for r in results}),
    )
    return RunResult(record=record, plan=plan, stats=stats.to_dict())


def _remove_parts(folder: str, lake: Lake, attempts: int = 3) -> None:
    """Delete a run's staging folder, never raising: after a failed bucket, a dask cluster's other tasks
    still running (they cannot be stopped) may write a part while it goes, and the error removing it
    replaced the run's own (a corrupt file named, with what to do) with "Directory not empty"."""
    for attempt in range(1, attempts + 1):
        try:
            storage.remove_tree(folder, lake.storage_options)
            return
        except OSError as exc:
            if attempt == attempts:
                log.warning("could not delete the run's staged parts at %s (%s); `rebuild lake vacuum` deletes "
                            "them once they are older than its --retain-hours", folder, exc)
            else:
                time.sleep(0.2 * attempt)


def remove_abandoned_parts(lake: Lake, older_than: timedelta, dry_run: bool = False) -> int:
    """Delete the staging folders of runs started more than ``older_than`` ago (the run id says when):
    a driver killed before its commit (kill -9, a lost machine) left its parts there, and nothing
    takes them up again (a rerun stages under a new run id). Returns how many folders there were."""
    fs = storage.fsspec_filesystem(lake.uri, lake.storage_options)
    root = f"{lake.uri}/{STAGING}".split("://", 1)[-1]
    if not fs.exists(root):
        return 0
    cutoff = datetime.now(UTC) - older_than
    stale = [run for view in fs.ls(root, detail=False, refresh=True) for run in fs.ls(view, detail=False, refresh=True)
             if (started := _run_started(run)) is not None and started < cutoff]
    for run in [] if dry_run else stale:
        fs.rm(run, recursive=True)
    return len(stale)


def _run_started(folder: str) -> datetime | None:
    """When the run whose staging folder is ``folder`` started (``new_run_id``), None if not a run's."""
    try:
        return datetime.strptime(folder.rstrip("/").rsplit("/", 1)[-1].split("-")[0], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def _load_parts(con: duckdb.DuckDBPyConnection, lake: Lake, snapshot: Snapshot, projection: Projection,
                plan: Plan, results: list[PartResult], how: str) -> None:
    """The parts as temp table ``__rebuilt``, in the column types the workers computed."""
    written = [r for r in results if r.part_uri is not None]
    if not written:  # no rows anywhere: the projection over no events gives the right empty table
        sql, _, _ = events_sql(lake, snapshot, projection, Selection(plan.everything(), buckets=()))
        materialize(con, projection, sql, REBUILT)
        return
    types: dict[str, set[str]] = {}  # a column's types in the parts that have it
    for result in written:
        for column, type_ in result.types:
            types.setdefault(column, set()).add(type_)
    # A fold without declared output has the columns and types of its rows: a column only some buckets' rows
    # have is NULL in the others (union_by_name), and one typed apart (DECIMAL(5,2) here, (6,2) there) takes
    # the type DuckDB unites them in, as a single-process run's would; else a column keeps its workers' type.
    alike = {c: next(iter(t)) for c, t in types.items() if len(t) == 1}

    def typed(expression: str, column: str) -> str:
        return f"CAST({expression} AS {alike[column]}) AS {quote(column)}" if column in alike else f"{expression} AS {quote(column)}"

    source = f"read_parquet({literal(sorted(r.part_uri for r in written if r.part_uri))}, union_by_name = true)"
    if how == "concat":
        columns = ", ".join(typed(quote(c), c) for c in types)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {quote(REBUILT)} AS SELECT {columns} FROM {source}")
        return
    ops = projection.merge or {}
    missing = [c for c in types if c not in projection.key and c not in ops]
    if missing:
        raise ConfigError(
            f"{projection.name}: columns {missing} have no merge op, so per-bucket partials cannot be "
            "combined; run it with --executor local"
        )
    keys = ", ".join(quote(k) for k in projection.key)
    columns = ", ".join(quote(c) if c in projection.key else typed(f"{ops[c]}({quote(c)})", c) for c in types)
    con.execute(f"CREATE OR REPLACE TEMP TABLE {quote(REBUILT)} AS SELECT {columns} FROM {source} GROUP BY {keys}")


__all__ = ["EXECUTORS", "BucketTask", "DistributedStats", "PartResult", "check_distributable", "remove_abandoned_parts",
           "replay_bucket", "run_distributed"]
