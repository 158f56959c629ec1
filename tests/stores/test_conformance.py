"""One conformance suite, run against every store (DuckDB file, PostgreSQL, Parquet directory).

Shadow, previous, run records, checkpoints, partial-run patches, appended patches, staged
(bucketed) runs, cutover, rollback and locks must behave the same everywhere.
"""

from __future__ import annotations

from dataclasses import replace
import hashlib
import os
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from decimal import Decimal
from typing import Any

import polars as pl
import pyarrow as pa
import pytest

from lake import Lake
from rebuild import ConfigError, CutoverRefused, StoreError, ViewLocked, Workbench
from rebuild.store import LIVE, PREVIOUS, SHADOW, open_store
from rebuild.projection import Registry
from rebuild.store.base import Mark, view_tables
from rebuild.store.parquet_store import ParquetStore
from tests.orders import order_events
from tests.stores.conftest import orders_lake_events

VIEW = "order_summary"


def rows(wb: Workbench, view: str = VIEW, role: str = LIVE) -> pl.DataFrame:
    key = wb.projection(view).key
    return wb.view(view, role).sort(list(key))


def add_orders(lake: Lake, tmp_path, orders: list[dict[str, object]], name: str) -> None:
    import lake as lake_pkg
    from tests.conftest import write_ndjson

    lake_pkg.ingest(lake, [write_ndjson(tmp_path / f"{name}.ndjson", orders)], stream="orders")


def test_full_run_writes_shadow_record_and_checkpoint(bench: Workbench) -> None:
    result = bench.run(VIEW)
    store = bench.store
    assert store.exists(f"{VIEW}__shadow") and not store.exists(VIEW)
    assert store.count(f"{VIEW}__shadow") == 40 == result.record.rows_written
    cp = store.checkpoint(VIEW, SHADOW)
    assert cp is not None and cp.run_id == result.run_id and cp.kind == "full" and cp.rows == 40
    record = store.run(result.run_id)
    assert record is not None and record.status == "shadow" and record.started_at.tzinfo is not None
    assert [r.run_id for r in store.runs(VIEW)] == [result.run_id]


def test_cutover_and_rollback_swap_live_and_previous(bench: Workbench) -> None:
    first = bench.run(VIEW)
    with pytest.raises(CutoverRefused):
        bench.cutover(VIEW)
    bench.cutover(VIEW, force=True)
    live = rows(bench)
    assert bench.store.checkpoint(VIEW, LIVE).run_id == first.run_id  # type: ignore[union-attr]
    second = bench.run(VIEW, full=True)
    bench.store.set_verdict(second.run_id, "pass", "report.html")
    bench.cutover(VIEW)
    assert bench.store.checkpoint(VIEW, PREVIOUS).run_id == first.run_id  # type: ignore[union-attr]
    assert bench.store.run(first.run_id).status == "previous"  # type: ignore[union-attr]
    cp = bench.rollback(VIEW)
    assert cp.run_id == first.run_id and rows(bench).equals(live)
    assert bench.store.run(second.run_id).status == "rolled_back"  # type: ignore[union-attr]
    assert bench.rollback(VIEW).run_id == second.run_id
    assert bench.store.views() == [VIEW]  # `rebuild ls` finds views whose projection is gone by these


def test_one_run_of_a_view_is_previous_after_many_cutovers(bench: Workbench) -> None:
    """Each cutover left the run that was previous so: after a year of nightly cutovers `rebuild runs` showed
    365 previous runs, of which one is the rollback point."""
    ids = []
    for _ in range(4):
        ids.append(bench.run(VIEW, full=True).run_id)
        bench.cutover(VIEW, force=True)
    assert [bench.store.run(i).status for i in ids] == ["superseded", "superseded", "previous", "live"]  # type: ignore[union-attr]
    assert bench.store.checkpoint(VIEW, PREVIOUS).run_id == ids[2]  # type: ignore[union-attr]
    bench.rollback(VIEW)
    assert [bench.store.run(i).status for i in ids[2:]] == ["live", "rolled_back"]  # type: ignore[union-attr]


def test_incremental_patch_cutover_and_rollback(bench: Workbench, orders_lake: Lake, tmp_path) -> None:
    bench.run(VIEW)
    bench.cutover(VIEW, force=True)
    before = rows(bench)
    late = [e for e in order_events(3, customer=3, first_seq=9, items=1, ship=False)]  # more events for o-3
    add_orders(orders_lake, tmp_path, late + orders_lake_events(2, first=100), "more")
    result = bench.run(VIEW)
    assert result.record.kind == "patch" and result.record.scope_rows == 3
    assert bench.store.exists(f"{VIEW}__shadow_scope")
    bench.cutover(VIEW, force=True)
    after = rows(bench)
    assert after.height == 42
    assert after.filter(pl.col("order_id") == "o-0000003")["version"][0] == 11
    assert bench.store.exists(f"{VIEW}__previous_scope")
    bench.rollback(VIEW)
    assert rows(bench).equals(before)
    bench.rollback(VIEW)
    assert rows(bench).equals(after)


def test_a_patch_is_checked_against_lives_rows_of_its_keys_only(bench: Workbench, orders_lake: Lake, tmp_path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The check of a patch reads live's rows in the patch's scope, not a copy of every row of live
    (on PostgreSQL it copied the whole live view into memory: 1M rows for a 1,000-key patch)."""
    bench.run(VIEW)
    bench.cutover(VIEW, force=True)
    add_orders(orders_lake, tmp_path, [*order_events(3, customer=3, first_seq=9, items=1, ship=False),
                                       *order_events(7, customer=3, first_seq=9, items=2, ship=False)], "more")
    assert bench.run(VIEW).record.kind == "patch"
    store, read = bench.store, type(bench.store).relation
    in_scope = store.relation(store.compute(), VIEW, f"{VIEW}__shadow_scope")
    assert sorted(r[0] for r in in_scope.select("order_id").fetchall()) == ["o-0000003", "o-0000007"]
    seen: dict[str, int] = {}

    def counted(self: Any, con: Any, table: str, scope: str | None = None) -> Any:
        relation = read(self, con, table, scope)
        seen[table] = len(relation.fetchall())
        return relation

    monkeypatch.setattr(type(store), "relation", counted)
    report = bench.check(VIEW)
    assert report.diff is not None and report.diff.rows_live == 2 and report.diff.rows_rebuilt == 2
    # and the lake audit in the report is of those two orders' events, not of the whole lake's
    events = bench.events(partition_keys=["o-0000003", "o-0000007"]).aggregate("count(*)").fetchall()[0][0]
    everything = bench.events().aggregate("count(*)").fetchall()[0][0]
    assert (report.audit["keys_audited"], report.audit["events"]) == (2, events) and events < everything
    if getattr(store, "con", None) is not store.compute():  # a store the check reads through relation()
        assert seen[VIEW] == 2, seen


def test_an_empty_patch_keeps_the_last_cutovers_rollback_point(bench: Workbench, orders_lake: Lake, tmp_path) -> None:
    """A second catch-up the same night finds nothing for the view, a keys run names a key
    without rows: their cutover moves live's lake position and nothing else, so a rollback still
    undoes the night's real cutover."""
    first = bench.run(VIEW)
    bench.cutover(VIEW, force=True)
    before = rows(bench)
    add_orders(orders_lake, tmp_path, order_events(3, customer=3, first_seq=9, items=1, ship=False), "late")
    caught_up = bench.run(VIEW)
    bench.cutover(VIEW, force=True)
    after = rows(bench)
    import lake as lake_pkg
    from tests.conftest import write_ndjson

    other = write_ndjson(tmp_path / "other.ndjson", orders_lake_events(1, first=500))  # a stream VIEW does not read
    lake_pkg.ingest(orders_lake, [other], stream="payments")
    empty = bench.run(VIEW)
    assert empty.record.kind == "patch" and empty.record.scope_rows == 0 and empty.record.lake_version > caught_up.record.lake_version
    cp = bench.cutover(VIEW, force=True)
    assert (cp.run_id, cp.lake_version) == (caught_up.run_id, empty.record.lake_version)
    assert rows(bench).equals(after) and not bench.store.exists(f"{VIEW}__shadow")
    assert bench.store.run(empty.run_id).status == "empty"  # type: ignore[union-attr]
    assert bench.store.run(caught_up.run_id).status == "live"  # type: ignore[union-attr]
    assert bench.run(VIEW).record.scope_rows == 0  # live's position moved: nothing new again
    nobody = bench.run(VIEW, keys=["o-9999999"])  # a scope, but no row on either side
    assert nobody.record.scope_rows == 1 and bench.cutover(VIEW, force=True).run_id == caught_up.run_id
    assert bench.store.run(nobody.run_id).status == "empty"  # type: ignore[union-attr]
    assert bench.rollback(VIEW).run_id == first.run_id  # type: ignore[union-attr]
    assert rows(bench).equals(before)
    assert bench.rollback(VIEW).run_id == caught_up.run_id  # type: ignore[union-attr]
    assert rows(bench).equals(after)


def test_a_patch_of_newer_code_leaves_live_marked_with_its_old_code(bench: Workbench,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A version bumped, then a targeted run of a few keys cut over: the other rows are still the
    old code's. Live's checkpoint took the patch's version, so `ls` said the code was current and
    every later run was incremental: the version bump's full rebuild never came."""
    bench.run(VIEW)
    bench.cutover(VIEW, force=True)
    old = bench.projection(VIEW)
    monkeypatch.setattr(bench, "projection", lambda name: replace(old, version=old.version + 1))
    bench.run(VIEW, keys=["o-0000001"])
    live = bench.cutover(VIEW, force=True)
    assert (live.projection_version, live.fingerprint) == (old.version, old.fingerprint)
    assert bench.plan(VIEW).mode == "full"
    assert bench.rollback(VIEW).projection_version == old.version


def test_prune_forgets_old_runs_and_their_reports_but_not_live_previous_or_shadow(bench: Workbench) -> None:
    first = bench.run(VIEW)
    bench.cutover(VIEW, force=True)
    second = bench.run(VIEW, full=True)
    bench.cutover(VIEW, force=True)  # first is previous now
    dropped = bench.run(VIEW, full=True)
    reports = bench.check(VIEW).paths
    shadow = bench.run(VIEW, full=True)  # dropped is superseded
    assert bench.prune(1).runs == ()  # finished minutes ago
    assert [r.run_id for r in bench.prune(0, VIEW, dry_run=True)] == [dropped.run_id]
    assert all(os.path.exists(p) for p in reports.values())
    pruned = bench.prune(0)
    assert [r.run_id for r in pruned.runs] == [dropped.run_id] and len(pruned) == 1 and pruned.jobs == ()
    assert dropped.run_id in pruned._repr_html_()
    assert not any(os.path.exists(p) for p in reports.values())
    assert bench.store.run(dropped.run_id) is None
    assert {r.run_id for r in bench.runs(VIEW)} == {first.run_id, second.run_id, shadow.run_id}
    with pytest.raises(ConfigError, match="older_than_days must be a number of days"):
        bench.prune(-1)


def test_prune_killed_between_reports_and_records_leaves_no_report_behind(bench: Workbench, monkeypatch) -> None:
    # prune forgot the records first and deleted the reports after: killed in between, the reports
    # were named by no record and never pruned again
    bench.run(VIEW)
    bench.cutover(VIEW, force=True)
    dropped = bench.run(VIEW, full=True)
    reports = bench.check(VIEW).paths
    bench.run(VIEW, full=True)  # dropped is superseded
    unlink = Path.unlink

    def killed(self: Path, missing_ok: bool = False) -> None:
        monkeypatch.setattr(Path, "unlink", unlink)
        unlink(self, missing_ok=missing_ok)
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "unlink", killed)
    with pytest.raises(KeyboardInterrupt):
        bench.prune(0)
    assert [r.run_id for r in bench.prune(0)] == [dropped.run_id]
    assert not any(os.path.exists(p) for p in reports.values())


def test_prune_forgets_old_marks_of_jobs_no_run_record_names(bench: Workbench) -> None:
    # a bucketed run's marks carry its job id, not its run's id, and a job killed before it published
    # anything has no run record: neither was ever pruned
    bucketed = bench.run(VIEW, full=True, buckets=True)
    snapshot = bench.lake.snapshot()
    killed = Mark(job_id="j-killed", view=VIEW, kind="backfill", item=-1, label="killed before its first chunk",
                  status="started", delta_version=snapshot.delta_version, lake_version=snapshot.lake_version,
                  run_id="j-killed", rows=0, params="{}", updated_at=datetime.now(UTC))
    bench.store.put_mark(killed)
    jobs = {m.job_id for m in bench.store.marks(VIEW)}
    assert len(jobs) == 2 and "j-killed" in jobs
    assert bench.prune(1).jobs == () and {m.job_id for m in bench.store.marks(VIEW)} == jobs  # moved minutes ago
    with bench.store.lock(VIEW, "backfill"):  # a job holds the view: its marks may be moving
        assert bench.prune(0).jobs == ()
    assert {m.job_id for m in bench.store.marks(VIEW)} == jobs
    # the notebook saw only the run records: which jobs' marks went was the CLI's alone (a private call)
    pruned = bench.prune(0, dry_run=True)
    assert pruned.runs == () and set(pruned.jobs) == jobs and {m.job_id for m in bench.store.marks(VIEW)} == jobs
    assert set(bench.prune(0).jobs) == jobs
    assert bench.store.marks(VIEW) == [] and bench.store.run(bucketed.run_id) is not None  # the shadow's run stays


def _statuses_as_drop_left_them(store: Any, statuses: dict[str, str]) -> None:
    """The run records of a store a workbench before 2026-11-25 dropped a view in: their status unchanged."""
    if isinstance(store, ParquetStore):
        with store._transaction() as m:
            for r in m["runs"]:
                r["status"] = statuses.get(r["run_id"], r["status"])
    else:
        for run_id, status in statuses.items():
            store._set_status(run_id, status)


def test_a_view_dropped_before_the_upgrade_lists_its_runs_as_dropped_and_prune_forgets_them(bench: Workbench) -> None:
    """Its runs kept the status they had: `rebuild runs` listed a run live of a table dropped, and prune kept
    an unfinished backfill's run for good (prune keeps those), of a view with no table left."""
    live = bench.run(VIEW)
    bench.cutover(VIEW, force=True)
    shadow = bench.run(VIEW, full=True)
    bench.close()
    with Workbench(bench.config, registry=Registry()) as retired:
        retired.drop(VIEW)
        _statuses_as_drop_left_them(retired.store, {live.run_id: "live", shadow.run_id: "backfill"})
        assert {r.run_id: r.status for r in retired.runs(VIEW)} == {live.run_id: "dropped", shadow.run_id: "dropped"}
        assert {r.run_id for r in retired.prune(0, VIEW).runs} == {live.run_id, shadow.run_id}
        assert retired.store.runs(VIEW) == []


def test_drop_retires_a_view_no_projection_builds_and_keeps_its_history(bench: Workbench) -> None:
    """A projection retired (its module left out of the config) left live, shadow and previous in the
    store for good: `ls` listed them as updated by nothing, and no command removed them."""
    first = bench.run(VIEW)
    bench.cutover(VIEW, force=True)
    bench.run(VIEW, full=True)
    bench.cutover(VIEW, force=True)  # live and previous
    shadow = bench.run(VIEW, full=True)
    bench.run("customer_ltv")
    bench.cutover("customer_ltv", force=True)
    with pytest.raises(ConfigError, match="built by a configured projection, whose next run would build it again"):
        bench.drop(VIEW)
    bench.close()
    with Workbench(bench.config, registry=Registry()) as retired:  # no projection configured any more
        with pytest.raises(ConfigError, match=r"no view 'order_sumary' in .* \(its views: customer_ltv, order_summary\)"):
            retired.drop("order_sumary")
        planned = retired.drop(VIEW, dry_run=True)
        assert planned["tables"] == {VIEW: 40, f"{VIEW}__shadow": 40, f"{VIEW}__previous": 40}
        assert retired.store.exists(VIEW) and retired.store.views() == ["customer_ltv", VIEW]
        assert retired.drop(VIEW) == {**planned, "dry_run": False}
        store = retired.store
        assert not any(store.exists(t) for t in view_tables(VIEW)) and store.views() == ["customer_ltv"]
        assert all(store.checkpoint(VIEW, role) is None for role in (LIVE, SHADOW, PREVIOUS))
        assert {first.run_id, shadow.run_id} <= {r.run_id for r in store.runs(VIEW)}  # history, until prune
        # no run of the view says live, previous or shadow of a table dropped (`rebuild runs` said live)
        assert {r.status for r in store.runs(VIEW)} == {"dropped"}  # live, previous and shadow were there
        assert store.run(shadow.run_id).status == "dropped"  # type: ignore[union-attr]
        assert {r.status for r in store.runs("customer_ltv")} == {"live"}
        # that prune of the view's own history: `prune VIEW` refused the name, no view's nor projection's any more
        assert {first.run_id, shadow.run_id} <= {r.run_id for r in retired.prune(0, VIEW).runs}
        assert store.runs(VIEW) == [] and store.runs("customer_ltv") != []
        assert store.count("customer_ltv") == 4 and store.checkpoint("customer_ltv", LIVE) is not None
    with Workbench(bench.config) as again:  # configured again: built from scratch
        assert again.plan(VIEW).mode == "full"


def test_patch_equals_full_rebuild(bench: Workbench) -> None:
    bench.run(VIEW)
    bench.cutover(VIEW, force=True)
    bench.run(VIEW, keys=["o-0000001", "o-0000007"])
    bench.cutover(VIEW, force=True)
    patched = rows(bench)
    bench.run(VIEW, full=True)
    assert rows(bench, role=SHADOW).equals(patched)


def test_backfill_equals_one_targeted_run(bench: Workbench) -> None:
    bench.run(VIEW)
    bench.cutover(VIEW, force=True)
    one = bench.run(VIEW, since="2026-09-02", until="2026-09-07")
    expected = rows(bench, role=SHADOW)
    result = bench.backfill(VIEW, since="2026-09-02", until="2026-09-07", chunk="1d")
    assert result.chunks == 5 and result.skipped == 0
    assert rows(bench, role=SHADOW).equals(expected)
    assert bench.store.count(f"{VIEW}__shadow_scope") == one.record.scope_rows
    record = bench.store.run(result.run_id)
    assert record is not None and record.status == "shadow" and record.kind == "patch"
    assert bench.store.run(one.run_id).status == "superseded"  # type: ignore[union-attr]
    marks = bench.store.marks(VIEW, result.job_id)
    assert [m.item for m in marks] == [-1, 0, 1, 2, 3, 4] and marks[0].status == "finished"
    bench.cutover(VIEW, force=True)


@pytest.mark.parametrize("view", ["daily_revenue", "customer_ltv"])
def test_backfill_of_window_and_merge_views(bench: Workbench, view: str) -> None:
    bench.run(view)
    bench.cutover(view, force=True)
    bench.run(view, since="2026-09-03", until="2026-09-06")
    expected = rows(bench, view, SHADOW)
    bench.backfill(view, since="2026-09-03", until="2026-09-06", chunk="1d")
    assert rows(bench, view, SHADOW).equals(expected)


def test_a_patch_is_refused_onto_a_live_view_of_other_columns(bench: Workbench) -> None:
    # a live view made outside the workbench with other columns: the patch's cutover (even forced)
    # dropped the shadow's other columns and cast the amounts into live's types
    foreign = pa.table({"order_id": ["o-0000001", "o-0000099"], "total": [5, 7]})
    bench.store.write_table(VIEW, foreign)
    bench.backfill(VIEW, since="2026-09-02", until="2026-09-04", chunk="1d")
    with pytest.raises(StoreError, match="columns") as refused:
        bench.cutover(VIEW, force=True)
    assert "--full" in str(refused.value) and "customer_id" in str(refused.value)
    assert bench.store.read(VIEW).sort_by("order_id").equals(foreign)
    assert bench.store.checkpoint(VIEW, SHADOW) is not None and bench.store.exists(f"{VIEW}__shadow")


def _total(table: pa.Table, order: str) -> float:
    (row,) = [r for r in table.to_pylist() if r["order_id"] == order]
    return float(row["total"])


def test_a_patch_whose_values_live_cannot_hold_is_refused_whole(bench: Workbench, orders_lake: Lake, tmp_path) -> None:
    # live keeps totals as DECIMAL(5,2) (made elsewhere, or typed by a fold's values); a patch with a
    # larger total ended in the driver's cast error (a traceback, exit 1) instead of a StoreError
    bench.run(VIEW)
    narrow = bench.store.read(f"{VIEW}__shadow")
    narrow = narrow.set_column(narrow.schema.get_field_index("total"), "total", narrow["total"].cast(pa.decimal128(5, 2)))
    bench.store.write_table(VIEW, narrow)
    big = order_events(90, items=1)
    big[1]["payload"]["unit_price"] = 123456.5
    add_orders(orders_lake, tmp_path, big, "big")
    bench.run(VIEW, keys=["o-0000090"])
    if bench.config.store_uri.startswith("parquet"):  # its files each keep their type: live reads the wider one
        patched = _total(bench.store.read(f"{VIEW}__shadow"), "o-0000090")
        bench.cutover(VIEW, force=True)
        assert _total(bench.store.read(VIEW), "o-0000090") == patched > 100_000
        return
    with pytest.raises(StoreError, match=r"does not fit live order_summary's column types .*; nothing was changed"):
        bench.cutover(VIEW, force=True)
    assert bench.store.read(VIEW).sort_by("order_id").equals(narrow.sort_by("order_id"))
    assert bench.store.exists(f"{VIEW}__shadow")


def test_a_patch_of_a_retyped_column_is_refused_when_lives_type_would_change_its_values(
        bench: Workbench, monkeypatch: pytest.MonkeyPatch) -> None:
    """Live built when the projection kept refunds as BIGINT, a --keys run by the code that made them
    DECIMAL: the forced cutover said the patch was applied, and live kept 14 where the patch (and its
    check) said 13.50. A value the cast keeps, as 0 is, still goes in."""
    new = bench.projection(VIEW)
    old = replace(new, func=lambda: f"SELECT * REPLACE (CAST(refunded AS BIGINT) AS refunded) FROM ({new.func()})")
    monkeypatch.setattr(bench, "projection", lambda name: old)
    bench.run(VIEW)
    bench.cutover(VIEW, force=True)
    before = rows(bench)
    monkeypatch.setattr(bench, "projection", lambda name: new)
    bench.run(VIEW, keys=["o-0000001"])
    bench.cutover(VIEW, force=True)
    assert rows(bench).equals(before)
    bench.run(VIEW, keys=["o-0000005"])
    refund = float(rows(bench, role=SHADOW)["refunded"][0])
    assert refund == 13.5 and before.filter(pl.col("order_id") == "o-0000005")["refunded"][0] == 14
    if bench.config.store_uri.startswith("parquet"):  # its files each keep their type: live reads the wider one
        bench.cutover(VIEW, force=True)
        assert float(rows(bench).filter(pl.col("order_id") == "o-0000005")["refunded"][0]) == refund
        return
    with pytest.raises(StoreError, match=r"does not fit live order_summary's column types \(refunded is "
                                         r"(DECIMAL\(18,2\)|numeric\(18,2\)) in the shadow and (BIGINT|bigint) in live, "
                                         r"into which Decimal\('13.50'\) becomes 14\); nothing was changed"):
        bench.cutover(VIEW, force=True)
    assert rows(bench).equals(before) and bench.store.exists(f"{VIEW}__shadow")


def test_unfinished_backfill_cannot_be_cut_over(bench: Workbench, monkeypatch: pytest.MonkeyPatch) -> None:
    bench.run(VIEW)
    bench.cutover(VIEW, force=True)
    import rebuild.backfill as bf

    calls = {"n": 0}
    real = bf.execute

    def crash_after_two(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(bf, "execute", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        bench.backfill(VIEW, since="2026-09-02", until="2026-09-07")
    with pytest.raises(CutoverRefused, match="unfinished backfill"):
        bench.cutover(VIEW, force=True)
    with pytest.raises(StoreError, match="unfinished backfill .* finish it, then check it"):
        bench.check(VIEW)  # its report would have passed a part of the correction for the whole
    monkeypatch.setattr(bf, "execute", real)
    result = bench.backfill(VIEW, since="2026-09-02", until="2026-09-07")
    assert result.skipped == 2
    bench.run(VIEW, since="2026-09-02", until="2026-09-07")
    expected = rows(bench, role=SHADOW)
    bench.backfill(VIEW, since="2026-09-02", until="2026-09-07")
    assert rows(bench, role=SHADOW).equals(expected)


def test_bucketed_full_run_equals_single_query(bench: Workbench) -> None:
    single = bench.run(VIEW)
    expected = rows(bench, role=SHADOW)
    bucketed = bench.run(VIEW, full=True, buckets=True)
    assert bucketed.record.kind == "full" and bucketed.record.rows_written == single.record.rows_written
    assert rows(bench, role=SHADOW).equals(expected)
    assert not bench.store.exists(f"{VIEW}__building")
    with pytest.raises(Exception, match="by_key"):
        bench.run("daily_revenue", buckets=True)


def kill_bucketed_run_after_four_buckets(bench: Workbench, monkeypatch: pytest.MonkeyPatch) -> tuple[type, Any]:
    """A full bucketed run of VIEW that dies while staging its fifth bucket; the store's staging is
    real again afterwards. Returns the store class and its real ``stage``."""
    store = type(bench.store)
    real, calls = store.stage, {"n": 0}

    def crash_on_fifth(self: object, *args: object, **kwargs: object) -> None:
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("killed")
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "stage", crash_on_fifth)
    with pytest.raises(RuntimeError):
        bench.run(VIEW, full=True, buckets=True)
    monkeypatch.setattr(store, "stage", real)
    return store, real


def test_crashed_bucketed_run_keeps_live_and_shadow_and_resumes(bench: Workbench, monkeypatch: pytest.MonkeyPatch) -> None:
    bench.run(VIEW)
    bench.cutover(VIEW, force=True)
    good = bench.run(VIEW, full=True)
    live, shadow = rows(bench), rows(bench, role=SHADOW)
    store, real = kill_bucketed_run_after_four_buckets(bench, monkeypatch)
    assert rows(bench).equals(live) and rows(bench, role=SHADOW).equals(shadow)
    assert bench.store.checkpoint(VIEW, SHADOW).run_id == good.run_id  # type: ignore[union-attr]
    counting = {"n": 0}

    def count(self: object, *args: object, **kwargs: object) -> None:
        counting["n"] += 1
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "stage", count)
    bench.run(VIEW, full=True, buckets=True)
    assert counting["n"] == 16 - 4
    assert rows(bench, role=SHADOW).equals(shadow)


def test_a_bucketed_run_whose_building_table_another_job_replaced_starts_over(bench: Workbench,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # job A (killed after 4 buckets) resumed on top of job B's building table (other arguments,
    # finished meanwhile) and published a shadow that lacked A's first 4 buckets
    expected = (bench.run(VIEW), rows(bench, role=SHADOW))[1]
    kill_bucketed_run_after_four_buckets(bench, monkeypatch)  # job A
    bench.run(VIEW, full=True, buckets=True, exclude_quarantined=True)  # job B, other arguments
    bench.run(VIEW, full=True, buckets=True)  # A's arguments again
    assert rows(bench, role=SHADOW).equals(expected)


def test_tables_round_trip_with_types(store_uri: str) -> None:
    data = pa.table({
        "k": pa.array(["a", "b"]), "n": pa.array([1, 2], pa.int64()), "i": pa.array([1, None], pa.int32()),
        "d": pa.array([Decimal("1.25"), Decimal("-3.10")], pa.decimal128(18, 2)),
        "t": pa.array([datetime(2026, 9, 1, tzinfo=UTC)] * 2, pa.timestamp("us", tz="UTC")),
        "day": pa.array([date(2026, 9, 1)] * 2), "x": pa.array([0.5, 1.5]), "ok": pa.array([True, False]),
    })  # fmt: skip
    store = open_store(store_uri)
    try:
        store.write_table("t1", data)
        assert store.exists("t1") and store.count("t1") == 2
        back = store.read("t1").sort_by("k")
        assert back.schema.types == data.schema.types
        assert back.equals(data)
        store.write_table("t1", data.slice(0, 1))
        assert store.count("t1") == 1
        con = store.compute()
        assert store.relation(con, "t1").aggregate("sum(d)").fetchall() == [(Decimal("1.25"),)]
    finally:
        store.close()


def test_marks_are_kept_and_replaced(store_uri: str) -> None:
    store = open_store(store_uri)
    try:
        now = datetime.now(UTC)
        mark = Mark("j1", "v", "backfill", -1, "x", "started", 3, 7, "j1", 0, "{}", now)
        store.put_mark(mark)
        store.put_mark(Mark("j1", "v", "backfill", 0, "c0", "done", 3, 7, "j1", 5, "{}", now))
        store.put_mark(Mark("j1", "v", "backfill", -1, "x", "finished", 3, 7, "j1", 5, "{}", now))
        marks = store.marks("v")
        assert [(m.item, m.status) for m in marks] == [(-1, "finished"), (0, "done")]
        assert store.marks("other") == [] and marks[1].rows == 5
    finally:
        store.close()


def test_cutover_without_shadow_is_an_error(store_uri: str) -> None:
    store = open_store(store_uri)
    try:
        with pytest.raises(StoreError):
            store.cutover(VIEW, "nope", False)
        with pytest.raises(StoreError):
            store.rollback(VIEW)
    finally:
        store.close()


def test_lock_refuses_a_second_holder_and_names_it(store_uri: str) -> None:
    store = open_store(store_uri)
    try:
        with store.lock(VIEW, "backfill"):
            other = open_store(store_uri) if not store_uri.startswith("duckdb") else store
            try:
                with pytest.raises(ViewLocked, match=r"backfill by pid \d+ on .* since"):
                    with other.lock(VIEW, "run"):
                        pass
                with other.lock("daily_revenue", "run"):  # other views are free
                    pass
            finally:
                if other is not store:
                    other.close()
        with store.lock(VIEW, "cutover"):  # released
            pass
    finally:
        store.close()


def test_a_view_of_many_types_reads_back_into_polars_alike_from_every_store(store_uri: str, orders_lake: Lake,
                                                                            tmp_path: Path) -> None:
    """``wb.view`` of a view with an INTERVAL (a Polars Duration) failed with Polars' ComputeError (it
    cannot read Arrow's month_day_nano_interval), and from the Parquet store a UUID or INTERVAL came as
    raw bytes (pyarrow read the files). Every store now gives the values the projection made."""
    from rebuild import Config, projection
    from rebuild.projection import Registry

    registry = Registry()
    projection(name="typed", key="order_id", registry=registry)(lambda: (
        "SELECT partition_key AS order_id, md5(partition_key)::UUID AS uid, max(event_time) - min(event_time) AS span, "
        "INTERVAL '1 month 2 days' AS term, min(event_time)::DATE AS day, count(*) AS n FROM events GROUP BY ALL"))
    config = Config(lake_uri=orders_lake.uri, store_uri=store_uri, projection_modules=(),
                    reports_dir=str(tmp_path / "reports"))
    with Workbench(config, registry=registry) as wb:
        wb.run("typed", full=True, progress="none")
        wb.cutover("typed", force=True)
        first = wb.view("typed").sort("order_id").row(0, named=True)
        schema = wb.view("typed").schema
    assert first == {"order_id": "o-0000000", "uid": str(uuid.UUID(hashlib.md5(b"o-0000000").hexdigest())),
                     "span": timedelta(hours=15), "term": "1 month 2 days", "day": date(2026, 9, 1), "n": 6}
    assert schema["span"] == pl.Duration("us")
