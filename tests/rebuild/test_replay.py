"""The replay's Polars source: DuckDB feeds a projection only the columns its plan uses."""

from __future__ import annotations

import duckdb
import polars as pl
import pytest

from rebuild.replay import _events_frame


def test_a_polars_projection_reads_only_the_columns_it_uses() -> None:
    con = duckdb.connect()
    con.execute(
        "CREATE TEMP VIEW events AS SELECT i AS n, 'k' || (i % 3) AS partition_key, "
        "CAST(CASE WHEN i >= 0 THEN error('the payload column was read') END AS VARCHAR) AS payload "
        "FROM range(10) t(i)"
    )
    frame = _events_frame(con)
    assert frame.collect_schema().names() == ["n", "partition_key", "payload"]
    totals = frame.group_by("partition_key").agg(pl.col("n").sum()).sort("partition_key").collect(engine="streaming")
    assert totals.rows() == [("k0", 18), ("k1", 12), ("k2", 15)]
    with pytest.raises(Exception, match="the payload column was read"):
        frame.collect()
