"""Temp folders of killed processes (kill -9): an ingest's, a compaction's, a replay worker's DuckDB spill.

Each kind is left by a real process killed with SIGKILL, and removed by the next process that works in the
same temp directory; a live process's folder is kept, also when its name says a process id that is not alive
here (another container with the same machine name)."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lake
from lake import scratch
from tests.conftest import event, write_ndjson

ROOT = Path(__file__).resolve().parents[2]


def killed(code: str, temp: Path, *args: str, point: str | None = None) -> None:
    """Run ``code`` in a new Python whose temp directory is ``temp``; it must die by SIGKILL."""
    env = {**os.environ, "TMPDIR": str(temp), "PYTHONPATH": str(ROOT)}
    if point:
        env["REBUILD_FAULT_POINT"] = point
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == -signal.SIGKILL, done.stderr


def folders(temp: Path, kind: str) -> list[Path]:
    return sorted(p for p in temp.iterdir() if p.name.startswith(f"{kind}-"))


def test_a_killed_ingests_folder_is_removed_by_the_next_ingest(tmp_path: Path) -> None:
    temp, target = tmp_path / "tmp", lake.Lake(tmp_path / "lake")
    temp.mkdir()
    source = write_ndjson(tmp_path / "in.ndjson", [event(n) for n in range(1, 50)])
    killed("import sys, lake; lake.ingest(lake.Lake(sys.argv[1]), [sys.argv[2]], stream='orders', "
           "temp_directory=sys.argv[3])", temp, target.uri, str(source), str(temp), point="ingest.before_commit")
    (left,) = folders(temp, "ingest")
    (left / "staged.tmp").write_bytes(b"x" * 1024)  # its staged rows, had they spilled
    lake.ingest(target, [source], stream="orders", temp_directory=str(temp))
    assert folders(temp, "ingest") == []
    assert [p.name for p in temp.iterdir()] == [f"{scratch.LOCK_PREFIX}{scratch._token()}.lock"]  # this process's
    assert lake.read_events(target).count("*").fetchall() == [(49,)]


def test_a_killed_compactions_folder_is_removed_by_the_next_compaction(tmp_path: Path) -> None:
    temp, target = tmp_path / "tmp", lake.Lake(tmp_path / "lake")
    temp.mkdir()
    for n in range(1, 4):  # three small files of one partition: a compaction rewrites them
        lake.ingest(target, [write_ndjson(tmp_path / f"{n}.ndjson", [event(n)])], stream="orders")
    killed("import sys, lake; from lake.compact import compact; compact(lake.Lake(sys.argv[1]))", temp, target.uri, point="compact.written")
    assert len(folders(temp, "rebuild-compact")) == 1
    code = f"import lake, sys; from lake.compact import compact; sys.exit(compact(lake.Lake({target.uri!r})).partitions != 1)"
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "TMPDIR": str(temp)}, cwd=ROOT)
    assert done.returncode == 0
    assert list(temp.iterdir()) == []  # its folder, and the lock files of both processes, gone


def test_a_killed_replay_workers_spill_folder_is_removed_by_the_next_session(tmp_path: Path) -> None:
    """A replay worker (the Python fold's, a distributed bucket's) spills through ``spill_outside_cwd``; killed,
    its spilled data stayed in the system's temp directory."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    killed("import os, signal, duckdb; from lake import storage\n"
           "con = storage.spill_outside_cwd(duckdb.connect())\n"
           "con.execute(\"SET memory_limit = '64MB'; SET threads = 1\")\n"
           "con.execute('CREATE TABLE t AS SELECT i, md5(i::VARCHAR) AS h FROM range(3000000) r(i)')\n"
           "os.kill(os.getpid(), signal.SIGKILL)", temp)
    (left,) = folders(temp, "rebuild-spill")
    assert any(left.iterdir())  # DuckDB's spilled blocks
    code = "import duckdb; from lake import storage; storage.spill_outside_cwd(duckdb.connect())"
    assert subprocess.run([sys.executable, "-c", code], env={**os.environ, "TMPDIR": str(temp)}, cwd=ROOT).returncode == 0
    assert list(temp.iterdir()) == []


def test_a_live_processs_folder_is_kept_whatever_its_name_says(tmp_path: Path) -> None:
    """Another container may share the temp directory and the machine's name, and run a process whose id is
    free here: its folder is kept as long as it holds its lock. An earlier version's folder (no lock) of a
    dead process on this machine goes once an hour old; one without a machine and process is kept."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    code = ("import sys, time; from lake import scratch\n"
            "with scratch.folder('ingest', sys.argv[1]):\n    print('ready', flush=True); time.sleep(60)")
    live = subprocess.Popen([sys.executable, "-c", code, str(temp)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert live.stdout is not None and live.stdout.readline() == "ready\n"
        (held,) = folders(temp, "ingest")
        lock = next(temp.glob(f"{scratch.LOCK_PREFIX}*"))
        owner = lock.name[len(scratch.LOCK_PREFIX):-len(".lock")]
        elsewhere = owner.replace(f"-{live.pid}-", "-999999999-")  # a process id free here
        lock.rename(temp / f"{scratch.LOCK_PREFIX}{elsewhere}.lock")  # still held: the lock is the file's
        held.rename(temp / held.name.replace(owner, elsewhere))
        earlier = {age: temp / f"ingest-{os.uname().nodename}-999999999-{age}" for age in ("old", "new")}
        for folder in [*earlier.values(), temp / "ingest-abc123"]:
            folder.mkdir()
        hour_ago = time.time() - 2 * scratch.UNLOCKED_AGE_S
        os.utime(earlier["old"], (hour_ago, hour_ago))
        removed = scratch.remove_abandoned(temp)
        assert removed == [earlier["old"]]
        assert len(folders(temp, "ingest")) == 3
    finally:
        live.kill()
        live.wait()
    assert [p.name for p in scratch.remove_abandoned(temp)] == [held.name.replace(owner, elsewhere)]


def test_threads_naming_their_first_folders_at_once_share_the_process_lock(tmp_path: Path) -> None:
    """Each thread's flock of the process's lock file waited for the other's forever (a lock per open file):
    threads started together on a new temp directory hung within a few rounds."""
    import threading

    for round_ in range(20):
        where = tmp_path / str(round_)
        start = threading.Barrier(8)
        names: list[Path] = []

        def name() -> None:
            start.wait()
            names.append(scratch.folder_name("rebuild-spill", where))

        threads = [threading.Thread(target=name, daemon=True) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(5)
        assert len(set(names)) == 8, f"threads hung in round {round_}"
        assert [p.name for p in where.iterdir()] == [f"rebuild-owner-{scratch._token()}.lock"]


def test_another_users_lock_is_left_alone_and_the_ingest_goes_on(tmp_path: Path) -> None:
    """Users of one machine share /tmp, and a lock file is its owner's alone (0600): the next user's ingest,
    compaction or spill there failed opening it to judge it (PermissionError), as long as the file was left.
    Run as root, the lock is given to nobody and the ingest runs without root's right to open any file;
    otherwise the lock is made unreadable to its own user."""
    scratch.folder_name("rebuild-spill", tmp_path)  # this process's lock there, held
    (lock,) = tmp_path.glob(f"{scratch.LOCK_PREFIX}*")
    source = write_ndjson(tmp_path / "in.ndjson", [event(n) for n in range(1, 4)])
    command = [sys.executable, "-c", "import sys, lake; r = lake.ingest(lake.Lake(sys.argv[1]), [sys.argv[2]], "
               "stream='orders', temp_directory=sys.argv[3]); print(r.archived)", str(tmp_path / "lake"),
               str(source), str(tmp_path)]
    if os.geteuid() == 0:
        os.chown(lock, 65534, 65534)
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]
    else:
        lock.chmod(0)
    done = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, capture_output=True, text=True)
    assert (done.returncode, done.stdout) == (0, "3\n"), done.stderr
    assert lock.exists()  # still its owner's


def test_a_folder_that_cannot_be_removed_is_not_said_to_be(tmp_path: Path) -> None:
    """An earlier version's folder of a dead process that this user cannot delete (another user's, in a shared
    /tmp) was logged as removed by every process's first folder there, and returned as removed."""
    left = tmp_path / f"ingest-{os.uname().nodename}-999999999-old"
    (left / "staged").mkdir(parents=True)
    hour_ago = time.time() - 2 * scratch.UNLOCKED_AGE_S
    os.utime(left, (hour_ago, hour_ago))
    left.chmod(0o555)  # its entries cannot be deleted (nor can root, without its right to write anywhere)
    command = [sys.executable, "-c", "import logging, sys; from lake import scratch; logging.basicConfig(level='INFO'); "
               "print([p.name for p in scratch.remove_abandoned(sys.argv[1])])", str(tmp_path)]
    if os.geteuid() == 0:
        command = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", *command]
    try:
        done = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT, capture_output=True, text=True)
    finally:
        left.chmod(0o755)
    assert (done.returncode, done.stdout) == (0, "[]\n"), done.stderr
    assert "removed" not in done.stderr and (left / "staged").is_dir()
    assert scratch.remove_abandoned(tmp_path) == [left] and not left.exists()  # once it can be


def test_an_abandoned_owner_lock_is_unlinked_while_still_held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Unlinked after letting go, a lock could be taken in between by its owner (created, not yet locked), which
    then held a lock on a deleted file: its folders looked abandoned to the next cleaner."""
    lock = tmp_path / f"{scratch.LOCK_PREFIX}host-1-deadbeef.lock"
    lock.touch()
    states, unlink = [], Path.unlink

    def looking(self: Path, missing_ok: bool = False) -> None:
        if self == lock:  # another open file description: its flock fails while the cleaner holds one
            fd = os.open(self, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                states.append("free")
            except BlockingIOError:
                states.append("held")
            finally:
                os.close(fd)
        unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", looking)
    scratch.remove_abandoned(tmp_path)
    assert states == ["held"] and not lock.exists()
