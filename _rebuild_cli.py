"""The ``rebuild`` console script's entry point, apart from the packages: importing ``rebuild`` loads DuckDB,
Polars and pyarrow (a second or two), and a Ctrl-C meanwhile ended in Python's traceback of the import, and
under ``--json`` without the one JSON object. Here it ends as a Ctrl-C does later: one line, exit 130; and a
scheduler's SIGTERM meanwhile, which ended the job without a word, as a SIGTERM does later: one line, exit 143."""

from __future__ import annotations

import codecs
import contextlib
import json
import os
import signal
import sys
import time

EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # rebuild.cli takes them from here (this module imports nothing heavy)
TERMINATED = ("terminated (SIGTERM): commits already made stay whole, the one in flight is not made; "
              "rerun the same command")  # one line for a log's parser, here and from rebuild.cli


def run() -> None:
    """Console-script entry point (``rebuild.cli.main`` does the work)."""
    _restart_in_utf8_mode()
    previous = signal.signal(signal.SIGTERM, _terminated)  # until the command's own handler takes over
    try:
        from rebuild.cli import main

        code = main()
    except KeyboardInterrupt:  # while the libraries import, before the command's own handling begins
        code = _say("interrupted", "interrupted", EXIT_INTERRUPTED)
    finally:
        signal.signal(signal.SIGTERM, previous)
    sys.exit(code)


def _terminated(signum: int, frame: object) -> None:
    """Exit 143 at once with one line, as ``rebuild.cli`` does later (a library's import may be in C code,
    where an exception would wait)."""
    try:
        _say("terminated", TERMINATED, EXIT_TERMINATED)
    finally:  # also when a closed stream cannot take the line
        os._exit(EXIT_TERMINATED)


def _say(kind: str, message: str, code: int) -> int:
    """What ``rebuild.cli`` says of an error (``Output.error``), without the modules it may not have: one
    JSON object under ``--json`` and a line of the job's log, else one line on stderr."""
    if "--json" in sys.argv[1:]:
        payload = {"error": message, "kind": kind, "exit_code": code, "retryable": False, "context": {}}
        sys.stdout.write(json.dumps(payload) + "\n")
        sys.stdout.flush()
        sys.stderr.write(f"{_utc_stamp()} ERROR rebuild.cli: error ({kind}, exit {code}): {message}\n")
    else:
        sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    return code


def _utc_stamp() -> str:
    """The time of a log line as ``rebuild.progress.utc_formatter`` writes it (``2026-09-01 03:00:00.123Z``)."""
    now = time.time()
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def _restart_in_utf8_mode() -> None:
    """Start again in Python's UTF-8 mode (PEP 540; Python's default from 3.15, PEP 686) under a locale of
    another encoding: a crontab or unit file is UTF-8, but such a locale decoded its arguments and environment
    otherwise, so ``--stream zählung`` under Latin-1 was archived as the stream ``zÃ¤hlung``, silently, and
    under C with ``PYTHONUTF8=0`` it was a traceback. The process keeps its pid; workers inherit the mode.
    Arguments that are no UTF-8 (typed on a Latin-1 terminal) are in the locale's encoding: read as such."""
    if sys.flags.utf8_mode or codecs.lookup(sys.getfilesystemencoding()).name == "utf-8":
        return
    try:
        for arg in sys.orig_argv:
            os.fsencode(arg).decode("utf-8")
    except UnicodeDecodeError:
        return
    os.environ["PYTHONUTF8"] = "1"
    with contextlib.suppress(OSError):  # cannot start again (no executable): go on as started
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
