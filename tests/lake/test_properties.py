"""Property: the same events (with duplicates, without conflicts), split into any batches and files
in any order and any input format, give the same lake content as one ingest of each event once."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lake
from tests.conftest import event, write_ndjson

POOL = [
    event(n, key=f"o{n % 5}", seq=n, type=("OrderPlaced", "OrderShipped")[n % 2], payload={"n": n, "x": [n, "y"]})
    for n in range(30)
]
COLUMNS = [c for c in lake.EVENT_SCHEMA.names if c not in ("ingested_at", "lake_version")]


def write(path: Path, records: list[dict[str, object]], fmt: str) -> Path:
    if fmt == "ndjson":
        return write_ndjson(path.with_suffix(".ndjson"), records)
    table = pa.table(
        {
            "event_id": [r["event_id"] for r in records],
            "partition_key": [r["partition_key"] for r in records],
            "sequence": pa.array([r["sequence"] for r in records], pa.int64()),
            "event_type": [r["event_type"] for r in records],
            "event_time": [r["event_time"] for r in records],
            "payload": [json.dumps(r["payload"]) for r in records],
        }
    )
    if fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, path.with_suffix(".csv"))
        return path.with_suffix(".csv")
    pq.write_table(table, path.with_suffix(".parquet"))
    return path.with_suffix(".parquet")


def lake_content(target: lake.Lake) -> list[tuple[object, ...]]:
    rel = lake.read_events(target).project(", ".join(COLUMNS)).order(", ".join(COLUMNS))
    return [tuple(json.loads(v) if c in ("payload",) and v else v for c, v in zip(COLUMNS, r, strict=True))
            for r in rel.fetchall()]


# an ingest = a list of files; a file = (format, list of event indices, duplicates allowed)
files = st.tuples(st.sampled_from(["ndjson", "csv", "parquet"]), st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=12))
ingests = st.lists(st.lists(files, min_size=1, max_size=3), min_size=1, max_size=3)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ingests)
def test_batches_file_order_and_duplicates_change_nothing(plan: list[list[tuple[str, list[int]]]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        split = lake.Lake(folder / "split")
        counter = 0
        for ingest in plan:
            paths = []
            for fmt, indices in ingest:
                counter += 1
                paths.append(write(folder / f"f{counter}", [POOL[i] for i in indices], fmt))
            lake.ingest(split, paths, stream="orders")

        once = lake.Lake(folder / "once")
        distinct = sorted({i for ingest in plan for _, indices in ingest for i in indices})
        lake.ingest(once, [write(folder / "all", [POOL[i] for i in distinct], "ndjson")], stream="orders")

        assert lake_content(split) == lake_content(once)
        assert lake.read_quarantine(split).count("*").fetchall()[0][0] == 0


# -- conflicts: a model of the documented rules ---------------------------------------------------
# ids e0..e11 share positions (key k0/k1, sequence 0..2), so ingests clash with each other and with
# the lake; the same id always has the same position, so its copies are true duplicates
CLASHING = [event(n, key=f"k{n % 2}", seq=n % 3) for n in range(12)]


def model(plan: list[list[list[int]]]) -> tuple[dict[str, tuple[object, ...]], list[tuple[int, int, set[tuple[str, str]]]]]:
    """The lake (event_id -> position) and, per ingest, (archived, duplicates, {(event_id, holder)})
    by the README's rules: the first copy of an id wins, the lake's ids are duplicates, a position
    the lake holds keeps its event, and inside the input the smallest event_id takes a position."""
    held: dict[str, tuple[object, ...]] = {}
    outcomes = []
    for ingest in plan:
        rows = [CLASHING[i] for indices in ingest for i in indices]
        firsts: dict[str, tuple[object, ...]] = {}
        for r in rows:
            firsts.setdefault(str(r["event_id"]), ("orders", r["partition_key"], r["sequence"]))
        fresh = {eid: pos for eid, pos in firsts.items() if eid not in held}
        taken = {pos: min(e for e, p in held.items() if p == pos) for pos in held.values()}
        conflicts = set()
        for eid, pos in fresh.items():
            holder = taken.get(pos, min(e for e, p in fresh.items() if p == pos))
            if holder != eid:
                conflicts.add((eid, holder))
        accepted = {e: p for e, p in fresh.items() if e not in {c[0] for c in conflicts}}
        held.update(accepted)
        outcomes.append((len(accepted), len(rows) - len(fresh), conflicts))
    return held, outcomes


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(st.lists(st.integers(0, len(CLASHING) - 1), min_size=1, max_size=8), min_size=1, max_size=2),
                min_size=1, max_size=3), st.sampled_from(["ndjson", "parquet"]))
def test_duplicates_and_conflicts_follow_the_rules(plan: list[list[list[int]]], fmt: str) -> None:
    held, outcomes = model(plan)
    with tempfile.TemporaryDirectory() as tmp:
        target = lake.Lake(Path(tmp) / "lake")
        for n, (ingest, (archived, duplicates, conflicts)) in enumerate(zip(plan, outcomes, strict=True)):
            paths = [write(Path(tmp) / f"i{n}-f{f}", [CLASHING[i] for i in indices], fmt) for f, indices in enumerate(ingest)]
            result = lake.ingest(target, paths, stream="orders")
            assert (result.archived, result.duplicates, result.quarantined) == (archived, duplicates, len(conflicts))
            # (a record quarantined again for the same reason is counted, not stored twice)
            stored = lake.read_quarantine(target).project("event_id, reason").fetchall()
            assert conflicts <= {(r[0], r[1].rsplit(" ", 1)[-1]) for r in stored}
        rows = lake.read_events(target).project("event_id, stream, partition_key, sequence").fetchall()
        assert {r[0]: tuple(r[1:]) for r in rows} == held
