"""One frozen configuration, loaded once: defaults < workbench.toml < REBUILD_* env < arguments."""

from __future__ import annotations

import functools
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import duckdb

from lake.errors import empty_value, not_a_file
from lake.settings import describe, read_toml, unknown_keys
from lake.sql import literal
from rebuild.errors import ConfigError
from rebuild.store import check_uri

FILENAME = "workbench.toml"
#: the sections and keys of workbench.toml (anything else is a typo, refused)
SETTINGS: dict[str, frozenset[str] | None] = {
    "lake": frozenset({"uri", "storage_options"}),
    "store": frozenset({"uri"}),
    "projections": frozenset({"modules"}),
    "duckdb": frozenset({"memory_limit", "temp_directory", "threads"}),
    "reports": frozenset({"dir"}),
}

#: the CLI flags of the overrides, for messages
FLAGS = {"lake_uri": "--lake", "store_uri": "--store"}


@dataclass(frozen=True)
class Config:
    """Where the lake and the views are, which projections exist, and DuckDB's limits."""

    lake_uri: str = ".demo/lake"
    store_uri: str = "duckdb://.demo/views.duckdb"
    projection_modules: tuple[str, ...] = ("rebuild.examples",)
    memory_limit: str = "4GB"
    temp_directory: str | None = None
    threads: int | None = None
    reports_dir: str = "reports"
    source: str | None = None
    storage_options: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        **overrides: object,
    ) -> Config:
        """Read ``path`` (or $REBUILD_CONFIG, or ./workbench.toml when present) and apply overrides."""
        env = os.environ if env is None else env
        if path is not None and not str(path).strip():  # else the working directory's file, or the defaults
            raise ConfigError(empty_value("--config", "give the workbench.toml to use, or leave it out"))
        chosen = path or env.get("REBUILD_CONFIG")
        file = Path(chosen) if chosen else _cwd() / FILENAME
        if chosen and not file.is_file():
            raise ConfigError(not_a_file("configuration file", file), file=str(file))
        config = cls._from_file(file) if file.is_file() else cls()._resolved(_cwd())
        env_values: dict[str, Any] = {
            "lake_uri": env.get("REBUILD_LAKE_URI"),
            "store_uri": env.get("REBUILD_STORE_URI"),
            "memory_limit": env.get("REBUILD_MEMORY_LIMIT"),
            "temp_directory": env.get("REBUILD_TEMP_DIRECTORY"),
        }
        config = replace(config, **{k: v for k, v in env_values.items() if v})
        given = {k: v for k, v in overrides.items() if v is not None}
        unknown = set(given) - set(cls.__dataclass_fields__)
        if unknown:
            known = ", ".join(k for k in cls.__dataclass_fields__ if k != "source")  # source: the file read
            raise ConfigError(f"unknown configuration keys {sorted(unknown)}; known: {known}")
        empty = [FLAGS.get(k, k) for k, v in given.items() if isinstance(v, str) and not v.strip()]
        if empty:  # `--store "$STORE"` with the variable unset: the working directory would become the store
            raise ConfigError(empty_value(", ".join(empty), "give a path or URI, or leave it out for the configured one"))
        config = replace(config, **given)._resolved(_cwd())  # type: ignore[arg-type]
        _check_duckdb_settings(config)
        return config

    @classmethod
    def _from_file(cls, file: Path) -> Config:
        try:
            data = tomllib.loads(read_toml(file))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file} is not valid TOML: {exc}", file=str(file)) from exc
        except ValueError as exc:  # not UTF-8
            raise ConfigError(str(exc), file=str(file)) from None
        unknown = unknown_keys(data, SETTINGS)
        if unknown:
            raise ConfigError(f"{file}: unknown settings {unknown}; known: {describe(SETTINGS)}", file=str(file))
        duck = data.get("duckdb", {})
        defaults = cls()
        modules = data.get("projections", {}).get("modules", defaults.projection_modules)
        modules = (modules,) if isinstance(modules, str) else modules  # one name, or a list
        if not isinstance(modules, (list, tuple)) or not all(isinstance(m, str) for m in modules):
            raise ConfigError(f"[projections] modules in {file} must be a module name or a list of them, in quotes, "
                              f"not {modules!r}", file=str(file))
        options = data.get("lake", {}).get("storage_options", {})
        if not isinstance(options, dict):
            raise ConfigError(f"[lake] storage_options in {file} must be a table ([lake.storage_options], a "
                              f"key = value per line), not {options!r}", file=str(file))
        config = cls(
            lake_uri=_text(data, "lake", "uri", file, defaults.lake_uri),
            store_uri=_text(data, "store", "uri", file, defaults.store_uri),
            projection_modules=tuple(modules),
            memory_limit=str(duck.get("memory_limit", defaults.memory_limit)),
            temp_directory=_text(data, "duckdb", "temp_directory", file, None),
            threads=duck.get("threads"),
            reports_dir=_text(data, "reports", "dir", file, defaults.reports_dir),
            source=str(file),
            storage_options={str(k): str(v) for k, v in options.items()},
        )
        return config._resolved(file.parent)

    def _resolved(self, base: Path) -> Config:
        """Relative paths resolved against ``base`` (the config file's folder)."""
        return replace(
            self,
            lake_uri=_resolve_path(self.lake_uri, base),
            store_uri=_resolve_store(self.store_uri, base),
            projection_modules=tuple(
                _resolve_path(m, base) if m.endswith(".py") else m for m in self.projection_modules
            ),
            temp_directory=_resolve_path(self.temp_directory, base) if self.temp_directory else None,
            reports_dir=_resolve_path(self.reports_dir, base),
        )

    @property
    def default_lake(self) -> bool:
        """Whether no workbench.toml was read and the lake is the default one (no $REBUILD_LAKE_URI or
        lake_uri= either)."""
        return self.source is None and self.lake_uri == _resolve_path(Config.lake_uri, _cwd())

    def redacted(self) -> dict[str, object]:
        """The configuration for logs and --json: passwords never appear."""
        return {
            "lake_uri": redact(self.lake_uri),
            "store_uri": redact(self.store_uri),
            "projection_modules": list(self.projection_modules),
            "memory_limit": self.memory_limit,
            "temp_directory": self.temp_directory,
            "source": self.source,
        }


def _text(data: dict[str, Any], section: str, key: str, file: Path, default: str | None) -> Any:
    """A setting that is text (a path or URI): a number or a list there is an error naming it, not a
    traceback (exit 1, read as failed checks) where it is first used."""
    value = data.get(section, {}).get(key, default)
    if value is not None and not isinstance(value, str):
        raise ConfigError(f"[{section}] {key} in {file} must be text, in quotes, not {value!r}", file=str(file))
    return value


def _cwd() -> Path:
    """The working directory, which relative paths resolve against: a job whose folder was deleted
    (an old release cleaned up under it) gets a ConfigError saying so, not a bare ``[Errno 2]``."""
    try:
        return Path.cwd()
    except FileNotFoundError:
        raise ConfigError("the working directory no longer exists (deleted or moved after this shell or job "
                          "entered it): cd into an existing folder, then rerun the same command") from None


def nearest_file() -> Path | None:
    """The workbench.toml of the nearest folder above the working directory, which is not read (only the
    working directory's is): a notebook runs in its own folder, below the project's."""
    return next((folder / FILENAME for folder in _cwd().parents if (folder / FILENAME).is_file()), None)


def _check_duckdb_settings(config: Config) -> None:
    """A typo in ``[duckdb]`` (or $REBUILD_MEMORY_LIMIT) is a configuration error, not a traceback
    from the first connection that applies it."""
    threads = config.threads
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"[duckdb] threads in {config.source or FILENAME} must be a whole number >= 1, not {threads!r}",
                          file=config.source)
    problem = _memory_limit_problem(config.memory_limit)
    if problem:
        raise ConfigError(
            f"memory_limit {config.memory_limit!r} ([duckdb] in {config.source or FILENAME}, or $REBUILD_MEMORY_LIMIT) "
            f"is not a memory size DuckDB reads: {problem}", file=config.source,
        )


@functools.lru_cache(maxsize=8)
def _memory_limit_problem(value: str) -> str | None:
    """DuckDB's objection to ``SET memory_limit = value`` (None: fine); asked once per value."""
    with duckdb.connect() as con:
        try:
            con.execute(f"SET memory_limit = {literal(value)}")
        except duckdb.Error as exc:
            return str(exc).split(": ", 1)[-1]
    return None


def _resolve_path(value: str, base: Path) -> str:
    if "://" in value or Path(value).is_absolute():
        return value
    return str((base / value).resolve())


def _resolve_store(uri: str, base: Path) -> str:
    check_uri(uri)
    for scheme in ("duckdb", "parquet"):  # duckdb://rel/path.duckdb or duckdb:///abs/path.duckdb
        prefix = f"{scheme}://"
        if uri.startswith(prefix):
            path = uri[len(prefix) :]
            path = "/" + path.lstrip("/") if path.startswith("/") else path
            return prefix + _resolve_path(path, base)
    if "://" in uri:
        return uri
    return _resolve_path(uri, base)


_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)[^@\s]*@")
_PASSWORD_PARAM = re.compile(r"(?i)(password=)[^&\s]*")


def redact(text: str) -> str:
    """Hide passwords in URIs anywhere in ``text``: ``postgresql://u:secret@h/db`` -> ``u:***@h``."""
    return _PASSWORD_PARAM.sub(r"\1***", _PASSWORD.sub(r"\g<head>***@", text))
