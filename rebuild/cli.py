"""The ``rebuild`` console script: ``main(argv) -> int``.

Exit codes: 0 ok, 1 checks failed (or --strict quarantine), 2 usage or expected error,
70 an unexpected error (a bug), 130 interrupted, 143 terminated (SIGTERM). Every command takes
``--json`` and then prints exactly one JSON object.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Sequence
from functools import wraps
from typing import Any, TypeVar

import click
import duckdb

from lake.errors import ContextError
from lake.storage import missing_credentials, refused_credentials, unreachable
from _rebuild_cli import EXIT_INTERRUPTED, EXIT_TERMINATED, TERMINATED
from rebuild.config import FILENAME, Config, nearest_file, redact
from rebuild.output import Output, ReaderGone
from rebuild.progress import log_line, utc_stderr

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2  # EXIT_INTERRUPTED (130), EXIT_TERMINATED (143): the entry point's
EXIT_BUG = 70  # sysexits' EX_SOFTWARE: an unexpected error
EXIT_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a Unix tool whose reader went away (``| head``)
F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger(__name__)


class Failed(Exception):
    """A command ran but its verdict is a failure (exit 1); its result was already printed, and the
    message (why, in one line) goes to the job's log under --json."""


class State:
    """What every command gets: the configuration (loaded once) and the output."""

    def __init__(self, config_path: str | None, lake: str | None, store: str | None, json_out: bool,
                 out: Output | None = None):
        self._config_path, self._lake, self._store = config_path, lake, store
        self.out = out or Output(json=json_out)
        self.out.json = self.out.json or json_out
        self._config: Config | None = None
        self.defaults_expected = False  # `rebuild demo`, made for the defaults: no warning that it takes them

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = Config.load(self._config_path, lake_uri=self._lake, store_uri=self._store)
            if self._config.default_lake and not self.defaults_expected:
                _warn_defaults(self._config)
        return self._config


def _warn_defaults(config: Config) -> None:
    """A command run where no workbench.toml is takes the defaults: `lake ingest` archived into a new lake
    there, and the commands after it read that one, each without a word; so did a cron job, which starts in
    its user's home (or a scheduler's task in /), and said only "unknown projection" for the project's views."""
    found = nearest_file()
    if found is not None:
        log.warning("no %s in %s, so the workbench uses the defaults (the lake %s); the %s above this folder "
                    "is not read from here: cd to %s or give --config %s",
                    FILENAME, os.getcwd(), config.lake_uri, found, found.parent, found)
        return
    log.warning("no %s in %s, so the workbench uses the defaults (the lake %s, the store %s, the projections of %s); "
                "a job started outside the project's folder (cron starts in its user's home) reads none: give "
                "--config PATH (or $REBUILD_CONFIG) or cd to the project's folder first", FILENAME, os.getcwd(),
                config.lake_uri, redact(config.store_uri), ", ".join(config.projection_modules))


def command(group: click.Group, name: str, **kwargs: Any) -> Callable[[F], F]:
    """A subcommand with ``--json`` and the shared State passed first."""

    def decorate(func: F) -> F:
        @group.command(name, **kwargs)
        @click.option("--json", "json_out", is_flag=True, help="Print one JSON object on stdout.")
        @click.pass_obj
        @wraps(func)
        def wrapper(state: State, json_out: bool, **options: Any) -> Any:
            state.out.json = state.out.json or json_out
            return func(state, **options)

        return wrapper  # type: ignore[return-value]

    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(), help="workbench.toml to use.")
@click.option("--lake", help="Lake location (path or s3://bucket/prefix); overrides the config.")
@click.option("--store", help="View store URI; overrides the config.")
@click.option("--json", "json_out", is_flag=True, help="Print one JSON object on stdout.")
@click.option("-v", "--verbose", count=True, help="Log more (-v info, -vv debug).")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, lake: str | None, store: str | None, json_out: bool, verbose: int) -> None:
    """Rebuild projections from the event lake, check them against live, cut over."""
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=level, handlers=[utc_stderr()])
    # -v is the workbench's news: Great Expectations logs ~200 INFO lines of its own per check (-vv shows them)
    logging.getLogger("great_expectations").setLevel(logging.WARNING if verbose < 2 else logging.NOTSET)
    ctx.obj = State(config_path, lake, store, json_out, out=ctx.obj)  # main() hands its Output over


def _register() -> None:
    # The command modules attach themselves to ``cli``; imported here, not at import of this module's users.
    from rebuild import cli_backfill, cli_check, cli_lake, cli_views  # noqa: F401


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code instead of exiting."""
    _register()
    _open_closed_std_streams()
    args = list(sys.argv[1:] if argv is None else argv)
    out = Output(json="--json" in args)
    if (garbled := _not_utf8(args)) is not None:
        out.error(garbled, EXIT_USAGE, "usage")
        return EXIT_USAGE
    try:
        return _run(args, out)
    except ReaderGone:  # stdout's reader went away (``| head``), maybe while an error was told: done is done
        with contextlib.suppress(OSError, ValueError):  # nor at exit, when Python flushes stdout
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE
    except Exception as exc:  # a bug, ours or a library's: exit 1 would say the checks failed, and --json had no object
        if _after_interrupt(exc):  # a library's clean-up failing as Ctrl-C unwound the command: the Ctrl-C is the news
            out.error("interrupted", EXIT_INTERRUPTED, "interrupted")
            return EXIT_INTERRUPTED
        # under a stamped line: a log shipper starts a record at one, and joined the traceback to the line before
        sys.stderr.write(log_line(__name__, logging.ERROR, "unexpected error (a bug), its traceback:") + "\n"
                         + redact("".join(traceback.format_exception(exc))))
        out.error(redact(f"unexpected error (a bug): {type(exc).__name__}: {exc}. Its traceback is above on stderr: "
                         "report it with the command. Commits already made stay whole, the one in flight is not made"),
                  EXIT_BUG, "internal")
        return EXIT_BUG


def _open_closed_std_streams() -> None:
    """A job started with stdout or stderr closed (``>&-``, a launcher that closes what it does not pass on)
    crashed before its command with exit 1, which says "checks failed": Python has no stream for a closed
    descriptor. It gets /dev/null instead, as daemons do, so the command runs and its exit code says how
    (a closed stdout drops the JSON, a closed stderr the log), and no file the command opens later takes
    descriptor 1 or 2 for a library's or a worker's output to land in."""
    for fd, name in enumerate(("stdin", "stdout", "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, "r" if fd == 0 else "w", closefd=False))


def _not_utf8(args: list[str]) -> str | None:
    """Why an argument that is no UTF-8 text (a Latin-1 terminal's ``zählung``) cannot be used: the lake,
    DuckDB and delta-rs keep text and file names as UTF-8, so it failed later as "a bug" (exit 70)."""
    for arg in args:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            shown = os.fsencode(arg).decode("utf-8", "backslashreplace")
            return (f"the argument '{shown}' is not UTF-8 text, which the lake, its stream names and keys, and file "
                    "names are kept in: write the command in UTF-8 (convert the script or crontab with iconv)")
    return None


def _run(args: list[str], out: Output) -> int:
    """The command's exit code; expected errors are reported here, a bug goes up to main()."""
    try:
        with _stdout_for_json_only(out), _sigterm_exits(out):
            cli.main(args=args, prog_name="rebuild", standalone_mode=False, obj=out)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code or 0)
    except click.exceptions.NoArgsIsHelpError as exc:  # `rebuild lake`: its help, which --json carried whole
        if not out.json:
            exc.show()
            return EXIT_USAGE
        group = exc.ctx.command
        names = ", ".join(sorted(group.commands)) if isinstance(group, click.Group) else ""
        out.error(f"`{exc.ctx.command_path}` needs a command ({names}); `{exc.ctx.command_path} --help` describes them",
                  EXIT_USAGE, "usage")
        return EXIT_USAGE
    except click.UsageError as exc:
        message = exc.format_message()
        if "unexpected extra argument" in message and any(a.startswith("--keys") for a in args):
            message += "; give several keys as --keys a,b or --keys a --keys b"  # not --keys a b
        out.error(message, EXIT_USAGE, "usage")
        return EXIT_USAGE
    except (click.Abort, KeyboardInterrupt, duckdb.InterruptException, RuntimeError) as exc:
        if not _interrupted(exc):
            raise
        out.error("interrupted", EXIT_INTERRUPTED, "interrupted")
        return EXIT_INTERRUPTED
    except Failed as exc:
        out.failed(str(exc))
        return EXIT_FAILED
    except duckdb.OutOfMemoryException as exc:  # outside a projection (which names itself): no traceback either
        first = str(exc).splitlines()[0]
        out.error(f"{first}; nothing was half written: raise [duckdb] memory_limit in workbench.toml (or give "
                  "[duckdb] temp_directory room to spill, or lower threads), then rerun the same command",
                  EXIT_USAGE, "OutOfMemory")
        return EXIT_USAGE
    except ContextError as exc:  # the roots of lake, rebuild and checks: kind names the error's own class
        out.error(redact(str(exc)), EXIT_USAGE, type(exc).__name__, retryable=exc.retryable,
                  context={name: _plain(value) for name, value in exc.context.items()})
        return EXIT_USAGE
    except OSError as exc:  # permission denied, disk full, unreachable storage: expected, not a crash (nor exit 1)
        out.error(redact(f"{exc}; nothing was half written: {_advice(exc)}, then rerun the same command"),
                  EXIT_USAGE, type(exc).__name__, retryable=unreachable(exc))
        return EXIT_USAGE
    return EXIT_OK


@contextlib.contextmanager
def _stdout_for_json_only(out: Output) -> Iterator[None]:
    """Under --json, stdout carries the one JSON object and nothing else: what a command prints besides
    (a print in a projection module or fold, a library's, a worker process's) goes to stderr, the job's
    log, instead of breaking the scheduler's parse. The console script's file descriptor 1 is moved too,
    for the worker processes that inherit it."""
    stdout = sys.stdout
    if not out.json or stdout is None:
        yield
        return
    moved = stdout is sys.__stdout__ and sys.stderr is not None and sys.stderr is sys.__stderr__
    if moved:
        stdout.flush()
        kept = os.fdopen(os.dup(stdout.fileno()), "w", encoding=stdout.encoding)
        os.dup2(sys.stderr.fileno(), stdout.fileno())
    out.stream = kept if moved else stdout  # else main() runs where sys.stdout is replaced: Python's prints only
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        if moved:
            sys.stderr.flush()
            os.dup2(kept.fileno(), stdout.fileno())
            with contextlib.suppress(BrokenPipeError):  # its reader went away: ReaderGone tells main()
                kept.close()
        out.stream = None


@contextlib.contextmanager
def _sigterm_exits(out: Output) -> Iterator[None]:
    """A scheduler stops a job with SIGTERM (then SIGKILL): say so in the job's log and JSON and
    exit 143 at once, even inside a DuckDB query (which a raised exception would not stop). Stopping
    anywhere is as safe as kill -9 anywhere, which the fault suite sweeps: nothing is half written,
    and rerunning the command resumes. A forked worker that gets SIGTERM just ends."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    job = os.getpid()

    def stop(signum: int, frame: object) -> None:
        if os.getpid() == job:
            out.error(TERMINATED, EXIT_TERMINATED, "terminated")
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(EXIT_TERMINATED)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _plain(value: object) -> object:
    """An error's context value as JSON: a lock's holder as its fields, a path as text, passwords hidden."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_plain(v) for v in value]
    return redact(str(value))


def _advice(exc: OSError) -> str:
    """What to fix for an error of the file system, the network or an object store."""
    text = str(exc)
    if "NoSuchBucket" in text:
        return "the bucket does not exist: create it, or correct the bucket in the lake URI"
    if missing_credentials(exc):
        return ("no credentials for the object store were found: set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
                "(or AWS_PROFILE, or [lake.storage_options] in workbench.toml)")
    if refused_credentials(exc):
        return ("the object store refused the credentials: check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
                "(or the profile, or [lake.storage_options]) and the bucket's permissions")
    if unreachable(exc):
        return "check that the storage or server is reachable (endpoint, network, credentials)"
    if exc.errno == errno.ENOSPC:
        return "free some space"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST, errno.EISDIR):
        return "a file stands where a folder is needed, or the reverse: move it or give another path"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "fix the permissions"
    return "fix the permissions or free some space"


def _interrupted(exc: BaseException) -> bool:
    """Whether ``exc`` is Ctrl-C (SIGINT): a KeyboardInterrupt, click's Abort for one (click turns
    an EOFError into Abort too: that is no interrupt), or DuckDB's ``InterruptException`` or
    ``RuntimeError("Query interrupted")`` when it arrives inside a query."""
    if isinstance(exc, click.Abort):
        return not isinstance(exc.__cause__, EOFError)
    return isinstance(exc, (KeyboardInterrupt, duckdb.InterruptException)) or (
        isinstance(exc, RuntimeError) and str(exc) == "Query interrupted")


def _after_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` was raised while a Ctrl-C unwound the command (one is in its context): a Ctrl-C that
    cut a lazy import of ``distributed``'s short left its cluster's close to fail with a NameError (exit 70)."""
    seen: set[int] = set()
    cause: BaseException | None = exc.__context__
    while cause is not None and id(cause) not in seen:
        if _interrupted(cause):
            return True
        seen.add(id(cause))
        cause = cause.__context__
    return False


def run() -> None:
    """Entry point of ``python -m rebuild``: the console script's own, which starts light (see ``_rebuild_cli``)."""
    from _rebuild_cli import run as light

    light()


if __name__ == "__main__":  # python -m rebuild.cli: the same command, not an import that does nothing
    import rebuild.__main__  # noqa: F401  (the module rebuild.cli, whose group the commands join, not this copy)
