"""Parquet directory store specifics: what long jobs write to its data directory."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.stores import record_maker
from lake import Lake, ingest
from rebuild import Config, StoreError, Workbench, projection
from rebuild.projection import Registry
from rebuild.store import open_store
from tests.conftest import write_ndjson
from tests.stores.conftest import orders_lake_events
from tests.stores.synthetic import synthetic_lake

VIEW = "order_summary"


@pytest.fixture(scope="module")
def ten_days(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    return synthetic_lake(tmp_path_factory.mktemp("ten_days") / "lake", 3_000)


def written(root: Path, table: str) -> int:
    """Rows in every data file ever written for ``table`` (replaced files stay for GRACE_SECONDS)."""
    return sum(pq.read_metadata(p).num_rows for p in (root / "data").glob(f"{table}.*.parquet"))


def test_a_backfill_writes_each_chunk_not_the_whole_shadow_again(ten_days: Lake, tmp_path: Path) -> None:
    """Each chunk's publish rewrote the whole shadow and its scope into new files: a backfill of N
    chunks wrote N/2 shadows (12M rows for a 300,000-row shadow in 40 chunks, 72M in 240) and kept them
    on disk for GRACE_SECONDS; 40 times the shadow here. Now a chunk adds its rows and new scope keys as
    files, rewrites only the shadow's files holding rows of its keys (an order spanning two chunks),
    and merges the last files as they pile up, so that a few remain."""
    root = tmp_path / "views"
    with Workbench(Config(lake_uri=ten_days.uri, store_uri=f"parquet://{root}")) as wb:
        expected = wb.run(VIEW, since="2026-09-01", until="2026-09-11")
        one = wb.view(VIEW, "shadow").sort("order_id")
        result = wb.backfill(VIEW, since="2026-09-01", until="2026-09-11", chunk="3h")
        assert result.chunks == 80 and result.rows == expected.record.rows_written
        assert wb.view(VIEW, "shadow").sort("order_id").equals(one)
        assert wb.store.count(f"{VIEW}__shadow_scope") == expected.record.scope_rows
    shadow_rows = written(root, f"{VIEW}__shadow") - expected.record.rows_written  # less the targeted run's
    scope_rows = written(root, f"{VIEW}__shadow_scope") - expected.record.scope_rows
    assert shadow_rows < 15 * result.rows and scope_rows < 6 * result.scope_rows  # 40 and 40 before
    tables = json.loads((root / "_manifest.json").read_text())["tables"]
    assert len(tables[f"{VIEW}__shadow"]) <= 12 and len(tables[f"{VIEW}__shadow_scope"]) <= 12

def test_an_appended_patch_of_other_column_types_is_merged_into_one_file(tmp_path: Path) -> None:
    """A chunk whose columns come in another order or type (a fold typed by its values) is not added as
    a file of its own, which the shadow's readers could not concatenate: the shadow is merged as one."""
    store = open_store(f"parquet://{tmp_path / 'views'}")
    try:
        con = store.compute()
        con.execute("CREATE TEMP TABLE first AS SELECT * FROM (VALUES ('a', 1), ('b', 2)) v(k, n)")
        con.execute("CREATE TEMP TABLE other AS SELECT * FROM (VALUES (2.5, 'b'), (3.5, 'c')) v(n, k)")
        for rows, append in (("first", False), ("other", True)):
            store.publish(con, "v", rows, rows, ("k",), ("k",), record_maker("v", "keys"), append=append)
        assert sorted(store.read("v__shadow").to_pylist(), key=str) == [
            {"k": "a", "n": Decimal("1.0")}, {"k": "b", "n": Decimal("2.5")}, {"k": "c", "n": Decimal("3.5")}]
        assert store.count("v__shadow_scope") == 3
    finally:
        store.close()


def test_forgetting_runs_and_jobs_reads_their_ids_once_not_once_per_row(tmp_path: Path) -> None:
    """Forgetting runs (prune) and jobs made the set of their ids anew for each row of the manifest:
    quadratic, 10 s for 8,000 runs with their 80,000 marks, holding the manifest's lock. The ids are
    now read once (counted: a list that counts its iterations)."""

    class Counted(list[str]):
        reads = 0

        def __iter__(self) -> Iterator[str]:
            Counted.reads += 1
            return super().__iter__()

    store = open_store(f"parquet://{tmp_path / 'views'}")
    try:
        with store._transaction() as m:  # type: ignore[attr-defined]
            m["runs"] = [{"run_id": f"r{i}", "view": "v"} for i in range(1_000)]
            m["backfills"] = [{"run_id": f"r{i // 5}", "job_id": f"j{i // 5}"} for i in range(5_000)]
        store.forget_runs(Counted(f"r{i}" for i in range(0, 1_000, 2)))
        store.forget_jobs(Counted(f"j{i}" for i in range(1, 1_000, 2)))
        assert Counted.reads <= 4  # once each (and once to make the list): 6,500 before
        m = store._load()  # type: ignore[attr-defined]
        assert len(m["runs"]) == 500 and m["backfills"] == []
    finally:
        store.close()


def _sums_bench(orders_lake: Lake, tmp_path: Path, offset: int) -> Workbench:
    """A workbench whose view ``cents`` sums each order's BIGINT quantities (a HUGEINT) plus ``offset``."""
    registry = Registry()
    projection(name="cents", key="order_id", payload={"quantity": "BIGINT"}, registry=registry)(
        lambda: f"SELECT partition_key AS order_id, sum(quantity) + {offset} AS cents FROM events GROUP BY ALL")
    config = Config(lake_uri=orders_lake.uri, store_uri=f"parquet://{tmp_path / 'views'}", projection_modules=(),
                    reports_dir=str(tmp_path / "reports"))
    return Workbench(config, registry=registry)


def test_a_hugeint_column_keeps_every_digit_and_its_differences_are_found(orders_lake: Lake, tmp_path: Path) -> None:
    """DuckDB writes a HUGEINT (every sum over BIGINT) to Parquet as DOUBLE: digits past 2**53 were lost,
    and a check compared the column within a float's relative 1e-9, so a rebuilt sum of cents one cent
    off live passed. It is written as DECIMAL(38,0) now, exact as in the other stores."""
    big = 2**53 + 1  # a double cannot hold it
    with _sums_bench(orders_lake, tmp_path, big) as wb:
        wb.run("cents", full=True, progress="none")
        wb.cutover("cents", force=True)
        assert str(wb.view("cents").schema["cents"]) == "Decimal(precision=38, scale=0)"
        assert wb.view("cents")["cents"].min() == big + 4  # order_events: two items of quantity 2
    with _sums_bench(orders_lake, tmp_path, big + 1) as wb:
        wb.run("cents", full=True, progress="none")
        report = wb.check("cents")
    assert not report.verdict.passed and report.diff.changed_rows == 40


def test_a_hugeint_past_38_digits_is_refused_naming_its_column(orders_lake: Lake, tmp_path: Path) -> None:
    with _sums_bench(orders_lake, tmp_path, 10**38) as wb:
        with pytest.raises(StoreError, match=r"column cents of cents__shadow holds a number of more than 38 digits "
                                             r"\(1000000000000000000000000000000000000\d\d\), which the Parquet store "
                                             r"keeps as DECIMAL\(38,0\) .*e.g. to VARCHAR"):
            wb.run("cents", full=True, progress="none")
        assert not wb.store.exists("cents__shadow") and wb.store.runs() == []


def test_an_interval_finer_than_parquets_milliseconds_is_refused_naming_its_column(orders_lake: Lake,
                                                                                   tmp_path: Path) -> None:
    """Parquet's INTERVAL keeps milliseconds: a Polars Duration (an INTERVAL in DuckDB) of 1.234567 s was
    stored as 1.234 s, and checks of the stored views saw nothing. Such a column is refused now; one of
    whole milliseconds is kept as it is."""
    registry = Registry()
    span = pl.col("event_time").max() - pl.col("event_time").min()
    for name, extra in (("spans", 1), ("whole_spans", 0)):
        projection(name=name, key="order_id", engine="polars", registry=registry)(
            lambda events, extra=extra: events.group_by(order_id="partition_key").agg(
                span=span + pl.duration(microseconds=extra)))
    config = Config(lake_uri=orders_lake.uri, store_uri=f"parquet://{tmp_path / 'views'}", projection_modules=(),
                    reports_dir=str(tmp_path / "reports"))
    with Workbench(config, registry=registry) as wb:
        with pytest.raises(StoreError, match=r"column span of spans__shadow holds an INTERVAL finer than a millisecond "
                                             r"\(\d+:\d\d:\d\d\.000001\).*e.g. epoch_us\(span\)"):
            wb.run("spans", full=True, progress="none")
        assert not wb.store.exists("spans__shadow") and wb.store.runs() == []
        wb.run("whole_spans", full=True, progress="none")
        stored = wb.store.relation(wb.store.compute(), "whole_spans__shadow")
        assert stored.aggregate("min(span), max(span)").fetchall() == [(timedelta(hours=12), timedelta(hours=15))]


def test_a_patch_whose_column_live_holds_as_other_values_is_refused_naming_them(orders_lake: Lake,
                                                                               tmp_path: Path) -> None:
    """A live view made elsewhere keeps an order's skus as text ('sku-0|sku-1'), the projection as a list: the
    patch's forced cutover died with DuckDB's ConversionException (exit 70), as live's rows and the patch's
    went into one file. It is refused as the other stores refuse a patch live cannot hold; live is unchanged."""
    registry = Registry()
    projection(name="skus", key="order_id", payload={"sku": "VARCHAR"}, registry=registry)(
        lambda: "SELECT partition_key AS order_id, list(sku ORDER BY sequence) FILTER (WHERE sku IS NOT NULL) AS skus "
                "FROM events GROUP BY ALL")
    config = Config(lake_uri=orders_lake.uri, store_uri=f"parquet://{tmp_path / 'views'}", projection_modules=(),
                    reports_dir=str(tmp_path / "reports"))
    live = pa.table({"order_id": ["o-0000001", "o-0000002"], "skus": ["sku-0|sku-1", "sku-0|sku-1"]})
    with Workbench(config, registry=registry) as wb:
        wb.store.write_table("skus", live)
        wb.run("skus", keys=["o-0000001"], progress="none")
        with pytest.raises(StoreError, match=r"the partial shadow of skus does not fit live skus's column types "
                                             r"\(Conversion Error: .*'sku-0\|sku-1'.*VARCHAR\[\].*\); nothing was changed"):
            wb.cutover("skus", force=True)
        assert wb.store.read("skus").equals(live) and wb.store.exists("skus__shadow")


def test_a_view_an_earlier_version_stored_with_a_double_says_how_to_give_it_the_exact_type(
        orders_lake: Lake, tmp_path: Path) -> None:
    """Before, a HUGEINT went to the Parquet store as DOUBLE: after the upgrade each catch-up's check failed as
    retyped, and its advice, cut over with --force, left live's DOUBLE for every catch-up after it to fail on."""
    with _sums_bench(orders_lake, tmp_path, 0) as wb:
        wb.run("cents", full=True, progress="none")
        wb.cutover("cents", force=True)
        live = tmp_path / "views" / "data" / json.loads((tmp_path / "views" / "_manifest.json").read_text())["tables"]["cents"][0]
        table = pq.read_table(live)  # as the earlier version wrote it
        pq.write_table(table.set_column(1, "cents", table["cents"].cast(pa.float64())), live)
        more = write_ndjson(tmp_path / "more.ndjson", orders_lake_events(orders=3, first=40))
        ingest(orders_lake, [more], stream="orders")
        wb.run("cents", progress="none")
        reasons = " ".join(wb.check("cents").verdict.reasons)
        assert "retyped column cents (DOUBLE in live, DECIMAL(38,0) rebuilt)" in reasons and "until a full run (--full)" in reasons
        wb.run("cents", full=True, progress="none")
        wb.check("cents")
        wb.cutover("cents", force=True)
        ingest(orders_lake, [write_ndjson(tmp_path / "last.ndjson", orders_lake_events(orders=2, first=43))], stream="orders")
        wb.run("cents", progress="none")
        assert wb.check("cents").verdict.passed


def test_a_year_of_run_records_is_parsed_once_per_change_of_the_manifest_not_at_each_lookup(
        orders_lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The manifest holds every run record: a year of nightly runs of 4 views made it 2 MB, which `rebuild ls`
    parsed at each of its 20 lookups (0.46 s, 5 s at ten times the history), as `plan` and `runs` did."""
    config = Config(lake_uri=orders_lake.uri, store_uri=f"parquet://{tmp_path / 'views'}",
                    projection_modules=("rebuild.examples",), reports_dir=str(tmp_path / "reports"))
    with Workbench(config) as wb:
        wb.run(VIEW, full=True)
        wb.cutover(VIEW, force=True)
    manifest = tmp_path / "views" / "_manifest.json"
    m = json.loads(manifest.read_text())
    run = m["runs"][0]
    started = wb.store.run(run["run_id"]).started_at  # type: ignore[union-attr]
    m["runs"] += [{**run, "run_id": f"old-{n}", "status": "previous", "started_at": str(started - timedelta(hours=n)),
                   "finished_at": str(started - timedelta(hours=n))} for n in range(1, 1_500)]
    manifest.write_text(json.dumps(m))
    parsed: list[int] = []
    real = json.loads

    def loads(text: str | bytes, **kw: Any) -> Any:
        parsed.append(len(text))
        return real(text, **kw)

    monkeypatch.setattr(json, "loads", loads)
    with Workbench(config) as wb:
        wb.ls()
        wb.plan(VIEW)
        newest = wb.runs(VIEW, limit=3)
        assert [r.run_id for r in newest] == [run["run_id"], "old-1", "old-2"]
        assert len([n for n in parsed if n > 1_000_000]) == 1  # the 1,500 runs' manifest, once
        wb.store.set_verdict("old-7", "pass", None)
        assert wb.store.run("old-7").verdict == "pass"  # type: ignore[union-attr]  # a change is read back


def test_a_change_by_another_process_within_one_tick_of_the_file_clock_is_read(tmp_path: Path) -> None:
    """The parsed manifest was kept while its file's inode, time and size stayed: a file system reuses a freed
    inode at once (ext4 gave the manifest its previous inode at each second write), a change may keep the size
    (a chunk's 1 row, then 3), and a coarse clock (one tick per 4 ms on many kernels, a second on some file
    systems) gives two writes the same time: a reader kept reading the older manifest."""
    import os

    from rebuild.store.base import Mark

    reader, writer = open_store(f"parquet://{tmp_path}"), open_store(f"parquet://{tmp_path}")
    at = datetime(2026, 9, 1, 3, tzinfo=UTC)

    def mark(rows: int) -> Mark:
        return Mark("job", "v", "backfill", 0, "day 1", "done", 1, 1, "run", rows, "{}", at)

    writer.put_mark(mark(1))
    manifest = tmp_path / "_manifest.json"
    first = manifest.stat()
    assert [m.rows for m in reader.marks("v")] == [1]
    for rows in (2, 3):  # the second write takes the inode the first one freed
        writer.put_mark(mark(rows))
    os.utime(manifest, ns=(first.st_atime_ns, first.st_mtime_ns))  # within the first write's tick
    assert [m.rows for m in reader.marks("v")] == [3]
    reader.close()
    writer.close()
