"""The view store port: where live, shadow and previous views, run records and checkpoints live.

Table names per view ``V``: ``V`` (live), ``V__shadow`` (rebuilt, awaiting cutover),
``V__previous`` (kept for rollback); a partial shadow or previous also has ``V__shadow_scope`` /
``V__previous_scope``: the scope keys it replaces (rows of live matching them are swapped).
``_rebuild_runs`` has a row per run, ``_checkpoints`` one per (view, role) with role in
shadow / live / previous. ``_backfills`` has a row per chunk (or key bucket) of a long job plus
a header row (item -1) pinning the job's lake snapshot; each chunk's row is written in the same
transaction as the chunk's rows. ``V__building`` holds a bucketed full run in progress.
"""

from __future__ import annotations

import contextlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from lake.sql import quote
from rebuild.locks import Holder

SHADOW, LIVE, PREVIOUS = "shadow", "live", "previous"
#: the statuses of runs whose table is there (live, previous, a shadow, an unfinished backfill's shadow)
HELD = ("live", "previous", "shadow", "backfill")
DROPPED = "dropped"  # the status a HELD run takes when its view is dropped: `rebuild runs` said live of no table
EMPTY = "empty"  # the status of a run whose patch changes nothing: its cutover only moved live's position


def shadow_name(view: str) -> str:
    return f"{view}__shadow"


def previous_name(view: str) -> str:
    return f"{view}__previous"


def scope_name(table: str) -> str:
    return f"{table}_scope"


def building_name(view: str) -> str:
    """The table a bucketed full run appends to before it becomes the shadow."""
    return f"{view}__building"


def view_tables(view: str) -> tuple[str, ...]:
    """Every table of ``view``'s life-cycle (live, shadow, previous, their scopes, a bucketed run's)."""
    return (view, shadow_name(view), scope_name(shadow_name(view)), previous_name(view),
            scope_name(previous_name(view)), building_name(view))


def scope_match(scope: str, columns: Sequence[str], null_safe: bool = True) -> str:
    """Rows ``t`` whose scope columns appear in ``scope``: NULL-safe, or with ``=`` where the scope
    holds no NULL (the same rows then; PostgreSQL hashes ``=`` but joins ``IS NOT DISTINCT FROM`` in a
    nested loop, every row of live against every key of the scope)."""
    match = "IS NOT DISTINCT FROM" if null_safe else "="
    terms = " AND ".join(f"s.{quote(c)} {match} t.{quote(c)}" for c in columns)
    return f"EXISTS (SELECT 1 FROM {quote(scope)} s WHERE {terms})"


@dataclass(frozen=True)
class Checkpoint:
    """What a view (in one role) was built from: the lake position and the projection's code."""

    view: str
    role: str
    run_id: str
    lake_version: int
    delta_version: int
    projection_version: int
    fingerprint: str
    kind: str
    rows: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class RunRecord:
    """One row of ``_rebuild_runs``."""

    run_id: str
    view: str
    mode: str
    strategy: str
    kind: str
    status: str
    plan: str
    lake_version: int
    delta_version: int
    projection_version: int
    fingerprint: str
    events_read: int
    rows_written: int
    scope_rows: int
    started_at: datetime
    finished_at: datetime
    seconds: float
    forced: bool = False
    verdict: str | None = None
    report: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def planned(self) -> dict[str, Any]:
        """The plan the run executed, as ``rebuild plan --json`` gives it (``{}``: none recorded)."""
        return dict(json.loads(self.plan or "{}"))

    def report_files(self) -> dict[str, str | None]:
        """The check report's two files, as ``--json`` names them everywhere: ``report`` is the HTML's path
        here and in the demo but an object of both paths in ``rebuild check``. The JSON is written beside
        the HTML under the same name (``CheckReport.write``)."""
        html = self.report
        return {"report_html": html, "report_json": None if html is None else str(Path(html).with_suffix(".json"))}


def settled(runs: Sequence[RunRecord], views: Collection[str]) -> list[RunRecord]:
    """``runs`` with the status ``DROPPED`` where it is still ``HELD`` though its view has no checkpoint left
    (not in ``views``): a view dropped before 2026-11-25 left its runs live, a shadow or an unfinished backfill,
    which `rebuild runs` listed as such and prune never forgot."""
    return [replace(r, status=DROPPED) if r.status in HELD and r.view not in views else r for r in runs]


@dataclass(frozen=True)
class Mark:
    """One row of ``_backfills``: a chunk (or key bucket) of a long job, or its header (item -1).

    ``kind`` is ``backfill`` (event-time chunks) or ``buckets`` (a bucketed full run); ``status``
    is ``started`` / ``finished`` for a header and ``done`` for a chunk; ``params`` (JSON) says
    what the job was asked, so a rerun of the same command finds it and resumes.
    """

    job_id: str
    view: str
    kind: str
    item: int
    label: str
    status: str
    delta_version: int
    lake_version: int
    run_id: str
    rows: int
    params: str
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


RUN_COLUMNS = tuple(RunRecord.__dataclass_fields__)
CHECKPOINT_COLUMNS = tuple(Checkpoint.__dataclass_fields__)
MARK_COLUMNS = tuple(Mark.__dataclass_fields__)


@dataclass(frozen=True)
class Published:
    """What a publish wrote: rows in the shadow and scope keys (0 for a full shadow)."""

    rows: int
    scope_rows: int
    extra: dict[str, Any] = field(default_factory=dict)


#: builds the run record and the shadow checkpoint from what a publish wrote
MakeRecord = Callable[[Published], tuple[RunRecord, Checkpoint]]


class Store(ABC):
    """A place for views. The replay computes in DuckDB; the store keeps what it publishes."""

    uri: str

    @abstractmethod
    def compute(self) -> duckdb.DuckDBPyConnection:
        """The DuckDB connection the replay runs in (the store's own, or a local scratch one)."""

    def landing(self, view: str) -> str | None:
        """A table of the store's own where a full run may write its rows on ``compute()``'s
        connection, so that publishing renames instead of copying; None: a temp table."""
        return None

    def landing_writes(self) -> contextlib.AbstractContextManager[None]:
        """Around the writes to the landing table: a failed write there is a ``StoreError``."""
        return contextlib.nullcontext()

    @abstractmethod
    def publish(
        self,
        con: duckdb.DuckDBPyConnection,
        view: str,
        rows: str,
        scope: str | None,
        scope_columns: Sequence[str],
        key: Sequence[str],
        make_record: MakeRecord,
        *,
        append: bool = False,
        mark: Mark | None = None,
    ) -> Published:
        """In one transaction: the shadow from relation ``rows`` (and its scope), the run record
        and the shadow checkpoint. ``make_record(Published) -> (RunRecord, Checkpoint)``.

        ``append=True`` merges into the existing partial shadow instead: its rows in the new
        scope are replaced by ``rows`` and the scopes are united (a run record with the same
        run_id is replaced). ``mark`` is written to ``_backfills`` in the same transaction.
        """

    def stage(self, con: duckdb.DuckDBPyConnection, view: str, rows: str, mark: Mark, *, reset: bool) -> None:
        """In one transaction: append relation ``rows`` to ``VIEW__building`` (emptied first when
        ``reset``) and write ``mark``. Live and the shadow are not touched."""
        raise NotImplementedError(f"{type(self).__name__} cannot stage bucketed runs")

    def publish_staged(self, view: str, make_record: MakeRecord, mark: Mark | None = None) -> Published:
        """In one transaction: ``VIEW__building`` becomes the (full) shadow, with run record,
        checkpoint and ``mark``."""
        raise NotImplementedError(f"{type(self).__name__} cannot stage bucketed runs")

    def marks(self, view: str, job_id: str | None = None) -> list[Mark]:
        """Rows of ``_backfills`` for ``view`` (one job's when ``job_id``), by job and item."""
        raise NotImplementedError(f"{type(self).__name__} keeps no backfill checkpoints")

    def put_mark(self, mark: Mark) -> None:
        """Write (or replace) one ``_backfills`` row on its own."""
        raise NotImplementedError(f"{type(self).__name__} keeps no backfill checkpoints")

    def forget_jobs(self, job_ids: Sequence[str]) -> None:
        """Delete every ``_backfills`` row of these jobs, in one transaction."""
        raise NotImplementedError(f"{type(self).__name__} keeps no backfill checkpoints")

    @abstractmethod
    def cutover(self, view: str, run_id: str, forced: bool, keep: dict[str, Any] | None = None) -> Checkpoint:
        """In one transaction: live -> previous and shadow -> live (or apply a partial shadow).

        ``keep``: fields of live's checkpoint that stay live's instead of taking the shadow's
        (``lake_version`` and ``delta_version``: a targeted patch leaves the other rows where they
        were; ``projection_version`` and ``fingerprint``: a patch made by newer code leaves them the
        old code's). A patch that changes nothing (no row, and live none in its scope) leaves live
        and previous as they are (previous is still the last real cutover's rollback point), live's
        checkpoint takes the shadow's position (or the kept one), and the run's status becomes
        ``EMPTY``. Returns live's checkpoint."""

    @abstractmethod
    def rollback(self, view: str) -> Checkpoint | None:
        """In one transaction: swap previous and live back. Returns live's checkpoint, None when
        the restored view was built outside the workbench (a production consumer, say)."""

    @abstractmethod
    def drop_view(self, view: str) -> list[str]:
        """In one transaction: drop every table of ``view`` (``view_tables``, and a full run's landing
        table) and forget its checkpoints and backfill marks; its run records stay, for history (prune
        forgets them), those of a table dropped (``HELD``) with status ``DROPPED``. Returns the tables dropped."""

    @abstractmethod
    def checkpoint(self, view: str, role: str) -> Checkpoint | None: ...

    @abstractmethod
    def views(self) -> list[str]:
        """The views that have a checkpoint (live, shadow or previous), whatever projections exist."""

    @abstractmethod
    def runs(self, view: str | None = None, limit: int = 20) -> list[RunRecord]: ...

    @abstractmethod
    def run(self, run_id: str) -> RunRecord | None: ...

    @abstractmethod
    def set_verdict(self, run_id: str, verdict: str, report: str | None) -> None: ...

    @abstractmethod
    def forget_runs(self, run_ids: Sequence[str]) -> None:
        """Delete these run records and their backfill marks, in one transaction."""

    @abstractmethod
    def exists(self, table: str) -> bool: ...

    @abstractmethod
    def count(self, table: str) -> int: ...

    @abstractmethod
    def read(self, table: str) -> pa.Table: ...

    @abstractmethod
    def relation(self, con: duckdb.DuckDBPyConnection, table: str, scope: str | None = None) -> duckdb.DuckDBPyRelation:
        """``table`` as a relation on ``con`` (for checks, which compute in DuckDB); with ``scope`` (a
        table of this store), only the rows whose scope columns it holds: a patch's check needs live's
        rows of the patch's keys, not a copy of every row of a large live view."""

    def relation_of_keys(self, con: duckdb.DuckDBPyConnection, table: str, keys: str,
                         columns: Sequence[str]) -> duckdb.DuckDBPyRelation:
        """The rows of ``table`` whose ``columns`` appear in ``keys`` (a table on ``con``), as a relation
        on ``con``: a merge catch-up needs live's rows of its new events' keys, not all of live. Matched
        on ``con`` here; a store that keeps its tables elsewhere sends the keys there instead."""
        return self.relation(con, table).set_alias("t").filter(scope_match(keys, columns))

    @abstractmethod
    def write_table(self, table: str, data: pa.Table) -> None:
        """Replace ``table`` with ``data`` (used to load a live view built elsewhere)."""

    def check_view_name(self, view: str) -> None:
        """Refuse ``view`` before a run or backfill does any work when this store cannot name its tables
        (``view_tables``); every name can be, here."""

    @contextlib.contextmanager
    def lock(self, view: str, purpose: str) -> Iterator[Holder | None]:
        """Exclusive use of ``view`` (run, backfill, cutover); the base store does not lock."""
        yield None

    def close(self) -> None:
        """Release connections."""
