"""A lake that has lived for months: thousands of commits, a Delta log whose old entries expired,
and processes (notebooks, pollers) that keep one Lake open while it grows."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

import lake
import lake.table as table_module
from lake.audit import audit
from lake.errors import LakeError
from tests.conftest import event, expire_log, write_ndjson


def _commits(tmp_path: Path, count: int) -> tuple[lake.Lake, list[datetime]]:
    """A lake with ``count`` ingest commits of one event each, and the time after each commit."""
    target = lake.Lake(tmp_path / "lake").create()
    after = []
    for n in range(1, count + 1):
        lake.ingest(target, [write_ndjson(tmp_path / f"b{n}.ndjson", [event(n, seq=n)])], stream="orders")
        after.append(datetime.now(UTC))
        time.sleep(0.01)
    return target, after


def test_a_command_loads_the_delta_log_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`exists()` then `snapshot()` (what every command does first) read the log once: each load
    replays the last checkpoint, which lists every file (~0.3 s at 3,000 small commits)."""
    _commits(tmp_path, 2)
    loads: list[str] = []

    class Counting(DeltaTable):
        def __init__(self, uri: str, *args: Any, **kwargs: Any) -> None:
            loads.append(uri)
            super().__init__(uri, *args, **kwargs)

    monkeypatch.setattr(table_module, "DeltaTable", Counting)
    fresh = lake.Lake(tmp_path / "lake")
    assert fresh.exists()
    assert fresh.snapshot().lake_version == 2
    assert [u for u in loads if u.endswith("/events")] == [fresh.table_uri("events")]


def test_a_lake_kept_open_keeps_a_few_snapshots(tmp_path: Path) -> None:
    """A notebook or a poller keeps one Lake while commits arrive: it must not keep every version
    it has seen (each holds every file's statistics; a poller's memory grew to GBs)."""
    target, _ = _commits(tmp_path, 8)
    for version in range(1, target.snapshot().delta_version + 1):
        target.snapshot(version)
    assert len(target._snapshots) <= 4
    assert target.snapshot(3).lake_version == 3  # an evicted version is read again from the log


def test_a_time_older_than_the_expired_log_is_no_empty_lake(tmp_path: Path) -> None:
    """After 30 days Delta deletes the old log entries: a time before what the log still holds
    was called 'before the lake's first commit' (the lake held no events), with a wrong date."""
    target, after = _commits(tmp_path, 3)
    expire_log(tmp_path / "lake")
    fresh = lake.Lake(tmp_path / "lake")
    with pytest.raises(LakeError, match="older than the lake's commit log.*give a lake_version instead"):
        fresh.version_at(after[0])
    assert fresh.version_at(datetime.now(UTC) + timedelta(seconds=1)) == 3  # what the log holds still answers


def test_the_audit_does_not_pass_a_part_of_the_duplicates_at_ingest_for_all(tmp_path: Path) -> None:
    """Duplicates dropped at ingest are only in the commits' metadata: once Delta deleted the old log
    entries, the audit summed the entries left and reported that part as the lake's count."""
    target, _ = _commits(tmp_path, 1)
    again = write_ndjson(tmp_path / "again.ndjson", [event(1, seq=1), event(2, seq=2)])
    lake.ingest(target, [again], stream="orders")  # e1 again: one duplicate dropped
    lake.ingest(target, [write_ndjson(tmp_path / "b3.ndjson", [event(3, seq=3)])], stream="orders")
    assert audit(target).to_dict()["duplicates_at_ingest"] == 1
    expire_log(tmp_path / "lake")
    report = audit(lake.Lake(tmp_path / "lake")).to_dict()
    assert (report["events"], report["duplicates_at_ingest"]) == (3, None)  # unknown, not 0
    assert report["commit_log_from"] == 3
