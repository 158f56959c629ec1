"""Benchmark of ``checks.compare``: two views with 1% differences, generated in DuckDB.

    .venv/bin/python -m bench.diff [--rows 10000000] [--datacompy-rows 1000000] [--repeat 2]

Times, in the same run and on the same data, ``compare()`` against a hand-written FULL OUTER JOIN
count (the floor any diff pays; target: compare <= 2x) and against datacompy (pandas; on a
smaller size, since it loads both tables into memory). Prints the timings and ratios.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import duckdb

from checks import compare

COLUMNS = ("customer_id", "status", "items", "total", "paid", "version")


def generate(con: duckdb.DuckDBPyConnection, rows: int) -> None:
    """``live`` and ``rebuilt``: 0.3% keys missing, 0.3% extra, ~0.7% changed in one or two columns."""
    con.execute(f"""CREATE OR REPLACE TABLE live AS
        SELECT 'o-' || lpad(CAST(i AS VARCHAR), 9, '0') AS order_id, 'c-' || (i % 100000) AS customer_id,
               ['placed', 'paid', 'shipped'][1 + i % 3] AS status, CAST(i % 7 AS BIGINT) AS items,
               CAST((i % 1000) * 1.25 AS DECIMAL(18, 2)) AS total, CAST((i % 1000) * 1.25 AS DECIMAL(18, 2)) AS paid,
               CAST(i % 11 AS BIGINT) AS version
        FROM range({rows}) t(i)""")
    con.execute(f"""CREATE OR REPLACE TABLE rebuilt AS
        SELECT order_id, customer_id, status,
               CASE WHEN h = 1 THEN items + 1 ELSE items END AS items,
               CASE WHEN h = 1 THEN total + 1.25 ELSE total END AS total,
               CASE WHEN h = 2 THEN paid * 2 ELSE paid END AS paid,
               CASE WHEN h = 3 THEN version + 1 ELSE version END AS version
        FROM (SELECT *, hash(order_id) % 300 AS h FROM live) WHERE h <> 0
        UNION ALL SELECT 'x-' || i, 'c', 'placed', 1, 1, 1, 1 FROM range({rows // 300}) t(i)""")


def hand_written(con: duckdb.DuckDBPyConnection) -> tuple[int, int, int]:
    """The floor: one FULL OUTER JOIN counting only-in-live, only-in-rebuilt and changed rows."""
    differs = " OR ".join(f"l.{c} IS DISTINCT FROM r.{c}" for c in COLUMNS)
    row = con.sql(f"""SELECT count(*) FILTER (WHERE r.order_id IS NULL), count(*) FILTER (WHERE l.order_id IS NULL),
                             count(*) FILTER (WHERE l.order_id IS NOT NULL AND r.order_id IS NOT NULL AND ({differs}))
                      FROM live l FULL OUTER JOIN rebuilt r ON l.order_id = r.order_id""").fetchall()[0]
    return int(row[0]), int(row[1]), int(row[2])


def timed(func, repeat: int) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - started)
    return best, result


def run_datacompy(con: duckdb.DuckDBPyConnection, rows: int) -> float:
    """datacompy on the first ``rows`` keys (pandas frames; loading them is not timed)."""
    import datacompy

    live = con.sql(f"SELECT * FROM live ORDER BY order_id LIMIT {rows}").to_arrow_table().to_pandas()
    rebuilt = con.sql(f"SELECT * FROM rebuilt WHERE order_id <= (SELECT max(order_id) FROM "
                      f"(SELECT order_id FROM live ORDER BY order_id LIMIT {rows}))").to_arrow_table().to_pandas()
    started = time.perf_counter()
    compared = datacompy.PandasCompare(live, rebuilt, join_columns=["order_id"], df1_name="live", df2_name="rebuilt")
    compared.report()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--datacompy-rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        con = duckdb.connect(str(Path(tmp) / "bench.duckdb"))
        generate(con, args.rows)
        floor, counts = timed(lambda: hand_written(con), args.repeat)
        ours, result = timed(lambda: compare(con, "live", "rebuilt", ["order_id"]), args.repeat)
        print(f"rows: {args.rows:,} live; hand-written counts (only live, only rebuilt, changed): {counts}")
        print(f"compare(): {result.summary()}")  # type: ignore[attr-defined]
        print(f"hand-written FULL OUTER JOIN count: {floor:.2f}s")
        print(f"checks.compare:                    {ours:.2f}s  ({ours / floor:.2f}x the hand-written join)")
        if args.datacompy_rows:
            small, _ = timed(lambda: compare(con, "live", "rebuilt", ["order_id"]), 1)
            dc = run_datacompy(con, args.datacompy_rows)
            print(f"datacompy on {args.datacompy_rows:,} rows: {dc:.2f}s "
                  f"(compare on all {args.rows:,} rows: {small:.2f}s; per row datacompy is "
                  f"{(dc / args.datacompy_rows) / (small / args.rows):.0f}x slower)")
        con.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
