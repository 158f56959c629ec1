"""A lake and store an earlier version wrote, run by this one (README: "Upgrading under an existing lake and store")."""

from __future__ import annotations

import importlib
import json
from datetime import timedelta
from pathlib import Path

import pytest

import lake
from rebuild import Workbench
from rebuild.errors import StoreError
from tests.conftest import archive_again, archive_unchecked, write_ndjson
from tests.orders import T0, order_events
from tests.rebuild.conftest import Bench

NUL_KEY = "o-nul\x00x"


def test_a_key_holding_nul_that_an_earlier_version_archived_is_caught_up_and_checked(
        tmp_path: Path, store_uri: str) -> None:
    """Versions before 2026-11-25 archived a partition_key holding NUL (ingest quarantines it now): every
    catch-up of a by_key view touching it exited 70 ('string literal contains NUL'), every night, until now.
    PostgreSQL's text holds no NUL: its store refuses the rows, naming the column."""
    with Workbench.open(None, lake_uri=str(tmp_path / "lake"), store_uri=store_uri,
                        reports_dir=str(tmp_path / "reports")) as wb:
        lake.ingest(wb.lake, [write_ndjson(tmp_path / "orders.ndjson", order_events(1))], stream="orders")
        wb.run("order_summary", progress="none")
        wb.cutover("order_summary", force=True)
        archive_unchecked(wb.lake, [("old-nul", NUL_KEY, 1, "2026-09-01 10:00:00+00")])
        if store_uri.startswith("postgresql"):
            with pytest.raises(StoreError, match="cannot store the NUL character .* column order_id of order_summary"):
                wb.run("order_summary", progress="none")
            return
        run = wb.run("order_summary", progress="none")
        assert (run.record.mode, run.record.rows_written) == ("incremental", 1)
        report = wb.check("order_summary", progress="none")
        assert [r.split(":")[0] for r in report.verdict.reasons] == [  # the event has no customer: nothing else
            "expectation expect_column_values_to_not_be_null(customer_id) failed"]
        assert not [n for n in report.notes if "a full run, since" in n]  # a catch-up: no code changed
        wb.cutover("order_summary", force=True)
        assert sorted(wb.view("order_summary")["order_id"]) == ["o-0000001", NUL_KEY]


def test_the_check_of_the_full_run_after_the_upgrade_says_why_it_was_full(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    """After the upgrade a Polars view's next run is full and its check fails on every row whose first()/last() the
    file order had chosen: the night job's check said nothing of why live and the rebuild differ so much."""
    bench.ingest(e for o in range(1, 4) for e in order_events(o, customer=o))
    with monkeypatch.context() as before:  # the workbench before: no order in a Polars projection's fingerprint
        before.setattr(importlib.import_module("rebuild.projection"), "POLARS_ORDER", "")
        bench.rebuild_live("customer_ltv")
    bench.wb.store.con.execute("UPDATE customer_ltv SET orders = 7 WHERE customer_id = 'c-000002'")  # type: ignore[attr-defined]
    bench.wb.run("customer_ltv", progress="none")
    report = bench.wb.check("customer_ltv", progress="none")
    assert not report.verdict.passed
    assert [n for n in report.notes if n.startswith("a full run, since")] == [
        "a full run, since live was built before Polars projections got their events in (partition_key, sequence) "
        "order (first() or last() per key may have taken any event): rebuilt in full once; its differences from "
        "live may be the effects of that change, not of the events"]


def test_a_plan_says_as_data_that_live_was_built_by_other_code_also_read_from_an_earlier_run_record(
        bench: Bench) -> None:
    """The check's note was chosen by matching the plan's reason text: a plan says it in ``other_code`` now, and a
    run record an earlier version wrote (its plan without the field) still gets the note by its reason."""
    bench.ingest(e for o in range(1, 4) for e in order_events(o, customer=o))
    bench.rebuild_live("order_summary")
    assert bench.wb.plan("order_summary", full=True).to_dict()["other_code"] is False  # asked, not other code
    code = bench.wb.projection("order_summary")
    bench.wb.store.con.execute(  # type: ignore[attr-defined]
        "UPDATE _checkpoints SET fingerprint = 'other code' WHERE view = 'order_summary'")
    plan = bench.wb.plan("order_summary").to_dict()
    assert (plan["mode"], plan["other_code"]) == ("full", True) and code.fingerprint == plan["fingerprint"]
    run = bench.wb.run("order_summary", progress="none")
    stored = json.loads(bench.wb.store.runs("order_summary", limit=1)[0].plan or "{}")
    assert stored["other_code"] is True
    for written in ({**stored, "reason": "live's code is not this code"},  # the reason is for people only
                    {k: v for k, v in stored.items() if k != "other_code"}):  # as an earlier version wrote it
        bench.wb.store.con.execute(  # type: ignore[attr-defined]
            "UPDATE _rebuild_runs SET plan = ? WHERE run_id = ?", [json.dumps(written), run.record.run_id])
        notes = bench.wb.check("order_summary", progress="none").notes
        assert [n for n in notes if n.startswith("a full run, since")] == [
            f"a full run, since {written['reason']}; its differences from live may be the effects of that change, "
            "not of the events"]


#: the plan fields the version before (eda9080) did not write in its run records
NEW_PLAN_FIELDS = ("other_code", "deduped", "dedupe_keys", "dedupe_key_count")


def test_a_dedupe_left_to_correct_when_the_upgrade_was_rolled_back_is_corrected_when_upgraded_again(
        tmp_path: Path, store_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Today's dedupe records what it removed and each view's next run corrects it; rolled back, the version before
    reads no record: its nightly catch-up, cut over, moved live past the dedupe's Delta version uncorrected, and
    upgraded again, no run corrected the view (a payment archived twice stayed paid twice, `rebuild ls` silent)."""
    with Workbench.open(None, lake_uri=str(tmp_path / "lake"), store_uri=store_uri,
                        reports_dir=str(tmp_path / "reports")) as wb:
        def night(n: int, incremental: bool = False) -> None:
            path = write_ndjson(tmp_path / f"night-{n}.ndjson", order_events(n, customer=n, start=T0 + timedelta(days=n)))
            lake.ingest(wb.lake, [path], stream="orders")
            wb.run("order_summary", progress="none", incremental=incremental)
            wb.cutover("order_summary", force=True)

        def paid() -> list[float]:
            return wb.view("order_summary").filter(order_id="o-0000002")["paid"].cast(float).to_list()

        night(2)
        archive_again(wb.lake, ["ev-o-0000002-4"])  # o-0000002's payment, as ingest archived it twice before
        night(3)  # the catch-up applies the copy: paid twice
        amount = next(e["payload"]["amount"] for e in order_events(2, customer=2) if e["event_id"] == "ev-o-0000002-4")
        assert paid() == [2 * amount]
        deduped = wb.dedupe().result.delta_version
        with monkeypatch.context() as before:  # rolled back: the version before's plan reads no dedupe record,
            before.setattr(importlib.import_module("rebuild.plan"), "pending", lambda *args: None)
            plan = importlib.import_module("rebuild.plan").Plan  # and its run records have no such fields
            written = plan.to_dict
            before.setattr(plan, "to_dict", lambda self: {k: v for k, v in written(self).items() if k not in NEW_PLAN_FIELDS})
            night(4, incremental=True)
        live = wb.store.checkpoint("order_summary", "live")
        assert paid() == [2 * amount] and live is not None and deduped is not None and live.delta_version > deduped
        assert [s.deduped for s in wb.ls() if s.name == "order_summary"] == [deduped]
        assert (wb.plan("order_summary").deduped, wb.plan("order_summary").dedupe_keys) == ((deduped,), ("o-0000002",))
        wb.run("order_summary", progress="none", keys=["o-0000003"])  # upgraded again, a patch of another key first:
        wb.cutover("order_summary", force=True)  # live keeps the version before's position, and its correction
        assert (wb.plan("order_summary").deduped, wb.plan("order_summary").dedupe_keys) == ((deduped,), ("o-0000002",))
        night(5, incremental=True)  # the night's catch-up corrects it
        assert paid() == [amount] and wb.plan("order_summary").deduped == ()


def test_a_dedupe_left_to_correct_when_rolled_back_is_corrected_also_after_a_night_with_nothing_new(
        bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    """A catch-up that changes nothing moves live's position but keeps its run id: the version before's, on a night
    with no new event, moved live past today's dedupe under the run id of today's run, which reads the records,
    so upgraded again no run corrected the view (the payment archived twice stayed paid twice)."""
    bench.ingest(e for o in range(1, 4) for e in order_events(o, customer=o))
    archive_again(bench.wb.lake, ["ev-o-0000002-4"])
    bench.ingest(order_events(4, customer=4, start=T0 + timedelta(days=1)))
    bench.rebuild_live("order_summary")
    deduped = bench.wb.dedupe().result.delta_version
    with monkeypatch.context() as before:  # rolled back, as in the test above
        before.setattr(importlib.import_module("rebuild.plan"), "pending", lambda *args: None)
        plan = importlib.import_module("rebuild.plan").Plan
        written = plan.to_dict
        before.setattr(plan, "to_dict", lambda self: {k: v for k, v in written(self).items() if k not in NEW_PLAN_FIELDS})
        bench.rebuild_live("order_summary", incremental=True)
    assert bench.wb.store.runs("order_summary", 1)[0].status == "empty"
    live = bench.wb.store.checkpoint("order_summary", "live")
    assert live is not None and deduped is not None and live.delta_version >= deduped
    assert (bench.wb.plan("order_summary").deduped, bench.wb.plan("order_summary").dedupe_keys) == ((deduped,), ("o-0000002",))


def test_a_dedupe_the_version_before_ran_is_no_correction_of_todays_runs_and_is_not_redone(
        bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    """The version before's dedupe commit set no `workbench.dedupe` transaction and wrote no record (it printed
    the runs that correct the views instead): today's plans see no dedupe, rather than one whose record is
    missing (a full run of every view built before it), and a dedupe finds nothing more to remove."""
    bench.ingest(e for o in range(1, 4) for e in order_events(o, customer=o))
    archive_again(bench.wb.lake, ["ev-o-0000002-4"])
    bench.ingest(order_events(4, customer=4, start=T0 + timedelta(days=1)))
    bench.rebuild_live("order_summary")
    table = importlib.import_module("lake.table").Lake
    commit = table.commit_files
    with monkeypatch.context() as before:  # its commit: operation and metadata as today's, no record or transaction
        before.setattr(importlib.import_module("lake.dedupe"), "_record", lambda *args: "")
        before.setattr(table, "commit_files", lambda self, *args, position=None, metadata=None, **kw: commit(
            self, *args, metadata={k: v for k, v in (metadata or {}).items() if k != "workbench.dedupe.record"}, **kw))
        removed = bench.wb.dedupe().result
    assert removed.removed == 1 and not (bench.root / "lake" / "_dedupe").exists()
    assert bench.wb.lake.snapshot().last_dedupe is None
    plan = bench.wb.plan("order_summary")
    assert (plan.mode, plan.deduped) == ("incremental", ())
    assert [s.deduped for s in bench.wb.ls() if s.name == "order_summary"] == [None]
    assert bench.wb.dedupe().result.removed == 0
