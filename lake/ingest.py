"""Archive input files into the lake: validate, de-duplicate, quarantine, commit atomically.

The whole input is staged in a DuckDB database that spills to disk (so inputs larger than memory
work), checked in SQL (vectorized: no Python per record), compared with what the lake already
holds for the same partition keys, and then written as one Delta commit. Records that cannot
become events are quarantined with their reason, source and line; nothing is dropped silently.
"""

from __future__ import annotations

import html
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from lake.errors import SourceError, empty_value, not_a_file
from lake.faults import point
from lake.jsontext import exact_members
from lake.formats import (LARGE_ROW, SUFFIXES, WRITE_BYTES, Rejected, detect_format, format_suffix,
                          parquet_metadata, parquet_rows_sql, parquet_widest_row, read_batches, slices)
from lake.mapping import Mapping
from lake import scratch
from lake.render import html_table
from lake.schema import QUARANTINE_SCHEMA, bucket_sql, stream_too_long
from lake.sql import literal
from lake.table import EVENTS, QUARANTINE, Lake
from lake.validate import Batch, validate_sql
from lake.writer import write_events

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestResult:
    """What one ingest did, in counts a job can log and a person can read."""

    stream: str | None
    files: tuple[str, ...]
    read: int
    archived: int
    duplicates: int
    quarantined: int
    lake_version: int
    seconds: float
    reasons: dict[str, int] = field(default_factory=dict)
    #: of ``quarantined``, the records an earlier ingest quarantined already (the same record, for the same
    #: reason): counted, as every record read is, but not stored again. The others are new in the quarantine
    already_quarantined: int = 0

    def to_dict(self) -> dict[str, object]:
        return {
            "stream": self.stream,
            "files": list(self.files),  # deprecated: `files` counts files everywhere else (plan, vacuum, audit)
            "inputs": list(self.files),
            "read": self.read,
            "archived": self.archived,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "already_quarantined": self.already_quarantined,
            "lake_version": self.lake_version,
            "seconds": round(self.seconds, 3),
            "quarantine_reasons": self.reasons,
        }

    def already(self) -> str:
        """What of the quarantined records is not new, said after their count: `` (2 of them already, by an
        earlier ingest: not stored again)``, or nothing."""
        if not self.already_quarantined:
            return ""
        return (f" ({'all' if self.already_quarantined == self.quarantined else self.already_quarantined} of them "
                "already, by an earlier ingest: not stored again)")

    def _repr_html_(self) -> str:
        """One line for notebooks, plus the quarantine reasons when something was refused."""
        line = (
            f"<p><b>Ingest</b> into stream <code>{html.escape(str(self.stream))}</code>: read {self.read:,} records "
            f"from {len(self.files)} file(s), archived {self.archived:,}, dropped {self.duplicates:,} duplicates, "
            f"quarantined {self.quarantined:,}{html.escape(self.already())} -&gt; lake_version {self.lake_version} "
            f"({self.seconds:.2f}s)</p>"
        )
        reasons = [{"quarantine reason": k, "records": v} for k, v in self.reasons.items()]
        return line + html_table(reasons, "records quarantined, per reason")


def ingest(
    lake: Lake,
    paths: Sequence[str | Path] | str | Path,
    *,
    stream: str | None = None,
    fmt: str | None = None,
    mapping: Mapping | None = None,
    batch_rows: int = 500_000,
    memory_limit: str = "2GB",
    temp_directory: str | None = None,
    ingested_at: datetime | None = None,
) -> IngestResult:
    """Archive ``paths`` into ``lake`` in one commit. Missing or unreadable files archive nothing.

    A folder stands for the data files under it (a foreign Parquet lake), in name order; one path
    may be given alone.
    """
    if isinstance(paths, str | os.PathLike):  # not the characters of one path
        paths = [paths]
    files = _expand([Path(p) for p in paths])
    for path in files:
        if not path.is_file():
            problem = not_a_file("input file", path) if path.exists() else f"input file {path} does not exist"
            raise SourceError(f"{problem}; nothing was archived", file=str(path))
    formats = [detect_format(p, fmt) for p in files]
    mapping = mapping or Mapping()
    paths = mapping.paths()
    if paths and set(formats) != {"ndjson"}:
        raise SourceError(f"mapping {mapping.name!r} reads JSON paths {paths}, which only NDJSON records have: map "
                          "the CSV or Parquet input's columns by name; nothing was archived")
    footers = {path: parquet_metadata(path) for path, f in zip(files, formats, strict=True) if f == "parquet"}
    for path, footer in footers.items():
        _check_columns(path, footer.schema.to_arrow_schema().names, mapping)
    batches = (
        batch
        for path, f in zip(files, formats, strict=True)
        for batch in _batches(path, f, batch_rows, mapping, footers.get(path))
    )
    return ingest_batches(
        lake,
        batches,
        stream=stream,
        mapping=mapping,
        sources=[str(p) for p in files],
        memory_limit=memory_limit,
        temp_directory=temp_directory,
        ingested_at=ingested_at,
    )


def ingest_batches(
    lake: Lake,
    batches: Iterable[Batch],
    *,
    stream: str | None,
    mapping: Mapping,
    sources: Sequence[str],
    memory_limit: str = "2GB",
    temp_directory: str | None = None,
    ingested_at: datetime | None = None,
    commit_metadata: dict[str, str] | None = None,
    position: tuple[str, int] | None = None,
) -> IngestResult:
    """Stage, check and commit raw batches from any source (files, a PostgreSQL table, ...).

    ``ingested_at`` defaults to now; the sample generator sets it to replay a simulated history.
    ``commit_metadata`` and ``position`` (a source's ``(name, position)``, see ``Lake.position``) are
    stored in the events commit itself; when nothing is archived they still get an (empty) events
    commit of their own, so they are never lost.
    """
    if stream is None and "stream" not in mapping.fields:
        raise SourceError("no stream given: pass --stream NAME or map a stream field")
    if stream is not None and not stream.strip():  # archived as a stream no projection reads
        raise SourceError(empty_value(f"--stream {stream!r}", "name the stream; nothing was archived"))
    if stream is not None and (too_long := stream_too_long(stream)):
        raise SourceError(f"--stream: {too_long}; nothing was archived", stream=stream)
    started = time.monotonic()
    lake.create()
    # removes the folders of killed ingests (their staged rows: gigabytes for a big file), compactions and spills
    with scratch.folder("ingest", temp_directory) as tmp:
        con = _connect(Path(tmp), memory_limit)
        read, cuts = _stage(con, batches, mapping, stream)
        with lake.commit_lock():
            version = lake.next_version()
            counts = _resolve(con, lake)
            point("ingest.before_commit")
            _commit(con, lake, version, counts, ingested_at or datetime.now(UTC), commit_metadata, position, Path(tmp),
                    cuts)
            point("ingest.after_commit")
        reasons = dict(
            con.sql("SELECT reason, count(*) FROM quarantine GROUP BY ALL ORDER BY ALL").fetchall()
        )
        con.close()
    result = IngestResult(
        stream=stream,
        files=tuple(sources),
        read=read,
        archived=counts["archived"],
        duplicates=counts["duplicates"],
        quarantined=sum(reasons.values()),
        already_quarantined=counts["already_quarantined"],
        lake_version=version if counts["archived"] else lake.snapshot().lake_version,
        seconds=time.monotonic() - started,
        reasons=reasons,
    )
    log.info(
        "ingested %s: %s archived, %s duplicates, %s quarantined, lake_version %s",
        ", ".join(sources) or "nothing",
        result.archived,
        result.duplicates,
        result.quarantined,
        result.lake_version,
    )
    return result


# -- reading -----------------------------------------------------------------------------------
def _expand(paths: list[Path]) -> list[Path]:
    """Folders become their data files (skipping ``_*`` and ``.*`` entries such as ``_delta_log``)."""
    files: list[Path] = []
    for path in paths:
        if not path.is_dir():
            files.append(path)
            continue
        found = sorted(
            f
            for f in path.rglob("*")
            if f.is_file()
            and format_suffix(f) in SUFFIXES
            and not any(part.startswith(("_", ".")) for part in f.relative_to(path).parts)
        )
        if not found:
            raise SourceError(f"folder {path} holds no NDJSON, CSV or Parquet file; nothing was archived", file=str(path))
        files.extend(found)
    return files


def _batches(path: Path, fmt: str, rows: int, mapping: Mapping, footer: pq.FileMetaData | None) -> Iterator[Batch]:
    """A Parquet file of several row groups as one batch DuckDB reads itself, unless a column the mapping
    reads is bytes (pyarrow checks them to be UTF-8 text) or its rows are large (staged in slices, see
    ``lake.formats.slices``); other inputs as pyarrow reads them, in ``rows``."""
    def tables() -> Iterator[pa.Table]:
        return _read_checked(path, fmt, rows, mapping)

    mapped = {*mapping.fields.values(), *mapping.metadata_fields}
    # DuckDB reads a file's row groups in parallel, one a thread: a file of one row group (pyarrow writes up to
    # 1M rows in one) is read on one thread, where pyarrow's batches are checked on all (1M events: 5% slower)
    if footer is not None and footer.num_row_groups > 1 and parquet_widest_row(footer) <= LARGE_ROW:
        schema = footer.schema.to_arrow_schema()
        if not any(f.name in mapped and _is_binary(f.type) for f in schema):
            # its columns until DuckDB describes it (not Schema.empty_table, which imports pandas)
            yield Batch(str(path), fmt, pa.Table.from_batches([], schema=schema), file=path, tables=tables)
            return
    for table in tables():
        yield Batch(str(path), fmt, table)


def _read_checked(path: Path, fmt: str, rows: int, mapping: Mapping) -> Iterator[pa.Table]:
    rejected: list[Rejected] = []
    first = True
    exact: dict[str, str] = {c: mapping.fields[c] for c in ("payload", "metadata") if c in mapping.fields}
    for table in read_batches(path, fmt, rows, rejected):
        if first and fmt == "csv":
            _check_columns(path, [c for c in table.column_names if c != "_line"], mapping)
        first = False
        if fmt == "parquet":
            yield _binary_as_text(path, table, mapping)
        else:
            yield exact_members(table, exact) if fmt == "ndjson" and "_rejected" not in table.column_names else table
    if rejected:
        yield pa.table(
            {
                "_line": pa.array([r.line for r in rejected], pa.int64()),
                "_rejected": pa.array([r.reason for r in rejected], pa.string()),
                "_raw": pa.array([r.record for r in rejected], pa.string()),
            }
        )


def _binary_as_text(path: Path, table: pa.Table, mapping: Mapping) -> pa.Table:
    """Impala, Hive and old Spark write text columns as plain binary (what Spark's binaryAsString is
    for): a column the mapping reads is UTF-8 text, not bytes to be shown as ``\\xC3\\x9C``."""
    mapped = {*mapping.fields.values(), *mapping.metadata_fields}
    for index, column in enumerate(table.schema):
        if column.name in mapped and _is_binary(column.type):
            try:
                table = table.set_column(index, column.name, table[column.name].cast(pa.large_string()))
            except pa.ArrowInvalid as exc:
                raise SourceError(f"column {column.name} of {path} holds bytes that are not UTF-8 text ({exc}): "
                                  "map another column, or convert this one; nothing was archived", file=str(path)) from exc
    return table


def _is_binary(kind: pa.DataType) -> bool:
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_binary_view(kind)


def _check_columns(path: Path, columns: Sequence[str], mapping: Mapping) -> None:
    missing = [f for f in mapping.required_sources() if f not in columns]
    if missing:
        raise SourceError(
            f"{path} has no column {missing} that mapping {mapping.name!r} needs "
            f"(it has {list(columns)}); fix the mapping with --map, nothing was archived",
            file=str(path),
        )


# -- staging -----------------------------------------------------------------------------------
def _connect(tmp: Path, memory_limit: str) -> duckdb.DuckDBPyConnection:
    # in memory, spilling to temp_directory past memory_limit: no WAL or checkpoint writes
    con = duckdb.connect(":memory:")
    con.execute("SET enable_progress_bar = false")
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"SET memory_limit = {literal(memory_limit)}")
    con.execute(f"SET temp_directory = {literal(str(tmp / 'spill'))}")
    # the partitioned write holds up to this many rows per thread and partition before it writes them:
    # DuckDB's 524,288 held a whole 10M-event input (16 buckets, 2 threads), which then spilled the
    # staged rows to disk (1.5 GB written at a 2GB limit; 0.5 GB, the lake's files included, with this)
    con.execute("SET partitioned_write_flush_threshold = 50000")
    con.execute(
        "CREATE TABLE staged (source INTEGER, line BIGINT, record VARCHAR, reason VARCHAR, "
        "event_id VARCHAR, stream VARCHAR, partition_key VARCHAR, sequence BIGINT, "
        "event_type VARCHAR, event_time TIMESTAMPTZ, schema_version INTEGER, payload VARCHAR, "
        "metadata VARCHAR)"
    )
    # each row names its source by number: a path repeated per row would cost a string per record
    con.execute("CREATE TABLE sources (source INTEGER PRIMARY KEY, name VARCHAR)")
    return con


def _stage(
    con: duckdb.DuckDBPyConnection, batches: Iterable[Batch], mapping: Mapping, stream: str | None
) -> tuple[int, list[int]]:
    """Stage every batch; returns the rows read and where the events' write cuts the staged rows
    (their rowids, in insertion order): none, unless the input holds large rows (see ``_commit``)."""
    read, size, cuts = 0, 0, list[int]()
    numbers: dict[str, int] = {}
    for batch in batches:
        if batch.source not in numbers:
            numbers[batch.source] = len(numbers)
            con.execute("INSERT INTO sources VALUES (?, ?)", [numbers[batch.source], batch.source])
        number = numbers[batch.source]
        tables: Iterable[pa.Table] = [batch.table]
        if batch.file is not None and batch.tables is not None:
            try:  # described as DuckDB reads it: the types validate_sql sees are the ones it casts
                con.execute(f"CREATE OR REPLACE TEMP VIEW raw AS {parquet_rows_sql(batch.file)}")
                read += _insert(con, replace(batch, table=con.sql("FROM raw LIMIT 0").to_arrow_table()), mapping,
                                stream, number)
                continue
            except (duckdb.InterruptException, duckdb.OutOfMemoryException):
                raise
            except duckdb.Error as exc:  # a failed statement inserted nothing; pyarrow says where it is damaged
                log.info("DuckDB cannot read %s (%s); reading it with pyarrow", batch.file, exc)
                tables = batch.tables()
            finally:
                con.execute("DROP VIEW IF EXISTS raw")
        for part, large in (part for table in tables for part in slices(table)):
            con.register("raw", part)
            read += _insert(con, replace(batch, table=part), mapping, stream, number)
            con.unregister("raw")
            size += part.nbytes if cuts or size or large else 0
            if size >= WRITE_BYTES:
                cuts.append(read)
                size = 0
    return read, cuts


def _insert(con: duckdb.DuckDBPyConnection, batch: Batch, mapping: Mapping, stream: str | None, source: int) -> int:
    return int(con.execute(f"INSERT INTO staged {validate_sql(batch, mapping, stream, source)}").fetchall()[0][0])


# -- de-duplication and conflicts --------------------------------------------------------------
def _resolve(con: duckdb.DuckDBPyConnection, lake: Lake) -> dict[str, int]:
    """Decide, on narrow columns only, which valid staged rows are not archived: table ``refused``
    lists them by rowid, with the event id holding their position for conflicts (NULL for
    duplicates); table ``quarantine`` gets the rejected rows and the conflicts.

    Most rows need no judging: an event id seen once in the input and not in the lake, at a
    position (stream, partition_key, sequence) seen once in the input and free in the lake, is
    archived. Only the others are judged, in ``_REFUSED``.
    """
    con.execute(
        "CREATE TABLE copied AS SELECT event_id FROM staged WHERE reason IS NULL GROUP BY ALL HAVING count(*) > 1"
    )
    con.execute(
        "CREATE TABLE contested AS SELECT stream, partition_key, sequence FROM staged "
        "WHERE reason IS NULL GROUP BY ALL HAVING count(*) > 1"
    )
    _load_existing(con, lake)
    to_judge = "(SELECT count(*) FROM copied) + (SELECT count(*) FROM contested) + (SELECT count(*) FROM existing)"
    if _scalar(con, f"SELECT {to_judge}"):
        con.execute(f"CREATE TABLE refused AS {_REFUSED}")
    else:
        con.execute("CREATE TABLE refused (rid BIGINT, holder VARCHAR)")
    con.execute(
        """
        CREATE TABLE quarantine AS
        SELECT stream, reason, n.name AS source, line, rtrim(record, chr(13) || chr(10)) AS record, event_id,
               partition_key, sequence, event_type, event_time
        FROM staged JOIN sources n USING (source) WHERE reason IS NOT NULL
        UNION ALL
        SELECT s.stream,
               'conflict: partition_key ' || s.partition_key || ' sequence ' || s.sequence ||
               ' already belongs to event ' || r.holder, n.name, s.line,
               rtrim(s.record, chr(13) || chr(10)), s.event_id,
               s.partition_key, s.sequence, s.event_type, s.event_time
        FROM staged s JOIN refused r ON s.rowid = r.rid JOIN sources n USING (source) WHERE r.holder IS NOT NULL"""
    )
    valid, refused, duplicates = con.sql(
        "SELECT (SELECT count(*) FROM staged WHERE reason IS NULL), (SELECT count(*) FROM refused), "
        "(SELECT count(*) FROM refused WHERE holder IS NULL)"
    ).fetchall()[0]
    return {"archived": valid - refused, "duplicates": duplicates}


# The rows that share an event id or a position with another row or with the lake, judged:
# ``rowid`` follows staging order (source, then line), so the first copy of an event wins (the
# others are duplicates, as are events the lake holds); a position taken in the lake keeps its
# event; inside the input the smallest event_id takes it, whatever the order the input came in.
_REFUSED = """
    WITH looked AS (
        SELECT rowid AS rid, event_id, stream, partition_key, sequence FROM staged
        WHERE reason IS NULL AND event_id IN (SELECT event_id FROM copied UNION ALL SELECT event_id FROM existing)
        UNION
        SELECT s.rowid AS rid, event_id, stream, partition_key, sequence FROM staged s
        SEMI JOIN (SELECT stream, partition_key, sequence FROM contested
                   UNION ALL SELECT stream, partition_key, sequence FROM existing)
            USING (stream, partition_key, sequence)
        WHERE reason IS NULL),
    fresh AS (
        SELECT * FROM looked WHERE rid IN (SELECT min(rid) FROM looked GROUP BY event_id)
        AND event_id NOT IN (SELECT event_id FROM existing)),
    taken AS (SELECT stream, partition_key, sequence, min(event_id) AS holder FROM existing GROUP BY ALL),
    first AS (SELECT stream, partition_key, sequence, min(event_id) AS holder FROM fresh GROUP BY ALL),
    judged AS (
        SELECT f.rid, f.event_id, coalesce(t.holder, first.holder) AS holder
        FROM fresh f
        LEFT JOIN taken t USING (stream, partition_key, sequence)
        JOIN first USING (stream, partition_key, sequence))
    SELECT rid, CAST(NULL AS VARCHAR) AS holder FROM looked WHERE rid NOT IN (SELECT rid FROM fresh)
    UNION ALL
    SELECT rid, holder FROM judged WHERE holder <> event_id"""


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    return int(con.sql(sql).fetchall()[0][0])


def _load_existing(con: duckdb.DuckDBPyConnection, lake: Lake) -> None:
    """The lake events that share an event id or a position with a valid input row: the only ones
    the judging needs (every lake event at such a position is kept, so its holder is known).

    Only files of the touched buckets whose key range holds one of the input's keys are read
    (time-ordered ids skip old commits' files), and nothing at all, not even the input's key list,
    for a lake without events. The lake's other events of the input's keys are dropped while
    reading, so the judging grows with the batch and its matches, not with the keys' history."""
    con.execute("CREATE TABLE existing (event_id VARCHAR, stream VARCHAR, partition_key VARCHAR, sequence BIGINT)")
    in_lake = lake.snapshot().files
    if not in_lake:
        return
    con.execute("CREATE TABLE keys AS SELECT DISTINCT stream, partition_key FROM staged WHERE reason IS NULL")
    # every stream's files of the touched buckets: an event id is unique across streams, so the same event
    # archived under another stream is a duplicate here as it is within one input (the split must not matter)
    touched = {b for (b,) in con.sql(f"SELECT DISTINCT {bucket_sql('partition_key', lake.buckets)} FROM keys").fetchall()}
    # sorted by DuckDB (binary order, as Python compares text), handed over as one Arrow column
    keys = con.sql("SELECT DISTINCT partition_key FROM keys ORDER BY 1").to_arrow_table().column(0).to_pylist()
    files = [f.path for f in in_lake if f.bucket in touched and f.may_hold_any(keys)]
    if not files:
        return
    lake.attach(con)  # the lake may be on an object store: lake.storage gives DuckDB its files
    con.execute(
        f"""
        INSERT INTO existing
        SELECT event_id, stream, partition_key, sequence
        FROM read_parquet({literal(files)}, hive_partitioning = true, hive_types = {{'stream': VARCHAR, 'bucket': INTEGER}})
        WHERE partition_key IN (SELECT partition_key FROM keys)
          AND (event_id IN (SELECT event_id FROM staged WHERE reason IS NULL)
               OR (stream, partition_key, sequence) IN
                  (SELECT stream, partition_key, sequence FROM staged WHERE reason IS NULL))"""
    )


# -- commit ------------------------------------------------------------------------------------
def _commit(
    con: duckdb.DuckDBPyConnection,
    lake: Lake,
    version: int,
    counts: dict[str, int],
    now: datetime,
    metadata: dict[str, str] | None,
    position: tuple[str, int] | None,
    staging: Path,
    cuts: Sequence[int] = (),
) -> None:
    """Quarantine first (de-duplicated by record hash), then the events as one commit.

    With nothing archived there is no events commit, unless ``metadata`` or a source ``position``
    must still be committed: then it gets an empty one. The events are written in one statement, or,
    for an input of large rows, one per part of the staged rows between ``cuts``: DuckDB holds 2,048
    rows at a time, and 150 payloads of 4 MB written at once took twice their size in memory."""
    counts["already_quarantined"] = _commit_quarantine(con, lake, version, now)
    point("ingest.after_quarantine")
    if counts["archived"] == 0 and not metadata and position is None:
        return
    actions = []
    if counts["archived"]:
        # no sort: DuckDB splits the rows by partition, and compaction sorts files by key later;
        # the MD5 bucket is computed once per key, not per event (a key has ~10 events here)
        buckets = (
            f"SELECT partition_key, {bucket_sql('partition_key', lake.buckets)} AS bucket "
            "FROM (SELECT DISTINCT partition_key FROM staged WHERE reason IS NULL)"
        )
        accepted = (
            f"SELECT s.*, {literal(now)} AS ingested_at, CAST({version} AS BIGINT) AS lake_version, b.bucket "
            f"FROM staged s JOIN ({buckets}) b USING (partition_key) "
            "WHERE s.reason IS NULL AND s.rowid NOT IN (SELECT rid FROM refused)"
        )
        bounds = [0, *cuts, None]
        parts = [f" AND s.rowid >= {low}" + ("" if high is None else f" AND s.rowid < {high}")
                 for low, high in zip(bounds, bounds[1:], strict=False)] if cuts else [""]
        actions = [action for part in parts for action in write_events(con, accepted + part, lake, staging)]
    # the audit sums these: duplicates are dropped here, so only the commit remembers them
    metadata = {**(metadata or {}), "workbench.duplicates": str(counts["duplicates"])}
    lake.commit_files(EVENTS, actions, expected_version=version, metadata=metadata, position=position)


#: what tells a quarantined record from another: a record quarantined again for the same reason is not stored twice
RECORD_HASH = "md5(coalesce(stream, '') || chr(31) || reason || chr(31) || coalesce(record, ''))"


def _commit_quarantine(con: duckdb.DuckDBPyConnection, lake: Lake, version: int, now: datetime) -> int:
    """Store the quarantined records the quarantine does not hold yet; returns how many it held already."""
    table = con.sql(
        f"SELECT *, {RECORD_HASH} AS record_hash, {literal(now)} AS ingested_at, "
        f"CAST({version} AS BIGINT) AS lake_version FROM quarantine"
    ).to_arrow_table()
    return store_quarantine(con, lake, table)


def store_quarantine(con: duckdb.DuckDBPyConnection, lake: Lake, table: pa.Table) -> int:
    """Write the rows of ``table`` (the quarantine's columns, ``record_hash`` as ``RECORD_HASH``) that the
    quarantine does not hold yet, in one commit; returns how many it held already. Hold ``commit_lock``."""
    if table.num_rows == 0:
        return 0
    refused = table.num_rows
    # an ingest's file holding one record (or a few) has a narrow hash range: most files are never opened
    files = lake.quarantine_files(record_hashes=table.column("record_hash").to_pylist())
    if files:
        lake.attach(con)  # the lake may be on an object store: lake.storage gives DuckDB its files
        known = con.sql(f"SELECT DISTINCT record_hash FROM read_parquet({literal(files)})").to_arrow_table()
        con.register("known", known)
        con.register("incoming", table)
        table = con.sql(
            "SELECT * FROM incoming WHERE record_hash NOT IN (SELECT record_hash FROM known)"
        ).to_arrow_table()
    if table.num_rows:
        lake.write(QUARANTINE, table.select(QUARANTINE_SCHEMA.names).cast(QUARANTINE_SCHEMA))
    return refused - table.num_rows
