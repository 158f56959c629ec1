"""The five ways a live view drifts, each end to end on a DuckDB and a PostgreSQL store: a lake, a live
``order_summary`` written by a streaming consumer with that defect, `rebuild run --full`, then the check
through the Workbench and the CLI. The truth is computed here, by folding every order's events with the
project's correct consumer, never read back from the diff."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

import lake
import rebuild.examples  # noqa: F401  (registers order_summary, whose version 4 the new column test makes)
from lake import EventFilter, read_events
from rebuild.cli import main
from rebuild.config import Config
from rebuild.consumer import SCHEMA, Faults, apply, by_order
from rebuild.projection import REGISTRY
from rebuild.workbench import Workbench
from tests.conftest import write_ndjson
from tests.orders import T0, order_events
from tests.pg import fresh_database, postgres_server, postgres_uri  # noqa: F401  (session-wide PostgreSQL)

VIEW = "order_summary"
Fold = Callable[[str, list[dict[str, Any]]], dict[str, Any]]


@pytest.fixture(params=["duckdb", "postgres"])
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("fresh_database"))
    return f"duckdb://{tmp_path}/views.duckdb"


def _orders() -> list[dict[str, Any]]:
    """Twelve orders, every fourth refunded (a refund is half the payment)."""
    return [e for n in range(1, 13) for e in order_events(n, refund=n % 4 == 0)]


def _lake(root: Path, *commits: tuple[list[dict[str, Any]], timedelta]) -> lake.Lake:
    """A lake of the orders, then each further commit's records, ingested that long after T0."""
    target = lake.Lake(root / "lake").create()
    for n, (records, after) in enumerate(((_orders(), timedelta(hours=23)), *commits)):
        lake.ingest(target, [write_ndjson(root / f"in{n}.ndjson", records)], stream="orders", ingested_at=T0 + after)
    return target


def _events(target: lake.Lake) -> dict[str, list[dict[str, Any]]]:
    con = duckdb.connect()
    try:
        rel = read_events(target, EventFilter(streams=("orders",)), con=con)
        return dict(by_order(rel.order("partition_key, sequence, event_id").to_arrow_reader(10_000)))
    finally:
        con.close()


def _consume(target: lake.Lake, wb: Workbench, fold: Fold) -> dict[str, dict[str, Any]]:
    """Live as a streaming consumer with a defect (``fold``) writes it; returns its rows by order."""
    rows = {order: fold(order, evs) for order, evs in _events(target).items()}
    wb.store.write_table(VIEW, pa.Table.from_pylist(list(rows.values()), schema=SCHEMA))
    return rows


def _truth(target: lake.Lake, live: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What differs between live and every order's events folded correctly, column by column."""
    right = {order: apply(order, evs, Faults()) for order, evs in _events(target).items()}
    by_column = {c: sum(live[o][c] != right[o][c] for o in live.keys() & right.keys())
                 for c in SCHEMA.names if c != "order_id"}
    changed = {o for o in live.keys() & right.keys() if live[o] != right[o]}
    return {"rows": len(live), "changed_rows": len(changed), "changed_by_column": by_column, "only_in_live": len(live.keys() - right.keys()),
            "only_in_rebuilt": len(right.keys() - live.keys()), "changed": changed}


def _checked(tmp_path: Path, store: str, target: lake.Lake, fold: Fold, monkeypatch: pytest.MonkeyPatch,
             capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Live by ``fold``, a full run, the check through the Workbench and through `rebuild --json check`:
    the truth, the CLI's JSON (whose counts and lineage equal the Workbench's) and the HTML's lineage section."""
    monkeypatch.chdir(tmp_path)
    with Workbench(Config(lake_uri=str(target.uri), store_uri=store, reports_dir=str(tmp_path / "reports"),
                          memory_limit="1GB")) as wb:
        live = _consume(target, wb, fold)
        wb.run(VIEW, full=True, progress="none")
        report = wb.check(VIEW, progress="none").to_dict()
    assert main(["--lake", str(target.uri), "--store", store, "--json", "check", VIEW]) == 1
    printed = json.loads(capsys.readouterr().out)
    data = json.loads(Path(printed["report"]["json"]).read_text(encoding="utf-8"))
    counts = ("verdict", "reasons", "changed_rows", "changed_by_column", "only_in_live", "only_in_rebuilt")
    assert {k: printed[k] for k in counts} == {k: data[k] for k in counts} == {k: report[k] for k in counts}
    assert data["next"] == report["next"] and data["lineage"] == json.loads(json.dumps(report["lineage"], default=str))
    page = Path(data["report"]["html"]).read_text(encoding="utf-8")
    lineage = html.unescape(page.split("<section id='lineage'>")[1].split("</section>")[0])
    return _truth(target, live), data, lineage


def _counted_right(data: dict[str, Any], truth: dict[str, Any]) -> None:
    assert {k: data[k] for k in ("changed_rows", "changed_by_column", "only_in_live", "only_in_rebuilt")} == \
        {k: truth[k] for k in ("changed_rows", "changed_by_column", "only_in_live", "only_in_rebuilt")}
    assert {x["key"]["order_id"] for x in data["lineage"]} == truth["changed"]
    assert data["verdict"] == "fail" and len(data["reasons"]) == 1
    assert data["reasons"][0].startswith(f"{truth['changed_rows']} changed rows (") and f"of {truth['rows']}, allowed 0%" in data["reasons"][0]


def _row(lineage: str, order: str) -> str:
    (row,) = [r for r in re.findall(r"<tr>(.*?)</tr>", lineage) if f"order_id={order}<" in r]
    return re.sub(r"<[^>]+>", "|", row)


def test_a_consumer_bug_is_counted_and_explained_by_the_events_it_mishandled(tmp_path, store_uri, monkeypatch, capsys):
    """(a) The old projection's bug, ItemRemoved ignored: live's items and total are the removed items too high.
    The lineage read the removal as missed by its quantity*unit_price and, by its unit_price (no field total adds
    up), as counted once more: the same event both ways, and an ItemAdded of that price counted once more.
    Order 13 removed the one item it added: its items 0 add up as ItemAdded - ItemRemoved, the reverse, or
    neither, so its removal was read 'once more or misses it' and not flagged, though the other orders tell."""
    removed = [{**order_events(n)[-1], "event_id": f"rm-{n}", "sequence": 4 if n == 13 else 6, "event_type": "ItemRemoved",
                "payload": {"order_id": f"o-{n:07d}", "sku": "sku-0", "quantity": 1 + n // 13, "unit_price": 1.25 + n % 7}}
               for n in (3, 9, 13)]
    target = _lake(tmp_path, (order_events(13, items=1)[:3] + removed, timedelta(hours=23)))
    truth, data, lineage = _checked(tmp_path, store_uri, target, lambda o, evs: apply(o, evs, Faults(old_version=True)),
                                    monkeypatch, capsys)
    _counted_right(data, truth)
    assert truth["changed"] == {"o-0000003", "o-0000009", "o-0000013"} and data["changed_by_column"]["items"] == 3
    for traced in data["lineage"]:
        n = int(traced["key"]["order_id"][2:])
        assert traced["flags"] == ["missed_suspected"]
        first = {c: next(e for e in traced["explained_by"] if e["column"] == c) for c in ("items", "total")}
        assert {c: (e["event_id"], e["reading"]) for c, e in first.items()} == {
            "items": (f"rm-{n}", "live misses it"), "total": (f"rm-{n}", "live misses it")}
        readings = {(e["event_id"], e["reading"]) for e in traced["explained_by"]}
        assert len(readings) == len({i for i, _ in readings})  # no event read both ways
        if n < 13:  # order 13's ItemAdded of the same quantity and price may be counted once more, too
            assert readings == {(f"rm-{n}", "live misses it")} and "once more" not in _row(lineage, f"o-{n:07d}")
        assert f"items +{1 + n // 13}: ItemRemoved rm-{n} (quantity), live misses it" in _row(lineage, f"o-{n:07d}")
    assert data["next"].startswith("read the report; if the differences are the corrections you meant")


def test_a_poison_record_the_consumer_stalled_on_is_named_with_its_sequence(tmp_path, store_uri, monkeypatch, capsys):
    """(b) A record the lake quarantined (its event_time unreadable) at sequence 3 of order 5: the consumer
    choked on it and skipped the rest of the order. The HTML named the quarantine's reason only, not which
    record it was nor where in the order it stood."""
    poison = {"event_id": "bad-5", "partition_key": "o-0000005", "sequence": 3, "event_type": "ItemAdded",
              "event_time": "not a time", "payload": {"order_id": "o-0000005"}}
    target = _lake(tmp_path, ([poison], timedelta(hours=23)))
    truth, data, lineage = _checked(
        tmp_path, store_uri, target, lambda o, evs: apply(o, evs, Faults(), 3 if o == "o-0000005" else None),
        monkeypatch, capsys)
    _counted_right(data, truth)
    (traced,) = data["lineage"]
    assert set(traced["flags"]) == {"missed_suspected", "quarantined"}
    assert [(q["event_id"], q["sequence"]) for q in traced["quarantine"]] == [("bad-5", 3)]
    # the likeliest cause first: the event at the poison's sequence, which both items and total miss
    assert traced["explained_by"][0]["event_id"] == "ev-o-0000005-3"
    assert "live misses it" in {e["reading"] for e in traced["explained_by"] if e["event_id"] == "ev-o-0000005-4"}
    assert "bad-5 (sequence 3): unparsable event_time: not a time" in _row(lineage, "o-0000005")


def test_a_poison_event_the_lake_took_and_the_consumer_skipped_is_named_as_missed(tmp_path, store_uri, monkeypatch, capsys):
    """(b) An ItemAdded whose quantity and price came as text ("3", "2.50"): the lake archived it and the rebuild
    read its numbers, as the projection declares them, but the consumer's strict schema skipped it. The lineage
    read only JSON numbers, so the order's changed items and total were explained by nothing."""
    text = {**order_events(6)[-1], "event_id": "text-6", "sequence": 6, "event_type": "ItemAdded",
            "payload": {"order_id": "o-0000006", "sku": "sku-9", "quantity": "3", "unit_price": "2.50"}}
    target = _lake(tmp_path, ([text], timedelta(hours=23)))

    def strict(order: str, events: list[dict[str, Any]]) -> dict[str, Any]:
        return apply(order, [e for e in events if not isinstance(json.loads(e["payload"]).get("quantity"), str)], Faults())

    truth, data, lineage = _checked(tmp_path, store_uri, target, strict, monkeypatch, capsys)
    _counted_right(data, truth)
    (traced,) = data["lineage"]
    assert traced["flags"] == ["missed_suspected"]
    assert {(e["column"], e["event_id"], e["reading"]) for e in traced["explained_by"]} == {
        ("items", "text-6", "live misses it"), ("total", "text-6", "live misses it")}
    assert "items -3: ItemAdded text-6 (quantity), live misses it" in _row(lineage, "o-0000006")


def test_a_payment_delivered_twice_names_both_of_its_ids(tmp_path, store_uri, monkeypatch, capsys):
    """(c) The payment service retried order 7's payment with a new event id at the same sequence: the lake
    quarantined the copy as a conflict, the consumer applied both. The HTML named the kept payment as counted
    once more, but of the copy only the reason, in which its own id is not."""
    retry = {**order_events(7)[3], "event_id": "retry-7"}
    target = _lake(tmp_path, ([retry], timedelta(days=1)))
    truth, data, lineage = _checked(
        tmp_path, store_uri, target, lambda o, evs: apply(o, evs, Faults(duplicates=("o-0000007",))), monkeypatch, capsys)
    _counted_right(data, truth)
    assert truth["changed_by_column"]["paid"] == 1
    (traced,) = data["lineage"]
    assert {"duplicate_suspected", "conflict", "quarantined"} <= set(traced["flags"])
    assert [(e["event_id"], e["reading"]) for e in traced["explained_by"]] == [("ev-o-0000007-4", "live counts it once more")]
    assert [q["event_id"] for q in traced["quarantine"]] == ["retry-7"]
    row = _row(lineage, "o-0000007")
    assert "PaymentAuthorized ev-o-0000007-4 (amount), live counts it once more" in row
    assert "retry-7 (sequence 4): conflict" in row


def test_a_late_event_the_consumer_dropped_is_named_late_and_missed(tmp_path, store_uri, monkeypatch, capsys):
    """(d) A refund of order 2 and the shipment of order 13 archived three days after they happened: the
    consumer's watermark (a day) dropped them, so live's status, refunded and version are behind. Order 13's
    version, one behind, was explained by its ItemAdded of quantity 1, 'live misses it', as its quantities
    1 + 2 + 3 add up to its version 6: chance, which order 2's events, adding up otherwise, tell."""
    refund = {**order_events(2)[-1], "event_id": "refund-2", "sequence": 6, "event_type": "RefundIssued",
              "payload": {"order_id": "o-0000002", "amount": 4.75}}
    placed = order_events(13, items=3, ship=False)
    placed = [{**e, "payload": {**e["payload"], "quantity": e["sequence"] - 1}} if e["event_type"] == "ItemAdded" else e
              for e in placed]
    shipped = {**order_events(13)[-1], "event_id": "ship-13", "sequence": 6, "event_type": "OrderShipped",
               "payload": {"order_id": "o-0000013", "carrier": "dhl"}}
    target = _lake(tmp_path, (placed, timedelta(hours=23)), ([refund, shipped], timedelta(days=3)))

    def watermark(order: str, events: list[dict[str, Any]]) -> dict[str, Any]:
        return apply(order, [e for e in events if e["ingested_at"] - e["event_time"] <= timedelta(days=1)], Faults())

    truth, data, lineage = _checked(tmp_path, store_uri, target, watermark, monkeypatch, capsys)
    _counted_right(data, truth)
    assert {c for c, n in truth["changed_by_column"].items() if n} == {"status", "refunded", "version"}
    traced, shipment = sorted(data["lineage"], key=lambda x: x["key"]["order_id"])
    assert traced["late"] == ["refund-2"] and set(traced["flags"]) == {"late", "missed_suspected"}
    assert [(e["event_id"], e["reading"]) for e in traced["explained_by"]] == [("refund-2", "live misses it")]
    assert "late: refund-2" in _row(lineage, "o-0000002")
    # the commit that brought the late refund, which the run read and the consumer's live did not take
    assert (traced["lake_versions"], shipment["lake_versions"]) == ([1, 3], [2, 3]) and data["run"]["lake_version"] == 3
    assert "|1..3|" in _row(lineage, "o-0000002") and "|2..3|" in _row(lineage, "o-0000013")
    assert (shipment["late"], shipment["flags"], shipment["explained_by"]) == (["ship-13"], ["late"], [])
    assert "late: ship-13" in _row(lineage, "o-0000013")


def test_a_new_column_is_no_error_in_live_s_data_and_the_next_step_says_so(tmp_path, store_uri, monkeypatch, capsys):
    """(e) Version 4 of the projection adds ``lines`` (items added per order), which needs the whole history;
    live, from a correct consumer, lacks it. The check failed on the schema change, as its thresholds say,
    and advised 'if the differences are the corrections you meant ... if not, fix the projection', as for
    wrong data, though every value live has is right."""
    target = _lake(tmp_path)
    p = REGISTRY.get(VIEW)
    lines = ("SELECT s.*, l.lines FROM ({}) s JOIN (SELECT partition_key AS order_id, count(*) FILTER (WHERE "
             "event_type = 'ItemAdded') AS lines FROM events GROUP BY 1) l USING (order_id)")
    monkeypatch.setitem(REGISTRY._items, VIEW, replace(p, version=4, func=lambda: lines.format(p.func())))
    truth, data, _ = _checked(tmp_path, store_uri, target, lambda o, evs: apply(o, evs, Faults()), monkeypatch, capsys)
    assert truth["changed_rows"] == data["changed_rows"] == 0 and data["diff"]["added"] == ["lines"]
    assert data["reasons"] == ["schema changed: added column lines"]  # not "removed [], retyped []" as well
    assert data["next"] == (
        "the rebuilt view equals live in every column live has and adds column lines, computed from the whole history: "
        "no data of live is wrong; `rebuild cutover order_summary --force` makes the new columns live (the run record "
        "keeps it; `rebuild rollback order_summary` undoes it)")
    assert data["cutover"].startswith(  # 12 rows 'stay the same' said nothing of the column every row gains
        "the rebuilt view replaces live order_summary in one transaction: of live's 12 rows 0 change, 0 go and 12 stay "
        "the same, and 0 are added (12 rows then), and every row gains column lines; live as it is now is kept")


def test_a_new_column_shows_what_it_holds_and_one_all_null_is_no_green_light(tmp_path, monkeypatch, capsys):
    """Version 4 adds ``lines`` and ``shipped_by``; the report said 'added' and nothing of their values, so a
    column NULL in every row (a join on a misspelt field) read as 'no data of live is wrong: cut over'."""
    target = _lake(tmp_path)
    p = REGISTRY.get(VIEW)
    sql = ("SELECT s.*, l.lines, l.shipped_by FROM ({}) s JOIN (SELECT partition_key AS order_id, count(*) FILTER "
           "(WHERE event_type = 'ItemAdded') AS lines, max(payload->>'carrier_name') AS shipped_by FROM events "
           "GROUP BY 1) l USING (order_id)")
    monkeypatch.setitem(REGISTRY._items, VIEW, replace(p, version=4, func=lambda: sql.format(p.func())))
    _, data, _ = _checked(tmp_path, f"duckdb://{tmp_path}/views.duckdb", target,
                          lambda o, evs: apply(o, evs, Faults()), monkeypatch, capsys)
    lines = {o: sum(e["event_type"] == "ItemAdded" for e in order_events(int(o[2:]))) for o in (f"o-{n:07d}" for n in range(1, 13))}
    assert data["diff"]["added_values"] == {
        "lines": {"type": "BIGINT", "values": 12, "nulls": 0, "distinct": len(set(lines.values())),
                  "min": str(min(lines.values())), "max": str(max(lines.values()))},
        "shipped_by": {"type": "VARCHAR", "values": 0, "nulls": 12, "distinct": 0, "min": None, "max": None}}
    assert data["next"].startswith("the rebuilt view equals live in every column live has, but the column shipped_by it "
                                   "adds is NULL in every row: fix the projection")
    page = html.unescape(Path(data["report"]["html"]).read_text(encoding="utf-8"))
    diff = page.split("<section id='diff'>")[1].split("</section>")[0]
    assert "what rebuilt holds in the columns it adds (live has none to compare)" in diff
    for name, said in (("columns added", "lines, shipped_by"), ("columns removed", "none"), ("columns retyped", "none"),
                       ("live rows compared", "all"), ("key", "order_id")):  # not [] and {} and a blank
        assert f"<th scope='row'>{name}</th><td>{said}</td>" in diff
    assert re.search(r"<th scope='row'>shipped_by</th><td>VARCHAR</td><td>0</td><td>12</td><td>0</td><td></td><td></td>", diff)


def test_the_next_step_of_a_new_column_with_wrong_data_is_not_that_live_is_right(tmp_path, monkeypatch, capsys):
    """A new column and a consumer bug at once: the next step must not say that no data of live is wrong."""
    target = _lake(tmp_path, ([{**order_events(3)[-1], "event_id": "rm-3", "sequence": 6, "event_type": "ItemRemoved",
                                "payload": {"order_id": "o-0000003", "quantity": 1, "unit_price": 1.0}}], timedelta(hours=23)))
    p = REGISTRY.get(VIEW)
    monkeypatch.setitem(REGISTRY._items, VIEW, replace(p, version=4, func=lambda: f"SELECT *, 1 AS lines FROM ({p.func()})"))
    _, data, _ = _checked(tmp_path, f"duckdb://{tmp_path}/views.duckdb", target,
                          lambda o, evs: apply(o, evs, Faults(old_version=True)), monkeypatch, capsys)
    assert data["changed_rows"] == 1 and data["next"].startswith("read the report; if the differences")
