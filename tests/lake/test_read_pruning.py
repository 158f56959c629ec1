"""Pruning is real: every file that cannot match a filter is overwritten with garbage, and the
filtered read still works (on DuckDB and Polars) and returns the right rows; unfiltered, it fails.

Which files are "outside" is decided from their content before they are corrupted, not from the
code under test: a file is outside when none of its rows has the filter's stream, key bucket,
event-time range or lake_version range.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest

import lake
import lake.audit
from lake.schema import bucket_of
from tests.conftest import T0, event, write_ndjson

DAYS = [T0 + timedelta(days=d) for d in range(3)]
KEYS = [f"o{k}" for k in range(12)]
TYPES = ["OrderPlaced", "OrderShipped", "PaymentAuthorized"]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    """Three commits, one per day; each spans two streams and all key buckets of 12 keys."""
    folder = tmp_path_factory.mktemp("pruning")
    target = lake.Lake(folder / "lake")
    versions = []
    for day, start in enumerate(DAYS):
        records = []
        for i, key in enumerate(KEYS):
            for stream in ("orders", "payments"):
                n = day * 1000 + i * 10 + (stream == "payments")
                records.append(
                    event(n, key=key, seq=day * 10 + (stream == "payments"), type=TYPES[(day + i) % 3],
                          at=start + timedelta(minutes=i), stream=stream)
                )
        result = lake.ingest(target, [write_ndjson(folder / f"day{day}.ndjson", records)])
        versions.append(result.lake_version)
    return folder / "lake", versions


def all_rows(path: Path) -> list[dict[str, object]]:
    return lake.read_events(lake.Lake(path)).to_arrow_table().to_pylist()


def file_rows(path: str) -> list[dict[str, object]]:
    table = pq.read_table(path)
    stream, bucket = _partition(path)
    return [{**r, "stream": stream, "bucket": bucket} for r in table.to_pylist()]


def _partition(path: str) -> tuple[str, int]:
    parts = dict(p.split("=", 1) for p in Path(path).parts if "=" in p)
    return parts["stream"], int(parts["bucket"])


FILTERS: dict[str, Callable[[list[int]], lake.EventFilter]] = {
    "stream": lambda v: lake.EventFilter(streams=("payments",)),
    "partition-keys": lambda v: lake.EventFilter(partition_keys=("o3", "o7")),
    "event-time": lambda v: lake.EventFilter(since=DAYS[1], until=DAYS[2]),
    "after-version": lambda v: lake.EventFilter(after_version=v[0]),
    "as-of": lambda v: lake.EventFilter(as_of=v[1]),
    "everything": lambda v: lake.EventFilter(
        streams=("orders",), event_types=("OrderShipped", "OrderPlaced"), since=DAYS[1],
        after_version=v[0], as_of=v[1], partition_keys=("o3", "o4", "o5"),
    ),
}


def matches(row: dict[str, object], f: lake.EventFilter, buckets: int, *, prunable_only: bool) -> bool:
    """Does ``row`` pass ``f``? With ``prunable_only``: only the file-level parts of it."""
    t = row["event_time"]
    assert isinstance(t, datetime)
    checks = [
        f.streams is None or row["stream"] in f.streams,
        f.since is None or t >= f.since,
        f.until is None or t < f.until,
        f.after_version is None or int(row["lake_version"]) > f.after_version,  # type: ignore[call-overload]
        f.as_of is None or int(row["lake_version"]) <= f.as_of,  # type: ignore[call-overload]
    ]
    if prunable_only:
        keys = f.partition_keys
        checks.append(keys is None or bucket_of(str(row["partition_key"]), buckets) in {bucket_of(k, buckets) for k in keys})
    else:
        checks.append(f.partition_keys is None or row["partition_key"] in f.partition_keys)
        checks.append(f.event_types is None or row["event_type"] in f.event_types)
    return all(checks)


def read_ids(target: lake.Lake, f: lake.EventFilter | None, engine: str) -> set[str]:
    if engine == "polars":
        frame = lake.read_events(target, f, engine="polars").collect()
        return set(frame.get_column("event_id").to_list())
    con = duckdb.connect()
    return {r[0] for r in lake.read_events(target, f, con=con).project("event_id").fetchall()}


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_files_outside_the_filter_are_never_opened(tmp_path: Path, base: tuple[Path, list[int]], name: str) -> None:
    path, versions = base
    copy = tmp_path / "lake"
    shutil.copytree(path, copy)
    target = lake.Lake(copy)
    f = FILTERS[name](versions)
    expected = {str(r["event_id"]) for r in all_rows(copy) if matches(r, f, target.buckets, prunable_only=False)}
    assert expected  # every filter selects something

    files = [d.path for d in target.snapshot().files]
    outside = [
        p for p in files
        if not any(matches(r, f, target.buckets, prunable_only=True) for r in file_rows(p))
    ]
    assert outside and len(outside) < len(files)
    for p in outside:
        Path(p).write_bytes(b"garbage, not parquet" * 50)

    for engine in ("duckdb", "polars"):
        assert read_ids(target, f, engine) == expected, engine
        with pytest.raises((duckdb.Error, pl.exceptions.PolarsError, OSError)):
            read_ids(target, None, engine)


def test_a_snapshot_reads_file_statistics_without_importing_pandas(base: tuple[Path, list[int]]) -> None:
    """Every command takes a snapshot first; pandas would add ~0.3 s to each (pyarrow imports it
    to convert timestamps or to look for a DataFrame)."""
    code = (
        "import sys, lake; s = lake.Lake(sys.argv[1]).snapshot(); "
        "assert s.files and all(f.min_time.tzinfo is not None for f in s.files); "
        "print('pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(base[0])], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "False"


def test_filters_take_what_a_notebook_passes(base: tuple[Path, list[int]]) -> None:
    """One name for a tuple, a date or an ISO text or a naive time (UTC) for an aware time."""
    events = lake.Lake(base[0])

    def count(**filters: object) -> int:
        return int(lake.read_events(events, lake.EventFilter(**filters)).aggregate("count(*)").fetchall()[0][0])  # type: ignore[arg-type]

    assert count(streams="orders") == count(streams=("orders",)) == len(DAYS) * len(KEYS)
    assert count(event_types="OrderPlaced") == count(event_types=["OrderPlaced"]) > 0
    assert count(partition_keys="o3") == count(partition_keys=("o3",)) == 2 * len(DAYS)
    day = DAYS[1]
    assert count(since=day.date(), until=DAYS[2].date()) == count(since=day, until=DAYS[2]) == 2 * len(KEYS)
    assert count(since=day.replace(tzinfo=None)) == count(since=day.isoformat()) == count(since=day)


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_a_time_in_the_analysts_own_zone_is_the_same_moment_in_utc(base: tuple[Path, list[int]], engine: str) -> None:
    """A notebook's datetime in its own zone (a ZoneInfo) was a Polars SchemaError traceback: Polars
    refused to compare it with the lake's UTC times. It is the same moment as in UTC, also as ISO text."""
    events = lake.Lake(base[0])

    def count(since: object, until: object) -> int:
        found = lake.read_events(events, lake.EventFilter(since=since, until=until), engine=engine)  # type: ignore[arg-type]
        if engine == "polars":
            return int(found.select(pl.len()).collect().item())
        return int(found.aggregate("count(*)").fetchall()[0][0])

    chatham = ZoneInfo("Pacific/Chatham")
    since, until = DAYS[1].astimezone(chatham), DAYS[2].astimezone(ZoneInfo("America/Los_Angeles"))
    assert count(since, until) == count(since.isoformat(), until.isoformat()) == count(DAYS[1], DAYS[2]) == 2 * len(KEYS)


def test_a_lake_version_from_a_pandas_column_is_a_lake_version(base: tuple[Path, list[int]]) -> None:
    """as_of=df["lake_version"].max() is a NumPy integer: it was refused as "must be a lake_version (an
    integer >= 0), not np.int64(2)", by read_events and by the audit."""
    events = lake.Lake(base[0])

    def count(**filters: object) -> int:
        return int(lake.read_events(events, lake.EventFilter(**filters)).aggregate("count(*)").fetchall()[0][0])  # type: ignore[arg-type]

    assert count(as_of=np.int64(2), after_version=np.int32(1)) == count(as_of=2, after_version=1) > 0
    assert lake.audit.audit(events, as_of=np.int64(2)).to_dict() == lake.audit.audit(events, as_of=2).to_dict()


@pytest.mark.parametrize(("filters", "engine", "message"), [
    ({"streams": [1, 2]}, "duckdb", "streams must be text"),
    ({"since": "yesterday"}, "duckdb", "since 'yesterday' is not an ISO date"),
    ({"since": 5}, "duckdb", "since must be a datetime"),
    ({"since": DAYS[2], "until": DAYS[1]}, "duckdb", "is not before until"),
    ({"as_of": -1}, "duckdb", "as_of must be a lake_version"),
    ({"as_of": 99}, "duckdb", "as_of 99 is after the lake's latest lake_version 3"),
    ({}, "pandas", "engine 'pandas' is not one of"),
])
def test_a_filter_that_cannot_mean_anything_is_an_error(base: tuple[Path, list[int]], filters: dict[str, object],
                                                       engine: str, message: str) -> None:
    with pytest.raises(lake.LakeError, match=message):
        lake.read_events(lake.Lake(base[0]), lake.EventFilter(**filters), engine=engine)  # type: ignore[arg-type,call-overload]
