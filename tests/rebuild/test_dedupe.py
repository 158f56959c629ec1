"""`rebuild lake dedupe` on a lake an earlier version archived events into twice, and the runs it names for
the live views that applied the copies (README: "Events archived twice")."""

from __future__ import annotations

import io
import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from rich.console import Console

from rebuild import Workbench
from rebuild.cli import main
from rebuild.dedupe import NextRun
from tests.conftest import archive_again
from tests.orders import T0, order_events
from tests.rebuild.conftest import VIEWS, Bench
from tests.rebuild.test_json_shape import _documented

#: orders over three days (daily_revenue's windows) and two customers (customer_ltv's rows)
ORDERS = [e for o in range(1, 7) for e in order_events(o, customer=o % 2, start=T0 + timedelta(days=o % 3))]
LATER = order_events(7, customer=1, start=T0 + timedelta(days=1))
#: an earlier version archived these again: o-0000002's payment and o-0000004's item, whose copies every replay applied
COPIED = ["ev-o-0000002-4", "ev-o-0000004-2"]


def _corrected(bench: Bench, runs: list[NextRun]) -> None:
    """Each named run, as the command says, then its cutover."""
    for n in runs:
        args = shlex.split(n.command)
        assert args[:2] == ["rebuild", "run"] and args[2] == n.view
        options = {"full": True} if args[3:] == ["--full"] else {"keys_file": args[4]}
        bench.wb.run(n.view, progress="none", **options)
        if n.view == "order_summary":  # its check shows what the copies did in live: the two orders, nothing else
            found = bench.wb.check(n.view, progress="none").to_dict()
            assert (found["verdict"], found["rows_rebuilt"], found["changed_rows"]) == ("fail", 2, 2)
        bench.wb.cutover(n.view, force=True)


def test_views_that_applied_copies_archived_twice_equal_a_clean_rebuild_after_dedupe_and_the_runs_it_names(
        make_bench: Callable[[str], Bench]) -> None:
    old, clean = make_bench("old"), make_bench("clean")
    old.ingest(ORDERS)
    for view in VIEWS:
        old.rebuild_live(view)
    archive_again(old.wb.lake, COPIED)  # the earlier version's ingest, then today's
    old.ingest(LATER)
    for view in VIEWS:  # the nightly catch-up: each view applies the copies
        old.rebuild_live(view)
    clean.ingest(ORDERS)
    clean.ingest(LATER)
    for view in VIEWS:
        clean.rebuild_live(view, full=True)
    assert old.rows("order_summary").filter(pl.col("order_id") == "o-0000002")["paid"].to_list() != \
        clean.rows("order_summary").filter(pl.col("order_id") == "o-0000002")["paid"].to_list()
    assert old.wb.audit().to_dict()["duplicates"] == 2

    dry = old.wb.dedupe(dry_run=True)
    assert (dry.result.removed, dry.result.keys_file, old.wb.audit().to_dict()["duplicates"]) == (2, None, 2)
    report = old.wb.dedupe()
    assert (report.result.removed, report.result.quarantined, report.result.keys) == (2, 0, ("o-0000002", "o-0000004"))
    assert Path(report.result.keys_file or "").read_text(encoding="utf-8") == "o-0000002\no-0000004\n"
    assert {n.view: n.command.split()[3] for n in report.next_runs} == {
        "order_summary": "--keys-file", "order_timeline": "--keys-file", "daily_revenue": "--keys-file",
        "customer_ltv": "--full"}
    _corrected(old, list(report.next_runs))
    for view in VIEWS:
        assert_frame_equal(old.rows(view), clean.rows(view), check_exact=False)
    assert old.wb.audit().to_dict()["duplicates"] == 0
    again = old.wb.dedupe()
    assert (again.result.removed, again.result.delta_version, again.next_runs) == (0, None, ())


def test_a_view_built_before_the_copies_were_archived_needs_no_run(bench: Bench) -> None:
    """Its next catch-up reads the events after its lake_version, and the removed copies are not among them."""
    bench.ingest(ORDERS)
    bench.rebuild_live("order_summary")
    archive_again(bench.wb.lake, COPIED)
    bench.ingest(LATER)
    assert bench.wb.dedupe().next_runs == ()
    bench.rebuild_live("order_summary")
    assert bench.rows("order_summary").filter(pl.col("order_id") == "o-0000002")["paid"].to_list() == [
        sum(e["payload"]["amount"] for e in ORDERS if e["event_id"] == COPIED[0])]


def test_the_command_prints_one_object_and_says_the_next_runs(bench: Bench, capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(bench.root)  # the keys file goes to the defaults' reports folder there
    bench.ingest(ORDERS)
    bench.rebuild_live("order_summary")
    archive_again(bench.wb.lake, COPIED)  # a commit of nothing but copies, which live then applied
    bench.rebuild_live("order_summary")
    bench.wb.close()
    args = ["--lake", str(bench.root / "lake"), "--store", f"duckdb://{bench.root}/views.duckdb", "--json"]
    assert main([*args, "lake", "dedupe"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed) == list(_documented()["lake dedupe"])  # in the README table's order, as the others are
    assert (printed["removed"], printed["partition_keys"], printed["delta_version"]) == (2, 2, 3)
    assert Path(printed["keys_file"]) == bench.root / "reports" / "dedupe-3-keys.txt"
    # the lake's lake_version is 1 again, and live's 2 is ahead: a plain run would be full too
    assert (printed["lake_version"], [n["command"] for n in printed["next_runs"]]) == (1, ["rebuild run order_summary --full"])
    assert main([*args, "lake", "dedupe"]) == 0
    assert json.loads(capsys.readouterr().out)["removed"] == 0
    # `ls` shows live ahead, and says why: it told of a restored backup and to give "the lake they were built from"
    monkeypatch.setenv("COLUMNS", "400")
    assert main([*args[:-1], "ls"]) == 0
    said = " ".join(capsys.readouterr().out.split())
    assert "ahead: 2 > lake's 1" in said
    assert ("live of order_summary was built from a later lake_version than this lake has: `rebuild lake dedupe` "
            "removed the newest commits' events, all of them copies archived twice") in said


def test_a_copy_that_differed_or_a_key_holding_a_line_break_asks_for_full_runs(bench: Bench) -> None:
    """A by_window view's keys run recomputes the windows of the events left, which the differing copy's may not
    be; a keys file cannot list a key holding a line break."""
    broken = [{**e, "partition_key": "o-1\n2", "event_id": e["event_id"] + "-nl"} for e in order_events(9)]
    bench.ingest(ORDERS + broken)
    archive_again(bench.wb.lake, [COPIED[0]], payload='{"amount": 1}')
    bench.ingest(LATER)
    for view in ("order_summary", "daily_revenue"):
        bench.rebuild_live(view)
    steps = {n.view: (n.command.split()[3], n.why) for n in bench.wb.dedupe().next_runs}
    assert steps["order_summary"] == ("--keys-file", "recomputes the 1 key from all its events")
    assert steps["daily_revenue"][0] == "--full" and "differed" in steps["daily_revenue"][1]
    archive_again(bench.wb.lake, [broken[3]["event_id"]])
    bench.ingest(order_events(8))
    bench.rebuild_live("order_summary")
    [step] = bench.wb.dedupe().next_runs
    assert (step.command, step.why) == ("rebuild run order_summary --full",
                                        "a partition key is blank or holds a line break, which a keys file cannot list")


def test_a_shadow_built_from_the_copies_before_the_dedupe_is_named_not_cut_over_with_them(bench: Bench) -> None:
    """A run waiting for its check or cutover read the copies too: cut over after the dedupe, its live would
    hold what they did, and live, built before them, needs no run of its own."""
    bench.ingest(ORDERS)
    bench.rebuild_live("order_summary")
    archive_again(bench.wb.lake, COPIED)
    bench.ingest(LATER)
    bench.wb.run("order_summary", progress="none")  # the night's shadow, cut over after its check
    [step] = bench.wb.dedupe().next_runs
    assert step.command == "rebuild run order_summary" and "shadow" in step.why
    bench.rebuild_live("order_summary")  # as the command says: a catch-up from live, which read no copy
    assert bench.rows("order_summary").filter(pl.col("order_id") == "o-0000002")["paid"].to_list() == [
        sum(e["payload"]["amount"] for e in ORDERS if e["event_id"] == COPIED[0])]


def test_a_key_of_white_space_only_asks_for_a_full_run(bench: Bench) -> None:
    """A keys file skips a blank line, so a key such as a tab (which ingest archives) is not corrected by it."""
    tabbed = [{**e, "partition_key": "\t", "event_id": e["event_id"] + "-tab"} for e in order_events(9)]
    bench.ingest(ORDERS + tabbed)
    archive_again(bench.wb.lake, [tabbed[3]["event_id"]])
    bench.ingest(LATER)
    bench.rebuild_live("order_summary")
    [step] = bench.wb.dedupe().next_runs
    assert (step.command, step.why) == ("rebuild run order_summary --full",
                                        "a partition key is blank or holds a line break, which a keys file cannot list")


def test_a_copy_under_the_views_stream_of_an_event_archived_under_another_is_a_duplicate_in_its_check(
        bench: Bench) -> None:
    """An id is unique in the lake: a payment archived under `payments` and again under `orders`, which the view
    reads, is a duplicate dedupe removes from `orders` (and from the view, once run). The audit counted per stream,
    so the Workbench's audit and the check's of `orders` (whole, or of the keys a patch corrects) said 0."""
    bench.ingest([e for e in ORDERS if e["event_id"] != COPIED[0]])
    bench.ingest([e for e in ORDERS if e["event_id"] == COPIED[0]], stream="payments")
    archive_again(bench.wb.lake, [COPIED[0]], stream="orders")
    audited = bench.wb.audit().to_dict()
    assert ({s: v["duplicates"] for s, v in audited["streams"].items()}, audited["duplicates"]) == (
        {"orders": 1, "payments": 0}, 1)
    bench.wb.run("order_summary", progress="none")
    checked = bench.wb.check("order_summary", progress="none").to_dict()["audit"]
    assert (checked["duplicates"], list(checked["streams"])) == (1, ["orders"])
    bench.wb.cutover("order_summary", force=True)
    bench.wb.run("order_summary", progress="none", keys=["o-0000002", "o-0000003"])
    keyed = bench.wb.check("order_summary", progress="none").to_dict()["audit"]
    assert (keyed["duplicates"], keyed["keys_audited"]) == (1, 2)
    assert bench.wb.dedupe(dry_run=True).result.removed == 1


def _old_and_clean(make_bench: Callable[[str], Bench]) -> tuple[Bench, Bench]:
    """A lake whose views all applied the copies (live built before and caught up after), and a clean one's views."""
    old, clean = make_bench("old"), make_bench("clean")
    old.ingest(ORDERS)
    for view in VIEWS:
        old.rebuild_live(view)
    archive_again(old.wb.lake, COPIED)
    old.ingest(LATER)
    for view in VIEWS:
        old.rebuild_live(view)
    clean.ingest(ORDERS)
    clean.ingest(LATER)
    for view in VIEWS:
        clean.rebuild_live(view, full=True)
    return old, clean


def _ls(bench: Bench, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, int | None], str]:
    """`rebuild ls`: each view's ``deduped`` (JSON), and what a person reads."""
    args = ["--lake", str(bench.root / "lake"), "--store", f"duckdb://{bench.root}/views.duckdb"]
    assert main([*args, "--json", "ls"]) == 0
    deduped = {v["name"]: v["deduped"] for v in json.loads(capsys.readouterr().out)["views"] if v["name"] in VIEWS}
    assert main([*args, "ls"]) == 0
    return deduped, " ".join(capsys.readouterr().out.split())


def test_after_dedupe_the_next_incremental_run_of_each_view_corrects_it_with_no_command_copied(
        make_bench: Callable[[str], Bench], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The nightly job only runs `rebuild run VIEW --incremental`, checks and cuts over: the lake's record of the
    dedupe makes each view's plan recompute the copies' keys (by_key), their windows (by_window), or all (merge)."""
    old, clean = _old_and_clean(make_bench)
    assert old.wb.plan("order_summary", incremental=True).deduped == ()
    report = old.wb.dedupe()
    console = Console(record=True, width=400, file=io.StringIO())
    report.render(console)
    assert "the next run of each corrects it, a scheduled `rebuild run VIEW --incremental` too" in console.export_text()
    old.wb.close()
    (old.root / "reports" / f"dedupe-{report.result.delta_version}-keys.txt").unlink()  # another machine: no keys file
    old.wb = Workbench.open(None, lake_uri=str(old.root / "lake"), store_uri=f"duckdb://{old.root}/views.duckdb",
                            reports_dir=str(old.root / "elsewhere"))
    monkeypatch.setenv("COLUMNS", "400")
    deduped, said = _ls(old, capsys)
    assert deduped == dict.fromkeys(VIEWS, report.result.delta_version)
    assert f"0 versions, 0 events; deduped at Delta version {report.result.delta_version}" in said
    assert "the next run of each corrects it" in said
    version = report.result.delta_version
    plans = {view: old.wb.plan(view, incremental=True) for view in VIEWS}
    assert {v: (p.method, p.deduped, p.dedupe_keys) for v, p in plans.items()} == {
        "order_summary": ("by_key", (version,), ("o-0000002", "o-0000004")),
        "order_timeline": ("by_key", (version,), ("o-0000002", "o-0000004")),
        "daily_revenue": ("by_window", (version,), ("o-0000002", "o-0000004")),
        "customer_ltv": ("full", (version,), ())}
    assert plans["order_summary"].reason == (
        f"catching up live from lake_version 3 to 3; lake deduped at Delta version {version}, removing copies live "
        "applied: recomputes the 2 partition keys of its copies")
    assert plans["customer_ltv"].reason.startswith(f"lake deduped at Delta version {version}, removing copies live applied: a merge view")
    assert plans["order_summary"].to_dict()["deduped"] == [version]
    assert plans["order_summary"].estimated_events > 0  # the files of the two orders, read to recompute them (said 0)
    for view in VIEWS:
        old.wb.run(view, progress="none", incremental=True)
        found = old.wb.check(view, progress="none").to_dict()
        assert found["changed_rows"] > 0  # what the copies did in live (a merge view's full run fails its threshold)
        assert any(f"removed at Delta version {version} (copies of events live applied)" in n for n in found["notes"])
        old.wb.cutover(view, force=True)
        assert_frame_equal(old.rows(view), clean.rows(view), check_exact=False)
        assert old.wb.plan(view, incremental=True).deduped == ()  # the cutover moved live past the dedupe
    deduped, said = _ls(old, capsys)
    assert deduped == dict.fromkeys(VIEWS) and "deduped" not in said


def test_a_keys_run_cut_over_leaves_the_correction_to_the_next_catch_up(bench: Bench) -> None:
    """A targeted patch corrects its scope only: live keeps its Delta version, so the next catch-up still applies
    the dedupe (recomputing keys a keys-file run corrected already is harmless)."""
    bench.ingest(ORDERS)
    archive_again(bench.wb.lake, COPIED)
    bench.ingest(LATER)
    bench.rebuild_live("order_summary")
    version = bench.wb.dedupe().result.delta_version
    bench.rebuild_live("order_summary", keys=["o-0000001", "o-0000002"])
    plan = bench.wb.plan("order_summary")
    assert (plan.deduped, plan.dedupe_keys) == ((version,), ("o-0000002", "o-0000004"))
    bench.rebuild_live("order_summary")
    assert bench.wb.plan("order_summary").deduped == ()
    bench.wb.run("order_summary", progress="none", full=True)
    assert_frame_equal(bench.rows("order_summary"), bench.rows("order_summary", "shadow"))


def test_live_ahead_after_dedupe_is_rebuilt_in_full_by_an_incremental_run(bench: Bench) -> None:
    """The copies were the newest commit's only events: the lake's lake_version went back below live's, where
    `--incremental` refused ("live is at lake_version 2 already"), so the nightly job failed every night."""
    bench.ingest(ORDERS)
    bench.rebuild_live("order_summary")
    archive_again(bench.wb.lake, COPIED)
    bench.rebuild_live("order_summary")
    bench.wb.dedupe()
    plan = bench.wb.plan("order_summary", incremental=True)
    assert (plan.mode, plan.deduped) == ("full", (3,))
    assert plan.reason.endswith("live is ahead of the lake's lake_version now (a commit held nothing but copies): its next run is full")
    bench.rebuild_live("order_summary", incremental=True)
    assert bench.rows("order_summary").filter(pl.col("order_id") == "o-0000002")["paid"].to_list() == [
        sum(e["payload"]["amount"] for e in ORDERS if e["event_id"] == COPIED[0])]


def test_a_plan_pinned_before_the_dedupe_reads_the_copies_and_the_next_run_corrects_them(bench: Bench) -> None:
    """As a backfill resumed across a dedupe: its snapshot is pinned, copies and all; once cut over, live is at a
    Delta version before the dedupe, so its next run corrects it."""
    bench.ingest(ORDERS)
    archive_again(bench.wb.lake, COPIED)
    pinned = bench.wb.plan("order_summary")
    version = bench.wb.dedupe().result.delta_version
    bench.wb.execute(pinned, progress="none")
    bench.wb.cutover("order_summary", force=True)
    assert bench.wb.plan("order_summary").deduped == (version,)
    bench.rebuild_live("order_summary")
    assert bench.rows("order_summary").filter(pl.col("order_id") == "o-0000002")["paid"].to_list() == [
        sum(e["payload"]["amount"] for e in ORDERS if e["event_id"] == COPIED[0])]


def test_a_dedupe_killed_between_its_record_and_its_commit_leaves_no_correction_and_its_rerun_one(bench: Bench) -> None:
    """The record names the version the commit expected; an ingest that takes that version is not a dedupe."""
    bench.ingest(ORDERS)
    archive_again(bench.wb.lake, COPIED)
    bench.rebuild_live("order_summary")
    code = f"import lake, lake.dedupe; lake.dedupe.dedupe(lake.Lake({bench.wb.lake.uri!r}))"
    env = {**os.environ, "REBUILD_FAULT_POINT": "dedupe.after_record"}
    assert subprocess.run([sys.executable, "-c", code], env=env, check=False).returncode == -signal.SIGKILL
    stale = bench.root / "lake" / "_dedupe" / "3.parquet"
    assert stale.exists() and bench.wb.audit().to_dict()["duplicates"] == 2
    bench.ingest(LATER)  # takes Delta version 3, which the record named
    assert bench.wb.plan("order_summary").deduped == ()
    assert bench.wb.dedupe().result.delta_version == 4
    plan = bench.wb.plan("order_summary")  # the record of the commit that never happened was deleted
    assert (plan.deduped, plan.dedupe_keys) == ((4,), ("o-0000002", "o-0000004"))


def test_a_dedupe_whose_record_was_deleted_makes_the_views_built_before_it_run_in_full(bench: Bench) -> None:
    """What it removed is not known then: a catch-up of the keys it would have named is not possible."""
    bench.ingest(ORDERS)
    archive_again(bench.wb.lake, COPIED)
    bench.ingest(LATER)
    bench.rebuild_live("order_summary")
    report = bench.wb.dedupe()
    Path(report.result.record or "").unlink()
    plan = bench.wb.plan("order_summary", incremental=True)
    assert (plan.mode, plan.deduped) == ("full", (4,))
    assert plan.reason.endswith("_dedupe/4.parquet, is missing: a full run")


def test_a_first_key_beginning_with_a_byte_order_mark_is_corrected_by_the_keys_run(bench: Bench) -> None:
    """U+FEFF is a key's character: the keys file begins with a byte order mark of its own, which --keys-file
    drops, so the key's first character is read as written (it was dropped, and the run corrected no key)."""
    marked = [{**e, "partition_key": "\ufeffo-9", "event_id": e["event_id"] + "-bom"} for e in order_events(9)]
    bench.ingest(ORDERS + marked)
    bench.rebuild_live("order_summary")
    archive_again(bench.wb.lake, [marked[3]["event_id"]])
    bench.ingest(LATER)
    bench.rebuild_live("order_summary")
    paid = bench.rows("order_summary").filter(pl.col("order_id") == "\ufeffo-9")["paid"]
    assert paid.to_list() == [2 * Decimal(str(marked[3]["payload"]["amount"]))]  # the copy applied twice
    report = bench.wb.dedupe()
    assert report.result.keys == ("\ufeffo-9",)
    [step] = report.next_runs
    bench.wb.run("order_summary", progress="none", keys_file=shlex.split(step.command)[4])
    assert bench.wb.check("order_summary", progress="none").to_dict()["changed_rows"] == 1
    bench.wb.cutover("order_summary", force=True)
    paid = bench.rows("order_summary").filter(pl.col("order_id") == "\ufeffo-9")["paid"]
    assert paid.to_list() == [Decimal(str(marked[3]["payload"]["amount"]))]


def test_on_every_store_a_catch_up_after_dedupe_corrects_live_and_its_cutover_ends_the_correction(
        tmp_path: Path, store_uri: str) -> None:
    """Live's checkpoint keeps the Delta version its run read in each store (DuckDB, PostgreSQL, Parquet)."""
    bench = Bench(tmp_path)
    bench.wb.close()
    bench.wb = Workbench.open(None, lake_uri=str(tmp_path / "lake"), store_uri=store_uri,
                              reports_dir=str(tmp_path / "reports"))
    try:
        bench.ingest(ORDERS)
        archive_again(bench.wb.lake, COPIED)
        bench.ingest(LATER)
        bench.rebuild_live("order_summary")
        version = bench.wb.dedupe().result.delta_version
        assert bench.wb.plan("order_summary").deduped == (version,)
        bench.rebuild_live("order_summary", incremental=True)
        assert bench.wb.plan("order_summary").deduped == ()
        bench.wb.run("order_summary", progress="none", full=True)
        assert_frame_equal(bench.rows("order_summary"), bench.rows("order_summary", "shadow"))
    finally:
        bench.wb.close()


def test_an_incremental_run_as_of_before_the_dedupe_corrects_live_up_to_that_lake_version(bench: Bench) -> None:
    """`--as-of` reads the current (deduped) files up to that lake_version: the copies' keys as they should have been."""
    bench.ingest(ORDERS)
    archive_again(bench.wb.lake, COPIED)
    bench.ingest(LATER[:2])  # lake_version 3, which live read
    bench.rebuild_live("order_summary")
    bench.ingest(LATER[2:])
    version = bench.wb.dedupe().result.delta_version
    plan = bench.wb.plan("order_summary", incremental=True, as_of="3")
    assert (plan.mode, plan.lake_version, plan.deduped) == ("incremental", 3, (version,))
    bench.rebuild_live("order_summary", incremental=True, as_of="3")
    bench.wb.run("order_summary", progress="none", full=True, as_of="3")
    assert_frame_equal(bench.rows("order_summary"), bench.rows("order_summary", "shadow"))
