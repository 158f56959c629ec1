"""What an ingest reads of the lake and of its libraries: only what the judging needs."""

from __future__ import annotations

import importlib
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

import lake
from lake.errors import LakeBusy
from lake.table import EVENTS, DataFile
from lake.mapping import Mapping
from lake.validate import Batch
from tests.conftest import event, write_ndjson

ingest_module = importlib.import_module("lake.ingest")  # the package's ``ingest`` is the function


def _staged(tmp_path: Path, rows: list[tuple[str, int]]) -> duckdb.DuckDBPyConnection:
    """A staging connection holding valid input rows ``(event_id, sequence)`` of key o1."""
    con = ingest_module._connect(tmp_path, "1GB")
    table = pa.table({
        "_line": pa.array(range(1, len(rows) + 1), pa.int64()),
        "event_id": [r[0] for r in rows],
        "partition_key": ["o1"] * len(rows),
        "sequence": pa.array([r[1] for r in rows], pa.int64()),
        "event_type": ["OrderPlaced"] * len(rows),
        "event_time": pa.array([datetime(2026, 1, 1, tzinfo=UTC)] * len(rows), pa.timestamp("us", "UTC")),
        "payload": ["{}"] * len(rows),
    })  # fmt: skip
    ingest_module._stage(con, [Batch("input", "parquet", table)], Mapping(), "orders")
    return con


def test_the_lookup_keeps_only_lake_events_sharing_an_id_or_a_position(tmp_path: Path) -> None:
    """A key with a long history costs the judging only its events that collide with the input."""
    target = lake.Lake(tmp_path / "lake")
    lake.ingest(target, [write_ndjson(tmp_path / "a.ndjson", [event(n, key="o1") for n in range(1, 6)])], stream="orders")
    con = _staged(tmp_path, [("e6", 6), ("e3", 3), ("e9", 4)])  # new, duplicate, conflict with e4
    ingest_module._load_existing(con, target)
    assert sorted(con.sql("SELECT event_id, sequence FROM existing").fetchall()) == [("e3", 3), ("e4", 4)]


def test_ingest_does_not_import_pandas(tmp_path: Path) -> None:
    """pyarrow imports pandas (~0.4 s) to look for a DataFrame when handed a numpy array (the blank lines
    take a path of their own)."""
    source = write_ndjson(tmp_path / "in.ndjson", [event(n) for n in range(1, 4)])
    lines = source.read_text().splitlines(keepends=True)
    source.write_text(lines[0] + "\n   \n" + "".join(lines[1:]))
    pq_source = tmp_path / "in.parquet"
    duckdb.sql(f"COPY (SELECT * FROM read_json('{source}')) TO '{pq_source}' (FORMAT parquet)")
    code = (
        "import sys, lake; "
        "[lake.ingest(lake.Lake(sys.argv[1] + '/lake-' + p[-7:]), [p], stream='orders') for p in sys.argv[2:]]; "
        "print('pandas' in sys.modules)"
    )
    args = [sys.executable, "-c", code, str(tmp_path), str(source), str(pq_source)]
    out = subprocess.run(args, check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "False"


def test_a_commit_pinned_to_a_version_another_writer_took_is_busy(tmp_path: Path) -> None:
    """The kept latest table is reused for a pinned commit; it must still lose a race cleanly."""
    path = tmp_path / "lake"
    lake.ingest(lake.Lake(path), [write_ndjson(tmp_path / "a.ndjson", [event(1)])], stream="orders")
    mine = lake.Lake(path)
    version = mine.next_version()
    lake.ingest(lake.Lake(path), [write_ndjson(tmp_path / "b.ndjson", [event(2)])], stream="orders")
    with pytest.raises(LakeBusy):
        mine.commit_files(EVENTS, [], expected_version=version, metadata={"workbench.position": "1"})
    assert mine.next_version() == version + 1


@pytest.mark.parametrize("key", ["𠮷野家", "o-\U00040001", "😀"])  # U+20BB7 (a name's kanji), a plane 4 one, an emoji
def test_keys_with_characters_beyond_the_bmp_find_their_duplicates_and_their_files(tmp_path: Path, key: str) -> None:
    """deltalake read an escaped pair above U+1FFFF in a file's key statistics as another character
    (U+20BB7 as U+10BB7), so the lookup skipped the file that held the key: its events were archived twice."""
    events = lake.Lake(tmp_path / "lake").create()
    first = [event(1, key=key), event(2, key=key)]
    lake.ingest(events, [write_ndjson(tmp_path / "a.ndjson", first)], stream="orders")
    again = lake.ingest(events, [write_ndjson(tmp_path / "b.ndjson", [event(2, key=key, payload={"n": 0}), event(3, key=key)])],
                        stream="orders")
    assert (again.archived, again.duplicates) == (1, 1)
    assert {f.min_key for f in events.snapshot().files} == {key}
    assert len(events.snapshot().select(keys=[key])) == 2


def test_a_file_whose_key_statistics_hold_a_character_beyond_the_bmp_is_read() -> None:
    """Lakes written before the statistics were stored as UTF-8 hold the misread ones: such files are read."""
    misread = DataFile(path="p", stream="orders", bucket=0, rows=1, size_bytes=1, min_time=None, max_time=None,
                       min_version=1, max_version=1, min_key="\U00010bb7野家", max_key="\U00010bb7野家")
    assert misread.may_hold_any(["𠮷野家"])
    plain = DataFile(path="p", stream="orders", bucket=0, rows=1, size_bytes=1, min_time=None, max_time=None,
                     min_version=1, max_version=1, min_key="o-1", max_key="o-2")
    assert not plain.may_hold_any(["o-3"])
