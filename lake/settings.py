"""Settings files (``workbench.toml``, mappings) name only what the code reads.

A misspelt section or key would otherwise be ignored without a word: ``[lakes] uri`` would leave
a nightly job on the default lake, ``event_time_units`` would quarantine every epoch time.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path


def unknown_keys(data: Mapping[str, object], known: Mapping[str, frozenset[str] | None]) -> list[str]:
    """The names in ``data`` that ``known`` does not list, dotted (``lake.url``). ``known`` maps
    each top-level name to the keys its table may hold, or to None when anything goes under it."""
    found = []
    for name, value in data.items():
        if name not in known:
            found.append(name)
        elif (allowed := known[name]) is not None:
            if not isinstance(value, Mapping):
                found.append(f"{name} (a [{name}] table, not a value)")
            else:
                found += [f"{name}.{key}" for key in value if key not in allowed]
    return found


def describe(known: Mapping[str, frozenset[str] | None]) -> str:
    """``known`` for a message: ``[lake] uri, storage_options; name; ...``."""
    return "; ".join(f"[{name}] {', '.join(sorted(keys))}" if keys else name for name, keys in known.items())


def read_toml(path: Path) -> str:
    """The text of a settings file, which TOML says is UTF-8 (whatever the locale); one saved in another
    encoding (a Windows editor's, with an umlaut in a comment) raises ValueError saying so, not a
    UnicodeDecodeError traceback."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}): TOML files are UTF-8, "
                         "save it as UTF-8") from None
