"""Reading one snapshot of the lake, pruned before any file is opened.

``read_events`` is the one way in: it picks the files whose partition values and statistics can
match the filters (stream, key bucket, event-time range, lake_version range) and hands only those
to DuckDB or Polars, which then apply the same filters row by row.
"""

from __future__ import annotations


import contextlib
import numbers
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal, overload

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from lake.errors import LakeError
from lake import storage
from lake.schema import COMPACTED_AT, COMPACTED_MARK, ENVELOPE_COLUMNS, EVENT_SCHEMA, FIRST_FILE, QUARANTINE_SCHEMA
from lake.sql import literal, quote
from lake.table import DataFile, Lake, Snapshot

Engine = Literal["duckdb", "polars"]
ENGINES = ("duckdb", "polars")


@dataclass(frozen=True)
class EventFilter:
    """What to read: every field narrows the events (None means no filter)."""

    streams: tuple[str, ...] | None = None
    event_types: tuple[str, ...] | None = None
    since: datetime | None = None
    until: datetime | None = None
    after_version: int | None = None
    as_of: int | None = None
    partition_keys: tuple[str, ...] | None = None
    #: data files left out (a run's ``--skip-corrupted`` ones, which its check must not read either)
    without_files: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """Accept what a notebook passes (one name for a tuple, a list, a date, an ISO text, a
        naive time meaning UTC) and refuse what would silently match nothing or the wrong thing:
        a plain string used to filter by its characters."""
        for name in ("streams", "event_types", "partition_keys"):
            object.__setattr__(self, name, as_names(getattr(self, name), name))
        for name in ("since", "until"):
            value = getattr(self, name)
            object.__setattr__(self, name, None if value is None else as_utc(value, name))
        if self.since and self.until and self.since >= self.until:
            raise LakeError(f"since {self.since.isoformat()} is not before until {self.until.isoformat()}")
        for name in ("after_version", "as_of"):
            object.__setattr__(self, name, as_version(getattr(self, name), name))

    def files(self, snapshot: Snapshot, lake: Lake) -> list[DataFile]:
        buckets = None
        if self.partition_keys is not None:
            buckets = lake.buckets_of(self.partition_keys)
        files = snapshot.select(
            streams=self.streams,
            buckets=buckets,
            keys=self.partition_keys,
            since=self.since,
            until=self.until,
            after_version=self.after_version,
            as_of=self.as_of,
        )
        return [f for f in files if f.path not in self.without_files] if self.without_files else files

    def where(self) -> str:
        """The same filters as a SQL predicate (partition keys are joined, not listed)."""
        terms = ["true"]
        if self.streams is not None:
            terms.append(_in_list("stream", self.streams))
        if self.event_types is not None:
            terms.append(_in_list("event_type", self.event_types))
        if self.since is not None:
            terms.append(f"event_time >= {literal(self.since)}")
        if self.until is not None:
            terms.append(f"event_time < {literal(self.until)}")
        if self.after_version is not None:
            terms.append(f"lake_version > {int(self.after_version)}")
        if self.as_of is not None:
            terms.append(f"lake_version <= {int(self.as_of)}")
        return " AND ".join(terms)


def as_version(value: Any, name: str = "lake_version") -> int | None:
    """A lake_version as an int, NumPy's integers too (a pandas column's ``max()``); None stays."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0):
        raise LakeError(f"{name} must be a lake_version (an integer >= 0), not {value!r}")
    return None if value is None else int(value)


def as_names(value: Any, name: str = "names") -> tuple[str, ...] | None:
    """One name or several as a tuple (a plain string is one name, not its characters); None stays."""
    if value is None:
        return None
    values = (value,) if isinstance(value, str) else tuple(value)
    if not all(isinstance(v, str) for v in values):
        raise LakeError(f"{name} must be text or a list of text, not {value!r}")
    return values


def as_utc(value: datetime | date | str, what: str = "time") -> datetime:
    """``value`` as a UTC datetime: an ISO text or a date is parsed, a naive time is UTC (the lake's
    event times are), and a time in another zone is converted (Polars compares only equal zones)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise LakeError(f"{what} {value!r} is not an ISO date or time (2026-09-01 or 2026-09-01T12:00)") from None
    elif isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, datetime.min.time())
    elif not isinstance(value, datetime):
        raise LakeError(f"{what} must be a datetime, a date or an ISO text, not {value!r}")
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def _in_list(column: str, values: Sequence[str]) -> str:
    """``column IN ('a', 'b')``: a constant list DuckDB pushes down into the Parquet scan."""
    if not values:
        return "false"
    return f"{column} IN ({', '.join(literal(v) for v in values)})"


@overload
def read_events(
    lake: Lake, filter: EventFilter | None = ..., *, engine: Literal["duckdb"] = ...,
    snapshot: Snapshot | None = ..., con: duckdb.DuckDBPyConnection | None = ...,
) -> duckdb.DuckDBPyRelation: ...
@overload
def read_events(
    lake: Lake, filter: EventFilter | None = ..., *, engine: Literal["polars"],
    snapshot: Snapshot | None = ..., con: duckdb.DuckDBPyConnection | None = ...,
) -> pl.LazyFrame: ...
def read_events(
    lake: Lake,
    filter: EventFilter | None = None,
    *,
    engine: Engine = "duckdb",
    snapshot: Snapshot | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
) -> duckdb.DuckDBPyRelation | pl.LazyFrame:
    """The events of one snapshot (default: the latest) that pass ``filter``.

    Returns a DuckDB relation (on ``con``, or the default connection, set to UTC) or a Polars LazyFrame,
    with the envelope's columns; files that cannot match the filter are never opened.
    """
    if engine not in ENGINES:
        raise LakeError(f"engine {engine!r} is not one of {list(ENGINES)}")
    filter = filter or EventFilter()
    snapshot = snapshot or lake.snapshot()
    if filter.as_of is not None and filter.as_of > snapshot.lake_version:
        raise LakeError(f"as_of {filter.as_of} is after the lake's latest lake_version {snapshot.lake_version}")
    paths = [f.path for f in filter.files(snapshot, lake)]
    if engine == "polars":
        return _polars(paths, filter, storage.polars_options(lake.storage_options))
    return _duckdb(lake.attach(con or _utc_default()), paths, filter)


def _utc_default() -> duckdb.DuckDBPyConnection:
    """DuckDB's default connection, set to UTC as the lake's times are: in the machine's zone (New York's on a
    machine there) a relation's event_time came out in that zone (Arrow's, Polars' and pandas' times too),
    and its days were local ones (``CAST(event_time AS DATE)``, ``date_trunc('day', ...)``, a projection's own
    SQL), not the views'. The connection itself, not a cursor of it: relations on it still combine with the
    caller's (``rel.join(duckdb.from_arrow(...))``), which a cursor's refuse."""
    con = duckdb.default_connection()
    con.execute("SET TimeZone = 'UTC'")
    return con


def files_read(lake: Lake, filter: EventFilter, snapshot: Snapshot | None = None) -> list[str]:
    """The files ``read_events`` would open for ``filter``: what ``plan`` shows."""
    return [f.path for f in filter.files(snapshot or lake.snapshot(), lake)]


def _duckdb(con: duckdb.DuckDBPyConnection, paths: list[str], filter: EventFilter) -> duckdb.DuckDBPyRelation:
    columns = ", ".join(quote(c) for c in ENVELOPE_COLUMNS)
    if not paths:
        return con.from_arrow(EVENT_SCHEMA.empty_table())
    source = (
        f"read_parquet({literal(paths)}, hive_partitioning = true, "
        "hive_types = {'stream': VARCHAR, 'bucket': INTEGER})"
    )
    rel = con.sql(f"SELECT {columns} FROM {source} WHERE {filter.where()}")
    if filter.partition_keys is not None:
        keys = con.from_arrow(pa.table({"partition_key": list(filter.partition_keys)}))
        rel = rel.join(keys, "partition_key", how="semi")
    return rel


def _polars(paths: list[str], filter: EventFilter, storage_options: dict[str, str] | None = None) -> pl.LazyFrame:
    schema = pl.Schema(pl.from_arrow(EVENT_SCHEMA.empty_table()).schema)  # type: ignore[union-attr]
    if not paths:
        return pl.LazyFrame(schema=schema)
    frame = pl.scan_parquet(
        paths, hive_partitioning=True, hive_schema={"stream": pl.String, "bucket": pl.Int32},
        storage_options=storage_options,
    ).select(list(ENVELOPE_COLUMNS))
    predicates: list[pl.Expr] = []
    if filter.streams is not None:
        predicates.append(pl.col("stream").is_in(list(filter.streams)))
    if filter.event_types is not None:
        predicates.append(pl.col("event_type").is_in(list(filter.event_types)))
    if filter.since is not None:
        predicates.append(pl.col("event_time") >= filter.since)
    if filter.until is not None:
        predicates.append(pl.col("event_time") < filter.until)
    if filter.after_version is not None:
        predicates.append(pl.col("lake_version") > filter.after_version)
    if filter.as_of is not None:
        predicates.append(pl.col("lake_version") <= filter.as_of)
    if filter.partition_keys is not None:
        predicates.append(pl.col("partition_key").is_in(list(filter.partition_keys)))
    return frame.filter(*predicates) if predicates else frame


def read_quarantine(lake: Lake, con: duckdb.DuckDBPyConnection | None = None,
                    files: Sequence[str] | None = None) -> duckdb.DuckDBPyRelation:
    """Quarantined records (reason, source, line, record, ...) as a DuckDB relation.

    ``files`` narrows the quarantine table's files (the audit leaves out unreadable ones)."""
    con = lake.attach(con or _utc_default())
    files = list(lake.quarantine_files() if files is None else files)
    if not files:
        return con.from_arrow(QUARANTINE_SCHEMA.empty_table())
    names = ", ".join(quote(c) for c in QUARANTINE_SCHEMA.names)
    return con.sql(f"SELECT {names} FROM read_parquet({literal(files)})")


def quarantine_provenance(files: Sequence[str]) -> str:
    """SQL of the rows of the quarantine's ``files``: its columns, plus ``first_file`` (the name of the file an
    ingest stored the row in) and ``compacted_at`` (the quarantine's version whose compaction first moved it,
    NULL if none did). A compacted file says both; another is the row's first file. ``files``: one or more."""
    names = ", ".join(quote(c) for c in QUARANTINE_SCHEMA.names)
    compacted = [f for f in files if COMPACTED_MARK in f.rsplit("/", 1)[-1]]
    plain = [f for f in files if COMPACTED_MARK not in f.rsplit("/", 1)[-1]]
    parts = [f"SELECT {names}, parse_filename(filename) AS first_file, CAST(NULL AS BIGINT) AS compacted_at "
             f"FROM read_parquet({literal(plain)}, filename = true)"] if plain else []
    if compacted:
        parts.append(f"SELECT {names}, {quote(FIRST_FILE)} AS first_file, {quote(COMPACTED_AT)} AS compacted_at "
                     f"FROM read_parquet({literal(compacted)})")
    return " UNION ALL ".join(parts)


# -- file integrity -------------------------------------------------------------------------------
class CorruptFile(LakeError):
    """A data file of the lake cannot be read (truncated, overwritten, missing); ``file`` names it."""


@dataclass(frozen=True)
class BadFile:
    """A lake file that failed the integrity check, with the reader's error."""

    path: str
    error: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "error": self.error}


def check_file(path: str, *, read: bool = False, storage_options: dict[str, str] | None = None) -> BadFile | None:
    """None when ``path``'s Parquet footer opens (and, with ``read``, every page decodes).

    ``storage_options`` (``Lake.storage_options``) reach an object store's endpoint and credentials."""
    try:
        if "://" in path:
            fs, inner = storage.pyarrow_filesystem(path, storage_options)
            source = fs.open_input_file(inner)
        else:
            source = path
        parquet = pq.ParquetFile(source)
        if read:  # a row group at a time: bounded memory, and the pages' compression is checked
            for group in range(parquet.metadata.num_row_groups):
                parquet.read_row_group(group)
    except (OSError, pa.ArrowException, ValueError) as exc:
        return BadFile(path, f"{type(exc).__name__}: {exc}")
    return None


def check_files(paths: Sequence[str], *, read: bool = False,
                storage_options: dict[str, str] | None = None) -> list[BadFile]:
    """The files of ``paths`` that are not readable Parquet (footer only, or every page with ``read``)."""
    return [bad for path in paths if (bad := check_file(path, read=read, storage_options=storage_options)) is not None]



_QUOTED_PATH = re.compile(r"""["']([^"']+\.parquet)["']""")


def named_file(error: BaseException, paths: Sequence[str]) -> str | None:
    """The lake file of ``paths`` that a reader's error message names, if it names one."""
    text = str(error)
    for match in _QUOTED_PATH.findall(text):
        for path in paths:
            if match == path or path.endswith(match) or match.endswith(path.rsplit("/", 1)[-1]):
                return path
    return None


def damaged_file(exc: duckdb.Error, paths: Sequence[str], *,
                 storage_options: dict[str, str] | None = None) -> BadFile | None:
    """The file of ``paths`` that DuckDB's failed read of them tripped over: the one its message names,
    else the first whose pages do not decode (each read only on this failure path). None: no file problem.

    A page header damaged in a file whose footer opens raises DuckDB's base ``Error`` (Thrift's
    "TProtocolException: Invalid data", "don't know what type"); a query's own errors are subclasses."""
    named = named_file(exc, paths)
    if named is not None:
        return BadFile(named, f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
    if not (type(exc) is duckdb.Error
            or isinstance(exc, duckdb.IOException | duckdb.InvalidInputException | duckdb.InternalException)):
        return None
    bad = check_files(paths, read=True, storage_options=storage_options)
    return bad[0] if bad else None


@contextlib.contextmanager
def damaged_named(paths: Sequence[str], what_then: str) -> Iterator[None]:
    """A lake file of ``paths`` that DuckDB cannot read becomes ``CorruptFile`` naming it and saying
    ``what_then`` (what the command did and did not do), not an unexpected error with DuckDB's traceback."""
    try:
        yield
    except duckdb.Error as exc:
        bad = named_file(exc, paths)
        if bad is None:
            raise
        raise CorruptFile(f"lake file {bad} cannot be read ({str(exc).splitlines()[0]}); {what_then}. "
                          "`rebuild lake audit` lists every unreadable file: restore it, then run again", file=bad) from exc


__all__ = [
    "BadFile", "CorruptFile", "damaged_file", "damaged_named", "EventFilter", "as_names", "as_utc", "check_file", "check_files", "files_read", "named_file",
    "quarantine_provenance", "read_events", "read_quarantine",
]

