"""Single process vs Dask: the same full rebuild of order_summary on the same lake, ratios printed.

    .venv/bin/python -m bench.distributed --orders 1000000      # about 4.8M events

Runs, each into a fresh DuckDB store, on a synthetic order lake (``tests/stores/synthetic.py``:
written straight into the Delta table, millions of events in seconds; compacted first):

- ``local``: today's single-process run (DuckDB on every core)
- ``local_1_thread``: the same run with DuckDB on one thread (what one Dask worker gets)
- ``dask_1``, ``dask_2``: LocalClusters of 1 and 2 worker processes, one thread each

Prints one JSON object: seconds, events/s, events/s per worker, the busiest task's peak RSS, and
the ratios against the single-process run. Every run's shadow is checked equal to ``local``'s.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "out" / "distributed"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def make_lake(orders: int, buckets: int) -> Any:
    import lake
    from lake.compact import compact
    from tests.stores.synthetic import synthetic_lake

    root = OUT / f"lake-{orders}-{buckets}"
    target = lake.Lake(root)
    if not target.exists():
        started = time.monotonic()
        target.create(buckets=buckets)
        step = 250_000  # several commits, as a lake grows; then compacted like a maintained lake
        for first in range(0, orders, step):
            synthetic_lake(root, min(step, orders - first), first=first, target=target)
        compact(target)
        log(f"generated {orders:,} orders in {time.monotonic() - started:.1f}s")
    return target


def run_once(target: Any, label: str, threads: int | None = None, **options: Any) -> dict[str, Any]:
    from rebuild import Workbench

    store = OUT / f"{label}.duckdb"
    for path in (store, Path(f"{store}.wal")):
        path.unlink(missing_ok=True)
    shutil.rmtree(f"{store}.locks", ignore_errors=True)
    with Workbench.open(None, lake_uri=target.uri, store_uri=f"duckdb://{store}", memory_limit="8GB",
                        threads=threads) as wb:
        started = time.perf_counter()
        result = wb.run("order_summary", full=True, progress="none", **options)
        seconds = time.perf_counter() - started
        digest = wb.store.con.sql(  # type: ignore[attr-defined]
            "SELECT count(*), sum(hash(COLUMNS(*))) FROM order_summary__shadow").fetchall()[0]
    events = result.record.events_read
    stats = result.stats or {}
    workers = stats.get("workers") or 1
    row = {"label": label, "seconds": round(seconds, 2), "events": events, "events_per_s": int(events / seconds),
           "workers": workers, "events_per_s_per_worker": int(events / seconds / workers),
           "tasks": stats.get("tasks"), "task_seconds": stats.get("task_seconds"),
           "max_task_rss_mb": stats.get("max_task_rss_mb"), "digest": hex(hash(str(digest)) & 0xFFFFFFFF)}
    log(json.dumps(row))
    return row


def dask_run(target: Any, workers: int) -> dict[str, Any]:
    from distributed import LocalCluster

    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster:
        started = time.perf_counter()
        cluster.wait_for_workers(workers) if hasattr(cluster, "wait_for_workers") else None
        run = run_once(target, f"dask_{workers}", executor="dask", address=cluster.scheduler_address)
        run["cluster_start_s"] = round(time.perf_counter() - started - run["seconds"], 2)
        return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.distributed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=1_000_000, help="synthetic orders (about 4.8 events each)")
    parser.add_argument("--buckets", type=int, default=16, help="the lake's key buckets (= tasks)")
    args = parser.parse_args(argv)
    logging.getLogger("distributed").setLevel(logging.ERROR)
    OUT.mkdir(parents=True, exist_ok=True)
    target = make_lake(args.orders, args.buckets)
    runs = [run_once(target, "local"), run_once(target, "local_1_thread", threads=1), dask_run(target, 1),
            dask_run(target, 2)]
    by = {r["label"]: r for r in runs}
    assert len({r["digest"] for r in runs}) == 1, "a distributed run differs from the single-process run"
    local = by["local"]["seconds"]
    report = {
        "orders": args.orders, "buckets": args.buckets, "events": by["local"]["events"], "runs": runs,
        "dask_2_vs_local": round(by["dask_2"]["seconds"] / local, 2),
        "dask_1_vs_local_1_thread": round(by["dask_1"]["seconds"] / by["local_1_thread"]["seconds"], 2),
        "dask_2_vs_dask_1_speedup": round(by["dask_1"]["seconds"] / by["dask_2"]["seconds"], 2),
    }
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
