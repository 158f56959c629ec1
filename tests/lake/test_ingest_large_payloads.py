"""Events far larger than the sample's: documents and base64 blobs of a megabyte in the payload."""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lake
from tests.conftest import write_ndjson


def _documents(count: int, size: int) -> list[dict[str, object]]:
    rng = random.Random(7)
    return [{"event_id": f"e{n}", "partition_key": f"d{n % 7}", "sequence": n, "event_type": "DocumentStored",
             "event_time": "2026-09-01T00:00:00+00:00",
             "payload": {"amount": n, "doc": base64.b64encode(rng.randbytes(size * 3 // 4)).decode()}}
            for n in range(1, count + 1)]


@pytest.mark.parametrize(("fmt", "memory"), [("ndjson", "512MB"), ("parquet", "200MB")])
def test_megabyte_payloads_are_archived_within_a_memory_limit_many_times_their_size(tmp_path: Path, fmt: str,
                                                                                      memory: str) -> None:
    """48 payloads of 1 MB (a 48 MB file) ran out of memory under a 1 GB memory_limit as NDJSON (under
    300 MB as Parquet): DuckDB stages and writes 2,048 rows at a time, and its JSON functions hold several
    copies of them, so the whole file was in flight at once, many times over. Large rows are now staged
    and written a few MB at a time."""
    events = _documents(48, 1 << 20)
    if fmt == "ndjson":
        source = write_ndjson(tmp_path / "docs.ndjson", events)
    else:
        source = tmp_path / "docs.parquet"
        pq.write_table(pa.Table.from_pylist([{**e, "payload": json.dumps(e["payload"])} for e in events]), source)
    target = lake.Lake(tmp_path / "lake").create()
    result = lake.ingest(target, [source], stream="docs", memory_limit=memory, temp_directory=str(tmp_path / "spill"))
    assert (result.archived, result.quarantined) == (48, 0)
    stored = lake.read_events(target).order("sequence").select("event_id, payload").fetchall()
    assert [(i, json.loads(p)) for i, p in stored] == [(e["event_id"], e["payload"]) for e in events]


def test_a_batch_of_small_rows_is_staged_whole_and_one_of_large_rows_in_slices_of_every_row() -> None:
    from lake.formats import BATCH_BYTES, slices

    small = pa.table({"_raw": ["x" * 100] * 10_000})
    assert [(t.num_rows, large) for t, large in slices(small)] == [(10_000, False)]  # as before: no more statements
    sizes = [100, 3 * BATCH_BYTES, 100, 100, BATCH_BYTES // 2, BATCH_BYTES // 2, 100]
    mixed = pa.table({"_raw": ["y" * n for n in sizes], "_line": list(range(1, len(sizes) + 1))})
    parts = [t for t, large in slices(mixed) if large]
    assert pa.concat_tables(parts).equals(mixed)
    assert [t.num_rows for t in parts] == [1, 1, 3, 2]  # a row larger than a slice is a slice of its own
