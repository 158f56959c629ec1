"""Shared factories: a lake from a list of event dicts, files in every input format."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
from deltalake import DeltaTable

import lake

T0 = datetime(2024, 3, 1, tzinfo=UTC)
CHECKOUT_REPORTS = Path(__file__).resolve().parent.parent / "reports"


@pytest.fixture(scope="session", autouse=True)
def _no_reports_in_the_checkout() -> Iterable[None]:
    """A test that checks a view writes its report under its tmp_path: a Workbench made from a
    Config without ``reports_dir`` writes to ./reports, the checkout's, where reports pile up."""
    before = set(CHECKOUT_REPORTS.rglob("*"))
    yield
    written = sorted(set(CHECKOUT_REPORTS.rglob("*")) - before)
    assert not written, f"tests wrote reports into the checkout: {[str(p) for p in written[:5]]}"


def event(
    n: int,
    *,
    key: str = "o1",
    seq: int | None = None,
    type: str = "OrderPlaced",
    at: datetime | None = None,
    payload: dict[str, object] | None = None,
    stream: str | None = None,
) -> dict[str, object]:
    """One valid envelope record (without lake-assigned columns)."""
    record: dict[str, object] = {
        "event_id": f"e{n}",
        "partition_key": key,
        "sequence": n if seq is None else seq,
        "event_type": type,
        "event_time": (at or T0 + timedelta(minutes=n)).isoformat(),
        "payload": payload if payload is not None else {"n": n},
    }
    if stream is not None:
        record["stream"] = stream
    return record


def write_ndjson(path: Path, records: Iterable[object]) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n")
    return path


def logging_files() -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that logs every file its database (and its cursors) open: see ``files_opened``."""
    con = duckdb.connect()
    con.execute("CALL enable_logging('FileSystem')")
    return con


def files_opened(con: duckdb.DuckDBPyConnection, suffix: str = ".parquet") -> Counter[str]:
    """How often each file was opened on ``con``'s database since ``logging_files``: tests count the work
    of a lake of many small files in files opened, never in seconds (DuckDB opens a file twice a scan)."""
    logged = (json.loads(m) for (m,) in con.sql("SELECT message FROM duckdb_logs WHERE type = 'FileSystem'").fetchall())
    return Counter(e["path"] for e in logged if e["op"] == "OPEN" and e["path"].endswith(suffix))


def archive_unchecked(target: lake.Lake, events: Iterable[tuple[str, str, int, str]], stream: str = "orders") -> int:
    """Commit ``(event_id, partition_key, sequence, event_time)`` events as they are, written as ingest writes
    its files but with no validation: a lake as an older version left it (event times such as 'infinity' or
    year 20260, which ingest quarantines now). Returns the commit's lake_version."""
    from lake.schema import bucket_of
    from lake.table import EVENTS
    from lake.writer import write_events

    version = target.next_version()
    rows = [(e, stream, k, s, "OrderPlaced", t, version, bucket_of(k, target.buckets)) for e, k, s, t in events]
    con = duckdb.connect()
    con.execute("CREATE TABLE given (event_id VARCHAR, stream VARCHAR, partition_key VARCHAR, sequence BIGINT, "
                "event_type VARCHAR, event_time VARCHAR, lake_version BIGINT, bucket INTEGER)")
    con.executemany("INSERT INTO given VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
    select = ("SELECT * REPLACE (CAST(event_time AS TIMESTAMPTZ) AS event_time), now() AS ingested_at, "
              "1 AS schema_version, '{}' AS payload, NULL AS metadata FROM given")
    with target.commit_lock():
        target.commit_files(EVENTS, write_events(con, select, target, target.local or Path()), expected_version=version)
    con.close()
    return version


def archive_again(target: lake.Lake, event_ids: Iterable[str], payload: str | None = None,
                  stream: str | None = None) -> int:
    """Commit the lake's events ``event_ids`` once more at the next lake_version, as ingest did before 2026-11-25
    for keys beyond U+FFFF (it looked for their duplicates in no file); ``payload`` replaces theirs (a copy that
    differs), ``stream`` their stream (a copy under another stream, as a lake written by other tools may hold).
    Returns the commit's lake_version."""
    import tempfile

    import pyarrow as pa

    from lake.schema import bucket_sql
    from lake.sql import literal
    from lake.table import EVENTS
    from lake.writer import write_events

    version = target.next_version()
    con = target.attach(duckdb.connect())
    con.register("held", lake.read_events(target, lake.EventFilter(), con=con))
    con.register("wanted", pa.table({"event_id": list(event_ids)}))
    replaced = "" if payload is None else f", {literal(payload)} AS payload"
    replaced += "" if stream is None else f", {literal(stream)} AS stream"
    select = (f"SELECT * REPLACE (now() AS ingested_at, CAST({version} AS BIGINT) AS lake_version{replaced}), "
              f"{bucket_sql('partition_key', target.buckets)} AS bucket FROM held SEMI JOIN wanted USING (event_id)")
    with target.commit_lock(), tempfile.TemporaryDirectory() as staging:  # an object-store lake's files go there first
        target.commit_files(EVENTS, write_events(con, select, target, Path(staging)), expected_version=version)
    con.close()
    return version


def expire_log(location: Path) -> None:
    """What Delta does to a lake older than its log retention: at a checkpoint, the log entries
    older than 30 days (by file time) are deleted."""
    events = location / "events"
    old = time.time() - 40 * 86400
    for entry in (events / "_delta_log").iterdir():
        os.utime(entry, (old, old))
    table = DeltaTable(str(events))
    table.create_checkpoint()
    table.cleanup_metadata()
    assert min(int(h["version"]) for h in DeltaTable(str(events)).history()) > 1


@pytest.fixture
def make_lake(tmp_path: Path) -> Callable[..., lake.Lake]:
    """``make_lake(events, stream="orders")``: a lake holding ``events`` in one commit."""
    counter = iter(range(1_000_000))

    def make(events: Iterable[dict[str, object]] = (), stream: str = "orders", path: Path | None = None) -> lake.Lake:
        target = lake.Lake(path or tmp_path / "lake").create()
        records = list(events)
        if records:
            source = write_ndjson(tmp_path / f"batch-{next(counter)}.ndjson", records)
            lake.ingest(target, [source], stream=stream)
        return target

    return make
