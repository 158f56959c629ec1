"""Workbench.check end to end: a faulty live view from the consumer, a rebuild, the report."""

from __future__ import annotations

import base64
import functools
import html
import io
import json
import re
import os
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import lake
from checks import SECTIONS, lineage
from checks.html import key_text
from rebuild.config import Config
from rebuild.errors import CutoverRefused
from rebuild.store import LIVE
from rebuild.workbench import Workbench
from tests.checks.conftest import DUPLICATED, LATE, OLD_VERSION, POISONED
from tests.conftest import write_ndjson
from tests.orders import order_events


def test_report_finds_exactly_the_faulted_orders(scenario):
    assert set(scenario.consumer.touched["duplicates"]) == set(DUPLICATED)
    assert set(scenario.consumer.touched["poison"]) == set(POISONED)
    assert set(scenario.consumer.touched["old_version"]) == set(OLD_VERSION)
    report = scenario.wb.check("order_summary")
    assert report.verdict.verdict == "fail"
    found = {k["order_id"] for k in report.diff.differing_keys}
    assert found == scenario.consumer.faulted
    assert report.diff.only_in_live == report.diff.only_in_rebuilt == 0


def test_lineage_flags_the_faults(scenario):
    report = scenario.wb.check("order_summary")
    by_key = {x.key["order_id"]: x for x in report.lineage}
    for order in DUPLICATED:
        assert "duplicate_suspected" in by_key[order].flags
        assert any(e["event_type"] == "PaymentAuthorized" and e["column"] == "paid" for e in by_key[order].explained_by)
    for order in POISONED:
        assert "quarantined" in by_key[order].flags
        assert by_key[order].quarantine[0]["reason"].startswith("unparsable event_time")
    for order in OLD_VERSION:
        assert any(e["event_type"] == "ItemRemoved" for e in by_key[order].explained_by)
    sample = by_key[DUPLICATED[0]]
    assert sample.events == 5 and sample.sequence_range == (1, 5) and sample.event_ids[0].endswith("-1")
    assert "late" not in sample.flags


def test_lineage_late_events(scenario):
    (traced,) = lineage(scenario.lake, [{"order_id": LATE}], partition_column="order_id",
                        late_after=timedelta(days=1))
    assert "late" in traced.flags and traced.late == (f"ev-{LATE}-late",)


def test_the_html_report_names_the_late_events_and_missing_sequences(scenario):
    """A consumer that dropped a late event: the HTML said only 'late, gap', so the person deciding on
    cutover could not tell which event came late (the JSON had it)."""
    scenario.wb.store.con.execute(f"UPDATE order_summary SET refunded = 0 WHERE order_id = '{LATE}'")
    report = scenario.wb.check("order_summary")
    (row,) = [x for x in report.lineage if x.key == {"order_id": LATE}]
    assert row.late == (f"ev-{LATE}-late",) and row.missing_sequences == 93
    html = Path(report.paths["html"]).read_text()
    assert f"late: ev-{LATE}-late" in html and "gap: 93 missing" in html
    # the times are shown without their zone, so the heading says which it is
    assert "<th scope='col'>ingested (UTC)</th>" in html and "<td>2026-09-01 23:00:00 .. 2026-09-10 00:00:00</td>" in html


def test_the_html_report_shows_the_verdict_s_notes_whole(scenario):
    """The HTML cut every reason and note at 120 characters, so the advice at their end (here: check a
    --full run to look for drift) was lost to the person deciding on cutover; the CLI printed it whole."""
    wb = scenario.wb
    wb.cutover("order_summary", force=True)
    lake.ingest(scenario.lake, [write_ndjson(scenario.root / "new.ndjson", order_events(41))], stream="orders")
    wb.run("order_summary", progress="none")  # a catch-up, whose counts are noted, not judged
    report = wb.check("order_summary")
    (note,) = report.verdict.notes
    assert len(note) > 120 and note.endswith("to look for drift, check a --full run")
    assert html.escape(note) in Path(report.paths["html"]).read_text()


def test_the_html_report_says_what_each_expectation_expects(scenario):
    """The HTML's expectations table read 'expect_column_values_to_be_between | total | False | 1 of 40 values
    unexpected': the bounds and sets a view was held to were in the JSON only."""
    scenario.wb.store.con.execute("UPDATE order_summary__shadow SET total = -1 WHERE order_id = 'o-0000001'")
    report = scenario.wb.check("order_summary")
    text = Path(report.paths["html"]).read_text()
    shown = text.split("<section id='expectations'>")[1].split("</section>")[0]
    assert "<td>total</td><td>min_value=0</td><td>FAIL</td><td>1 of 40 values unexpected</td>" in shown
    assert html.escape("value_set=['placed', 'paid'") in shown


def test_lineage_by_payload_fields(scenario):
    traced = lineage(scenario.lake, [{"customer_id": "c-000003", "currency": "EUR"}],
                     event_types=["OrderPlaced"])
    assert traced[0].events == sum(1 for n in range(1, 41) if n % 5 == 3 and n % 3)


def test_lineage_by_payload_fields_named_like_json_paths(make_lake):
    """A view keyed by payload fields ``a.b`` or ``x[0]`` (a customer view of such an export) found
    its keys' events by the path ``$.a.b``, member ``b`` of ``a``: each differing key was "no_events"."""
    from tests.conftest import event

    events = [event(i, key=f"o{i}", seq=1, payload={"a.b": i % 2, "a": {"b": 7}, "x[0]": "y", "x": ["z"]})
              for i in range(5)]
    traced = lineage(make_lake(events), [{"a.b": 1, "x[0]": "y"}, {"a.b": 7}])
    assert [t.events for t in traced] == [2, 0]
    assert traced[0].partition_keys == ("o1", "o3")

def test_lineage_by_payload_fields_of_numbers_and_times_matches_their_values_not_their_text(make_lake):
    """A view keyed by a DECIMAL or a time of the payload (``price``, ``at``): the lineage compared the key
    as text with the field's text, so 10.00 found no event of ``10`` and 1.00 none of ``1.0``: 'no_events'."""
    from tests.conftest import event

    prices = ["1.0", "1.00", 1, "10", 10.0, "2.5"]
    events = [event(i, key=f"o{i}", seq=1, payload={"price": p, "at": "2026-09-01T12:00:00+02:00", "tenant": "T1"})
              for i, p in enumerate(prices)]
    target = make_lake(events)
    priced = lineage(target, [{"price": Decimal("1.00"), "tenant": "T1"}, {"price": Decimal("10.00"), "tenant": "T1"},
                              {"price": Decimal("1.00"), "tenant": "t1"}])
    assert [t.events for t in priced] == [3, 2, 0]  # text stays text: T1 is no t1
    (timed,) = lineage(target, [{"at": datetime(2026, 9, 1, 10, tzinfo=UTC)}])
    assert timed.events == 6


def test_lineage_of_a_null_key_of_a_live_view_made_elsewhere_is_its_events_without_the_field(make_lake):
    """A legacy live view with a row under a NULL customer: its events are those that have none."""
    from tests.conftest import event

    events = [event(i, key=f"o{i}", seq=1, payload={"customer": "c1"} if i % 2 else {}) for i in range(5)]
    target = make_lake(events)
    (none, c1) = lineage(target, [{"customer": None}, {"customer": "c1"}])
    assert (none.events, c1.events) == (3, 2)
    assert none.partition_keys == ("o0", "o2", "o4")
    assert lineage(target, [{"customer": None}])[0].events == 3  # a column of NULLs only: no type to read the field as


def test_lineage_of_keys_named_like_envelope_columns(make_lake, tmp_path):
    """A daily view per stream (key day and stream) or per event type: the lineage matched its key columns
    with payload fields of those names, which no payload has, so every differing row read 'no_events', as
    if no event had made it."""
    target = make_lake(order_events(1) + order_events(2))
    payments = [{**e, "event_id": f"pay-{e['event_id']}"} for e in order_events(1)[:2]]
    lake.ingest(target, [write_ndjson(tmp_path / "p.ndjson", payments)], stream="payments")
    day = ("day", "1 day")
    (per_stream, per_type) = lineage(target, [{"day": date(2026, 9, 1), "stream": "payments"}], window=day) + lineage(
        target, [{"day": date(2026, 9, 1), "event_type": "ItemAdded"}], window=day, streams=["orders"])
    assert per_stream.events == 2 and per_stream.event_ids == ("pay-ev-o-0000001-1", "pay-ev-o-0000001-2")
    assert per_type.events == 4 and set(per_type.event_types) == {"ItemAdded"} and "no_events" not in per_type.flags
    (whole,) = lineage(target, [{"partition_key": "o-0000002"}])  # a full or merge view keyed by partition_key
    assert whole.events == 5


def test_lineage_gaps_count_every_event_type_not_only_the_consumed_ones(make_lake):
    """customer_ltv consumes OrderPlaced and PaymentAuthorized, not the ItemAdded events between them:
    their sequences are no gap. Every customer key was flagged 'gap' with the items as missing sequences."""
    whole, gapped = order_events(1, customer=1), order_events(2, customer=2)
    events = whole + [e for e in gapped if e["sequence"] != 3]  # order 2 really misses sequence 3
    target = make_lake(events)
    consumed = ["OrderPlaced", "PaymentAuthorized"]
    by_order = lineage(target, [{"order_id": "o-0000001"}, {"order_id": "o-0000002"}], partition_column="order_id",
                       event_types=consumed)
    by_customer = lineage(target, [{"customer_id": "c-000001", "currency": "EUR"},
                                   {"customer_id": "c-000002", "currency": "EUR"}], event_types=consumed)
    for whole_key, gapped_key in (by_order, by_customer):
        assert "gap" not in whole_key.flags and whole_key.missing_sequences == 0
        assert "gap" in gapped_key.flags and gapped_key.missing_sequences == 1
        assert set(whole_key.event_types) == set(consumed)  # the lineage still lists the consumed events only


def test_lineage_gaps_are_counted_per_stream(make_lake, tmp_path):
    """A view of two streams keyed by the same order, each stream numbering its own sequences: the
    missing sequences were counted over the key's events of both streams, so the payment stream's missing
    sequence 2 hid behind the order stream's 2 (no 'gap', where the audit counted it), and a stream
    numbering from 100 read as 97 sequences missing."""
    orders = order_events(1)[:4]  # sequences 1-4
    payments = [{**e, "event_id": f"pay-{n}", "sequence": n} for e, n in zip(order_events(1)[1:4], (1, 3, 4))]
    shipments = [{**e, "event_id": f"ship-{n}", "sequence": n} for e, n in zip(order_events(1)[1:3], (100, 101))]
    target = make_lake(orders)
    for stream, events in (("payments", payments), ("shipments", shipments)):
        lake.ingest(target, [write_ndjson(tmp_path / f"{stream}.ndjson", events)], stream=stream)
    (traced,) = lineage(target, [{"order_id": "o-0000001"}], partition_column="order_id")
    assert traced.events == 9 and "gap" in traced.flags and traced.missing_sequences == 1
    (whole,) = lineage(target, [{"order_id": "o-0000001"}], partition_column="order_id",
                       streams=["orders", "shipments"])
    assert "gap" not in whole.flags and whole.missing_sequences == 0


def test_lineage_flags_quarantined_records_of_the_view_s_streams_only(make_lake, tmp_path):
    """order_summary reads the orders stream; a shipments stream keyed by the same orders had a poison record
    of order 1, and the report flagged order 1 'quarantined', naming that record as a cause of its difference,
    though the view never reads shipments (and its audit of the orders stream showed nothing quarantined)."""
    target = make_lake(order_events(1) + order_events(2))
    poison = {**order_events(1)[-1], "event_id": "ship-1", "sequence": "three"}
    assert lake.ingest(target, [write_ndjson(tmp_path / "s.ndjson", [poison])], stream="shipments").quarantined == 1
    (of_orders,) = lineage(target, [{"order_id": "o-0000001"}], partition_column="order_id", streams=["orders"])
    assert "quarantined" not in of_orders.flags and of_orders.quarantine == ()
    (of_all,) = lineage(target, [{"order_id": "o-0000001"}], partition_column="order_id")
    assert "quarantined" in of_all.flags and of_all.quarantine[0]["event_id"] == "ship-1"


def _checked_with_live_changed(target, tmp_path, registry, view, change):
    """The check of a full run of ``view`` against its live view (in a DuckDB store) once ``change`` (SQL) made it differ."""
    config = Config(lake_uri=str(target.uri), store_uri=f"duckdb://{tmp_path / 'views.duckdb'}",
                    reports_dir=str(tmp_path / "reports"), memory_limit="1GB")
    with Workbench(config, registry=registry) as wb:
        wb.run(view, progress="none")
        wb.cutover(view, force=True)
        wb.store.con.execute(change)
        wb.run(view, full=True, progress="none")
        return wb.check(view)


def test_the_report_shows_a_key_s_sequences_and_gaps_per_stream(make_lake, tmp_path):
    """A differing order of a view over orders and payments: the report said 'sequences 1-5' and 'gap: 1
    missing' for the two streams at once, though each numbers its own events: nobody could find which
    sequence was missing (1 to 5 were all there, in orders). It shows each stream's range and gap."""
    from rebuild.projection import Registry, projection

    registry = Registry()
    projection(name="order_payments", key="order_id", streams=["orders", "payments"], registry=registry,
               payload={"amount": "DECIMAL(18,2)"})(
        lambda: "SELECT partition_key AS order_id, sum(amount) FILTER (WHERE stream = 'payments') AS paid "
                "FROM events GROUP BY 1")
    target = make_lake(order_events(1) + order_events(2))
    payments = [{**e, "event_id": f"pay-{n}", "sequence": n} for e, n in zip(order_events(1)[3:4] * 2, (1, 3))]
    lake.ingest(target, [write_ndjson(tmp_path / "p.ndjson", payments)], stream="payments")
    report = _checked_with_live_changed(target, tmp_path, registry, "order_payments",
                                        "UPDATE order_payments SET paid = paid + 1 WHERE order_id = 'o-0000001'")
    (traced,) = report.lineage
    assert traced.streams == {"orders": {"events": 5, "first": 1, "last": 5, "missing": 0},
                              "payments": {"events": 2, "first": 1, "last": 3, "missing": 1}}
    shown = Path(report.paths["html"]).read_text().split("<section id='lineage'>")[1].split("</section>")[0]
    assert "<td>orders 1-5; payments 1-3</td>" in shown and "gap: payments 1 missing" in shown


def test_the_report_shows_keys_that_differ_only_by_spaces_or_unicode_form_apart(make_lake, tmp_path):
    """Customers 'bob' and 'bob ', and 'é' as one code point and as e + U+0301, are four keys of the view
    (as in the lake): the report showed two rows 'bob' and two rows 'é', a duplicate to a reader, and a key
    NULL of a legacy live view as an empty cell, which reads as the key ''. Such keys are quoted with escapes."""
    from rebuild.projection import Registry, projection
    from tests.conftest import event

    registry = Registry()
    projection(name="per_customer", key="customer", payload={"customer": "VARCHAR"}, incremental="full",
               registry=registry)(
        lambda: "SELECT customer, count(*) AS n FROM events GROUP BY 1")
    customers = ["bob", "bob ", "\u00e9", "e\u0301", "", "NULL"]
    target = make_lake([event(i, key=f"o{i}", seq=1, payload={"customer": c}) for i, c in enumerate(customers)])
    report = _checked_with_live_changed(target, tmp_path, registry, "per_customer",
                                        "UPDATE per_customer SET n = n + 1; INSERT INTO per_customer VALUES (NULL, 1)")
    assert len(report.lineage) == 7 and all(x.events == 1 for x in report.lineage if x.key["customer"] is not None)
    page = Path(report.paths["html"]).read_text()
    samples, traced = (page.split(f"<section id='{s}'>")[1].split("</section>")[0] for s in ("samples", "lineage"))
    cells = re.findall(r"<tr><th scope='row'>(.*?)</th>", samples)
    assert sorted(cells) == sorted(["bob", "&#x27;bob &#x27;", "\u00e9", "&#x27;e\\u0301&#x27;", "&#x27;&#x27;",
                                    "&#x27;NULL&#x27;", "NULL"])
    assert "customer=&#x27;bob &#x27;" in traced and "customer=NULL" in traced and "customer=&#x27;&#x27;" in traced


TRICKY = st.text(alphabet=["a", "N", "U", "L", " ", "'", "\\", "e", "\u0301", "\u00e9", "\n", "\u00a0", "u"], max_size=6)


@given(st.one_of(st.none(), TRICKY, st.text()))
def test_a_key_is_shown_so_that_it_reads_back_as_itself(key):
    """So no two keys are shown alike: quoted text is the key with Python's escapes, else the key itself."""
    shown = key_text(key)
    if shown == "NULL":
        assert key is None
    elif len(shown) > 1 and shown[0] == shown[-1] == "'":
        assert shown[1:-1].encode("latin-1", "backslashreplace").decode("unicode_escape") == key
    else:
        assert shown == key


def test_check_of_a_view_whose_other_stream_has_no_events_yet(make_lake, tmp_path):
    """A view of orders and payments deployed before the payment service published anything: its run
    went through, but its check failed with exit 2 'no stream payments in the lake' (the audit refuses a
    stream it does not hold, as a misspelt `rebuild lake audit --stream`), so the view could never be
    checked, nor cut over without --force. It is checked, and a note says the stream holds no events."""
    from rebuild.projection import Registry, projection

    registry = Registry()
    projection(name="order_payments", key="order_id", streams=["orders", "payments"], registry=registry)(
        lambda: "SELECT partition_key AS order_id, count(*) FILTER (WHERE stream = 'payments') AS payments "
                "FROM events GROUP BY 1")
    target = make_lake(order_events(1) + order_events(2))
    config = Config(lake_uri=str(target.uri), store_uri=f"duckdb://{tmp_path / 'views.duckdb'}",
                    reports_dir=str(tmp_path / "reports"), memory_limit="1GB")
    with Workbench(config, registry=registry) as wb:
        wb.run("order_payments", progress="none")
        report = wb.check("order_payments")
        assert report.verdict.verdict == "pass" and report.audit["events"] == 10
        assert report.audit["streams"]["payments"]["events"] == 0
        (note,) = [n for n in report.notes if "payments" in n]
        assert note.startswith("stream ['payments'] holds no events up to lake_version 1: the view has none")


def test_verdict_recorded_and_report_files(scenario):
    report = scenario.wb.check("order_summary")
    html_path, json_path = Path(report.paths["html"]), Path(report.paths["json"])
    assert html_path.parent.name == "order_summary" and html_path.stem == report.run_id
    data = json.loads(json_path.read_text())
    assert data["verdict"] == "fail" and data["changed_rows"] == 6
    assert data["changed_by_column"]["paid"] == 4  # duplicated payments and poisoned orders
    record = scenario.wb.store.run(report.run_id)
    assert record.verdict == "fail" and record.report == str(html_path)


def test_report_snapshot(scenario):
    report = scenario.wb.check("order_summary")
    text = Path(report.paths["html"]).read_text()
    ids = re.findall(r"<section id='([a-z_]+)'><h2>([^<]+)</h2>", text)
    assert ids == [
        ("verdict", "Verdict"), ("diff", "Rebuilt vs live"), ("columns", "Changes per column"), ("plots", "Plots"),
        ("samples", "Samples"), ("lineage", "Lineage of sampled differences"), ("expectations", "Expectations"),
        ("audit", "Lake audit of the consumed streams"), ("run", "Run"),
    ]
    assert [i for i, _ in ids] == list(SECTIONS)
    assert text.count("data:image/png;base64,") >= 3
    assert not re.search(r"""(src|href)\s*=\s*['"]?https?:""", text)
    data = json.loads(Path(report.paths["json"]).read_text())
    assert list(data)[:5] == ["verdict", "reasons", "view", "run_id", "live"]
    assert set(data["diff"]["samples"]) == {"only_in_live", "only_in_rebuilt", "changed", "duplicates_live",
                                            "duplicates_rebuilt"}


def test_the_report_says_what_cutover_would_do_and_how_to_undo_it(scenario):
    """The report said whether the shadow differs from live, not what a cutover would do to live (all of it
    replaced, or only a patch's scope) nor how to undo it: the person approving had to know the workbench."""
    wb = scenario.wb
    report = wb.check("order_summary")
    said = ("the rebuilt view replaces live order_summary in one transaction: of live's 40 rows 6 change, 0 go and "
            "34 stay the same, and 0 are added (40 rows then); live as it is now is kept: `rebuild rollback "
            "order_summary` brings it back")
    assert report.cutover() == said == json.loads(Path(report.paths["json"]).read_text())["cutover"]
    assert html.escape(said) in Path(report.paths["html"]).read_text()
    wb.cutover("order_summary", force=True)
    wb.run("order_summary", keys=[DUPLICATED[0], "o-0000001"], progress="none")
    wb.store.con.execute(f"UPDATE order_summary SET paid = paid + 1 WHERE order_id = '{DUPLICATED[0]}'")
    assert wb.check("order_summary").cutover() == (
        "the patch replaces live order_summary's 2 rows in its scope in one transaction: of those 1 change, 0 go and "
        "1 stay the same, and 0 are added; live's other rows stay as they are; the replaced rows are kept: "
        "`rebuild rollback order_summary` puts them back")
    before = wb.view("order_summary").sort("order_id")
    wb.cutover("order_summary", force=True)
    after = wb.view("order_summary").sort("order_id")
    assert len(after) == 40 and after.filter(after["order_id"] != DUPLICATED[0]).equals(
        before.filter(before["order_id"] != DUPLICATED[0]))
    wb.rollback("order_summary")
    assert wb.view("order_summary").sort("order_id").equals(before)


def test_the_plot_of_differing_keys_per_day_says_when_it_counts_only_the_kept_keys(scenario, monkeypatch):
    """Of 952,479 changed rows the plot drew the 1,000 keys the diff keeps, titled 'Differing keys per day':
    about 70 a day where some 68,000 differed, beside a plot per column counting them all."""
    import checks.suite

    def title(report):
        return Image.open(io.BytesIO(base64.b64decode(report.plots["differences per day"]))).text["Title"]

    assert title(scenario.wb.check("order_summary")) == "Differing keys per day of event time"
    monkeypatch.setattr(checks.suite, "compare", functools.partial(checks.suite.compare, max_keys=2))
    assert title(scenario.wb.check("order_summary")) == ("Differing keys per day of event time "
                                                         "(2 keys kept of 6 differing rows)")


def test_gate_refuses_without_passing_check_and_forced_is_recorded(scenario):
    wb = scenario.wb
    with pytest.raises(CutoverRefused, match="no passing check"):
        wb.cutover("order_summary")
    report = wb.check("order_summary")
    assert report.verdict.verdict == "fail"
    with pytest.raises(CutoverRefused, match=f"failed its check \\(report: {re.escape(report.paths['html'])}\\); if "
                                             "the differences are the corrections you meant, cut over with --force"):
        wb.cutover("order_summary")
    cp = wb.cutover("order_summary", force=True)
    record = wb.store.run(cp.run_id)
    assert record.forced is True and record.status == "live"


def test_gate_opens_after_a_passing_check(scenario):
    wb = scenario.wb
    wb.cutover("order_summary", force=True)  # the rebuilt view is live now; rebuild again and check
    wb.run("order_summary", full=True, progress="none")
    report = wb.check("order_summary")
    assert report.verdict.verdict == "pass", report.verdict.reasons
    cp = wb.cutover("order_summary")
    assert wb.store.run(cp.run_id).forced is False
    assert wb.store.checkpoint("order_summary", LIVE).run_id == report.run_id


def test_partial_shadow_checked_against_its_scope(scenario):
    wb = scenario.wb
    wb.cutover("order_summary", force=True)
    wb.run("order_summary", keys=[DUPLICATED[0], "o-0000001"], progress="none")
    report = wb.check("order_summary", live=None)
    assert report.diff.scope is not None and report.diff.rows_live == 2
    assert report.verdict.verdict == "pass", report.verdict.reasons


def test_check_against_another_live_table_with_tolerance(scenario):
    report = scenario.wb.check("order_summary", live="order_summary", tolerance=["paid=100", "items=10", "total=5"])
    # duplicates and the old version only move numbers (within tolerance); poisoned orders also lose status
    assert {k["order_id"] for k in report.diff.differing_keys} == set(POISONED)


def test_a_tolerance_given_as_one_text_is_read_like_a_list_of_one(scenario):
    """wb.check(view, tolerance="paid=100") (one CLI-style text, not a list) and tolerance=0.01 ended in
    "AttributeError: 'str' object has no attribute 'items'" from inside the diff."""
    from checks import CheckInputError

    one = scenario.wb.check("order_summary", tolerance="paid=100")
    assert one.diff.changed_by_column == scenario.wb.check("order_summary", tolerance=["paid=100"]).diff.changed_by_column
    assert one.diff.changed_by_column["paid"] < scenario.wb.check("order_summary").diff.changed_by_column["paid"]
    with pytest.raises(CheckInputError, match=r"tolerance must be \{column: \(absolute, relative\)\}, .* not 0.01"):
        scenario.wb.check("order_summary", tolerance=0.01)



def test_the_report_audits_the_lake_the_shadow_replayed(scenario):
    """A shadow replayed --as-of an older lake_version was reported with the latest lake's audit:
    with the quarantined records and late events committed after the lake it was built from."""
    scenario.wb.run("order_summary", as_of="1", progress="none")
    audit = scenario.wb.check("order_summary").audit
    then = lake.read_events(scenario.lake, lake.EventFilter(as_of=1)).count("*").fetchall()[0][0]
    assert then < lake.read_events(scenario.lake).count("*").fetchall()[0][0]
    assert audit["lake_version"] == 1 and audit["events"] == then
    assert audit["quarantined"] == 0  # the poison records came with the next commit
    assert lake.audit.audit(scenario.lake).to_dict()["quarantined"] == len(POISONED)


def test_a_report_on_a_store_that_computes_elsewhere_names_the_store_tables(tmp_path):
    """On a PostgreSQL or Parquet store the report said live `__check_order_summary`, rebuilt
    `__check_order_summary__shadow` (the check's temporary views), and a --live table without the key
    column was '__check_orders_rm has no key column', with no word on what to do."""
    import pyarrow as pa

    from checks import CheckInputError
    from rebuild.config import Config
    from rebuild.consumer import Faults, build_live
    from rebuild.workbench import Workbench
    from tests.checks.conftest import build_order_lake

    target = build_order_lake(tmp_path)
    with Workbench(Config(lake_uri=str(target.uri), store_uri=f"parquet://{tmp_path / 'views'}",
                          reports_dir=str(tmp_path / "reports"), memory_limit="1GB")) as wb:
        build_live(target, wb.store, Faults(duplicates=DUPLICATED))
        wb.run("order_summary", full=True, progress="none")
        report = wb.check("order_summary")
        assert (report.live, report.rebuilt) == ("order_summary", "order_summary__shadow")
        assert (report.diff.live, report.diff.rebuilt) == ("order_summary", "order_summary__shadow")
        assert "__check_" not in Path(report.paths["html"]).read_text() + Path(report.paths["json"]).read_text()
        live = wb.store.read("order_summary").rename_columns(["id", *wb.store.read("order_summary").column_names[1:]])
        wb.store.write_table("orders_rm", pa.table(live))
        with pytest.raises(CheckInputError, match=r"^orders_rm has no key column \['order_id'\] \(it has \['id', .*\); "
                                                  r"compare with a view of it that has it"):
            wb.check("order_summary", live="orders_rm")


def test_lineage_of_a_key_whose_sequence_reaches_the_bigint_limit(make_lake):
    # sequence is int64: a producer numbering from the top (or a clock) reaches 2**63 - 1, and the
    # count of missing sequences (last - first + 1 - events) overflowed: the check failed with a traceback
    from tests.conftest import event

    top = 2**63 - 1
    events = [event(1, key="big", seq=0), event(2, key="big", seq=top), event(3, key="o2", seq=1)]
    traced = lineage(make_lake(events), [{"order_id": "big"}], partition_column="order_id")
    assert traced[0].sequence_range == (0, top) and traced[0].missing_sequences == top - 1
    assert "gap" in traced[0].flags


def test_lineage_of_windows_on_the_first_and_last_representable_days(make_lake):
    # a by_window view keyed by day holds 0001-01-01 and 9999-12-31 when events carry such sentinel
    # times; the margins of the event-time range read around the days overflowed: OverflowError
    from datetime import UTC, date, datetime

    from tests.conftest import event

    events = [event(1, key="a", at=datetime(1, 1, 1, 6, tzinfo=UTC)), event(2, key="b", at=datetime(9999, 12, 31, 6, tzinfo=UTC))]
    traced = lineage(make_lake(events), [{"day": date(1, 1, 1)}, {"day": date(9999, 12, 31)}], window=("day", "1 day"))
    assert [t.event_ids for t in traced] == [("e1",), ("e2",)]


@pytest.mark.parametrize(("window", "start", "ids"), [
    (("week", "1 week"), date(2026, 8, 31), [f"e{n}" for n in range(24)]),  # Monday 2026-08-31 to Sunday 2026-09-06
    (("hour", "1 hour"), datetime(2026, 8, 31, 7, tzinfo=UTC), ["e1"]),
    (("month", "1 month"), date(2026, 8, 1), ["e0", "e1", "e2", "e3"]),  # Aug 31's: the others are September's
])
def test_lineage_of_a_window_longer_or_shorter_than_a_day_holds_its_events(make_lake, window, start, ids):
    # a week's lineage read the events of its first two days only (the event-time range read was the
    # window's day + 2), a month's read none ("no_events"), and an hour's held every event of its day
    from tests.conftest import event

    events = [event(n, key=f"o{n}", at=datetime(2026, 8, 31, tzinfo=UTC) + timedelta(hours=7 * n)) for n in range(24)]
    (traced,) = lineage(make_lake(events), [{window[0]: start}], window=window)
    assert sorted(traced.event_ids) == sorted(ids) and traced.events == len(ids)


def test_differing_windows_are_counted_on_their_utc_day_in_a_session_of_another_zone(duck):
    # checks on an analyst's connection in Berlin: the window of 23:00 UTC came back as 01:00+02:00 of
    # the next day, and the plot of differing keys per event day (UTC) counted it on that day
    from checks import compare, difference_days

    hour = "SELECT TIMESTAMPTZ '2026-08-31 23:00:00+00' AS hour, {} AS n"
    con = duck(hour.format(1), hour.format(2))
    con.execute("SET TimeZone = 'Europe/Berlin'")
    keys = list(compare(con, "live", "rebuilt", ["hour"]).differing_keys)
    assert difference_days(None, keys, window=("hour", "1 hour")) == {"2026-08-31": 1}


def test_lineage_of_a_hot_key_names_at_most_fifty_suspect_events(make_lake):
    # a hot partition key (an order with thousands of items of quantity 1) whose total is off by 1:
    # every item event "explains" it, and the report listed them all (20,000 events: 4 MB of JSON)
    from checks.lineage import MAX_IDS
    from tests.conftest import event

    events = [event(n, key="hot", seq=n, type="ItemAdded", payload={"quantity": 1}) for n in range(1, 201)]
    (traced,) = lineage(make_lake(events), [{"order_id": "hot"}], partition_column="order_id",
                        changes={("hot",): {"total": {"live": 201, "rebuilt": 200}}})
    assert traced.events == 200 and "duplicate_suspected" in traced.flags
    assert len(traced.explained_by) == MAX_IDS and traced.explained_by[0]["event_id"] == "e1"


def test_the_lineage_of_a_hot_key_holds_its_suspects_not_all_its_events(make_lake):
    """A changed key with many events (a by_window view's day, a hot order): the lineage held every event's
    payload values in Python lists before ranking the few that can explain the difference (20,000 events
    took ~20 MB; a day of millions, gigabytes). It now sums them as they are read and keeps the suspects."""
    from tests.conftest import event

    n = 20_000
    events = [event(1, key="hot", type="OrderPlaced", payload={"customer_id": 7}),
              *(event(s, key="hot", seq=s, type="ItemAdded", payload={"quantity": 3, "unit_price": 2.5}) for s in range(2, n)),
              event(n, key="hot", seq=n, type="ItemRemoved", payload={"quantity": 1, "unit_price": 2.5})]
    target = make_lake(events)
    rebuilt = 3 * (n - 2) - 1
    changes = {("hot",): {"items": {"live": rebuilt + 1, "rebuilt": rebuilt}}}
    lineage(target, [{"order_id": "hot"}], partition_column="order_id", changes=changes)  # the modules it imports
    traced, peak = _lineage_with_peak(target, "hot", changes)
    assert traced.events == n and "missed_suspected" in traced.flags
    assert [(e["event_id"], e["field"], e["reading"]) for e in traced.explained_by] == [(f"e{n}", "quantity", "live misses it")]
    assert peak < 10 << 20, f"{peak / 2**20:.1f} MiB"  # ~4 MiB: a batch of payloads; ~20 MiB before


def _lineage_with_peak(target, order_id, changes):
    """The lineage of one order and the Python memory its tracing peaked at."""
    import tracemalloc

    tracemalloc.start()
    try:
        (traced,) = lineage(target, [{"order_id": order_id}], partition_column="order_id", changes=changes)
        return traced, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_lineage_of_a_changed_key_with_a_payload_that_is_no_object(make_lake):
    """The lake takes any JSON payload; a changed key with an array payload ended `rebuild check` in a
    traceback (AttributeError: 'list' object has no attribute 'items') instead of a report."""
    events = _order(("PaymentAuthorized", [10.0]), ("PaymentAuthorized", {"amount": 10.0}), ("Noted", "text"))
    changes = {"paid": {"live": 20.0, "rebuilt": 10.0}}
    (traced,) = lineage(make_lake(events), [{"order_id": "o1"}], partition_column="order_id", changes={("o1",): changes})
    assert [(e["event_id"], e["field"]) for e in traced.explained_by] == [("e3", "amount")]


def test_the_lineage_of_a_key_with_a_wide_payload_does_not_multiply_every_pair_of_its_numbers(make_lake):
    """A payload of 3,000 numbers (a wide form, a sensor frame) gave 4.5 million pairwise products in
    Python: 10 s and 2 GB of a `rebuild check` for one event. Products are tried for small payloads only."""
    from checks.lineage import MAX_PRODUCT_NUMBERS

    wide = {"amount": 10.0, **{f"f{i:04d}": i + 0.5 for i in range(1_000)}}
    events = _order(("PaymentAuthorized", wide), ("ItemAdded", {"quantity": 3, "unit_price": 2.5}))
    target = make_lake(events)
    changes = {("o1",): {"paid": {"live": 20.0, "rebuilt": 10.0}, "total": {"live": 15.0, "rebuilt": 7.5}}}
    traced, peak = _lineage_with_peak(target, "o1", changes)
    assert peak < 8 << 20, f"{peak / 2**20:.1f} MiB"  # ~190 MiB of products before
    named = {(e["column"], e["event_id"], e["field"]) for e in traced.explained_by}
    assert ("paid", "e2", "amount") in named  # the wide payload's own numbers are still read
    assert ("total", "e3", "quantity*unit_price") in named  # and a small one's products
    assert len(wide) > MAX_PRODUCT_NUMBERS >= 2


def test_the_lineage_of_a_key_with_a_payload_nested_thousands_of_levels_deep(make_lake, tmp_path):
    """The lake takes JSON nested 5,000 levels deep (DuckDB reads it); the lineage read each payload with
    Python's json module, and `rebuild check` ended in a RecursionError (exit 70) instead of a report."""
    deep = '{"v": 1}'
    for _ in range(5_000):
        deep = '{"n": ' + deep + "}"
    line = json.dumps({"event_id": "e2", "partition_key": "o1", "sequence": 2, "event_type": "PaymentAuthorized",
                       "event_time": "2024-03-01T00:00:00+00:00", "payload": {"amount": 7.0, "deep": "DEEP"}})
    target = make_lake(_order())
    lake.ingest(target, [write_ndjson(tmp_path / "deep.ndjson", [line.replace('"DEEP"', deep)])], stream="orders")
    changes = {("o1",): {"paid": {"live": 14.0, "rebuilt": 7.0}}}
    (traced,) = lineage(target, [{"order_id": "o1"}], partition_column="order_id", changes=changes)
    assert [(e["event_id"], e["field"]) for e in traced.explained_by] == [("e2", "amount")]


def test_the_lineage_runs_within_the_configured_memory_limit_and_temp_directory(scenario, monkeypatch):
    """The lineage (and the differing keys per day) opened their own DuckDB with its defaults (80% of
    the machine's memory, a .tmp folder in the working directory): a hot key or a big diff at 3 a.m.
    could take more memory than [duckdb] memory_limit allowed the job, or spill where it may not."""
    report, seen, store = _settings_seen(scenario, monkeypatch, "checks.lineage")
    assert report.lineage and len(seen) == 2  # the lineage and the differing keys per day
    assert set(seen) == {store}


def test_the_lake_audit_of_a_check_runs_within_the_configured_memory_limit_and_temp_directory(scenario, monkeypatch):
    """The check's lake audit opened its own DuckDB with its defaults (80% of the machine's memory), and on an
    object store copied the consumed streams' events into it: more than [duckdb] memory_limit allowed the job."""
    report, seen, store = _settings_seen(scenario, monkeypatch, "lake.audit")
    assert report.audit["events"] > 0 and len(seen) == 2  # the view's streams, and every stream's ids (duplicates)
    assert set(seen) == {store}


def _settings_seen(scenario, monkeypatch, module_name):
    """A check, with the memory limit and temp directory of each connection ``module_name`` read the lake on,
    and the store's."""
    import sys

    module = sys.modules[module_name]
    read_events, seen = module.read_events, []

    def spy(lake, filter, con=None, **options):
        seen.append(con.sql("SELECT current_setting('memory_limit'), current_setting('temp_directory')").fetchall()[0])
        return read_events(lake, filter, con=con, **options)

    monkeypatch.setattr(module, "read_events", spy)
    report = scenario.wb.check("order_summary")
    store = scenario.wb.store.compute().sql(
        "SELECT current_setting('memory_limit'), current_setting('temp_directory')").fetchall()[0]
    return report, seen, store


def _order(*items_and_more):
    """One order's events: e1 OrderPlaced, then (type, payload) in sequence."""
    from tests.conftest import event

    return [event(1, key="o1"), *(event(n, key="o1", type=t, payload=p) for n, (t, p) in enumerate(items_and_more, start=2))]


def test_lineage_names_a_removal_live_missed_not_an_added_item_counted_twice(scenario):
    """Live ignored ItemRemoved (an old projection version): its items and total are one removed item
    higher. The lineage called it 'duplicate_suspected' and read the ItemRemoved as 'live counts it once
    more' (which would make live lower), naming the added items first: the wrong cause."""
    report = scenario.wb.check("order_summary")
    for order in OLD_VERSION:
        (traced,) = [x for x in report.lineage if x.key == {"order_id": order}]
        assert "missed_suspected" in traced.flags and "duplicate_suspected" not in traced.flags
        first = traced.explained_by[0]
        assert (first["event_type"], first["reading"]) == ("ItemRemoved", "live misses it")


def test_lineage_of_a_key_with_two_causes_names_each_column_s_own(make_lake):
    """Live counted the payment twice and missed the removal of an item: each changed column is
    explained by its own event, read the right way, and both suspicions are flagged."""
    events = _order(("ItemAdded", {"quantity": 2, "unit_price": 5.0}), ("ItemAdded", {"quantity": 1, "unit_price": 7.0}),
                    ("ItemAdded", {"quantity": 1, "unit_price": 3.0}), ("ItemRemoved", {"quantity": 1, "unit_price": 7.0}),
                    ("PaymentAuthorized", {"amount": 13.0}))
    changes = {"items": {"live": 4, "rebuilt": 3}, "paid": {"live": 26.0, "rebuilt": 13.0}}
    (traced,) = lineage(make_lake(events), [{"order_id": "o1"}], partition_column="order_id", changes={("o1",): changes})
    first = {c: next(e for e in traced.explained_by if e["column"] == c) for c in changes}
    assert (first["items"]["event_type"], first["items"]["reading"]) == ("ItemRemoved", "live misses it")
    assert (first["paid"]["event_type"], first["paid"]["reading"]) == ("PaymentAuthorized", "live counts it once more")
    assert {"duplicate_suspected", "missed_suspected"} <= set(traced.flags)


def test_lineage_does_not_name_an_event_type_that_adds_nothing_to_the_column(make_lake):
    """A payment counted twice on a refunded order: the refund's amount equals the difference too, but
    refunds add nothing to paid (the rebuilt value is the payments alone), so it is not a suspect."""
    events = _order(("PaymentAuthorized", {"amount": 10.0}), ("PaymentAuthorized", {"amount": 5.0}),
                    ("RefundIssued", {"amount": 10.0}))
    changes = {"paid": {"live": 25.0, "rebuilt": 15.0}}
    (traced,) = lineage(make_lake(events), [{"order_id": "o1"}], partition_column="order_id", changes={("o1",): changes})
    assert [(e["event_type"], e["reading"]) for e in traced.explained_by] == [("PaymentAuthorized", "live counts it once more")]
    assert "missed_suspected" not in traced.flags


def test_lineage_reads_a_missed_event_with_a_negative_value(make_lake):
    """A correction of -3 that live missed leaves live 3 higher: 'live misses it', not 'once more'."""
    events = _order(("PaymentAuthorized", {"amount": 10.0}), ("PaymentAuthorized", {"amount": -3.0}))
    changes = {"paid": {"live": 10.0, "rebuilt": 7.0}}
    (traced,) = lineage(make_lake(events), [{"order_id": "o1"}], partition_column="order_id", changes={("o1",): changes})
    assert traced.explained_by[0]["reading"] == "live misses it"
    assert "missed_suspected" in traced.flags and "duplicate_suspected" not in traced.flags


def test_great_expectations_is_imported_while_duckdb_compares(scenario, monkeypatch):
    """Importing Great Expectations costs about 4 s per process; it ran after the diff, adding to every
    CLI check. It now starts in a background thread before the diff, and expectations run last."""
    import checks.suite as suite

    calls: list[str] = []
    for name in ("warm_up", "compare", "_audit", "validate"):
        real = getattr(suite, name)
        monkeypatch.setattr(suite, name, functools.partial(lambda n, f, *a, **k: calls.append(n) or f(*a, **k), name, real))
    scenario.wb.check("order_summary")
    assert calls == ["warm_up", "compare", "_audit", "validate"]


def test_a_second_check_of_the_same_snapshot_reads_the_kept_audit(scenario, monkeypatch, caplog):
    """The whole lake's audit is most of a full run's check (8.8 s of 11 s at 10M events, minutes at 100M)
    and the same for every check of one snapshot: another view's, or this one's again with another
    tolerance. It is kept under the reports folder; a new commit, or a damaged file, audits again."""
    import checks.suite as suite

    audits: list[int] = []
    real = suite.audit_lake
    monkeypatch.setattr(suite, "audit_lake", lambda *a, **k: audits.append(1) or real(*a, **k))
    first = scenario.wb.check("order_summary")
    again = scenario.wb.check("order_summary", tolerance="total=0.01")
    assert len(audits) == 1 and again.audit == first.audit and again.audit_html == first.audit_html
    assert json.loads(Path(again.paths["json"]).read_text())["audit"]["streams"]["orders"]["events"] > 0
    [kept] = (scenario.root / "reports" / ".audits").glob("*.json")
    kept.write_text("{not json")
    with caplog.at_level("WARNING", logger="checks.suite"):
        assert scenario.wb.check("order_summary").audit == first.audit
    assert len(audits) == 2 and "auditing the lake again" in caplog.text
    lake.ingest(scenario.lake, [write_ndjson(scenario.root / "more.ndjson", order_events(41))], stream="orders")
    scenario.wb.run("order_summary", full=True, progress="none")
    after = scenario.wb.check("order_summary")
    assert len(audits) == 3 and after.audit["streams"]["orders"]["events"] > first.audit["streams"]["orders"]["events"]
    assert len(list((scenario.root / "reports" / ".audits").glob("*.json"))) == 2


def test_a_lake_made_again_at_the_same_place_is_audited_again(tmp_path):
    """A notebook that makes its sample lake again under the same folder gets the same Delta versions:
    the kept audit is named by the snapshot's files too, so the new lake's check does not read the old one's."""
    import shutil

    from checks.suite import ViewSpec, _kept_audit

    def made(n: int) -> Path:
        target = lake.Lake(tmp_path / "lake").create()
        lake.ingest(target, [write_ndjson(tmp_path / "e.ndjson", order_events(n))], stream="orders")
        return _kept_audit(tmp_path / "reports", target, target.snapshot(), ViewSpec("v", ("order_id",)).streams, 1)

    first = made(1)
    assert made(1) == first  # the same lake and snapshot: the same place
    shutil.rmtree(tmp_path / "lake")
    assert made(2) != first


def test_a_moved_project_s_refused_cutover_names_the_report_where_it_is_now(scenario):
    """A run record names its report by the absolute path it was written at: after the project folder
    was moved (renamed, restored elsewhere), cutover's refusal sent people to the old place."""
    report = scenario.wb.check("order_summary")
    assert report.verdict.verdict == "fail"
    scenario.wb.close()
    moved = scenario.root / "moved"
    moved.mkdir()
    for name in ("lake", "views.duckdb", "reports"):
        shutil.move(scenario.root / name, moved / name)
    wb = Workbench(Config(lake_uri=str(moved / "lake"), store_uri=f"duckdb://{moved / 'views.duckdb'}",
                          reports_dir=str(moved / "reports"), memory_limit="1GB"))
    try:
        with pytest.raises(CutoverRefused) as refused:
            wb.cutover("order_summary")
    finally:
        wb.close()
    here = moved / "reports" / "order_summary" / Path(report.paths["html"]).name
    assert f"(report: {here})" in str(refused.value) and here.is_file()


def test_a_column_named_with_dollar_signs_is_plotted_as_text(make_lake, tmp_path):
    """The report's plot of changes per column drew its labels as matplotlib's mathtext: a column
    ``net_$_usd_$`` failed the whole check (exit 70, no report: "Double subscript")."""
    from rebuild import projection
    from rebuild.projection import Registry

    registry = Registry()
    projection(name="dollars", key="k", payload={"amount": "BIGINT"}, incremental="full", registry=registry)(
        lambda: 'SELECT partition_key AS k, sum(amount) AS "net_$_usd_$", count(*) AS "a$^^$" FROM events GROUP BY ALL')
    target = make_lake([{"event_id": f"e{i}", "partition_key": f"k{i % 2}", "sequence": i, "event_type": "T",
                         "event_time": "2026-01-01T00:00:00Z", "payload": {"amount": i}} for i in range(4)])
    with Workbench(Config(lake_uri=target.uri, store_uri=str(tmp_path / "v.duckdb"),
                          reports_dir=str(tmp_path / "reports")), registry=registry) as wb:
        wb.run("dollars", progress="none")
        wb.cutover("dollars", force=True)
        late = {"event_id": "e9", "partition_key": "k0", "sequence": 9, "event_type": "T",
                "event_time": "2026-01-02T00:00:00Z", "payload": {"amount": 9}}
        lake.ingest(target, [write_ndjson(tmp_path / "more.ndjson", [late])], stream="orders")
        wb.run("dollars", progress="none")
        report = wb.check("dollars", progress="none")
        assert report.diff.changed_by_column == {"net_$_usd_$": 1, "a$^^$": 1}
        assert Path(report.paths["html"]).is_file()

def test_the_lineage_of_a_wide_view_weighs_the_signs_of_the_matching_fields_only(make_lake, monkeypatch):
    # a key changed in 300 columns, its events holding 20 numbers each (210 values with their products):
    # the signs of every value were weighed again for each column, 60 s of a 70 s check of 20 keys
    import importlib

    from tests.conftest import event

    module = importlib.import_module("checks.lineage")  # checks.lineage is the function

    weighed = []
    signs = module._signs
    monkeypatch.setattr(module, "_signs", lambda sums, rebuilt: weighed.append(len(sums)) or signs(sums, rebuilt))
    events = [event(n, key="k", seq=n, type="Measured", payload={f"f{i:02d}": 1000 * n + i for i in range(20)})
              for n in range(1, 11)]
    # c{c} sums f{c} and live counted event 5 twice (f{c} = 5000 + c); no field holds the other columns
    changes = {f"c{c}": {"live": 60000.0 + 11 * c, "rebuilt": 55000.0 + 10 * c} for c in range(300)}
    (traced,) = lineage(make_lake(events), [{"order_id": "k"}], partition_column="order_id", changes={("k",): changes})
    assert [(e["column"], e["field"]) for e in traced.explained_by[:2]] == [("c0", "f00"), ("c1", "f01")]
    assert len(weighed) == 300 and sum(weighed) == 20  # the twenty fields that match a column, each once


DRAW = "from checks import plots; assert plots.bars({'a': 1.0}, 'title', 'x', 'y')"


@pytest.mark.parametrize("theirs", [False, True])
def test_a_report_drawn_under_a_home_the_job_may_not_write_keeps_its_log_clean(tmp_path: Path, theirs: bool) -> None:
    """A nightly check under a home it may not write (systemd's ProtectHome, a read-only container) logged two
    matplotlib warnings each night and built its font list again: matplotlib now gets a folder of the user's own in
    the temp directory, kept between runs; a folder there that others may write is never taken (it could hold a
    matplotlibrc)."""
    own = tmp_path / f"rebuild-matplotlib-{os.getuid()}"
    if theirs:
        own.mkdir()
        own.chmod(0o777)
    env = {k: v for k, v in os.environ.items() if k not in ("MPLCONFIGDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")}
    env |= {"HOME": "/proc/no-home", "TMPDIR": str(tmp_path)}  # /proc: not even root may write there
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", DRAW], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert ("Matplotlib created a temporary" in done.stderr) is theirs, done.stderr
    assert bool(list(own.glob("fontlist-*.json"))) is not theirs


def test_the_report_s_first_screen_says_what_was_compared_and_what_to_do_next(scenario):
    """The report's head named two tables and an ISO time: which run, of which code, on which lake and
    lake_version, was in the Run section at the bottom, and the next step only in the CLI's output, so a
    person who did not run the check could not tell what the verdict was about nor what to do."""
    wb = scenario.wb
    report = wb.check("order_summary")
    text = Path(report.paths["html"]).read_text()
    head = text.split("<section id='verdict'>")[0]
    run = report.run
    finished = run["finished_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert (f"(run {report.run_id}: a full run of projection version {run['projection_version']} (code "
            f"{run['fingerprint']}) that read the lake <code>{scenario.lake.uri}</code> up to lake_version "
            f"{run['lake_version']} and finished {finished}) was compared with live <code>order_summary</code>") in head
    assert f"Report made {report.created_at.strftime('%Y-%m-%d %H:%M:%S')} UTC." in head
    data = json.loads(Path(report.paths["json"]).read_text())
    assert data["next"] == report.next_step() and report.next_step().startswith("read the report; if the differences")
    verdict = text.split("<section id='verdict'>")[1].split("</section>")[0]
    assert f"<b>Next step</b>: {html.escape(report.next_step())}" in verdict
    wb.store.con.execute("DROP TABLE order_summary")  # a first run: nothing live to compare with
    first = wb.check("order_summary")
    assert "was checked on its own: there is no live view to compare it with" in Path(first.paths["html"]).read_text()
    assert first.next_step() == "`rebuild cutover order_summary` (and `rebuild rollback order_summary` to undo it)"


def test_the_report_s_plots_have_their_numbers_beside_them(scenario):
    """The plots were images with alt text such as 'lateness' and no numbers anywhere else: a screen reader,
    a printout or a reader who cannot tell the run checked (red) from the others (blue) had nothing."""
    report = scenario.wb.check("order_summary")
    text = Path(report.paths["html"]).read_text()
    data = json.loads(Path(report.paths["json"]).read_text())["plots"]
    figures = re.findall(r"<figure><img alt='([^']*)' src='data:image/png;base64,[^']+'>(.*?)</figure>", text)
    assert len(figures) == sum(1 for image in report.plots.values() if image) >= 3
    for alt, caption in figures:
        (shown,) = [d for d in data.values() if html.escape(d["title"]) in alt]
        cells = re.findall(r"<tr><th scope='row'>([^<]*)</th><td>([^<]*)</td></tr>", caption)
        assert cells == [(html.escape(k), f"{round(v, 3):,}") for k, v in shown["values"].items()]
    assert data["changes per column"]["values"]["paid"] == report.diff.changed_by_column["paid"] == 4
    assert f"{report.run_id[-13:]} (this run)" in data["run throughput"]["values"]


def test_the_lineage_in_the_html_names_each_explaining_event_whole(scenario):
    """'explained by' was cut at 120 characters ('... items +2 = I…'), so the events that explained a
    difference, and whether live missed them or counted them once more, were lost from the HTML."""
    report = scenario.wb.check("order_summary")
    text = Path(report.paths["html"]).read_text()
    traced = [x for x in report.lineage if len(x.explained_by) >= 2]
    assert traced
    for x in traced:
        for e in x.explained_by[:3]:
            assert html.escape(f"{e['event_type']} {e['event_id']} ({e['field']}), {e['reading']}") in text


def test_lineage_does_not_guess_which_way_an_event_went_when_the_events_cannot_tell(make_lake):
    """All of an order's items removed (items 0 = ItemAdded 2 - ItemRemoved 2, or the other way round)
    and live missed the removal: the report read 'ItemRemoved ... live counts it once more' (live would
    then be lower, not higher) and flagged duplicate_suspected, pointing at the wrong fault."""
    events = _order(("ItemAdded", {"quantity": 2, "unit_price": 5.0}), ("ItemRemoved", {"quantity": 2, "unit_price": 5.0}))
    changes = {"items": {"live": 2, "rebuilt": 0}}
    (traced,) = lineage(make_lake(events), [{"order_id": "o1"}], partition_column="order_id", changes={("o1",): changes})
    assert {(e["event_type"], e["reading"]) for e in traced.explained_by} == {
        ("ItemAdded", "live counts it once more or misses it"), ("ItemRemoved", "live counts it once more or misses it")}
    assert not {"duplicate_suspected", "missed_suspected"} & set(traced.flags)
