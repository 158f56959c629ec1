"""Store benchmarks (issue: stores and unattended backfills), measured in one run on one machine.

    .venv/bin/python -m bench.stores [--rows 10000000] [--orders 1600000] [--memory-limit 1GB]

- publishing a 10M-row view: PostgreSQL (ADBC bulk ingest + one transaction) and Parquet,
  relative to the DuckDB file store (CREATE TABLE AS in the same file)
- a full rebuild of order_summary at a DuckDB memory limit of 1 GB (spilling to a temp dir):
  single query into DuckDB, the same shipped to PostgreSQL, and bucket by bucket
- cutover: a patch of 1% of the view's keys cut over into it and rolled back, against the same
  statements written by hand on copies of the same tables (the SQL stores), and a full cutover

The lake is synthetic (``tests.stores.synthetic``: ~6.3 events per order, written straight into
the Delta table), generated once under ``bench/out/stores``; PostgreSQL is a ``pgserver``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lake
from rebuild import Config, Workbench
from rebuild.store import Checkpoint, Published, RunRecord, Store, open_store
from rebuild.store.sqlstore import SQLStore

OUT = Path(__file__).parent / "out" / "stores"
VIEW_SQL = """
    SELECT 'o-' || lpad(i::VARCHAR, 9, '0') AS order_id, 'c-' || lpad((i % 99991)::VARCHAR, 6, '0') AS customer_id,
           ['EUR', 'USD', 'GBP'][1 + i % 3] AS currency, ['placed', 'paid', 'shipped'][1 + i % 3] AS status,
           (i % 7)::BIGINT AS items, ((i % 10007) / 100)::DECIMAL(18, 2) AS total,
           ((i % 9973) / 100)::DECIMAL(18, 2) AS paid, 0::DECIMAL(18, 2) AS refunded, (i % 11)::BIGINT AS version
    FROM range({rows}) r(i)
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def timed(func: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = func()
    return time.perf_counter() - started, value


def record_maker(view: str, kind: str = "full") -> Callable[[Published], tuple[RunRecord, Checkpoint]]:
    """The run record and checkpoint of run ``bench-VIEW-KIND`` (``keys``: a patch)."""
    now = datetime.now(UTC)

    def make(published: Published) -> tuple[RunRecord, Checkpoint]:
        record = RunRecord(run_id=f"bench-{view}-{kind}", view=view, mode=kind, strategy="by_key", kind=kind,
                           status="shadow", plan="{}", lake_version=0, delta_version=0, projection_version=1,
                           fingerprint="bench", events_read=0, rows_written=published.rows,
                           scope_rows=published.scope_rows, started_at=now, finished_at=now, seconds=0.0)
        return record, Checkpoint(view, "shadow", record.run_id, 0, 0, 1, "bench", kind, published.rows)

    return make


def publish_seconds(store: Store, rows: int) -> float:
    """Seconds to publish a ``rows``-row view already computed in the store's DuckDB."""
    con = store.compute()
    con.execute(f"CREATE OR REPLACE TEMP TABLE __bench AS {VIEW_SQL.format(rows=int(rows))}")
    seconds, published = timed(lambda: store.publish(con, "bench_view", "__bench", None, (), ("order_id",),
                                                     record_maker("bench_view")))
    assert published.rows == rows, published
    con.execute("DROP TABLE temp.__bench")
    return float(seconds)


def cutover_seconds(store: Store, rows: int, keys: int) -> dict[str, float]:
    """Seconds to cut a patch of ``keys`` keys over into a ``rows``-row live view, to roll it back, and
    to cut a full shadow over; for a SQL store also the patch's floor: its statements written by hand
    (keep live's rows of the patch's keys, delete them, insert the patch: one transaction) on copies."""
    view, key = "bench_cutover", ("order_id",)
    con = store.compute()
    con.execute(f"CREATE OR REPLACE TEMP TABLE __live AS {VIEW_SQL.format(rows=int(rows))}")
    con.execute(f"CREATE OR REPLACE TEMP TABLE __patch AS SELECT * REPLACE (status || '!' AS status) "
                f"FROM __live USING SAMPLE {int(keys)} ROWS")
    con.execute("CREATE OR REPLACE TEMP TABLE __patch_scope AS SELECT order_id FROM __patch")
    store.publish(con, view, "__live", None, (), key, record_maker(view))
    store.cutover(view, f"bench-{view}-full", forced=True)
    store.publish(con, view, "__patch", "__patch_scope", key, key, record_maker(view, "keys"))
    out = {"patch_cutover_seconds": timed(lambda: store.cutover(view, f"bench-{view}-keys", forced=True))[0],
           "patch_rollback_seconds": timed(lambda: store.rollback(view))[0]}
    if isinstance(store, SQLStore):  # after the rollback, previous holds the patch and its scope
        for copy, table in (("hand_live", view), ("hand_patch", f"{view}__previous"), ("hand_scope", f"{view}__previous_scope")):
            store._exec(f"CREATE TABLE {copy} AS SELECT * FROM {table}")
        match = "EXISTS (SELECT 1 FROM hand_scope s WHERE s.order_id = t.order_id)"

        def by_hand() -> None:
            with store._transaction():
                store._exec(f"CREATE TABLE hand_kept AS SELECT * FROM hand_live t WHERE {match}")
                store._exec(f"DELETE FROM hand_live t WHERE {match}")
                store._exec("INSERT INTO hand_live SELECT * FROM hand_patch")

        out["patch_by_hand_seconds"] = timed(by_hand)[0]
        out["patch_cutover_vs_by_hand"] = out["patch_cutover_seconds"] / out["patch_by_hand_seconds"]
        for copy in ("hand_live", "hand_patch", "hand_scope", "hand_kept"):
            store._exec(f"DROP TABLE {copy}")
    store.publish(con, view, "__live", None, (), key, record_maker(view))
    out["full_cutover_seconds"] = timed(lambda: store.cutover(view, f"bench-{view}-full", forced=True))[0]
    for table in ("__live", "__patch", "__patch_scope"):
        con.execute(f"DROP TABLE temp.{table}")
    return {name: round(value, 3) for name, value in out.items()}


def synthetic(orders: int) -> lake.Lake:
    from tests.stores.synthetic import synthetic_lake

    path = OUT / f"lake-{orders}"
    if not lake.Lake(path).exists():
        seconds, _ = timed(lambda: synthetic_lake(path, orders, days=42))
        log(f"generated {orders:,} orders in {seconds:.1f}s")
    return lake.Lake(path)


def rebuilds(target: lake.Lake, stores: dict[str, str], memory_limit: str, spill: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"events": sum(f.rows for f in target.snapshot().files), "memory_limit": memory_limit}
    for name, uri in stores.items():
        for buckets in (False, True):
            config = Config(lake_uri=target.uri, store_uri=uri, memory_limit=memory_limit, temp_directory=str(spill))
            with Workbench(config) as wb:
                seconds, result = timed(lambda: wb.run("order_summary", full=True, progress="none", buckets=buckets))
            key = f"{name}{'_buckets' if buckets else ''}_seconds"
            out[key] = round(seconds, 2)
            log(f"full rebuild of order_summary ({result.record.rows_written:,} rows) into {name}"
                f"{' by bucket' if buckets else ''} at {memory_limit}: {seconds:.1f}s")
    return out


def main(argv: list[str] | None = None) -> int:
    """Run the store benchmarks and print one JSON object."""
    parser = argparse.ArgumentParser(prog="python -m bench.stores")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--orders", type=int, default=1_600_000)
    parser.add_argument("--memory-limit", default="1GB")
    parser.add_argument("--patch-keys", type=int, help="keys of the patch cut over (default: 1%% of --rows)")
    args = parser.parse_args(argv)
    patch_keys = args.patch_keys or max(1, args.rows // 100)
    OUT.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver

        pg_dir = Path(tempfile.mkdtemp(prefix="pg-bench-", dir="/tmp"))
        server = pgserver.get_server(pg_dir, cleanup_mode="delete")
    work = Path(tempfile.mkdtemp(prefix="stores-", dir=OUT))
    try:
        uris = {"duckdb": str(work / "views.duckdb"), "postgres": server.get_uri() + "&schema=bench",
                "parquet": f"parquet://{work / 'views'}"}
        result: dict[str, Any] = {"rows": args.rows}
        for name, uri in uris.items():
            store = open_store(uri, memory_limit="4GB", temp_directory=str(work / "spill"))
            try:
                result[f"publish_{name}_seconds"] = round(publish_seconds(store, args.rows), 2)
                log(f"published {args.rows:,} rows to {name} in {result[f'publish_{name}_seconds']:.1f}s")
                result[f"cutover_{name}"] = cutover_seconds(store, args.rows, patch_keys)
                log(f"cutover on {name}, a {patch_keys:,}-key patch into {args.rows:,} rows: {result[f'cutover_{name}']}")
            finally:
                store.close()
        for name in ("postgres", "parquet"):
            result[f"{name}_vs_duckdb"] = round(result[f"publish_{name}_seconds"] / result["publish_duckdb_seconds"], 2)
        fresh = {"duckdb": str(work / "rebuild.duckdb"), "postgres": server.get_uri() + "&schema=rebuild"}
        result["full_rebuild"] = rebuilds(synthetic(args.orders), fresh, args.memory_limit, work / "spill")
    finally:
        server._cleanup()
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
