"""``python -m bench ingest [--events N] [--formats ndjson,parquet]``."""

from __future__ import annotations

import sys

from bench.ingest import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if args and args[0] == "ingest":
        args = args[1:]
    sys.exit(main(args))
