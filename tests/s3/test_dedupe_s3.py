"""`rebuild lake dedupe` on a lake in a bucket (moto's server): the same result as on local disk."""

from __future__ import annotations

from pathlib import Path

import duckdb

import lake
from lake.dedupe import Deduped, dedupe, records
from tests.conftest import archive_again, write_ndjson
from tests.orders import order_events
from tests.s3.conftest import S3


def test_dedupe_in_a_bucket_removes_the_copies_and_quarantines_a_differing_one(
        tmp_path: Path, s3_server: S3, s3_uri: str) -> None:
    remote = lake.Lake(s3_uri, storage_options=s3_server.options).create(buckets=4)
    lake.ingest(remote, [write_ndjson(tmp_path / "a.ndjson", order_events(1) + order_events(2))], stream="orders")
    archive_again(remote, ["ev-o-0000001-4"])
    archive_again(remote, ["ev-o-0000002-2"], payload='{"quantity": 9}')
    result = dedupe(remote)
    assert (result.removed, result.quarantined, result.keys) == (2, 1, ("o-0000001", "o-0000002"))
    rel = lake.read_events(remote, con=duckdb.connect())
    assert rel.aggregate("count(*), count(DISTINCT event_id), max(lake_version)").fetchall() == [(10, 10, 1)]
    assert lake.read_quarantine(remote, duckdb.connect()).project("event_id").fetchall() == [("ev-o-0000002-2",)]
    assert dedupe(remote).removed == 0
    # another machine reading the bucket finds what it removed, for the views' next runs (rebuild.dedupe.pending)
    elsewhere = lake.Lake(s3_uri, storage_options=s3_server.options)
    assert result.record == f"{s3_uri}/_dedupe/{result.delta_version}.parquet"
    assert records(elsewhere, -1, elsewhere.snapshot()) == [
        Deduped(result.delta_version or 0, ("o-0000001", "o-0000002"), result.first_of, 1)]
