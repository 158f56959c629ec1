"""The CLI's only way to print: one JSON object under --json, readable text otherwise."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape

from lake.encode import dumps
from lake.render import visible
from rebuild.progress import log_line


_LINE_BREAK = re.compile(r"\s*[\r\n]+\s*")
#: the width of tables written to a file or a job's log: rich's 80 columns would cut their values
PIPED_WIDTH = 160


class ReaderGone(Exception):
    """stdout's reader went away (``| head``). Not an OSError: click and rich would exit 1 for that,
    which says "checks failed"; the CLI exits as Unix tools do instead."""


class _Console(Console):
    def on_broken_pipe(self) -> None:
        raise ReaderGone


def _console(stderr: bool) -> Console:
    """A terminal gives its own width (or $COLUMNS does); anywhere else tables get ``PIPED_WIDTH``."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() or os.environ.get("COLUMNS") else PIPED_WIDTH
    return _Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


def to_json(payload: object) -> str:
    return dumps(payload, sort_keys=False)


@dataclass
class Output:
    """Where a command's result goes: stdout as JSON for machines, rich text for people."""

    json: bool = False
    #: where the JSON goes (None: sys.stdout); under --json the CLI sends everything else on stdout to stderr
    stream: TextIO | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.console = _console(stderr=False)
        self.errors = _console(stderr=True)

    def result(self, payload: dict[str, Any], render: Callable[[Console], None] | None = None) -> None:
        """Print a command's result: exactly one JSON object, or ``render`` for people."""
        if self.json:
            self._write(payload)
        elif render is not None:
            render(self.console)
        else:
            for key, value in payload.items():
                self.console.print(f"[bold]{key}[/bold]: {escape(str(value))}")

    def working(self, text: str) -> contextlib.AbstractContextManager[Any]:
        """A spinner saying ``text`` on stderr while a long command works, for a person at a terminal;
        nothing under --json or in a job's log (where -v logs the lake's steps)."""
        if self.json or not self.errors.is_terminal:
            return contextlib.nullcontext()
        return self.errors.status(text)

    def error(self, message: str, code: int, kind: str, *, retryable: bool = False,
              context: dict[str, Any] | None = None) -> None:
        """``retryable``: the same command can succeed later as it is (another job held the view or the
        lake); a scheduler reads it from the JSON to retry rather than page someone. ``context``: what the
        message names (the view, the file, the lock's holder), as fields an alert can route or link by."""
        message = visible(message)  # libraries' coloured errors (delta-rs) are plain text here, controls shown
        if self.json:
            self._write({"error": message, "kind": kind, "exit_code": code, "retryable": retryable,
                         "context": context or {}})
            # and in the job's log (stderr), which a scheduler keeps while it overwrites the JSON
            self._log(logging.ERROR, f"error ({kind}, exit {code}): {message}")
        else:
            # escaped: messages quote config sections ("[projections] modules"), paths and values
            self.errors.print(f"[red]error[/red]: {escape(message)}")

    def failed(self, message: str) -> None:
        """Why a command's verdict failed (exit 1), for the job's log: under --json the result went to stdout,
        which a job writes to a file it overwrites, while it keeps stderr; people read the result itself."""
        if self.json:
            self._log(logging.ERROR, f"failed (exit 1): {message}")

    def _log(self, level: int, message: str) -> None:
        """A line of the job's log in the shape of every other (time, level, logger, message), so a log
        shipper parses the night's error as it parses the progress lines: it had no time and no level. One
        line: a driver's message on two (libpq's "\\n\\tIs the server running ...") read as two records."""
        self.errors.print(escape(log_line("rebuild.cli", level, _LINE_BREAK.sub(" ", message))))

    def _write(self, payload: dict[str, Any]) -> None:
        stream = self.stream or sys.stdout
        try:
            stream.write(to_json(payload) + "\n")
            stream.flush()
        except BrokenPipeError as exc:
            raise ReaderGone from exc
