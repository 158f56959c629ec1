"""Compaction: rewrite each partition's small files as few files sorted by (partition_key, sequence).

Each partition (stream, bucket) is rewritten in one Delta commit that removes the old files and
adds the new ones, so a reader sees either the old files or the new ones, never both or neither.
The removed files stay on disk until vacuumed, so readers of an older snapshot keep working.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass

import duckdb
from deltalake import WriterProperties

from lake.faults import point
from lake.schema import STORED_SCHEMA, conform
from lake.sql import literal, quote
from lake.table import EVENTS, DataFile, Lake

log = logging.getLogger(__name__)
ROW_GROUP_ROWS = 128 * 1024


@dataclass(frozen=True)
class CompactResult:
    partitions: int
    files_before: int
    files_after: int
    rows: int
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return {
            "partitions": self.partitions,
            "files_before": self.files_before,
            "files_after": self.files_after,
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
        }


def compact(lake: Lake, *, small_bytes: int = 64 << 20, streams: list[str] | None = None) -> CompactResult:
    """Rewrite every partition that has two or more files smaller than ``small_bytes``.

    Memory stays bounded: DuckDB sorts with spilling and the rows stream into the new files.
    """
    started = time.monotonic()
    before = after = rows = partitions = 0
    with lake.commit_lock():
        groups: dict[tuple[str, int], list[DataFile]] = defaultdict(list)
        for f in lake.snapshot().files:
            if streams is None or f.stream in streams:
                groups[(f.stream, f.bucket)].append(f)
        for (stream, bucket), files in sorted(groups.items()):
            # the overwrite replaces the whole partition, so every file of it is rewritten
            if sum(f.size_bytes < small_bytes for f in files) < 2:
                continue
            partitions += 1
            before += len(files)
            rows += sum(f.rows for f in files)
            point("compact.before_partition")
            _rewrite(lake, stream, bucket, files)
            point("compact.after_partition")
            after += 1
            log.info("compacted %s/%s: %s files", stream, bucket, len(files))
    return CompactResult(partitions, before, after, rows, time.monotonic() - started)


def _rewrite(lake: Lake, stream: str, bucket: int, files: list[DataFile]) -> None:
    con = lake.attach(duckdb.connect())
    columns = ", ".join(quote(c) for c in STORED_SCHEMA.names)
    reader = con.sql(
        f"SELECT {columns} FROM read_parquet({literal([f.path for f in files])}, "
        "hive_partitioning = true, hive_types = {'stream': VARCHAR, 'bucket': INTEGER}) "
        "ORDER BY partition_key, sequence, event_id"
    ).to_arrow_reader(250_000)
    lake.write(
        EVENTS,
        conform(reader, STORED_SCHEMA),
        mode="overwrite",
        predicate=f"stream = {literal(stream)} AND bucket = {int(bucket)}",
        operation="compact",
        # sorted by key, in row groups small enough that a correction of a few keys skips most;
        # compressed like ingest's files (delta-rs writes uncompressed pages when given properties
        # without a codec: a compacted lake was four times the size of the lake it replaced)
        writer_properties=WriterProperties(max_row_group_size=ROW_GROUP_ROWS, compression="SNAPPY"),
    )
    con.close()
