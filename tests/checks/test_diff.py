"""checks.compare on real DuckDB files: every kind of difference, tolerances, duplicates, scope."""

from __future__ import annotations

import html

import pytest

from checks import CheckInputError, CheckReport, compare, decide, parse_tolerance

BASE = "SELECT * FROM (VALUES ('a', 1, 1.50::DECIMAL(18,2), 'x'), ('b', 2, 2.00, 'y'), ('c', 3, 3.00, 'z')) t(k, n, amount, s)"


def test_identical(duck):
    result = compare(duck(BASE, BASE), "live", "rebuilt", ["k"])
    assert result.verdict == "identical"
    assert (result.rows_live, result.rows_rebuilt, result.changed_rows) == (3, 3, 0)
    assert result.to_dict()["changed_by_column"] == {"n": 0, "amount": 0, "s": 0}


def test_keys_missing_and_extra(duck):
    rebuilt = "SELECT * FROM (VALUES ('a', 1, 1.50::DECIMAL(18,2), 'x'), ('d', 4, 4.00, 'w')) t(k, n, amount, s)"
    result = compare(duck(BASE, rebuilt), "live", "rebuilt", ["k"])
    assert (result.only_in_live, result.only_in_rebuilt, result.changed_rows) == (2, 1, 0)
    assert sorted(r["k"] for r in result.samples["only_in_live"]) == ["b", "c"]
    assert result.samples["only_in_rebuilt"] == [{"k": "d", "n": 4, "amount": pytest.approx(4), "s": "w"}]
    assert {k["k"] for k in result.differing_keys} == {"b", "c", "d"}


def test_values_within_and_beyond_tolerance(duck):
    rebuilt = BASE.replace("2.00", "2.004").replace("3.00", "3.50")
    con = duck(BASE, rebuilt.replace("DECIMAL(18,2)", "DECIMAL(18,3)"))
    exact = compare(con, "live", "rebuilt", ["k"])
    assert exact.changed_by_column["amount"] == 2
    loose = compare(con, "live", "rebuilt", ["k"], tolerance={"amount": (0.01, 0.0)})
    assert loose.changed_by_column["amount"] == 1
    assert loose.samples["changed"][0]["changes"]["amount"]["rebuilt"] == pytest.approx(3.5)
    relative = compare(con, "live", "rebuilt", ["k"], tolerance=parse_tolerance(["amount=20%"]))
    assert relative.changed_rows == 0
    column = next(c for c in exact.columns if c.name == "amount")
    assert column.sum_diff == pytest.approx(0.504) and column.max_abs_diff == pytest.approx(0.5)


def test_null_vs_value_is_a_change(duck):
    rebuilt = BASE.replace("'z'", "NULL").replace("1.50::DECIMAL(18,2)", "NULL::DECIMAL(18,2)")
    result = compare(duck(BASE, rebuilt), "live", "rebuilt", ["k"], tolerance={"amount": (100.0, 0.0)})
    assert result.changed_by_column == {"n": 0, "amount": 1, "s": 1}
    assert result.changed_rows == 2
    assert result.change_patterns == {"amount": 1, "s": 1}


def test_retyped_and_added_removed_columns(duck):
    rebuilt = "SELECT k, CAST(n AS VARCHAR) AS n, amount, 1 AS extra FROM (" + BASE + ")"
    result = compare(duck(BASE, rebuilt), "live", "rebuilt", ["k"])
    assert result.retyped == {"n": ("INTEGER", "VARCHAR")}
    assert result.added == ("extra",) and result.removed == ("s",)
    assert result.changed_rows == 0 and result.verdict == "different"
    reasons = decide(result, None).reasons  # the reader of the verdict sees the types, not only the name
    assert "schema changed: added column extra; removed column s; retyped column n (INTEGER in live, VARCHAR rebuilt)" in reasons


def test_times_with_and_without_a_zone_are_compared_as_instants(duck):
    """A live view made elsewhere keeps UTC times without a zone; compared as text, every row differed."""
    live = "SELECT * FROM (VALUES ('a', TIMESTAMP '2026-09-01 10:00:00'), ('b', TIMESTAMP '2026-09-01 11:00:00')) t(k, happened)"
    rebuilt = ("SELECT * FROM (VALUES ('a', TIMESTAMPTZ '2026-09-01 10:00:00+00'), "
               "('b', TIMESTAMPTZ '2026-09-01 13:30:00+02')) t(k, happened)")
    con = duck(live, rebuilt)
    con.execute("SET TimeZone = 'America/New_York'")  # the session's zone plays no part
    result = compare(con, "live", "rebuilt", ["k"])
    assert result.retyped == {"happened": ("TIMESTAMP", "TIMESTAMP WITH TIME ZONE")}
    assert result.changed_rows == 1 and [s["k"] for s in result.samples["changed"]] == ["b"]
    assert list(result.samples["changed"][0]["changes"]) == ["happened"]


def test_retyped_whole_numbers_are_compared_exactly(duck):
    """A consumer's BIGINT column against the rebuild's HUGEINT (a sum over BIGINT) or DECIMAL was compared
    as DOUBLE, which holds 53 bits: ids and counts past 2**53 one apart were seen equal."""
    big = 2**53
    live = f"SELECT * FROM (VALUES ('a', {big + 1}::BIGINT, {big + 1}::BIGINT), ('b', {big}::BIGINT, 7::BIGINT)) t(k, n, m)"
    rebuilt = (f"SELECT * FROM (VALUES ('a', {big}::HUGEINT, {big}::DECIMAL(38,0)), ('b', {big}::HUGEINT, "
               "7::DECIMAL(38,0))) t(k, n, m)")
    result = compare(duck(live, rebuilt), "live", "rebuilt", ["k"])
    assert result.retyped == {"n": ("BIGINT", "HUGEINT"), "m": ("BIGINT", "DECIMAL(38,0)")}
    assert result.changed_by_column == {"n": 1, "m": 1}
    assert [s["k"] for s in result.samples["changed"]] == ["a"]
    assert list(result.samples["changed"][0]["changes"]) == ["n", "m"]


def test_structs_whose_fields_are_in_another_order_are_compared_by_field_name(duck):
    """A consumer's struct (or list of structs) with the same fields in another order was compared as text,
    so every row differed: {'last': 'x', 'n': 5} against {'n': 5, 'last': 'x'}."""
    live = ("SELECT * FROM (VALUES ('a', {'last': 'x', 'n': 5}, [{'b': 2, 'a': 1}], {'c': 1}), "
            "('b', {'last': 'y', 'n': 6}, [{'b': 2, 'a': 1}], {'c': 2})) t(k, st, items, other)")
    rebuilt = ("SELECT * FROM (VALUES ('a', {'n': 5, 'last': 'x'}, [{'a': 1, 'b': 2}], {'d': 1}), "
               "('b', {'n': 7, 'last': 'y'}, [{'a': 1, 'b': 3}], {'d': 2})) t(k, st, items, other)")
    result = compare(duck(live, rebuilt), "live", "rebuilt", ["k"])
    assert set(result.retyped) == {"st", "items", "other"}  # the types are still reported as they are
    assert result.changed_by_column == {"st": 1, "items": 1, "other": 2}  # other fields are no same fields
    changed = {s["k"]: list(s["changes"]) for s in result.samples["changed"]}
    assert changed == {"a": ["other"], "b": ["st", "items", "other"]}


def test_duplicate_keys_on_one_side(duck):
    live = BASE + " UNION ALL SELECT 'b', 2, 2.00, 'y'"
    result = compare(duck(live, BASE), "live", "rebuilt", ["k"])
    assert result.duplicate_keys_live == 1 and result.duplicate_keys_rebuilt == 0
    assert result.samples["duplicates_live"] == [{"k": "b", "rows": 2}]


def test_compound_key(duck):
    live = "SELECT * FROM (VALUES ('c1', 'EUR', 1), ('c1', 'USD', 2)) t(customer_id, currency, orders)"
    rebuilt = "SELECT * FROM (VALUES ('c1', 'EUR', 1), ('c1', 'USD', 3)) t(customer_id, currency, orders)"
    result = compare(duck(live, rebuilt), "live", "rebuilt", ["customer_id", "currency"])
    assert result.samples["changed"] == [{"customer_id": "c1", "currency": "USD",
                                          "changes": {"orders": {"live": 2, "rebuilt": 3}}}]


def test_partial_shadow_compared_with_its_scope_only(duck):
    live = "SELECT 'o' || i AS order_id, i AS n FROM range(10) t(i)"
    rebuilt = "SELECT * FROM (VALUES ('o1', 1), ('o2', 20), ('o11', 11)) t(order_id, n)"
    con = duck(live, rebuilt)
    con.execute("CREATE TABLE scope AS SELECT * FROM (VALUES ('o1'), ('o2'), ('o3'), ('o11')) t(order_id)")
    result = compare(con, "live", "rebuilt", ["order_id"], scope="scope", scope_columns=["order_id"])
    assert result.rows_live == 3  # only the live rows in the scope
    assert (result.only_in_live, result.only_in_rebuilt, result.changed_rows) == (1, 1, 1)


def test_bad_inputs(duck):
    con = duck(BASE, BASE)
    with pytest.raises(CheckInputError, match="no key column"):
        compare(con, "live", "rebuilt", ["nope"])
    with pytest.raises(CheckInputError, match="no table"):
        compare(con, "live", "missing", ["k"])
    with pytest.raises(CheckInputError, match="COL=ABS"):
        parse_tolerance(["amount"])
    for item in ("amount=nan", "amount=-1", "amount=inf%"):  # a Binder traceback, or silently 0
        with pytest.raises(CheckInputError, match="with a number >= 0"):
            parse_tolerance([item])
    with pytest.raises(CheckInputError, match="tolerance for 'amount' is given twice"):
        parse_tolerance(["amount=1", "amount=2%"])
    with pytest.raises(CheckInputError, match=r"tolerance for 'amount' must be \(absolute, relative\)"):
        compare(con, "live", "rebuilt", ["k"], tolerance={"amount": float("nan")})  # type: ignore[dict-item]
    with pytest.raises(CheckInputError, match=r"tolerance is for number columns; \{'s': 'VARCHAR'\} are not"):
        compare(con, "live", "rebuilt", ["k"], tolerance=parse_tolerance(["s=1"]))  # it was ignored, silently


def test_html_and_dict(duck):
    result = compare(duck(BASE, BASE), "live", "rebuilt", ["k"])
    assert "<table" in result._repr_html_()
    assert {"verdict", "rows_live", "rows_rebuilt", "only_in_live", "only_in_rebuilt", "changed_rows",
            "changed_by_column"} <= set(result.to_dict())


def test_the_report_says_which_way_the_drift_goes(duck):
    """The README called sum_diff and mean_diff sums of |rebuilt - live|, and the report did not say: a
    'sum_diff -3.0' could not tell the reader whether rebuilt was lower or higher than live."""
    lower = BASE.replace("3.00, 'z'", "0.00, 'z'")
    result = compare(duck(BASE, lower), "live", "rebuilt", ["k"])
    (amount,) = [c for c in result.columns if c.name == "amount"]
    assert (amount.sum_diff, amount.mean_diff, amount.max_abs_diff) == (-3.0, -1.0, 3.0)
    report = CheckReport(view="v", run_id="r", live="live", rebuilt="rebuilt", verdict=decide(result, None),
                         diff=result, lineage=(), expectations=None, run={})
    assert ("sum_diff and mean_diff: rebuilt - live, summed and averaged over the matched rows (negative: rebuilt "
            "is lower); max_abs_diff: the largest |rebuilt - live|") in report.to_html()


def test_null_keys_are_matched_counted_and_shown(duck):
    # a legacy live view with rows under a NULL key: the report must show those rows, and a NULL
    # key on both sides is the same key (compared), not one row missing and one extra
    live = BASE + " UNION ALL SELECT NULL, 9, 9.00, 'n' UNION ALL SELECT NULL, 8, 8.00, 'm'"
    rebuilt = BASE + " UNION ALL SELECT NULL, 9, 9.00, 'n'"
    result = compare(duck(live, rebuilt), "live", "rebuilt", ["k"])
    assert result.duplicate_keys_live == 1 and result.samples["duplicates_live"] == [{"k": None, "rows": 2}]
    assert result.only_in_rebuilt == 0
    assert {"k": None} in result.differing_keys
    one = compare(duck(BASE + " UNION ALL SELECT NULL, 9, 9.00, 'n'", BASE), "live", "rebuilt", ["k"])
    assert one.only_in_live == 1 and one.samples["only_in_live"] == [{"k": None, "n": 9, "amount": 9, "s": "n"}]
    changed = compare(duck(BASE + " UNION ALL SELECT NULL, 9, 9.00, 'n'", BASE + " UNION ALL SELECT NULL, 9, 9.00, 'x'"),
                      "live", "rebuilt", ["k"])
    assert (changed.only_in_live, changed.only_in_rebuilt, changed.changed_rows) == (0, 0, 1)
    assert changed.samples["changed"] == [{"k": None, "changes": {"s": {"live": "n", "rebuilt": "x"}}}]


def test_key_of_another_type_in_live(duck):
    # a legacy live table keeps the key as text: a clear error, not DuckDB's binder traceback
    con = duck("SELECT CAST(i AS VARCHAR) AS k, i AS n FROM range(3) t(i)", "SELECT i AS k, i AS n FROM range(3) t(i)")
    with pytest.raises(CheckInputError, match="key column 'k' is VARCHAR in live and BIGINT in rebuilt"):
        compare(con, "live", "rebuilt", ["k"])
    widened = duck("SELECT CAST(i AS INTEGER) AS k, i AS n FROM range(3) t(i)", "SELECT i AS k, i AS n FROM range(3) t(i)")
    assert compare(widened, "live", "rebuilt", ["k"]).verdict == "identical"  # integers of two widths still match


def test_differing_keys_beyond_max_keys_say_they_are_a_part(duck):
    """A check of a drifted live with more differing keys than it keeps: differing_keys held 1,000 of 1,526,
    and the only note was about duplicate keys, so a keys file made from them corrected 1,000 and left the
    rest drifted without a word."""
    rebuilt = "SELECT * FROM (VALUES ('a', 9, 1.50::DECIMAL(18,2), 'x'), ('b', 9, 2.00, 'y'), ('c', 9, 3.00, 'z')) t(k, n, amount, s)"
    result = compare(duck(BASE, rebuilt), "live", "rebuilt", ["k"], max_keys=2)
    assert result.changed_rows == 3 and len(result.differing_keys) == 2
    assert any(n.startswith("3 differing rows: differing_keys holds 2 of their keys") and "--keys" in n for n in result.notes)
    assert compare(duck(BASE, rebuilt), "live", "rebuilt", ["k"], max_keys=3).notes == ()


def test_infinity_and_nan_compare_as_values(duck):
    # a DOUBLE column holding Infinity or NaN (a payload's "Infinity", a ratio over zero): equal on
    # both sides is no change; inf - inf is NaN, which DuckDB orders above every number, so every
    # row with an infinity counted as changed (with empty changes), and NaN against 5.0 passed
    values = "('a', 'inf'::DOUBLE), ('b', '-inf'::DOUBLE), ('c', 'nan'::DOUBLE), ('d', 1.0), ('e', 'nan'::DOUBLE), ('f', 2.0)"
    live = f"SELECT * FROM (VALUES {values}) t(k, x)"
    same = compare(duck(live, live), "live", "rebuilt", ["k"])
    assert same.changed_rows == 0 and same.verdict == "identical"
    assert next(c for c in same.columns if c.name == "x").sum_diff == 0
    rebuilt = live.replace("('e', 'nan'::DOUBLE)", "('e', 5.0)").replace("('f', 2.0)", "('f', 'inf'::DOUBLE)")
    changed = compare(duck(live, rebuilt), "live", "rebuilt", ["k"])
    assert changed.changed_rows == 2
    assert sorted(s["k"] for s in changed.samples["changed"]) == ["e", "f"]
    assert all(s["changes"] for s in changed.samples["changed"])  # each sample shows what changed


def test_the_json_of_a_diff_over_nan_and_infinity_is_json(duck, tmp_path):
    # Python's json writes NaN and Infinity as bare tokens that JSON has not: jq let them pass, but
    # JavaScript's JSON.parse, Go or PostgreSQL's jsonb refused the report and `--json check`
    import json

    from checks import CheckReport, decide
    from rebuild.output import to_json

    def strict(text: str) -> object:
        return json.loads(text, parse_constant=lambda token: pytest.fail(f"{token} is not JSON"))

    values = "('a', 'nan'::DOUBLE), ('b', 'inf'::DOUBLE), ('c', 1.0)"
    live = f"SELECT * FROM (VALUES {values}) t(k, x)"
    result = compare(duck(live, live.replace("1.0", "'-inf'::DOUBLE")), "live", "rebuilt", ["k"],
                     tolerance={"x": (0.0, 0.0)})
    data = strict(to_json({"diff": result}))
    assert data["diff"]["samples"]["changed"][0]["changes"]["x"] == {"live": 1.0, "rebuilt": "-Infinity"}
    report = CheckReport(view="v", run_id="r", live="live", rebuilt="rebuilt", verdict=decide(result, None),
                         diff=result, lineage=(), expectations=None, run={})
    strict((tmp_path / "v" / "r.json").read_text() if report.write(tmp_path) else "")


def test_a_report_that_cannot_be_written_names_the_setting_as_workbench_toml_spells_it(duck, tmp_path):
    """It said "check reports_dir in workbench.toml", a key the file refuses: the setting is [reports] dir."""
    from checks import CheckReport, ReportError

    result = compare(duck(BASE, BASE), "live", "rebuilt", ["k"])
    report = CheckReport(view="v", run_id="r", live="live", rebuilt="rebuilt", verdict=decide(result, None),
                         diff=result, lineage=(), expectations=None, run={})
    blocker = tmp_path / "reports"
    blocker.write_text("a file where the reports folder should be")
    with pytest.raises(ReportError, match=r"set \[reports\] dir in workbench.toml to a folder it may write"):
        report.write(blocker)


def test_a_changed_sample_shows_only_the_columns_the_counts_call_changed(duck):
    """A live view made elsewhere keeps paid as DECIMAL(18,4) and flag as BOOLEAN; the shadow has
    DECIMAL(18,2) and VARCHAR. The counts (SQL) found only items changed, but the sample, compared
    again in Python, also listed paid 1.5000 -> 1.50 and flag True -> 'true' as changes."""
    con = duck("SELECT * FROM (VALUES (1, CAST(1.5 AS DECIMAL(18,4)), true, 1), (2, CAST(2 AS DECIMAL(18,4)), false, 2)) "
               "t(k, paid, flag, items)",
               "SELECT * FROM (VALUES (1, CAST(1.5 AS DECIMAL(18,2)), 'true', 9), (2, CAST(2 AS DECIMAL(18,2)), 'false', 2)) "
               "t(k, paid, flag, items)")
    result = compare(con, "live", "rebuilt", ["k"])
    assert result.changed_by_column == {"paid": 0, "flag": 0, "items": 1}
    assert result.samples["changed"] == [{"k": 1, "changes": {"items": {"live": 1, "rebuilt": 9}}}]


def test_change_patterns_are_the_most_common_fifty_with_how_many_there_are(duck):
    # 20 columns changing independently in 5,000 rows made a pattern per row: the JSON, the report's table
    # and the memory grew with the changed rows (2M rows: 162 MB of JSON, 4.4 GB)
    live = "SELECT i AS k, " + ", ".join(f"i AS c{c}" for c in range(20)) + " FROM range(5000) t(i)"
    rebuilt = ("SELECT i AS k, " + ", ".join(f"i + CAST(i < 100 OR (hash(i) >> {c}) & 1 = 1 AS INT) AS c{c}" for c in range(20))
               + " FROM range(5000) t(i)")
    result = compare(duck(live, rebuilt), "live", "rebuilt", ["k"])
    assert len(result.change_patterns) == 50 < result.change_pattern_count <= result.changed_rows == 5000
    common, rows = next(iter(result.change_patterns.items()))
    assert common == "+".join(f"c{c}" for c in range(20)) and rows >= 100
    assert list(result.change_patterns.values()) == sorted(result.change_patterns.values(), reverse=True)
    note = next(n for n in result.notes if n.startswith("change patterns"))
    assert f"the 50 most common of {result.change_pattern_count:,} combinations" in note
    assert f"({5000 - sum(result.change_patterns.values()):,} changed rows are in the others)" in note
    report = CheckReport(view="v", run_id="r", live="live", rebuilt="rebuilt", verdict=decide(result, None), diff=result,
                         lineage=(), expectations=None, run={})
    assert f"the 50 most common of {result.change_pattern_count:,} combinations" in report.to_html()


def test_the_report_shows_a_changed_long_text_around_its_first_difference_with_its_length(duck):
    """A view keeping a document (the last payload, 40,000 characters) changed at its end: the HTML cut
    'doc: LIVE → REBUILT' to its first 120 characters, the start of live's value, the same on both sides,
    so the reader saw neither the rebuilt value nor what differed."""
    doc = '{"lines": [' + ", ".join(f'{{"sku": "s{i}", "q": 1}}' for i in range(2_000)) + "]}"
    live = f"SELECT 'k1' AS k, '{doc}' AS doc, 1 AS n"
    result = compare(duck(live, live.replace('"q": 1}]}', '"q": 2}]}')), "live", "rebuilt", ["k"])
    report = CheckReport(view="v", run_id="r", live="live", rebuilt="rebuilt", verdict=decide(result, None),
                         diff=result, lineage=(), expectations=None, run={})
    samples = report.to_html().split("id='samples-changed'")[1].split("</table>")[0]
    size = f"({len(doc):,} characters)"
    assert f'"q": 1}}]}} {size} → …' in html.unescape(samples)
    assert f'"q": 2}}]}} {size}' in html.unescape(samples)
    assert len(samples) < 1_000


def test_the_drift_of_a_decimal_column_is_exact(duck):
    """4,950 changed totals of a DECIMAL(18,2) column were summed as DOUBLEs: the report's sum_diff read
    -402738.119999977 where DuckDB's own sum of the differences is -402738.12."""
    rows = "SELECT i AS k, CAST(i % 997 + 0.07 AS DECIMAL(18,2)) AS total FROM range(50000) t(i)"
    con = duck(rows, rows.replace("+ 0.07", "+ 0.01"))
    exact = con.sql("SELECT sum(r.total - l.total), max(abs(r.total - l.total)) FROM live l JOIN rebuilt r USING (k)").fetchall()[0]
    (total,) = compare(con, "live", "rebuilt", ["k"]).columns
    assert (total.sum_diff, total.max_abs_diff) == (float(exact[0]), float(exact[1])) == (-3000.0, 0.06)
    assert total.mean_diff == round(-3000 / 50000, 9)


def test_the_report_s_run_section_leaves_out_the_verdict_and_report_the_check_is_making(duck):
    """The run's record is read before the check records its verdict and report: they showed as empty rows."""
    result = compare(duck("SELECT 1 AS k", "SELECT 1 AS k"), "live", "rebuilt", ["k"])
    report = CheckReport(view="v", run_id="r", live="live", rebuilt="rebuilt", verdict=decide(result, None),
                         diff=result, lineage=(), expectations=None,
                         run={"mode": "full", "verdict": None, "report": None, "events": 12345})
    run = report.to_html().split("<section id='run'>")[1].split("</section>")[0]
    assert ">mode<" in run and "12,345" in run and ">verdict<" not in run and ">report<" not in run


def test_the_json_report_cuts_long_sample_values_and_says_so(duck, tmp_path):
    """The JSON twin kept sample values whole: 3 changed rows of a view keeping 4 MB documents made 8 MB of
    JSON. Each value past JSON_CHARS is now cut as the HTML cuts it (around the first difference, with its
    length), the key columns stay whole, and the JSON names what it cut; the result in memory keeps them."""
    import json

    from checks.report import JSON_CHARS

    doc = '{"lines": [' + ", ".join(f'{{"sku": "s{i}", "q": 1}}' for i in range(40_000)) + "]}"  # 1 MB
    key = "k" * (2 * JSON_CHARS)  # a long key still names its row
    changed = doc.replace('"q": 1}]}', '"q": 2}]}')

    def view(rows: list[tuple[str, str, int]]) -> str:
        return "SELECT * FROM (VALUES " + ", ".join(f"('{key}{k}', '{d}', {n})" for k, d, n in rows) + ") t(k, doc, n)"

    con = duck(view([("1", doc, 1), ("2", doc, 2), ("3", doc, 3), ("4", doc, 4)]),
               view([("1", changed, 1), ("2", changed, 2), ("3", changed, 3), ("5", "short", 5)]))
    con.execute("ALTER TABLE live ADD COLUMN parts VARCHAR[]; UPDATE live SET parts = [doc, 'x']")
    con.execute("ALTER TABLE rebuilt ADD COLUMN parts VARCHAR[]; UPDATE rebuilt SET parts = [doc, 'x']")
    result = compare(con, "live", "rebuilt", ["k"])
    assert (result.changed_rows, result.only_in_live, result.only_in_rebuilt) == (3, 1, 1)
    report = CheckReport(view="v", run_id="r", live="live", rebuilt="rebuilt", verdict=decide(result, None),
                         diff=result, lineage=(), expectations=None, run={})
    path = tmp_path / "v" / "r.json"
    report.write(tmp_path)
    assert path.stat().st_size < 50_000  # was 8 MB
    data = json.loads(path.read_text())
    samples, cut = data["diff"]["samples"], data["diff"]["samples_cut"]
    size = f"({len(doc):,} characters)"
    for row in samples["changed"]:
        assert row["k"].startswith(key) and list(row["changes"]) == ["doc", "parts"]
        live_doc, rebuilt_doc = row["changes"]["doc"]["live"], row["changes"]["doc"]["rebuilt"]
        assert live_doc.startswith("…") and live_doc.endswith(f'"q": 1}}]}} {size}') and len(live_doc) < JSON_CHARS + 40
        assert rebuilt_doc.endswith(f'"q": 2}}]}} {size}')
        parts = json.dumps([doc, "x"])  # a list past JSON_CHARS is cut as its JSON text
        assert row["changes"]["parts"]["live"].endswith(f"{parts[-30:]} ({len(parts):,} characters)")
    [gone] = samples["only_in_live"]
    assert (gone["k"], gone["n"], gone["doc"]) == (f"{key}4", 4, doc[:JSON_CHARS] + f"… {size}")
    assert samples["only_in_rebuilt"] == [{"k": f"{key}5", "doc": "short", "n": 5, "parts": ["short", "x"]}]
    assert cut["characters_kept"] == JSON_CHARS and len(cut["values"]) == 3 * 4 + 2
    assert {"samples": "only_in_live", "row": 0, "column": "doc", "characters": len(doc)} in cut["values"]
    assert {"samples": "changed", "row": 2, "column": "doc", "side": "rebuilt", "characters": len(doc)} in cut["values"]
    assert any(n.startswith(f"14 sample values longer than {JSON_CHARS:,} characters are cut") for n in data["notes"])
    assert result.samples["only_in_live"][0]["doc"] == doc  # in memory (a notebook), whole
