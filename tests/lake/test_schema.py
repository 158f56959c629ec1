"""The key bucket is computed in Python (planning, pruning) and in DuckDB (ingest): they must agree."""

from __future__ import annotations

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from lake.schema import bucket_of, bucket_sql
from lake.sql import literal


@settings(max_examples=200, deadline=None)
@given(key=st.text(min_size=1, max_size=60).filter(lambda k: "\x00" not in k), buckets=st.sampled_from([1, 7, 16, 256]))
def test_python_and_sql_buckets_agree(key: str, buckets: int) -> None:
    sql = bucket_sql(literal(key), buckets)
    assert duckdb.sql(f"SELECT {sql}").fetchall()[0][0] == bucket_of(key, buckets)
