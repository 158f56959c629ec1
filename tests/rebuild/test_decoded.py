"""Decoded payload columns: compaction stores declared payload fields as typed columns, and a
replay reading them gets exactly what parsing the JSON gives (so compacting never changes a view)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import duckdb
import hypothesis.strategies as st
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings

import lake
from lake.compact import compact
from rebuild import Workbench
from rebuild.cli import main
from rebuild.projection import Projection
from rebuild.replay import Selection, events_sql
from tests.conftest import event, write_ndjson
from tests.orders import order_events

TYPES = ["VARCHAR", "BOOLEAN", "TINYINT", "INTEGER", "BIGINT", "UBIGINT", "DOUBLE", "FLOAT",
         "DECIMAL(18,2)", "DECIMAL(38,10)", "DATE", "TIMESTAMP", "TIMESTAMPTZ"]
FIELDS = ["a", "b", "c"]
#: JSON values that convert well, badly or not at all to the types above
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.decimals(places=3, allow_nan=False, allow_infinity=False).map(float),
    st.sampled_from(["3", "2.5", "-7", "abc", "", "true", "2024-01-02", "2024-01-02T03:04:05Z",
                     "2024-01-02 03:04:05+02:00", "1e3", " 4 ", "é\"\\"]),
    st.text(max_size=6), st.lists(st.integers(), max_size=2), st.dictionaries(st.sampled_from(FIELDS), st.integers(), max_size=1),
)
PAYLOADS = st.dictionaries(st.sampled_from(FIELDS + ["other"]), VALUES, max_size=4)


def replayed(target: lake.Lake, spec: dict[str, str]) -> list[tuple[object, ...]]:
    """The events as a replay of a projection declaring ``spec`` gets them, sorted."""
    projection = Projection(name="p", version=1, key=("partition_key",), func=lambda: "", payload=spec)
    sql, _, _ = events_sql(target, target.snapshot(), projection, Selection(lake.EventFilter()))
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    return sorted(con.sql(f"SELECT event_id, {', '.join(spec)} FROM ({sql})").fetchall(), key=repr)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads=st.lists(PAYLOADS, min_size=1, max_size=12), types=st.lists(st.sampled_from(TYPES), min_size=3, max_size=3))
def test_decoded_columns_read_exactly_what_parsing_the_payload_gives(tmp_path_factory: object, payloads: list[dict[str, object]], types: list[str]) -> None:
    tmp = tmp_path_factory.mktemp("decoded")  # type: ignore[attr-defined]
    target = lake.Lake(tmp / "lake")
    spec = dict(zip(FIELDS, types, strict=True))
    for half in (payloads[::2], payloads[1::2]):  # two commits: a partition with two files to compact
        if half:
            n = len(list(target.snapshot().files)) * 100 if target.exists() else 0
            records = [event(n + i, key=f"k{i % 3}", payload=p) for i, p in enumerate(half)]
            lake.ingest(target, [write_ndjson(tmp / f"{n}.ndjson", records)], stream="s")
    parsed = replayed(target, spec)
    assert len(parsed) == len(payloads)
    compact(target, small_bytes=1 << 40, decode=spec.items())
    decoded = target.decoded_columns([f.path for f in target.snapshot().files])
    assert all(len(c) == len(FIELDS) for c in decoded.values())
    assert replayed(target, spec) == parsed


def build(tmp_path: Path) -> Workbench:
    target = lake.Lake(tmp_path / "lake")
    for o in range(1, 40):
        lake.ingest(target, [write_ndjson(tmp_path / f"o{o}.ndjson", order_events(o, customer=o % 4, refund=o % 3 == 0))], stream="orders")
    return Workbench.open(None, lake_uri=str(tmp_path / "lake"), store_uri=f"duckdb://{tmp_path}/views.duckdb")


def views(wb: Workbench) -> dict[str, object]:
    out = {}
    for name in ("order_summary", "customer_ltv", "daily_revenue", "order_summary_fold"):
        wb.run(name, full=True, progress="none")
        out[name] = wb.store.read(f"{name}__shadow").sort_by([(k, "ascending") for k in wb.projection(name).key])
    return out


def test_views_are_the_same_before_and_after_compaction_and_after_new_events(tmp_path: Path) -> None:
    wb = build(tmp_path)
    before = views(wb)
    result = wb.compact()
    assert result.partitions > 0 and wb.compact().partitions == 0  # decoded once
    projection = wb.projection("order_summary")
    sql, _, _ = events_sql(wb.lake, wb.lake.snapshot(), projection, Selection(lake.EventFilter(streams=projection.streams)))
    assert "from_json" not in sql and '"payload:amount:DECIMAL(18,2)" AS "amount"' in sql
    assert views(wb) == before
    # new events after compaction: the replay reads the columns of old files and parses new ones
    late = [e for o in (3, 41) for e in order_events(o, first_seq=30, customer=1)]
    lake.ingest(wb.lake, [write_ndjson(tmp_path / "late.ndjson", late)], stream="orders")
    sql, _, _ = events_sql(wb.lake, wb.lake.snapshot(), projection, Selection(lake.EventFilter(streams=projection.streams)))
    assert "UNION ALL" in sql and "from_json" in sql
    grown = views(wb)
    lake.compact.compact(wb.lake, decode=())  # compacting without decoding: everything is parsed again
    assert views(wb) == grown
    wb.close()


def test_a_field_declared_with_another_type_is_parsed(tmp_path: Path) -> None:
    target = lake.Lake(tmp_path / "lake")
    records = [event(i, key=f"k{i}", payload={"amount": "12.345", "n": i}) for i in range(4)]
    lake.ingest(target, [write_ndjson(tmp_path / "a.ndjson", records[:2])], stream="s")
    lake.ingest(target, [write_ndjson(tmp_path / "b.ndjson", records[2:])], stream="s")
    compact(target, small_bytes=1 << 40, decode=[("amount", "DECIMAL(18,2)"), ("blob", "JSON")])
    paths = [f.path for f in target.snapshot().files]
    carried = target.decoded_columns(paths)
    assert set().union(*carried.values()) == {"payload:amount:DECIMAL(18,2)"}  # JSON is not decodable
    assert target.split_decoded(paths, ["payload:amount:DECIMAL(18,2)"]) == (paths, [])
    assert target.split_decoded(paths, ["payload:amount:DOUBLE"]) == ([], paths)
    assert [r[1] for r in replayed(target, {"amount": "DECIMAL(18,2)"})] == [Decimal("12.35")] * 4
    assert {r[1] for r in replayed(target, {"amount": "DOUBLE"})} == {12.345}


def test_lake_compact_decodes_the_projections_fields_unless_told_not_to(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = lake.Lake(tmp_path / "lake")
    for o in range(1, 6):
        lake.ingest(target, [write_ndjson(tmp_path / f"o{o}.ndjson", order_events(o))], stream="orders")
    args = ["--lake", str(tmp_path / "lake"), "--store", f"duckdb://{tmp_path}/v.duckdb", "lake", "compact", "--json"]
    assert main([*args, "--no-decode"]) == 0
    assert json.loads(capsys.readouterr().out)["partitions"] > 0
    names = {n for f in target.snapshot().files for n in pq.read_schema(f.path).names}
    assert not any(n.startswith("payload:") for n in names)
    assert main(args) == 0
    names = {n for f in target.snapshot().files for n in pq.read_schema(f.path).names}
    assert {"payload:amount:DECIMAL(18,2)", "payload:customer_id:VARCHAR"} <= names
