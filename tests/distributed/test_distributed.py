"""Distributed replay: bucket tasks on Dask (a LocalCluster) or a process pool give what the
single-process run gives; a worker killed mid-run and retried changes nothing."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cloudpickle
import duckdb
import polars as pl
import pytest

import lake
from rebuild import Workbench
from rebuild import distributed as distributed_module
from rebuild.distributed import STAGING, plan_tasks, replay_bucket
from lake.read import CorruptFile
from rebuild.errors import ConfigError, ProjectionError, RebuildError
from tests.distributed import killer, poison, sparse  # noqa: F401 (order_notes)


def _view(wb: Workbench, name: str) -> pl.DataFrame:
    return wb.view(name, "shadow").sort(wb.projection(name).key)


def _run(tmp_path: Path, target: lake.Lake, view: str, label: str, **options: Any) -> tuple[pl.DataFrame, object]:
    with Workbench.open(None, lake_uri=target.uri, store_uri=f"duckdb://{tmp_path / label}.duckdb") as wb:
        result = wb.run(view, full=True, progress="none", **options)
        return _view(wb, view), result


@pytest.mark.parametrize("view", ["order_summary", "customer_ltv", "order_summary_fold", "order_notes"])
def test_dask_gives_the_single_process_result(tmp_path: Path, orders_lake: lake.Lake, cluster_address: str,
                                              view: str) -> None:
    """order_notes: a fold's column that only one bucket's rows had failed the run (the parts' schemas differ)."""
    single, _ = _run(tmp_path, orders_lake, view, "single")
    spread, result = _run(tmp_path, orders_lake, view, "dask", executor="dask", address=cluster_address)
    assert spread.height > 0 and spread.schema == single.schema and spread.equals(single)
    stats = result.stats  # type: ignore[attr-defined]
    assert stats["tasks"] == 8 and stats["events"] == result.record.events_read > 0  # type: ignore[attr-defined]
    assert not list((Path(orders_lake.uri) / STAGING).rglob("*.parquet"))  # parts removed after the commit


def test_a_worker_killed_mid_run_changes_nothing(tmp_path: Path, orders_lake: lake.Lake, cluster_address: str) -> None:
    cloudpickle.register_pickle_by_value(killer)
    killer.MARKER = str(tmp_path / "killed")
    try:
        spread, result = _run(tmp_path, orders_lake, "order_summary_killer", "dask", executor="dask",
                              address=cluster_address)
    finally:
        killer.MARKER = ""
    assert Path(tmp_path / "killed").exists()  # a worker did die
    single, _ = _run(tmp_path, orders_lake, "order_summary", "single")
    assert spread.equals(single)


def test_processes_give_the_single_process_result(tmp_path: Path, orders_lake: lake.Lake) -> None:
    single, _ = _run(tmp_path, orders_lake, "order_timeline", "single")
    spread, result = _run(tmp_path, orders_lake, "order_timeline", "pool", executor="processes", workers=2)
    assert spread.equals(single)
    # how many of the pool's two processes took a bucket is the machine's load: a busy CI runner once
    # gave all eight to the first one up
    assert 1 <= result.stats["workers"] <= 2 and result.stats["tasks"] == 8  # type: ignore[attr-defined]


def test_payload_values_that_do_not_decode_are_counted_by_the_driver(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """A run in one process counts them; a distributed run read them as NULL without a word."""
    from tests.conftest import write_ndjson
    from tests.orders import order_events

    target = lake.Lake(tmp_path / "lake")
    events = [e for o in range(1, 9) for e in order_events(o)]
    events[3]["payload"]["amount"] = {"value": 7.5}  # the first order's PaymentAuthorized
    lake.ingest(target, [write_ndjson(tmp_path / "in.ndjson", events)], stream="orders")
    _run(tmp_path, target, "order_summary", "pool", executor="processes", workers=2)
    assert "1 of 8 values of payload field 'amount' do not convert to DECIMAL(18,2) and read as NULL (e.g. " \
           '{"value":7.5} in event ev-o-0000001-4)' in caplog.text


def test_a_retried_task_overwrites_its_part(tmp_path: Path, orders_lake: lake.Lake) -> None:
    with Workbench.open(None, lake_uri=orders_lake.uri, store_uri=f"duckdb://{tmp_path / 'v'}.duckdb") as wb:
        plan = wb.plan("order_summary", full=True)
        tasks = plan_tasks(plan, wb.lake, wb.lake.snapshot(plan.delta_version), wb.projection("order_summary"),
                           "run-1", str(tmp_path / "staging"))
    first, again = replay_bucket(tasks[0]), replay_bucket(tasks[0])
    assert first.part_uri == again.part_uri and first.rows == again.rows > 0
    parts = list((tmp_path / "staging").rglob("*"))
    assert [p.name for p in parts if p.is_file()] == [f"bucket={tasks[0].bucket:05d}.parquet"]
    assert duckdb.connect().sql(f"SELECT count(*) FROM '{first.part_uri}'").fetchall()[0][0] == first.rows


def _fold_measured(script: str) -> list[str]:
    """What ``script`` prints, run in a fresh process (as a task runs) after 630,000 synthetic events are put
    in the temp table ``events`` of ``con``, with ``fold`` counting each order's and ``before`` its max RSS."""
    prelude = ("import resource, duckdb\n"
               "from lake.schema import bucket_sql\n"
               "from rebuild.fold import fold_table\n"
               "from tests.stores.synthetic import events_sql\n"
               "con = duckdb.connect()\n"
               "con.execute('SET threads = 1; SET enable_progress_bar = false')\n"
               "con.execute(f'CREATE TEMP TABLE events AS {events_sql(100_000)}')\n"
               "fold = lambda key, events: {'order_id': key, 'events': sum(1 for _ in events)}\n"
               "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n")
    done = subprocess.run([sys.executable, "-c", prelude + script], capture_output=True, text=True, timeout=300,
                          check=True, cwd=Path(__file__).parents[2])
    return done.stdout.split()


def test_a_python_fold_turns_a_batch_of_events_into_dicts_at_a_time() -> None:
    """A fold turned all its events into dicts at once, over 1 KB each: the task of a hot key bucket
    (1.2M events, order_summary_fold) peaked at 2.4 GB."""
    grown_kib, events = map(int, _fold_measured(
        "fold_table(con, fold, workers=1)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, con.sql('SELECT count(*) FROM events').fetchall()[0][0])\n"))
    assert events == 630_000 and grown_kib < 0.6 * events  # sorting and the rows folded; not every event as a dict


def test_a_fold_in_several_processes_sends_each_a_chunk_not_every_event() -> None:
    """The fold in several processes read the whole sorted lake as one table and sent each worker a slice
    of it, which pickles with the whole table's buffers: each worker got every event (4M events: 4.1 GB
    in the parent, 10.5 GB over the processes). Each now gets chunks of DuckDB's own batches, and the rows
    are the same as one process's, bucket by bucket or not."""
    grown_kib, events_kib, rows, same = _fold_measured(
        "parts = [f'SELECT * FROM events WHERE {bucket_sql(\"partition_key\", 16)} = {b}' for b in range(16)]\n"
        "several = fold_table(con, fold, workers=2, parts=parts)\n"
        "grown = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss - before\n"
        "one = fold_table(con, fold, workers=1)\n"
        "print(grown, con.sql('SELECT * FROM events').to_arrow_table().nbytes // 1024, one.num_rows,\n"
        "      one.sort_by('order_id').equals(several.sort_by('order_id')))\n")
    assert int(rows) == 100_000 and same == "True"
    assert int(grown_kib) < 0.6 * int(events_kib)  # a worker's peak over the parent's before it: chunks, not the events


def test_a_local_fold_s_workers_end_with_a_killed_parent(tmp_path: Path) -> None:
    """A night's full run of a Python fold killed (kill -9, or SIGTERM) left its forked fold workers folding
    what they had been sent, then waiting forever for more, under PID 1."""
    noted = tmp_path / "folded"
    script = ("import os, time, duckdb\n"
              "from rebuild.fold import fold_table\n"
              "from tests.stores.synthetic import events_sql\n"
              "con = duckdb.connect()\n"
              "con.execute(f'CREATE TEMP TABLE events AS {events_sql(30_000)}')\n"
              "def fold(key, events):\n"
              f"    open({str(noted)!r}, 'a').write(f'{{os.getpid()}}\\n'); time.sleep(0.05)\n"
              "    return {'order_id': key, 'events': sum(1 for _ in events)}\n"
              "fold_table(con, fold, workers=2, parts=[])\n")
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parents[2])
    _workers_end_with_their_parent(parent, lambda: {int(p) for p in noted.read_text().split()} if noted.exists() else set(),
                                   parent.kill)


def _workers_end_with_their_parent(parent: subprocess.Popen[Any], seen: Callable[[], set[int]],
                                   end: Callable[[], object]) -> None:
    """Once two worker processes of ``parent`` are seen working (``seen``: their pids), ``end`` it: they must go.
    Each looks for its parent every second: wait for them to go, not a fixed time (a loaded machine may take
    longer; a worker left behind never goes)."""
    workers: set[int] = set()
    try:
        started = time.monotonic()
        while len(workers := seen()) < 2:
            assert parent.poll() is None and time.monotonic() - started < 120, "its two workers never started working"
            time.sleep(0.05)
        end()
        deadline = time.monotonic() + 30
        while [pid for pid in workers if _running(pid)] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [pid for pid in workers if _running(pid)]
    finally:
        for pid in workers:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


def test_views_not_per_key_are_refused(tmp_path: Path, orders_lake: lake.Lake) -> None:
    with Workbench.open(None, lake_uri=orders_lake.uri, store_uri=f"duckdb://{tmp_path / 'v'}.duckdb") as wb:
        with pytest.raises(ConfigError, match="cannot be split by key bucket"):
            wb.run("daily_revenue", full=True, progress="none", executor="processes")
        assert not wb.store.exists("daily_revenue__shadow")


def test_an_unreachable_scheduler_is_named_and_nothing_is_written(tmp_path: Path, orders_lake: lake.Lake) -> None:
    import dask

    with Workbench.open(None, lake_uri=orders_lake.uri, store_uri=f"duckdb://{tmp_path / 'v'}.duckdb") as wb:
        with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
            with pytest.raises(ConfigError, match="cannot reach the dask scheduler at tcp://127.0.0.1:1: .*fix --address"):
                wb.run("order_summary", full=True, progress="none", executor="dask", address="tcp://127.0.0.1:1")
        assert not wb.store.exists("order_summary__shadow")
        assert wb.run("order_summary", full=True, progress="none").record.rows_written > 0  # no lock left behind


def test_workers_that_cannot_load_the_tasks_are_named_not_waited_for(tmp_path: Path, orders_lake: lake.Lake) -> None:
    """A worker without the workbench cannot unpickle a task: it drops its connection without failing the
    task, and the run waited forever (a night's job, until its scheduler killed it)."""
    from tests.distributed.conftest import distributed

    without = "import sys; sys.modules['rebuild'] = None; from distributed.cli.dask_worker import main; main()"
    with distributed.LocalCluster(n_workers=0, dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        address = cluster.scheduler_address
        worker = subprocess.Popen([sys.executable, "-c", without, address, "--no-nanny", "--nthreads", "1",
                                   "--no-dashboard"], cwd=tmp_path, stderr=subprocess.DEVNULL)
        try:
            client.wait_for_workers(1, timeout=60)
            command = [str(Path(sys.executable).with_name("rebuild")), "--json", "--lake", orders_lake.uri, "--store",
                       f"duckdb://{tmp_path}/v.duckdb", "run", "order_summary", "--full", "--executor", "dask",
                       "--address", address]
            done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        finally:
            worker.kill()
            worker.wait()
    error = json.loads(done.stdout)
    assert done.returncode == 2 and error["kind"] == "ConfigError"
    assert error["error"].startswith(f"the dask workers at {address} cannot load the run's tasks (No module named 'rebuild")
    assert "install the workbench" in error["error"] and error["error"].endswith("nothing was written")


def test_cli_flags(tmp_path: Path, orders_lake: lake.Lake, cluster_address: str, capsys: pytest.CaptureFixture[str]) -> None:
    from rebuild.cli import main

    base = ["--lake", orders_lake.uri, "--store", f"duckdb://{tmp_path}/cli.duckdb"]
    assert main([*base, "run", "order_summary", "--address", cluster_address, "--json"]) == 2  # needs --executor dask
    capsys.readouterr()
    code = main([*base, "run", "order_summary", "--full", "--executor", "dask", "--address", cluster_address, "--json"])
    out = capsys.readouterr().out
    assert code == 0 and '"distributed"' in out and os.path.exists(f"{tmp_path}/cli.duckdb")


def test_a_worker_killed_in_a_process_pool_is_named_and_nothing_is_written(tmp_path: Path,
                                                                          orders_lake: lake.Lake) -> None:
    cloudpickle.register_pickle_by_value(killer)
    killer.MARKER = str(tmp_path / "killed")
    try:
        with Workbench.open(None, lake_uri=orders_lake.uri, store_uri=f"duckdb://{tmp_path / 'v'}.duckdb") as wb:
            with pytest.raises(RebuildError, match=r"a worker process died while replaying order_summary_killer "
                                                   r"bucket \d+ .*nothing was written.*--executor dask"):
                wb.run("order_summary_killer", full=True, progress="none", executor="processes", workers=2)
            assert not wb.store.exists("order_summary_killer__shadow")
    finally:
        killer.MARKER = ""
    assert not list((Path(orders_lake.uri) / STAGING).rglob("*.parquet"))


def test_a_failed_bucket_stops_the_process_pool_at_once(tmp_path: Path, orders_lake: lake.Lake,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool's shutdown waited for every queued bucket: a projection failing in the first bucket
    (or Ctrl-C) ended the run only once all the others had been replayed, hours later in a night's job."""
    folded = tmp_path / "folded"
    monkeypatch.setenv("POISONED_BUCKET", "0")
    monkeypatch.setenv("POISONED_FOLDED", str(folded))
    with Workbench.open(None, lake_uri=orders_lake.uri, store_uri=f"duckdb://{tmp_path / 'v'}.duckdb") as wb:
        with pytest.raises(ProjectionError, match="poison order"):
            wb.run("order_events_poisoned", full=True, progress="none", executor="processes", workers=2)
        assert not wb.store.exists("order_events_poisoned__shadow")
    others = 3_000 * 7 // poison.BUCKETS  # the orders of the 7 buckets not poisoned
    assert len(_folded(folded)) < others // 2


def test_pool_workers_end_with_a_terminated_driver(tmp_path: Path, orders_lake: lake.Lake) -> None:
    """SIGTERM ends the job at once (exit 143); its pool's workers went on replaying their queued
    buckets into a staging folder no one reads, then waited forever for tasks, about 200 MB each."""
    folded, config = tmp_path / "folded", tmp_path / "workbench.toml"
    config.write_text(f"[lake]\nuri = {json.dumps(orders_lake.uri)}\n[store]\nuri = {json.dumps(f'duckdb://{tmp_path}/v.duckdb')}\n"
                      f"[projections]\nmodules = [{json.dumps(poison.__file__)}]\n")
    command = [str(Path(sys.executable).with_name("rebuild")), "--config", str(config), "run", "order_events_poisoned",
               "--full", "--executor", "processes", "--workers", "2"]
    driver = subprocess.Popen(command, env={**os.environ, "POISONED_FOLDED": str(folded)}, stderr=subprocess.PIPE)

    def terminate() -> None:
        driver.terminate()
        assert driver.wait(timeout=30) == 143

    _workers_end_with_their_parent(driver, lambda: {pid for pid, _ in _folded(folded)}, terminate)


def test_ctrl_c_while_the_local_cluster_starts_is_an_interrupt(tmp_path: Path, orders_lake: lake.Lake) -> None:
    """Ctrl-C at a terminal goes to the whole process group, the starting workers too: the cluster
    failed to start ("Nanny failed to start"), and the run ended with exit 70, 'a bug', not 130."""
    import psutil

    command = [str(Path(sys.executable).with_name("rebuild")), "--lake", orders_lake.uri, "--store",
               f"duckdb://{tmp_path}/v.duckdb", "run", "order_summary", "--full", "--executor", "dask", "--workers", "2"]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a shell's job has it
    started = time.monotonic()
    while len(children := psutil.Process(driver.pid).children(recursive=True)) < 3:  # the workers are starting
        assert driver.poll() is None and time.monotonic() - started < 120
        time.sleep(0.01)
    os.killpg(driver.pid, signal.SIGINT)
    _, err = driver.communicate(timeout=120)
    assert driver.returncode == 130 and "a bug" not in err and "error: interrupted" in err
    _, alive = psutil.wait_procs(children, timeout=30)  # no worker left behind
    assert not alive, [c.cmdline() for c in alive]


def test_a_run_on_a_scheduler_without_workers_says_so_and_goes_on_when_one_joins(
        tmp_path: Path, orders_lake: lake.Lake, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A scheduler no worker is connected to (scaled to zero, its workers crashed) ran nothing, and the
    job's log said each minute that it was 'still replaying' its buckets."""
    import distributed

    monkeypatch.setattr(distributed_module, "HEARTBEAT", 0.5)
    empty = distributed.LocalCluster(n_workers=0, threads_per_worker=1, processes=True, dashboard_address=":0",
                                     silence_logs=False)
    try:
        with Workbench.open(None, lake_uri=orders_lake.uri, store_uri=f"duckdb://{tmp_path / 'v'}.duckdb") as wb:
            with caplog.at_level(logging.INFO, logger="rebuild.progress"):
                run = threading.Thread(target=wb.run, args=("order_summary",), daemon=True,
                                       kwargs={"full": True, "progress": "log", "executor": "dask",
                                               "address": empty.scheduler_address})
                run.start()
                started = time.monotonic()
                while "no worker is connected" not in caplog.text:
                    assert run.is_alive() and time.monotonic() - started < 120
                    time.sleep(0.1)
                empty.scale(1)
                run.join(timeout=120)
            assert not run.is_alive() and wb.store.exists("order_summary__shadow")
            assert "(start workers, or stop this run)" in caplog.text
    finally:
        empty.close()


def test_a_local_cluster_left_without_workers_fails_the_run(tmp_path: Path, orders_lake: lake.Lake,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers killed with their nannies (which restart a lost worker) left the run waiting forever."""
    monkeypatch.setattr(distributed_module, "HEARTBEAT", 0.5)
    cloudpickle.register_pickle_by_value(killer)
    killer.MARKER = "set"
    try:
        with Workbench.open(None, lake_uri=orders_lake.uri, store_uri=f"duckdb://{tmp_path / 'v'}.duckdb") as wb:
            failed: list[BaseException] = []

            def run() -> None:
                try:
                    wb.run("order_summary_orphaned", full=True, progress="none", executor="dask", workers=1)
                except BaseException as exc:
                    failed.append(exc)

            running = threading.Thread(target=run, daemon=True)
            running.start()
            running.join(timeout=120)  # it waited forever
            assert not running.is_alive() and len(failed) == 1 and isinstance(failed[0], RebuildError)
            assert re.search("local dask cluster has no workers left.*rerun the same command", str(failed[0]))
            assert not wb.store.exists("order_summary_orphaned__shadow")
    finally:
        killer.MARKER = ""
        cloudpickle.unregister_pickle_by_value(killer)


@pytest.mark.parametrize("executor", ["processes", "dask"])
def test_a_run_waiting_for_its_buckets_says_so(tmp_path: Path, orders_lake: lake.Lake, cluster_address: str,
                                               executor: str, monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """A job's log had one line per bucket done, so a hot bucket replaying for an hour left it silent
    for that hour; it now says every HEARTBEAT seconds which buckets it still waits for."""
    monkeypatch.setattr(distributed_module, "HEARTBEAT", 1.0)  # each bucket of order_events_poisoned takes ~4 s
    address = cluster_address if executor == "dask" else None
    with Workbench.open(None, lake_uri=orders_lake.uri, store_uri=f"duckdb://{tmp_path / 'v'}.duckdb") as wb:
        with caplog.at_level(logging.INFO, logger="rebuild.progress"):
            wb.run("order_events_poisoned", full=True, progress="log", executor=executor, address=address, workers=None
                   if address else 2)
    waiting = [r.getMessage() for r in caplog.records if re.search(r"none done for \ds; still replaying bucket\(s\) \d", r.getMessage())]
    assert waiting and "/9 buckets" in waiting[0]


def _folded(noted: Path) -> list[tuple[int, str]]:
    """The (process id, order) lines order_events_poisoned wrote whole."""
    lines = noted.read_text().split("\n")[:-1] if noted.exists() else []
    return [(int(pid), order) for pid, order in (line.split() for line in lines)]


def _running(pid: int) -> bool:
    """Whether a process runs; one ended but not reaped (a zombie) does not. Linux's /proc."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_script_without_a_main_guard_is_named_when_its_workers_die(tmp_path: Path, orders_lake: lake.Lake) -> None:
    """Each worker process imports the script again: one without a main guard runs again in every
    worker, which dies (the store is locked), and the error only said "killed, or out of memory"."""
    script = tmp_path / "nightly.py"
    script.write_text("from rebuild import Workbench\n"
                      f"wb = Workbench.open(None, lake_uri={orders_lake.uri!r}, store_uri={f'duckdb://{tmp_path}/v.duckdb'!r})\n"
                      "wb.run('order_summary', full=True, progress='none', executor='processes', workers=2)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and "a worker process died" in last
    assert f"If this run was started by {script}: every worker process imports that script again, so start the run " \
           'under `if __name__ == "__main__":`' in last


def test_the_dask_executor_without_the_dask_extra_says_which_to_install(tmp_path: Path, orders_lake: lake.Lake) -> None:
    """Installed without the dask extra, the error said `pip install 'dask[distributed]'`: not the extra the
    README documents, nor its lower bound. Here distributed cannot be imported, as where it is not installed."""
    blocked = "import sys; sys.modules['distributed'] = None; from rebuild.cli import run; run()"
    command = ["--json", "--lake", orders_lake.uri, "--store", f"duckdb://{tmp_path}/v.duckdb", "run", "order_summary",
               "--full", "--executor", "dask"]
    done = subprocess.run([sys.executable, "-c", blocked, *command], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "pip install 'projection-rebuild-workbench[dask]'" in json.loads(done.stdout)["error"]


def test_a_worker_killed_under_the_rebuild_command_names_no_script(tmp_path: Path, orders_lake: lake.Lake) -> None:
    """The `rebuild` command is no script of the user's: its 'worker died' error told a job to start the run
    under a main guard in .venv/bin/rebuild (it looked for rebuild.cli's main, the entry point before
    _rebuild_cli's run)."""
    config = tmp_path / "workbench.toml"
    config.write_text(f"[lake]\nuri = {json.dumps(orders_lake.uri)}\n[store]\nuri = {json.dumps(f'duckdb://{tmp_path}/v.duckdb')}\n"
                      f"[projections]\nmodules = [{json.dumps(killer.__file__)}]\n")
    command = [str(Path(sys.executable).with_name("rebuild")), "--config", str(config), "run", "order_summary_killer",
               "--full", "--executor", "processes", "--workers", "2"]
    done = subprocess.run(command, env={**os.environ, "KILLER_MARKER": str(tmp_path / "killed")}, capture_output=True,
                          text=True, timeout=300)
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 2 and "a worker process died while replaying order_summary_killer" in last
    assert "If this run was started by" not in last and last.endswith("--executor dask, which retries a lost task")


@pytest.mark.parametrize("executor", ["processes", "dask"])
def test_a_corrupted_lake_file_is_named_or_skipped(tmp_path: Path, orders_lake: lake.Lake, cluster_address: str,
                                                   executor: str) -> None:
    copy = tmp_path / "lake"
    shutil.copytree(orders_lake.uri, copy)
    damaged = lake.Lake(copy)
    victim = next(f.path for f in damaged.snapshot().files if "stream=orders" in f.path)
    Path(victim).write_bytes(Path(victim).read_bytes()[:300])
    address = cluster_address if executor == "dask" else None
    with Workbench.open(None, lake_uri=str(copy), store_uri=f"duckdb://{tmp_path / 'v'}.duckdb") as wb:
        with pytest.raises(CorruptFile, match="--skip-corrupted") as failed:
            wb.run("order_summary", full=True, progress="none", executor=executor, address=address)
        assert failed.value.file == victim and "Traceback" not in str(failed.value)  # type: ignore[attr-defined]
        local = wb.run("order_summary", full=True, progress="none", skip_corrupted=True)
        expected = _view(wb, "order_summary")
        spread = wb.run("order_summary", full=True, progress="none", skip_corrupted=True, executor=executor,
                        address=address)
        assert spread.plan.skipped_files == local.plan.skipped_files == (victim,)
        assert spread.record.events_read == local.record.events_read
        assert _view(wb, "order_summary").equals(expected) and expected.height > 0


def test_a_staging_folder_that_will_not_go_leaves_the_runs_own_error(
        tmp_path: Path, orders_lake: lake.Lake, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """CI: a dask task still running after another bucket failed wrote its part while the run removed the
    staging folder, and "Directory not empty" replaced the CorruptFile that said what to do. The race is
    the cluster's; its effect, the removal failing, is made certain here."""
    copy = tmp_path / "lake"
    shutil.copytree(orders_lake.uri, copy)
    victim = next(f.path for f in lake.Lake(copy).snapshot().files if "stream=orders" in f.path)
    Path(victim).write_bytes(Path(victim).read_bytes()[:300])

    def busy(uri: str, options: object = None) -> None:
        raise OSError(39, "Directory not empty", uri)

    monkeypatch.setattr(distributed_module.storage, "remove_tree", busy)
    monkeypatch.setattr(distributed_module.time, "sleep", lambda seconds: None)
    with Workbench.open(None, lake_uri=str(copy), store_uri=f"duckdb://{tmp_path / 'v'}.duckdb") as wb:
        with caplog.at_level(logging.WARNING, logger="rebuild.distributed"):
            with pytest.raises(CorruptFile, match="--skip-corrupted"):
                wb.run("order_summary", full=True, progress="none", executor="processes", workers=2)
    warned = [r.getMessage() for r in caplog.records if r.name == "rebuild.distributed"]
    assert len(warned) == 1 and f"{STAGING}/order_summary/" in warned[0] and "rebuild lake vacuum" in warned[0]


def test_workers_without_a_local_pool_are_refused(tmp_path: Path, orders_lake: lake.Lake) -> None:
    with Workbench.open(None, lake_uri=orders_lake.uri, store_uri=f"duckdb://{tmp_path / 'v'}.duckdb") as wb:
        with pytest.raises(ConfigError, match="--workers 4 sizes --executor processes or dask"):
            wb.run("order_summary", full=True, progress="none", workers=4)
        with pytest.raises(ConfigError, match="--workers 2 sizes a LocalCluster.*drop --workers"):
            wb.run("order_summary", full=True, progress="none", executor="dask", workers=2, address="tcp://x:8786")
        assert not wb.store.exists("order_summary__shadow")



def test_a_local_cluster_keeps_quiet_in_a_jobs_log(tmp_path: Path, orders_lake: lake.Lake) -> None:
    """A job's log (--progress log, no -v) carried ~50 INFO lines of the cluster's start and stop."""
    import subprocess
    import sys

    command = [str(Path(sys.executable).with_name("rebuild")), "--lake", orders_lake.uri, "--store", f"duckdb://{tmp_path}/q.duckdb",
               "run", "order_summary", "--full", "--executor", "dask", "--workers", "1", "--progress", "log"]
    job = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert job.returncode == 0, job.stderr
    assert "rebuild.progress" in job.stderr and " distributed." not in job.stderr
    verbose = subprocess.run([command[0], "-v", *command[1:]], capture_output=True, text=True, timeout=300, check=False)
    assert verbose.returncode == 0 and " distributed." in verbose.stderr  # -v still shows them


def test_ctrl_c_while_a_local_cluster_starts_is_acted_on_once_it_has_started() -> None:
    """Ctrl-C inside LocalCluster(...) left it half started; distributed's exit hook then printed a
    traceback closing it. The interrupt is noted during the start, and raised once it can be closed."""
    import signal

    from rebuild.distributed import _interrupt_deferred

    with _interrupt_deferred() as interrupted:
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt in here
        time.sleep(0.05)
    assert interrupted == [signal.SIGINT]
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C works as before afterwards
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)


def test_a_distributed_run_excluding_quarantined_keys_counts_the_payload_values_it_replays(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The driver counts the events the tasks replayed: without the keys that have a quarantined record, as each
    task leaves them out."""
    from tests.conftest import write_ndjson
    from tests.orders import order_events

    target = lake.Lake(tmp_path / "lake")
    events = [e for o in range(1, 9) for e in order_events(o)]
    events[3]["payload"]["amount"] = {"value": 7.5}  # the first order's PaymentAuthorized
    poison_line = {**events[0], "event_id": "poison", "event_time": "not a time"}  # the first order's key quarantined
    lake.ingest(target, [write_ndjson(tmp_path / "in.ndjson", [*events, poison_line])], stream="orders")
    spread, _ = _run(tmp_path, target, "order_summary", "pool", executor="processes", workers=2, exclude_quarantined=True)
    alone, _ = _run(tmp_path, target, "order_summary", "one", exclude_quarantined=True)
    assert spread.equals(alone) and "o-0000001" not in spread["order_id"].to_list()
    assert "do not convert" not in caplog.text
