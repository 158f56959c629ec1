"""Expectations with Great Expectations on chunked pandas batches, and the verdict thresholds."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
from datetime import date, datetime

import pytest

from checks import CheckInputError, compare, decide, thresholds_of, validate
from lake.encode import dumps as to_json

VIEW = ("SELECT 'o' || i AS order_id, CASE WHEN i % 2 = 0 THEN 'paid' ELSE 'placed' END AS status, "
        "CAST(i AS DECIMAL(18,2)) AS total FROM range(1000) t(i)")
SPEC = {"not_null": ["status"], "between": {"total": [0, None]}, "in_set": {"status": ["placed", "paid"]}}


def test_suite_passes_in_chunks(duck):
    con = duck(VIEW, VIEW)
    result = validate(con, "rebuilt", ["order_id"], SPEC, live_rows=1000, chunk_rows=300)
    assert result.success and result.chunks == 4
    assert {r.expectation for r in result.results} >= {"expect_column_values_to_be_unique",
                                                       "expect_column_values_to_be_in_set",
                                                       "expect_table_row_count_to_be_within_tolerance_of_live"}
    assert all(r.element_count == 1000 for r in result.results)


def test_suite_fails_with_examples(duck):
    bad = VIEW + " UNION ALL SELECT 'o5', 'lost', -3 UNION ALL SELECT NULL, NULL, 1"
    result = validate(duck(VIEW, bad), "rebuilt", ["order_id"], SPEC, live_rows=500, chunk_rows=300)
    failed = {(r.expectation, r.column): r for r in result.failed}
    assert failed[("expect_column_values_to_be_unique", "order_id")].examples == ("o5", "o5")
    assert failed[("expect_column_values_to_be_in_set", "status")].unexpected_count == 1
    assert failed[("expect_column_values_to_be_between", "total")].examples == (-3.0,)
    assert ("expect_column_values_to_not_be_null", "order_id") in failed
    assert ("expect_table_row_count_to_be_within_tolerance_of_live", None) in failed


def test_an_expectation_that_cannot_be_evaluated_says_why(duck):
    """`between` on a text column failed as "0 of 0 values unexpected", which explains nothing."""
    result = validate(duck(VIEW, VIEW), "rebuilt", ["order_id"], {"between": {"status": [0, 1]}})
    [failed] = result.failed
    assert failed.column == "status"
    assert failed.observed.startswith("could not be evaluated: Column values, min_value, and max_value must")
    reason = decide(None, result).reasons[0]
    assert "failed: could not be evaluated" in reason and "values unexpected" not in reason


def test_a_time_range_is_evaluated_on_times_with_and_without_a_zone(duck):
    """``between`` a date, or a time with or without a zone, on a TIMESTAMPTZ (or TIMESTAMP) column could not
    be evaluated ("Invalid comparison between dtype=datetime64[us, UTC] and date"), so it failed every check.
    A bound without a zone is UTC, as everywhere in the workbench."""
    view = ("SELECT 'o' || i AS order_id, TIMESTAMPTZ '2026-09-01 10:00:00+00' + i * INTERVAL 1 HOUR AS placed, "
            "TIMESTAMP '2026-09-01 10:00:00' + i * INTERVAL 1 HOUR AS placed_utc FROM range(3) t(i)")
    con = duck(view, view)
    for bounds, unexpected in [(["2026-09-01", "2026-09-02"], 0), (["2026-09-01T11:00:00", None], 1),
                               ([None, "2026-09-01T12:30:00+02:00"], 2), ([date(2026, 9, 1), datetime(2026, 9, 1, 11)], 1)]:
        result = validate(con, "rebuilt", ["order_id"], {"between": {"placed": bounds, "placed_utc": bounds}})
        for column in ("placed", "placed_utc"):
            outcome = next(r for r in result.results if r.column == column)
            assert outcome.observed == f"{unexpected} of 3 values unexpected", (bounds, column, outcome.observed)
    with pytest.raises(CheckInputError, match=r"between bound 'next week' of TIMESTAMP WITH TIME ZONE column 'placed' "
                                              r"is no ISO time"):
        validate(con, "rebuilt", ["order_id"], {"between": {"placed": ["next week", None]}})


def test_a_nan_is_told_from_null_and_fails_between_and_in_set(duck):
    """In a pandas batch a NaN is NULL: `between` and `in_set` skipped it (a NaN total, 0/0 in a projection,
    passed `between: [0, None]`) and `not_null` listed it as None. DuckDB counts the NaNs, in every chunk."""
    view = ("SELECT 'o' || i AS order_id, CASE WHEN i % 7 = 0 THEN 'nan'::DOUBLE WHEN i % 11 = 0 THEN NULL "
            "ELSE i::DOUBLE END AS total FROM range(1, 101) t(i)")  # 14 NaN, 8 NULL (77 is a NaN)
    spec = {"not_null": ["total"], "between": {"total": [0, None]}, "in_set": {"total": [float(i) for i in range(101)]}}
    result = validate(duck(view, view), "rebuilt", ["order_id"], spec, chunk_rows=30)
    got = {r.expectation: r for r in result.results if r.column == "total"}
    null = got["expect_column_values_to_not_be_null"]
    assert (null.success, null.unexpected_count, null.observed) == (False, 22, "22 of 100 values unexpected (14 NaN, 8 NULL)")
    assert sum(math.isnan(x) for x in null.examples if x is not None) == min(14, len(null.examples))
    for kind in ("expect_column_values_to_be_between", "expect_column_values_to_be_in_set"):
        assert (got[kind].success, got[kind].unexpected_count, got[kind].observed) == (
            False, 14, "14 of 100 values unexpected (14 NaN)"), kind
        assert math.isnan(got[kind].examples[0])
    assert '"examples": ["NaN"' in to_json(result.to_dict())  # JSON has no NaN: its text
    clean = view.replace("'nan'::DOUBLE", "-0.0")
    assert validate(duck(clean, clean), "rebuilt", ["order_id"], {"between": {"total": [-1, None]}}).success


def test_unknown_expectation_or_column(duck):
    con = duck(VIEW, VIEW)
    with pytest.raises(CheckInputError, match="unknown expectation"):
        validate(con, "rebuilt", ["order_id"], {"unique": ["x"]})
    with pytest.raises(CheckInputError, match="does not have"):
        validate(con, "rebuilt", ["order_id"], {"not_null": ["nope"]})


def test_verdict_thresholds(duck):
    rebuilt = VIEW.replace("CAST(i AS DECIMAL(18,2))", "CAST(CASE WHEN i < 5 THEN i + 1 ELSE i END AS DECIMAL(18,2))")
    diff = compare(duck(VIEW, rebuilt), "live", "rebuilt", ["order_id"])
    assert diff.changed_rows == 5
    assert not decide(diff, None).passed
    assert decide(diff, None, {"max_changed_fraction": 0.01}).passed
    assert decide(diff, None, {"columns": {"total": 0.01}}).passed
    strict = decide(diff, None, {"columns": {"total": 0.001}})
    assert not strict.passed and "column total" in strict.reasons[0]
    assert decide(None, None).passed and "no live view" in decide(None, None).notes[0]
    with pytest.raises(CheckInputError):
        thresholds_of({"max_changed": 1})


def test_verdict_counts_missing_keys_and_expectations(duck):
    rebuilt = VIEW.replace("range(1000)", "range(990)")
    con = duck(VIEW, rebuilt)
    diff = compare(con, "live", "rebuilt", ["order_id"])
    assert "10 keys only in live" in decide(diff, None).reasons[0]
    assert decide(diff, None, {"max_only_in_live": 10}).passed
    failing = validate(con, "rebuilt", ["order_id"], {"in_set": {"status": ["paid"]}})
    assert not decide(None, failing).passed
    assert decide(None, failing, {"expectations": "warn"}).passed


def test_warm_up_makes_the_context_in_the_background():
    """In a fresh process, warm_up returns at once and the GE context appears without the caller
    asking for it; validate then uses it. A failing import is raised by validate, in the caller."""
    script = """
import sys, threading
import checks.expect as e
e.warm_up()
assert not e._CONTEXT, "warm_up waited for the import"
[worker] = [t for t in threading.enumerate() if t.name == "great-expectations-warm-up"]
worker.join()
assert e._CONTEXT and "great_expectations" in sys.modules
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_a_failed_warm_up_is_raised_by_validate(duck, monkeypatch):
    import great_expectations as gx

    import checks.expect as expect

    monkeypatch.setattr(expect, "_CONTEXT", [])
    monkeypatch.setattr(gx, "get_context", lambda **_: (_ for _ in ()).throw(RuntimeError("no context today")))
    expect.warm_up()
    for worker in threading.enumerate():
        if worker.name == "great-expectations-warm-up":
            worker.join()
    assert not expect._CONTEXT
    with pytest.raises(RuntimeError, match="no context today"):
        validate(duck(VIEW, VIEW), "rebuilt", ["order_id"], SPEC)


def test_the_view_is_read_once_however_many_chunks(duck):
    """Each chunk scanned the whole view for its hash(key) share: 0.45 s per chunk at 16M rows, 37 s of a
    check's 92 s of expectations at 100M events. The rows are now cut once; a UDF counts the rows read."""
    con = duck(VIEW, VIEW)
    reads: list[int] = []
    con.create_function("seen", lambda x: reads.append(1) or x, ["VARCHAR"], "VARCHAR", side_effects=True)
    con.execute("CREATE VIEW counted AS SELECT seen(order_id) AS order_id, status, total FROM rebuilt")
    result = validate(con, "counted", ["order_id"], SPEC, chunk_rows=100)
    assert result.success and result.chunks == 10 and all(r.element_count == 1000 for r in result.results)
    assert len(reads) == 1000  # the one cut (it was 10 x 1,000: every chunk read every row)
    assert not [t for t in con.sql("SELECT table_name FROM duckdb_tables() WHERE temporary").fetchall()]


def test_a_column_limit_of_a_wide_view_does_not_hide_changes_past_the_sixty_second_column(duck, make_lake):
    # a 70-column view whose rows all changed in c0 (limited to 100%) and in c65 (no limit of its own):
    # the change patterns hold the first 62 columns only, so each row read as a change in c0 alone
    # and the check passed with every row of c65 changed
    from checks import ViewSpec, check_view

    live = "SELECT i AS k, " + ", ".join(f"i AS c{c}" for c in range(70)) + " FROM range(100) t(i)"
    rebuilt = "SELECT i AS k, " + ", ".join(f"i + {int(c in (0, 65))} AS c{c}" for c in range(70)) + " FROM range(100) t(i)"
    con = duck(live, rebuilt)
    diff = compare(con, "live", "rebuilt", ["k"])
    assert diff.change_patterns == {"c0": 100} and diff.changed_by_column["c65"] == 100
    assert "100 changed rows (100% of 100, allowed 0%) outside columns ['c0']" in \
        decide(diff, None, {"columns": {"c0": 1.0}}).reasons
    events = make_lake()
    report = check_view(con, events, ViewSpec("v", ("k",), thresholds={"columns": {"c0": 1.0}}),
                        run_id="r", rebuilt="rebuilt", live="live")
    assert report.diff.changed_elsewhere == 100 and not report.passed
    both = check_view(con, events, ViewSpec("v", ("k",), thresholds={"columns": {"c0": 1.0, "c65": 1.0}}),
                      run_id="r", rebuilt="rebuilt", live="live")
    assert both.diff.changed_elsewhere == 0 and both.passed, both.verdict.reasons


def test_the_report_shows_thresholds_as_the_percentages_its_reasons_say(duck, make_lake):
    """The reasons said 'allowed 0%' and the row count 'allowed 900-1,100', while the thresholds table beside them
    said max_changed_fraction 0, row_count_tolerance 0.1 and columns {'total': 0.005}: fractions, where the rest
    says percentages. People read percentages everywhere; the JSON keeps the fractions a projection gives."""
    from checks import ViewSpec, check_view

    rebuilt = VIEW.replace("CAST(i AS DECIMAL(18,2))", "CAST(CASE WHEN i < 10 THEN i + 1 ELSE i END AS DECIMAL(18,2))")
    spec = ViewSpec("v", ("order_id",), thresholds={"columns": {"total": 0.005}, "row_count_tolerance": 0.025})
    report = check_view(duck(VIEW, rebuilt), make_lake(), spec, run_id="r", rebuilt="rebuilt", live="live")
    assert report.verdict.reasons == ("column total: 10 rows changed (1%, allowed 0.5%)",)
    page = report.to_html()
    for name, value in (("max_changed_fraction", "0%"), ("columns", "total: 0.5%"), ("row_count_tolerance", "2.5%")):
        assert f"<th scope='row'>{name}</th><td>{value}</td>" in page
    (count,) = [r for r in report.expectations.results if r.expectation.endswith("within_tolerance_of_live")]
    assert (count.expected, count.observed) == ("live_rows=1000, tolerance=2.5%",
                                                "1,000 rows; live has 1,000 (allowed 975-1,025: within 2.5%)")
    assert report.to_dict()["thresholds"]["row_count_tolerance"] == 0.025
    assert count.kwargs["tolerance"] == 0.025
