"""Ingest benchmark: events/s and peak memory for NDJSON and Parquet input, against a baseline.

Each measurement runs in its own subprocess (peak memory is that process's ``VmHWM``). The
baseline, measured in the same run on the same file, is DuckDB reading the input and writing it
to one Parquet file with no validation, de-duplication or commit: the floor of what ingest costs.
Inputs are generated once per size under ``bench/out/`` (ignored by git).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from bench import peak_rss_mb

OUT = Path(__file__).resolve().parent / "out"
KEYS = 100_000  # partition keys: about 10 events per key per million


def generate(events: int, fmt: str) -> Path:
    """The input file with ``events`` valid envelope records (cached)."""
    import duckdb

    path = OUT / f"events-{events}.{fmt}"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    select = f"""
        SELECT 'e' || i AS event_id, 'o' || (i % {KEYS}) AS partition_key, i // {KEYS} AS sequence,
               ['OrderPlaced', 'OrderShipped', 'PaymentAuthorized'][1 + i % 3] AS event_type,
               strftime(TIMESTAMPTZ '2024-03-01 00:00:00+00' + to_seconds(i), '%Y-%m-%dT%H:%M:%S+00:00') AS event_time,
               {{'order_id': 'o' || (i % {KEYS}), 'total': (i % 1000) / 10.0, 'items': i % 7}} AS payload
        FROM range({int(events)}) t(i)"""
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    tmp = path.with_suffix(".tmp")
    if fmt == "ndjson":
        con.execute(f"COPY ({select}) TO '{tmp}' (FORMAT json)")
    else:
        con.execute(
            f"COPY (SELECT * REPLACE (CAST(to_json(payload) AS VARCHAR) AS payload) FROM ({select})) "
            f"TO '{tmp}' (FORMAT parquet, ROW_GROUP_SIZE 1000000)"
        )
    tmp.rename(path)
    return path


def _run_ingest(source: str, target: str, memory_limit: str) -> dict[str, object]:
    import lake

    shutil.rmtree(target, ignore_errors=True)
    started = time.perf_counter()
    result = lake.ingest(lake.Lake(target), [source], stream="orders", memory_limit=memory_limit,
                         temp_directory=target + "-spill")
    return {"seconds": time.perf_counter() - started, "events": result.archived}


def _run_baseline(source: str, target: str, memory_limit: str) -> dict[str, object]:
    import duckdb

    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute(f"SET memory_limit = '{memory_limit}'")
    reader = "read_json" if source.endswith(".ndjson") else "read_parquet"
    started = time.perf_counter()
    con.execute(f"COPY (SELECT * FROM {reader}('{source}')) TO '{target}.parquet' (FORMAT parquet)")
    events = con.sql(f"SELECT count(*) FROM read_parquet('{target}.parquet')").fetchall()[0][0]
    return {"seconds": time.perf_counter() - started, "events": int(events)}


def _child(kind: str, source: str, target: str, memory_limit: str) -> None:
    result = (_run_ingest if kind == "ingest" else _run_baseline)(source, target, memory_limit)
    result["max_rss_mb"] = peak_rss_mb()
    sys.stdout.write(json.dumps(result) + "\n")


def measure(kind: str, source: Path, memory_limit: str) -> dict[str, float]:
    """One run of ``kind`` (ingest | baseline) in a fresh process."""
    target = str(OUT / f"{kind}-{source.stem}-{source.suffix[1:]}")
    out = subprocess.run(
        [sys.executable, "-m", "bench.ingest", "_child", kind, str(source), target, memory_limit],
        check=True, capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    shutil.rmtree(target, ignore_errors=True)
    shutil.rmtree(target + "-spill", ignore_errors=True)
    Path(target + ".parquet").unlink(missing_ok=True)
    return {**result, "events_per_s": result["events"] / result["seconds"]}


def _best_of(runs: int, source: Path, memory_limit: str) -> tuple[dict[str, float], dict[str, float]]:
    """The fastest baseline and the fastest ingest of ``runs`` each, alternated so that a busy
    moment on a shared machine hits both alike."""
    bases, ingests = [], []
    for _ in range(max(1, runs)):
        bases.append(measure("baseline", source, memory_limit))
        ingests.append(measure("ingest", source, memory_limit))
    return min(bases, key=lambda r: r["seconds"]), min(ingests, key=lambda r: r["seconds"])


def main(argv: list[str]) -> int:
    if argv and argv[0] == "_child":
        _child(*argv[1:5])
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench ingest")
    parser.add_argument("--events", type=int, action="append", help="events per input (repeatable; default 1M)")
    parser.add_argument("--formats", default="ndjson,parquet")
    parser.add_argument("--memory-limit", default="2GB")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs of each (baseline and ingest alternated); the fastest of each is reported")
    args = parser.parse_args(argv)
    sizes = args.events or [1_000_000]
    rows = []
    for events in sizes:
        for fmt in args.formats.split(","):
            source = generate(events, fmt)
            base, run = _best_of(args.repeat, source, args.memory_limit)
            rows.append({
                "date": date.today().isoformat(), "events": events, "format": fmt,
                "ingest_events_per_s": round(run["events_per_s"]), "ingest_seconds": round(run["seconds"], 2),
                "ingest_peak_rss_mb": round(run["max_rss_mb"]),
                "baseline_events_per_s": round(base["events_per_s"]), "baseline_seconds": round(base["seconds"], 2),
                "baseline_peak_rss_mb": round(base["max_rss_mb"]),
                "ingest_vs_baseline": round(run["seconds"] / base["seconds"], 2),
            })
            print(json.dumps(rows[-1]), flush=True)
    print(f"# {platform.machine()}, {__import__('os').cpu_count()} cores, Python {platform.python_version()}")
    print("| events | format | ingest events/s | ingest s | ingest peak MB | baseline events/s | baseline s | baseline peak MB | ingest time / baseline |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['events']:,} | {r['format']} | {r['ingest_events_per_s']:,} | {r['ingest_seconds']} | "
              f"{r['ingest_peak_rss_mb']} | {r['baseline_events_per_s']:,} | {r['baseline_seconds']} | "
              f"{r['baseline_peak_rss_mb']} | {r['ingest_vs_baseline']}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
