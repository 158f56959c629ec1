"""Concurrency: ingest during a run, two jobs on one view, readers during cutover, an analyst's
read-only DuckDB connection while a job writes.

Real processes for the locks are tested in tests/rebuild/test_locks.py and test_backfill.py
(a second backfill process is refused with the holder named); PostgreSQL readers during cutover
in tests/stores/test_postgres.py::test_cutover_is_atomic_for_concurrent_readers.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest

import lake
from rebuild import Config, StoreError, ViewLocked, Workbench
from rebuild.store.duckdb_store import connect
from tests.faults.conftest import ROOT, VIEW, new_orders


def test_ingest_during_a_run_waits_for_the_next_incremental_run(fault_lake: lake.Lake, tmp_path: Path) -> None:
    with Workbench(Config(lake_uri=fault_lake.uri, store_uri=str(tmp_path / "views.duckdb"))) as wb:
        plan = wb.plan(VIEW)  # the run pins its snapshot here ...
        arrived = lake.ingest(lake.Lake(fault_lake.uri), [new_orders(tmp_path, bad=False)], stream="orders")
        result = wb.execute(plan, "none")  # ... and an ingest meanwhile does not leak into it
        assert result.record.lake_version == plan.lake_version < arrived.lake_version
        assert wb.store.count(f"{VIEW}__shadow") == 120
        wb.cutover(VIEW, force=True)
        catch_up = wb.run(VIEW, progress="none")
        assert catch_up.plan.mode == "incremental" and catch_up.plan.after_version == plan.lake_version
        assert catch_up.record.rows_written == 30  # exactly the orders that arrived during the first run


def test_a_second_backfill_on_the_view_is_refused(fault_lake: lake.Lake, tmp_path: Path) -> None:
    store = f"parquet://{tmp_path / 'views'}"
    with Workbench(Config(lake_uri=fault_lake.uri, store_uri=store)) as first, \
            Workbench(Config(lake_uri=fault_lake.uri, store_uri=store)) as second:
        with first.store.lock(VIEW, "backfill"):
            with pytest.raises(ViewLocked, match=f"backfill by pid {os.getpid()}"):
                second.backfill(VIEW, since="2026-09-02", until="2026-09-04", progress="none")
            with pytest.raises(ViewLocked):
                second.run(VIEW, progress="none")
        assert second.backfill(VIEW, since="2026-09-02", until="2026-09-04", progress="none").chunks == 2


def test_readers_on_duckdb_cursors_never_miss_the_live_view(fault_lake: lake.Lake, tmp_path: Path) -> None:
    with Workbench(Config(lake_uri=fault_lake.uri, store_uri=str(tmp_path / "views.duckdb"))) as wb:
        wb.run(VIEW, progress="none")
        wb.cutover(VIEW, force=True)
        con = wb.store.con  # type: ignore[attr-defined]
        stop, errors, counts = threading.Event(), [], []

        def reader() -> None:
            cursor = con.cursor()  # a reader in the same process: its own connection to the file
            while not stop.is_set():
                try:
                    counts.append(cursor.sql(f'SELECT count(*) FROM "{VIEW}"').fetchall()[0][0])
                except duckdb.Error as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=reader) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            for i in range(4):
                wb.run(VIEW, full=True, progress="none") if i % 2 == 0 else wb.run(VIEW, keys=["o-0000001"], progress="none")
                wb.cutover(VIEW, force=True)
                wb.rollback(VIEW)
                wb.rollback(VIEW)
        finally:
            stop.set()
            for t in threads:
                t.join()
    assert errors == [] and len(counts) > 20 and set(counts) == {120}


HOLD_OPEN = """
import sys, time
from rebuild.store import open_store
store = open_store(sys.argv[1])
with store.lock("order_summary", "run"):
    print("open", flush=True)
    time.sleep(60)
"""


def test_an_analysts_read_only_connection_while_a_job_writes(fault_lake: lake.Lake, tmp_path: Path) -> None:
    """DuckDB: one process may open the file for writing, and then no other process, read-only or
    not. The error says so and what to do instead (documented in docs/reliability.md)."""
    path = str(tmp_path / "views.duckdb")
    with Workbench(Config(lake_uri=fault_lake.uri, store_uri=path)) as wb:
        wb.run(VIEW, progress="none")
    job = subprocess.Popen([sys.executable, "-c", HOLD_OPEN, path], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert job.stdout is not None and job.stdout.readline().strip() == "open"
        with pytest.raises(duckdb.IOException, match="lock"):
            duckdb.connect(path, read_only=True)  # what an analyst's notebook gets from DuckDB itself
        with pytest.raises(StoreError) as refused:
            connect(path, read_only=True)  # the workbench's own opening says what to do
        message = str(refused.value)
        assert "read-only" in message and "parquet://" in message and "after" in message
        # a second job, on any view, names the holder and why a view it did not ask for blocks it
        with pytest.raises(ViewLocked, match=f"the store file .*views.duckdb is locked: order_summary is being worked "
                                             f"on \\(run by pid {job.pid} .*every view of this store waits for it"):
            Workbench(Config(lake_uri=fault_lake.uri, store_uri=path)).store  # noqa: B018
    finally:
        job.kill()
        job.wait()
    reader = duckdb.connect(path, read_only=True)  # once the job is done: fine
    assert reader.sql(f'SELECT count(*) FROM "{VIEW}__shadow"').fetchall()[0][0] == 120
    reader.close()
