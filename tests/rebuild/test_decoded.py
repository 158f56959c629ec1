"""Decoded payload columns: compaction stores declared payload fields as typed columns, and a
replay reading them gets exactly what parsing the JSON gives (so compacting never changes a view)."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from pathlib import Path

import duckdb
import hypothesis.strategies as st
import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings

import lake
from lake.decoding import COERCED, LOST, ROUNDED, decoding_code
from lake.sql import literal
from lake.compact import compact
from rebuild import Config, ProjectionError, Workbench, projection
from rebuild.cli import main
from rebuild.projection import Projection, Registry
from rebuild.decoding import clean_files
from rebuild.replay import Selection, decoded_files, decoding_sql, events_sql
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
    """The events as a replay of a projection declaring ``spec`` gets them, with how each field decoded
    (``decoding_sql``), sorted."""
    projection = Projection(name="p", version=1, key=("partition_key",), func=lambda: "", payload=spec)
    sql, _, _ = events_sql(target, target.snapshot(), projection, Selection(lake.EventFilter()))
    codes = decoding_sql(target, target.snapshot(), projection, Selection(lake.EventFilter()))
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    how = ", ".join(f"__code_{i}" for i in range(len(spec)))
    return sorted(con.sql(f"SELECT event_id, {', '.join(spec)}, {how} FROM ({sql}) JOIN ({codes}) USING (event_id)").fetchall(),
                  key=repr)


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
    assert all(len(c) == 2 * len(FIELDS) for c in decoded.values())  # each field's value and how it decoded
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
    assert set().union(*carried.values()) == {"payload:amount:DECIMAL(18,2)", "decoding:amount:DECIMAL(18,2)"}  # JSON is not decodable
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


PAID = {"amount": "DECIMAL(18,2)", "paid_in_full": "BOOLEAN"}


def _paid_sql() -> str:
    return "SELECT partition_key AS k, sum(amount) AS paid, bool_or(paid_in_full) AS full FROM events GROUP BY ALL"


def _paid_polars(events: pl.LazyFrame) -> pl.LazyFrame:
    return events.group_by(k=pl.col("partition_key")).agg(paid=pl.col("amount").sum(), full=pl.col("paid_in_full").any())


def _payments(first: int, count: int, odd: dict[int, object] | None = None, field: str = "amount") -> list[dict[str, object]]:
    """``count`` payments of 1.50, paid in full, but those numbered in ``odd`` whose ``field`` holds the value given."""
    odd = odd or {}
    return [event(n, key=f"k{n % 50}", payload={"amount": 1.5, "paid_in_full": True, **({field: odd[n]} if n in odd else {})})
            for n in range(first, first + count)]


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_values_that_do_not_decode_are_counted_in_every_event_before_and_after_compaction(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, engine: str) -> None:
    """Only the first 10,000 events were looked at: of 3 amounts that were objects or text among 12,000
    events, the run said "1 of 9999" and read the other 2 as NULL (Polars sums them to 0) without a word."""
    target = lake.Lake(tmp_path / "lake")
    bad: dict[int, object] = {20: {"value": 1.5}, 10_500: [1.5], 11_900: "lots"}
    for first in (0, 6_000):  # two files of a partition: compaction rewrites them as one
        lake.ingest(target, [write_ndjson(tmp_path / f"{first}.ndjson", _payments(first, 6_000, bad))], stream="s")
    registry = Registry()
    projection(name="paid", key="k", engine=engine, incremental="full", payload=PAID,  # type: ignore[arg-type]
               registry=registry)(_paid_sql if engine == "duckdb" else _paid_polars)
    config = Config(lake_uri=target.uri, store_uri=f"duckdb://{tmp_path}/v.duckdb", projection_modules=(),
                    reports_dir=str(tmp_path / "reports"))
    with Workbench(config, registry=registry) as wb:
        for compacted in (False, True):
            caplog.clear()
            wb.run("paid", progress="none")
            assert "3 of 12,000 values of payload field 'amount' do not convert to DECIMAL(18,2) and read as NULL (e.g. " \
                   in caplog.text
            assert re.search(r'\(e.g. (\{"value":1.5\} in event e20|\[1.5\] in event e10500|"lots" in event e11900)\)',
                             caplog.text)
            assert "'paid_in_full'" not in caplog.text
            if not compacted:
                assert wb.compact().partitions > 0
        codes = decoding_sql(target, target.snapshot(), wb.projection("paid"), Selection(lake.EventFilter()))
        assert "json_extract" not in codes and '"decoding:amount:DECIMAL(18,2)"' in codes  # no payload parsed
        # and the compacted files whose codes' statistics say every value read as itself are not read at all
        typed = decoded_files(target, target.snapshot(), wb.projection("paid"), Selection(lake.EventFilter()))
        holding = {name for (name,) in duckdb.connect().sql(
            f"SELECT DISTINCT filename FROM read_parquet({literal(typed)}, filename = true) "
            "WHERE event_id IN ('e20', 'e10500', 'e11900')").fetchall()}
        clean = clean_files(target, wb.projection("paid"), typed)
        assert clean and set(clean) == set(typed) - holding
        report = wb.check("paid", progress="none")  # the report says so too: a job's log may be gone
        said = ("in the events the view replays (to lake_version 2), 3 of 12,000 values of payload field 'amount' do not "
                "convert to DECIMAL(18,2) and read as NULL (e.g. ")
        assert any(n.startswith(said) for n in report.to_dict()["notes"])
        assert said.replace("'", "&#x27;") in Path(report.paths["html"]).read_text()


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
@pytest.mark.parametrize(("field", "value", "logged"), [
    ("amount", True, "1 of 300 values of payload field 'amount' are of another kind than DECIMAL(18,2) and read as another "
                     "value (e.g. true in event e7 reads as 1.00)"),
    ("paid_in_full", 1, "1 of 300 values of payload field 'paid_in_full' are of another kind than BOOLEAN and read as "
                        "another value (e.g. 1 in event e7 reads as true)"),
])
def test_a_boolean_where_a_number_is_declared_or_a_number_where_a_boolean_is_is_logged(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, engine: str, field: str, value: object, logged: str) -> None:
    """JSON true read as 1.00 where amount is declared DECIMAL, 0.5 as true where paid_in_full is BOOLEAN: no word
    of either. A field none of whose values is of its kind is refused, as one none of whose values converts."""
    target = lake.Lake(tmp_path / "lake")
    lake.ingest(target, [write_ndjson(tmp_path / "a.ndjson", _payments(0, 300, {7: value}, field))], stream="s")
    registry = Registry()
    projection(name="paid", key="k", engine=engine, payload=PAID, registry=registry)(  # type: ignore[arg-type]
        _paid_sql if engine == "duckdb" else _paid_polars)
    config = Config(lake_uri=target.uri, store_uri=f"duckdb://{tmp_path}/v.duckdb", projection_modules=())
    with Workbench(config, registry=registry) as wb:
        for compacted in (False, True):
            caplog.clear()
            wb.run("paid", progress="none", full=True)
            assert logged in caplog.text
            if not compacted:
                lake.ingest(target, [write_ndjson(tmp_path / "b.ndjson", _payments(300, 1))], stream="s")
                assert wb.compact().partitions > 0
                logged = logged.replace("of 300", "of 301")
        wb.cutover("paid", force=True)
        everywhere = {n: value for n in range(302, 310)}  # a producer's new shape: the catch-up reads only these
        lake.ingest(target, [write_ndjson(tmp_path / "c.ndjson", _payments(302, 8, everywhere, field))], stream="s")
        with pytest.raises(ProjectionError, match=rf"payload field '{field}' is declared .*, but none of its 8 values "
                                                  r"converts to it \(e.g. .* in event e30\d reads as .*\), so it would read as "
                                                  r"another value everywhere; fix its type in payload="):
            wb.run("paid", progress="none")


@pytest.mark.parametrize(("value", "type_", "code"), [
    (None, "DECIMAL(18,2)", None), ("absent", "DECIMAL(18,2)", None), (1.5, "DECIMAL(18,2)", 0), ("12.50", "DECIMAL(18,2)", 0),
    (-3, "INTEGER", 0), ("true", "BOOLEAN", 0), (False, "BOOLEAN", 0), ([1], "VARCHAR", 0), ("abc", "VARCHAR", 0),
    ({"a": 1}, "DECIMAL(18,2)", LOST), ("lots", "DOUBLE", LOST), (300, "TINYINT", LOST), ("2024-13-45", "DATE", LOST),
    (True, "DECIMAL(18,2)", COERCED), (False, "DOUBLE", COERCED), (1, "BOOLEAN", COERCED), (-0.5, "BOOLEAN", COERCED),
    (12.345, "DECIMAL(18,2)", ROUNDED), ("12.50", "INTEGER", ROUNDED), (2.25, "BIGINT", ROUNDED),
])
def test_how_a_value_decodes_is_told_by_its_code(value: object, type_: str, code: int | None) -> None:
    """The code a run counts (``lake.decoding``), for values that read as themselves, as NULL, as another kind
    of value (true as 1.00, 1 as true) and rounded to fit."""
    payload = json.dumps({} if value == "absent" else {"v": value})
    decoded = f"from_json(payload, {literal(json.dumps({'v': type_}))}).v"
    sql = f"SELECT {decoding_code('raw', decoded, type_)} FROM (SELECT payload, json_extract(payload, '/v') AS raw FROM (SELECT ? AS payload))"
    assert duckdb.connect().execute(sql, [payload]).fetchall() == [(code,)]


def test_a_misspelt_field_is_refused_also_when_compacted_events_of_another_type_hold_its_name(tmp_path: Path) -> None:
    """Refunds hold "Amount", payments "amount"; a view of refunds declaring "amount" reads NULL everywhere. Once
    compacted, the file's codes of "amount" (the payments') said every value read as itself, so the file was not
    read and the misspelling not looked for: the run built NULL refunds in silence."""
    target = lake.Lake(tmp_path / "lake")
    events = [event(n, key=f"k{n % 5}", type="PaymentTaken", payload={"amount": 1.5}) for n in range(20)] + \
             [event(n, key=f"k{n % 5}", type="RefundIssued", payload={"Amount": 0.5}) for n in range(20, 30)]
    lake.ingest(target, [write_ndjson(tmp_path / "a.ndjson", events)], stream="s")
    registry = Registry()
    projection(name="refunds", key="k", consumes="RefundIssued", payload={"amount": "DECIMAL(18,2)"},
               registry=registry)(lambda: "SELECT partition_key AS k, sum(amount) AS refunded FROM events GROUP BY ALL")
    config = Config(lake_uri=target.uri, store_uri=f"duckdb://{tmp_path}/v.duckdb", projection_modules=())
    with Workbench(config, registry=registry) as wb:
        for compacted in (False, True):
            with pytest.raises(ProjectionError, match=r"payload field 'amount' is in none of the first 10,000 events' "
                                                      r"payloads, which have 'Amount'"):
                wb.run("refunds", progress="none")
            if not compacted:
                assert wb.compact().partitions > 0


def test_the_check_notes_count_only_the_events_a_run_excluding_quarantined_keys_replays(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A key with a quarantined record is left out of an --exclude-quarantined view, bad amounts and all: the run
    logged no bad value, while its check's notes said some "in the events the view replays"."""
    target = lake.Lake(tmp_path / "lake")
    bad: dict[int, object] = {0: "lots", 50: "lots"}  # key k0's, the key with a quarantined record
    poison = {**event(99, key="k0"), "event_time": "not a time"}
    lake.ingest(target, [write_ndjson(tmp_path / "a.ndjson", [*_payments(0, 100, bad), poison])], stream="s")
    registry = Registry()
    projection(name="paid", key="k", payload=PAID, registry=registry)(_paid_sql)
    config = Config(lake_uri=target.uri, store_uri=f"duckdb://{tmp_path}/v.duckdb", projection_modules=(),
                    reports_dir=str(tmp_path / "reports"))
    with Workbench(config, registry=registry) as wb:
        wb.run("paid", progress="none", exclude_quarantined=True)
        assert "do not convert" not in caplog.text
        notes = wb.check("paid", progress="none").to_dict()["notes"]
        assert not [n for n in notes if "payload field" in n]
        wb.run("paid", progress="none")  # the same events, the key kept: its values are counted and noted
        assert "2 of 100 values of payload field 'amount' do not convert" in caplog.text
        assert [n for n in wb.check("paid", progress="none").to_dict()["notes"] if "2 of 100 values" in n]


def test_files_compacted_before_the_codes_existed_are_counted_by_parsing_and_recompacted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A file compacted by the version before carries the decoded column but no code column: its values are counted
    from its payloads, exactly (not taken as clean, nor left out), and the next compaction adds the codes."""
    target = lake.Lake(tmp_path / "lake")
    lake.ingest(target, [write_ndjson(tmp_path / "a.ndjson", _payments(0, 300, {7: "lots", 9: 12.345}))], stream="s")
    compact(target, small_bytes=1 << 40, decode=PAID.items())
    for path in [f.path for f in target.snapshot().files]:  # as the version before wrote it: no decoding: column
        old = pq.read_table(path)
        pq.write_table(old.drop_columns([c for c in old.column_names if c.startswith("decoding:")]), path)
    registry = Registry()
    projection(name="paid", key="k", payload=PAID, registry=registry)(_paid_sql)
    config = Config(lake_uri=target.uri, store_uri=f"duckdb://{tmp_path}/v.duckdb", projection_modules=())
    with Workbench(config, registry=registry) as wb:
        typed = decoded_files(target, target.snapshot(), wb.projection("paid"), Selection(lake.EventFilter()))
        assert typed == [] and "json_extract" in decoding_sql(target, target.snapshot(), wb.projection("paid"),
                                                              Selection(lake.EventFilter()))
        for _ in ("before", "after the next compaction"):
            caplog.clear()
            wb.run("paid", progress="none")
            assert "1 of 300 values of payload field 'amount' do not convert to DECIMAL(18,2) and read as NULL " \
                   '(e.g. "lots" in event e7)' in caplog.text
            assert "1 of 300 values of payload field 'amount' are rounded" in caplog.text
            wb.compact()
        assert decoded_files(target, target.snapshot(), wb.projection("paid"), Selection(lake.EventFilter()))
