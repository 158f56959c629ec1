"""An analyst's own projections and their mistakes: each is a clear error naming the projection
(exit 2 from the CLI), never a traceback, and never a view silently wrong."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import lake
from checks import CheckInputError
from rebuild import (
    Config, ConfigError, PlanOutdated, ProjectionError, RunOptions, StoreError, Window, Workbench, projection,
)
from rebuild import fingerprint
from rebuild import plan as plan_module
from rebuild.cli import main
from rebuild.projection import Projection, Registry, load_modules
from tests.conftest import event, files_opened, logging_files, write_ndjson
from tests.lake.test_compact import small_commits
from tests.orders import order_events


@pytest.fixture
def registry() -> Registry:
    return Registry()  # not the global one: other tests list the registered projections


@pytest.fixture
def wb(tmp_path: Path, registry: Registry) -> Iterable[Workbench]:
    target = lake.Lake(tmp_path / "lake").create()
    events = [e for o in range(1, 6) for e in order_events(o, customer=o % 2, items=1 + o % 2)]
    lake.ingest(target, [write_ndjson(tmp_path / "in.ndjson", events)], stream="orders")
    config = Config(lake_uri=target.uri, store_uri=f"duckdb://{tmp_path}/views.duckdb", projection_modules=(),
                    reports_dir=str(tmp_path / "reports"))
    with Workbench(config, registry=registry) as bench:
        yield bench


def _raises_zero_division(events: Any) -> Any:
    return 1 / 0


@pytest.mark.parametrize("engine", ["duckdb", "polars", "python"])
def test_a_projection_that_raises_is_an_error_naming_it_and_its_line(wb: Workbench, registry: Registry,
                                                                     engine: str) -> None:
    func = (lambda key, events: _raises_zero_division(events)) if engine == "python" else _raises_zero_division
    projection(name="raises", key="order_id", engine=engine, registry=registry)(func)  # type: ignore[arg-type]
    with pytest.raises(ProjectionError, match=r"projection 'raises' failed: ZeroDivisionError") as failed:
        wb.run("raises", progress="none")
    # a fold's error comes back from another process (5 orders are folded in 2 when there are 2 cores)
    assert f"{__file__}:" in str(failed.value) and "_raises_zero_division" in str(failed.value)
    assert wb.store.runs() == []


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_a_null_key_is_refused_naming_its_column_an_example_and_what_to_do(wb: Workbench, registry: Registry,
                                                                          engine: str) -> None:
    """Orders without a coupon in a view keyed by (currency, coupon): the error said '2 rows with a NULL key
    ("currency", "coupon")', not which column, which row, nor what to do about it."""
    if engine == "duckdb":
        func: Any = lambda: "SELECT currency, coupon, count(*) AS n FROM events GROUP BY ALL"  # noqa: E731
    else:
        func = lambda events: events.group_by("currency", "coupon").agg(pl.len().alias("n"))  # noqa: E731
    projection(name="by_coupon", key=["currency", "coupon"], engine=engine, registry=registry, incremental="full",
               payload={"currency": "VARCHAR", "coupon": "VARCHAR"})(func)
    with pytest.raises(ProjectionError) as refused:
        wb.run("by_coupon", progress="none")
    assert str(refused.value) == (
        "projection 'by_coupon' returned 1 rows with a NULL key: coupon is NULL in 1 (e.g. currency='EUR', "
        "coupon=NULL); a view's key is never NULL, as a patch replaces live's rows by it: give those rows a key "
        "(coalesce(coupon, '(none)')) or leave them out (WHERE coupon IS NOT NULL); nothing was written")
    assert wb.store.runs() == []


def test_a_module_that_fails_while_imported_is_an_error_naming_it(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    module = tmp_path / "mine.py"
    module.write_text("import math\n\nratio = 1 / 0\n")
    with pytest.raises(ProjectionError, match=r"projection module .*mine.py' failed while it was imported: "
                                              r"ZeroDivisionError: division by zero \(at .*mine.py:3"):
        load_modules([str(module)])
    for source, problem in [
        ("import not_installed_anywhere\n", r"failed while it was imported: ModuleNotFoundError: No module named "
                                             r"'not_installed_anywhere' \(at .*mine.py:1 in <module>\); fix the module"),
        ("def f(:\n", r"failed while it was imported: SyntaxError: .* \(at .*mine.py:1\); fix the module"),
        ("open('no-such.csv')\n", r"failed while it was imported: FileNotFoundError: .*no-such.csv"),
    ]:  # the module's own imports and code, not the config: before, "cannot load ... check [projections] modules"
        module.write_text(source)
        with pytest.raises(ProjectionError, match=problem):
            load_modules([str(module)])
    with pytest.raises(ProjectionError, match=r"cannot load projection module 'not_a_module_name': No module named "
                                              r"'not_a_module_name'; check \[projections\] modules in workbench.toml"):
        load_modules(["not_a_module_name"])
    with pytest.raises(ProjectionError, match=r"cannot load projection module '.*missing.py': no such file; check"):
        load_modules([str(tmp_path / "missing.py")])
    module.write_text("ratio = 1 / 0\n")
    config = tmp_path / "workbench.toml"
    config.write_text(f'[lake]\nuri = "lake"\n[store]\nuri = "duckdb://v.duckdb"\n[projections]\nmodules = ["{module}"]\n')
    assert main(["--config", str(config), "--json", "ls"]) == 2
    assert '"kind": "ProjectionError"' in capsys.readouterr().out


def _count_events(key: str, events: Iterable[dict[str, Any]]) -> dict[str, Any]:
    n = sum(1 for _ in events)
    return {"order_id": key, "even": n} if n % 2 == 0 else {"order_id": key, "odd": n}


def test_a_fold_whose_rows_have_different_columns_keeps_them_all(wb: Workbench, registry: Registry) -> None:
    projection(name="counts", key="order_id", engine="python", registry=registry)(_count_events)
    wb.run("counts", progress="none")
    view = wb.view("counts", "shadow").sort("order_id")
    assert view.columns == ["order_id", "odd", "even"]  # order 1 has 5 events: odd comes first
    assert view["odd"].to_list() == [5, None, 5, None, 5] and view["even"].to_list() == [None, 4, None, 4, None]


def _cased_fold(partition_key: str, events: Any) -> dict[str, Any]:
    return {"order_id": partition_key, "Amount": 1, "amount": 2}


def _cased_frame(events: Any) -> Any:
    import polars as pl

    return events.group_by(pl.col("partition_key").alias("order_id")).agg(Amount=pl.lit(1), amount=pl.lit(2))


@pytest.mark.parametrize(("engine", "func"), [("python", _cased_fold), ("polars", _cased_frame)])
def test_columns_that_differ_only_by_case_are_refused(wb: Workbench, registry: Registry, engine: str, func: Any) -> None:
    """Rows from payload dicts whose producers spelled a field two ways: DuckDB's column names ignore case,
    so a fold's view got Amount and Amount_1 both holding Amount's values (amount's silently lost) and a
    Polars one an unasked-for amount_1."""
    projection(name="cased", key="order_id", engine=engine, registry=registry)(func)
    with pytest.raises(ProjectionError, match=r"projection 'cased' returned columns \['Amount', 'amount'\] that differ "
                                              "only by case"):
        wb.run("cased", progress="none")


@pytest.mark.parametrize("returned", ["text", ("o", 1), [{"order_id": "o"}, "text"]])
def test_a_fold_that_returns_something_else_than_rows_says_so(wb: Workbench, registry: Registry, returned: Any) -> None:
    projection(name="wrong", key="order_id", engine="python", registry=registry)(lambda key, events: returned)
    # a full run folds bucket by bucket: the key named is the first of its bucket, not of the lake
    with pytest.raises(ProjectionError, match=r"the fold returned (str|tuple) for partition key 'o-\d{7}'; a fold "
                                              r"returns a dict \(one row\), a list of dicts or None"):
        wb.run("wrong", progress="none")


@pytest.mark.parametrize(("value", "problem"), [
    (2**63 + 5, "Python int too large to convert to C long"), ("x", "Could not convert 'x' with type str"),
])
def test_a_fold_column_whose_values_no_one_type_holds_is_named(wb: Workbench, registry: Registry, value: Any,
                                                              problem: str) -> None:
    """A fold returning an int past 64 bits (or 1 for one key, 'x' for another) failed with pyarrow's
    "OverflowError: Python int too large to convert to C long", naming neither the column nor what to do."""
    projection(name="wide", key="order_id", engine="python", registry=registry)(
        lambda key, events: {"order_id": key, "big": value if key == "o-0000002" else 1})
    with pytest.raises(ProjectionError, match=rf"projection 'wide' failed: TypeError: the fold's column 'big' holds "
                                              rf"values no one type holds \({problem}.*\): return one kind of value per "
                                              r"column, and a whole number past 64 bits as a decimal.Decimal"):
        wb.run("wide", progress="none")
    assert wb.store.runs() == []


def _paid(key: str, events: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    paid = sum(e["amount"] for e in events if e["event_type"] == "PaymentAuthorized")
    return {"order_id": key, "paid": paid}


def test_a_fold_gets_its_declared_output_types_and_catches_up_with_nothing_new(wb: Workbench,
                                                                              registry: Registry) -> None:
    projection(name="paid", key="order_id", engine="python", payload={"amount": "DECIMAL(18,2)"},
               output={"order_id": "VARCHAR", "paid": "DECIMAL(18,2)"}, registry=registry)(_paid)
    wb.run("paid", progress="none")
    wb.cutover("paid", force=True)
    patch = wb.run("paid", keys=["o-0000001"], progress="none")  # small values: Arrow infers DECIMAL(3,2)
    assert patch.record.rows_written == 1
    described = dict(wb.store.compute().sql("DESCRIBE paid__shadow").fetchall()[i][:2] for i in range(2))
    assert described == {"order_id": "VARCHAR", "paid": "DECIMAL(18,2)"}
    caught_up = wb.run("paid", progress="none")  # nothing new in the lake: an empty patch, not an error
    assert caught_up.plan.mode == "incremental" and caught_up.record.rows_written == 0
    wb.cutover("paid", force=True)
    assert wb.store.count("paid") == 5


def test_a_fold_without_rows_or_declared_output_says_to_declare_it(wb: Workbench, registry: Registry) -> None:
    projection(name="nothing", key="order_id", engine="python", registry=registry)(lambda key, events: None)
    with pytest.raises(ProjectionError, match=r"the fold returned no rows, so the view's columns are unknown; "
                                              r"declare them with output="):
        wb.run("nothing", progress="none")


PER_CUSTOMER = "SELECT customer_id, count(*) AS orders FROM events GROUP BY ALL"


@pytest.mark.parametrize("run", ["incremental", "keys", "buckets"])
def test_by_key_with_a_first_key_column_that_is_not_the_partition_key_is_refused(
        tmp_path: Path, wb: Workbench, registry: Registry, run: str) -> None:
    # by_key is the default: an analyst keying a view by customer gets it without asking
    projection(name="per_customer", key="customer_id", consumes=["OrderPlaced"], payload={"customer_id": "VARCHAR"},
               registry=registry)(lambda: PER_CUSTOMER)
    if run == "buckets":
        runner = lambda: wb.run("per_customer", full=True, buckets=True, progress="none")  # noqa: E731
    else:
        wb.run("per_customer", progress="none")
        wb.cutover("per_customer", force=True)
        more = [e for o in range(6, 8) for e in order_events(o, customer=o % 2)]
        lake.ingest(wb.lake, [write_ndjson(tmp_path / "more.ndjson", more)], stream="orders")
        options: dict[str, Any] = {"keys": ["o-0000006"]} if run == "keys" else {}
        runner = lambda: wb.run("per_customer", progress="none", **options)  # noqa: E731
    with pytest.raises(ProjectionError, match=r"projection 'per_customer' is by_key, .* its first key column "
                                              r"'customer_id' holds values that are not the partition keys"):
        runner()
    assert run == "buckets" or wb.store.count("per_customer") == 2  # live untouched; nothing published


def test_a_plan_is_refused_once_live_moved_or_the_code_changed(tmp_path: Path, wb: Workbench,
                                                               registry: Registry) -> None:
    def define(func: Any) -> None:
        projection(name="per_customer", key="customer_id", incremental="merge", merge={"orders": "sum"},
                   consumes=["OrderPlaced"], payload={"customer_id": "VARCHAR"}, registry=registry)(func)

    define(lambda: PER_CUSTOMER)
    wb.run("per_customer", progress="none")
    wb.cutover("per_customer", force=True)
    more = [e for o in range(6, 9) for e in order_events(o, customer=o % 2)]
    lake.ingest(wb.lake, [write_ndjson(tmp_path / "more.ndjson", more)], stream="orders")
    plan = wb.plan("per_customer")
    assert plan.mode == "incremental" and plan.method == "merge"
    wb.execute(plan, "none")
    wb.cutover("per_customer", force=True)
    assert wb.view("per_customer")["orders"].sum() == 8
    with pytest.raises(PlanOutdated, match=r"live per_customer moved since this incremental plan was made "
                                           r"\(from lake_version 1 to 2\); make a new plan"):
        wb.execute(plan, "none")  # the notebook cell run again: the 3 new orders would be added twice
    assert wb.view("per_customer")["orders"].sum() == 8
    full = wb.plan("per_customer", full=True)
    define(lambda: PER_CUSTOMER + " HAVING count(*) > 0")  # the cell edited after the plan was shown
    with pytest.raises(PlanOutdated, match=r"projection per_customer changed since this plan was made"):
        wb.execute(full, "none")


MODULE = '''
from rebuild.projection import Registry, projection

OWN = Registry()
SQL = "SELECT partition_key AS order_id, count(*) AS n FROM events GROUP BY ALL"
CONSUMES = ["OrderPlaced"]
OUTPUT = {"order_id": "VARCHAR", "n": "BIGINT"}


def where() -> str:
    return "WHERE true"


@projection(name="counts", key="order_id", consumes=CONSUMES, output=OUTPUT, registry=OWN)
def counts() -> str:
    return SQL.replace("GROUP BY", where() + " GROUP BY")
'''


RETURNED = '''
from rebuild.projection import Registry, projection

OWN = Registry()
SQL = "SELECT partition_key AS order_id, count(*) AS n FROM events GROUP BY ALL"


@projection(name="counts", key="order_id", registry=OWN)
def counts() -> str:
    return SQL


@projection(name="inline", key="order_id", registry=OWN)
def inline() -> str:
    return "SELECT partition_key AS order_id, count(*) AS n FROM events GROUP BY ALL"
'''
SQL_REFORMATTED = '"""\n    select partition_key AS order_id,  -- the order\n           count(*) AS n\n    from events  group by all\n"""'


def _fingerprint(folder: Path, name: str, source: str, view: str = "counts") -> str:
    path = folder / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"own_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return str(module.OWN.get(view).fingerprint)


@pytest.mark.parametrize(("module", "view", "edit"), [
    (MODULE, "counts", ('count(*) AS n', 'count(*) * 100 AS n')), (MODULE, "counts", ('"WHERE true"', '"WHERE false"')),
    (MODULE, "counts", ('"n": "BIGINT"', '"n": "HUGEINT"')),  # output types in a constant
    (MODULE, "counts", ('"SELECT partition_key AS order_id, count(*) AS n FROM events GROUP BY ALL"', SQL_REFORMATTED)),
    (RETURNED, "counts", ('count(*) AS n', 'count(*) + 1 AS n  -- one more')),
    (RETURNED, "inline", ('count(*) AS n FROM', 'count(*) AS n /* the same? no: */ FROM events UNION ALL SELECT 1, 1 FROM')),
])  # the SQL MODULE edits with .replace counts as written: its "group by" no longer matches "GROUP BY"
def test_editing_the_sql_constant_or_a_helper_a_projection_uses_changes_its_fingerprint(
        tmp_path: Path, module: str, view: str, edit: tuple[str, str]) -> None:
    before = _fingerprint(tmp_path, "before", module, view)
    assert _fingerprint(tmp_path, "again", module, view) == before  # the same code: the same fingerprint
    assert _fingerprint(tmp_path, "after", module.replace(*edit), view) != before  # so the next run is full


@pytest.mark.parametrize(("module", "view", "edit"), [
    (MODULE, "counts", ("def counts() -> str:\n", 'def counts() -> str:\n    """Counts."""\n\n    # where() filters\n')),
    (MODULE, "counts", ("def where() -> str:\n", "def where() -> str:  # none yet\n\n")),
    (MODULE, "counts", ("consumes=CONSUMES, output=OUTPUT, registry=OWN)", "\n    consumes=CONSUMES,  # placed only\n"
                                                                          "    output=OUTPUT,\n    registry=OWN,\n)")),
    (RETURNED, "counts", ('"SELECT partition_key AS order_id, count(*) AS n FROM events GROUP BY ALL"', SQL_REFORMATTED)),
    (RETURNED, "inline", ('"SELECT partition_key AS order_id, count(*) AS n FROM events GROUP BY ALL"', SQL_REFORMATTED)),
])
def test_comments_docstrings_and_formatting_do_not_change_the_fingerprint(tmp_path: Path, module: str, view: str,
                                                                          edit: tuple[str, str]) -> None:
    """Every edit of the text made the next run full: a comment, a docstring, the SQL laid out on lines."""
    assert module.replace(*edit) != module
    assert _fingerprint(tmp_path, "after", module.replace(*edit), view) == _fingerprint(tmp_path, "before", module, view)


ORDERED = ('consumes=CONSUMES, output', 'consumes=["OrderPlaced", "OrderShipped"], streams=("orders", "payments"), output')
LISTED = MODULE.replace(*ORDERED)
CONSTANT = MODULE.replace('CONSUMES = ["OrderPlaced"]', 'CONSUMES = ["OrderPlaced", "OrderShipped"]')


@pytest.mark.parametrize(("module", "edit"), [
    (LISTED, ('"OrderPlaced", "OrderShipped"', '"OrderShipped", "OrderPlaced"')),
    (LISTED, ('("orders", "payments")', '("payments", "orders")')),
    (LISTED, ('"OrderShipped"]', '"OrderShipped", "OrderPlaced"]')),  # named twice
    (LISTED, ('"payments")', '"payments", "orders")')),
    (CONSTANT, ('"OrderPlaced", "OrderShipped"]', '"OrderShipped", "OrderPlaced", "OrderShipped"]')),
])
def test_the_order_of_consumes_and_streams_does_not_change_the_fingerprint(tmp_path: Path, module: str,
                                                                            edit: tuple[str, str]) -> None:
    """The lake is filtered by them as by sets: listing them in another order, or a name twice, made the next
    run a full rebuild for nothing. Another set still changes it."""
    assert module.replace(*edit) != module
    before = _fingerprint(tmp_path, "before", module)
    assert _fingerprint(tmp_path, "after", module.replace(*edit)) == before
    assert _fingerprint(tmp_path, "more", module.replace('"OrderShipped"', '"OrderCancelled"')) != before


def test_consumes_given_as_a_set_has_one_fingerprint_in_every_process(tmp_path: Path) -> None:
    """A set of event types is iterated in another order by each process (Python salts the hash of text):
    the fingerprint of ``consumes={...}`` differed from run to run, so every run of the view was full."""
    types = '{"OrderPlaced", "OrderShipped", "PaymentAuthorized", "OrderCancelled", "RefundIssued"}'
    (tmp_path / "own_set.py").write_text(CONSTANT.replace('["OrderPlaced", "OrderShipped"]', types))
    script = "import own_set; print(own_set.OWN.get('counts').fingerprint)"
    path = os.pathsep.join([str(Path(__file__).parents[2]), str(tmp_path)])
    fingerprints = {subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                                   env={**os.environ, "PYTHONPATH": path, "PYTHONHASHSEED": str(seed)}).stdout
                    for seed in range(1, 5)}
    assert len(fingerprints) == 1, fingerprints


def test_listing_consumes_and_streams_sorted_keeps_the_fingerprint_views_were_built_with(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sorting the lists for the fingerprint changes nothing where they were sorted already: such views stay
    incremental after the upgrade (the fingerprint as it was is the one without the sorting)."""
    module = LISTED
    fingerprints = [_fingerprint(tmp_path, "sorted", module)]
    unsorted = module.replace('("orders", "payments")', '("payments", "orders")')
    fingerprints.append(_fingerprint(tmp_path, "unsorted", unsorted))
    with monkeypatch.context() as before:  # the workbench before: no sorting, in the source or in the metadata
        before.setattr(fingerprint, "_order_free", lambda decorators: None)
        before.setattr(importlib.import_module("rebuild.projection"), "_sorted_once", lambda names: names)
        fingerprint._logic.cache_clear()
        assert _fingerprint(tmp_path, "sorted_before", module) == fingerprints[0]
        assert _fingerprint(tmp_path, "unsorted_before", unsorted) != fingerprints[1]  # earlier_fingerprints names it
    fingerprint._logic.cache_clear()


def test_a_view_of_unsorted_consumes_built_before_the_upgrade_is_caught_up_not_rebuilt(
        wb: Workbench, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its checkpoint holds the fingerprint of the consumes and streams lists as listed: the first run after
    the upgrade that sorts them was a full rebuild (hours, for a big view), its plan saying the code changed."""
    p = projection(name="placed", key="order_id", consumes=["OrderShipped", "OrderPlaced"], streams=["orders"],
                   registry=registry)(_placed)
    with monkeypatch.context() as before:  # the workbench before: no sorting, in the source or in the metadata
        before.setattr(fingerprint, "_order_free", lambda decorators: None)
        before.setattr(importlib.import_module("rebuild.projection"), "_sorted_once", lambda names: names)
        fingerprint._logic.cache_clear()
        wb.run("placed", progress="none")
        wb.cutover("placed", force=True)
    fingerprint._logic.cache_clear()
    assert wb.store.checkpoint("placed", "live").fingerprint not in (p.fingerprint, p.legacy_fingerprint)
    assert wb.plan("placed").mode == "incremental" and not wb.ls()[0].stale_code
    with monkeypatch.context() as edited:  # other code is still rebuilt in full
        edited.setattr(wb, "projection", lambda name: replace(p, func=lambda: _placed().replace("*", "placed")))
        assert wb.plan("placed").reason == "the projection's code changed since live was built, beyond comments and formatting"
    wb.run("placed", keys=["o-0000001"], progress="none")
    wb.cutover("placed", force=True)
    assert wb.store.checkpoint("placed", "live").fingerprint == p.fingerprint


def test_a_view_built_before_the_fingerprint_left_comments_out_is_caught_up_not_rebuilt(
        wb: Workbench, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its checkpoint holds the fingerprint of the code's text: the first night after the upgrade
    would have rebuilt every view in full, saying its code changed."""
    p = projection(name="placed", key="order_id", registry=registry)(_placed)
    with monkeypatch.context() as old:  # the workbench before: the fingerprint of the text as written
        old.setattr(Projection, "fingerprint", Projection.legacy_fingerprint)
        wb.run("placed", progress="none")
        wb.cutover("placed", force=True)
    assert wb.store.checkpoint("placed", "live").fingerprint == p.legacy_fingerprint != p.fingerprint
    assert wb.plan("placed").mode == "incremental" and not wb.ls()[0].stale_code
    wb.run("placed", keys=["o-0000001"], progress="none")  # a catch-up or correction of the same code's
    wb.cutover("placed", force=True)
    assert wb.store.checkpoint("placed", "live").fingerprint == p.fingerprint  # a comment edit stays incremental
    monkeypatch.setattr(wb, "projection", lambda name: replace(p, version=2))
    assert wb.plan("placed").reason == "the projection's version changed since live was built, from v1"
    monkeypatch.setattr(wb, "projection", lambda name: replace(p, func=lambda: _placed().replace("*", "placed")))
    assert wb.plan("placed").reason == "the projection's code changed since live was built, beyond comments and formatting"


def test_consumes_and_streams_may_name_one_event_type_or_stream_as_text(wb: Workbench, registry: Registry) -> None:
    p = projection(name="placed", key="order_id", consumes="OrderPlaced", streams="orders", registry=registry)(
        lambda: "SELECT partition_key AS order_id, count(*) AS n FROM events GROUP BY ALL")
    assert p.consumes == ("OrderPlaced",) and p.streams == ("orders",)  # not ('O', 'r', 'd', ...): no events
    assert wb.run("placed", progress="none").record.rows_written == 5


@pytest.mark.parametrize(("options", "problem"), [
    ({"version": "2"}, "version must be an integer, not '2'"),  # "2" != 2: every run would be full
    ({"incremental": "by_window", "window": "k"}, r"window must be a Window\(column, size\), not 'k'"),
    ({"incremental": "by_window", "window": Window("k", "1 parsec")}, "window size '1 parsec' is not a positive interval"),
    ({"payload": {"amount": "MONEY"}}, r"payload types \{'amount': 'MONEY'\} are not DuckDB types"),
    ({"output": {"k": "VARCHAR) AS k --"}}, "output types .* are not DuckDB types"),
    ({"consumes": [1, "OrderPlaced"]}, r"consumes must name event types as text, not \[1, 'OrderPlaced'\]"),
    ({"streams": ["orders", ""]}, r"streams must name streams as text, not \['orders', ''\]"),
    # DuckDB's column names ignore case: "Sequence" read the envelope's sequence, silently, and
    # "Amount" next to "amount" failed every run (and lake compact) with a traceback
    ({"payload": {"Sequence": "BIGINT"}}, r"payload fields \['Sequence'\] have the name of envelope columns"),
    ({"payload": {"Amount": "BIGINT", "amount": "BIGINT"}}, r"payload fields \['Amount', 'amount'\] differ only by case"),
    # typos `rebuild check` refused only after the whole run
    ({"thresholds": {"max_changed_fractoin": 0.01}}, r"unknown thresholds \['max_changed_fractoin'\]; known: \["),
    ({"thresholds": {"expectations": "warning"}}, "threshold expectations must be 'fail' or 'warn', not 'warning'"),
    ({"expectations": {"not_nul": ["k"]}}, r"unknown expectation kinds \['not_nul'\]; known: \['not_null', 'between', 'in_set'\]"),
    # a list where a dict goes failed with Python's "dictionary update sequence element #0 has length 8"
    ({"expectations": ["not_null"]}, r"expectations must be a dict \(name: value\), not list \['not_null'\]"),
    ({"payload": ["amount"]}, r"payload must be a dict \(name: value\), not list"),
])
def test_a_declaration_that_cannot_work_is_refused_when_it_is_registered(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(ProjectionError, match=f"projection 'wrong': {problem}"):
        projection(name="wrong", key="k", registry=Registry(), **options)(lambda: "SELECT 'a' AS k")


def test_the_threshold_and_expectation_names_a_projection_may_use_are_those_checks_reads() -> None:
    """rebuild.projection names them so that defining a projection needs no import of checks (and
    Great Expectations): they must not drift apart."""
    from checks.expect import KINDS
    from checks.verdict import DEFAULTS
    from rebuild.projection import EXPECTATION_KINDS, THRESHOLDS

    assert set(THRESHOLDS) == set(DEFAULTS) and set(EXPECTATION_KINDS) == set(KINDS)


def test_output_types_are_compared_as_duckdb_spells_them(wb: Workbench, registry: Registry) -> None:
    projection(name="typed", key="order_id", output={"order_id": "TEXT", "n": "INT8", "at": "TIMESTAMPTZ",
                                                     "paid": "decimal(18, 2)"}, registry=registry)(
        lambda: "SELECT partition_key AS order_id, count(*) AS n, max(event_time) AS at, "
                "CAST(0 AS DECIMAL(18,2)) AS paid FROM events GROUP BY ALL")
    assert wb.run("typed", progress="none").record.rows_written == 5


@pytest.mark.parametrize("strategy", ["by_window", "merge", "full"])
def test_a_key_column_missing_from_a_partial_run_is_the_same_clear_error(wb: Workbench, registry: Registry,
                                                                         strategy: str) -> None:
    extra: dict[str, Any] = {"by_window": {"window": Window("day", "1 day")}, "merge": {"merge": {"n": "sum"}}}.get(strategy, {})
    projection(name="misnamed", key="day", incremental=strategy, registry=registry, **extra)(
        lambda: "SELECT CAST(time_bucket(INTERVAL 1 DAY, event_time) AS DATE) AS d, count(*) AS n FROM events GROUP BY ALL")
    with pytest.raises(ProjectionError, match=r"projection 'misnamed' returned no key column \['day'\] "
                                              r"\(it returned \['d', 'n'\]\)"):
        wb.run("misnamed", since="2026-09-01", until="2026-09-02", progress="none")


def test_notebook_run_options_that_would_be_ignored_or_widen_the_run_are_refused(wb: Workbench,
                                                                                 registry: Registry) -> None:
    projection(name="counts", key="order_id", registry=registry)(
        lambda: "SELECT partition_key AS order_id, count(*) AS n FROM events GROUP BY ALL")
    with pytest.raises(ConfigError, match=r"keys=\[\] names no partition key: nothing to correct"):
        wb.run("counts", keys=[], progress="none")  # a query that found no keys: not a run of the whole view
    with pytest.raises(ConfigError, match=r"give a RunOptions or keyword arguments \(keys\), not both"):
        wb.plan("counts", RunOptions(), keys=["o-0000001"])
    with pytest.raises(ConfigError, match="options must be a RunOptions, not dict"):
        wb.plan("counts", {"keys": ["o-0000001"]})  # type: ignore[arg-type]
    assert wb.plan("counts", keys=None).mode == "full"
    assert wb.plan("counts", keys=iter(["o-0000001"])).keys == ("o-0000001",)
    assert wb.store.runs() == []


def test_keys_given_as_a_check_reports_differing_keys_are_refused_not_a_patch_of_nothing(
        wb: Workbench, registry: Registry) -> None:
    """keys=report.diff.differing_keys (dicts of view key columns) became keys "{'order_id': 'o-...'}": a patch
    of 0 rows whose check passed ('identical') and whose cutover went through without --force."""
    projection(name="counts", key="order_id", registry=registry)(
        lambda: "SELECT partition_key AS order_id, count(*) AS n FROM events GROUP BY ALL")
    differing = ({"order_id": "o-0000001"}, {"order_id": "o-0000002"})
    with pytest.raises(ConfigError, match=r"keys are partition keys as text, not dict: \{'order_id': 'o-0000001'\}; "
                                          r"from a check report's differing keys: keys=\[k\['order_id'\] for k in"):
        wb.run("counts", keys=differing, progress="none")
    with pytest.raises(ConfigError, match="not list"):
        wb.plan("counts", keys=[["o-0000001"]])
    assert wb.plan("counts", keys=[k["order_id"] for k in differing]).keys == ("o-0000001", "o-0000002")
    assert wb.store.runs() == []


def test_a_merge_sum_of_a_text_column_is_a_clear_error(wb: Workbench, registry: Registry) -> None:
    """At the full run: it used to show only on the first catch-up, in the night's job."""
    projection(name="channels", key="order_id", incremental="merge", merge={"channel": "sum"},
               payload={"channel": "VARCHAR"}, registry=registry)(
        lambda: "SELECT partition_key AS order_id, any_value(channel) AS channel FROM events GROUP BY ALL")
    with pytest.raises(ProjectionError, match=r"projection 'channels': merge 'sum' needs number columns; "
                                              r"\{'channel': 'VARCHAR'\} are not"):
        wb.run("channels", progress="none")


def test_a_projection_defined_twice_is_an_error_naming_both_places(tmp_path: Path) -> None:
    """A module file of ours defining order_summary next to rebuild.examples named the file's made-up
    module name (workbench_projections_3cbcb972.order_summary), not the file."""
    module = tmp_path / "mine.py"
    module.write_text("from rebuild import projection\n\n\n@projection(name='order_summary', key='order_id')\n"
                      "def order_summary():\n    return 'SELECT 1'\n")
    with pytest.raises(ProjectionError, match=r"projection 'order_summary' is defined twice \(rebuild.examples.order_summary "
                                              rf"at .*examples.py:\d+ and order_summary at {re.escape(str(module))}:4\); "
                                              "rename one of them"):
        load_modules(["rebuild.examples", str(module)])


def test_notebook_argument_mistakes_are_errors_that_say_what_is_expected(wb: Workbench, registry: Registry) -> None:
    projection(name="counts", key="order_id", registry=registry)(
        lambda: "SELECT partition_key AS order_id, count(*) AS n FROM events GROUP BY ALL")
    with pytest.raises(ConfigError, match=r"full='false': give True or False"):
        wb.plan("counts", full="false")  # truthy: it would have run in full
    with pytest.raises(ConfigError, match=r"--progress 'bars' is not one of \['auto', 'bar', 'log', 'none'\]"):
        wb.run("counts", progress="bars")
    with pytest.raises(ConfigError, match=r"role 'current' is not one of \['live', 'shadow', 'previous'\]"):
        wb.view("counts", "current")
    with pytest.raises(StoreError, match=r"counts has no shadow view \(counts__shadow\); it exists after `rebuild run counts`"):
        wb.view("counts", "shadow")


@pytest.mark.parametrize("buckets", [False, True])
def test_a_payload_type_the_values_do_not_have_is_refused_not_read_as_null(
        wb: Workbench, registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture, buckets: bool) -> None:
    """from_json decodes a value that does not convert to NULL: customer ids 'c-000001' declared
    BIGINT made every customer NULL, silently."""
    projection(name="by_customer", key="order_id", payload={"customer_id": "BIGINT"}, registry=registry)(
        lambda: "SELECT partition_key AS order_id, any_value(customer_id) AS customer_id FROM events GROUP BY ALL")
    with pytest.raises(ProjectionError, match=r"payload field 'customer_id' is declared BIGINT, but none of its 2\d "
                                              r"values converts to it \(e.g. \"c-00000\d\" in event ev-o-\d+-\d\)"):
        wb.run("by_customer", progress="none", buckets=buckets)  # bucket 0 of this small lake holds no event
    assert not wb.store.exists("by_customer__shadow")
    # some values that do not convert (a producer's bug, not the declaration's) are logged; the run goes on
    bad = {**order_events(9)[3], "event_id": "ev-bad", "payload": {"amount": "lots"}}
    lake.ingest(wb.lake, [write_ndjson(tmp_path / "bad.ndjson", [bad])], stream="orders")
    projection(name="paid", key="order_id", incremental="full", payload={"amount": "DECIMAL(18,2)"},
               registry=registry)(lambda: "SELECT partition_key AS order_id, sum(amount) AS paid FROM events GROUP BY ALL")
    assert wb.run("paid", progress="none").record.rows_written == 6
    assert "1 of 6 values of payload field 'amount' do not convert to DECIMAL(18,2) " \
           "and read as NULL (e.g. \"lots\" in event ev-bad)" in caplog.text


def _paid_sql() -> str:
    return "SELECT partition_key AS order_id, sum(amount) AS paid FROM events GROUP BY ALL"


def _paid_polars(events: pl.LazyFrame) -> pl.LazyFrame:
    return events.group_by(order_id=pl.col("partition_key")).agg(paid=pl.col("amount").sum())


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_a_field_of_other_json_types_in_other_events_is_decoded_or_named_with_its_event(
        wb: Workbench, registry: Registry, tmp_path: Path, caplog: pytest.LogCaptureFixture, engine: str) -> None:
    """amount as a number, as text ("12.50") and as an object: the first two decode; the object reads as NULL,
    and the run's warning names it and the event holding it, for a person to find it (it named the value only)."""
    payments = [{**order_events(o)[3], "event_id": f"ev-{kind}", "partition_key": f"o-{kind}",
                 "payload": {"amount": amount}}
                for o, (kind, amount) in enumerate([("number", 12.5), ("text", "12.50"), ("object", {"value": 12.5})])]
    lake.ingest(wb.lake, [write_ndjson(tmp_path / "mixed.ndjson", payments)], stream="orders")
    projection(name="paid", key="order_id", engine=engine, consumes="PaymentAuthorized",  # type: ignore[arg-type]
               payload={"amount": "DECIMAL(18,2)"}, registry=registry)(_paid_sql if engine == "duckdb" else _paid_polars)
    wb.run("paid", progress="none")
    paid = dict(wb.view("paid", "shadow").select("order_id", "paid").iter_rows())
    nothing = None if engine == "duckdb" else Decimal(0)  # Polars sums no value to 0
    assert [paid[f"o-{kind}"] for kind in ("number", "text", "object")] == [Decimal("12.50"), Decimal("12.50"), nothing]
    assert "1 of 8 values of payload field 'amount' do not convert to DECIMAL(18,2) and read " \
           "as NULL (e.g. {\"value\":12.5} in event ev-object)" in caplog.text


@pytest.mark.parametrize("declared", ["ammount", "Amount"])
def test_a_misspelt_payload_field_is_refused_not_read_as_null(wb: Workbench, registry: Registry, declared: str) -> None:
    """payload={"ammount": ...} (or "Amount": JSON names are case-sensitive) matched no payload's field:
    every paid was NULL and the run, the cutover and a check without live passed in silence."""
    projection(name="paid", key="order_id", payload={declared: "DECIMAL(18,2)"}, registry=registry)(
        lambda: f"SELECT partition_key AS order_id, sum({declared}) AS paid FROM events GROUP BY ALL")
    with pytest.raises(ProjectionError, match=rf"payload field '{declared}' is in none of the first 10,000 events' "
                                              r"payloads, which have 'amount', so it would read as NULL everywhere"):
        wb.run("paid", progress="none")
    assert not wb.store.exists("paid__shadow")


def test_a_payload_field_named_like_a_json_wildcard_is_read(tmp_path: Path, registry: Registry) -> None:
    """The first events' payload fields are looked at through their JSON paths, and DuckDB reads
    ``$."*"`` as every member: a field named ``*`` failed the run with a BinderException (exit 70)."""
    target = lake.Lake(tmp_path / "lake").create()
    events = [{"event_id": f"e{i}", "partition_key": f"k{i % 2}", "sequence": i, "event_type": "T",
               "event_time": "2026-01-01T00:00:00Z", "payload": {"*": i, "a.b": "x", "a": {"b": 1}}} for i in range(4)]
    lake.ingest(target, [write_ndjson(tmp_path / "in.ndjson", events)], stream="s")
    projection(name="stars", key="k", payload={"*": "BIGINT", "a.b": "BIGINT"}, registry=registry)(
        lambda: 'SELECT partition_key AS k, sum("*") AS stars FROM events GROUP BY ALL')
    config = Config(lake_uri=target.uri, store_uri=f"duckdb://{tmp_path}/v.duckdb", projection_modules=())
    with Workbench(config, registry=registry) as wb:
        with pytest.raises(ProjectionError, match=r"payload field 'a.b' is declared BIGINT, but none of its 4 values"):
            wb.run("stars", progress="none")  # "x" is no number: the field a.b, not a's member b (1)
        projection(name="stars", key="k", payload={"*": "BIGINT"}, registry=registry)(
            lambda: 'SELECT partition_key AS k, sum("*") AS stars FROM events GROUP BY ALL')
        wb.run("stars", progress="none")
        assert sorted(wb.view("stars", "shadow").rows()) == [("k0", 2), ("k1", 4)]


@pytest.mark.parametrize(("wrong_case", "refused", "near", "logged"), [
    ({"streams": "Orders"}, "reads stream 'Orders', which the lake does not hold, while it holds 'orders': stream "
     "names are case-sensitive", {"streams": ["orders", "order"]}, "counted reads stream 'order', which the lake does "
     "not hold at lake_version 1 (its streams: 'orders'): no event of it is read; did you mean 'orders'?"),
    ({"consumes": ["orderplaced", "ItemAdded"]}, "consumes 'orderplaced', which the lake does not hold, while it holds "
     "'OrderPlaced': event types are case-sensitive", {"consumes": ["OrderPlaced", "PaymentAuthorised"]},
     "counted consumes 'PaymentAuthorised', which the lake does not hold (no event of it is read): did you mean "
     "'PaymentAuthorized'?"),
])
def test_a_stream_or_event_type_declared_in_another_case_than_the_lake_s_is_refused_not_read_as_empty(
        wb: Workbench, registry: Registry, caplog: pytest.LogCaptureFixture, wrong_case: dict[str, Any], refused: str,
        near: dict[str, Any], logged: str) -> None:
    """streams="Orders" read no event of the lake's stream orders, and consumes=["orderplaced"] none of its
    OrderPlaced: the run, its cutover and a check without live passed with an empty (or wrong) view. A name
    held in another case is refused; one the lake holds in no case (it may not have arrived yet) is logged,
    naming a like one it holds."""
    sql = "SELECT partition_key AS order_id, count(*) AS n FROM events GROUP BY ALL"
    projection(name="counted", key="order_id", registry=registry, **wrong_case)(lambda: sql)
    with pytest.raises(ProjectionError, match=rf"^projection 'counted' {re.escape(refused)}"):
        wb.run("counted", progress="none")
    assert wb.store.runs() == []
    projection(name="counted", key="order_id", registry=registry, **near)(lambda: sql)
    assert wb.run("counted", progress="none").record.rows_written == 5
    wb.plan("counted")  # logged once per lake snapshot: a backfill plans each of its chunks
    assert caplog.text.count(logged) == 1


def test_a_consumed_event_type_only_older_lake_files_hold_is_no_misspelling(
        wb: Workbench, registry: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The plan takes the lake's event types from its newest files; a consumed type missing there while a type
    of that name in another case is held is looked for in every file before the projection is refused."""
    monkeypatch.setattr(plan_module, "TYPE_SAMPLE", 1)
    lake.ingest(wb.lake, [write_ndjson(tmp_path / "new.ndjson", [event(1, key="o-9", type="orderPlaced")])], stream="orders")
    projection(name="counted", key="order_id", consumes="OrderPlaced", registry=registry)(
        lambda: "SELECT partition_key AS order_id, count(*) AS n FROM events GROUP BY ALL")
    assert wb.run("counted", progress="none").record.rows_written == 5


def test_a_payload_field_no_event_has_yet_is_read_as_null(wb: Workbench, registry: Registry) -> None:
    """A field that no payload has (yet), and none of a like name, is no misspelling: it reads as NULL."""
    projection(name="tracked", key="order_id", payload={"tracking_number": "VARCHAR"}, registry=registry)(
        lambda: "SELECT partition_key AS order_id, max(tracking_number) AS tracking FROM events GROUP BY ALL")
    assert wb.run("tracked", progress="none").record.rows_written == 5
    assert wb.view("tracked", "shadow")["tracking"].null_count() == 5


def test_payload_numbers_rounded_to_the_declared_type_are_logged(wb: Workbench, registry: Registry,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """unit_price declared INTEGER read 2.25 as 2 (from_json rounds), silently: every total was off."""
    projection(name="totals", key="order_id", payload={"unit_price": "INTEGER", "quantity": "INTEGER"},
               registry=registry)(
        lambda: "SELECT partition_key AS order_id, sum(quantity * unit_price) AS total FROM events GROUP BY ALL")
    wb.run("totals", progress="none")
    assert re.search(r"8 of 8 values of payload field 'unit_price' are rounded to fit "
                     r"INTEGER \(e.g. (\d)\.25 in event ev-o-\d+-\d reads as \1\)", caplog.text)
    assert "'quantity'" not in caplog.text  # 2 is 2
    caplog.clear()
    projection(name="exact", key="order_id", payload={"unit_price": "DECIMAL(18,2)"}, registry=registry)(
        lambda: "SELECT partition_key AS order_id, sum(unit_price) AS total FROM events GROUP BY ALL")
    wb.run("exact", progress="none")
    assert "rounded" not in caplog.text


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_an_undeclared_payload_field_is_an_error_saying_to_declare_it(wb: Workbench, registry: Registry,
                                                                      engine: str) -> None:
    """A payload field read as a column without payload= failed with DuckDB's "Column "carrier" referenced
    that exists in the SELECT clause - but ..." (or Polars' "unable to find column"), not saying why."""
    sql = "SELECT partition_key AS order_id, max(carrier) AS carrier FROM events GROUP BY ALL"
    func = (lambda: sql) if engine == "duckdb" else (
        lambda events: events.group_by(order_id="partition_key").agg(carrier=pl.col("carrier").max()))
    projection(name="carriers", key="order_id", engine=engine, payload={"currency": "VARCHAR"}, registry=registry)(func)
    with pytest.raises(ProjectionError, match=r"if 'carrier' is a payload field, declare it in payload= "
                                              r"\(\{'carrier': 'VARCHAR'\}, say\), which makes it a column of events; "
                                              r"nothing was written"):
        wb.run("carriers", progress="none")
    projection(name="typo", key="order_id", registry=registry)(  # no hint for another mistake
        lambda: "SELECT partition_key AS order_id, sum(event_type) AS total FROM events GROUP BY ALL")
    with pytest.raises(ProjectionError, match=r"sum\(VARCHAR\)") as failed:
        wb.run("typo", progress="none")
    assert "payload field" not in str(failed.value)


def test_a_merge_sum_of_nothing_stays_null_as_in_a_full_run(tmp_path: Path, wb: Workbench, registry: Registry) -> None:
    """SQL's sum over no values is NULL: catching up with events that add none must not make it 0."""
    projection(name="refunds", key="customer_id", incremental="merge", merge={"events": "sum", "refunded": "sum"},
               payload={"customer_id": "VARCHAR", "amount": "DECIMAL(18,2)"}, registry=registry)(
        lambda: "SELECT customer_id, count(*) AS events, sum(amount) FILTER (WHERE event_type = 'RefundIssued') "
                "AS refunded FROM events GROUP BY ALL")
    wb.run("refunds", progress="none")
    wb.cutover("refunds", force=True)
    lake.ingest(wb.lake, [write_ndjson(tmp_path / "more.ndjson", order_events(6, customer=1))], stream="orders")
    wb.run("refunds", progress="none")
    wb.cutover("refunds", force=True)
    caught_up = wb.view("refunds").sort("customer_id")
    wb.run("refunds", full=True, progress="none")
    assert caught_up["refunded"].to_list() == [None, None]
    assert caught_up.equals(wb.view("refunds", "shadow").sort("customer_id"))


def test_by_window_catches_up_a_window_that_ends_after_the_year_9999(tmp_path: Path, wb: Workbench,
                                                                    registry: Registry) -> None:
    """An event stamped 9999-12-31 (a "never" sentinel) falls in a window ending in the year 10000, which
    Python's datetime cannot hold: the catch-up (and a --since run) failed saying "until '10000-01-01
    00:00:00+00' is not an ISO date or time", an --until nobody gave."""
    projection(name="days", key="day", consumes="OrderPlaced", incremental="by_window", window=Window("day", "1 day"),
               registry=registry)(
        lambda: "SELECT CAST(time_bucket(INTERVAL 1 DAY, event_time) AS DATE) AS day, count(*) AS orders "
                "FROM events GROUP BY ALL")
    wb.run("days", progress="none")
    wb.cutover("days", force=True)
    sentinel = order_events(6, start=datetime(9999, 12, 31, 12, tzinfo=UTC), items=0, ship=False)[:1]
    lake.ingest(wb.lake, [write_ndjson(tmp_path / "never.ndjson", sentinel)], stream="orders")
    assert wb.run("days", progress="none").plan.mode == "incremental"
    assert wb.view("days", "shadow")["day"].to_list() == [date(9999, 12, 31)]
    assert wb.run("days", since="9999-12-31", progress="none").record.rows_written == 1


@pytest.mark.parametrize(("having", "before", "after"), [(">= 6", [], [6]), ("BETWEEN 2 AND 5", [5], [])])
def test_by_window_recomputes_every_window_the_new_events_fall_in(tmp_path: Path, wb: Workbench, registry: Registry,
                                                                  having: str, before: list[int], after: list[int]) -> None:
    """The windows to recompute are those the new events fall in, not those the projection returns a row
    for over the new events alone: with HAVING, one late order gives none. So a day that the late order
    brings into the HAVING got no row (>= 6), and a day it takes out kept its stale live row (2 to 5)."""
    projection(name="days", key="day", consumes="OrderPlaced", incremental="by_window", window=Window("day", "1 day"),
               registry=registry)(
        lambda: "SELECT CAST(time_bucket(INTERVAL 1 DAY, event_time) AS DATE) AS day, count(*) AS orders "
                f"FROM events GROUP BY ALL HAVING count(*) {having}")
    wb.run("days", progress="none")
    wb.cutover("days", force=True)
    assert wb.view("days")["orders"].to_list() == before  # five orders placed that day
    lake.ingest(wb.lake, [write_ndjson(tmp_path / "late.ndjson", order_events(6))], stream="orders")
    assert wb.run("days", progress="none").plan.mode == "incremental"
    wb.cutover("days", force=True)
    assert wb.view("days")["orders"].to_list() == after


@pytest.mark.parametrize(("having", "before", "after"), [(">= 3", ["c-000001"], ["c-000000", "c-000001"]),
                                                       ("= 2", ["c-000000"], [])])
def test_a_keys_run_of_a_full_view_corrects_rows_its_keys_alone_give_none(tmp_path: Path, wb: Workbench, registry: Registry,
                                                                         having: str, before: list[str], after: list[str]) -> None:
    """A keys run of a full (or merge) view used to correct the view keys the projection returned over the
    named keys' events alone. With a HAVING, one new order gives none: a customer it brings into the HAVING
    got no row, and one it takes out kept its stale live row. Now the rows that change when the named keys'
    events are left out are corrected too."""
    projection(name="regulars", key="customer_id", consumes="OrderPlaced", payload={"customer_id": "VARCHAR"}, incremental="full",
               registry=registry)(
        lambda: "SELECT customer_id, count(DISTINCT partition_key) AS orders FROM events GROUP BY ALL "
                f"HAVING count(DISTINCT partition_key) {having}")
    wb.run("regulars", progress="none")
    wb.cutover("regulars", force=True)
    assert wb.view("regulars")["customer_id"].to_list() == before  # c-000001: 3 orders, c-000000: 2
    lake.ingest(wb.lake, [write_ndjson(tmp_path / "new.ndjson", order_events(6, customer=0))], stream="orders")
    wb.run("regulars", keys=["o-0000006"], progress="none")
    wb.cutover("regulars", force=True)
    assert sorted(wb.view("regulars")["customer_id"].to_list()) == after
    wb.run("regulars", full=True, progress="none")
    assert wb.view("regulars").sort("customer_id").equals(wb.view("regulars", "shadow").sort("customer_id"))


def test_a_fold_patch_whose_values_live_cannot_hold_is_refused_not_a_traceback(
        tmp_path: Path, wb: Workbench, registry: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    """Without output=, a fold's types come from its values: live's paid is DECIMAL(4,2) (amounts under 100), a
    patch with a larger amount is DECIMAL(9,2). Before, its cutover died in DuckDB's cast error (exit 1)."""
    projection(name="paid", key="order_id", engine="python", payload={"amount": "DECIMAL(18,2)"},
               registry=registry)(_paid)
    wb.run("paid", progress="none")
    wb.cutover("paid", force=True)
    big = order_events(6)
    big[-2]["payload"]["amount"] = 1234567.89  # the PaymentAuthorized
    lake.ingest(wb.lake, [write_ndjson(tmp_path / "big.ndjson", big)], stream="orders")
    wb.run("paid", progress="none")
    with pytest.raises(StoreError, match=r"the partial shadow of paid does not fit live paid's column types \(.*"
                                         r"1234567.89.*\); nothing was changed\. Declare the column types with output="):
        wb.cutover("paid", force=True)
    assert wb.store.count("paid") == 5 and wb.store.exists("paid__shadow") and not wb.store.exists("paid__previous")
    wb.close()
    config = tmp_path / "workbench.toml"
    config.write_text('[lake]\nuri = "lake"\n[store]\nuri = "duckdb://views.duckdb"\n[projections]\nmodules = []\n')
    assert main(["--config", str(config), "--json", "cutover", "paid", "--force"]) == 2
    assert '"kind": "StoreError"' in capsys.readouterr().out


@pytest.mark.parametrize("strategy", ["by_key", "merge", "by_window"])
def test_a_catch_up_whose_new_payloads_do_not_convert_is_refused_not_read_as_null(
        tmp_path: Path, wb: Workbench, registry: Registry, strategy: str) -> None:
    """A producer changed amount into {"value": ..., "currency": ...}: the full run looked at the old
    events only, and every catch-up read the new amounts as NULL without a word (paid stayed put)."""
    day = "CAST(time_bucket(INTERVAL 1 DAY, event_time) AS DATE)"
    key = {"by_key": "partition_key", "merge": "customer_id", "by_window": day}[strategy]
    projection(name="paid", key="k", incremental=strategy, merge={"paid": "sum"}, window=Window("k", "1 day"),
               consumes="PaymentAuthorized", payload={"customer_id": "VARCHAR", "amount": "DECIMAL(18,2)"},
               registry=registry)(lambda: f"SELECT {key} AS k, sum(amount) AS paid FROM events GROUP BY ALL")
    wb.run("paid", progress="none")
    wb.cutover("paid", force=True)
    changed = order_events(6)
    changed[-2]["payload"]["amount"] = {"value": "7.50", "currency": "EUR"}  # the PaymentAuthorized
    lake.ingest(wb.lake, [write_ndjson(tmp_path / "v2.ndjson", changed)], stream="orders")
    with pytest.raises(ProjectionError, match=r"payload field 'amount' is declared DECIMAL\(18,2\), but none of its 1 "
                                              r"values converts to it \(e.g. \{\"value\":\"7.50\""):
        wb.run("paid", progress="none")
    assert not wb.store.exists("paid__shadow")


def test_a_consumed_event_type_the_lake_does_not_hold_is_named_by_the_check(wb: Workbench, registry: Registry) -> None:
    """consumes="PaymentAuthorised" (a typo) read no payment, and the check without live passed in silence."""
    projection(name="typo_paid", key="order_id", consumes=["OrderPlaced", "PaymentAuthorised"],
               payload={"amount": "DECIMAL(18,2)"}, registry=registry)(
        lambda: "SELECT partition_key AS order_id, coalesce(sum(amount), 0) AS paid FROM events GROUP BY ALL")
    wb.run("typo_paid", progress="none")
    report = wb.check("typo_paid")
    assert report.passed  # a note, not a failure: the type may simply not have happened yet
    assert [n for n in report.notes if "consumes ['PaymentAuthorised'], event types not in the lake (" in n
            and "'PaymentAuthorized'" in n and "check consumes=" in n]



def test_a_merge_op_on_a_column_the_projection_no_longer_returns_fails_the_full_run(wb: Workbench,
                                                                                    registry: Registry) -> None:
    """A renamed column (total -> amount) with merge={"total": "sum"} passed the analyst's full run and
    failed only at the first catch-up, in the night's job."""
    projection(name="spend", key="customer_id", consumes="OrderPlaced", incremental="merge", merge={"total": "sum"},
               payload={"customer_id": "VARCHAR", "total": "DECIMAL(18,2)"}, registry=registry)(
        lambda: "SELECT customer_id, sum(total) AS amount FROM events GROUP BY ALL")
    with pytest.raises(ProjectionError, match=r"merge names columns it does not return: \['total'\] \(it returns "
                                              r"\['customer_id', 'amount'\]\)"):
        wb.run("spend", progress="none")
    assert not wb.store.exists("spend__shadow")


def test_a_merge_column_aggregated_without_a_merge_op_fails_the_full_run(tmp_path: Path, wb: Workbench,
                                                                         registry: Registry) -> None:
    """merge={"paid": "sum"} without "payments": every catch-up gave payments the new events' count(*)
    alone (373 payments became 155), its check did not judge a catch-up's changes, and cutover needed no --force."""
    sql = ("SELECT customer_id, CAST(coalesce(sum(amount), 0) AS DECIMAL(18,2)) AS paid, count(*) AS payments, "
           "arg_max(currency, event_time) AS currency, max(event_time) - min(event_time) AS span "
           "FROM events GROUP BY ALL")
    projection(name="payers", key="customer_id", consumes="PaymentAuthorized", incremental="merge",
               merge={"paid": "sum"}, payload={"customer_id": "VARCHAR", "currency": "VARCHAR", "amount": "DECIMAL(18,2)"},
               registry=registry)(lambda: sql)
    with pytest.raises(ProjectionError, match=r"projection 'payers' is merge, but its columns \{'payments': 'count\(\*\)', "
                                              r"'span': 'max'\} are aggregates of the events without a merge op"):
        wb.run("payers", progress="none")  # the latest currency needs none: the new events' wins
    assert not wb.store.exists("payers__shadow")
    projection(name="payers", key="customer_id", consumes="PaymentAuthorized", incremental="merge",
               merge={"paid": "sum", "payments": "sum"}, payload={"customer_id": "VARCHAR", "amount": "DECIMAL(18,2)"},
               registry=registry)(lambda: "SELECT customer_id, sum(amount) AS paid, count(*) AS payments FROM events GROUP BY ALL")
    wb.run("payers", progress="none")
    wb.cutover("payers", force=True)
    lake.ingest(wb.lake, [write_ndjson(tmp_path / "more.ndjson", order_events(9, customer=1))], stream="orders")
    wb.run("payers", progress="none")
    wb.cutover("payers", force=True)
    assert wb.view("payers").sort("customer_id")["payments"].to_list() == [2, 4]


def test_buckets_with_keys_says_the_run_is_targeted(wb: Workbench, registry: Registry) -> None:
    """It said "keyed is by_key and this run is by_key" after "needs ... a by_key projection"."""
    projection(name="keyed", key="order_id", consumes=["OrderPlaced"], registry=registry)(
        lambda: "SELECT DISTINCT partition_key AS order_id FROM events")
    with pytest.raises(ConfigError, match=r"needs a full run of a by_key projection; keyed is by_key and this "
                                          r"run is targeted: drop --buckets"):
        wb.run("keyed", keys=["o-0000001"], buckets=True, progress="none")


def test_a_projection_without_source_still_changes_its_fingerprint_with_its_code() -> None:
    """Defined by exec() (or piped on stdin) its source cannot be read: the fingerprint fell back to the
    function's name, so editing its code never made the next run full."""
    def defined(body: str) -> str:
        registry, scope = Registry(), {"projection": projection}
        exec(f"def counts():\n    return {body!r}\n", scope)  # noqa: S102 - the case under test
        return projection(name="counts", key="order_id", registry=registry)(scope["counts"]).fingerprint

    sql = "SELECT partition_key AS order_id, count(*) AS n FROM events GROUP BY ALL"
    assert defined(sql) == defined(sql)
    assert defined(sql) != defined(sql.replace("count(*)", "count(*) * 2"))


def _placed() -> str:
    return "SELECT partition_key AS order_id, count(*) AS placed FROM events GROUP BY ALL"


def test_checking_a_view_whose_key_changed_says_how_to_make_it_live(wb: Workbench, registry: Registry,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The key went from one column to two: the check's error said to compare with a view given as --live,
    whose verdict cannot open the cutover, and not that a forced cutover of a full run is the way."""
    p = projection(name="placed", key="order_id", registry=registry)(_placed)
    wb.run("placed", progress="none")
    wb.cutover("placed", force=True)
    keyed = replace(p, key=("order_id", "kind"), func=lambda: _placed().replace("AS placed", "AS placed, 'p' AS kind"))
    monkeypatch.setattr(wb, "projection", lambda name: keyed)
    wb.run("placed", keys=["o-0000001"], progress="none")
    missing = r"^live placed has no key column \['kind'\] \(it has \['order_id', 'placed'\]\): the projection's key "
    with pytest.raises(CheckInputError, match=missing + r".*To change live's key, run `rebuild run placed --full` and "
                                                         r"cut that over with --force \(a patch cannot\)"):
        wb.check("placed")
    wb.run("placed", progress="none")
    with pytest.raises(CheckInputError, match=missing + r".*To make it live, read the shadow \(wb.view\('placed', "
                                                         r"'shadow'\)\) and cut over with `rebuild cutover placed --force`"):
        wb.check("placed")
    wb.cutover("placed", force=True)
    assert wb.view("placed").columns == ["order_id", "placed", "kind"]


def test_ls_names_the_views_of_a_projection_renamed_or_left_out_of_the_config(
        tmp_path: Path, wb: Workbench, registry: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    """A projection renamed, or its module left out of [projections] modules: its live view stays in
    the store, read by whoever read it, and nothing updates it any more; `rebuild ls` listed only the
    configured projections, so the view vanished from every listing."""
    projection(name="orders_lite", key="order_id", consumes="OrderPlaced", registry=registry)(_placed)
    wb.run("orders_lite", progress="none")
    wb.cutover("orders_lite", force=True)
    wb.close()
    renamed = Registry()
    projection(name="order_items", key="order_id", consumes="OrderPlaced", registry=renamed)(_placed)
    with Workbench(wb.config, registry=renamed) as later:
        assert [s.name for s in later.ls()] == ["order_items"]
        assert [(v["name"], v["live_rows"]) for v in later.views_without_projection()] == [("orders_lite", 5)]
    # the CLI's configured projections are the examples: orders_lite is none of them
    assert main(["--lake", wb.config.lake_uri, "--store", wb.config.store_uri, "ls"]) == 0
    out = capsys.readouterr().out
    assert "orders_lite (live: 5 rows)" in out and "nothing updates" in out and "`rebuild drop VIEW`" in out
    at = ["--lake", wb.config.lake_uri, "--store", wb.config.store_uri]
    assert main([*at, "drop", "orders_lite", "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("would drop orders_lite (5 rows) and the checkpoints of orders_lite; its run")
    assert main([*at, "--json", "drop", "order_summary"]) == 2  # configured: its next run would build it again
    assert "remove it from [projections] modules" in json.loads(capsys.readouterr().out)["error"]
    assert main([*at, "--json", "drop", "orders_lite"]) == 0
    assert json.loads(capsys.readouterr().out) == {"view": "orders_lite", "dry_run": False, "tables": {"orders_lite": 5}}
    assert main([*at, "--json", "ls"]) == 0
    assert json.loads(capsys.readouterr().out)["views_without_projection"] == []
    assert main([*at, "runs", "orders_lite"]) == 0 and "full" in capsys.readouterr().out  # its history stays


def test_the_look_at_a_wide_payload_s_fields_costs_about_what_decoding_them_does(wb: Workbench, registry: Registry,
                                                                                tmp_path: Path) -> None:
    """The look at the first 10,000 events' declared fields parsed every payload again for each field's
    five aggregates: a projection declaring 300 fields spent 184 s of its run there (its replay took
    1 s). Here 150 fields: the look took 100-200 times as long as decoding every event, then about 4 times (and it
    counts every event now)."""
    import time

    import duckdb

    from rebuild.decoding import check_decoding
    from rebuild.replay import Selection, events_sql

    fields = [f"f{i:03d}" for i in range(150)]
    events = [{"event_id": f"w{n}", "partition_key": f"k{n % 50}", "sequence": n, "event_type": "Measured",
               "event_time": "2026-09-01T00:00:00+00:00", "payload": {f: n + i for i, f in enumerate(fields)}}
              for n in range(1, 2001)]
    lake.ingest(wb.lake, [write_ndjson(tmp_path / "wide.ndjson", events)], stream="meters")
    wide = projection(name="wide", key="id", streams="meters", payload={f: "BIGINT" for f in fields}, registry=registry)(
        lambda: "SELECT partition_key AS id, " + ", ".join(f"sum({f}) AS {f}" for f in fields) + " FROM events GROUP BY ALL")
    sql, _, _ = events_sql(wb.lake, wb.lake.snapshot(), wide, Selection(lake.EventFilter(streams="meters")))
    con = duckdb.connect()

    def seconds(work: Any) -> float:  # CPU seconds of this process, DuckDB's threads too: the load of a shared
        started = time.process_time()  # machine moved the wall-clock ratio from 3 to 10 (CPU: 3.3 to 4.6)
        work()
        return time.process_time() - started

    decoding = max(seconds(lambda: con.sql(f"SELECT * FROM ({sql})").to_arrow_table()) for _ in range(2))
    assert seconds(lambda: check_decoding(con, wb.lake, wb.lake.snapshot(), wide,
                                          Selection(lake.EventFilter(streams=("meters",))))) < 25 * decoding


def test_the_plan_of_a_lake_of_many_small_files_samples_event_types_from_a_few_files(
        tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lake archived every few minutes holds a few events a file: the plan's sample of the newest
    10,000 events opened 3,300 files of a 2,500-commit lake, each plan and run."""
    target = small_commits(tmp_path)
    monkeypatch.setattr(plan_module, "TYPE_SAMPLE_FILES", 8)
    counted = projection(name="counted", key="order_id", consumes="OrderPlaced", registry=registry)(
        lambda: "SELECT partition_key AS order_id, count(*) AS n FROM events GROUP BY ALL")
    snapshot = target.snapshot()
    con = logging_files()
    assert plan_module._unheld_types(con, counted, snapshot) == []
    newest = sorted(snapshot.files, key=lambda f: f.max_version, reverse=True)
    assert set(files_opened(con)) <= {f.path for f in newest[:8]}


def test_a_polars_view_built_before_its_events_came_in_replay_order_is_rebuilt_in_full_once(
        wb: Workbench, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its events came in the lake's file order, so a last() per key could be any event's: a catch-up after the
    upgrade would have recomputed the keys with new events only, leaving every other row as wrong as it was."""

    def last_type(events: pl.LazyFrame) -> pl.LazyFrame:
        return events.group_by("partition_key").agg(pl.col("event_type").last().alias("status")).rename(
            {"partition_key": "order_id"})

    p = projection(name="last_type", key="order_id", engine="polars", registry=registry)(last_type)
    sql = projection(name="placed", key="order_id", registry=registry)(_placed)
    module, sql_fingerprint = importlib.import_module("rebuild.projection"), sql.fingerprint
    with monkeypatch.context() as before:  # the workbench before: no order in the fingerprint
        before.setattr(module, "POLARS_ORDER", "")
        assert sql.fingerprint == sql_fingerprint  # a SQL projection's is not touched
        for view in ("last_type", "placed"):
            wb.run(view, progress="none")
            wb.cutover(view, force=True)
    assert wb.store.checkpoint("last_type", "live").fingerprint in p.unordered_fingerprints
    stale = {v.name: v.stale_code for v in wb.ls()}
    assert stale == {"last_type": True, "placed": False} and wb.plan("placed").mode == "incremental"
    plan = wb.plan("last_type")
    assert plan.mode == "full" and "before Polars projections got their events in (partition_key, sequence)" in plan.reason
    wb.run("last_type", progress="none")
    wb.cutover("last_type", force=True)
    assert wb.plan("last_type").mode == "incremental" and not any(v.stale_code for v in wb.ls())
    with monkeypatch.context() as rolled_back:  # the version before takes the new one's fingerprint for other code
        rolled_back.setattr(module, "POLARS_ORDER", "")
        assert wb.plan("last_type").mode == "full" and wb.plan("placed").mode == "incremental"
