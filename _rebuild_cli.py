"""The ``rebuild`` console script's entry point, apart from the packages: importing ``rebuild`` loads DuckDB,
Polars and pyarrow (a second or two), and a Ctrl-C meanwhile ended in Python's traceback of the import, and
under ``--json`` without the one JSON object. Here it ends as a Ctrl-C does later: one line, exit 130."""

from __future__ import annotations

import json
import sys

EXIT_INTERRUPTED = 130  # as rebuild.cli's, which cannot be imported to say so


def run() -> None:
    """Console-script entry point (``rebuild.cli.main`` does the work)."""
    try:
        from rebuild.cli import main

        code = main()
    except KeyboardInterrupt:  # while the libraries import, before the command's own handling begins
        code = _interrupted("--json" in sys.argv[1:])
    sys.exit(code)


def _interrupted(json_out: bool) -> int:
    """What ``rebuild.cli`` says of a Ctrl-C (``Output.error``), without the modules it may not have."""
    if json_out:
        payload = {"error": "interrupted", "kind": "interrupted", "exit_code": EXIT_INTERRUPTED}
        sys.stdout.write(json.dumps(payload) + "\n")
        sys.stdout.flush()
        sys.stderr.write(f"error (interrupted, exit {EXIT_INTERRUPTED}): interrupted\n")
    else:
        sys.stderr.write("error: interrupted\n")
    return EXIT_INTERRUPTED
