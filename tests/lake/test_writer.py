"""The events' data files, written by DuckDB and committed as Delta add actions: plain Parquet with
the stored schema's types, statistics that match what the files hold, any stream name."""

from __future__ import annotations

from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from deltalake import DeltaTable

import lake
from lake.schema import STATS_COLUMNS, STORED_SCHEMA
from tests.conftest import event, write_ndjson


def test_statistics_match_each_files_rows(tmp_path: Path) -> None:
    records = [event(n, key=f"o{n % 7}", seq=n, payload={"text": "x" * (n % 50)}) for n in range(200)]
    target = lake.Lake(tmp_path / "lake")
    result = lake.ingest(target, [write_ndjson(tmp_path / "in.ndjson", records)], stream="orders")
    files = target.snapshot().files
    assert sum(f.rows for f in files) == result.archived == 200
    for f in files:
        rows = pq.read_table(f.path).to_pylist()
        assert f.rows == len(rows) and f.size_bytes == Path(f.path).stat().st_size
        assert (f.min_key, f.max_key) == (min(r["partition_key"] for r in rows), max(r["partition_key"] for r in rows))
        assert (f.min_time, f.max_time) == (min(r["event_time"] for r in rows), max(r["event_time"] for r in rows))
        assert f.min_version == f.max_version == result.lake_version
        assert {r["partition_key"] for r in rows} <= {f"o{k}" for k in range(7) if lake.bucket_of(f"o{k}") == f.bucket}


def test_files_are_plain_parquet_with_the_stored_types(tmp_path: Path) -> None:
    target = lake.Lake(tmp_path / "lake")
    lake.ingest(target, [write_ndjson(tmp_path / "in.ndjson", [event(n) for n in range(5)])], stream="orders")
    stored = {f.name: f.type for f in STORED_SCHEMA if f.name not in ("stream", "bucket")}
    for f in target.snapshot().files:
        assert {f.name: f.type for f in pq.read_schema(f.path)} == stored
    assert pl.scan_delta(target.table_uri("events")).collect().schema["event_time"] == pl.Datetime("us", "UTC")
    assert DeltaTable(target.table_uri("events")).to_pyarrow_table().num_rows == 5


def test_the_log_keeps_statistics_of_the_pruned_columns_only_and_cuts_long_text(tmp_path: Path) -> None:
    """Every add action carried the bounds of all ten columns (32-character prefixes of payload and metadata
    too), which no reader prunes by: 80% of every checkpoint, and delta-rs parses them again at each commit."""
    target = lake.Lake(tmp_path / "lake")
    key = "k" * 30 + "ab" + "c" * 8  # 40 characters, as a UUID key has 36
    lake.ingest(target, [write_ndjson(tmp_path / "in.ndjson", [event(1, key=key, payload={"text": "y" * 100})])],
                stream="orders")
    table = DeltaTable(target.table_uri("events"))
    actions = pa.table(table.get_add_actions(flatten=True)).to_pydict()
    stats = {name.split(".", 1)[1] for name in actions if name.startswith(("min.", "max.", "null_count."))}
    assert stats == set(STATS_COLUMNS)
    assert table.metadata().configuration["delta.dataSkippingStatsColumns"] == ",".join(STATS_COLUMNS)
    assert actions["min.partition_key"] == [key[:32]]  # a prefix is still a lower bound
    assert actions["max.partition_key"] == [key[:31] + "c"] > [key]  # the prefix with its last character raised
    assert actions["null_count.partition_key"] == [0] and actions["max.lake_version"] == [1]


def test_any_stream_name_round_trips(tmp_path: Path) -> None:
    target = lake.Lake(tmp_path / "lake")
    for n, stream in enumerate(["a/b c=d%é", "q?#&+", "plain"]):
        lake.ingest(target, [write_ndjson(tmp_path / f"{n}.ndjson", [event(n)])], stream=stream)
    assert sorted(target.snapshot().streams()) == sorted(["a/b c=d%é", "q?#&+", "plain"])
    rows = lake.read_events(target).project("stream, event_id").order("event_id").fetchall()
    assert rows == [("a/b c=d%é", "e0"), ("q?#&+", "e1"), ("plain", "e2")]
    assert duckdb.execute(f"SELECT count(*) FROM read_parquet('{target.uri}/events/*/*/*.parquet')").fetchall() == [(3,)]


def test_files_keyed_by_long_ids_are_still_pruned_by_key(tmp_path: Path) -> None:
    target = lake.Lake(tmp_path / "lake")
    keys = [f"{prefix}-{n:036d}" for prefix in ("aaa", "zzz") for n in range(3)]  # 40 characters each
    for i, group in enumerate((keys[:3], keys[3:])):
        records = [event(10 * i + n, key=k) for n, k in enumerate(group)]
        lake.ingest(target, [write_ndjson(tmp_path / f"{i}.ndjson", records)], stream="orders")
    snapshot = target.snapshot()
    assert all(f.max_key is not None for f in snapshot.files)
    chosen = snapshot.select(keys=[keys[4]])
    assert chosen and all(f.min_version == snapshot.lake_version for f in chosen)  # only the second commit's files
