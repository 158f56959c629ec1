"""Removing events archived twice: the later copies of each event id, in one Delta commit.

Ingest never archives an event id twice, but earlier versions did for keys with characters beyond U+FFFF
(deltalake misread their key statistics), and every replay applied both copies. ``dedupe`` keeps each id's
first archived copy: the lowest ``lake_version``, the one every view and catch-up read first (then the
lowest sequence, stream, file and row, so that the choice does not depend on the order files are listed in). The
files holding later copies are rewritten without them by compaction's rewrite, in one commit pinned to the
snapshot read, under the lake's commit lock; rows keep their ``lake_version``. A later copy whose content
differs from the kept one goes to the quarantine first, naming the columns that differ: nothing is lost.

Before its commit, a dedupe records in the lake (``_dedupe/DELTA_VERSION.parquet``: the copies' partition keys,
and per stream and event type the lowest lake_version of a removed copy) what it removed, and its commit sets the
Delta application transaction ``workbench.dedupe`` (``DEDUPE_APP``) to its own version, which each snapshot knows
(``Snapshot.last_dedupe``). A view's plan (``rebuild.dedupe``) reads the records of the dedupes committed since its
live was built, on any machine reading the lake; a record above the snapshot's last dedupe is one whose commit never
happened (a kill, or another writer took its version), which readers ignore and the next dedupe deletes. A file,
not the commit's metadata: 100,000 keys are 1.5 MB of JSON in the Delta log, which every history read and, until a
checkpoint, every load of the log would read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from lake import storage
from lake.compact import rewrite
from lake.errors import LakeError
from lake.faults import point
from lake.ingest import RECORD_HASH, store_quarantine
from lake.read import EventFilter, damaged_named, read_events
from lake.schema import ENVELOPE_COLUMNS, FIRST_COPY, decoded_field
from lake.sql import literal, quote
from lake.table import DEDUPE_APP, EVENTS, DataFile, Lake, Snapshot

log = logging.getLogger(__name__)

#: what a copy must repeat of the kept one to be the same event (ingested_at and lake_version are the copy's own)
CONTENT = ("stream", "partition_key", "sequence", "event_type", "event_time", "schema_version", "payload", "metadata")
REASON = "archived twice"  # the quarantine reason's first words, which the audit groups reasons by
RECORDS = "_dedupe"  # the folder, under the lake's root, of what each dedupe removed


@dataclass(frozen=True)
class DedupeResult:
    """What ``dedupe`` found and removed; ``keys`` are the partition keys of every copy of those ids."""

    delta_version: int | None  # the commit that removed them (None: a dry run, or nothing to remove)
    lake_version: int  # the lake's lake_version after it (rows keep theirs)
    duplicated_ids: int
    removed: int
    quarantined: int  # of ``removed``, copies whose content differs from the kept one
    files_rewritten: int
    first_version: int | None  # the lowest lake_version of a removed copy: views built before it applied none
    keys: tuple[str, ...]
    streams: tuple[str, ...]
    event_types: tuple[str, ...]
    dry_run: bool
    seconds: float
    keys_file: str | None = None  # where ``keys`` were written, before the commit (``keys_dir``)
    record: str | None = None  # the lake's record of what the commit removed (``records``)
    #: (stream, event_type, the lowest lake_version of a removed copy of them): which views read one
    first_of: tuple[tuple[str, str, int], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The fields in their order, ``keys`` counted as ``partition_keys`` in its place (the list is ``keys_file``)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "first_of"}
        data = {("partition_keys" if k == "keys" else k): (len(v) if k == "keys" else v) for k, v in data.items()}
        data["seconds"] = round(self.seconds, 3)
        return data


@dataclass(frozen=True)
class Deduped:
    """What the dedupe committed at ``delta_version`` removed, as recorded in the lake (see ``records``)."""

    delta_version: int
    keys: tuple[str, ...]  # the partition keys of every copy of the ids it removed copies of
    first_of: tuple[tuple[str, str, int], ...]  # as ``DedupeResult.first_of``
    quarantined: int  # removed copies whose content differed from the copy kept


def dedupe(lake: Lake, *, dry_run: bool = False, con: duckdb.DuckDBPyConnection | None = None,
           keys_dir: Path | None = None) -> DedupeResult:
    """Remove the later copies of every event id the latest snapshot holds more than once (see the module's
    docstring); with ``dry_run`` only find them. ``con`` as for ``lake.compact.compact``. Before the commit,
    what it removes is recorded in the lake (``records``) and, given ``keys_dir``, the copies' partition keys
    are written there too (``dedupe-VERSION-keys.txt``, one per line, for ``--keys-file``). A second run finds
    nothing and commits nothing. Under the commit lock, an ingest or compaction waits for it, or it for them;
    on an object store a writer that committed meanwhile makes it fail with ``LakeBusy``, nothing removed."""
    started = time.monotonic()
    with lake.commit_lock(), contextlib.closing(storage.session(con)) as session:
        snapshot = lake.snapshot()
        with damaged_named([f.path for f in snapshot.files], "nothing was removed"):
            return _dedupe(lake, snapshot, session, dry_run, started, keys_dir)


def _dedupe(lake: Lake, snapshot: Snapshot, session: duckdb.DuckDBPyConnection, dry_run: bool,
            started: float, keys_dir: Path | None) -> DedupeResult:
    """The copies of ``snapshot`` found, and removed unless ``dry_run``."""
    keys = _duplicated_keys(lake, snapshot, session)
    log.info("found %s partition keys holding an event id more than once in %.1fs", len(keys), time.monotonic() - started)
    later = _copies(lake, snapshot, keys, session) if keys else None
    if later is not None:
        log.info("found %s later copies in %s files in %.1fs", later.num_rows,
                 len(set(later.column("filename").to_pylist())), time.monotonic() - started)
    if later is None or later.num_rows == 0:
        return _result(snapshot.lake_version, None, keys, later, session, dry_run, started)
    if dry_run:
        return _result(_version_after(snapshot, later, session), None, keys, later, session, dry_run, started)
    quarantined = _quarantine(lake, session)
    log.info("quarantined %s later copies whose content differs from the copy kept", quarantined)
    point("dedupe.after_quarantine")
    version = snapshot.delta_version + 1  # the commit is pinned to it
    found = _result(snapshot.lake_version, version, keys, later, session, dry_run, started)
    record = _record(lake, snapshot, found)
    point("dedupe.after_record")
    keys_file = None if keys_dir is None else keys_dir / f"dedupe-{version}-keys.txt"
    if keys_file is not None:
        # as --keys-file reads them, which drops a byte order mark at the start: a first key beginning with
        # U+FEFF (a character of the key) gets a mark of its own before it
        bom = "\ufeff" if keys and keys[0].startswith("\ufeff") else ""
        keys_file.write_text(bom + "".join(f"{k}\n" for k in keys), encoding="utf-8")
    try:
        rewritten = _remove(lake, snapshot, later, session, record)
    except BaseException:
        if keys_file is not None:
            keys_file.unlink(missing_ok=True)  # no commit: the keys of no dedupe (its record readers ignore)
        raise
    point("dedupe.after_commit")
    log.info("removed %s later copies in %s files (%s quarantined)", later.num_rows, rewritten, quarantined)
    return dataclasses.replace(found, lake_version=lake.snapshot().lake_version, seconds=time.monotonic() - started,
                               keys_file=None if keys_file is None else str(keys_file), record=record)


def records(lake: Lake, after: int, snapshot: Snapshot) -> list[Deduped]:
    """The records of the dedupes committed after Delta version ``after``, up to ``snapshot``, oldest first
    (the last one's may be missing: deleted by hand). Reads nothing when none did (the snapshot knows its last
    dedupe commit)."""
    last = snapshot.last_dedupe
    if last is None or last <= after:
        return []
    fs, root = _records_dir(lake)
    found = [_read_record(fs, f.path, n) for f, n in _listed(fs, root) if after < n <= last]
    return sorted(found, key=lambda r: r.delta_version)


def _records_dir(lake: Lake) -> tuple[pafs.FileSystem, str]:
    fs, root = storage.pyarrow_filesystem(lake.uri, lake.storage_options)
    return fs, f"{root}/{RECORDS}"


def _listed(fs: pafs.FileSystem, root: str) -> list[tuple[pafs.FileInfo, int]]:
    """The record files under ``root`` and the Delta version each names."""
    infos = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    return [(f, int(f.base_name.removesuffix(".parquet"))) for f in infos
            if f.base_name.endswith(".parquet") and f.base_name.removesuffix(".parquet").isdigit()]


def _record(lake: Lake, snapshot: Snapshot, found: DedupeResult) -> str:
    """Write ``found`` as the record of its commit (``records``), first deleting those of commits that never
    happened (above the last dedupe commit of ``snapshot``, the one the commit follows); returns its location."""
    assert found.delta_version is not None
    fs, root = _records_dir(lake)
    last = snapshot.last_dedupe
    for info, n in _listed(fs, root):
        if last is None or n > last:
            fs.delete_file(info.path)
    if lake.local is not None:
        fs.create_dir(root, recursive=True)
    described = json.dumps({"first_of": found.first_of, "quarantined": found.quarantined})
    table = pa.table({"partition_key": pa.array(found.keys, pa.string())})
    pq.write_table(table.replace_schema_metadata({DEDUPE_APP: described}), f"{root}/{found.delta_version}.parquet",
                   filesystem=fs)
    return f"{lake.uri}/{RECORDS}/{found.delta_version}.parquet"


def _read_record(fs: pafs.FileSystem, path: str, version: int) -> Deduped:
    table = pq.read_table(path, filesystem=fs)
    described = json.loads((table.schema.metadata or {})[DEDUPE_APP.encode()])
    return Deduped(delta_version=version, keys=tuple(table.column("partition_key").to_pylist()),
                   first_of=tuple((s, t, int(v)) for s, t, v in described["first_of"]),
                   quarantined=int(described["quarantined"]))


def _duplicated_keys(lake: Lake, snapshot: Snapshot, con: duckdb.DuckDBPyConnection) -> list[str]:
    """The partition keys of every event id held more than once: one pass over two columns, as the audit's count."""
    con.register("__events", read_events(lake, EventFilter(), snapshot=snapshot, con=con))
    rows = con.sql("""
        WITH held AS (SELECT event_id, partition_key, count(*) AS n FROM __events GROUP BY ALL)
        SELECT DISTINCT partition_key FROM held
        WHERE event_id IN (SELECT event_id FROM held GROUP BY event_id HAVING sum(n) > 1)
        ORDER BY ALL""").fetchall()  # fmt: skip
    return [r[0] for r in rows]


def _copies(lake: Lake, snapshot: Snapshot, keys: list[str], con: duckdb.DuckDBPyConnection) -> pa.Table:
    """Table ``copies``: every copy of the duplicated ids, from the files those keys' statistics allow, with its
    file and row, its rank (``nth``, 1 kept), the kept copy's lake_version and the content columns that differ.
    Returns where the later copies (``nth > 1``) are: stream, bucket, filename and file_row_number."""
    paths = [f.path for f in EventFilter(partition_keys=tuple(keys)).files(snapshot, lake)]
    columns = ", ".join(quote(c) for c in ENVELOPE_COLUMNS)
    differs = ", ".join(f"CASE WHEN {quote(c)} IS DISTINCT FROM first_value({quote(c)}) OVER w THEN {literal(c)} END"
                        for c in CONTENT)
    con.execute(f"""
        CREATE TEMP TABLE copies AS
        WITH read AS (
            SELECT {columns}, bucket, filename, file_row_number
            FROM read_parquet({literal(paths)}, hive_partitioning = true, filename = true, file_row_number = true,
                              hive_types = {{'stream': VARCHAR, 'bucket': INTEGER}})),
        twice AS (SELECT * FROM read WHERE event_id IN (SELECT event_id FROM read GROUP BY 1 HAVING count(*) > 1))
        SELECT *, row_number() OVER w AS nth, first_value(lake_version) OVER w AS kept_version,
               list_filter([{differs}], lambda c: c IS NOT NULL) AS differs
        FROM twice WINDOW w AS (PARTITION BY event_id ORDER BY {FIRST_COPY}, filename, file_row_number)""")
    # where each later copy is, not its payload: the rest stays in DuckDB, which spills, not in Python's memory
    return con.sql("SELECT stream, bucket, filename, file_row_number FROM copies WHERE nth > 1").to_arrow_table()


def _quarantine(lake: Lake, con: duckdb.DuckDBPyConnection) -> int:
    """The later copies that differ from the kept one, stored in the quarantine (once, also if rerun after a kill
    before the events commit); returns how many differ."""
    envelope = ", ".join(quote(c) for c in ENVELOPE_COLUMNS)
    reason = (f"'{REASON}: removed by rebuild lake dedupe, as it differs from the copy kept (lake_version ' || "
              "kept_version || ') in ' || array_to_string(differs, ', ')")
    table = con.sql(f"""
        SELECT stream, reason, source, line, record, event_id, partition_key, sequence, event_type, event_time,
               {RECORD_HASH} AS record_hash, {literal(datetime.now(UTC))} AS ingested_at, lake_version
        FROM (SELECT *, {reason} AS reason, filename AS source, file_row_number + 1 AS line,
                     CAST(to_json(struct_pack({envelope})) AS VARCHAR) AS record
              FROM copies WHERE nth > 1 AND len(differs) > 0)""").to_arrow_table()  # fmt: skip
    store_quarantine(con, lake, table)
    return table.num_rows


def _remove(lake: Lake, snapshot: Snapshot, later: pa.Table, con: duckdb.DuckDBPyConnection, record: str) -> int:
    """The files holding ``later`` copies rewritten without them, a partition's as one file, in one commit."""
    by_path = {f.path: f for f in snapshot.files}
    dropped: dict[tuple[str, int], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for stream, bucket, path, row in zip(*(later.column(c).to_pylist() for c in
                                           ("stream", "bucket", "filename", "file_row_number")), strict=True):
        if path not in by_path:
            raise LakeError(f"cannot rewrite {path}: not a file of the snapshot read (a bug: report it)", file=path)
        dropped[(stream, bucket)][path].append(row)
    actions, removed = [], []
    for (stream, bucket), rows in sorted(dropped.items()):
        files: list[DataFile] = [by_path[p] for p in sorted(rows)]
        removed += files
        if sum(f.rows for f in files) == sum(map(len, rows.values())):  # nothing but copies: replaced by no file
            continue  # (not written either: a file no commit adds stays on disk until a vacuum)
        drop = pa.table({"filename": [p for p, r in rows.items() for _ in r],
                         "file_row_number": pa.array([n for r in rows.values() for n in r], pa.int64())})
        action = rewrite(lake, stream, bucket, files, _carried(lake, files), con, drop=drop)
        if json.loads(action.stats or "{}").get("numRecords"):  # files without row counts in their statistics
            actions.append(dataclasses.replace(action, data_change=True))
    version = snapshot.delta_version + 1
    lake.commit_files(EVENTS, actions, expected_version=version, operation="dedupe", remove=removed,
                      data_change=True, position=(DEDUPE_APP, version),
                      metadata={"workbench.dedupe.removed": str(later.num_rows), "workbench.dedupe.record": record})
    return len(removed)


def _carried(lake: Lake, files: list[DataFile]) -> list[tuple[str, str]]:
    """The decoded payload columns the files carry (compaction's), which their rewrite keeps."""
    columns = set().union(*lake.decoded_columns([f.path for f in files]).values())
    return sorted(decoded_field(c) for c in columns if c.startswith("payload:"))


def _version_after(snapshot: Snapshot, later: pa.Table, con: duckdb.DuckDBPyConnection) -> int:
    """The lake's lake_version once the ``later`` copies are gone (a dry run's): its newest event's but theirs."""
    touched = set(later.column("filename").to_pylist())
    kept = [f.max_version for f in snapshot.files if f.path not in touched]
    con.register("__later", later.select(["filename", "file_row_number"]))
    [(newest,)] = con.sql(f"""
        SELECT max(lake_version) FROM read_parquet({literal(sorted(touched))}, filename = true, file_row_number = true)
        ANTI JOIN __later USING (filename, file_row_number)""").fetchall()  # fmt: skip
    return max([*kept, *([newest] if newest is not None else [])], default=0)


def _result(lake_version: int, version: int | None, keys: list[str], later: pa.Table | None,
            con: duckdb.DuckDBPyConnection, dry_run: bool, started: float) -> DedupeResult:
    found = later is not None and later.num_rows > 0
    counts = con.sql("""
        SELECT count(DISTINCT event_id), count(*) FILTER (nth > 1 AND len(differs) > 0),
               count(DISTINCT filename) FILTER (nth > 1),
               list(DISTINCT stream ORDER BY stream), list(DISTINCT event_type ORDER BY event_type)
        FROM copies""").fetchall()[0] if found else (0, 0, 0, [], [])  # fmt: skip
    ids, quarantined, files, streams, types = counts
    first_of = con.sql("SELECT stream, event_type, min(lake_version) FROM copies WHERE nth > 1 GROUP BY ALL "
                       "ORDER BY ALL").fetchall() if found else []
    first = min((version for _, _, version in first_of), default=None)  # the lowest of a removed copy
    return DedupeResult(
        delta_version=version, lake_version=lake_version, duplicated_ids=ids,
        removed=later.num_rows if found and later is not None else 0, quarantined=quarantined,
        files_rewritten=files, first_version=first, keys=tuple(keys) if found else (), streams=tuple(streams),
        event_types=tuple(types), dry_run=dry_run, seconds=time.monotonic() - started, first_of=tuple(first_of),
    )
