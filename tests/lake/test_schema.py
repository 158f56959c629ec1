"""The key bucket and a stream's folder are computed in Python (planning, pruning, --stream) and in DuckDB
(ingest): they must agree."""

from __future__ import annotations

import duckdb
from hypothesis import given, settings
from hypothesis import strategies as st

from urllib.parse import quote

from lake.schema import (
    STREAM_FOLDER_MAX, bucket_of, bucket_sql, partition_folder, percent_encoded, stream_too_long, stream_too_long_sql,
)
from lake.sql import literal


@settings(max_examples=200, deadline=None)
@given(key=st.text(min_size=1, max_size=60), buckets=st.sampled_from([1, 7, 16, 256]))
def test_python_and_sql_buckets_agree(key: str, buckets: int) -> None:
    sql = bucket_sql(literal(key), buckets)
    assert duckdb.execute(f"SELECT {sql}").fetchall()[0][0] == bucket_of(key, buckets)


@settings(max_examples=200, deadline=None)
@given(stream=st.text(min_size=1, max_size=120).filter(lambda s: "\x00" not in s) | st.sampled_from(
    ["ü" * 41, "ü" * 42, "a" * STREAM_FOLDER_MAX, "a" * (STREAM_FOLDER_MAX + 1), "a/b=c%d e~f_g.h-i", "😀" * 20]))
def test_python_and_sql_agree_on_a_stream_s_folder_and_when_its_name_is_too_long(stream: str) -> None:
    """One rule and one message, for --stream (Python, before anything is read) and for the records' own
    streams (SQL, which quarantines them): the folder's name is what DuckDB's url_encode writes too."""
    fits, reason = stream_too_long_sql(literal(stream))
    encoded, sql_fits, sql_reason = duckdb.execute(
        f"SELECT url_encode({literal(stream)}), {fits}, CASE WHEN NOT ({fits}) THEN {reason} END").fetchall()[0]
    assert partition_folder(stream) == encoded == quote(stream, safe="")
    assert (sql_fits, sql_reason) == (stream_too_long(stream) is None, stream_too_long(stream))


def test_a_name_in_a_report_s_file_name_encodes_only_what_a_path_reads_otherwise() -> None:
    assert percent_encoded("exports/live copy 100% ü", only="%/") == "exports%2Flive copy 100%25 ü"
    assert percent_encoded("a/b", only="/") == "a%2Fb" and percent_encoded("ü/", only="ü") == "%C3%BC/"
