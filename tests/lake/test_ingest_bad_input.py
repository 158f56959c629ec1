"""Every class of bad input is quarantined with its reason, source and line; the rest is archived."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lake
from tests.conftest import event, write_ndjson

GOOD = event(1000, key="good", seq=1)


def without(record: dict[str, object], name: str) -> dict[str, object]:
    return {k: v for k, v in record.items() if k != name}


# (bad record, expected reason); each case is written after a good record, at line 2
NDJSON_CASES = {
    "malformed-json": ('{"event_id": "e1", ', "malformed record: malformed JSON"),
    "not-an-object": ("[1, 2, 3]", "malformed record: not a JSON object"),
    "json-null": ("null", "malformed record: not a JSON object"),
    "missing-event-id": (without(event(1), "event_id"), "missing field event_id (event_id)"),
    "missing-partition-key": (without(event(1), "partition_key"), "missing field partition_key (partition_key)"),
    "blank-partition-key": ({**event(1), "partition_key": "  "}, "missing field partition_key (partition_key)"),
    "missing-event-type": (without(event(1), "event_type"), "missing field event_type (event_type)"),
    "missing-sequence": (without(event(1), "sequence"), "missing field sequence (sequence)"),
    "null-sequence": ({**event(1), "sequence": None}, "missing field sequence (sequence)"),
    "missing-event-time": (without(event(1), "event_time"), "missing field event_time (event_time)"),
    "negative-sequence": ({**event(1), "sequence": -3}, "sequence is not a non-negative int64: -3"),
    "fractional-sequence": ({**event(1), "sequence": 2.5}, "sequence is not a non-negative int64: 2.5"),
    "text-sequence": ({**event(1), "sequence": "abc"}, "sequence is not a non-negative int64: abc"),
    "boolean-sequence": ({**event(1), "sequence": True}, "sequence is not a non-negative int64: true"),
    "too-large-sequence": (
        {**event(1), "sequence": 2**63},
        "sequence is not a non-negative int64: 9223372036854775808",
    ),
    "unparsable-time": ({**event(1), "event_time": "yesterday"}, "unparsable event_time: yesterday"),
    "numeric-time-without-unit": (
        {**event(1), "event_time": 12345},
        'unparsable event_time: 12345 (an epoch number: declare its unit, event_time_unit = "s", "ms" or "us" '
        "under [options] in a --map file)",
    ),
    "spreadsheet-days": (  # Excel's serial date: with a unit declared, it would be a time in 1970
        {**event(1), "event_time": 46266.5},
        "unparsable event_time: 46266.5 (a number of days, as a spreadsheet writes a date (46266.5 is 2026-09-01 "
        '12:00), is no epoch unit: write it as ISO-8601 text; an epoch number: declare its unit, event_time_unit = "s", '
        '"ms" or "us" under [options] in a --map file)',
    ),
    "leap-second": (
        {**event(1), "event_time": "2016-12-31T23:59:60Z"},
        "unparsable event_time: 2016-12-31T23:59:60Z (a leap second: times here have no second 60; write it as "
        ":59.999999 or as the next second)",
    ),
    "payload-not-json": ({**event(1), "payload": "{oops"}, "payload is not JSON"),
    "object-partition-key": (
        {**event(1), "partition_key": {"id": 1}},
        "wrong type: partition_key (partition_key) must be a string, not an object, array or boolean",
    ),
    "array-event-type": (
        {**event(1), "event_type": ["OrderPlaced"]},
        "wrong type: event_type (event_type) must be a string, not an object, array or boolean",
    ),
    "boolean-event-id": (
        {**event(1), "event_id": True},
        "wrong type: event_id (event_id) must be a string, not an object, array or boolean",
    ),
    "text-schema-version": ({**event(1), "schema_version": "v2"}, "schema_version is not an int32"),
    "nul-in-partition-key": (  # archived, it failed every catch-up of a by_key view ('string literal contains NUL')
        {**event(1), "partition_key": "o\u00001"},
        "partition_key (partition_key) holds a NUL character (\\u0000), which no run can name: remove it from the "
        "key at the source",
    ),
}


def quarantined(target: lake.Lake) -> list[tuple[object, ...]]:
    return lake.read_quarantine(target).order("source, line").project("source, line, reason").fetchall()


def event_ids(target: lake.Lake) -> set[str]:
    return {r[0] for r in lake.read_events(target).project("event_id").fetchall()}


@pytest.mark.parametrize("case", sorted(NDJSON_CASES))
def test_ndjson_bad_record_is_quarantined_with_reason_source_and_line(tmp_path: Path, case: str) -> None:
    bad, reason = NDJSON_CASES[case]
    source = write_ndjson(tmp_path / "in.ndjson", [GOOD, bad, event(7, key="other")])
    target = lake.Lake(tmp_path / "lake")
    result = lake.ingest(target, [source], stream="orders")
    assert (result.read, result.archived, result.quarantined) == (3, 2, 1)
    assert result.reasons == {reason: 1}
    assert quarantined(target) == [(str(source), 2, reason)]
    assert event_ids(target) == {"e1000", "e7"}  # the rest of the batch is archived


def test_all_bad_classes_in_one_file_keep_their_own_lines(tmp_path: Path) -> None:
    cases = sorted(NDJSON_CASES)
    records: list[object] = [GOOD, ""]  # a blank line is skipped but still counted
    records += [NDJSON_CASES[c][0] for c in cases]
    records.append(event(7, key="other"))
    source = write_ndjson(tmp_path / "in.ndjson", records)
    target = lake.Lake(tmp_path / "lake")
    result = lake.ingest(target, [source], stream="orders")
    assert (result.archived, result.quarantined) == (2, len(cases))
    expected = [(str(source), 3 + i, NDJSON_CASES[c][1]) for i, c in enumerate(cases)]
    assert quarantined(target) == expected
    stored = lake.read_quarantine(target).order("line").project("record").fetchall()
    assert stored[0][0] == (records[2] if isinstance(records[2], str) else stored[0][0])


def test_a_stream_that_cannot_name_a_folder_of_the_lake_is_missing_or_too_long(tmp_path: Path) -> None:
    """A record's stream is the lake folder ``stream=NAME``: ``""`` was committed as a partition value
    Delta reads as NULL, after which every command on the lake failed (exit 70), and a stream longer
    than a file name failed the whole ingest (exit 70). A blank one is missing (``--stream`` stands in
    for it), a too long one is quarantined, and ``--stream`` itself is refused before anything is read."""
    long = "ü" * 42  # 252 characters percent-encoded, 4 over the limit (41 fit)
    records = [event(i, key=f"k{i}", stream=s) for i, s in enumerate(["", " ", "\t", long, "ü" * 41, "ok"])]
    source = write_ndjson(tmp_path / "in.ndjson", records)
    target = lake.Lake(tmp_path / "lake")
    result = lake.ingest(target, [source])
    assert (result.archived, result.quarantined) == (2, 4)
    too_long = (f"stream name '{'ü' * 40}'... is too long for the lake's folder stream=NAME: 252 characters "
                "percent-encoded (a space, a sign or a byte of a non-ASCII letter takes 3), at most 248")
    assert result.reasons["missing field stream"] == 3
    assert [r for r in result.reasons if "too long" in r] == [too_long]
    assert set(target.snapshot().streams()) == {"ok", "ü" * 41}  # the lake stays readable
    result = lake.ingest(target, [source], stream="orders")
    assert (result.archived, result.duplicates) == (3, 2)
    one = lake.EventFilter(streams="orders")  # type: ignore[arg-type]  # one name, not a tuple: taken as one stream
    assert sorted(r[0] for r in lake.read_events(target, one).project("event_id").fetchall()) == ["e0", "e1", "e2"]
    with pytest.raises(lake.SourceError) as refused:  # in the words of the quarantine
        lake.ingest(target, [source], stream=long)
    assert str(refused.value) == f"--stream: {too_long}; nothing was archived"
    assert target.snapshot().lake_version == 2


def test_a_pipe_given_as_an_input_file_is_named_as_one(tmp_path: Path) -> None:
    """`rebuild lake ingest <(zcat events.csv.gz) --format csv` (or /dev/stdin) said the input "does not
    exist", which it does: it is a pipe, which ingest cannot read twice (the format's sniffing, then the reader)."""
    fifo = tmp_path / "events.csv"
    os.mkfifo(fifo)
    target = lake.Lake(tmp_path / "lake")
    with pytest.raises(lake.SourceError, match=rf"^input file {re.escape(str(fifo))} is a pipe or a device, not a "
                                               r"file: save it to a file and give that; nothing was archived$"):
        lake.ingest(target, [fifo], stream="s")
    with pytest.raises(lake.SourceError, match=r"missing.csv does not exist; nothing was archived$"):
        lake.ingest(target, [tmp_path / "missing.csv"], stream="s")
    assert not target.exists()


def test_malformed_csv_rows_and_bad_cells(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text(
        "event_id,partition_key,sequence,event_type,event_time,payload\n"
        'e1,o1,1,OrderPlaced,2024-03-01T00:01:00+00:00,"{""n"": 1}"\n'  # line 2: good
        "e2,o1,2,OrderPlaced\n"  # line 3: too few cells
        'e3,o1,3,OrderPlaced,2024-03-01T00:03:00+00:00,"{}",extra\n'  # line 4: too many cells
        'e4,o1,4,OrderPlaced,not-a-time,"{}"\n'  # line 5
        'e5,,5,OrderPlaced,2024-03-01T00:05:00+00:00,"{}"\n'  # line 6: empty partition key
        "e6,o1,6,OrderPlaced,2024-03-01T00:06:00+00:00,{oops\n"  # line 7
        'e7,o1,x7,OrderPlaced,2024-03-01T00:07:00+00:00,"{}"\n'  # line 8
        'e8,o1,8,OrderPlaced,2024-03-01T00:08:00+00:00,"{}"\n'  # line 9: good
    )
    target = lake.Lake(tmp_path / "lake")
    result = lake.ingest(target, [source], stream="orders")
    assert (result.read, result.archived, result.quarantined) == (8, 2, 6)
    assert quarantined(target) == [
        (str(source), 3, "malformed CSV row: 4 cells, expected 6"),
        (str(source), 4, "malformed CSV row: 7 cells, expected 6"),
        (str(source), 5, "unparsable event_time: not-a-time"),
        (str(source), 6, "missing field partition_key (partition_key)"),
        (str(source), 7, "payload is not JSON"),
        (str(source), 8, "sequence is not a non-negative int64: x7"),
    ]
    raw = lake.read_quarantine(target).order("line").project("record").fetchall()
    assert raw[0][0] == "e2,o1,2,OrderPlaced"
    assert event_ids(target) == {"e1", "e8"}
    # in a notebook, the reasons' table says what it holds and heads its columns (a screen reader reads by them)
    shown = result._repr_html_()
    assert "<caption>records quarantined, per reason</caption>" in shown
    assert "<th scope='col'>quarantine reason</th><th scope='col'>records</th>" in shown
    assert "<td>malformed CSV row: 4 cells, expected 6</td><td>1</td>" in shown


def ingest_parquet(tmp_path: Path, columns: dict[str, object]) -> tuple[lake.Lake, Path, lake.IngestResult]:
    """``columns`` written as one Parquet file and ingested into a new lake."""
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table(columns), source)
    target = lake.Lake(tmp_path / "lake")
    return target, source, lake.ingest(target, [source], stream="orders")


def test_parquet_wrong_types_are_quarantined_per_row(tmp_path: Path) -> None:
    target, source, result = ingest_parquet(tmp_path, {
        "event_id": ["e1", "e2", "e3"],
        "partition_key": ["o1", "o1", "o1"],
        "sequence": ["1", "-2", "3"],  # text: checked like any other text
        "event_type": ["OrderPlaced"] * 3,
        "event_time": ["2024-03-01T00:00:00Z", "2024-03-01T00:00:00Z", "13 o'clock"],
        "payload": ['{"a": 1}', "{}", "{}"],
    })
    assert result.archived == 1
    assert quarantined(target) == [
        (str(source), 2, "sequence is not a non-negative int64: -2"),
        (str(source), 3, "unparsable event_time: 13 o'clock"),
    ]


def test_parquet_typed_columns_are_checked_without_a_text_round_trip(tmp_path: Path) -> None:
    """Integer sequences, timestamps (any unit, with or without a time zone) and integer schema
    versions are taken as they are, and judged like their text."""
    naive = [datetime(2024, 3, 1, 10, 0, 0, 123456), None, datetime(2024, 3, 1), datetime(2024, 3, 1)]
    target, source, result = ingest_parquet(tmp_path, {
        "event_id": ["e1", "e2", "e3", "e4"],
        "partition_key": ["o1", "o1", "o1", "o1"],
        "sequence": pa.array([1, 2, -3, 4], pa.int32()),
        "event_type": ["OrderPlaced"] * 4,
        "event_time": pa.array(naive, pa.timestamp("ns")),
        "schema_version": pa.array([1, 1, 1, 2**40], pa.int64()),
        "payload": ['{"a": 1}', "{}", "{}", "{}"],
    })
    assert result.archived == 1
    assert quarantined(target) == [
        (str(source), 2, "missing field event_time (event_time)"),
        (str(source), 3, "sequence is not a non-negative int64: -3"),
        (str(source), 4, "schema_version is not an int32"),
    ]
    row = lake.read_events(target).project("sequence, event_time, schema_version").fetchall()
    assert row == [(1, datetime(2024, 3, 1, 10, 0, 0, 123456, tzinfo=UTC), 1)]


def test_conflicts_in_the_batch_and_against_the_lake(tmp_path: Path) -> None:
    target = lake.Lake(tmp_path / "lake")
    first = write_ndjson(tmp_path / "first.ndjson", [event(1, seq=1), event(2, seq=2)])
    lake.ingest(target, [first], stream="orders")
    second = write_ndjson(
        tmp_path / "second.ndjson",
        [
            event(3, seq=3),  # line 1: new, fine
            event(10, seq=2),  # line 2: sequence 2 of o1 is e2's in the lake
            event(12, seq=4),  # line 3: sequence 4 taken twice in this batch ...
            event(11, seq=4),  # line 4: ... the smallest event_id (e11) wins
            event(1, seq=1),  # line 5: the same event again: a duplicate, not a conflict
        ],
    )
    result = lake.ingest(target, [second], stream="orders")
    assert (result.archived, result.duplicates, result.quarantined) == (2, 1, 2)
    assert quarantined(target) == [
        (str(second), 2, "conflict: partition_key o1 sequence 2 already belongs to event e2"),
        (str(second), 3, "conflict: partition_key o1 sequence 4 already belongs to event e11"),
    ]
    assert event_ids(target) == {"e1", "e2", "e3", "e11"}


def test_each_quarantined_record_names_its_own_file_in_a_commit_of_several(tmp_path: Path) -> None:
    """Staging numbers its sources; every quarantine row must still get its own file's name."""
    first = write_ndjson(tmp_path / "first.ndjson", [event(1, seq=1), "{bad", event(2, seq=2)])
    second = write_ndjson(tmp_path / "second.ndjson", [event(3, seq=2), {**event(4), "sequence": -1}])
    target = lake.Lake(tmp_path / "lake")
    result = lake.ingest(target, [first, second], stream="orders")
    assert (result.archived, result.quarantined) == (2, 3)
    assert quarantined(target) == [
        (str(first), 2, "malformed record: malformed JSON"),
        (str(second), 1, "conflict: partition_key o1 sequence 2 already belongs to event e2"),
        (str(second), 2, "sequence is not a non-negative int64: -1"),
    ]


def test_quarantine_is_not_repeated_when_the_same_input_is_ingested_again(tmp_path: Path) -> None:
    source = write_ndjson(tmp_path / "in.ndjson", [GOOD, "{bad", {**event(1), "sequence": -1}])
    target = lake.Lake(tmp_path / "lake")
    first = lake.ingest(target, [source], stream="orders")
    again = lake.ingest(target, [source], stream="orders")
    # every record read is counted (archived, duplicate or quarantined), and the result says which are not new
    assert (first.quarantined, first.already_quarantined, first.already()) == (2, 0, "")
    assert (again.quarantined, again.already_quarantined) == (2, 2)
    assert again.already() == " (all of them already, by an earlier ingest: not stored again)"
    assert "quarantined 2 (all of them already, by an earlier ingest: not stored again)" in again._repr_html_()
    assert len(quarantined(target)) == 2  # stored once
    more = write_ndjson(tmp_path / "more.ndjson", ["{bad", "{worse"])  # one record seen before, one new
    mixed = lake.ingest(target, [more], stream="orders")
    assert (mixed.quarantined, mixed.already_quarantined, mixed.to_dict()["already_quarantined"]) == (2, 1, 1)
    assert mixed.already() == " (1 of them already, by an earlier ingest: not stored again)"
    assert len(quarantined(target)) == 3


def test_an_ingest_that_quarantines_opens_only_the_quarantine_files_that_may_hold_its_records(tmp_path: Path) -> None:
    """To store a record once, an ingest that quarantines read the record hash of every quarantine file: hourly
    ingests of a bad record each left 3,000 files in a few months (0.43 s of each such ingest). A file of one
    record (or a few) has a narrow hash range in its statistics: the others are not opened."""
    from lake.compact import compact
    from lake.ingest import RECORD_HASH, store_quarantine
    from tests.conftest import files_opened, logging_files

    target = lake.Lake(tmp_path / "lake")
    for hour in range(8):
        lake.ingest(target, [write_ndjson(tmp_path / f"h{hour}.ndjson", [GOOD, "{bad " + str(hour)])], stream="orders")
    files = target.quarantine_files()
    assert len(files) == 8
    again = lake.ingest(target, [tmp_path / "h3.ndjson"], stream="orders")
    assert again.already_quarantined == 1 and len(target.quarantine_files()) == 8

    def stored(records: list[str]) -> tuple[int, int]:
        """(records known already, quarantine files opened) of a store of ``records`` as ingest quarantines them."""
        con = logging_files()
        con.execute("CREATE TABLE quarantine AS SELECT 'orders' AS stream, 'malformed record: malformed JSON' AS reason, 'in' AS source, "
                    "1::BIGINT AS line, unnest(?::VARCHAR[]) AS record", [records])
        rows = con.sql(f"SELECT *, NULL AS event_id, NULL AS partition_key, NULL::BIGINT AS sequence, NULL AS event_type, "
                       f"NULL::TIMESTAMPTZ AS event_time, {RECORD_HASH} AS record_hash, now() AS ingested_at, "
                       "9::BIGINT AS lake_version FROM quarantine").to_arrow_table()
        with target.commit_lock():
            known = store_quarantine(con, target, rows)
        return known, len(set(files_opened(con)) & set(target.quarantine_files() + files))

    assert stored(["{bad 5", "{bad 6"]) == (2, 2)  # their two files, of eight
    assert stored(["{new"]) == (0, 0) and len(target.quarantine_files()) == 9
    compact(target)
    assert stored(["{bad 5", "{new", "{newer"]) == (2, 1)  # one file, compacted: read


def test_a_quarantine_reason_quoting_bidi_controls_shows_them_in_a_notebook(tmp_path: Path) -> None:
    """A reason quotes the record's text; a right-to-left override in it turned the rest of the notebook's cell
    around (``1- :...`` for ``...: -1``), as it would in the check report, whose cells show such controls."""
    source = write_ndjson(tmp_path / "in.ndjson", [{**event(1), "sequence": "\u202e-1"}])
    result = lake.ingest(lake.Lake(tmp_path / "lake"), [source], stream="orders")
    assert result.reasons == {"sequence is not a non-negative int64: \u202e-1": 1}
    shown = result._repr_html_()
    assert "sequence is not a non-negative int64: ⟨U+202E⟩-1" in shown and "\u202e" not in shown
