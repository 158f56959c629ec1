"""``python -m bench NAME [ARGS]``: run one benchmark; without NAME, list them.

Each benchmark prints ratios against a baseline measured in the same run (the machines are
shared and noisy); results and how they were obtained are in docs/benchmarks.md.
"""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "ingest": "NDJSON and Parquet ingest: events/s and peak memory vs a plain DuckDB copy",
    "rebuild": "full/incremental/keys rebuild of order_summary vs a hand-written query and a Python fold",
    "diff": "checks.compare on two 10M-row views vs a FULL OUTER JOIN count and datacompy",
    "stores": "shipping a 10M-row view to PostgreSQL vs DuckDB; a rebuild at a 1 GB memory limit",
    "distributed": "single-process vs Dask replay on the same lake",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in BENCHMARKS:
        print("usage: python -m bench NAME [ARGS]\n")
        for name, what in BENCHMARKS.items():
            print(f"  {name:<12} {what}")
        return 0 if not argv else 2
    module = importlib.import_module(f"bench.{argv[0]}")
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
