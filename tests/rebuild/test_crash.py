"""A run killed at any point (kill -9) leaves live and the last good shadow untouched, and the
next run completes with the same result as an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

from rebuild import Workbench
from tests.orders import order_events
from tests.rebuild.conftest import Bench


def _state(root: Path) -> tuple[pl.DataFrame, pl.DataFrame, str | None, int | None]:
    wb = Workbench.open(None, lake_uri=str(root / "lake"), store_uri=f"duckdb://{root}/views.duckdb")
    try:
        store = wb.store
        live = wb.view("order_summary").sort("order_id")
        shadow = wb.view("order_summary", "shadow").sort("order_id")
        cp = store.checkpoint("order_summary", "shadow")
        record = store.run(cp.run_id) if cp else None
        assert record is not None and record.rows_written == len(shadow), "shadow and its run record disagree"
        return live, shadow, cp.run_id if cp else None, record.rows_written
    finally:
        wb.close()


def test_kill_9_during_runs_leaves_live_and_the_last_good_shadow(bench: Bench) -> None:
    bench.ingest(e for o in range(1, 8000) for e in order_events(o, customer=o % 50))
    bench.rebuild_live("order_summary")
    bench.ingest(e for o in range(8000, 8100) for e in order_events(o))
    bench.wb.run("order_summary", keys=["o-0000001"], progress="none")
    bench.wb.close()
    live, shadow, run_id, _ = _state(bench.root)
    command = [sys.executable, "-c", "from rebuild.cli import run; run()", "--lake", str(bench.root / "lake"),
               "--store", f"duckdb://{bench.root}/views.duckdb", "run", "order_summary", "--full", "--json"]
    finished = killed = 0
    for delay in (0.3, 0.6, 0.9, 1.2, 1.5, 1.8, 2.2, 2.6):
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": os.getcwd()})
        time.sleep(delay)
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            killed += 1
        else:
            finished += 1
        process.wait()
        now_live, now_shadow, now_run, _ = _state(bench.root)
        assert now_live.equals(live), f"live changed by a run killed after {delay}s"
        if now_run == run_id:
            assert now_shadow.equals(shadow)
        else:  # a run that committed: its whole shadow is there
            assert len(now_shadow) == 8099
            shadow, run_id = now_shadow, now_run
    assert killed >= 2, f"runs finished too fast to be killed ({finished} finished)"
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert done.returncode == 0, done.stderr
    _, final, _, rows = _state(bench.root)
    assert rows == 8099
    reference = Workbench.open(None, lake_uri=str(bench.root / "lake"), store_uri=f"duckdb://{bench.root}/fresh.duckdb")
    try:
        reference.run("order_summary", progress="none")
        assert final.equals(reference.view("order_summary", "shadow").sort("order_id"))
    finally:
        reference.close()
