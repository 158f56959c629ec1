"""Rebuild benchmarks (issue: replay and rebuild), ratios against baselines measured in the same run.

    .venv/bin/python -m bench.rebuild --events 10000000

- full rebuild of order_summary vs a hand-written DuckDB query writing the same table (<= 1.25x)
- vs the per-event Python fold of the same projection (>= 50x faster, compared per event): the
  escape-hatch fold (payload decoded by DuckDB) and the production-style consumer (json.loads per event)
- incremental catch-up after 1% new events, as a fraction of the full rebuild (<= 5%): the stream
  going on (the lake's own latest 1%), and 1% refunds on recently placed or on random orders
- a keys run on 1,000 keys, as a fraction of the full rebuild (<= 2%)
- peak memory of the full rebuild (a subprocess's max RSS; target <= 4 GB at 100M events)
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import duckdb

import lake
from lake.schema import decoded_column
from lake.sql import literal, quote
from rebuild import Workbench
from rebuild.examples import PAYLOAD

OUT = Path(__file__).parent / "out"
#: one view per other incremental strategy: catch-up is measured against each view's own full rebuild
STRATEGY_VIEWS = ("customer_ltv", "daily_revenue")


def synthetic_lake(events: int, root: Path) -> lake.Lake:
    """A synthetic order lake of about ``events`` events written straight into Delta, in commits
    of 2M orders (for sizes the sample generator's ingest path takes too long to build)."""
    from tests.stores.synthetic import synthetic_lake as build

    target = lake.Lake(root / f"synthetic-{events}")
    if not target.exists():
        orders, step, started = events * 10 // 63, 2_000_000, time.monotonic()
        target.create()
        for first in range(0, orders, step):
            build(root, min(step, orders - first), days=42, first=first, target=target)
            log(f"synthetic: {first + step:,} of {orders:,} orders ({time.monotonic() - started:.0f}s)")
    return target


def full_only(events: int, memory_limit: str) -> dict[str, Any]:
    """Full rebuild vs hand-written, and the rebuild's peak memory, on a synthetic lake."""
    root = OUT / "rebuild"
    root.mkdir(parents=True, exist_ok=True)
    target = synthetic_lake(events, root)
    work = root / f"work-synthetic-{events}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    started = time.perf_counter()
    peak = peak_memory(target, work / "peak.duckdb", memory_limit)
    full_s = time.perf_counter() - started  # the subprocess: interpreter start and imports included
    hand_s = hand_written(target, work / "hand.duckdb", memory_limit)
    files = target.snapshot().files
    return {"events": sum(f.rows for f in files), "files": len(files), "synthetic": True,
            "full_s_in_subprocess": round(full_s, 2), "hand_written_s": round(hand_s, 2),
            "full_vs_hand_written": round(full_s / hand_s, 2), "peak_rss_gb": round(peak, 2),
            "memory_limit": memory_limit}


def sample_lake(events: int, root: Path) -> lake.Lake:
    """The sample lake of ``events`` events, generated once and reused."""
    from lake.sample import generate

    target = lake.Lake(root / f"lake-{events}")
    if not target.exists():
        started = time.monotonic()
        generate(target, events=events, seed=11,
                 progress=lambda day, days: log(f"sample: day {day} of {days} committed ({time.monotonic() - started:.0f}s)"))
        log(f"generated {events:,} events in {time.monotonic() - started:.1f}s")
    return target


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def open_wb(target: lake.Lake, store: Path, memory_limit: str = "8GB") -> Workbench:
    if store.exists():
        store.unlink()
    return Workbench.open(None, lake_uri=target.uri, store_uri=f"duckdb://{store}", memory_limit=memory_limit)


def timed(func: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    value = func()
    return time.perf_counter() - started, value


def best(times: int, func: Any) -> tuple[float, Any]:
    """The fastest of ``times`` runs of ``func`` (a repeatable run: it rewrites the same shadow),
    as for the full rebuild: a shared machine's noise only ever adds time."""
    runs = [timed(func) for _ in range(times)]
    return min(r[0] for r in runs), runs[-1][1]


def hand_written(target: lake.Lake, store: Path, memory_limit: str) -> float:
    """order_summary as one CREATE TABLE AS over the snapshot's files (listed from the Delta
    log, as a correct hand-written query must), without the workbench, in the same memory; it
    reads the payload's fields from the typed columns of the files compaction decoded, as the
    workbench does."""
    from deltalake import DeltaTable

    from rebuild.examples import order_summary

    started = time.perf_counter()
    files = DeltaTable(target.table_uri("events")).file_uris()
    listing = time.perf_counter() - started
    if store.exists():
        store.unlink()
    con = duckdb.connect(str(store))
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = {literal(memory_limit)}")
    # the payload's fields as the files hold them: typed columns where compaction decoded them
    columns = {f: decoded_column(f, t) for f, t in PAYLOAD.items()}
    typed, plain = target.split_decoded(files, columns.values())
    parts = [f"SELECT *, unnest(from_json(payload, {literal(json.dumps(PAYLOAD))})) FROM read_parquet({literal(plain)}, hive_partitioning = true)"] if plain else []
    if typed:
        fields = ", ".join(f"{quote(c)} AS {quote(f)}" for f, c in columns.items())
        parts.append(f"SELECT * EXCLUDE ({', '.join(quote(c) for c in columns.values())}), {fields} "
                     f"FROM read_parquet({literal(typed)}, hive_partitioning = true)")
    con.execute(f"CREATE TEMP VIEW events AS {' UNION ALL BY NAME '.join(parts)}")
    seconds, _ = timed(lambda: con.execute(f"CREATE TABLE order_summary AS {order_summary.func()}"))
    con.close()
    return listing + seconds


def fold_one_process(wb: Workbench, keys: list[str]) -> tuple[float, int]:
    """The per-event consumer baseline: order_summary_fold over ``keys``' events, one process."""
    from lake import EventFilter
    from rebuild.fold import fold_table
    from rebuild.replay import Selection, events_sql

    projection = wb.projection("order_summary_fold")
    snapshot = wb.lake.snapshot()
    f = EventFilter(streams=projection.streams, event_types=projection.consumes, partition_keys=tuple(keys))
    sql, _, _ = events_sql(wb.lake, snapshot, projection, Selection(f))
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"CREATE TEMP TABLE events AS {sql}")
    events = con.sql("SELECT count(*) FROM events").fetchall()[0][0]
    seconds, _ = timed(lambda: fold_table(con, projection.func, workers=1))
    return seconds, events


def consumer_one_process(wb: Workbench, keys: list[str]) -> tuple[float, int]:
    """The production-style consumer (rebuild.consumer): ``keys``' events read in order as Python
    dicts, each payload decoded with json.loads and applied one at a time, one process."""
    from lake import EventFilter, read_events
    from rebuild.consumer import Faults, apply, by_order

    con = duckdb.connect()
    events = read_events(wb.lake, EventFilter(streams=("orders",), partition_keys=tuple(keys)), con=con) \
        .order("partition_key, sequence, event_id").to_arrow_table()
    faults = Faults()
    seconds, _ = timed(lambda: [apply(order, evs, faults) for order, evs in by_order(events.to_batches(50_000))])
    con.close()
    return seconds, events.num_rows


def hold_back(source: lake.Lake, work: Path, fraction: float) -> tuple[lake.Lake, Path]:
    """A copy of ``source`` whose stream stops ``fraction`` of its events early, and those events.

    The copy's last commit is taken out of its Delta log and re-ingested without its latest
    events by event time; those are written to a file for the catch-up to ingest later: the
    stream going on where the consumer stopped (new orders, recent orders moving on, late events).
    """
    shutil.copytree(source.uri, work / "lake")
    last = source.snapshot().lake_version
    log_dir = work / "lake" / "events" / "_delta_log"
    if (log_dir / "_last_checkpoint").exists():
        raise SystemExit(f"{source.uri} has a Delta checkpoint: cannot take commit {last} out of a copy")
    files = [f.path for f in source.snapshot().files]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    total = con.sql(f"SELECT count(*) FROM read_parquet({literal(files)})").fetchall()[0][0]
    columns = "event_id, partition_key, sequence, event_type, event_time, schema_version, payload, metadata"
    con.execute(f"""CREATE TEMP TABLE last AS
        SELECT {columns}, row_number() OVER (ORDER BY event_time DESC, event_id) <= {int(total * fraction)} AS tail
        FROM read_parquet({literal(files)}) WHERE lake_version = {last}""")
    kept, tail = work / "last-commit-kept.parquet", work / "new-events-stream.parquet"
    for path, which in ((kept, "NOT tail"), (tail, "tail")):
        con.execute(f"COPY (SELECT {columns} FROM last WHERE {which}) TO {literal(str(path))} (FORMAT parquet)")
    con.close()
    (log_dir / f"{last:020d}.json").unlink()
    target = lake.Lake(work / "lake")
    lake.ingest(target, [kept], stream="orders")
    return target, tail


def add_new_events(target: lake.Lake, fraction: float, root: Path, recent: bool) -> int:
    """Append ``fraction`` of the lake's events as later events of existing orders: the most
    recently placed ones (order ids are time-ordered: what a catch-up usually sees) or random
    ones (the worst case: every file and row group holds an affected key)."""
    files = [f.path for f in target.snapshot().files]
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    total = con.sql(f"SELECT count(*) FROM read_parquet({literal(files)})").fetchall()[0][0]
    n = max(1, int(total * fraction))
    path = root / f"new-events-{'recent' if recent else 'random'}.parquet"
    con.execute(f"""
        COPY (
            WITH orders AS (SELECT partition_key, max(sequence) AS seq, max(event_time) AS last_at,
                                   any_value(payload) AS payload
                            FROM read_parquet({literal(files)}) WHERE event_id NOT LIKE 'bench-%' GROUP BY ALL),
                 last AS (SELECT * FROM orders ORDER BY {"partition_key DESC" if recent else "hash(partition_key)"} LIMIT {n})
            SELECT 'bench-' || {literal('recent-' if recent else 'random-')} || partition_key || '-' || (seq + 1) AS event_id, partition_key,
                   seq + 1 AS sequence, 'RefundIssued' AS event_type, last_at + INTERVAL 1 HOUR AS event_time,
                   json_merge_patch(payload, '{{"amount": 1.00}}') AS payload
            FROM last
        ) TO {literal(str(path))} (FORMAT parquet)""")
    result = lake.ingest(target, [path], stream="orders")
    return result.archived


def peak_memory(target: lake.Lake, store: Path, memory_limit: str) -> float:
    """Peak RSS in GB of a subprocess running the full rebuild, as the subprocess itself reports it
    (``ru_maxrss`` would include this big process: RUSAGE_CHILDREN counts the fold's forked workers,
    and a child's own ru_maxrss still counts its parent's memory after fork and exec)."""
    code = (
        "from bench import peak_rss_mb; from rebuild import Workbench; "
        f"wb = Workbench.open(None, lake_uri={target.uri!r}, store_uri='duckdb://{store}', memory_limit={memory_limit!r}); "
        "wb.run('order_summary', full=True, progress='none'); wb.close(); "
        "print(peak_rss_mb())"
    )
    if store.exists():
        store.unlink()
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1]).stdout
    return float(out.split()[-1]) / 1024


def run(events: int, fold_orders: int, memory_limit: str, compact_first: bool, synthetic: bool = False) -> dict[str, Any]:
    root = OUT / "rebuild"
    root.mkdir(parents=True, exist_ok=True)
    work = root / f"work-{'synthetic-' if synthetic else ''}{events}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    source = synthetic_lake(events, root) if synthetic else sample_lake(events, root)
    target, stream_tail = hold_back(source, work, 0.01)  # the catch-ups below append to the copy
    wb = open_wb(target, work / "views.duckdb", memory_limit)
    if compact_first:  # as `rebuild lake compact` does: the projections' payload fields decoded too
        log(f"compacted: {wb.compact()}")
    full_s = hand_s = float("inf")
    # alternated pairs, best of each: the first pair pays for warming up (its ratio was 1.20-1.25
    # where the next pairs' were 1.07-1.13), so two pairs left a single warm run of each to compare
    pairs = 3
    for _ in range(pairs):
        seconds, result = timed(lambda: wb.run("order_summary", full=True, progress="none"))
        full_s, hand_s = min(full_s, seconds), min(hand_s, hand_written(target, work / "hand.duckdb", memory_limit))
    replayed = result.record.events_read
    log(f"full rebuild {full_s:.2f}s, hand-written {hand_s:.2f}s (best of {pairs} each)")
    keys = [r[0] for r in wb.store.con.sql("SELECT order_id FROM order_summary__shadow USING SAMPLE 1000 ROWS").fetchall()]  # type: ignore[attr-defined]
    newest = [r[0] for r in wb.store.con.sql("SELECT order_id FROM order_summary__shadow ORDER BY order_id DESC LIMIT 1000").fetchall()]  # type: ignore[attr-defined]
    fold_keys = [r[0] for r in wb.store.con.sql(f"SELECT order_id FROM order_summary__shadow USING SAMPLE {fold_orders} ROWS").fetchall()]  # type: ignore[attr-defined]
    wb.cutover("order_summary", force=True)
    keys_s, _ = best(3, lambda: wb.run("order_summary", keys=keys, progress="none"))
    newest_s, _ = best(3, lambda: wb.run("order_summary", keys=newest, progress="none"))
    fold_s, folded = fold_one_process(wb, fold_keys)
    consumer_s, consumed = consumer_one_process(wb, fold_keys)
    parallel_s, _ = timed(lambda: wb.run("order_summary_fold", keys=fold_keys, progress="none"))
    full_rate = replayed / full_s
    fold_rate = folded / fold_s
    full_by_view = {"order_summary": full_s}
    for view in STRATEGY_VIEWS:
        full_by_view[view], _ = timed(lambda: wb.run(view, full=True, progress="none"))  # noqa: B023
        wb.cutover(view, force=True)
    wb.close()
    catch_up, per_view = {}, {}
    for case in ("stream", "recent", "random"):
        if case == "stream":
            added = lake.ingest(target, [stream_tail], stream="orders").archived
        else:
            added = add_new_events(target, 0.01, work, recent=case == "recent")
        wb = Workbench.open(None, lake_uri=target.uri, store_uri=f"duckdb://{work / 'views.duckdb'}", memory_limit=memory_limit)
        for view in ("order_summary", *STRATEGY_VIEWS):
            # best of two: until the cutover, live stays where it was, so the run repeats the same work
            seconds, inc = best(2, lambda: wb.run(view, progress="none"))  # noqa: B023
            assert inc.plan.mode == "incremental", inc.plan.reason
            wb.cutover(view, force=True)
            per_view[f"{view}_{case}"] = round(seconds / full_by_view[view], 3)
            if view == "order_summary":
                catch_up[case] = (added, seconds)
        wb.close()
    peak = peak_memory(target, work / "peak.duckdb", memory_limit)
    return {
        "events": events, "events_replayed": replayed, "full_s": round(full_s, 2),
        "hand_written_s": round(hand_s, 2), "full_vs_hand_written": round(full_s / hand_s, 2),
        "full_events_per_s": int(full_rate), "fold_events_per_s": int(fold_rate),
        "vectorized_vs_fold": round(full_rate / fold_rate, 1),
        "consumer_events_per_s": int(consumed / consumer_s),
        "vectorized_vs_consumer": round(full_rate / (consumed / consumer_s), 1),
        "parallel_fold_events_per_s": int(folded / parallel_s),
        "incremental_stream_new_events": catch_up["stream"][0],
        "incremental_stream_s": round(catch_up["stream"][1], 2),
        "incremental_stream_fraction": round(catch_up["stream"][1] / full_s, 3),
        "incremental_new_events": catch_up["recent"][0],
        "incremental_recent_keys_s": round(catch_up["recent"][1], 2),
        "incremental_recent_keys_fraction": round(catch_up["recent"][1] / full_s, 3),
        "incremental_random_keys_s": round(catch_up["random"][1], 2),
        "incremental_random_keys_fraction": round(catch_up["random"][1] / full_s, 3),
        "keys_run_random_s": round(keys_s, 2), "keys_random_fraction": round(keys_s / full_s, 3),
        "keys_run_newest_s": round(newest_s, 2), "keys_newest_fraction": round(newest_s / full_s, 3),
        "incremental_fraction_by_view": per_view,
        "peak_rss_gb": round(peak, 2), "memory_limit": memory_limit, "compacted": compact_first,
        "files": len(target.snapshot().files),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rebuild", description=__doc__)
    parser.add_argument("--events", type=int, action="append", help="lake sizes (repeat); default 1M")
    parser.add_argument("--fold-orders", type=int, default=20_000, help="orders folded by the Python baseline")
    parser.add_argument("--memory-limit", default="8GB")
    parser.add_argument("--no-compact", action="store_true", help="measure on the lake as ingested (many small files)")
    parser.add_argument("--synthetic", action="store_true",
                        help="measure everything on the synthetic lake (tests/stores/synthetic.py) instead of the sample")
    parser.add_argument("--full-only", action="store_true",
                        help="on a synthetic lake: full rebuild vs hand-written and peak memory only (for 100M)")
    args = parser.parse_args(argv)
    for events in args.events or [1_000_000]:
        if args.full_only:
            print(json.dumps(full_only(events, args.memory_limit)), flush=True)
        else:
            print(json.dumps(run(events, args.fold_orders, args.memory_limit, not args.no_compact, args.synthetic)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
