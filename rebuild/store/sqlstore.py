"""The SQL shared by stores that speak SQL (DuckDB, PostgreSQL): metadata tables, cutover, rollback.

A subclass provides ``_exec`` / ``_query`` in its own transaction and dialect details; cutover and
rollback are the same statements everywhere, each run inside one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from lake.sql import literal, quote
from rebuild.errors import StoreError
from rebuild.store.base import (
    CHECKPOINT_COLUMNS,
    LIVE,
    PREVIOUS,
    RUN_COLUMNS,
    SHADOW,
    Checkpoint,
    RunRecord,
    Store,
    previous_name,
    scope_name,
    shadow_name,
)

RUNS_DDL = """CREATE TABLE IF NOT EXISTS _rebuild_runs (
    run_id VARCHAR PRIMARY KEY, view VARCHAR, mode VARCHAR, strategy VARCHAR, kind VARCHAR,
    status VARCHAR, plan VARCHAR, lake_version BIGINT, delta_version BIGINT,
    projection_version INTEGER, fingerprint VARCHAR, events_read BIGINT, rows_written BIGINT,
    scope_rows BIGINT, started_at TIMESTAMPTZ, finished_at TIMESTAMPTZ, seconds DOUBLE PRECISION,
    forced BOOLEAN, verdict VARCHAR, report VARCHAR, error VARCHAR)"""
CHECKPOINTS_DDL = """CREATE TABLE IF NOT EXISTS _checkpoints (
    view VARCHAR, role VARCHAR, run_id VARCHAR, lake_version BIGINT, delta_version BIGINT,
    projection_version INTEGER, fingerprint VARCHAR, kind VARCHAR, rows BIGINT,
    PRIMARY KEY (view, role))"""


def scope_match(target: str, scope: str, columns: Sequence[str]) -> str:
    """Rows of ``target`` whose scope columns appear in ``scope`` (NULL-safe)."""
    terms = " AND ".join(f"s.{quote(c)} IS NOT DISTINCT FROM t.{quote(c)}" for c in columns)
    return f"EXISTS (SELECT 1 FROM {quote(scope)} s WHERE {terms})"


class SQLStore(Store):
    """Cutover, rollback and the metadata tables, in SQL both DuckDB and PostgreSQL run."""

    # -- dialect hooks -------------------------------------------------------------------------
    def _exec(self, sql: str) -> None:
        raise NotImplementedError

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _begin(self) -> None:
        self._exec("BEGIN")

    def _commit(self) -> None:
        self._exec("COMMIT")

    def _rollback(self) -> None:
        self._exec("ROLLBACK")

    def _columns(self, table: str) -> list[str]:
        raise NotImplementedError

    def _init_meta(self) -> None:
        self._exec(RUNS_DDL)
        self._exec(CHECKPOINTS_DDL)

    # -- metadata ------------------------------------------------------------------------------
    def _insert_run(self, record: RunRecord) -> None:
        values = ", ".join(literal(getattr(record, c)) for c in RUN_COLUMNS)
        self._exec(f"INSERT INTO _rebuild_runs ({', '.join(RUN_COLUMNS)}) VALUES ({values})")

    def _put_checkpoint(self, cp: Checkpoint) -> None:
        self._exec(f"DELETE FROM _checkpoints WHERE view = {literal(cp.view)} AND role = {literal(cp.role)}")
        values = ", ".join(literal(getattr(cp, c)) for c in CHECKPOINT_COLUMNS)
        self._exec(f"INSERT INTO _checkpoints ({', '.join(CHECKPOINT_COLUMNS)}) VALUES ({values})")

    def _move_checkpoint(self, view: str, source: str, target: str) -> None:
        self._exec(f"DELETE FROM _checkpoints WHERE view = {literal(view)} AND role = {literal(target)}")
        self._exec(
            f"UPDATE _checkpoints SET role = {literal(target)} "
            f"WHERE view = {literal(view)} AND role = {literal(source)}"
        )

    def checkpoint(self, view: str, role: str) -> Checkpoint | None:
        rows = self._query(
            f"SELECT {', '.join(CHECKPOINT_COLUMNS)} FROM _checkpoints "
            f"WHERE view = {literal(view)} AND role = {literal(role)}"
        )
        return Checkpoint(*rows[0]) if rows else None

    def runs(self, view: str | None = None, limit: int = 20) -> list[RunRecord]:
        where = f"WHERE view = {literal(view)}" if view else ""
        rows = self._query(
            f"SELECT {', '.join(RUN_COLUMNS)} FROM _rebuild_runs {where} "
            f"ORDER BY started_at DESC LIMIT {int(limit)}"
        )
        return [RunRecord(*r) for r in rows]

    def run(self, run_id: str) -> RunRecord | None:
        rows = self._query(f"SELECT {', '.join(RUN_COLUMNS)} FROM _rebuild_runs WHERE run_id = {literal(run_id)}")
        return RunRecord(*rows[0]) if rows else None

    def set_verdict(self, run_id: str, verdict: str, report: str | None) -> None:
        self._exec(
            f"UPDATE _rebuild_runs SET verdict = {literal(verdict)}, report = {literal(report)} "
            f"WHERE run_id = {literal(run_id)}"
        )

    def _set_status(self, run_id: str, status: str, forced: bool | None = None) -> None:
        extra = f", forced = {literal(forced)}" if forced is not None else ""
        self._exec(f"UPDATE _rebuild_runs SET status = {literal(status)}{extra} WHERE run_id = {literal(run_id)}")

    # -- cutover and rollback ------------------------------------------------------------------
    def cutover(self, view: str, run_id: str, forced: bool) -> Checkpoint:
        shadow = self.checkpoint(view, SHADOW)
        if shadow is None or shadow.run_id != run_id or not self.exists(shadow_name(view)):
            raise StoreError(
                f"{view} has no shadow of run {run_id} to cut over; run `rebuild run {view}` first",
                view=view,
            )
        live_cp = self.checkpoint(view, LIVE)
        self._begin()
        try:
            if shadow.kind == "full":
                self._swap_full(view)
            else:
                self._apply_patch(view)
            self._move_checkpoint(view, LIVE, PREVIOUS)
            self._move_checkpoint(view, SHADOW, LIVE)
            if live_cp is not None:
                self._set_status(live_cp.run_id, "previous")
            self._set_status(run_id, "live", forced)
            self._commit()
        except BaseException:
            self._rollback()
            raise
        cp = self.checkpoint(view, LIVE)
        assert cp is not None
        return cp

    def _swap_full(self, view: str) -> None:
        previous, shadow = previous_name(view), shadow_name(view)
        self._drop(previous)
        self._drop(scope_name(previous))
        if self.exists(view):
            self._rename(view, previous)
        self._rename(shadow, view)

    def _apply_patch(self, view: str) -> None:
        """Replace live's rows in the shadow's scope with the shadow; keep the old ones as previous."""
        if not self.exists(view):
            raise StoreError(
                f"{view} has no live view to apply a partial shadow to; run `rebuild run {view} --full` "
                "and cut that over first",
                view=view,
            )
        previous, shadow = previous_name(view), shadow_name(view)
        scope = scope_name(shadow)
        columns = self._scope_columns(scope)
        self._drop(previous)
        self._drop(scope_name(previous))
        self._exec(f"CREATE TABLE {quote(previous)} AS SELECT * FROM {quote(view)} t WHERE {scope_match(view, scope, columns)}")
        self._rename(scope, scope_name(previous))
        self._replace_scope(view, shadow, scope_name(previous), columns)
        self._drop(shadow)

    def _replace_scope(self, view: str, rows: str, scope: str, columns: Sequence[str]) -> None:
        names = ", ".join(quote(c) for c in self._columns(view))
        self._exec(f"DELETE FROM {quote(view)} t WHERE {scope_match(view, scope, columns)}")
        self._exec(f"INSERT INTO {quote(view)} ({names}) SELECT {names} FROM {quote(rows)}")

    def _scope_columns(self, scope: str) -> list[str]:
        return self._columns(scope)

    def rollback(self, view: str) -> Checkpoint:
        previous = previous_name(view)
        prev_cp, live_cp = self.checkpoint(view, PREVIOUS), self.checkpoint(view, LIVE)
        if not self.exists(previous) or prev_cp is None:
            raise StoreError(f"{view} has nothing to roll back to (no {previous})", view=view)
        self._begin()
        try:
            if self.exists(scope_name(previous)):
                self._swap_patch_back(view)
            else:
                self._rename(view, f"{view}__swap")
                self._rename(previous, view)
                self._rename(f"{view}__swap", previous)
            self._move_checkpoint(view, LIVE, "swap")
            self._move_checkpoint(view, PREVIOUS, LIVE)
            self._move_checkpoint(view, "swap", PREVIOUS)
            if live_cp is not None:
                self._set_status(live_cp.run_id, "rolled_back")
            self._set_status(prev_cp.run_id, "live")
            self._commit()
        except BaseException:
            self._rollback()
            raise
        cp = self.checkpoint(view, LIVE)
        assert cp is not None
        return cp

    def _swap_patch_back(self, view: str) -> None:
        """Live's rows in the scope go back to previous's, and the replaced ones become previous."""
        previous = previous_name(view)
        scope = scope_name(previous)
        columns = self._scope_columns(scope)
        self._exec(f"CREATE TABLE {quote(view + '__swap')} AS SELECT * FROM {quote(view)} t WHERE {scope_match(view, scope, columns)}")
        self._replace_scope(view, previous, scope, columns)
        self._drop(previous)
        self._rename(view + "__swap", previous)

    # -- helpers -------------------------------------------------------------------------------
    def _drop(self, table: str) -> None:
        self._exec(f"DROP TABLE IF EXISTS {quote(table)}")

    def _rename(self, old: str, new: str) -> None:
        self._exec(f"ALTER TABLE {quote(old)} RENAME TO {quote(new)}")

    def _record_publish(self, record: RunRecord, checkpoint: Checkpoint) -> None:
        self._exec(
            f"UPDATE _rebuild_runs SET status = 'superseded' "
            f"WHERE view = {literal(record.view)} AND status = 'shadow'"
        )
        self._insert_run(record)
        self._put_checkpoint(checkpoint)


def now() -> datetime:
    return datetime.now(UTC)


def plan_json(plan: dict[str, Any]) -> str:
    return json.dumps(plan, default=str)
