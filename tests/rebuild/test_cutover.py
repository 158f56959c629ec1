"""Cutover and rollback: one transaction each, full and partial shadows, the gate."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rebuild import CutoverRefused, StoreError
from tests.orders import order_events
from tests.rebuild.conftest import Bench


def test_full_cutover_keeps_the_old_live_for_rollback(bench: Bench) -> None:
    bench.ingest(e for o in range(1, 6) for e in order_events(o))
    bench.rebuild_live("order_summary")
    first = bench.rows("order_summary")
    bench.ingest(order_events(9))
    result = bench.wb.run("order_summary", full=True, progress="none")
    cp = bench.wb.cutover("order_summary", force=True)
    assert cp.run_id == result.run_id and len(bench.rows("order_summary")) == 6
    assert bench.rows("order_summary", "previous").equals(first)
    assert bench.wb.store.run(result.run_id).status == "live"  # type: ignore[union-attr]
    bench.wb.rollback("order_summary")
    assert bench.rows("order_summary").equals(first)
    bench.wb.rollback("order_summary")  # rolling back a rollback redoes the cutover
    assert len(bench.rows("order_summary")) == 6


def test_partial_cutover_patches_live_and_rolls_back(bench: Bench) -> None:
    bench.ingest(e for o in range(1, 6) for e in order_events(o))
    bench.rebuild_live("order_summary")
    before = bench.rows("order_summary")
    bench.ingest(order_events(2, first_seq=30, items=1, ship=False) + order_events(8))
    bench.wb.run("order_summary", progress="none")  # incremental: keys o-2 and o-8
    assert bench.wb.store.count("order_summary__shadow") == 2
    bench.wb.cutover("order_summary", force=True)
    after = bench.rows("order_summary")
    assert len(after) == 6 and after.filter(after["order_id"] == "o-0000002")["version"].item() == 32
    previous = bench.rows("order_summary", "previous")
    assert previous["order_id"].to_list() == ["o-0000002"]  # only the replaced rows are kept
    bench.wb.rollback("order_summary")
    assert bench.rows("order_summary").equals(before)


def test_cutover_refuses_without_a_passing_check_unless_forced(bench: Bench) -> None:
    bench.ingest(order_events(1))
    result = bench.wb.run("order_summary", progress="none")
    with pytest.raises(CutoverRefused, match="no passing check report"):
        bench.wb.cutover("order_summary")
    bench.wb.cutover("order_summary", force=True)
    assert bench.wb.store.run(result.run_id).forced is True  # type: ignore[union-attr]


def test_a_check_against_another_table_than_live_does_not_open_the_gate(bench: Bench) -> None:
    """`check --live OTHER` reports as usual, but cutover replaces live, so only a check against
    live (or, for a view without one yet, against any table) lets it through."""
    bench.ingest(e for o in range(1, 4) for e in order_events(o))
    result = bench.wb.run("order_summary", progress="none")
    assert bench.wb.check("order_summary", live="order_summary__shadow").passed  # no live yet: it counts
    assert bench.wb.store.run(result.run_id).verdict == "pass"  # type: ignore[union-attr]
    bench.wb.cutover("order_summary")
    bench.ingest(order_events(7))
    result = bench.wb.run("order_summary", full=True, progress="none")
    assert bench.wb.check("order_summary", live="order_summary__shadow").passed  # the shadow against itself
    assert bench.wb.store.run(result.run_id).verdict == "pass against: order_summary__shadow"  # type: ignore[union-attr]
    with pytest.raises(CutoverRefused, match="checked against order_summary__shadow, not against live order_summary"):
        bench.wb.cutover("order_summary")
    with pytest.raises(StoreError, match="no live table 'nope'"):
        bench.wb.check("order_summary", live="nope")


def test_a_check_against_a_table_named_with_a_slash_writes_its_report(bench: Bench) -> None:
    """The report of `check --live OTHER` is RUN_ID--against-OTHER.html: a table "exports/live copy"
    made that a folder, and the check failed after all its steps with "cannot write the report ...
    let this user write there" (a table name is text, not a path)."""
    bench.ingest(e for o in range(1, 4) for e in order_events(o))
    bench.wb.run("order_summary", progress="none")
    bench.wb.cutover("order_summary", force=True)
    result = bench.wb.run("order_summary", full=True, progress="none")
    bench.wb.store.write_table("exports/live copy 100%", bench.wb.store.read("order_summary"))
    report = bench.wb.check("order_summary", live="exports/live copy 100%")
    assert report.passed and Path(report.paths["html"]).parent == bench.root / "reports" / "order_summary"
    assert Path(report.paths["html"]).name == f"{result.run_id}--against-exports%2Flive copy 100%25.html"


def test_nothing_to_cut_over_or_roll_back_is_a_clear_error(bench: Bench) -> None:
    bench.ingest(order_events(1))
    with pytest.raises(CutoverRefused, match="no shadow"):
        bench.wb.cutover("order_summary", force=True)
    with pytest.raises(StoreError, match="nothing to roll back"):
        bench.wb.rollback("order_summary")


def test_the_next_step_is_named_for_a_notebook_too(bench: Bench) -> None:
    """In a notebook, a refused cutover said only "run `rebuild check order_summary` (or cut over with
    --force ...)" and a missing shadow "run `rebuild run order_summary` first": commands of a shell the
    analyst is not in. Each names the call too."""
    bench.ingest(order_events(1))
    with pytest.raises(CutoverRefused, match=re.escape("run `rebuild run order_summary` (wb.run('order_summary')) first")):
        bench.wb.cutover("order_summary")
    with pytest.raises(StoreError, match=re.escape("run `rebuild run order_summary` (wb.run('order_summary')) first")):
        bench.wb.check("order_summary")
    with pytest.raises(StoreError, match=re.escape("exists after `rebuild run order_summary` (wb.run('order_summary'))")):
        bench.wb.view("order_summary", "shadow")
    bench.wb.run("order_summary", progress="none")
    with pytest.raises(CutoverRefused, match=re.escape(
            "run `rebuild check order_summary` (wb.check('order_summary')) (or cut over with --force "
            "(wb.cutover('order_summary', force=True)), which the run record keeps)")):
        bench.wb.cutover("order_summary")


def test_a_patch_needs_a_live_view(bench: Bench) -> None:
    bench.ingest(order_events(1))
    bench.wb.run("order_summary", keys=["o-0000001"], progress="none")
    with pytest.raises(StoreError, match="no live view"):
        bench.wb.cutover("order_summary", force=True)
    assert bench.wb.store.exists("order_summary__shadow")  # the failed cutover changed nothing


def test_a_targeted_patch_does_not_move_live_past_events_it_did_not_read(bench: Bench) -> None:
    # live is behind the lake for o-1 and o-2; a correction of o-1 alone must leave o-2's new
    # events to the next incremental run, not mark live as caught up past them
    bench.ingest(e for o in range(1, 4) for e in order_events(o))
    bench.rebuild_live("order_summary")
    behind = bench.wb.store.checkpoint("order_summary", "live")
    bench.ingest(order_events(1, first_seq=30, items=1, ship=False) + order_events(2, first_seq=30, items=1, ship=False))
    bench.wb.run("order_summary", keys=["o-0000001"], progress="none")
    cp = bench.wb.cutover("order_summary", force=True)
    assert cp is not None and cp.lake_version == behind.lake_version  # type: ignore[union-attr]
    assert bench.wb.plan("order_summary").mode == "incremental"
    bench.rebuild_live("order_summary")  # the incremental catch-up
    bench.wb.run("order_summary", full=True, progress="none")
    assert bench.rows("order_summary").equals(bench.rows("order_summary", "shadow"))


def test_an_incremental_patch_is_refused_once_live_has_changed_under_it(bench: Bench) -> None:
    bench.ingest(e for o in range(1, 4) for e in order_events(o))
    bench.rebuild_live("order_summary")
    bench.ingest(order_events(2, first_seq=30, items=1, ship=False))
    bench.rebuild_live("order_summary")  # a patch of o-2 is live
    bench.ingest(order_events(3, first_seq=30, items=1, ship=False))
    bench.wb.run("order_summary", progress="none")  # catches that live up: a patch of o-3
    bench.wb.rollback("order_summary")  # live is the older view again, without o-2's events
    with pytest.raises(CutoverRefused, match="live is at lake_version 1 now"):
        bench.wb.cutover("order_summary", force=True)
    assert bench.wb.store.exists("order_summary__shadow")
    bench.rebuild_live("order_summary")  # rerun: catches up from the restored live
    bench.wb.run("order_summary", full=True, progress="none")
    assert bench.rows("order_summary").equals(bench.rows("order_summary", "shadow"))


def test_a_targeted_patch_of_a_merge_view_ahead_of_live_is_refused(bench: Bench) -> None:
    bench.ingest(e for o in range(1, 4) for e in order_events(o, customer=o))
    bench.rebuild_live("customer_ltv")
    bench.ingest(order_events(5, customer=1) + order_events(6, customer=2))
    bench.wb.run("customer_ltv", keys=["o-0000005"], progress="none")
    with pytest.raises(CutoverRefused, match="catch live up first"):
        bench.wb.cutover("customer_ltv", force=True)


def test_a_comparison_with_another_table_keeps_the_check_against_live(bench: Bench) -> None:
    """`check --live OTHER` after a check against live replaced the run's verdict (closing the gate the
    live check had opened) and wrote over its report file, the one people read before cutover."""
    bench.ingest(e for o in range(1, 4) for e in order_events(o))
    bench.wb.run("order_summary", progress="none")
    bench.wb.cutover("order_summary", force=True)
    result = bench.wb.run("order_summary", full=True, progress="none")
    against_live = bench.wb.check("order_summary")
    assert against_live.passed
    side = bench.wb.check("order_summary", live="order_summary__shadow")
    record = bench.wb.store.run(result.run_id)
    assert record is not None and (record.verdict, record.report) == ("pass", against_live.paths["html"])
    assert side.paths["html"].endswith(f"{result.run_id}--against-order_summary__shadow.html")
    assert Path(against_live.paths["html"]).exists() and Path(side.paths["html"]).exists()
    assert '"live": "order_summary"' in Path(against_live.paths["json"]).read_text()  # not written over
    bench.wb.cutover("order_summary")  # the gate the live check opened stays open


def test_a_nightly_catch_up_is_judged_on_what_it_can_get_wrong(bench: Bench) -> None:
    """Every catch-up's check failed: its new keys were "only in rebuilt", its updated orders "changed",
    its rows counted against live's rows in the scope. So a nightly job needed --force every night, and
    its exit 1 told the scheduler nothing. Those differences are the new events' effects by construction."""
    bench.ingest(e for o in range(1, 4) for e in order_events(o))
    bench.rebuild_live("order_summary")
    live_version = bench.wb.store.checkpoint("order_summary", "live").lake_version  # type: ignore[union-attr]
    refund = {"event_id": "r-2", "partition_key": "o-0000002", "sequence": 50, "event_type": "RefundIssued",
              "event_time": "2026-09-03T10:00:00+00:00", "payload": {"order_id": "o-0000002", "amount": 1.0}}
    bench.ingest([*order_events(7), refund])
    assert bench.wb.run("order_summary", progress="none").plan.mode == "incremental"
    report = bench.wb.check("order_summary")
    assert (report.diff.changed_rows, report.diff.only_in_rebuilt) == (1, 1)
    assert report.passed, report.verdict.reasons
    assert any(f"a catch-up from lake_version {live_version}: 1 changed rows, 1 new keys" in n for n in report.verdict.notes)
    bench.wb.cutover("order_summary")  # no --force needed
    bad = order_events(8)
    bad[1]["payload"]["unit_price"] = -500.0  # a negative total: what a catch-up can still get wrong
    bench.ingest(bad)
    bench.wb.run("order_summary", progress="none")
    failed = bench.wb.check("order_summary")
    assert failed.verdict.reasons == ("expectation expect_column_values_to_be_between(total) failed: 1 of 1 values "
                                      "unexpected",)
    bench.wb.run("order_summary", full=True, progress="none")  # a full run is still judged against live in full
    assert not bench.wb.check("order_summary").passed


def test_a_catch_up_with_nothing_new_is_not_told_its_streams_are_empty(bench: Bench) -> None:
    """A second catch-up of the night (no new events) audits its patch's keys, none, and its check noted that
    stream ['orders'] "holds no events" and that every consumed type was "not in the lake's streams": a
    misspelt stream and types, said of a lake that holds them, in the job's log each quiet night."""
    bench.ingest(e for o in range(1, 4) for e in order_events(o))
    bench.rebuild_live("order_summary")
    assert bench.wb.run("order_summary", progress="none").record.rows_written == 0
    report = bench.wb.check("order_summary")
    assert report.passed and report.audit["keys_audited"] == 0
    said = " ".join([*report.notes, *report.verdict.notes])
    assert "holds no events" not in said and "event types not in" not in said, said


def _constraints(bench: Bench, table: str) -> list[tuple[object, ...]]:
    return bench.wb.store.con.sql(  # type: ignore[attr-defined]
        "SELECT constraint_type, constraint_column_names FROM duckdb_constraints() "
        f"WHERE table_name = '{table}' ORDER BY ALL").fetchall()


def test_a_duckdb_full_cutover_keeps_lives_primary_key_not_null_and_comments(bench: Bench) -> None:
    """The shadow (CREATE TABLE AS) became live without live's primary key, NOT NULL and comments."""
    bench.ingest(e for o in range(1, 6) for e in order_events(o))
    bench.rebuild_live("order_summary")
    con = bench.wb.store.con  # type: ignore[attr-defined]
    for sql in ("ALTER TABLE order_summary ADD PRIMARY KEY (order_id)",
                "ALTER TABLE order_summary ALTER COLUMN status SET NOT NULL",
                "COMMENT ON TABLE order_summary IS 'one row per order'", "COMMENT ON COLUMN order_summary.total IS 'EUR'"):
        con.execute(sql)
    before = _constraints(bench, "order_summary")
    comments = "SELECT comment FROM duckdb_tables() WHERE table_name = 'order_summary' UNION ALL " \
               "SELECT comment FROM duckdb_columns() WHERE table_name = 'order_summary' AND comment IS NOT NULL"
    bench.wb.run("order_summary", full=True, progress="none")
    bench.wb.cutover("order_summary", force=True)
    for _ in range(3):  # cut over, rolled back, and forward again
        assert _constraints(bench, "order_summary") == before
        assert con.sql(comments).fetchall() == [("one row per order",), ("EUR",)]
        bench.wb.rollback("order_summary")


def test_a_duckdb_full_cutover_of_a_live_view_with_an_index_is_refused(bench: Bench) -> None:
    """DuckDB cannot rename a table that has an index: the cutover died with a DependencyException
    traceback (exit 1); now it is a store error naming the index."""
    bench.ingest(e for o in range(1, 6) for e in order_events(o))
    bench.rebuild_live("order_summary")
    bench.wb.store.con.execute("CREATE INDEX by_customer ON order_summary (customer_id)")  # type: ignore[attr-defined]
    bench.wb.run("order_summary", full=True, progress="none")
    with pytest.raises(StoreError, match=r"order_summary has index by_customer: .*DuckDB cannot rename a table with an "
                                         r"index.*Drop them.*--keys"):
        bench.wb.cutover("order_summary", force=True)
    assert bench.wb.store.exists("order_summary__shadow") and not bench.wb.store.exists("order_summary__previous")
