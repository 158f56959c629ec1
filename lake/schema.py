"""The event envelope (lake schema v1) and the key-bucket function, in one place."""

from __future__ import annotations

import hashlib
import re

import pyarrow as pa

from lake.sql import literal

SCHEMA_VERSION = 1
DEFAULT_BUCKETS = 16

#: The envelope every event in the lake has (DESIGN.md, "The event envelope").
EVENT_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("stream", pa.string(), nullable=False),
        pa.field("partition_key", pa.string(), nullable=False),
        pa.field("sequence", pa.int64(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("event_time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("ingested_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("lake_version", pa.int64(), nullable=False),
        pa.field("schema_version", pa.int32()),
        pa.field("payload", pa.string()),
        pa.field("metadata", pa.string()),
    ]
)

#: What is stored: the envelope plus the key bucket, the second partition column.
STORED_SCHEMA = EVENT_SCHEMA.append(pa.field("bucket", pa.int32(), nullable=False))
#: the columns readers prune files by (``lake.table.Snapshot.select``): the only ones with statistics in
#: the Delta log. Every checkpoint copies every file's statistics and delta-rs parses them again at each
#: commit: those of all ten columns made up 80% of a checkpoint and doubled a commit's time
STATS_COLUMNS = ("partition_key", "event_time", "lake_version")

#: which copy of an event id archived more than once is its first, in any stream: the one every view read first
#: (lowest lake_version), then by sequence and stream, so the choice never depends on the order files are read.
#: ``rebuild lake dedupe`` keeps it and the audit counts the others, so the two agree.
FIRST_COPY = "lake_version, sequence, stream"

#: A record that could not become an event: kept with its reason, source and line.
QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("stream", pa.string()),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("line", pa.int64()),
        pa.field("record", pa.string()),
        pa.field("event_id", pa.string()),
        pa.field("partition_key", pa.string()),
        pa.field("sequence", pa.int64()),
        pa.field("event_type", pa.string()),
        pa.field("event_time", pa.timestamp("us", tz="UTC")),
        pa.field("record_hash", pa.string(), nullable=False),
        pa.field("ingested_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("lake_version", pa.int64(), nullable=False),
    ]
)

ENVELOPE_COLUMNS = tuple(EVENT_SCHEMA.names)

#: a stream's events are under the folder ``stream=NAME`` (NAME percent-encoded), and a folder's name
#: holds at most 255 bytes on Linux and macOS file systems
STREAM_FOLDER_MAX = 255 - len("stream=")


def percent_encoded(value: str, only: str | None = None) -> str:
    """``value`` as one name of a path that reads back as itself: each UTF-8 byte of the characters in
    ``only`` as ``%XX``; with None, of every character but ASCII letters, digits and ``_.-~`` (as Python's
    ``quote(value, safe="")`` and DuckDB's ``url_encode`` write it)."""
    unsafe = f"[{re.escape(only)}]" if only is not None else "[^A-Za-z0-9_.~-]"
    return re.sub(unsafe, lambda c: "".join(f"%{byte:02X}" for byte in c[0].encode()), value)


def partition_folder(value: str) -> str:
    """A partition value as the folder name DuckDB's ``PARTITION_BY`` writes and its hive reader
    decodes: percent-encoded, so a stream holding ``/``, ``=`` or ``%`` stays one folder and reads back
    as itself (written as it is, ``a/b`` became two folders and the lake unreadable)."""
    return percent_encoded(value)


#: why a stream's name cannot name its folder: its first 40 characters, then its folder name's length
STREAM_TOO_LONG = ("stream name '{}'... is too long for the lake's folder stream=NAME: {} characters percent-encoded "
                   f"(a space, a sign or a byte of a non-ASCII letter takes 3), at most {STREAM_FOLDER_MAX}")


def stream_too_long(stream: str) -> str | None:
    """Why ``stream`` cannot name a stream of the lake, if it is too long for its folder's name."""
    length = len(partition_folder(stream))
    return STREAM_TOO_LONG.format(stream[:40], length) if length > STREAM_FOLDER_MAX else None


def stream_too_long_sql(stream: str) -> tuple[str, str]:
    """``stream_too_long`` of the SQL expression ``stream``: the condition a stream that fits meets, and the
    reason of one that does not (DuckDB's ``url_encode`` is ``partition_folder``; a byte takes 3 at most)."""
    length = f"strlen(url_encode({stream}))"
    head, middle, tail = (literal(part) for part in STREAM_TOO_LONG.split("{}"))
    return (f"strlen({stream}) * 3 <= {STREAM_FOLDER_MAX} OR {length} <= {STREAM_FOLDER_MAX}",
            f"{head} || left({stream}, 40) || {middle} || {length} || {tail}")


#: the event times Python's datetime (and so every report, audit and notebook) holds: DuckDB also reads years
#: past 9999, BC years and infinity. Ingest quarantines the others; a lake an older version wrote may hold some
FIRST_TIME = "TIMESTAMPTZ '0001-01-01 00:00:00+00'"
LAST_TIME = "TIMESTAMPTZ '9999-12-31 23:59:59.999999+00'"


def time_held_sql(column: str) -> str:
    """Whether the SQL timestamp ``column`` lies in the years 1 to 9999 (false for infinity)."""
    return f"{column} BETWEEN {FIRST_TIME} AND {LAST_TIME}"


#: compacted files that also carry decoded payload fields have this in their name (``lake.compact``)
DECODED_MARK = "-decoded"

#: the quarantine's compacted files have this in their name, and carry two columns more (outside the Delta schema,
#: which Delta readers and the quarantine's readers ignore): each row's provenance, the file an ingest first stored
#: it in and the quarantine version of the compaction that first moved it, which a catch-up's "newly quarantined" needs
COMPACTED_MARK = "-compacted"
FIRST_FILE = "provenance:file"
COMPACTED_AT = "provenance:compacted_at"


#: the payload types a compacted file can carry decoded: they read back from Parquet as the same type
DECODABLE = re.compile(r"VARCHAR|BOOLEAN|U?(TINYINT|SMALLINT|INTEGER|BIGINT)|FLOAT|DOUBLE|DATE|TIMESTAMP|TIMESTAMPTZ"
                       r"|DECIMAL\(\d+,\d+\)")


def decoded_column(field: str, type_: str) -> str:
    """The column of a compacted file holding payload field ``field`` decoded as DuckDB type
    ``type_``, exactly as ``from_json(payload, {field: type_})`` gives it. The Delta schema does
    not list these columns: readers that select the envelope never see them."""
    return f"payload:{field}:{_type_name(type_)}"


def decoded_field(column: str) -> tuple[str, str]:
    """The payload field and DuckDB type a ``decoded_column`` name stands for."""
    field, _, type_ = column.removeprefix("payload:").rpartition(":")
    return field, type_


def decodable(type_: str) -> bool:
    return DECODABLE.fullmatch(_type_name(type_)) is not None


def _type_name(type_: str) -> str:
    return "".join(type_.upper().split())


def bucket_of(partition_key: str, buckets: int = DEFAULT_BUCKETS) -> int:
    """The key bucket of a partition key: the first 32 bits of its MD5, modulo ``buckets``.

    MD5 because DuckDB, Polars and Python all compute it identically and stably across versions.
    """
    return int(hashlib.md5(partition_key.encode("utf-8")).hexdigest()[:8], 16) % buckets


def bucket_sql(column: str, buckets: int) -> str:
    """The same function as :func:`bucket_of`, as a DuckDB expression over a quoted column."""
    return f"CAST(CAST('0x' || left(md5({column}), 8) AS UBIGINT) % {int(buckets)} AS INTEGER)"


def conform(reader: pa.RecordBatchReader, schema: pa.Schema) -> pa.RecordBatchReader:
    """Cast a stream of batches to ``schema`` (types and not-null flags) without collecting it."""
    return pa.RecordBatchReader.from_batches(
        schema, (batch.select(schema.names).cast(schema) for batch in reader)
    )
