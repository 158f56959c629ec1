"""Run options, defined once: the CLI's ``plan``/``run`` flags and the Workbench's keyword
arguments are both generated from ``RunOptions`` (a test proves they cannot drift)."""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from lake.errors import LakeError, not_a_file
from lake.read import as_utc
from rebuild.errors import ConfigError
from rebuild.progress import PROGRESS

F = TypeVar("F", bound=Callable[..., Any])
EXECUTORS = ("local", "processes", "dask")  # rebuild.distributed runs the last two


def _opt(default: Any, flag: str, help: str, **click_kwargs: Any) -> Any:
    return field(default=default, metadata={"flag": flag, "help": help, **click_kwargs})


@dataclass(frozen=True)
class RunOptions:
    """What part of a view to rebuild, and from which lake state."""

    full: bool = _opt(False, "--full", "Recompute the whole view (default without a live checkpoint or after a code change).")
    incremental: bool = _opt(False, "--incremental", "Catch up live from its checkpoint with the projection's strategy.")
    keys: tuple[str, ...] = _opt((), "--keys", "Correct these partition keys (repeat, or comma-separate).", multiple=True)
    keys_file: str | None = _opt(None, "--keys-file", "Correct the partition keys listed in this file, one per line.")
    since: str | None = _opt(None, "--since", "Correct events from this event time on (ISO date or time, UTC).")
    until: str | None = _opt(None, "--until", "Correct events before this event time (ISO date or time, UTC).")
    as_of: str | None = _opt(None, "--as-of", "Replay the lake as it was at this lake_version or timestamp.")
    exclude_quarantined: bool = _opt(False, "--exclude-quarantined", "Leave out partition keys that have quarantined records.")
    skip_corrupted: bool = _opt(False, "--skip-corrupted", "Skip unreadable lake files (named in the run record) instead of failing.")
    progress: str = _opt("auto", "--progress", "Progress display: bar for people, log lines for jobs.", type=click.Choice(PROGRESS))
    executor: str = _opt("local", "--executor", "Where a full run replays: this process, a local process pool, or Dask "
                         "(key buckets become tasks; see docs/scaling.md).", type=click.Choice(EXECUTORS))
    address: str | None = _opt(None, "--address", "The Dask scheduler (tcp://host:8786) for --executor dask; "
                               "without it a LocalCluster starts on this machine.")
    workers: int | None = _opt(None, "--workers", "Processes for --executor processes, or LocalCluster workers "
                               "(default: one per CPU).", type=int)

    def __post_init__(self) -> None:
        """Values as the flags' text, also when a notebook builds ``RunOptions(...)`` itself: one key as a
        key (not its characters), keys as text, and an integer or a time for ``as_of``/``since``/``until``."""
        keys = (self.keys,) if isinstance(self.keys, str) else () if self.keys is None else self.keys
        if hasattr(keys, "columns"):  # a DataFrame iterates over its column names (pandas) or columns (Polars)
            columns = list(keys.columns)
            raise ConfigError(f"keys is a table (columns {columns}), not a column of partition keys: pass a DataFrame's "
                              f"column, keys=frame[{(columns or ['order_id'])[0]!r}]")
        object.__setattr__(self, "keys", tuple(_key_text(k) for k in keys))
        for name in ("since", "until", "as_of"):
            object.__setattr__(self, name, _point_text(getattr(self, name), name))

    def partition_keys(self) -> tuple[str, ...] | None:
        """The keys of --keys and --keys-file together, or None when neither was given."""
        keys = [k for k in self.keys if k.strip()]  # as given: a key may hold a comma or spaces (a blank one is none)
        if self.keys and not keys:
            raise ConfigError(f"keys {list(self.keys)!r} name no partition key; name one, or drop them "
                              "(a run without keys catches up the whole view)")
        if self.keys_file:
            path = Path(self.keys_file)
            if not path.is_file():
                raise ConfigError(not_a_file("keys file", path), file=str(path))
            try:  # utf-8-sig: the byte order mark Windows editors write is no part of the first key
                text = path.read_text(encoding="utf-8-sig")
            except UnicodeDecodeError as exc:
                raise ConfigError(f"keys file {path} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it "
                                  "as UTF-8, one partition key per line", file=str(path)) from None
            # lines end at \n only (read_text made \r\n and \r one): splitlines also cut at U+2028, U+0085,
            # \x1c-\x1e, \x0b and \x0c, which a key from JSON or a mainframe may hold. Lines as written: the plan
            # trims a key's spaces at its ends unless the lake holds it with them
            listed = [line for line in text.split("\n") if line.strip()]
            if not listed:
                raise ConfigError(f"keys file {path} lists no partition key: nothing to correct (a run without "
                                  "--keys-file would catch up the whole view)", file=str(path))
            keys += listed
        binary = next((k for k in keys if "\0" in k), None)
        if binary is not None:  # no key holds one (DuckDB's literals refuse it): a traceback in the run, exit 1
            raise ConfigError(f"key {binary!r} holds a NUL character, which no partition key does: "
                              f"{'is the keys file a binary file? ' if self.keys_file else ''}give the keys as text",
                              file=self.keys_file)
        return tuple(dict.fromkeys(keys)) or None

    def time_range(self) -> tuple[datetime | None, datetime | None]:
        return parse_time(self.since, "--since"), parse_time(self.until, "--until")

    def validate(self) -> None:
        if self.full and self.incremental:
            raise ConfigError("--full and --incremental exclude each other")
        targeted = self.partition_keys() is not None or self.since or self.until
        if targeted and (self.full or self.incremental):
            raise ConfigError("--keys/--since/--until choose a partial run: drop --full/--incremental")
        since, until = self.time_range()
        if since and until and since >= until:
            raise ConfigError(f"--since {self.since} is not before --until {self.until}")
        if self.progress not in PROGRESS:
            raise ConfigError(f"--progress {self.progress!r} is not one of {list(PROGRESS)}")
        if self.executor not in EXECUTORS:
            raise ConfigError(f"--executor {self.executor!r} is not one of {list(EXECUTORS)}")
        if self.address and self.executor != "dask":
            raise ConfigError("--address names a Dask scheduler: add --executor dask")
        if self.workers is not None and self.executor == "local":
            raise ConfigError(f"--workers {self.workers} sizes --executor processes or dask: add one of them "
                              "(a local run replays in this process)")
        if self.workers is not None and self.address:
            raise ConfigError(f"--workers {self.workers} sizes a LocalCluster; the cluster at --address has the "
                              "workers it was started with: drop --workers")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"--workers {self.workers} must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def parse_time(text: str | None, flag: str = "time") -> datetime | None:
    """An ISO date or date-time; naive values are UTC."""
    if text is None or text == "":
        return None
    try:
        return as_utc(text, flag)
    except LakeError as exc:
        raise ConfigError(str(exc)) from None


def click_options(func: F) -> F:
    """Add one click option per RunOptions field (the only place the flags are declared)."""
    for f in reversed(fields(RunOptions)):
        meta = dict(f.metadata)
        flag = meta.pop("flag")
        if f.type in ("bool", bool):
            func = click.option(flag, f.name, is_flag=True, default=False, **meta)(func)
        else:
            func = click.option(flag, f.name, default=f.default, show_default=f.default not in (None, ()), **meta)(func)
    return func


def keyword_options(method: F) -> F:
    """``method`` (taking RunOptions as ``**kwargs``) with RunOptions' fields in its signature and help:
    a notebook's Shift-Tab, tab completion and ``help(wb.run)`` show them as the CLI's --help does."""
    signature = inspect.signature(method)
    given = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    options = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
               for f in fields(RunOptions)]
    method.__signature__ = signature.replace(parameters=[*given, *options])  # type: ignore[attr-defined]
    listed = "\n".join(f"  {f.name} ({f.metadata['flag']}): {f.metadata['help']}" for f in fields(RunOptions))
    method.__doc__ = f"{inspect.cleandoc(method.__doc__ or '')}\n\nOptions (keywords, or options=RunOptions(...)):\n{listed}"
    return method


def from_flags(**flags: Any) -> RunOptions:
    """RunOptions from the CLI's flags: ``--keys "a, b"`` is a and b (in Python, keys are taken as given)."""
    given = flags.get("keys") or ()
    keys = tuple(k.strip() for item in given for k in item.split(",") if k.strip())
    if given and not keys:
        raise ConfigError(f"--keys {','.join(given)!r} names no partition key; name one, or drop --keys "
                          "(a run without it catches up the whole view)")
    return from_kwargs(**{**flags, "keys": keys})


def from_kwargs(**kwargs: Any) -> RunOptions:
    """RunOptions from keyword arguments; an unknown name is an error listing the known ones."""
    known = {f.name for f in fields(RunOptions)}
    unknown = set(kwargs) - known
    if unknown:
        raise ConfigError(f"unknown run options {sorted(unknown)}; known: {sorted(known)}")
    flags = [f.name for f in fields(RunOptions) if f.type in ("bool", bool)]
    wrong = {name: kwargs[name] for name in flags if name in kwargs and not isinstance(kwargs[name], bool)}
    if wrong:  # full="false" is truthy: it would run in full
        raise ConfigError(f"{', '.join(f'{k}={v!r}' for k, v in wrong.items())}: give True or False")
    options = RunOptions(**kwargs)  # which takes the keys and times as its fields' text
    options.validate()
    return options


def _point_text(value: Any, name: str) -> str | None:
    """``since``, ``until`` or ``as_of`` as the text its flag takes: a datetime or date in ISO, an integer
    (NumPy's too, a pandas column's ``max()``) as a lake_version."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    what = "a lake_version (an integer) or a time" if name == "as_of" else "a time"
    raise ConfigError(f"{name}={value!r}: give {what}, as a datetime, a date or an ISO text")


def _key_text(key: Any) -> str:
    """One partition key as text. A row of view key columns (``report.diff.differing_keys``) or a list is
    refused: as text it names no partition key, and its patch of nothing would pass its check."""
    if isinstance(key, dict | list | tuple | set):
        hint = (f"; from a check report's differing keys: keys=[k[{next(iter(key))!r}] for k in "
                "report.diff.differing_keys] (when that column is the partition key)") if isinstance(key, dict) and key else ""
        raise ConfigError(f"keys are partition keys as text, not {type(key).__name__}: {key!r}{hint}")
    if not isinstance(key, str) and _missing(key):  # str() names a key 'None' or 'nan' no event has: a patch of nothing
        raise ConfigError(f"keys hold {key!r}, which names no partition key (a missing value in the column they came "
                          "from?); leave it out: keys=column.dropna() (pandas), column.drop_nulls() (Polars), or "
                          "keys=[k for k in keys if isinstance(k, str)]")
    return str(key)


def _missing(key: Any) -> bool:
    """None, or a data library's missing value: NaN and NaT (not equal to themselves) or pandas' NA
    (whose comparison is no bool)."""
    try:
        return key is None or bool(key != key)
    except TypeError:
        return True
