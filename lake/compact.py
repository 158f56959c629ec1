"""Compaction: rewrite each partition's small files as few files sorted by (partition_key, sequence).

Each partition (stream, bucket) is rewritten as one file; a Delta commit removes the old files of
several partitions and adds their new ones, so a reader sees either a partition's old files or its
new one, never both or neither. The removed files stay on disk until vacuumed, so readers of an
older snapshot keep working. The quarantine's small files (an ingest that quarantines adds one) are
rewritten as one the same way, in a commit of the quarantine table.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
from deltalake.transaction import AddAction

from lake import scratch, storage
from lake.faults import point
from lake.schema import (
    COMPACTED_AT, COMPACTED_MARK, DECODED_MARK, FIRST_FILE, QUARANTINE_SCHEMA, STORED_SCHEMA, decodable, decoded_column,
)
from lake.sql import literal, quote
from lake.read import as_names, damaged_named, quarantine_provenance
from lake.table import EVENTS, PARTITIONS, QUARANTINE, DataFile, Lake, refuse_unknown_streams
from lake.writer import write_partition, write_quarantine_file

log = logging.getLogger(__name__)
ROW_GROUP_ROWS = 128 * 1024
SMALL_BYTES = 64 << 20
#: files that compaction would merge away before the audit (and `rebuild ls`) suggest running it
SUGGEST_COMPACT = 100
#: the partitions rewritten are committed together once they hold this many events (and at the end): each
#: Delta commit costs delta-rs two passes over the table's whole file list (~0.1 s at 9,000 small files), so
#: a commit per partition made a lake of 320 small partitions spend 30 s of its 40 s compaction in commits
COMMIT_EVENTS = 1_000_000


@dataclass(frozen=True)
class Uncompacted:
    """The partitions compaction would rewrite for their small files, and the files they hold."""

    files: int
    partitions: int

    @property
    def suggested(self) -> bool:
        """Whether compaction would merge away enough files to be worth prompting (``SUGGEST_COMPACT``)."""
        return self.files - self.partitions >= SUGGEST_COMPACT

    def to_dict(self) -> dict[str, object]:
        return {"files": self.files, "partitions": self.partitions, "suggested": self.suggested}

    def hint(self) -> str:
        return (f"{self.files:,} small files in {self.partitions:,} partitions await compaction (it would leave "
                f"{self.partitions:,}): run `rebuild lake compact`")


def uncompacted(files: Iterable[DataFile], small_bytes: int = SMALL_BYTES) -> Uncompacted:
    """What ``compact`` would merge among ``files`` (a snapshot's): read from their statistics, no file opened."""
    groups: dict[tuple[str, int], list[DataFile]] = defaultdict(list)
    for f in files:
        groups[(f.stream, f.bucket)].append(f)
    small = [group for group in groups.values() if _has_small_files(group, small_bytes)]
    return Uncompacted(files=sum(len(group) for group in small), partitions=len(small))


def _has_small_files(files: list[DataFile], small_bytes: int) -> bool:
    return sum(f.size_bytes < small_bytes for f in files) >= 2


@dataclass(frozen=True)
class CompactResult:
    partitions: int
    files_before: int
    files_after: int
    rows: int
    seconds: float
    quarantine_files_before: int = 0  # the quarantine's files rewritten (0: it was not compacted)
    quarantine_files_after: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "partitions": self.partitions,
            "files_before": self.files_before,
            "files_after": self.files_after,
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
            "quarantine_files_before": self.quarantine_files_before,
            "quarantine_files_after": self.quarantine_files_after,
        }


def compact(lake: Lake, *, small_bytes: int = SMALL_BYTES, streams: str | Sequence[str] | None = None,
            decode: Iterable[tuple[str, str]] = (), con: duckdb.DuckDBPyConnection | None = None,
            commit_events: int = COMMIT_EVENTS) -> CompactResult:
    """Rewrite every partition that has two or more files smaller than ``small_bytes``, or a file
    without one of the ``decode`` columns.

    ``decode`` lists payload fields with a DuckDB type, (``"amount"``, ``"DECIMAL(18,2)"``): the
    new files carry each as a typed column next to the JSON (``lake.schema.decoded_column``), so a
    replay that declares the same field and type reads the column instead of parsing every payload.
    Memory stays bounded: DuckDB sorts with spilling and the rows stream into the new files.
    ``con``: each partition is rewritten in a cursor of it, within its memory limit, temp directory and
    threads (the CLI passes one with the configured settings); None: of one in-memory DuckDB with its
    defaults, spilling to the system's temp directory.
    The rewritten partitions are committed together once they hold ``commit_events`` events, and at the
    end: a kill loses the rewrites not committed yet (their files are vacuumed), never an event.
    Without ``streams``, the quarantine's small files are then rewritten as one (``compact_quarantine``).
    """
    started = time.monotonic()
    wanted = sorted({(f, t) for f, t in decode if decodable(t)})
    chosen = as_names(streams, "streams")
    with lake.commit_lock(), contextlib.closing(storage.session(con)) as session:
        snapshot = lake.snapshot()
        refuse_unknown_streams(chosen, snapshot.streams(), snapshot.lake_version)
        todo = _partitions(lake, snapshot.files, chosen, small_bytes, {decoded_column(f, t) for f, t in wanted})
        version = snapshot.delta_version
        batch: list[tuple[AddAction, list[DataFile]]] = []
        pending = 0  # events in the batch
        for n, ((stream, bucket), files) in enumerate(todo):
            point("compact.before_partition")
            done = (f"compaction stopped there: {n - len(batch)} of {len(todo)} partitions were compacted and committed "
                    "before it; no event is lost")
            with damaged_named([f.path for f in files], done):
                batch.append((rewrite(lake, stream, bucket, files, wanted, session), files))
            pending += sum(f.rows for f in files)
            point("compact.after_partition")
            if pending >= commit_events or n == len(todo) - 1:
                version += 1
                _commit(lake, batch, version)
                batch, pending = [], 0
        quarantined = compact_quarantine(lake, session, small_bytes) if chosen is None else (0, 0)
    rows = sum(f.rows for _, files in todo for f in files)
    return CompactResult(len(todo), sum(len(files) for _, files in todo), len(todo), rows, time.monotonic() - started,
                         *quarantined)


def compact_quarantine(lake: Lake, session: duckdb.DuckDBPyConnection,
                       small_bytes: int = SMALL_BYTES) -> tuple[int, int]:
    """Rewrite the quarantine's files smaller than ``small_bytes`` (two or more) as one, sorted by partition_key,
    in one commit of the quarantine table pinned to the version read; returns the files before and after ((0, 0):
    nothing to do). Hold ``commit_lock``. Every column is copied as it is, and each row keeps its provenance
    (``lake.read.quarantine_provenance``): a catch-up tells the keys quarantined after its live's run by it."""
    version, files = lake.quarantine_data_files()
    small = [f for f in files if f.size_bytes < small_bytes]
    if len(small) < 2:
        return 0, 0
    paths = [f.path for f in small]
    names = ", ".join(quote(c) for c in QUARANTINE_SCHEMA.names)
    select = (f"SELECT {names}, first_file AS {quote(FIRST_FILE)}, coalesce(compacted_at, {version + 1}) AS "
              f"{quote(COMPACTED_AT)} FROM ({quarantine_provenance(paths)}) ORDER BY partition_key, event_id, record_hash")
    con = lake.attach(storage.session(session))
    with con, scratch.folder("rebuild-compact", clean=False) as staging, \
            damaged_named(paths, "the quarantine was not compacted; no record is lost"):
        action = write_quarantine_file(con, select, lake, Path(staging), f"part-{uuid.uuid4()}{COMPACTED_MARK}.parquet",
                                       ROW_GROUP_ROWS)
    point("compact.quarantine_written")
    lake.commit_files(QUARANTINE, [action], expected_version=version + 1, operation="compact", remove=small)
    point("compact.quarantine_committed")
    log.info("compacted the quarantine: %s files -> 1", len(small))
    return len(small), 1


def _partitions(lake: Lake, files: Iterable[DataFile], streams: Sequence[str] | None, small_bytes: int,
                columns: set[str]) -> list[tuple[tuple[str, int], list[DataFile]]]:
    """The partitions to rewrite (of ``streams``, or all), each with all its files: those with small files,
    or with a file lacking one of the decoded ``columns``."""
    groups: dict[tuple[str, int], list[DataFile]] = defaultdict(list)
    for f in files:
        if streams is None or f.stream in streams:
            groups[(f.stream, f.bucket)].append(f)
    carried = lake.decoded_columns([f.path for group in groups.values() for f in group]) if columns else {}
    return [(partition, group) for partition, group in sorted(groups.items())
            if _has_small_files(group, small_bytes) or any(not columns <= carried.get(f.path, frozenset()) for f in group)]


def _commit(lake: Lake, batch: list[tuple[AddAction, list[DataFile]]], version: int) -> None:
    """One Delta commit at ``version`` (pinned: a writer that committed meanwhile makes this LakeBusy,
    its files are not removed) putting each partition's new file in place of its old ones."""
    lake.commit_files(EVENTS, [action for action, _ in batch], expected_version=version, operation="compact",
                      remove=[f for _, files in batch for f in files])
    point("compact.after_commit")
    log.info("committed %s compacted partitions (%s files)", len(batch), sum(len(files) for _, files in batch))


def rewrite(lake: Lake, stream: str, bucket: int, files: list[DataFile], decode: list[tuple[str, str]],
             session: duckdb.DuckDBPyConnection, drop: pa.Table | None = None) -> AddAction:
    """One sorted file for the partition, written in a cursor of ``session``, not committed yet. ``drop``:
    rows left out, by ``filename`` and ``file_row_number`` (as DuckDB's ``read_parquet`` names them)."""
    con = lake.attach(storage.session(session))
    columns = ", ".join(quote(c) for c in STORED_SCHEMA.names if c not in PARTITIONS)
    layers = _layers(decode)
    structs = "".join(f", from_json(payload, {literal(json.dumps(layer))}) AS __d{i}" for i, layer in enumerate(layers))
    fields = "".join(f", __d{i}.{quote(f)} AS {quote(decoded_column(f, t))}" for i, layer in enumerate(layers) for f, t in layer.items())
    source = f"read_parquet({literal([f.path for f in files])}, hive_partitioning = false)"
    if drop is not None:
        con.register("__dropped", drop)
        source = (f"(FROM read_parquet({literal([f.path for f in files])}, hive_partitioning = false, filename = true, "
                  "file_row_number = true) ANTI JOIN __dropped USING (filename, file_row_number))")
    select = (f"SELECT {columns}{fields} FROM (SELECT *{structs} FROM {source}) "
              "ORDER BY partition_key, sequence, event_id")
    name = f"part-{uuid.uuid4()}{DECODED_MARK if decode else ''}.parquet"
    # a process's first folder removes those killed compactions, spills and ingests left; not again per partition
    with con, scratch.folder("rebuild-compact", clean=False) as staging:
        # sorted by key, in row groups small enough that a correction of a few keys skips most
        action = write_partition(con, select, lake, Path(staging), stream, bucket, name, ROW_GROUP_ROWS)
        point("compact.written")
    log.info("rewrote %s/%s: %s files", stream, bucket, len(files))
    return action


def _layers(decode: list[tuple[str, str]]) -> list[dict[str, str]]:
    """The (field, type) pairs as JSON specs for ``from_json``, each naming a field once (a field
    wanted as two types needs two specs)."""
    layers: list[dict[str, str]] = []
    for field, type_ in decode:
        for layer in layers:
            if field not in layer:
                layer[field] = type_
                break
        else:
            layers.append({field: type_})
    return layers
