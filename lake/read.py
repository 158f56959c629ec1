"""Reading one snapshot of the lake, pruned before any file is opened.

``read_events`` is the one way in: it picks the files whose partition values and statistics can
match the filters (stream, key bucket, event-time range, lake_version range) and hands only those
to DuckDB or Polars, which then apply the same filters row by row.
"""

from __future__ import annotations


from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, overload

import duckdb
import polars as pl
import pyarrow as pa

from lake.schema import ENVELOPE_COLUMNS, EVENT_SCHEMA, QUARANTINE_SCHEMA
from lake.sql import literal, quote
from lake.table import DataFile, Lake, Snapshot

Engine = Literal["duckdb", "polars"]


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

    def files(self, snapshot: Snapshot, lake: Lake) -> list[DataFile]:
        buckets = None
        if self.partition_keys is not None:
            buckets = lake.buckets_of(self.partition_keys)
        return snapshot.select(
            streams=self.streams,
            buckets=buckets,
            keys=self.partition_keys,
            since=self.since,
            until=self.until,
            after_version=self.after_version,
            as_of=self.as_of,
        )

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

    Returns a DuckDB relation (on ``con``, or the default connection) or a Polars LazyFrame,
    with the envelope's columns; files that cannot match the filter are never opened.
    """
    filter = filter or EventFilter()
    snapshot = snapshot or lake.snapshot()
    paths = [f.path for f in filter.files(snapshot, lake)]
    if engine == "polars":
        return _polars(paths, filter)
    return _duckdb(con or duckdb.default_connection(), paths, filter)


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


def _polars(paths: list[str], filter: EventFilter) -> pl.LazyFrame:
    schema = pl.Schema(pl.from_arrow(EVENT_SCHEMA.empty_table()).schema)  # type: ignore[union-attr]
    if not paths:
        return pl.LazyFrame(schema=schema)
    frame = pl.scan_parquet(
        paths, hive_partitioning=True, hive_schema={"stream": pl.String, "bucket": pl.Int32}
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


def read_quarantine(lake: Lake, con: duckdb.DuckDBPyConnection | None = None) -> duckdb.DuckDBPyRelation:
    """Quarantined records (reason, source, line, record, ...) as a DuckDB relation."""
    con = con or duckdb.default_connection()
    files = lake.quarantine_files()
    if not files:
        return con.from_arrow(QUARANTINE_SCHEMA.empty_table())
    names = ", ".join(quote(c) for c in QUARANTINE_SCHEMA.names)
    return con.sql(f"SELECT {names} FROM read_parquet({literal(files)})")


__all__ = ["EventFilter", "files_read", "read_events", "read_quarantine"]

