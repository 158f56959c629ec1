"""The verdict says why the views differ: the sampled keys' suspect events and flags, counted per cause."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from rebuild.cli import main
from tests.checks.conftest import DUPLICATED, OLD_VERSION, POISONED

MISSED_ITEM = "live seems to miss an ItemAdded event the rebuild applies (its numbers equal the difference in items, total)"
POISON = "a record of the key quarantined in the lake (reason: unparsable event_time)"
TWICE = "live seems to apply a PaymentAuthorized event twice (its numbers equal the difference in paid)"
OLD = "live seems to miss an ItemRemoved event the rebuild applies (its numbers equal the difference in items, total)"


def test_the_verdict_names_each_fault_with_its_keys(scenario, capsys, monkeypatch):
    """A reviewer read 'FAIL: 6 changed rows' and had to find the causes in a lineage table further down,
    key by key: the poison record live stopped at, the payment applied twice, the ItemRemoved ignored."""
    monkeypatch.chdir(scenario.root)
    scenario.wb.close()
    c = scenario.wb.config
    args = ["--lake", c.lake_uri, "--store", f"duckdb:///{c.store_uri.removeprefix('duckdb://')}"]
    assert main([*args, "check", "order_summary"]) == 1
    out = capsys.readouterr().out
    assert "  why, from the events of 6 sampled of the 6 differing keys:\n" in out
    for cause, keys in ((MISSED_ITEM, POISONED), (POISON, POISONED), (TWICE, DUPLICATED), (OLD, OLD_VERSION)):
        line = next(x for x in out.splitlines() if cause in x)
        assert line.startswith("    - 2 of 6 sampled keys: ") and sorted(line.split("(e.g. ")[1][:-1].split(", ")) == sorted(keys)
    assert out.index("why, from") < out.index("report: ") < out.index("next: ")

    html = next(Path("reports/order_summary").glob("*.html")).read_text()
    verdict = html[html.index("id='verdict'"):html.index("id='diff'")]
    assert verdict.index("<b>Why</b>, from the events of 6 sampled of the 6 differing keys") < verdict.index("<b>Cutover</b>")
    assert verdict.count("<li>2 of 6 sampled keys: ") == 4
    data = json.loads(next(Path("reports/order_summary").glob("*.json")).read_text())
    by_cause = {c["cause"]: sorted(k["order_id"] for k in c["examples"]) for c in data["causes"]}
    assert by_cause == {MISSED_ITEM: sorted(POISONED), POISON: sorted(POISONED), TWICE: sorted(DUPLICATED),
                        OLD: sorted(OLD_VERSION)}
    assert sum(len(x["explained_by"]) > 0 for x in data["lineage"]) == 6


def test_a_check_without_differences_says_no_why(scenario):
    scenario.wb.cutover("order_summary", force=True)
    scenario.wb.run("order_summary", full=True, progress="none")
    report = scenario.wb.check("order_summary", progress="none")
    assert report.passed and report.why() == [] and report.to_dict()["causes"] == []
    assert "<b>Why</b>" not in report.to_html()


def test_one_difference_in_every_changed_key_is_named_an_offset(scenario):
    """Live's total 1.00 higher in every row (a consumer adding a fee): the why named 'live seems to apply an
    ItemAdded event twice' wherever an item cost 1.00, a chance the sampled keys' one shared difference tells."""
    scenario.wb.cutover("order_summary", force=True)
    scenario.wb.run("order_summary", full=True, progress="none")
    live = scenario.wb.store.read("order_summary")  # noqa: F841  (read by the DuckDB query below)
    fee = duckdb.sql("SELECT * REPLACE (CAST(total + 1 AS DECIMAL(18, 2)) AS total) FROM live").to_arrow_table()
    scenario.wb.store.write_table("order_summary", fee)
    report = scenario.wb.check("order_summary", progress="none")
    changed = report.diff.samples["changed"]
    assert report.diff.changed_rows == 40 and len(changed) == 20
    first = report.to_dict()["causes"][0]
    assert first["cause"].startswith("live - rebuilt is the same in every changed key sampled (total +1.00): an offset")
    assert first["keys"] == 20 and first["examples"] == [{"order_id": s["order_id"]} for s in changed[:3]]
    assert report.why()[1].startswith("20 of 20 sampled keys: live - rebuilt is the same")
