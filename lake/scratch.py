"""Temp folders of one process (an ingest's staging, a compaction's, a DuckDB spill folder), and the removal of
those a killed process left (kill -9, the OOM killer: gigabytes of staged rows or spilled data, for good).

A folder is named ``KIND-OWNER-...``, where OWNER is this process's token (machine, process id and a random
part). Before it names a folder the process takes an exclusive ``flock`` on ``rebuild-owner-OWNER.lock`` in
the same directory and keeps it until it exits; the kernel lets go of it when the process dies, however it
dies. A folder is abandoned when its owner's lock can be taken: so a live process's folder is never removed,
also not one of another container that shares the directory and the machine name, or reuses the process id
(a lock taken by a process id alone could not tell them apart).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

KINDS = ("ingest", "rebuild-compact", "rebuild-spill")
LOCK_PREFIX = "rebuild-owner-"
#: a folder an earlier version left (no owner lock) is judged by its machine and process id, past this age
UNLOCKED_AGE_S = 3600.0

_owner: tuple[int, str] | None = None  # (process id, token): a forked child makes its own
_locks: dict[str, int] = {}  # directory -> the open, locked owner file (kept until the process exits)
_mutex = threading.RLock()  # re-entrant: _hold takes it, and so does the _token it calls


def _token() -> str:
    global _owner
    with _mutex:  # two threads' first calls would make two tokens, folders named after one without a lock
        if _owner is None or _owner[0] != os.getpid():
            _owner = (os.getpid(), f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            _locks.clear()  # the parent's descriptors stay open in the child (still locked for the parent)
        return _owner[1]


def _hold(directory: Path) -> str:
    """This process's token, its owner lock in ``directory`` taken (once per directory). Under a mutex: a
    second thread's flock of the same file would wait for the first's forever (a lock per open file)."""
    with _mutex:
        return _hold_locked(directory)


def _hold_locked(directory: Path) -> str:
    token = _token()
    key = str(directory)
    while key not in _locks:
        path = directory / f"{LOCK_PREFIX}{token}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without locks: the caller goes on without one, this descriptor closed
            os.close(fd)
            raise
        try:  # a cleaner may have removed the file between open and flock: then lock a new one
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if not same:
            os.close(fd)
            continue
        _locks[key] = fd
        atexit.register(_let_go, directory, token)
        remove_abandoned(directory)  # the first use of a directory by a process: what killed ones left there
    return token


def _let_go(directory: Path, token: str) -> None:
    """At a normal exit, this process's lock file, unless a folder of it is left (the next process removes both)."""
    if os.getpid() == int(token.rsplit("-", 2)[1]) and not any(directory.glob(f"*-{token}-*")):
        (directory / f"{LOCK_PREFIX}{token}.lock").unlink(missing_ok=True)


def folder_name(kind: str, directory: str | os.PathLike[str] | None = None) -> Path:
    """A new path ``directory/KIND-OWNER-xxxxxxxx`` (default: the system's temp directory) this process owns,
    not created: for DuckDB's ``temp_directory``, which it creates when it spills and removes on close."""
    where = Path(directory or tempfile.gettempdir())
    try:
        where.mkdir(parents=True, exist_ok=True)
        owner = _hold(where)
    except OSError:  # a temp directory no one may write: DuckDB says so if it spills (most sessions never do)
        owner = _token()
    return where / f"{kind}-{owner}-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def folder(kind: str, directory: str | os.PathLike[str] | None = None, *, clean: bool = True) -> Iterator[Path]:
    """A temp folder of this process, removed on exit; with ``clean``, removes the abandoned ones in
    ``directory`` too (a process's first folder there does in any case, once)."""
    first = str(Path(directory or tempfile.gettempdir())) not in _locks
    path = folder_name(kind, directory)
    if clean and not first:
        remove_abandoned(directory)
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def remove_abandoned(directory: str | os.PathLike[str] | None = None) -> list[Path]:
    """Delete the folders (of ``KINDS``) in ``directory`` whose owner is gone, and its lock; returns them."""
    where = Path(directory or tempfile.gettempdir())
    if not where.is_dir():
        return []
    names = [p.name for p in where.iterdir()]
    removed = []
    for lock in (n for n in names if n.startswith(LOCK_PREFIX) and n.endswith(".lock")):
        owner = lock[len(LOCK_PREFIX):-len(".lock")]
        fd = None if owner == _token() else _take(where / lock)
        if fd is None:
            continue
        try:
            removed += _remove(where, [n for n in names if any(n.startswith(f"{k}-{owner}-") for k in KINDS)])
            # unlinked while held: an owner that opened the file meanwhile finds it gone once it has the lock
            (where / lock).unlink(missing_ok=True)
        finally:
            os.close(fd)
    return removed + _remove(where, [n for n in names if _unlocked_and_dead(where, n, names)])


def _take(lock: Path) -> int | None:
    """``lock`` taken, its descriptor open, when no process holds it (its owner died); else None."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return None  # another cleaner removed it: its folders are that one's to remove
    except PermissionError:
        return None  # another user's (0600): its folders are not this user's to remove either
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # BlockingIOError: its owner lives
        os.close(fd)
        return None
    return fd


def _unlocked_and_dead(where: Path, name: str, names: list[str]) -> bool:
    """A folder of an earlier version, ``ingest-HOST-PID-...`` without an owner lock: this machine's, its process
    gone, and older than ``UNLOCKED_AGE_S`` (another container of the same machine name may run that process id)."""
    host = f"ingest-{socket.gethostname()}-"
    pid = name[len(host):].split("-", 1)[0] if name.startswith(host) else ""
    if not pid.isdigit() or any(n.startswith(LOCK_PREFIX) and name.startswith(f"ingest-{n[len(LOCK_PREFIX):-5]}-")
                                for n in names):
        return False
    try:
        old = time.time() - (where / name).stat().st_mtime > UNLOCKED_AGE_S
    except FileNotFoundError:
        return False
    return old and not _alive(int(pid))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


def _remove(where: Path, names: list[str]) -> list[Path]:
    """Delete the folders ``names``; returns those gone (another user's, in a shared /tmp, are not this one's to)."""
    removed = []
    for path in (where / n for n in names):
        shutil.rmtree(path, ignore_errors=True)
        if path.exists():
            log.debug("could not remove %s, the temp folder of a process that ended without removing it", path)
            continue
        log.info("removed %s, the temp folder of a process that ended without removing it (killed)", path)
        removed.append(path)
    return removed
