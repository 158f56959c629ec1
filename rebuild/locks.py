"""One lock per view: a second run, backfill or cutover on the same view is refused.

Two kinds, same behaviour:

- ``FileLocks`` (DuckDB and Parquet stores): ``DIR/VIEW.lock`` held with ``fcntl.flock``. The
  kernel releases the lock when its process dies, however it dies, so a crashed holder never
  blocks anyone; the JSON holder info it leaves behind is noticed and logged when the next
  process takes the lock over.
- ``PostgresLocks``: ``pg_try_advisory_lock`` on a session of its own (PostgreSQL releases it
  when that session ends, also when the process is killed) plus a holder row in
  ``_rebuild_locks`` so the refusal can say who holds it.

A refusal raises :class:`rebuild.errors.ViewLocked` naming the holder: pid, host, start, purpose.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rebuild.errors import ViewLocked

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Holder:
    """Who holds (or held) a view's lock."""

    view: str
    purpose: str
    pid: int
    host: str
    started_at: str

    @classmethod
    def me(cls, view: str, purpose: str) -> Holder:
        return cls(view=view, purpose=purpose, pid=os.getpid(), host=socket.gethostname(),
                   started_at=datetime.now(UTC).isoformat(timespec="seconds"))

    @classmethod
    def parse(cls, text: str) -> Holder | None:
        try:
            data = json.loads(text)
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})
        except (ValueError, KeyError, TypeError):
            return None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    def describe(self) -> str:
        return f"{self.purpose} by pid {self.pid} on {self.host} since {self.started_at}"

    def alive(self) -> bool | None:
        """Whether the holder's process still runs (None when it is on another host)."""
        if self.host != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True


def refused(view: str, holder: Holder | None, purpose: str) -> ViewLocked:
    """The error for a refused lock, naming the holder and what to do."""
    who = holder.describe() if holder else "another process (holder not recorded yet)"
    return ViewLocked(
        f"{view} is locked: {who}. Wait for it to finish, or stop that process; a lock left by a "
        f"dead process is taken over automatically. ({purpose} refused)",
        view=view, holder=holder, purpose=purpose,
    )


def log_takeover(view: str, stale: Holder | None) -> None:
    if stale is not None:
        state = {False: "is gone", None: "is on another host", True: "no longer holds it"}[stale.alive()]
        log.warning("lock of %s taken over: it was left by %s, whose process %s", view, stale.describe(), state)


class FileLocks:
    """Per-view lock files in ``directory`` (next to the store)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def path(self, view: str) -> Path:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in view)
        return self.directory / f"{safe}.lock"

    @contextlib.contextmanager
    def hold(self, view: str, purpose: str) -> Iterator[Holder]:
        """Hold ``view``'s lock for the ``with`` block, or raise ViewLocked naming the holder."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path(view), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise refused(view, Holder.parse(_read(fd)), purpose) from None
            log_takeover(view, Holder.parse(_read(fd)))
            me = Holder.me(view, purpose)
            _write(fd, me.to_json())
            try:
                yield me
            finally:
                _write(fd, "")
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def holders(self) -> list[Holder]:
        """Holders of the locks that are held right now (for error messages)."""
        found = []
        for path in sorted(self.directory.glob("*.lock")) if self.directory.is_dir() else []:
            fd = os.open(path, os.O_RDONLY)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                    fcntl.flock(fd, fcntl.LOCK_UN)
                except BlockingIOError:
                    holder = Holder.parse(_read(fd))
                    if holder is not None:
                        found.append(holder)
            finally:
                os.close(fd)
        return found


def _read(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 65536).decode("utf-8", "replace")


def _write(fd: int, text: str) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, text.encode("utf-8"), 0)
    os.fsync(fd)


LOCKS_DDL = """CREATE TABLE IF NOT EXISTS _rebuild_locks (
    view VARCHAR PRIMARY KEY, purpose VARCHAR, pid BIGINT, host VARCHAR, started_at VARCHAR)"""


class PostgresLocks:
    """Advisory locks of one PostgreSQL schema; ``connect()`` gives a new autocommit psycopg session."""

    def __init__(self, connect: Any, schema: str) -> None:
        self.connect = connect
        self.schema = schema

    @contextlib.contextmanager
    def hold(self, view: str, purpose: str) -> Iterator[Holder]:
        """Hold ``view``'s advisory lock on a session of its own, or raise ViewLocked."""
        conn = self.connect()
        try:
            key = f"{self.schema}.{view}"
            got = conn.execute("SELECT pg_try_advisory_lock(hashtext('rebuild'), hashtext(%s))", (key,)).fetchone()
            if not got or not got[0]:
                raise refused(view, self._holder(conn, view), purpose)
            log_takeover(view, self._holder(conn, view))
            me = Holder.me(view, purpose)
            self._record(conn, me)
            try:
                yield me
            finally:
                conn.execute("DELETE FROM _rebuild_locks WHERE view = %s", (view,))
                conn.execute("SELECT pg_advisory_unlock(hashtext('rebuild'), hashtext(%s))", (key,))
        finally:
            conn.close()

    def _holder(self, conn: Any, view: str) -> Holder | None:
        row = conn.execute(
            "SELECT view, purpose, pid, host, started_at FROM _rebuild_locks WHERE view = %s", (view,)
        ).fetchone()
        return Holder(*row) if row else None

    def _record(self, conn: Any, me: Holder) -> None:
        with conn.transaction():
            conn.execute("DELETE FROM _rebuild_locks WHERE view = %s", (me.view,))
            conn.execute(
                "INSERT INTO _rebuild_locks (view, purpose, pid, host, started_at) VALUES (%s, %s, %s, %s, %s)",
                (me.view, me.purpose, me.pid, me.host, me.started_at),
            )
