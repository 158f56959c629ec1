"""The core archive contract: events in, duplicates kept once, bad records quarantined."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import lake
from tests.conftest import event, write_ndjson


def test_ingest_archives_valid_events_and_quarantines_the_rest(tmp_path: Path) -> None:
    source = write_ndjson(
        tmp_path / "in.ndjson",
        [event(1), event(2), "{not json", {**event(3), "sequence": -4}],
    )
    target = lake.Lake(tmp_path / "lake")
    result = lake.ingest(target, [source], stream="orders")
    assert (result.archived, result.quarantined, result.duplicates) == (2, 2, 0)
    rows = lake.read_events(target).order("sequence").fetchall()
    assert [r[0] for r in rows] == ["e1", "e2"]
    quarantined = lake.read_quarantine(target).order("line").project("line, reason").fetchall()
    assert quarantined[0] == (3, "malformed record: malformed JSON")
    assert quarantined[1][0] == 4 and "non-negative" in quarantined[1][1]


def test_ingesting_the_same_file_twice_adds_nothing(tmp_path: Path) -> None:
    source = write_ndjson(tmp_path / "in.ndjson", [event(i) for i in range(1, 6)] + ["oops"])
    target = lake.Lake(tmp_path / "lake")
    first = lake.ingest(target, [source], stream="orders")
    second = lake.ingest(target, [source], stream="orders")
    assert first.archived == 5 and second.archived == 0 and second.duplicates == 5
    assert lake.read_events(target).count("*").fetchall()[0][0] == 5
    assert lake.read_quarantine(target).count("*").fetchall()[0][0] == 1
    assert second.lake_version == first.lake_version


def test_each_commit_is_one_new_lake_version(tmp_path: Path) -> None:
    target = lake.Lake(tmp_path / "lake")
    a = lake.ingest(target, [write_ndjson(tmp_path / "a.ndjson", [event(1)])], stream="orders")
    b = lake.ingest(target, [write_ndjson(tmp_path / "b.ndjson", [event(2)])], stream="orders")
    assert b.lake_version == a.lake_version + 1
    versions = dict(lake.read_events(target).project("event_id, lake_version").fetchall())
    assert versions == {"e1": a.lake_version, "e2": b.lake_version}


def test_the_same_key_and_sequence_in_two_streams_is_no_conflict(tmp_path: Path) -> None:
    target = lake.Lake(tmp_path / "lake")
    orders = lake.ingest(target, [write_ndjson(tmp_path / "o.ndjson", [event(1, key="k", seq=1)])], stream="orders")
    payments = lake.ingest(target, [write_ndjson(tmp_path / "p.ndjson", [{**event(2, key="k", seq=1)}])], stream="payments")
    assert (orders.archived, payments.archived, payments.quarantined) == (1, 1, 0)
    conflict = lake.ingest(target, [write_ndjson(tmp_path / "c.ndjson", [event(3, key="k", seq=1)])], stream="orders")
    assert conflict.quarantined == 1 and "already belongs to event e1" in next(iter(conflict.reasons))


def test_an_event_archived_under_another_stream_is_a_duplicate_in_any_split(tmp_path: Path) -> None:
    """An event id is unique across streams: one input holding it under two streams kept it once, but two
    inputs, one per stream, archived it twice (only the input's stream's files were searched)."""
    together, apart = lake.Lake(tmp_path / "together"), lake.Lake(tmp_path / "apart")
    orders, payments = {**event(1, key="k", seq=1), "stream": "orders"}, {**event(1, key="k", seq=2), "stream": "payments"}
    both = lake.ingest(together, [write_ndjson(tmp_path / "both.ndjson", [orders, payments])])
    first = lake.ingest(apart, [write_ndjson(tmp_path / "o.ndjson", [orders])])
    second = lake.ingest(apart, [write_ndjson(tmp_path / "p.ndjson", [payments])])
    assert (both.archived, both.duplicates) == (1, 1) and (first.archived, second.archived, second.duplicates) == (1, 0, 1)
    def kept(target: lake.Lake) -> list[tuple[object, ...]]:
        return lake.read_events(target).project("event_id, stream, partition_key, sequence").fetchall()

    assert kept(apart) == kept(together) == [("e1", "orders", "k", 1)]


def test_a_lake_in_a_folder_whose_name_has_a_space_or_a_percent_sign_reads_back(tmp_path: Path) -> None:
    """delta-rs percent-encodes its file URIs: a lake in `/Users/Jane Doe/lake` was archived, then
    every one of its files was "unreadable" (`Jane%20Doe` does not exist) and it read as empty."""
    for folder, stream in (("Jane Doe", "orders"), ("100%", "orders"), ("Jane Doe", "q?#%")):  # the last: a
        target = lake.Lake(tmp_path / folder / "lake")  # stream folder DuckDB writes encoded, stream=q%3F%23%25
        source = write_ndjson(tmp_path / "in.ndjson", [event(1), event(2), "oops"])
        lake.ingest(target, [source], stream=stream)
        assert lake.read_events(target).count("*").fetchall()[0][0] == 2
        assert lake.read_quarantine(target).count("*").fetchall()[0][0] == 1
        assert lake.ingest(target, [source], stream=stream).duplicates == 2
        shutil.rmtree(target.uri)


def test_a_lake_in_a_folder_whose_name_holds_a_percent_escape_is_refused_before_anything_is_written(
        tmp_path: Path) -> None:
    """delta-rs decodes %41 in a local path (even in a file:// URI with the % encoded): an ingest into
    `exports%202026/lake` created its log in that folder, then read it in `exports 2026` and failed
    (exit 70), and every later command said the Delta log was damaged and to restore the lake."""
    folder = tmp_path / "exports%202026"
    with pytest.raises(lake.LakeError, match=r"holds '%20', which the Delta library reads as ' ' \(percent-encoding"):
        lake.Lake(folder / "lake").create()
    assert not folder.exists()
