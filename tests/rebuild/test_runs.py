"""Runs: full, incremental, keys, ranges, as-of; each lands in the shadow with its run record."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

import lake
import lake.compact
from rebuild import ConfigError, ProjectionError, RunOptions, Workbench
from rebuild.replay import quarantined_keys
from tests.orders import T0, order_events
from tests.rebuild.conftest import VIEWS, Bench


def first_lake(bench: Bench, orders: range = range(1, 30)) -> int:
    return bench.ingest(e for o in orders for e in order_events(o, customer=o % 5, refund=o % 4 == 0,
                                                         start=T0 + timedelta(hours=5 * o))).archived


def test_a_full_run_writes_only_the_shadow_and_its_run_record(bench: Bench) -> None:
    first_lake(bench)
    result = bench.wb.run("order_summary", progress="none")
    store = bench.wb.store
    assert not store.exists("order_summary")
    assert store.count("order_summary__shadow") == 29
    assert store.landing("order_summary") is not None  # the rows landed in the file, then were renamed
    assert not store.exists(store.landing("order_summary"))  # type: ignore[arg-type]
    record = store.run(result.run_id)
    assert record is not None and record.status == "shadow" and record.kind == "full"
    assert record.lake_version == bench.wb.lake.snapshot().lake_version
    assert record.fingerprint == bench.wb.projection("order_summary").fingerprint
    assert store.checkpoint("order_summary", "shadow").run_id == result.run_id  # type: ignore[union-attr]


def test_order_summary_values(bench: Bench) -> None:
    bench.ingest(order_events(7, items=2, refund=True))
    bench.wb.run("order_summary", progress="none")
    row = bench.rows("order_summary", "shadow").to_dicts()[0]
    # order 7: items priced 1.25 + i + 0 -> 1.25 and 2.25, quantity 2 each
    assert row["items"] == 4 and str(row["total"]) == "7.00" and str(row["paid"]) == "7.00"
    assert str(row["refunded"]) == "3.50" and row["status"] == "refunded" and row["version"] == 6


@pytest.mark.parametrize("view", VIEWS)
def test_incremental_catch_up_equals_a_full_rebuild(bench: Bench, view: str) -> None:
    first_lake(bench)
    bench.rebuild_live(view)
    late = order_events(3, first_seq=50, items=1, ship=False, start=T0 - timedelta(days=3))  # a late event for an old day
    bench.ingest([e for o in range(30, 40) for e in order_events(o, customer=o % 5)] + late)
    plan = bench.wb.plan(view)
    assert plan.mode == "incremental" and plan.kind == ("full" if plan.strategy == "full" else "patch")
    bench.rebuild_live(view)
    incremental = bench.rows(view)
    bench.wb.run(view, full=True, progress="none")
    assert incremental.equals(bench.rows(view, "shadow"))


def test_events_read_counts_each_lake_file_once(bench: Bench) -> None:
    """A catch-up reads the new events' files twice (which keys, then the keys' events): the
    record counts them once, as a run of the same keys does."""
    first_lake(bench)
    bench.rebuild_live("order_summary")
    bench.ingest(order_events(3, first_seq=50, items=1, ship=False))
    caught_up = bench.wb.run("order_summary", progress="none")
    assert caught_up.record.scope_rows == 1
    keys_run = bench.wb.run("order_summary", keys=["o-0000003"], progress="none")
    assert caught_up.record.events_read == keys_run.record.events_read > 0


def test_a_keys_run_rebuilds_only_those_keys(bench: Bench) -> None:
    first_lake(bench)
    bench.rebuild_live("order_summary")
    bench.ingest(order_events(5, first_seq=40, items=3, ship=False) + order_events(6, first_seq=40, items=1))
    before = bench.rows("order_summary")
    bench.wb.run("order_summary", keys=["o-0000005"], progress="none")
    assert bench.rows("order_summary", "shadow")["order_id"].to_list() == ["o-0000005"]
    bench.wb.cutover("order_summary", force=True)
    after = bench.rows("order_summary")
    changed = [r["order_id"] for r, b in zip(after.to_dicts(), before.to_dicts(), strict=True) if r != b]
    assert changed == ["o-0000005"]  # o-0000006 also got events but was not asked for
    bench.wb.run("order_summary", full=True, progress="none")
    full = bench.rows("order_summary", "shadow")
    assert after.filter(after["order_id"] == "o-0000005").equals(full.filter(full["order_id"] == "o-0000005"))


def test_keys_from_python_are_taken_as_they_are(bench: Bench) -> None:
    """In a notebook keys come from data (a DataFrame column): a key holding a comma or spaces around it
    was split and stripped like --keys text, so keys=["a,b"] corrected a and b, and "a,b" stayed stale."""
    keys = ["acme,inc", " padded ", "plain"]
    bench.ingest({**e, "partition_key": k, "event_id": f"{k}-{e['sequence']}"} for n, k in enumerate(keys, 1)
                 for e in order_events(n))
    assert bench.wb.plan("order_summary", keys=keys[:2]).keys == ("acme,inc", " padded ")
    bench.wb.run("order_summary", keys=keys[:2], progress="none")
    assert bench.rows("order_summary", "shadow")["order_id"].to_list() == [" padded ", "acme,inc"]



def test_a_missing_value_among_keys_from_python_is_refused(bench: Bench) -> None:
    """keys=df["order_id"].to_list() with a null in it: None became the key 'None', which no event has,
    a patch that silently left the row the null stood for stale."""
    bench.ingest(order_events(1))
    with pytest.raises(ConfigError, match="keys hold None"):
        bench.wb.plan("order_summary", keys=["o-0000001", None])
    assert bench.wb.store.runs() == []


def test_keys_from_a_dataframe_are_refused_unless_one_column_without_missing_values(bench: Bench) -> None:
    """keys=df iterated over the frame's column names (pandas: a patch of the key 'order_id') or its
    columns (Polars: a key spelling a Series), and a missing value of a pandas column (NaN, NA) became
    the key 'nan' or '<NA>': each a patch of no key, whose check passes and whose row stays stale."""
    import pandas as pd

    bench.ingest(order_events(1))
    frame = pd.DataFrame({"order_id": ["o-0000001"]})
    for keys in (frame, pl.from_pandas(frame)):
        with pytest.raises(ConfigError, match=r"keys is a table \(columns \['order_id'\]\).*keys=frame\['order_id'\]"):
            bench.wb.plan("order_summary", keys=keys)
    for missing in (float("nan"), pd.NA, pd.NaT):
        with pytest.raises(ConfigError, match="names no partition key .*dropna"):
            bench.wb.run("order_summary", keys=pd.Series(["o-0000001", missing], dtype=object), progress="none")
    assert bench.wb.plan("order_summary", keys=frame["order_id"]).keys == ("o-0000001",)
    assert bench.wb.store.runs() == []
    with pytest.raises(ConfigError, match=r"keys is a table"):  # and so does RunOptions, made by hand
        RunOptions(keys=frame)
    assert RunOptions(keys=frame["order_id"]).keys == ("o-0000001",)

class _Key(str):
    def __deepcopy__(self, memo: object) -> str:
        raise AssertionError("the plan copied a named key one by one")


def test_a_plan_of_many_named_keys_shows_their_count_and_first_keys(bench: Bench) -> None:
    first_lake(bench)
    bench.rebuild_live("order_summary")
    plan = bench.wb.plan("order_summary", keys=[f"o-{k:07d}" for k in range(1, 30)])
    data = replace(plan, keys=tuple(_Key(k) for k in plan.keys or ())).to_dict()  # copying 1M keys took seconds
    assert data["key_count"] == 29 and data["keys"] == [f"o-{k:07d}" for k in range(1, 21)]
    assert data["estimated_rows"] is None and plan.kind == "patch"  # a patch does not count live's rows


def test_a_plan_in_a_notebook_is_the_shared_table_with_its_values_escaped_and_read_as_people_read_them(
        bench: Bench) -> None:
    """The plan drew a table of its own (values as Python's repr: ['orders'], None); it is lake.render's, whose
    first column names each row, and whose values come from the lake and the user, so they are escaped."""
    first_lake(bench)
    plan = replace(bench.wb.plan("order_summary"), reason="<script>alert(1)</script> & co", streams=("orders", "a<b"))
    page = plan._repr_html_()
    assert page.startswith("<b>Plan</b>: order_summary v")
    assert "<table><caption>what the run reads and writes</caption>" in page
    assert "<thead><tr><th scope='col'>field</th><th scope='col'>value</th></tr></thead>" in page
    assert "<tr><th scope='row'>reason</th><td>&lt;script&gt;alert(1)&lt;/script&gt; &amp; co</td></tr>" in page
    assert "<tr><th scope='row'>streams</th><td>orders, a&lt;b</td></tr>" in page
    assert "<tr><th scope='row'>since</th><td>-</td></tr>" in page and "<script>" not in page
    assert page.count("<th scope='row'>") == len(plan.to_dict()) - 1  # every field but the keys (key_count)


def test_a_time_range_run_recomputes_windows_touched_by_late_events(bench: Bench) -> None:
    first_lake(bench)
    bench.rebuild_live("daily_revenue")
    day = T0 + timedelta(days=1)
    bench.ingest(order_events(99, start=day + timedelta(hours=2)))
    plan = bench.wb.plan("daily_revenue", since=day.isoformat(), until=(day + timedelta(days=1)).isoformat())
    assert plan.mode == "targeted" and plan.method == "by_window"
    bench.wb.run("daily_revenue", since=day.date().isoformat(), until=(day + timedelta(days=1)).date().isoformat(), progress="none")
    shadow = bench.rows("daily_revenue", "shadow")
    assert shadow["day"].to_list() == [day.date()]
    bench.wb.cutover("daily_revenue", force=True)
    bench.wb.run("daily_revenue", full=True, progress="none")
    assert bench.rows("daily_revenue").equals(bench.rows("daily_revenue", "shadow"))


def test_as_of_replays_the_lake_as_it_was(make_bench: object) -> None:
    a, b = make_bench("grown"), make_bench("stopped")  # type: ignore[operator]
    first = [e for o in range(1, 10) for e in order_events(o)]
    later = [e for o in range(10, 15) for e in order_events(o)] + order_events(2, first_seq=60)
    version = a.ingest(first).lake_version
    a.ingest(later)
    b.ingest(first)
    a.wb.run("order_summary", as_of=str(version), progress="none")
    b.wb.run("order_summary", progress="none")
    assert a.rows("order_summary", "shadow").equals(b.rows("order_summary", "shadow"))


def test_as_of_from_a_pandas_column_is_a_lake_version_and_other_numbers_are_refused(bench: Bench) -> None:
    """wb.run(view, as_of=df["lake_version"].max()) (a NumPy integer) or as_of=12.0 ended in the traceback
    "'numpy.int64' object has no attribute 'strip'"."""
    import numpy as np

    first = bench.ingest(order_events(1)).lake_version
    bench.ingest(order_events(2))
    assert bench.wb.plan("order_summary", as_of=np.int64(first)).lake_version == first
    with pytest.raises(ConfigError, match=r"as_of=12.0: give a lake_version \(an integer\) or a time"):
        bench.wb.plan("order_summary", as_of=12.0)
    with pytest.raises(ConfigError, match=r"since=np.datetime64\('2026-09-01'\): give a time"):
        bench.wb.plan("order_summary", since=np.datetime64("2026-09-01"))


def test_run_options_built_by_hand_take_values_as_keywords_do(bench: Bench) -> None:
    """wb.run(view, RunOptions(...)), the README's other way to give the options: RunOptions(keys="o-1")
    planned a patch of the keys 'o', '-' and '1' (a patch of nothing), and RunOptions(as_of=12) ended in
    "'int' object has no attribute 'strip'"; only keyword arguments were converted."""
    first = bench.ingest(order_events(1)).lake_version
    bench.ingest(order_events(2))
    key = bench.wb.events().aggregate("min(partition_key)").fetchall()[0][0]  # type: ignore[union-attr]
    assert bench.wb.plan("order_summary", RunOptions(keys=key)).keys == (key,)
    assert bench.wb.plan("order_summary", RunOptions(as_of=first)).lake_version == first  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="keys hold None"):
        RunOptions(keys=[key, None])  # type: ignore[arg-type]


def test_as_of_a_time_is_the_last_commit_made_by_then(bench: Bench) -> None:
    """--as-of TIMESTAMP is when events were archived (commit time); before the first commit the
    lake held nothing, which a run would turn into an empty view: an error saying what --as-of means."""
    before = datetime.now(UTC) - timedelta(days=1)
    first = bench.ingest(order_events(1)).lake_version
    time.sleep(0.01)  # commit times are in milliseconds
    between = datetime.now(UTC)
    time.sleep(0.01)
    bench.ingest(order_events(2))
    assert bench.wb.plan("order_summary", as_of=between.isoformat()).lake_version == first
    with pytest.raises(ConfigError, match=r"--as-of .* is before the lake's first events were archived \(.*Z\): the lake "
                                          r"held none then. --as-of takes the time events were archived, not their event time") as refused:
        bench.wb.plan("order_summary", as_of=before.isoformat())
    # the commit's time as the error names it is one --as-of takes (cut to the second, it named a time before the commit)
    named = re.search(r"archived \(lake_version (\d+), (.*?)\)", str(refused.value))
    assert named and int(named[1]) == first and bench.wb.plan("order_summary", as_of=named[2]).lake_version == first
    # a year mistyped: the same run tomorrow would read what is archived until then (it replayed the latest)
    with pytest.raises(ConfigError, match=r"--as-of 2062-11-24 is in the future \(now 20\d\d-.*Z\): the lake as of then "
                                          r"is not known yet. Leave --as-of out for its latest lake_version \(2\)"):
        bench.wb.plan("order_summary", as_of="2062-11-24")


def test_as_of_before_the_first_events_names_their_commit_not_an_empty_one_before_them(bench: Bench) -> None:
    """A PostgreSQL poll whose rows were all quarantined commits its position and no events: --as-of a time after
    it, before the first events, was 'before the lake's first commit (TIME)', naming that commit's earlier time."""
    with bench.wb.lake.create().commit_lock():
        bench.wb.lake.commit_files("events", [], position=("postgres:shop/public.events", 1))
    time.sleep(0.01)  # commit times are in milliseconds
    between = datetime.now(UTC)
    time.sleep(0.01)
    first = bench.ingest(order_events(1)).lake_version
    with pytest.raises(ConfigError, match="first events were archived") as refused:
        bench.wb.plan("order_summary", as_of=between.isoformat())
    named = re.search(r"archived \(lake_version (\d+), (.*?)\)", str(refused.value))
    assert named and int(named[1]) == first and datetime.fromisoformat(named[2]) > between


def test_as_of_a_time_after_a_compaction_is_the_lakes_lake_version(bench: Bench) -> None:
    """Compaction commits add no events: a nightly `--incremental --as-of NOW` after one pinned
    live at the compaction's Delta version, past the lake's lake_version, so the next plain run
    was a full rebuild ("live is ahead of this lake snapshot")."""
    first_lake(bench)
    bench.rebuild_live("order_summary")
    version = bench.wb.lake.snapshot().lake_version
    bench.wb.compact()
    time.sleep(0.01)  # commit times are in milliseconds
    caught_up = bench.wb.run("order_summary", incremental=True, as_of=datetime.now(UTC).isoformat(), progress="none")
    assert caught_up.record.lake_version == version
    bench.wb.cutover("order_summary", force=True)
    bench.ingest(order_events(77))
    assert bench.wb.plan("order_summary").mode == "incremental"


@pytest.mark.parametrize("view", VIEWS)
def test_an_incremental_run_as_of_a_version_catches_up_to_it_and_no_further(bench: Bench, view: str) -> None:
    def orders(numbers: range) -> list[dict[str, object]]:
        return [e for o in numbers for e in order_events(o, refund=o % 3 == 0, start=T0 + timedelta(days=o))]

    first = bench.ingest(orders(range(1, 8))).lake_version
    bench.ingest(orders(range(8, 12)))
    pinned = bench.ingest(order_events(3, first_seq=60, start=T0 + timedelta(days=20))).lake_version  # an old order moves on
    bench.ingest(orders(range(12, 15)))  # after the pinned version: must stay out
    bench.rebuild_live(view, as_of=str(first))
    caught_up = bench.wb.run(view, incremental=True, as_of=str(pinned), progress="none")
    assert caught_up.plan.mode == "incremental" and caught_up.record.lake_version == pinned
    bench.wb.cutover(view, force=True)
    bench.wb.run(view, as_of=str(pinned), progress="none")  # a full replay of the same position
    assert bench.rows(view).equals(bench.rows(view, "shadow"))
    # back to an older version: no catching up there; it used to turn into a full run of the older lake
    with pytest.raises(ConfigError, match=rf"--incremental cannot catch {view} up to lake_version {first}: live is "
                                          rf"at lake_version {pinned} already\. .* run --full --as-of {first}"):
        bench.wb.plan(view, incremental=True, as_of=str(first))


def test_exclude_quarantined_leaves_out_poisoned_keys(bench: Bench) -> None:
    poisoned = order_events(4)
    poisoned[2]["sequence"] = "three"  # quarantined; the key is now incomplete
    bench.ingest([e for o in (1, 2, 3) for e in order_events(o)] + poisoned)
    bench.wb.run("order_summary", exclude_quarantined=True, progress="none")
    assert "o-0000004" not in bench.rows("order_summary", "shadow")["order_id"].to_list()
    bench.wb.run("order_summary", progress="none")
    assert "o-0000004" in bench.rows("order_summary", "shadow")["order_id"].to_list()


def test_exclude_quarantined_leaves_out_only_keys_quarantined_in_the_view_s_streams(bench: Bench) -> None:
    """order_summary reads the orders stream; a shipments stream keyed by the same orders had a poison
    record of order 4, and --exclude-quarantined dropped order 4, whose order events are all there (the
    check's audit of the view's streams showed nothing quarantined). A record without a stream stays suspect."""
    bench.ingest([e for o in (1, 2, 3, 4, 5) for e in order_events(o)])
    shipped = order_events(4)[-1:] + order_events(5)[-1:]
    shipped[0]["sequence"] = "three"
    assert bench.ingest(shipped, stream="shipments").quarantined == 1
    unknown = {**order_events(5)[0], "event_id": "no-stream"}  # no stream field, no --stream: quarantined
    path = bench.root / "unknown.ndjson"
    path.write_text(json.dumps(unknown) + "\n")
    assert lake.ingest(bench.wb.lake, [path]).quarantined == 1
    bench.rebuild_live("order_summary", exclude_quarantined=True)
    assert bench.rows("order_summary")["order_id"].to_list() == [f"o-000000{o}" for o in (1, 2, 3, 4)]


@pytest.mark.parametrize("view", ["order_summary", "daily_revenue", "order_timeline"])
def test_a_catch_up_excluding_quarantined_keys_equals_a_full_run(bench: Bench, view: str) -> None:
    """A commit that only quarantines adds no lake_version: a catch-up still takes the newly
    quarantined key out (by_key: its row goes; by_window: its events leave their days)."""
    first_lake(bench)
    bench.rebuild_live(view, exclude_quarantined=True)
    poison = order_events(3, first_seq=50, items=1, ship=False)[:1]
    poison[0]["sequence"] = "fifty"
    assert bench.ingest(poison).quarantined == 1
    for night in range(2):  # the night of the poison only, then a night with new events too
        bench.rebuild_live(view, exclude_quarantined=True)
        caught_up = bench.rows(view)
        assert bench.wb.store.checkpoint(view, "previous") is not None
        bench.wb.run(view, full=True, exclude_quarantined=True, progress="none")
        assert caught_up.equals(bench.rows(view, "shadow")), night
        bench.ingest(order_events(40, customer=1))


def test_a_merge_catch_up_refuses_keys_quarantined_since_live(bench: Bench) -> None:
    first_lake(bench)
    bench.rebuild_live("customer_ltv", exclude_quarantined=True)
    poison = order_events(3, first_seq=50, items=1, ship=False)[:1]
    poison[0]["sequence"] = "fifty"
    bench.ingest(poison)
    nobody = order_events(99, first_seq=1, items=1, ship=False)[:1]  # a key with no event archived at all
    nobody[0]["sequence"] = "one"
    bench.ingest(nobody)
    with pytest.raises(ProjectionError, match=r"1 partition key\(s\) were quarantined since live's run, whose events live "
                                              r"has summed \(e.g. o-0000003\).*--full --exclude-quarantined"):
        bench.wb.run("customer_ltv", exclude_quarantined=True, progress="none")
    bench.wb.run("customer_ltv", progress="none")  # without the option: the sums as they are
    bench.rebuild_live("customer_ltv", full=True, exclude_quarantined=True)  # as the refusal says
    for night in range(2):  # then catch-ups go on: the keys that full run left out are no news
        bench.rebuild_live("customer_ltv", exclude_quarantined=True)
        caught_up = bench.rows("customer_ltv")
        bench.wb.run("customer_ltv", full=True, exclude_quarantined=True, progress="none")
        assert caught_up.equals(bench.rows("customer_ltv", "shadow")), night
        bench.ingest(order_events(40, customer=1))


def _poison(bench: Bench, order: int) -> None:
    """A record of ``order`` quarantined (a sequence that is not a number), in an ingest of its own."""
    poison = order_events(order, first_seq=50, items=1, ship=False)[:1]
    poison[0]["sequence"] = "fifty"
    assert bench.ingest(poison).quarantined == 1


@pytest.mark.parametrize("view", ["order_summary", "daily_revenue"])
def test_a_catch_up_after_the_quarantine_is_compacted_takes_out_only_the_keys_quarantined_since_live(
        bench: Bench, view: str) -> None:
    """A catch-up told the keys quarantined since live's run by the names of the quarantine's files then; compaction
    renames them all, so every quarantined key was taken out again (a by_window view recomputed their every day).
    Each row keeps the file it was first stored in and the version that compacted it: only keys quarantined since
    live's run are new, also when compaction moved them before the catch-up."""
    first_lake(bench)
    for order in (3, 5, 7):
        _poison(bench, order)
    bench.rebuild_live(view, exclude_quarantined=True)
    _poison(bench, 11)  # after live's run: a catch-up takes it out
    assert lake.compact.compact(bench.wb.lake).quarantine_files_before == 4
    con = bench.wb.lake.attach(duckdb.connect())
    seen = json.loads(bench.wb.store.run(bench.wb.store.checkpoint(view, "live").run_id).plan)["quarantine_version"]  # type: ignore[union-attr]
    quarantined_keys(con, bench.wb.lake, ("orders",), None, seen)
    assert con.sql("SELECT partition_key FROM __quarantined_keys WHERE new").fetchall() == [("o-0000011",)]
    caught_up = bench.wb.run(view, exclude_quarantined=True, progress="none")
    assert caught_up.plan.mode == "incremental"
    bench.wb.cutover(view, force=True)
    bench.wb.run(view, full=True, exclude_quarantined=True, progress="none")
    assert bench.rows(view).equals(bench.rows(view, "shadow"))
    _poison(bench, 13)  # quarantined after a compaction (the catch-up saw the compacted quarantine): new
    bench.ingest(order_events(40, customer=1))
    lake.compact.compact(bench.wb.lake)  # and compacted again with the file it was in
    seen = json.loads(bench.wb.store.run(bench.wb.store.checkpoint(view, "live").run_id).plan)["quarantine_version"]  # type: ignore[union-attr]
    quarantined_keys(con, bench.wb.lake, ("orders",), None, seen)
    assert con.sql("SELECT partition_key FROM __quarantined_keys WHERE new").fetchall() == [("o-0000013",)]
    bench.rebuild_live(view, exclude_quarantined=True)
    bench.wb.run(view, full=True, exclude_quarantined=True, progress="none")
    assert bench.rows(view).equals(bench.rows(view, "shadow"))


def test_a_merge_catch_up_goes_on_after_the_quarantine_is_compacted(bench: Bench) -> None:
    """A merge view refuses a catch-up when keys it summed were quarantined since live's run; after a compaction
    of the quarantine every quarantined key looked new, so each weekly compaction forced a full run."""
    first_lake(bench)
    _poison(bench, 3)
    bench.rebuild_live("customer_ltv", full=True, exclude_quarantined=True)
    bench.ingest(order_events(41, customer=2))
    _poison(bench, 5)  # a second quarantine file
    lake.compact.compact(bench.wb.lake)
    with pytest.raises(ProjectionError, match=r"1 partition key\(s\) were quarantined since live's run.*o-0000005"):
        bench.wb.run("customer_ltv", exclude_quarantined=True, progress="none")  # o-0000005's, not o-0000003's too
    bench.rebuild_live("customer_ltv", full=True, exclude_quarantined=True)
    bench.ingest(order_events(42, customer=2))
    _poison(bench, 99)  # a key with no events: nothing summed
    lake.compact.compact(bench.wb.lake)
    bench.rebuild_live("customer_ltv", exclude_quarantined=True)  # refused before: o-0000003 and 5 looked new
    caught_up = bench.rows("customer_ltv")
    bench.wb.run("customer_ltv", full=True, exclude_quarantined=True, progress="none")
    assert caught_up.equals(bench.rows("customer_ltv", "shadow"))


def test_an_as_of_run_excluding_quarantined_keys_is_the_same_after_the_quarantine_is_compacted(bench: Bench) -> None:
    first = bench.ingest(order_events(1) + order_events(2) + order_events(3)).lake_version
    _poison(bench, 2)
    bench.ingest(order_events(4))
    _poison(bench, 4)
    views = ("order_summary", "daily_revenue")
    before = []
    for view in views:
        bench.wb.run(view, as_of=str(first), exclude_quarantined=True, progress="none")
        before.append(bench.rows(view, "shadow"))
    assert lake.compact.compact(bench.wb.lake).quarantine_files_before == 2
    for view, rows in zip(views, before, strict=True):
        bench.wb.run(view, as_of=str(first), exclude_quarantined=True, progress="none")
        assert bench.rows(view, "shadow").equals(rows)
    assert bench.rows("order_summary", "shadow")["order_id"].to_list() == ["o-0000001", "o-0000003"]


def test_plan_writes_nothing(bench: Bench) -> None:
    archived = first_lake(bench)
    plan = bench.wb.plan("order_summary")
    assert plan.mode == "full" and plan.reason == "no live checkpoint"
    assert plan.estimated_events == archived and plan.files == len(plan.buckets)
    assert not bench.wb.store.exists("order_summary__shadow") and bench.wb.store.runs() == []


def test_plan_estimates_the_events_of_each_stream(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A view of orders, payments and refunds: the plan said '~13 events' for all three, so a stream that
    held none (not started yet, or misspelt in streams=) or a catch-up of one stream's events showed nowhere
    before the run; the plan (and `rebuild plan`, --json under reads.by_stream) counts them per stream."""
    from rebuild.cli_views import _print_plan
    from rebuild.projection import Registry, projection
    from rich.console import Console

    registry = Registry()
    projection(name="order_money", key="k", streams=["orders", "payments", "refunds"], registry=registry)(
        lambda: "SELECT partition_key AS k, count(*) AS n FROM events GROUP BY 1")
    bench = Bench(tmp_path)
    with Workbench(bench.wb.config, registry=registry) as wb:
        bench.ingest(order_events(1) + order_events(2))
        payments = [{**e, "event_id": f"pay-{e['event_id']}"} for e in order_events(1)[:3]]
        bench.ingest(payments, stream="payments")
        plan = wb.plan("order_money")
        assert plan.to_dict()["reads"]["by_stream"] == {"orders": 10, "payments": 3, "refunds": 0}
        _print_plan(Console(width=160), plan.to_dict(), plan.summary())
        assert "by stream: orders 10; payments 3; refunds 0\n" in capsys.readouterr().out
        wb.run("order_money", progress="none")
        wb.cutover("order_money", force=True)
        bench.ingest([{**e, "event_id": f"pay-{e['event_id']}"} for e in order_events(2)[:2]], stream="payments")
        caught_up = wb.plan("order_money")
        assert caught_up.mode == "incremental"
        assert caught_up.to_dict()["reads"]["by_stream"] == {"orders": 0, "payments": 2, "refunds": 0}
    bench.wb.close()


def test_a_changed_projection_version_forces_a_full_run(bench: Bench) -> None:
    from dataclasses import replace

    first_lake(bench)
    bench.rebuild_live("order_summary")
    bench.ingest(order_events(77))
    assert bench.wb.plan("order_summary").mode == "incremental"
    projection = bench.wb.projection("order_summary")
    bench.wb.registry._items["order_summary"] = replace(projection, version=projection.version + 1)
    try:
        plan = bench.wb.plan("order_summary")
        assert plan.mode == "full" and "changed" in plan.reason
    finally:
        bench.wb.registry._items["order_summary"] = projection


def test_the_python_fold_matches_the_sql_projection(bench: Bench) -> None:
    first_lake(bench)
    bench.wb.run("order_summary", progress="none")
    bench.wb.run("order_summary_fold", progress="none")
    sql = bench.rows("order_summary", "shadow")
    fold = bench.rows("order_summary_fold", "shadow").select(sql.columns)
    assert fold.cast(sql.schema).equals(sql)  # type: ignore[arg-type]


def test_unknown_projection_is_a_clear_error(bench: Bench) -> None:
    with pytest.raises(ProjectionError, match="unknown projection 'nope'; known: customer_ltv"):
        bench.wb.plan("nope")


def test_a_keys_run_names_the_keys_it_has_no_row_for(bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    """A mistyped key made a patch of nothing, reported as a success."""
    bench.ingest(e for o in range(1, 4) for e in order_events(o))
    bench.rebuild_live("order_summary")
    result = bench.wb.run("order_summary", keys=["o-0000002", "o-000003", "o-1, o-2\n2026-09-01 ERROR x"],
                          progress="none")
    assert result.record.rows_written == 1
    # quoted: the key with a comma and a line break read as two keys and a log line of its own
    assert ("order_summary: 2 of the 3 named keys have no row in the patch (e.g. 'o-000003', "
            "'o-1, o-2\\n2026-09-01 ERROR x'): no events in the lake" in caplog.text)


def test_the_log_of_a_failed_run_does_not_say_done(bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    """`--progress log` is the nightly job's log: a run that failed mid-way logged '... done in 0.0s'
    (its error goes to stdout under --json), so the log of a failed night read like a good one."""
    from lake.read import CorruptFile

    first_lake(bench)
    bench.rebuild_live("order_summary")
    bench.ingest(order_events(77))
    Path(bench.wb.lake.snapshot().files[0].path).write_bytes(b"not parquet")
    with pytest.raises(CorruptFile):
        bench.wb.run("order_summary", progress="log")
    lines = [r.getMessage() for r in caplog.records if r.name == "rebuild.progress"]
    assert lines and not any("done in" in line for line in lines)
    assert "order_summary incremental: stopped after 0/3 steps" in lines[-1] and "not finished" in lines[-1]
    bench.wb.run("order_summary", progress="log", skip_corrupted=True)
    assert "order_summary incremental: done in" in caplog.records[-1].getMessage()


def test_a_check_shows_its_steps_in_the_jobs_log(bench: Bench, caplog: pytest.LogCaptureFixture) -> None:
    """A check has no progress: at 100M events `wb.check` took 209 s (the lake audit 117, the expectations
    92) without a bar in the notebook or a line in the job's log. Now its steps show as a run's do."""
    from checks import CHECK_STEPS

    first_lake(bench)
    bench.wb.run("order_summary", progress="none")
    caplog.set_level("INFO", logger="rebuild.progress")
    bench.wb.check("order_summary", progress="log")
    said = [r.getMessage() for r in caplog.records if r.name == "rebuild.progress"]
    assert said[0] == "order_summary check: 6 steps to do" and said[-1].startswith("order_summary check: done in")
    assert [line.rsplit(" ", 1)[-1] for line in said[1:-1]] == list(CHECK_STEPS)
    with pytest.raises(ConfigError, match=r"progress 'bars' is not one of \['auto', 'bar', 'log', 'none'\]"):
        bench.wb.check("order_summary", progress="bars")
    with pytest.raises(ConfigError, match=r"progress 'bars' is not one of"):  # it passed as auto there
        bench.wb.backfill("order_summary", since="2026-09-01", until="2026-09-02", progress="bars")


def test_prune_lists_the_reports_folder_once_not_once_per_run(bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    """prune looked for each forgotten run's reports with two globs of its folder: quadratic in runs
    kept with their reports (4,000 runs: 21 s; a year of hourly runs: minutes, at 3 a.m.)."""
    bench.ingest(order_events(1))
    runs = [bench.wb.run("order_summary", full=True, progress="none").run_id for _ in range(30)]
    folder = bench.root / "reports" / "order_summary"
    folder.mkdir(parents=True)
    for run_id in runs:
        for name in (f"{run_id}.html", f"{run_id}.json", f"{run_id}--against-order_summary__previous.html"):
            (folder / name).write_text("report")
    reads: list[Path] = []
    for name in ("listdir", "scandir"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda path=".", real=real: (reads.append(Path(path)), real(path))[1])  # type: ignore[func-returns-value]
    pruned = bench.wb.prune(0)
    assert reads.count(folder) == 1
    assert [r.run_id for r in pruned.runs] == runs[-2::-1]  # all but the shadow's, newest first
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{runs[-1]}{end}" for end in (".html", ".json", "--against-order_summary__previous.html"))


def test_a_long_step_shows_in_the_jobs_log(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """A local full run is two steps, the first its whole replay: `--progress log` said nothing for as long
    as that took (an hour on a large lake), which a job's watcher reads as hung. A step that runs for
    ``HEARTBEAT`` seconds is logged as still running, and once the steps are closed nothing more is."""
    from rebuild import progress

    monkeypatch.setattr(progress, "HEARTBEAT", 0.2)
    lines = progress.LogLines()
    caplog.set_level("INFO", logger="rebuild.progress")
    lines.start(2, "steps", "order_summary full")
    deadline = time.monotonic() + 10
    while "still running" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    lines.advance(1, "replay_all")
    lines.advance(1, "published")
    lines.close()
    said = [r.getMessage() for r in caplog.records if r.name == "rebuild.progress"]
    assert re.fullmatch(r"order_summary full: 0/2 steps; the next still running after \d+s", said[1]), said
    time.sleep(0.4)
    assert [r.getMessage() for r in caplog.records if r.name == "rebuild.progress"] == said  # silent once closed


def test_a_heartbeat_due_as_the_steps_end_comes_before_their_last_line(caplog: pytest.LogCaptureFixture,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A heartbeat whose thread was paused (a busy machine) between deciding to log and logging, as the job
    failed, logged 'still running' after the job's last line 'stopped after 0/2 steps ... not finished'."""
    import logging
    import threading

    from rebuild import progress

    monkeypatch.setattr(progress, "HEARTBEAT", 0.2)
    due, go_on = threading.Event(), threading.Event()

    class Paused(logging.Filter):  # runs in the heartbeat's thread, before its line is handled
        def filter(self, record: logging.LogRecord) -> bool:
            if "still running" in record.getMessage() and not go_on.is_set():
                due.set()
                go_on.wait(10)
            return True

    paused = Paused()
    progress.log.addFilter(paused)
    try:
        caplog.set_level("INFO", logger="rebuild.progress")
        lines = progress.LogLines()
        lines.start(2, "steps", "order_summary full")
        assert due.wait(10)
        threading.Timer(0.2, go_on.set).start()  # the heartbeat's thread goes on a moment later
        lines.close()  # the job failed meanwhile
        go_on.set()
        for beat in [t for t in threading.enumerate() if t.name == "progress-heartbeat"]:
            beat.join(10)
    finally:
        progress.log.removeFilter(paused)
    said = [r.getMessage() for r in caplog.records if r.name == "rebuild.progress"]
    assert "still running" in said[1] and said[-1].startswith("order_summary full: stopped after 0/2 steps"), said


def test_prune_in_a_copied_project_leaves_the_originals_reports(tmp_path: Path) -> None:
    """A run record names its report by the absolute path it was written at. A project copied with
    `cp -a` (a backup restored next to it, a colleague's copy) and pruned there deleted the original
    project's reports, which the original's run records still named."""
    (tmp_path / "project").mkdir()
    original = Bench(tmp_path / "project")
    first_lake(original)
    for _ in range(3):
        original.wb.run("order_summary", full=True, progress="none")
        original.wb.check("order_summary", progress="none")
        original.wb.cutover("order_summary")
    original.wb.close()
    for copy, reports in (("copy", "reports"), ("other", "out")):  # also one whose reports folder is named otherwise
        shutil.copytree(tmp_path / "project", tmp_path / copy)
        (tmp_path / copy / "reports").rename(tmp_path / copy / reports)
        wb = Workbench.open(None, lake_uri=str(tmp_path / copy / "lake"),
                            store_uri=f"duckdb://{tmp_path / copy}/views.duckdb", reports_dir=str(tmp_path / copy / reports))
        try:
            pruned = wb.prune(0)
        finally:
            wb.close()
        assert len(pruned.runs) == 1
        name = f"{pruned.runs[0].run_id}.html"
        assert (tmp_path / "project" / "reports" / "order_summary" / name).is_file()
        assert not (tmp_path / copy / reports / "order_summary" / name).exists()


def test_runs_leave_no_view_of_their_own_in_a_duckdb_store(bench: Bench) -> None:
    """A merge catch-up named live's rows of its keys, and a projection returning a relation its result, with
    views DuckDB kept in the store's file: tables readers list found `__live` and `__projection_result`, which
    named temp tables of a run long gone and failed when read."""
    import duckdb

    from rebuild.projection import Registry, projection

    registry = Registry()
    projection(name="per_key", key="order_id", registry=registry)(
        lambda events: events.aggregate("partition_key AS order_id, count(*) AS events"))
    bench.ingest(e for o in range(6) for e in order_events(o))
    bench.rebuild_live("customer_ltv")
    bench.ingest(order_events(7))
    assert bench.wb.run("customer_ltv", progress="none").record.strategy == "merge"
    bench.wb.close()
    with Workbench(bench.wb.config, registry=registry) as wb:
        wb.run("per_key", progress="none")
    con = duckdb.connect(str(bench.root / "views.duckdb"), read_only=True)
    try:
        assert con.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall() == []
    finally:
        con.close()
