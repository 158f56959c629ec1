"""Declared column mappings: how a source's field names become the envelope.

A mapping is a small TOML file::

    name = "aws-lambda-stream"
    [fields]                 # envelope column = source field
    event_id = "id"
    event_type = "type"
    event_time = "timestamp"
    partition_key = "partitionKey"
    sequence = "timestamp"
    payload = "order"
    [options]
    event_time_unit = "ms"   # epoch milliseconds; omit for ISO-8601 text or native timestamps
    # event_time_format = "%d.%m.%Y %H:%M"   # or text in another format (DuckDB's strptime)
    metadata = ["tags", "raw"]   # source fields gathered into the metadata JSON object

A source field of NDJSON input may also be a JSON path into the record (``"$.detail.orderId"``,
``"$.payload.after.id"``, ``'$."detail-type"'``): envelopes such as Kafka Connect's or EventBridge's
nest the fields an event needs.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

from lake.errors import SourceError
from lake.settings import describe, read_toml, unknown_keys

MAPPABLE = (
    "event_id",
    "stream",
    "partition_key",
    "sequence",
    "event_type",
    "event_time",
    "schema_version",
    "payload",
    "metadata",
)
REQUIRED = ("event_id", "partition_key", "sequence", "event_type", "event_time")
TIME_UNITS = ("s", "ms", "us")
#: a JSON path DuckDB reads: $ then .name, ."any name" or [index] steps
JSON_PATH = re.compile(r'\$(\.[A-Za-z_][A-Za-z0-9_]*|\."[^"\\]+"|\[[0-9]+\])+')
BUILTIN = {"aws-lambda-stream": "aws_lambda_stream.toml"}
#: the names a mapping file may hold ([fields] keys are checked against the envelope's columns)
SETTINGS: dict[str, frozenset[str] | None] = {
    "name": None,
    "fields": None,
    "options": frozenset({"event_time_unit", "event_time_format", "metadata"}),
}


@dataclass(frozen=True)
class Mapping:
    """Which source field feeds each envelope column (identity by default)."""

    name: str = "envelope"
    fields: dict[str, str] = field(default_factory=lambda: {c: c for c in MAPPABLE})
    event_time_unit: str | None = None
    event_time_format: str | None = None
    metadata_fields: tuple[str, ...] = ()

    def source(self, column: str) -> str | None:
        return self.fields.get(column)

    def required_sources(self) -> list[str]:
        return [self.fields[c] for c in REQUIRED if c in self.fields]

    def paths(self) -> list[str]:
        """The source fields given as JSON paths (``$.detail.orderId``): NDJSON input only."""
        return [f for f in (*self.fields.values(), *self.metadata_fields) if is_path(f)]

    @classmethod
    def load(cls, spec: str | Path) -> Mapping:
        """Load a mapping by built-in name (``aws-lambda-stream``) or TOML path."""
        text, origin = _read(spec)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SourceError(f"mapping {origin} is not valid TOML: {exc}", file=origin) from exc
        return cls.from_dict(data, origin)

    @classmethod
    def from_dict(cls, data: dict[str, object], origin: str = "<mapping>") -> Mapping:
        fields, options = _table(data, "fields", origin), _table(data, "options", origin)
        unknown = sorted(set(fields) - set(MAPPABLE))
        missing = [c for c in REQUIRED if c not in fields]
        unit = options.get("event_time_unit")
        problems = [f"{column} = {source!r} names no source field: give its name in quotes"
                    for column, source in fields.items() if not isinstance(source, str)]
        metadata = options.get("metadata", [])
        metadata = [metadata] if isinstance(metadata, str) else metadata  # one field, or a list
        if not isinstance(metadata, list):
            problems.append(f"metadata = {metadata!r} is no list of source fields: metadata = [\"tags\", ...]")
        misspelt = unknown_keys(data, SETTINGS)
        if misspelt:
            problems.append(f"unknown settings {misspelt} (known: {describe(SETTINGS)})")
        if unknown:
            problems.append(f"unknown envelope columns {unknown} (known: {list(MAPPABLE)})")
        if missing:
            problems.append(f"no source field for {missing}")
        problems += [f"{source!r} is no JSON path: write $.detail.orderId, $.\"detail-type\" or $.items[0]"
                     for source in [*fields.values(), *(metadata if isinstance(metadata, list) else [])]
                     if isinstance(source, str) and is_path(source) and not JSON_PATH.fullmatch(source)]
        problems += _time_problems(unit, options.get("event_time_format"))
        if problems:
            raise SourceError(f"mapping {origin}: " + "; ".join(problems), file=origin)
        return cls(
            name=str(data.get("name", Path(origin).stem)),
            fields={k: str(v) for k, v in fields.items()},
            event_time_unit=unit,
            event_time_format=options.get("event_time_format"),
            metadata_fields=tuple(str(f) for f in metadata),
        )


def _time_problems(unit: object, time_format: object) -> list[str]:
    """What is wrong with ``event_time_unit`` and ``event_time_format`` (DuckDB's strptime says which
    specifier it does not know, here rather than as a failed query in the middle of an ingest)."""
    if unit is not None and unit not in TIME_UNITS:
        return [f"event_time_unit {unit!r} is not one of {list(TIME_UNITS)}"]
    if time_format is None:
        return []
    if not isinstance(time_format, str) or unit is not None:
        return [f"event_time_format = {time_format!r} must be a strptime format such as \"%d.%m.%Y %H:%M\", "
                "and not given with event_time_unit"]
    try:
        duckdb.connect().execute("SELECT try_strptime('', ?)", [time_format])
    except duckdb.Error as exc:
        return [f"event_time_format {time_format!r}: {exc}"]
    return []


def is_path(source: str) -> bool:
    return source.startswith("$")


def _table(data: dict[str, object], name: str, origin: str) -> dict[str, Any]:
    """``[name]`` of a mapping file: ``fields = 5`` (or a list) is an error naming it, not a TypeError."""
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise SourceError(f"mapping {origin}: {name} must be a table ([{name}], then a key = value per line), "
                          f"not {table!r}", file=origin)
    return table


def _read(spec: str | Path) -> tuple[str, str]:
    name = str(spec)
    if name in BUILTIN:
        return resources.files("lake.mappings").joinpath(BUILTIN[name]).read_text(encoding="utf-8"), name
    path = Path(spec)
    if not path.is_file():
        raise SourceError(
            f"mapping {name} not found: give a TOML file or one of {sorted(BUILTIN)}", file=name
        )
    try:
        return read_toml(path), str(path)
    except ValueError as exc:  # not UTF-8
        raise SourceError(f"mapping {exc}", file=name) from None
