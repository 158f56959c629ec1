"""``lake.dedupe``: the later copies of event ids archived twice removed in one commit, differing ones quarantined."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from deltalake import DeltaTable

import lake
from lake.audit import audit
from lake.compact import compact
from lake.dedupe import dedupe
from lake.read import CorruptFile
from lake.table import Lake
from tests.conftest import archive_again, write_ndjson


def event(n: int, key: str = "o-1") -> dict[str, Any]:
    return {"event_id": f"e{n}", "partition_key": key, "sequence": n, "event_type": "OrderPlaced",
            "event_time": f"2026-09-01T10:00:{n:02d}Z", "payload": {"amount": n}}


def ids(target: Lake, **filters: Any) -> list[tuple[str, int]]:
    rel = lake.read_events(target, lake.EventFilter(**filters)).project("event_id, lake_version")
    return sorted(rel.fetchall())  # type: ignore[arg-type]


@pytest.fixture
def copied(tmp_path: Path) -> Lake:
    """Events e1-e4 of two keys at lake_version 1; e2 archived again identical at 2, e3 again with another payload at 3."""
    target = Lake(tmp_path / "lake").create()
    records = [event(1), event(2), event(3, "o-𠮷"), event(4, "o-𠮷")]
    lake.ingest(target, [write_ndjson(tmp_path / "a.ndjson", records)], stream="orders")
    archive_again(target, ["e2"])
    archive_again(target, ["e3"], payload='{"amount": 30}')
    return target


def test_the_first_archived_copy_stays_a_differing_one_is_quarantined_and_a_second_run_does_nothing(copied: Lake) -> None:
    before = copied.snapshot().delta_version
    result = dedupe(copied)
    assert (result.duplicated_ids, result.removed, result.quarantined, result.delta_version) == (2, 2, 1, before + 1)
    assert result.keys == ("o-1", "o-𠮷") and result.first_version == 2
    assert ids(copied) == [("e1", 1), ("e2", 1), ("e3", 1), ("e4", 1)]  # rows keep their lake_version
    assert lake.read_events(copied, lake.EventFilter(partition_keys=("o-𠮷",))).project("payload").fetchall() == [
        ('{"amount":3}',), ('{"amount":4}',)]
    [(reason, record, version)] = lake.read_quarantine(copied).project("reason, record, lake_version").fetchall()
    assert reason.startswith("archived twice: removed by rebuild lake dedupe") and reason.endswith("(lake_version 1) in payload")
    assert (json.loads(record)["payload"], version) == ('{"amount": 30}', 3)  # nothing lost
    found = audit(copied).to_dict()
    assert (found["duplicates"], found["quarantined"]) == (0, 1)
    again = dedupe(copied)
    assert (again.removed, again.delta_version, copied.snapshot().delta_version) == (0, None, before + 1)
    assert lake.read_quarantine(copied).count("*").fetchall() == [(1,)]


def test_a_dry_run_changes_nothing(copied: Lake) -> None:
    before = copied.snapshot().delta_version
    result = dedupe(copied, dry_run=True)
    assert (result.removed, result.quarantined, result.delta_version, result.lake_version) == (2, 1, None, 1)
    assert (copied.snapshot().delta_version, audit(copied).to_dict()["duplicates"]) == (before, 2)
    assert lake.read_quarantine(copied).count("*").fetchall() == [(0,)]


def test_as_of_reads_the_lake_without_the_copies_and_delta_time_travel_with_them_until_vacuum(
        copied: Lake, tmp_path: Path) -> None:
    lake.ingest(copied, [write_ndjson(tmp_path / "b.ndjson", [event(5)])], stream="orders")
    before = copied.snapshot().delta_version
    dedupe(copied)
    assert ids(copied, as_of=3) == [("e1", 1), ("e2", 1), ("e3", 1), ("e4", 1)]
    old = DeltaTable(copied.table_uri("events"), version=before).to_pyarrow_table(columns=["event_id"])
    assert sorted(old.column("event_id").to_pylist()) == ["e1", "e2", "e2", "e3", "e3", "e4", "e5"]


def test_a_commit_of_nothing_but_copies_leaves_no_lake_version(copied: Lake) -> None:
    """The lake's lake_version is its newest event's, as after an ingest that archived nothing; the commits' files
    are removed, not replaced by empty ones."""
    on_disk = set(Path(copied.table_uri("events")).rglob("*.parquet"))
    assert (copied.snapshot().lake_version, dedupe(copied).lake_version) == (3, 1)
    assert sorted((f.max_version, f.rows) for f in copied.snapshot().files) == [(1, 2), (1, 2)]
    assert set(Path(copied.table_uri("events")).rglob("*.parquet")) == on_disk  # nor written, left for vacuum


def test_compacted_files_keep_their_decoded_columns(copied: Lake) -> None:
    compact(copied, decode=[("amount", "INTEGER")])
    archive_again(copied, ["e1"])
    dedupe(copied)
    [only] = copied.snapshot().select(keys=["o-1"], buckets=copied.buckets_of(["o-1"]))
    assert copied.decoded_columns([only.path])[only.path] == {"payload:amount:INTEGER", "decoding:amount:INTEGER"}
    assert ids(copied, partition_keys="o-1") == [("e1", 1), ("e2", 1)]


@pytest.fixture
def paused(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], tuple[threading.Event, threading.Event]]]:
    """``paused(operation)``: the next commit of that operation waits, holding the commit lock, until the second
    event is set; the first is set once it waits (a writer caught mid-commit, at a point no sleep can find)."""
    real = Lake.commit_files
    events: dict[str, tuple[threading.Event, threading.Event]] = {}

    def commit_files(self: Lake, name: str, actions: Any, **options: Any) -> int:
        waiting = events.pop(options.get("operation", "ingest"), None)
        if waiting is not None and name == "events":
            waiting[0].set()
            assert waiting[1].wait(30)
        return real(self, name, actions, **options)

    monkeypatch.setattr(Lake, "commit_files", commit_files)
    yield lambda operation: events.setdefault(operation, (threading.Event(), threading.Event()))


def _started(work: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    done: list[object] = []
    thread = threading.Thread(target=lambda: done.append(work()))
    thread.start()
    return thread, done


def test_a_dedupe_waits_for_an_ingest_committing_and_sees_its_events(copied: Lake, tmp_path: Path, paused: Any) -> None:
    entered, go = paused("ingest")
    source = write_ndjson(tmp_path / "b.ndjson", [event(5)])
    ingesting, _ = _started(lambda: lake.ingest(Lake(copied.uri), [source], stream="orders"))
    assert entered.wait(30)
    deduping, result = _started(lambda: dedupe(Lake(copied.uri)))
    deduping.join(1)
    assert deduping.is_alive()  # waits for the lock
    go.set()
    ingesting.join(30)
    deduping.join(30)
    assert result[0].delta_version == 5  # type: ignore[attr-defined]  # after the ingest's commit 4
    assert ids(copied) == [("e1", 1), ("e2", 1), ("e3", 1), ("e4", 1), ("e5", 4)]


def test_an_ingest_and_a_compaction_wait_for_a_dedupe_committing(copied: Lake, tmp_path: Path, paused: Any) -> None:
    """The re-delivered copy is then judged against the lake without copies: a duplicate, not archived again;
    and compaction rewrites the files as dedupe left them, never bringing a copy back."""
    entered, go = paused("dedupe")
    deduping, _ = _started(lambda: dedupe(Lake(copied.uri)))
    assert entered.wait(30)
    source = write_ndjson(tmp_path / "b.ndjson", [event(2), event(5)])
    ingesting, ingested = _started(lambda: lake.ingest(Lake(copied.uri), [source], stream="orders"))
    compacting, _ = _started(lambda: compact(Lake(copied.uri)))
    ingesting.join(1)
    compacting.join(0.1)
    assert ingesting.is_alive() and compacting.is_alive()
    go.set()
    for thread in (deduping, ingesting, compacting):
        thread.join(60)
    assert (ingested[0].archived, ingested[0].duplicates) == (1, 1)  # type: ignore[attr-defined]
    assert [i for i, _ in ids(copied)] == ["e1", "e2", "e3", "e4", "e5"]
    assert audit(copied).to_dict()["duplicates"] == 0


def test_killed_after_quarantining_a_rerun_removes_the_copies_and_quarantines_each_once(copied: Lake) -> None:
    """kill -9 between the quarantine's commit and the events': the copies are still in the lake, and the rerun
    finds the quarantined one already held (by its record's hash) instead of storing it twice."""
    code = f"import lake, lake.dedupe; lake.dedupe.dedupe(lake.Lake({copied.uri!r}))"
    env = {**os.environ, "REBUILD_FAULT_POINT": "dedupe.after_quarantine"}
    assert subprocess.run([sys.executable, "-c", code], env=env, check=False).returncode == -signal.SIGKILL
    assert (audit(copied).to_dict()["duplicates"], lake.read_quarantine(copied).count("*").fetchall()) == (2, [(1,)])
    assert dedupe(copied).removed == 2
    assert (audit(copied).to_dict()["duplicates"], lake.read_quarantine(copied).count("*").fetchall()) == (0, [(1,)])


def test_killed_after_its_commit_the_keys_to_correct_are_written(copied: Lake, tmp_path: Path) -> None:
    """The keys file is the only record of which keys' views applied the copies (a rerun finds nothing): it was
    written after the commit, so a kill in between lost it."""
    code = (f"import lake, lake.dedupe, pathlib; "
            f"lake.dedupe.dedupe(lake.Lake({copied.uri!r}), keys_dir=pathlib.Path({str(tmp_path)!r}))")
    env = {**os.environ, "REBUILD_FAULT_POINT": "dedupe.after_commit"}
    assert subprocess.run([sys.executable, "-c", code], env=env, check=False).returncode == -signal.SIGKILL
    assert audit(copied).to_dict()["duplicates"] == 0  # committed
    [written] = tmp_path.glob("dedupe-*-keys.txt")
    assert written.name == f"dedupe-{copied.snapshot().delta_version}-keys.txt"
    assert written.read_text(encoding="utf-8").splitlines() == ["o-1", "o-𠮷"]


def test_a_damaged_lake_file_is_named_and_nothing_is_removed(copied: Lake) -> None:
    """It was an unexpected error (exit 70, a traceback) from DuckDB's reader."""
    damaged = copied.snapshot().select(keys=["o-1"], buckets=copied.buckets_of(["o-1"]))[0].path
    Path(damaged).write_bytes(Path(damaged).read_bytes()[:100])
    before = copied.snapshot().delta_version
    with pytest.raises(CorruptFile, match="cannot be read .*nothing was removed") as caught:
        dedupe(copied)
    assert (caught.value.context["file"], copied.snapshot().delta_version) == (damaged, before)


def test_its_steps_are_logged_for_a_jobs_log(copied: Lake, caplog: pytest.LogCaptureFixture) -> None:
    """README: `-v` gives a job's log the steps of `lake dedupe`, as of ingest, audit and compact; a dry run
    logged none, and a real one only its last."""
    with caplog.at_level("INFO", logger="lake.dedupe"):
        dedupe(copied, dry_run=True)
    assert [r.getMessage().split(" in ")[0] for r in caplog.records] == [
        "found 2 partition keys holding an event id more than once", "found 2 later copies"]
    caplog.clear()
    with caplog.at_level("INFO", logger="lake.dedupe"):
        dedupe(copied)
    assert [r.getMessage().split(" in ")[0] for r in caplog.records] == [
        "found 2 partition keys holding an event id more than once", "found 2 later copies",
        "quarantined 1 later copies whose content differs from the copy kept", "removed 2 later copies"]
