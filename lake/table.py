"""The lake's storage: two Delta tables (``events``, ``quarantine``) under one location.

Delta gives atomic multi-file commits and numbered versions; this module adds the workbench's
rules on top: ``lake_version`` is the Delta version of the events commit that added a row (the
commit is pinned to that version: it lands there or fails, see ``Lake.write``), and files are pruned by their partition values and column statistics before anything is read.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import duckdb
import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, Transaction, WriterProperties, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import AddAction, RemoveAction

from lake import storage
from lake.errors import LakeBusy, LakeError, LakeNotFound
from lake.schema import (
    DECODED_MARK, DEFAULT_BUCKETS, QUARANTINE_SCHEMA, SCHEMA_VERSION, STATS_COLUMNS, STORED_SCHEMA, bucket_of,
)
from lake.sql import literal

log = logging.getLogger(__name__)

EVENTS = "events"
QUARANTINE = "quarantine"
PARTITIONS = ["stream", "bucket"]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DEDUPE_APP = "workbench.dedupe"  # the Delta application transaction a dedupe's commit sets to its own version
RETAIN_HOURS = 168  # Delta's default file retention (delta.deletedFileRetentionDuration): a week
#: snapshots one Lake keeps: a notebook or a poller that lives while the lake grows sees a new version
#: after every commit, and each snapshot holds every file's statistics (~8 MB at 12,000 files)
KEPT_SNAPSHOTS = 4


@dataclass(frozen=True)
class DataFile:
    """One Parquet file of a snapshot, with what its statistics say about it."""

    path: str
    stream: str
    bucket: int
    rows: int
    size_bytes: int
    min_time: datetime | None
    max_time: datetime | None
    min_version: int
    max_version: int
    min_key: str | None = None
    max_key: str | None = None

    def may_hold_any(self, sorted_keys: Sequence[str]) -> bool:
        """Whether a key of ``sorted_keys`` falls inside this file's [min_key, max_key]."""
        return _may_hold_any(self.min_key, self.max_key, sorted_keys)

    @property
    def partition_values(self) -> dict[str, str | None]:
        return {"stream": self.stream, "bucket": str(self.bucket)}


@dataclass(frozen=True)
class QuarantineFile:
    """One Parquet file of the quarantine table (which has no partitions)."""

    path: str
    rows: int
    size_bytes: int

    @property
    def partition_values(self) -> dict[str, str | None]:
        return {}


def _may_hold_any(min_key: str | None, max_key: str | None, sorted_keys: Sequence[str]) -> bool:
    """Whether a key of ``sorted_keys`` falls inside [min_key, max_key] (a range not known: it may)."""
    if min_key is None or max_key is None or not _bmp(min_key + max_key):
        return True
    at = bisect.bisect_left(sorted_keys, min_key)
    return at < len(sorted_keys) and sorted_keys[at] <= max_key


def _may_hold_values(action: dict[str, Any], column: str, sorted_values: Sequence[str]) -> bool:
    """Whether the file of add ``action`` (flattened statistics) may hold one of ``sorted_values`` in ``column``:
    not when its values there are all NULL (a malformed line's record has no key or id)."""
    nulls = action.get(f"null_count.{column}")
    if not sorted_values or (nulls is not None and nulls == action.get("num_records")):
        return False
    return _may_hold_any(action.get(f"min.{column}"), action.get(f"max.{column}"), sorted_values)


def _bmp(text: str) -> bool:
    """Whether every character of ``text`` is below U+10000. deltalake decodes a statistic's escaped
    character above it wrongly (U+20000 as U+10000) in lakes written before their statistics were
    stored as UTF-8: such a file's key range is not known, so it is read. (On every file of a key
    lookup: ASCII keys answer at once, 0.05 µs against 3.6 µs for a loop over the characters.)"""
    return text.isascii() or max(text) < "\U00010000"


@dataclass(frozen=True)
class Snapshot:
    """A fixed view of the lake: one Delta version of the events table and its files."""

    delta_version: int
    lake_version: int
    buckets: int
    files: tuple[DataFile, ...]
    #: the Delta version of the last ``rebuild lake dedupe`` commit up to this one (its ``DEDUPE_APP`` transaction)
    last_dedupe: int | None = None

    def select(
        self,
        *,
        streams: Sequence[str] | None = None,
        buckets: Sequence[int] | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        after_version: int | None = None,
        as_of: int | None = None,
        keys: Sequence[str] | None = None,
    ) -> list[DataFile]:
        """The files that can hold events inside every given filter; the others are never read.

        ``keys`` prunes by the files' partition_key statistics: with time-ordered ids (ULIDs,
        sequential ids) a correction of recent keys skips the files of older commits.
        """
        sorted_keys = sorted(keys) if keys is not None else None
        chosen = []
        for f in self.files:
            if sorted_keys is not None and not f.may_hold_any(sorted_keys):
                continue
            if streams is not None and f.stream not in streams:
                continue
            if buckets is not None and f.bucket not in buckets:
                continue
            if since is not None and f.max_time is not None and f.max_time < since:
                continue
            if until is not None and f.min_time is not None and f.min_time >= until:
                continue
            if after_version is not None and f.max_version <= after_version:
                continue
            if as_of is not None and f.min_version > as_of:
                continue
            chosen.append(f)
        return chosen

    def streams(self) -> list[str]:
        return sorted({f.stream for f in self.files})


def commit_time(ms: int) -> str:
    """A commit's time (Delta's milliseconds) in ISO, UTC, to the millisecond: a message's time given back to
    ``--as-of`` must not fall before the commit it names, as one cut to the second does."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def refuse_unknown_streams(wanted: Iterable[str] | None, known: Iterable[str], lake_version: int) -> None:
    """A misspelt stream would quietly select nothing and pass as a clean, empty stream: refuse
    the ones the lake does not hold (an empty lake holds none, and that is no error)."""
    held = set(known)
    unknown = [s for s in wanted or () if s not in held]
    if unknown and held:
        raise LakeError(f"no stream {', '.join(unknown)} in the lake at lake_version {lake_version}; "
                        f"its streams: {', '.join(sorted(held))}", stream=unknown[0])


def _local_path(uri: str) -> Path | None:
    if "://" not in uri:
        return Path(uri)
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    return None


def _remote_uri(uri: str) -> str:
    """``uri`` without a trailing slash; a URI with an empty segment (``s3://bucket//lake``) is
    refused: object stores would take it as another prefix, which delta-rs cannot open."""
    scheme, _, path = uri.partition("://")
    path = path.rstrip("/")
    if "" in path.split("/"):
        fixed = "/".join(part for part in path.split("/") if part)
        hint = f" (did you mean {scheme}://{fixed}?)" if fixed and not path.startswith("/") else ""
        raise LakeError(f"the lake location {uri} has an empty bucket or path segment: "
                        f"give {scheme}://bucket/prefix{hint}", uri=uri)
    return f"{scheme}://{path}"


#: delta-rs decodes these in a local path, even in a file:// URI with the % encoded (a % alone is kept)
_PERCENT_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")


class Lake:
    """A Parquet event lake at a local path or an object-store URI."""

    def __init__(self, uri: str | os.PathLike[str], storage_options: dict[str, str] | None = None):
        text = os.fspath(uri)
        local = _local_path(text)
        self.uri = str(local.resolve()) if local is not None else _remote_uri(text)
        self.local = local.resolve() if local is not None else None
        if self.local is not None and (escape := _PERCENT_ESCAPE.search(self.uri)):
            raise LakeError(f"the lake location {self.uri} holds {escape.group(0)!r}, which the Delta library reads as "
                            f"{unquote(escape.group(0))!r} (percent-encoding), so it would write and look for the lake "
                            "in another folder: give a path without a % followed by two hex digits (rename the "
                            "folder, or use another)", uri=self.uri)
        # configured options over the AWS_* environment (see lake.storage); {} for local lakes
        self.storage_options = storage.resolve_options(self.uri, storage_options)
        if self.uri.startswith(storage.S3_SCHEMES):
            storage.require_s3fs()  # DuckDB reads a bucket through it: refused before a first commit, not after
        self._snapshots: dict[int, Snapshot] = {}
        self._latest: dict[str, DeltaTable] = {}
        #: per compacted file, its decoded payload columns and codes, each code column with its largest code
        self._decoded: dict[str, dict[str, int | None]] = {}

    def __repr__(self) -> str:
        return f"Lake({self.uri!r})"

    # -- locations -------------------------------------------------------------------------
    def attach(self, con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
        """Let DuckDB connection ``con`` read this lake's files (see ``lake.storage.attach``)."""
        return storage.attach(con, self.uri, self.storage_options)

    def table_uri(self, name: str) -> str:
        return f"{self.uri}/{name}"

    def exists(self) -> bool:
        return self._is_table(EVENTS)

    def _is_table(self, name: str) -> bool:
        # not DeltaTable.is_deltatable: it holds the GIL while it waits on the object store,
        # which stalls every other Python thread (an in-process S3 server deadlocks on it)
        if name in self._latest:
            return True
        try:  # kept as the latest: the next ``_table`` would load the same log again (~0.3 s at 3,000 commits)
            self._latest[name] = DeltaTable(self.table_uri(name), storage_options=self.storage_options)
        except TableNotFoundError:
            return False
        except DeltaError as exc:
            raise self._damaged(name, exc) from exc
        return True

    def _table(self, name: str, version: int | None = None) -> DeltaTable:
        """The table at ``version``; the latest one is kept and refreshed from the new log entries
        only (a fresh load replays the whole log: ~10 ms per call on a 40-commit lake)."""
        if version is None and name in self._latest:
            table = self._latest[name]
            table.update_incremental()
            return table
        try:
            table = DeltaTable(self.table_uri(name), version=version, storage_options=self.storage_options)
        except TableNotFoundError as exc:
            raise self._not_found() from exc
        except DeltaError as exc:
            if version is not None:  # a version past the log's ends: the caller's to say
                raise
            raise self._damaged(name, exc) from exc
        if version is None:
            self._latest[name] = table
        return table

    def _not_found(self) -> LakeNotFound:
        return LakeNotFound(
            f"no event lake at {self.uri}: create one with `rebuild lake ingest` or `rebuild lake sample`",
            uri=self.uri,
        )

    def _damaged(self, name: str, exc: DeltaError) -> LakeError:
        # a copy or restore that missed or cut off files of the log (an interrupted cp or rsync) leaves it so
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__  # not delta-rs' backtrace
        return LakeError(f"the Delta log of {self.table_uri(name)} cannot be read ({first}): a log entry is missing "
                         f"or cut off, as a copy or restore of the lake that did not finish leaves it; copy or restore "
                         f"the whole lake folder again (its _delta_log too). Nothing was read or written", uri=self.uri)

    # -- creation ----------------------------------------------------------------------------
    def create(self, buckets: int = DEFAULT_BUCKETS) -> Lake:
        """Create the empty tables (version 0) if they do not exist yet; idempotent."""
        if self.local is not None:
            if self.local.exists() and not self.local.is_dir():
                raise LakeError(f"the lake location {self.local} is a file: a lake is a folder, give another path",
                                uri=self.uri)
            self.local.mkdir(parents=True, exist_ok=True)
        description = json.dumps({"schema_version": SCHEMA_VERSION, "buckets": buckets})
        # the events' statistics columns, declared for other Delta writers and readers (lake.writer writes these)
        stats = {"delta.dataSkippingStatsColumns": ",".join(STATS_COLUMNS)}
        for name, schema, parts, configuration in (
            (EVENTS, STORED_SCHEMA, PARTITIONS, stats),
            (QUARANTINE, QUARANTINE_SCHEMA, None, None),
        ):
            if not self._is_table(name):
                # not an empty write_deltalake: its first call in a process costs ~0.25 s of set-up
                DeltaTable.create(
                    self.table_uri(name),
                    schema,
                    partition_by=parts,
                    mode="ignore",
                    description=description,
                    configuration=configuration,
                    storage_options=self.storage_options,
                )
        return self

    @property
    def buckets(self) -> int:
        """The lake's key-bucket count (fixed when the lake is created)."""
        if self._snapshots:
            return next(iter(self._snapshots.values())).buckets
        description = self._table(EVENTS).metadata().description or "{}"
        return int(json.loads(description).get("buckets", DEFAULT_BUCKETS))

    def buckets_of(self, partition_keys: Sequence[str]) -> list[int]:
        n = self.buckets
        return sorted({bucket_of(k, n) for k in partition_keys})

    # -- snapshots ---------------------------------------------------------------------------
    def snapshot(self, delta_version: int | None = None) -> Snapshot:
        """The events table at one Delta version (default: the latest), with its file list.

        Snapshots are immutable, so the last few versions read are kept (``KEPT_SNAPSHOTS``).
        """
        if delta_version is not None and delta_version in self._snapshots:
            # a pinned version never changes: no log read; kept as the most recently used
            self._snapshots[delta_version] = self._snapshots.pop(delta_version)
            return self._snapshots[delta_version]
        table = self._table(EVENTS, delta_version)
        cached = self._snapshots.get(table.version())
        if cached is not None:
            return cached
        description = json.loads(table.metadata().description or "{}")
        # through the C stream interface: pa.table() would first import pandas to look for a
        # DataFrame (~0.3 s of every command's start)
        actions = pa.RecordBatchReader.from_stream(table.get_add_actions(flatten=True)).read_all()
        files = tuple(_data_files(table, actions))
        lake_version = max((f.max_version for f in files), default=0)
        snapshot = Snapshot(
            delta_version=table.version(),
            lake_version=lake_version,
            buckets=int(description.get("buckets", DEFAULT_BUCKETS)),
            files=files,
            last_dedupe=table.transaction_version(DEDUPE_APP),
        )
        self._snapshots[snapshot.delta_version] = snapshot
        while len(self._snapshots) > KEPT_SNAPSHOTS:  # the least recently used first (dicts keep their order)
            del self._snapshots[next(iter(self._snapshots))]
        return snapshot

    def vacuum(self, retain_hours: int = RETAIN_HOURS, dry_run: bool = False) -> dict[str, dict[str, int]]:
        """Delete the files no snapshot of the last ``retain_hours`` reads (those compaction
        replaced, and those no commit took that are older: an ingest or compaction killed between
        writing its files and committing them, or one that lost the race for its version on an object
        store), in the events and quarantine tables; per table, the files (and bytes) deleted, or
        that would be with ``dry_run``. A snapshot older than that may miss files afterwards, so
        Delta refuses less than its retention (a week) unless the table's setting says less."""
        if not self.exists():
            raise LakeNotFound(f"no event lake at {self.uri}", uri=self.uri)
        found: dict[str, dict[str, int]] = {}
        with self.commit_lock():
            for name in (EVENTS, QUARANTINE):
                if not self._is_table(name):
                    continue
                table = self._table(name)
                try:
                    # full: also the files a commit never referenced (an ingest or compaction killed
                    # after writing them, or one that lost a race on S3); lite mode never deletes those
                    files = table.vacuum(retention_hours=retain_hours, dry_run=dry_run, full=True,
                                         commit_properties=_commit_properties("vacuum", None, None))
                except DeltaError as exc:  # a retention shorter than the table's
                    raise LakeError(f"cannot vacuum {self.table_uri(name)}: {exc}; keep at least the table's retention "
                                    "(a shorter one breaks readers of snapshots that old: plans made then, unfinished backfills)", uri=self.uri) from exc
                start = next((h for h in table.history(2) if h["operation"] == "VACUUM START"), {}) if files and not dry_run else {}
                # a full vacuum also lists (and deletes) the empty folder markers an upload made in a bucket
                data = [f for f in files if f.endswith(".parquet")]
                found[name] = {"files": len(data), "bytes": int(start.get("operationMetrics", {}).get("sizeOfDataToDelete", 0))}
        return found

    def history(self) -> list[dict[str, object]]:
        """Commits of the events table, newest first: version, timestamp (ms), operation."""
        return [
            {"version": h["version"], "timestamp": h["timestamp"], "operation": h["operation"]}
            for h in self._table(EVENTS).history()
        ]

    def commit_metadata(self, limit: int | None = None) -> list[tuple[int, dict[str, str]]]:
        """``(version, workbench.* custom metadata)`` of the events table's commits, newest first."""
        return [
            (int(h["version"]), {k: str(v) for k, v in h.items() if k.startswith("workbench.")})
            for h in self._table(EVENTS).history(limit)
        ]

    def position(self, app_id: str) -> int | None:
        """The position last committed for ``app_id`` with ``commit_files(position=...)`` (None: none).

        Read from the table's state, which checkpoints carry: no walk through the commit history, and
        Delta's deletion of old log entries (see ``version_at``) does not lose it."""
        return self._table(EVENTS).transaction_version(app_id)

    def version_at(self, when: datetime) -> int:
        """The last lake_version committed at or before ``when``: the newest event of the
        snapshot then (a compaction's commit adds no events, so its Delta version is none)."""
        ms = when.timestamp() * 1000
        history = self.history()
        versions = [
            int(h["version"])  # type: ignore[call-overload]
            for h in history
            if h["operation"] == "WRITE" and int(h["timestamp"]) <= ms  # type: ignore[call-overload]
        ]
        if versions:
            return self.snapshot(max(versions)).lake_version
        oldest = min(history, key=lambda h: int(h["version"]), default=None)  # type: ignore[call-overload]
        if oldest is not None and int(oldest["version"]) > 0:  # type: ignore[call-overload]
            # Delta deletes log entries older than its log retention (30 days) at each checkpoint
            start = commit_time(int(oldest["timestamp"]))  # type: ignore[call-overload]
            raise LakeError(
                f"{when.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC is older than the lake's commit log, which now starts "
                f"at Delta version {oldest['version']} ({start}): Delta removes log entries "
                "past their retention (delta.logRetentionDuration, 30 days by default), so what was archived by "
                "then is no longer known by time; give a lake_version instead", uri=self.uri)
        return 0

    # -- commits -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def commit_lock(self, timeout: float = 600.0) -> Iterator[None]:
        """Serialize commits so every commit's lake_version is known before it is written.

        Local lakes use an advisory file lock. Object stores have no lock: there each commit is
        pinned to the version it expects and put with S3's conditional write (``If-None-Match``,
        which delta-rs 1.x uses), so of two concurrent writers one commits and the other gets
        ``LakeBusy`` with nothing archived (see ``write``); rerunning it is safe (ingest is idempotent).
        """
        if self.local is None:
            yield
            return
        if not self.local.is_dir():
            raise self._not_found()
        path = self.local / "_commit.lock"
        with open(path, "a+") as handle:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise LakeBusy(
                            f"another process has been committing to {self.uri} for {timeout:.0f}s; "
                            "try again when it has finished",
                            uri=self.uri,
                        ) from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def next_version(self) -> int:
        return self._table(EVENTS).version() + 1

    def write(
        self,
        name: str,
        data: pa.RecordBatchReader | pa.Table,
        *,
        expected_version: int | None = None,
        mode: str = "append",
        predicate: str | None = None,
        operation: str = "ingest",
        metadata: dict[str, str] | None = None,
        writer_properties: WriterProperties | None = None,
    ) -> int:
        """One atomic Delta commit to ``name``; returns the version it got. Hold ``commit_lock``.

        ``metadata`` goes into the commit itself (Delta custom metadata), so a source position
        stored there is committed atomically with the events.

        With ``expected_version`` the commit is pinned: it is written against the table as of
        ``expected_version - 1`` with no commit retries, so it lands at ``expected_version`` or
        fails (``LakeBusy``) when another writer took that version first; delta-rs would
        otherwise retry an append at the next free version, under rows whose lake_version says
        otherwise. On S3 this is what makes concurrent ingests safe without a lock.
        """
        with self._pinned(name, expected_version) as target:
            write_deltalake(  # type: ignore[call-overload]
                target,
                data,
                mode=mode,
                predicate=predicate,
                partition_by=PARTITIONS if name == EVENTS else None,
                storage_options=self.storage_options,
                commit_properties=_commit_properties(operation, metadata, expected_version),
                writer_properties=writer_properties,
            )
        return expected_version if expected_version is not None else self._table(name).version()

    def commit_files(
        self,
        name: str,
        actions: Sequence[AddAction],
        *,
        expected_version: int | None = None,
        operation: str = "ingest",
        metadata: dict[str, str] | None = None,
        remove: Sequence[DataFile | QuarantineFile] = (),
        position: tuple[str, int] | None = None,
        data_change: bool = False,
    ) -> int:
        """One atomic Delta commit adding ``actions``' files, already written under the table's
        folder (see ``lake.writer``); pinned like ``write``. Hold ``commit_lock``. The same commit
        removes the files ``remove`` (compaction's, which adds the same events: no data change; with
        ``data_change``, dedupe's, whose new files lack some events: Delta readers that follow changes are told).
        ``position=(app_id, n)`` stores a source's position in the same commit as a Delta
        application transaction, which ``position(app_id)`` reads back.

        No actions make an empty commit: it still records ``metadata`` and ``position``."""
        schema = STORED_SCHEMA if name == EVENTS else QUARANTINE_SCHEMA
        with self._pinned(name, expected_version) as table:
            removed = _remove_actions(table, remove, data_change)
            table.create_write_transaction(
                [*actions, *removed],
                mode="append",
                schema=schema,
                partition_by=PARTITIONS if name == EVENTS else None,
                commit_properties=_commit_properties(operation, metadata, expected_version, position),
            )
        return expected_version if expected_version is not None else self._table(name).version()

    @contextlib.contextmanager
    def _pinned(self, name: str, expected_version: int | None) -> Iterator[DeltaTable]:
        """The table to commit to: as of ``expected_version - 1`` when pinned (with no retries,
        see ``_commit_properties``), else the latest; a lost race becomes ``LakeBusy``."""
        uri = self.table_uri(name)
        latest = self._latest.get(name)
        if expected_version is not None and latest is not None and latest.version() < expected_version - 1:
            # behind by this process's own commits (a commit leaves the kept table as it was): read
            # only the new log entries, not the whole log again at each of compaction's partitions
            latest.update_incremental()
        if expected_version is None or latest is None or latest.version() != expected_version - 1:
            latest = self._table(name, None if expected_version is None else expected_version - 1)
        # else the kept latest table is that version already (``next_version`` just refreshed it):
        # no new load of the log (~11 ms), and a commit that lost a race still fails below
        try:
            yield latest
        except CommitFailedError as exc:
            raise LakeBusy(
                f"another writer committed version {expected_version} of {uri} first; nothing of this "
                "commit was written: run the same command again (ingest and compaction are idempotent)",
                uri=uri,
            ) from exc

    def decoded_columns(self, paths: Sequence[str]) -> dict[str, frozenset[str]]:
        """The decoded payload columns (``lake.schema.decoded_column``, and ``decoding_column`` beside each since
        2026-11-25) each of ``paths`` carries, read from the footers of files marked as having some (cached: data files never change)."""
        return {p: frozenset(columns) for p, columns in self._footers(paths).items()}

    def worst_codes(self, paths: Sequence[str]) -> dict[str, dict[str, int | None]]:
        """Per file of ``paths``, each ``decoding_column`` it carries with the largest code its row groups'
        statistics give (0: every value read as itself; None: no value given, or no statistics): from the same
        cached footer read as ``decoded_columns``, so a run judges its files without reading them again."""
        return {p: {c: worst for c, worst in columns.items() if c.startswith("decoding:")}
                for p, columns in self._footers(paths).items()}

    def _footers(self, paths: Sequence[str]) -> dict[str, dict[str, int | None]]:
        wanted = [p for p in paths if DECODED_MARK in p.rsplit("/", 1)[-1] and p not in self._decoded]
        if wanted:
            con = self.attach(duckdb.connect())
            try:
                rows = con.sql(
                    "SELECT file_name, path_in_schema, max(TRY_CAST(stats_max_value AS INTEGER)) FILTER "
                    f"(starts_with(path_in_schema, 'decoding:')) FROM parquet_metadata({literal(wanted)}) WHERE "
                    "starts_with(path_in_schema, 'payload:') OR starts_with(path_in_schema, 'decoding:') GROUP BY ALL"
                ).fetchall()
            finally:
                con.close()
            found: dict[str, dict[str, int | None]] = {p: {} for p in wanted}
            for file, column, worst in rows:
                if file in found:
                    found[file][column] = worst
            self._decoded.update(found)
        return {p: self._decoded.get(p, {}) for p in paths}

    def split_decoded(self, paths: Sequence[str], columns: Iterable[str]) -> tuple[list[str], list[str]]:
        """``paths`` split in one pass: the files that carry every decoded column of ``columns``,
        and the others (whose payload a reader must parse)."""
        wanted = frozenset(columns)
        typed: list[str] = []
        plain: list[str] = []
        for path, carried in self.decoded_columns(paths).items():
            (typed if wanted <= carried else plain).append(path)
        return typed, plain

    def quarantine_table(self) -> DeltaTable:
        return self._table(QUARANTINE)

    def quarantine_files(self, version: int | None = None, keys: Sequence[str] | None = None,
                         event_ids: Sequence[str] | None = None, record_hashes: Sequence[str] | None = None) -> list[str]:
        """The quarantine table's files (at ``version``); given ``keys``, ``event_ids`` or ``record_hashes``, only
        those whose statistics may hold one of those partition keys, event ids or record hashes. An ingest that
        quarantines adds a file (until compaction merges them): a year of hourly ingests left thousands, which
        every check of a few keys opened (2.6 s at 2,700 files against 0.2 s at 45)."""
        table = self._table(QUARANTINE, version)
        paths = _file_paths(table)
        if (keys is None and event_ids is None and record_hashes is None) or not paths:
            return paths
        wanted = {"partition_key": sorted(set(keys or ())), "event_id": sorted(set(event_ids or ())),
                  "record_hash": sorted(set(record_hashes or ()))}
        actions = pa.RecordBatchReader.from_stream(table.get_add_actions(flatten=True)).read_all()
        stats = [f"{kind}.{column}" for column in wanted for kind in ("min", "max", "null_count")]
        rows = actions.select([c for c in ("path", "num_records", *stats) if c in actions.column_names]).to_pylist()
        held = {str(a["path"]).rsplit("/", 1)[-1]: any(_may_hold_values(a, c, v) for c, v in wanted.items()) for a in rows}
        return [p for p in paths if held.get(p.rsplit("/", 1)[-1], True)]

    def quarantine_data_files(self) -> tuple[int, list[QuarantineFile]]:
        """The quarantine table's latest Delta version and its files with their sizes, read together."""
        table = self._table(QUARANTINE)
        uris = {u.rsplit("/", 1)[-1]: u for u in _file_paths(table)}
        actions = pa.RecordBatchReader.from_stream(table.get_add_actions(flatten=True)).read_all()
        rows = actions.select(["path", "num_records", "size_bytes"]).to_pylist() if actions.num_rows else []
        return table.version(), [QuarantineFile(uris[str(a["path"]).rsplit("/", 1)[-1]], int(a["num_records"] or 0),
                                                int(a["size_bytes"])) for a in rows]

    def quarantine_snapshot(self) -> tuple[int, list[str]]:
        """The quarantine table's latest Delta version and its files, read together."""
        table = self._table(QUARANTINE)
        return table.version(), _file_paths(table)


def _commit_properties(operation: str, metadata: dict[str, str] | None, expected_version: int | None,
                       position: tuple[str, int] | None = None) -> CommitProperties:
    # a pinned commit must not be retried at the next free version (see ``Lake.write``)
    custom = {**(metadata or {}), "workbench.operation": operation}
    # a Delta txn action (appId, version): checkpoints keep the latest one per appId, commit metadata they do not
    transactions = None if position is None else [Transaction(*position)]
    return CommitProperties(custom_metadata=custom, max_commit_retries=None if expected_version is None else 0,
                            app_transactions=transactions)


def _file_paths(table: DeltaTable) -> list[str]:
    """The table's data files as readers open them. delta-rs percent-encodes the table's location in
    its URIs (a lake in ``/Users/Jane Doe/lake`` gave ``Jane%20Doe``, a path that does not exist), but
    not the files' own paths, which may hold a ``%`` themselves (DuckDB writes stream ``q?#`` as the
    folder ``stream=q%3F%23``): only the location is decoded."""
    encoded, location = _location(table)
    return [location + uri[len(encoded):] if uri.startswith(encoded) else uri for uri in table.file_uris()]


def _location(table: DeltaTable) -> tuple[str, str]:
    """The table's location as delta-rs writes it in its URIs (percent-encoded), and as a path."""
    encoded = table.table_uri.rstrip("/").removeprefix("file://")
    return encoded, unquote(encoded)


def _remove_actions(table: DeltaTable, files: Sequence[DataFile | QuarantineFile],
                    data_change: bool = False) -> list[RemoveAction]:
    """Remove actions of ``files`` (a snapshot's, so read by ``_file_paths``), named as add actions are: by
    the path under the table's folder as it is (delta-rs encodes it for the log). A path it does not know
    is removed silently, and the file's events would be read twice after compaction: so a file outside
    the table's folder is a bug, said at once."""
    location = _location(table)[1] + "/"
    now = int(time.time() * 1000)
    removed = []
    for f in files:
        if not f.path.startswith(location):
            raise LakeError(f"cannot remove {f.path}: it is not under {location} (a bug: report it)", file=f.path)
        removed.append(RemoveAction(f.path[len(location):], data_change=data_change, deletion_timestamp=now,
                                    size=f.size_bytes, partition_values=f.partition_values))
    return removed


def _data_files(table: DeltaTable, actions: pa.Table) -> Iterator[DataFile]:
    if actions.num_rows == 0:
        return
    uris = {u.rsplit("/", 1)[-1]: u for u in _file_paths(table)}

    def column(name: str) -> list[object]:
        if name not in actions.column_names:
            return [None] * actions.num_rows
        values = actions.column(name)
        if pa.types.is_timestamp(values.type):  # pyarrow would import pandas to convert these
            return [None if us is None else EPOCH + timedelta(microseconds=us)
                    for us in values.cast(pa.timestamp("us", "UTC")).cast(pa.int64()).to_pylist()]
        return values.to_pylist()

    for path, stream, bucket, rows, size, tmin, tmax, vmin, vmax, kmin, kmax in zip(
        column("path"),
        column("partition.stream"),
        column("partition.bucket"),
        column("num_records"),
        column("size_bytes"),
        column("min.event_time"),
        column("max.event_time"),
        column("min.lake_version"),
        column("max.lake_version"),
        column("min.partition_key"),
        column("max.partition_key"),
        strict=True,
    ):
        yield DataFile(
            path=uris[str(path).rsplit("/", 1)[-1]],
            stream=str(stream),
            bucket=int(bucket),  # type: ignore[call-overload]
            rows=int(rows or 0),  # type: ignore[call-overload]
            size_bytes=int(size),  # type: ignore[call-overload]
            min_time=tmin,  # type: ignore[arg-type]
            max_time=tmax,  # type: ignore[arg-type]
            min_version=int(vmin) if vmin is not None else 0,  # type: ignore[call-overload]
            max_version=int(vmax) if vmax is not None else 0,  # type: ignore[call-overload]
            min_key=kmin,  # type: ignore[arg-type]
            max_key=kmax,  # type: ignore[arg-type]
        )

