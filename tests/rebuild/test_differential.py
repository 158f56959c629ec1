"""The example projections against an independent reference (``tests.rebuild.reference``: their
documented meanings, one event at a time in plain Python), over random order histories driven through
the real pipeline: ingests of NDJSON and Parquet files in random batches (duplicates with another
payload, conflicts, sequence gaps, out-of-order and late arrival, bad records, keys of unicode, quotes
and long text, times at UTC midnight written with offsets, amounts with many decimals), each followed,
per view, by a catch-up, a targeted run over what arrived (its ``--keys``, or ``--since/--until`` over
its days), a full run, or nothing, with compactions in between; then full, ``--as-of`` and
``--exclude-quarantined`` runs.

``test_properties`` holds that the strategies agree with each other; this holds that they agree with
what the views are documented to mean.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import lake
import lake.compact
from rebuild import Workbench
from tests.rebuild import reference
from tests.rebuild.reference import Number, ReferenceLake, dumps

VIEWS = tuple(reference.VIEWS)
T0 = datetime(2026, 9, 1, tzinfo=UTC)
TRICKY_KEYS = ["o-0000001", "𠮷野家", "o\x00nul", "it's", 'say "hi"', "ключ ✓", "🧾🎉", "k" * 400, "a,b", "back\\slash", "%2F/x", "tab\there"]
CUSTOMERS: list[str | Number | None] = ["c-000001", "c-'quoted'", "клиент-2", "", Number("42"), None]  # None: the field is missing
CURRENCIES = ["EUR", "USD", "GBP", None]
KINDS = [*reference.STATUS, "ItemAdded", "ItemRemoved", "OrderNoted"]  # OrderNoted: consumed by no example
ZONES = [timezone.utc, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-2)), timezone(timedelta(hours=14))]
HALVES = ["1.005", "2.675", "1.0049999999999999", "0.125", "-0.005", "99.995"]  # rounding edges of DECIMAL(18,2)
# derandomized (the same examples in every CI run) and not shrunk: a failing example runs the whole pipeline,
# and shrinking one took over five minutes; the failure names the view, the run and the rows that differ
SETTINGS = settings(max_examples=10, deadline=None, derandomize=True, database=None, phases=[Phase.explicit, Phase.generate],
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _scaled(n: int, scale: int) -> str:
    """``n`` with ``scale`` digits after the point, as JSON writes a decimal: 12345 and 3 give 12.345."""
    digits = str(n).rjust(scale + 1, "0")
    return f"{digits[:-scale]}.{digits[-scale:]}" if scale else digits


# a JSON number, or now and then its text ("12.50", as some producers write amounts)
money = st.one_of(st.sampled_from(HALVES), st.builds(_scaled, st.integers(0, 10**9), st.integers(0, 20))).flatmap(
    lambda text: st.sampled_from([Number(text), Number(text), text]))


@st.composite
def times(draw: st.DrawFn) -> str:
    """An event time near a UTC midnight (or anywhere), written in one of several offsets, sometimes
    with a seventh digit (cut, not rounded)."""
    near = draw(st.sampled_from([0, 1, -1, 3600, 43200]))
    at = T0 + timedelta(days=draw(st.integers(0, 2)), seconds=near, microseconds=draw(st.sampled_from([0, 1, 100000, 500000, 900000, 999999])))
    if draw(st.booleans()):
        at = T0 + timedelta(seconds=draw(st.integers(0, 3 * 86400)))
    text = at.astimezone(draw(st.sampled_from(ZONES))).isoformat()
    if at.microsecond and draw(st.booleans()):
        text = text[:26] + "7" + text[26:]
    return text


def payload(draw: st.DrawFn, kind: str, customer: str | Number | None, currency: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"customer_id": customer, "currency": currency}
    body = {k: v for k, v in body.items() if v is not None and draw(st.integers(0, 9))}  # a field now and then missing
    if kind in ("ItemAdded", "ItemRemoved"):
        body["quantity"] = Number(draw(st.sampled_from(["1", "2", "5", "2.5"])))
        if draw(st.integers(0, 5)):
            body["unit_price"] = draw(money)
    elif kind in ("PaymentAuthorized", "PaymentFailed", "RefundIssued"):
        body["amount"] = draw(money)
    return body


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Records of a few orders in arrival order: their events (with sequence gaps), duplicates of some
    with another payload, conflicting events at their positions, and bad records (a key may have only those)."""
    keys = draw(st.lists(st.one_of(st.sampled_from(TRICKY_KEYS), st.text(min_size=1, max_size=12).filter(str.strip)),
                         max_size=4, unique=True))
    records: list[dict[str, Any]] = []
    for key in keys:
        customer, currency = draw(st.sampled_from(CUSTOMERS)), draw(st.sampled_from(CURRENCIES))
        sequence = 0
        for n in range(draw(st.integers(0, 6))):
            sequence += draw(st.sampled_from([1, 1, 1, 2]))  # 2: a gap
            kind = "OrderPlaced" if n == 0 and draw(st.integers(0, 4)) else draw(st.sampled_from(KINDS))
            records.append({"event_id": f"e-{key}-{sequence}", "partition_key": key, "sequence": sequence,
                            "event_type": kind, "event_time": draw(times()),
                            "payload": payload(draw, kind, customer, currency)})
        for bad in draw(st.lists(st.sampled_from(["sequence", "time", "payload"]), max_size=1 if records else 2)):
            records.append({"event_id": f"bad-{key}-{len(records)}", "partition_key": key,
                            "sequence": -1 if bad == "sequence" else 99, "event_type": "ItemAdded",
                            "event_time": "yesterday" if bad == "time" else T0.isoformat(),
                            "payload": "{broken" if bad == "payload" else {"quantity": Number("1")}})
    events = [r for r in records if not r["event_id"].startswith("bad-")]
    if events:
        for original in draw(st.lists(st.sampled_from(events), max_size=2)):
            copy = {**original, "payload": payload(draw, original["event_type"], "c-other", "USD")}
            conflict = draw(st.booleans())
            records.append({**copy, "event_id": f"x-{original['event_id']}"} if conflict else copy)
    return [records[i] for i in draw(st.permutations(range(len(records))))]


def write(path: Path, records: list[dict[str, Any]], parquet: bool) -> Path:
    """NDJSON (payload as an object) or Parquet (payload as JSON text, sequence int64, the times as a
    timestamp column where all are valid, else as text)."""
    if not parquet:
        path = path.with_suffix(".ndjson")
        path.write_text("".join(dumps(r) + "\n" for r in records) or "\n", encoding="utf-8")
        return path
    path = path.with_suffix(".parquet")
    columns = {name: [r[name] for r in records] for name in ("event_id", "partition_key", "event_type", "event_time")}
    columns["payload"] = [r["payload"] if isinstance(r["payload"], str) else dumps(r["payload"]) for r in records]
    table = pa.table({**columns, "sequence": pa.array([r["sequence"] for r in records], pa.int64())},
                     schema=pa.schema([(n, pa.string()) for n in columns] + [("sequence", pa.int64())]))
    stamps = [reference.utc(r["event_time"]) for r in records]
    if records and None not in stamps:
        table = table.set_column(table.schema.get_field_index("event_time"), "event_time",
                                 pa.array(stamps, pa.timestamp("us", "UTC")))
    pq.write_table(table, path)
    return path


def assert_matches(wb: Workbench, view: str, role: str, events: list[reference.Event], what: str,
                   leave_out: frozenset[str] | set[str] = frozenset()) -> None:
    key = list(wb.projection(view).key)
    actual = {tuple(r[k] for k in key): r for r in wb.view(view, role).to_dicts()}
    expected = reference.VIEWS[view](e for e in events if e.partition_key not in leave_out)
    if actual == expected:
        return
    wrong = sorted(set(actual) ^ set(expected), key=repr)[:3] or [k for k in expected if actual[k] != expected[k]][:3]
    detail = [(k, actual.get(k), expected.get(k)) for k in wrong]
    raise AssertionError(f"{view} ({what}) differs from its documented meaning; key, view, reference: {detail}")


@st.composite
def steps(draw: st.DrawFn, count: int) -> list[dict[str, Any]]:
    """Per ingest: where the batch ends, its files' formats, a compaction after it, and each view's run."""
    return [{"cut": draw(st.floats(0, 1)), "parquet": draw(st.lists(st.booleans(), min_size=1, max_size=2)),
             "compact": draw(st.integers(0, 4)) == 0,
             "runs": {v: draw(st.sampled_from(["catchup", "catchup", "keys", "range", "backfill", "full", "skip"]))
                      for v in VIEWS}}
            for _ in range(count)]


def run(wb: Workbench, view: str, how: str, model: ReferenceLake) -> bool:
    """Run ``view`` as ``how`` and cut it over; False when nothing ran (live stays behind). A targeted
    run's scope is what arrived since live's lake_version: the keys of those events, or their days."""
    live = wb.store.checkpoint(view, "live")
    if how == "skip" and live is not None:
        return False
    options: dict[str, Any] = {"full": how == "full"}
    if how in ("keys", "range", "backfill") and live is not None:
        new = [e for e in model.events if e.lake_version > live.lake_version]
        if not new:
            return False
        if wb.projection(view).incremental == "merge" and live.lake_version != wb.lake.snapshot().lake_version:
            run(wb, view, "catchup", model)  # a merge patch at another lake_version than live's is refused
        if how == "keys" and wb.projection(view).incremental != "by_window":  # a window view takes no keys
            options = {"keys": sorted({e.partition_key for e in new})}
        else:
            days = sorted(e.event_time.date() for e in new)
            options = {"since": days[0].isoformat(), "until": (days[-1] + timedelta(days=1)).isoformat()}
        if how == "backfill":
            wb.backfill(view, since=options["since"], until=options["until"], chunk="1d", progress="none")
            wb.cutover(view, force=True)
            return True
    wb.run(view, progress="none", **options)
    wb.cutover(view, force=True)
    return True


def workbench(root: Path) -> Workbench:
    """A workbench of the examples on a lake, a DuckDB store and reports under ``root``."""
    return Workbench.open(None, lake_uri=str(root / "lake"), store_uri=f"duckdb://{root}/v.duckdb",
                          reports_dir=str(root / "reports"))


def ingests(wb: Workbench, model: ReferenceLake, root: Path, records: list[dict[str, Any]],
            plan: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], list[reference.Event]]]:
    """Ingest ``records`` in the batches and formats ``plan`` says into the lake and ``model``, compacting
    where it says; yields each step with the events it archived."""
    lake.Lake(str(root / "lake")).create()
    start = 0
    for i, step in enumerate(plan):
        end = len(records) if i == len(plan) - 1 else max(start, int(step["cut"] * len(records)))
        batch, start = records[start:end], end
        parts = [batch[j::len(step["parquet"])] for j in range(len(step["parquet"]))]
        files = [write(root / f"b{i}-{j}", part, parquet) for j, (part, parquet) in enumerate(zip(parts, step["parquet"], strict=True))]
        result = lake.ingest(wb.lake, [str(f) for f in files], stream="orders")
        new = model.ingest([r for part in parts for r in part], result.lake_version)
        assert result.archived == len(new), batch
        if step["compact"]:
            wb.compact()
        yield step, new


@SETTINGS
@given(records=histories(), plan=st.integers(1, 3).flatmap(steps), data=st.data())
def test_the_examples_mean_what_their_documentation_says(tmp_path_factory: Any, records: list[dict[str, Any]],
                                                         plan: list[dict[str, Any]], data: st.DataObject) -> None:
    root = tmp_path_factory.mktemp("diff")
    wb = workbench(root)
    model = ReferenceLake()
    try:
        for i, (step, _) in enumerate(ingests(wb, model, root, records, plan)):
            for view in VIEWS:
                if run(wb, view, step["runs"][view], model):
                    assert_matches(wb, view, "live", model.events, f"after ingest {i}, {step['runs'][view]}")
        for view in VIEWS:
            wb.run(view, full=True, progress="none")
            assert_matches(wb, view, "shadow", model.events, "full")
        versions = sorted({e.lake_version for e in model.events})
        if versions:
            version = data.draw(st.sampled_from(versions))
            for view in VIEWS:
                wb.run(view, full=True, as_of=str(version), progress="none")
                assert_matches(wb, view, "shadow", model.as_of(version), f"as of {version}")
        for view in VIEWS:
            wb.run(view, full=True, exclude_quarantined=True, progress="none")
            assert_matches(wb, view, "shadow", model.events, "excluding quarantined keys", model.quarantined_keys)
    finally:
        wb.close()


@settings(SETTINGS, max_examples=6)
@given(records=histories(), plan=st.integers(1, 3).flatmap(steps), compacted=st.sets(st.integers(0, 2)))
def test_catch_ups_leave_out_the_keys_quarantined_since(tmp_path_factory: Any, records: list[dict[str, Any]],
                                                        plan: list[dict[str, Any]], compacted: set[int]) -> None:
    """Every run ``--exclude-quarantined``, from the full run on: a catch-up also leaves out the keys
    quarantined since live's run (a merge view refuses that, saying to run in full: not here), also when
    compaction merged the quarantine's files in between (``compacted``: after those ingests)."""
    root = tmp_path_factory.mktemp("excluding")
    wb = workbench(root)
    model = ReferenceLake()
    try:
        for i, (step, _) in enumerate(ingests(wb, model, root, records, plan)):
            if i in compacted:
                lake.compact.compact(wb.lake)
            for view in ("order_summary", "order_summary_fold", "daily_revenue", "order_timeline"):
                if step["runs"][view] != "skip":
                    wb.run(view, full=step["runs"][view] == "full", exclude_quarantined=True, progress="none")
                    wb.cutover(view, force=True)
                    assert_matches(wb, view, "live", model.events, f"after ingest {i}", model.quarantined_keys)
    finally:
        wb.close()


# -- the discrepancies it found, as plain examples -----------------------------------------------
def _plain(tmp_path: Path, records: list[dict[str, Any]]) -> tuple[Workbench, list[reference.Event]]:
    wb = workbench(tmp_path)
    result = lake.ingest(lake.Lake(str(tmp_path / "lake")).create(), [write(tmp_path / "in", records, False)], stream="orders")
    return wb, ReferenceLake().ingest(records, result.lake_version)


def _record(seq: int, kind: str, body: dict[str, Any], key: str = "o-1") -> dict[str, Any]:
    return {"event_id": f"e-{key}-{seq}", "partition_key": key, "sequence": seq, "event_type": kind,
            "event_time": (T0 + timedelta(hours=seq)).isoformat(), "payload": body}


def test_the_fold_counts_an_item_without_a_price_and_an_empty_customer_id_as_order_summary_does(tmp_path: Path) -> None:
    """order_summary_fold skipped an item whose unit_price was missing (order_summary counts it, adding
    nothing to the total) and took a later customer_id over an empty one (order_summary keeps the first)."""
    wb, events = _plain(tmp_path, [
        _record(1, "OrderPlaced", {"customer_id": "", "currency": "EUR"}),
        _record(2, "ItemAdded", {"customer_id": "c-2", "quantity": Number("2")}),
        _record(3, "ItemAdded", {"quantity": Number("1"), "unit_price": Number("3.50")}),
    ])
    try:
        for view in ("order_summary", "order_summary_fold"):
            wb.run(view, progress="none")
            assert_matches(wb, view, "shadow", events, "full")
        assert wb.view("order_summary_fold", "shadow").select("customer_id", "items").row(0) == ("", 3)
    finally:
        wb.close()


def test_customer_ltv_leaves_out_events_without_a_currency_as_daily_revenue_does(tmp_path: Path) -> None:
    """One payment without a currency failed every run of customer_ltv (a NULL key)."""
    wb, events = _plain(tmp_path, [
        _record(1, "OrderPlaced", {"customer_id": "c-1", "currency": "EUR"}),
        _record(2, "PaymentAuthorized", {"customer_id": "c-1", "amount": Number("5")}),
        _record(3, "RefundIssued", {"currency": "EUR", "amount": Number("1")}),
    ])
    try:
        for view in ("customer_ltv", "daily_revenue"):
            wb.run(view, progress="none")
            assert_matches(wb, view, "shadow", events, "full")
        assert wb.view("customer_ltv", "shadow").select("customer_id", "orders", "authorized").rows() == [("c-1", 1, 0)]
    finally:
        wb.close()


def test_hours_to_ship_counts_the_fractions_of_a_second(tmp_path: Path) -> None:
    """order_timeline counted whole seconds passed (date_diff('second')): shipped 3 h 5.4 s after it
    was placed read 3.001 hours, not 3.002 (3.0015 rounded half up)."""
    shipped = {"event_id": "e-o-1-2", "partition_key": "o-1", "sequence": 2, "event_type": "OrderShipped",
               "event_time": "2026-09-01T13:00:05.4Z", "payload": {}}
    wb, events = _plain(tmp_path, [{**_record(1, "OrderPlaced", {}), "event_time": "2026-09-01T10:00:00Z"}, shipped])
    try:
        wb.run("order_timeline", progress="none")
        assert_matches(wb, "order_timeline", "shadow", events, "full")
        assert wb.view("order_timeline", "shadow")["hours_to_ship"].to_list() == [3.002]
    finally:
        wb.close()


def test_a_catch_up_of_an_order_keyed_beyond_the_bmp_keeps_its_earlier_events(tmp_path: Path) -> None:
    """deltalake misread the key statistics of 𠮷 (U+20BB7) as U+10BB7, so a catch-up read none of the
    order's earlier files and dropped its row from live."""
    records = [_record(1, "OrderPlaced", {"customer_id": "c-1"}, key="𠮷野家"),
               _record(2, "ItemAdded", {"quantity": Number("1")}, key="𠮷野家")]
    wb, events = _plain(tmp_path, records[:1])
    try:
        wb.run("order_summary", progress="none")
        wb.cutover("order_summary", force=True)
        version = lake.ingest(wb.lake, [write(tmp_path / "more", records[1:], False)], stream="orders").lake_version
        wb.run("order_summary", progress="none")
        wb.cutover("order_summary", force=True)
        assert_matches(wb, "order_summary", "live", events + ReferenceLake().ingest(records[1:], version), "catch-up")
    finally:
        wb.close()
