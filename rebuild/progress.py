"""Progress, chosen by name: a bar for people, log lines for jobs, nothing for tests and --json."""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Protocol

from lake.render import visible
from rebuild.errors import ConfigError

log = logging.getLogger("rebuild.progress")
log.setLevel(logging.INFO)  # a job's progress lines show without -v (other loggers stay at WARNING)
PROGRESS = ("auto", "bar", "log", "none")
#: seconds without a step done after which a job's log says the step is still running, and again each time
HEARTBEAT = 60.0


class Progress(Protocol):
    def start(self, total: int, unit: str, description: str) -> None: ...
    def advance(self, steps: int = 1, note: str = "") -> None: ...
    def close(self) -> None: ...


class Silent:
    def start(self, total: int, unit: str, description: str) -> None:
        pass

    def advance(self, steps: int = 1, note: str = "") -> None:
        pass

    def close(self) -> None:
        pass


class LogLines:
    """One log line per step with rate and an estimate of the time left (for cron and CI), and one each
    ``HEARTBEAT`` seconds a step takes: a local full run is two steps, the first its whole replay, and its
    log said nothing for as long as that took (an hour, on a large lake)."""

    def start(self, total: int, unit: str, description: str) -> None:
        self.total, self.unit, self.description = total, unit, description
        self.done, self.started = 0, time.monotonic()
        self.last, self.stopped = self.started, threading.Event()
        # no logging set up (a notebook, a Python job): Python's last resort shows warnings only, so
        # progress="log" showed nothing; the lines go to stderr, as the CLI's, until close()
        self.handler = None if log.hasHandlers() else utc_stderr()
        if self.handler is not None:
            log.addHandler(self.handler)
        log.info("%s: %s %s to do", description, total, unit)
        self.beat = threading.Thread(target=self._beat, name="progress-heartbeat", daemon=True)
        self.beat.start()

    def _beat(self) -> None:
        while not self.stopped.wait(HEARTBEAT / 4):
            quiet = time.monotonic() - self.last
            if quiet >= HEARTBEAT:
                log.info("%s: %s/%s %s; the next still running after %.0fs", self.description, self.done,
                         self.total, self.unit, quiet)
                self.last = time.monotonic()

    def advance(self, steps: int = 1, note: str = "") -> None:
        self.done, self.last = self.done + steps, time.monotonic()
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        log.info(
            "%s: %s/%s %s (%.1f %s/s, %.0fs left)%s", self.description, self.done, self.total,
            self.unit, rate, self.unit, left, f" {note}" if note else "",
        )

    def close(self) -> None:
        self.stopped.set()
        self.beat.join()  # a heartbeat it had decided on comes before the last line, never after it
        elapsed = time.monotonic() - self.started
        if self.done >= self.total:
            log.info("%s: done in %.1fs", self.description, elapsed)
        else:  # an error or a stop: the job's log must not read like a good night
            log.warning("%s: stopped after %s/%s %s in %.1fs, not finished (the command's error says why and what "
                        "to do)", self.description, self.done, self.total, self.unit, elapsed)
        if self.handler is not None:
            log.removeHandler(self.handler)


class _Visible(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return visible(super().format(record))


def utc_formatter() -> logging.Formatter:
    """The one shape of a log line: ``2026-09-01 03:00:00.123Z LEVEL logger: message``, stamped in UTC, its
    control characters shown (``lake.render.visible``)."""
    formatter = _Visible("%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    formatter.converter = time.gmtime
    return formatter


def utc_stderr() -> logging.Handler:
    """Log lines on stderr stamped in UTC, marked ``Z``, like run ids and run records: a job's log
    reads the same on a machine in any zone (the local time, unmarked, did not match its run ids)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(utc_formatter())
    return handler


def log_line(name: str, level: int, message: str) -> str:
    """``message`` as a log line of logger ``name`` would read on stderr (``utc_formatter``), whatever the
    logging configuration: for the lines a job's log must carry even where logging is not set up yet."""
    return utc_formatter().format(logging.LogRecord(name, level, __file__, 0, message, None, None))


class Bar:
    """A tqdm bar (tqdm.auto: a widget in notebooks, text in terminals)."""

    def start(self, total: int, unit: str, description: str) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit=f" {unit}", desc=description, leave=False)

    def advance(self, steps: int = 1, note: str = "") -> None:
        if note:
            self.bar.set_postfix_str(note, refresh=False)
        self.bar.update(steps)

    def close(self) -> None:
        self.bar.close()


def choose(name: str, json_output: bool = False) -> Progress:
    """``auto`` is a bar on a terminal or notebook, log lines otherwise, silence under --json."""
    if name not in PROGRESS:  # else a typo ("bars") would pass as auto
        raise ConfigError(f"progress {name!r} is not one of {list(PROGRESS)}")
    if name == "none" or (json_output and name == "auto"):
        return Silent()
    if name == "log":
        return LogLines()
    if name == "bar":
        return Bar()
    interactive = sys.stderr.isatty() or "ipykernel" in sys.modules
    return Bar() if interactive else LogLines()
