"""Events written as Parquet by DuckDB (in parallel, one or more files per partition), described
as Delta add actions for ``Lake.commit_files``.

DuckDB writes the files under the events table's folder with unique names and returns each
file's row count, size, partition values and exact column statistics (``RETURN_STATS``); those of
the columns readers prune files by (``STATS_COLUMNS``) become the actions' stats.
Until the commit references them the files are invisible: a crash leaves only unreferenced
files, as delta-rs's own writer does. An object-store lake gets its files written to a local
staging folder first, then copied to the same place under the table's folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import duckdb
import pyarrow as pa
from deltalake.transaction import AddAction

from lake import storage
from lake.schema import QUARANTINE_SCHEMA, STATS_COLUMNS, STORED_SCHEMA, partition_folder
from lake.sql import literal, quote
from lake.table import EVENTS, PARTITIONS, QUARANTINE, Lake

#: the columns with statistics in the Delta log: the events', and the quarantine's after compaction
EVENT_STATS = tuple(STORED_SCHEMA.field(column) for column in STATS_COLUMNS)
QUARANTINE_STATS = tuple(QUARANTINE_SCHEMA.field(column) for column in ("partition_key", "event_id"))
#: longer text statistics are cut (min) or left out (max), as delta-rs keeps its log small
STATS_TEXT = 32


def write_events(con: duckdb.DuckDBPyConnection, select: str, lake: Lake, staging: Path) -> list[AddAction]:
    """Write the rows of ``select`` (the columns of ``STORED_SCHEMA``) under the events table;
    the files are not committed yet. ``staging`` is a local folder for object-store lakes."""
    root = _root(lake, staging)
    columns = ", ".join(quote(c) for c in STORED_SCHEMA.names)
    written = con.execute(
        f"COPY (SELECT {columns} FROM ({select})) TO {literal(root)} (FORMAT parquet, "
        f"PARTITION_BY ({', '.join(PARTITIONS)}), FILENAME_PATTERN 'part-{{uuid}}', APPEND, RETURN_STATS)"
    ).fetchall()
    if lake.local is None and written:
        storage.upload_tree(root, lake.table_uri(EVENTS), lake.storage_options)
    return [_action(root, filename, size, _stats(int(rows), column_stats), dict(partitions), data_change=True)
            for filename, rows, size, _footer, column_stats, partitions, _extra in written]


def write_partition(con: duckdb.DuckDBPyConnection, select: str, lake: Lake, staging: Path,
                    stream: str, bucket: int, name: str, row_group_rows: int) -> AddAction:
    """Write the rows of ``select`` (the stored columns but the partition's, in the order given,
    possibly with more columns) as the one file ``name`` of partition (``stream``, ``bucket``),
    not committed yet: compaction's rewrite of a partition."""
    folder = (f"stream={partition_folder(stream)}", f"bucket={bucket}")
    return _write_file(con, select, lake, staging, EVENTS, folder, name, row_group_rows, EVENT_STATS,
                       {"stream": stream, "bucket": str(bucket)})


def write_quarantine_file(con: duckdb.DuckDBPyConnection, select: str, lake: Lake, staging: Path, name: str,
                          row_group_rows: int) -> AddAction:
    """Write the rows of ``select`` (the quarantine's columns first, possibly more) as the one file ``name`` of
    the quarantine table, not committed yet: compaction's rewrite of the quarantine. Its statistics are those
    of the columns the quarantine's readers choose files by (``partition_key``, ``event_id``)."""
    return _write_file(con, select, lake, staging, QUARANTINE, (), name, row_group_rows, QUARANTINE_STATS, {})


def _write_file(con: duckdb.DuckDBPyConnection, select: str, lake: Lake, staging: Path, table: str,
                folder: tuple[str, ...], name: str, row_group_rows: int, fields: Sequence[pa.Field],
                partitions: dict[str, str]) -> AddAction:
    """One file of ``table`` (in ``folder`` under it) holding the rows of ``select``, as a rewrite: no data change."""
    root = _root(lake, staging, table)
    Path(root, *folder).mkdir(parents=True, exist_ok=True)
    filename, rows, size, _footer, column_stats, *_ = con.execute(
        f"COPY ({select}) TO {literal(str(Path(root, *folder, name)))} (FORMAT parquet, "
        f"ROW_GROUP_SIZE {int(row_group_rows)}, COMPRESSION snappy, RETURN_STATS)"
    ).fetchall()[0]
    if lake.local is None:
        storage.upload_tree(root, lake.table_uri(table), lake.storage_options)
    return _action(root, filename, size, _stats(int(rows), column_stats, fields), partitions, data_change=False)


def _root(lake: Lake, staging: Path, table: str = EVENTS) -> str:
    """Where files are written: under the table, or the staging folder of an object-store lake."""
    return str(lake.local / table) if lake.local is not None else str(staging / table)


def _action(root: str, filename: str, size: int, stats: dict[str, object], partitions: dict[str, str], *,
            data_change: bool) -> AddAction:
    return AddAction(
        path=PurePosixPath(filename).relative_to(root).as_posix(),
        size=int(size),
        partition_values=partitions,
        modification_time=int(time.time() * 1000),
        data_change=data_change,
        # as UTF-8, not \u escapes: deltalake reads an escaped pair above U+1FFFF as another character
        # (U+20000 as U+10000), and ingest then looks for a key's duplicates in no file
        stats=json.dumps(stats, separators=(",", ":"), ensure_ascii=False),
    )


def _stats(rows: int, column_stats: Mapping[str, Mapping[str, str]],
           fields: Sequence[pa.Field] = EVENT_STATS) -> dict[str, object]:
    """Delta file statistics (numRecords, minValues, maxValues, nullCount) of ``fields``, from DuckDB's."""
    found = {name.strip('"'): values for name, values in column_stats.items()}
    stats: dict[str, Any] = {"numRecords": rows, "minValues": {}, "maxValues": {}, "nullCount": {}}
    for field in fields:
        values = found.get(field.name)
        if values is None:  # no statistic: readers take the file as one that may match
            continue
        stats["nullCount"][field.name] = int(values["null_count"])
        for bound in ("min", "max"):
            value = _bound(field.type, values, bound)
            if value is not None:
                stats[f"{bound}Values"][field.name] = value
    return stats


def _bound(kind: pa.DataType, values: Mapping[str, str], bound: str) -> object:
    """One statistic as Delta writes it, or None when it is missing, inexact or not a safe bound."""
    text = values.get(bound)
    if text is None or values.get(f"{bound}_is_exact") != "true":
        return None
    if pa.types.is_integer(kind):
        return int(text)
    if pa.types.is_timestamp(kind):
        try:  # DuckDB writes '2024-03-01 10:00:00.5+00'; years outside 1-9999 get no statistic
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    if len(text) <= STATS_TEXT:
        return text
    if bound == "min":
        return text[:STATS_TEXT]  # a prefix is still a lower bound
    return _above(text[:STATS_TEXT])


def _above(prefix: str) -> str | None:
    """The prefix with its last character raised by one: above every text starting with it (so an
    upper bound, and files keyed by long ids such as UUIDs can still be pruned by key)."""
    code = ord(prefix[-1]) + 1
    if code == 0xD800:  # surrogates are not text
        code = 0xE000
    return prefix[:-1] + chr(code) if code <= 0x10FFFF else None
