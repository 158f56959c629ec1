"""Parquet directory store specifics: what long jobs write to its data directory."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from bench.stores import record_maker
from lake import Lake
from rebuild import Config, Workbench
from rebuild.store import open_store
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
        with store._transaction() as m:
            m["runs"] = [{"run_id": f"r{i}", "view": "v"} for i in range(1_000)]
            m["backfills"] = [{"run_id": f"r{i // 5}", "job_id": f"j{i // 5}"} for i in range(5_000)]
        store.forget_runs(Counted(f"r{i}" for i in range(0, 1_000, 2)))
        store.forget_jobs(Counted(f"j{i}" for i in range(1, 1_000, 2)))
        assert Counted.reads <= 4  # once each (and once to make the list): 6,500 before
        m = store._load()
        assert len(m["runs"]) == 500 and m["backfills"] == []
    finally:
        store.close()
