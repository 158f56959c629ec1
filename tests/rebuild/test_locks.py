"""View locks across real processes: a second holder is refused with the holder named; a lock
whose holder was killed is taken over (and the takeover logged). Run against every store."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from rebuild import ViewLocked
from rebuild.errors import StoreError
from rebuild.locks import FileLocks, Holder
from rebuild.store import open_store
from tests.rebuild.conftest import logged

ROOT = Path(__file__).resolve().parents[2]
HOLD = """
import sys, time
from rebuild.store import open_store
from tests.rebuild.conftest import logged
store = open_store(sys.argv[1])
with store.lock(sys.argv[2], "backfill"):
    print("locked", flush=True)
    time.sleep(120)
"""


def hold_in_subprocess(uri: str, view: str) -> subprocess.Popen[str]:
    """A process that takes ``view``'s lock and sleeps; returns once it holds the lock."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, uri, view], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def take(uri: str, view: str) -> None:
    store = open_store(uri)
    try:
        with store.lock(view, "run"):
            pass
    finally:
        store.close()


def test_second_process_is_refused_and_dead_holder_is_taken_over(store_uri: str, caplog: pytest.LogCaptureFixture) -> None:
    holder = hold_in_subprocess(store_uri, "order_summary")
    try:
        with pytest.raises(ViewLocked) as refused:
            take(store_uri, "order_summary")
        message = str(refused.value)
        assert f"pid {holder.pid}" in message and "backfill" in message and "since" in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    caplog.set_level(logging.WARNING, logger="rebuild.locks")
    deadline = time.monotonic() + 10
    while True:  # PostgreSQL notices the dead session within moments
        try:
            take(store_uri, "order_summary")
            break
        except ViewLocked:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert f"pid {holder.pid}" in caplog.text and "taken over" in caplog.text and "is gone" in caplog.text


def test_file_lock_holder_info_and_release(tmp_path: Path) -> None:
    locks = FileLocks(tmp_path / "locks")
    with locks.hold("v", "run") as me:
        assert me.pid == os.getpid() and locks.holders() == [me]
        with pytest.raises(ViewLocked, match=f"run by pid {os.getpid()}"):
            with locks.hold("v", "cutover"):
                pass
    assert locks.holders() == [] and locks.path("v").read_text() == ""
    with locks.hold("v", "cutover"):
        pass


def test_holder_liveness() -> None:
    me = Holder.me("v", "run")
    assert me.alive() is True
    assert Holder("v", "run", 2**22 + 12345, me.host, me.started_at).alive() is False
    assert Holder("v", "run", 1, "elsewhere", me.started_at).alive() is None
    assert Holder.parse(me.to_json()) == me and Holder.parse("") is None


def test_a_check_is_refused_while_a_job_holds_the_view(store_uri: str, tmp_path: Path) -> None:
    """A run or cutover during a check would mix two shadows into one report."""
    from rebuild import Config, Workbench

    holder = hold_in_subprocess(store_uri, "order_summary")
    try:
        with Workbench(Config(lake_uri=str(tmp_path / "lake"), store_uri=store_uri, reports_dir=str(tmp_path / "reports"))) as wb:
            with pytest.raises(ViewLocked, match=f"backfill by pid {holder.pid}"):
                wb.check("order_summary")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_a_store_file_this_user_may_not_write_is_not_blamed_on_another_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An analyst without write access to the store file (root ignores file modes, so DuckDB's
    refusal is given here) was told another process held it and to wait for it."""
    def refuse(path: str, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        raise duckdb.IOException(f'IO Error: Cannot open file "{path}": Permission denied')

    monkeypatch.setattr(duckdb, "connect", refuse)
    with pytest.raises(StoreError) as caught:
        open_store(f"duckdb://{tmp_path / 'views.duckdb'}")
    message = str(caught.value)
    assert "give this user write access to the file and its folder" in message
    assert "lets one process" not in message and "Wait for" not in message


def test_a_second_run_of_the_same_schedule_says_retryable_naming_the_holder(store_uri: str, tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """Two overlapping runs of one schedule: the second exits 2 (an expected error) with the holder in its one
    JSON object and its log line, and ``retryable`` tells a scheduler "skip or retry later", not "broken"."""
    from rebuild.cli import main

    holder = hold_in_subprocess(store_uri, "order_summary")
    try:
        code = main(["--lake", str(tmp_path / "lake"), "--store", store_uri, "--json", "backfill", "order_summary",
                     "--since", "2026-09-01", "--until", "2026-09-02"])
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    captured = capsys.readouterr()
    [error] = [json.loads(line) for line in captured.out.splitlines()]
    assert (code, error["kind"], error["exit_code"], error["retryable"]) == (2, "ViewLocked", 2, True)
    assert f"pid {holder.pid}" in error["error"] and logged(captured.err).startswith("error (ViewLocked, exit 2): ")
    # and as fields, for an alert to name the view and the job holding it without parsing the message
    assert error["context"]["view"] == "order_summary" and error["context"]["holder"]["pid"] == holder.pid
    assert main(["--lake", str(tmp_path / "nowhere"), "--json", "lake", "audit"]) == 2  # not retryable: no lake
    assert json.loads(capsys.readouterr().out)["retryable"] is False
