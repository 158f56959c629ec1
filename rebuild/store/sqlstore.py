"""The SQL shared by stores that speak SQL (DuckDB, PostgreSQL): metadata tables, cutover, rollback.

A subclass provides ``_exec`` / ``_query`` in its own transaction and dialect details; cutover and
rollback are the same statements everywhere, each run inside one transaction.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import duckdb

from lake.sql import literal, quote
from rebuild.errors import StoreError
from rebuild.faults import point
from rebuild.store.base import (
    CHECKPOINT_COLUMNS,
    DROPPED,
    EMPTY,
    HELD,
    LIVE,
    MARK_COLUMNS,
    MakeRecord,
    PREVIOUS,
    RUN_COLUMNS,
    SHADOW,
    Checkpoint,
    Mark,
    Published,
    RunRecord,
    Store,
    building_name,
    previous_name,
    scope_match,
    scope_name,
    shadow_name,
    view_tables,
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
BACKFILLS_DDL = """CREATE TABLE IF NOT EXISTS _backfills (
    job_id VARCHAR, view VARCHAR, kind VARCHAR, item INTEGER, label VARCHAR, status VARCHAR,
    delta_version BIGINT, lake_version BIGINT, run_id VARCHAR, rows BIGINT, params VARCHAR,
    updated_at TIMESTAMPTZ, PRIMARY KEY (job_id, item))"""


def check_patch_columns(view: str, live: Sequence[str], shadow: Sequence[str]) -> None:
    """A partial shadow patches live row by row: refuse when their columns differ (a live view
    made elsewhere, say), which would drop the shadow's other columns or fail half-way."""
    if set(live) != set(shadow):
        raise StoreError(
            f"the partial shadow of {view} cannot patch live {view}: their columns differ (only in the shadow: "
            f"{sorted(set(shadow) - set(live))}, only in live: {sorted(set(live) - set(shadow))}); "
            f"run `rebuild run {view} --full` and cut that over instead, which replaces live whole",
            view=view,
        )


def check_patch_types(view: str, live: dict[str, str], shadow: dict[str, str], rows: str,
                      query: Callable[[str], list[tuple[Any, ...]]]) -> None:
    """A partial shadow's rows go into live's columns, cast to live's types: refuse a column typed
    otherwise (retyped since live was built) when the cast changes a value of the patch, naming one:
    3.25 into a BIGINT column is 3, and live kept the value the check showed corrected. A value the
    cast cannot convert at all raises the dialect's error (``SQLStore._value_errors``)."""
    for column, live_type in live.items():
        if shadow[column] == live_type:
            continue
        c = quote(column)
        changed = query(f"SELECT {c}, CAST({c} AS {live_type}) FROM {rows} "
                        f"WHERE CAST(CAST({c} AS {live_type}) AS {shadow[column]}) IS DISTINCT FROM {c} LIMIT 1")
        if changed:
            raise patch_does_not_fit(view, f"{column} is {shadow[column]} in the shadow and {live_type} in live, "
                                           f"into which {changed[0][0]!r} becomes {changed[0][1]!r}")


def patch_does_not_fit(view: str, problem: Exception | str) -> StoreError:
    """A partial shadow's value that live's column type cannot hold (its types came from its own
    values, as a Python fold's without ``output=`` do, or the projection retyped the column since
    live was built): the cutover is rolled back."""
    reason = str(problem).strip().splitlines()[0]
    return StoreError(
        f"the partial shadow of {view} does not fit live {view}'s column types ({reason}); nothing was changed. "
        f"Declare the column types with output={{column: TYPE}} in the projection, or run `rebuild run {view} --full` "
        "and cut that over instead, which replaces live whole",
        view=view,
    )


class SQLStore(Store):
    """Cutover, rollback and the metadata tables, in SQL both DuckDB and PostgreSQL run."""

    #: the dialect's errors for a value that does not convert to a column's type
    _value_errors: tuple[type[Exception], ...] = ()

    # -- dialect hooks -------------------------------------------------------------------------
    def _exec(self, sql: str) -> None:
        raise NotImplementedError

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _begin(self) -> None:
        self._exec("BEGIN")

    def _commit(self) -> None:
        self._exec("COMMIT")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """BEGIN ... COMMIT, or ROLLBACK on any error (the error is re-raised)."""
        self._begin()
        try:
            yield
            self._commit()
        except BaseException:
            self._rollback()
            raise

    def _rollback(self) -> None:
        self._exec("ROLLBACK")

    def _columns(self, table: str) -> list[str]:
        return list(self._types(table))

    def _types(self, table: str) -> dict[str, str]:
        """Each column of ``table`` with its type, as this dialect writes it in a CAST."""
        raise NotImplementedError

    def _init_meta(self) -> None:
        self._exec(RUNS_DDL)
        self._exec(CHECKPOINTS_DDL)
        self._exec(BACKFILLS_DDL)

    def _ship(self, con: duckdb.DuckDBPyConnection, view: str, rows: str, scope: str | None,
              scope_columns: Sequence[str]) -> tuple[str, str | None]:
        """Make ``rows`` (and the distinct scope) readable by this store's SQL: table names."""
        raise NotImplementedError

    def _unship(self, view: str) -> None:
        """Drop what ``_ship`` made, if anything is left."""

    def _take(self, incoming: str, target: str) -> None:
        """``incoming`` becomes table ``target`` (which does not exist), inside the transaction."""
        raise NotImplementedError

    # -- publishing ----------------------------------------------------------------------------
    def publish(self, con: duckdb.DuckDBPyConnection, view: str, rows: str, scope: str | None,
                scope_columns: Sequence[str], key: Sequence[str], make_record: MakeRecord, *,
                append: bool = False, mark: Mark | None = None) -> Published:
        shadow, shadow_scope = shadow_name(view), scope_name(shadow_name(view))
        append = append and scope is not None and self.exists(shadow_scope)
        incoming, incoming_scope = self._ship(con, view, rows, scope, scope_columns)
        try:
            with self._transaction():
                if append:
                    assert incoming_scope is not None
                    self._merge_patch(shadow, incoming, incoming_scope, scope_columns)
                else:
                    self._drop(shadow)
                    self._drop(shadow_scope)
                    self._take(incoming, shadow)
                    if incoming_scope is not None:
                        self._take(incoming_scope, shadow_scope)
                scope_rows = self.count(shadow_scope) if scope is not None else 0
                published = Published(rows=self.count(shadow), scope_rows=scope_rows)
                self._record_publish(*make_record(published), mark)
                point("publish.before_commit")
        finally:
            self._unship(view)
        return published

    def _merge_patch(self, shadow: str, incoming: str, incoming_scope: str, columns: Sequence[str]) -> None:
        """The shadow's rows in the incoming scope are replaced; the scopes are united."""
        self._replace_scope(shadow, incoming, incoming_scope, columns)
        target = scope_name(shadow)
        names = ", ".join(quote(c) for c in columns)
        self._exec(
            f"INSERT INTO {quote(target)} ({names}) SELECT {names} FROM {quote(incoming_scope)} t "
            f"WHERE NOT {self._in_scope(target, columns)}"
        )

    def stage(self, con: duckdb.DuckDBPyConnection, view: str, rows: str, mark: Mark, *, reset: bool) -> None:
        building = building_name(view)
        incoming, _ = self._ship(con, view, rows, None, ())
        try:
            with self._transaction():
                if reset or not self.exists(building):
                    self._drop(building)
                    self._take(incoming, building)
                else:
                    names = ", ".join(quote(c) for c in self._columns(building))
                    self._exec(f"INSERT INTO {quote(building)} ({names}) SELECT {names} FROM {quote(incoming)}")
                self._put_mark(mark)
                point("stage.before_commit")
        finally:
            self._unship(view)

    def publish_staged(self, view: str, make_record: MakeRecord, mark: Mark | None = None) -> Published:
        building, shadow = building_name(view), shadow_name(view)
        if not self.exists(building):
            raise StoreError(f"{view} has no bucketed run in progress ({building} is missing)", view=view)
        with self._transaction():
            self._drop(shadow)
            self._drop(scope_name(shadow))
            self._rename(building, shadow)
            published = Published(rows=self.count(shadow), scope_rows=0)
            self._record_publish(*make_record(published), mark)
            point("publish_staged.before_commit")
        return published

    # -- long jobs -----------------------------------------------------------------------------
    def _put_mark(self, mark: Mark) -> None:
        self._exec(f"DELETE FROM _backfills WHERE job_id = {literal(mark.job_id)} AND item = {int(mark.item)}")
        values = ", ".join(literal(getattr(mark, c)) for c in MARK_COLUMNS)
        self._exec(f"INSERT INTO _backfills ({', '.join(MARK_COLUMNS)}) VALUES ({values})")

    def put_mark(self, mark: Mark) -> None:
        with self._transaction():
            self._put_mark(mark)

    def forget_jobs(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            with self._transaction():
                self._exec(f"DELETE FROM _backfills WHERE job_id IN ({', '.join(literal(j) for j in job_ids)})")

    def marks(self, view: str, job_id: str | None = None) -> list[Mark]:
        where = f"view = {literal(view)}" + (f" AND job_id = {literal(job_id)}" if job_id else "")
        rows = self._query(f"SELECT {', '.join(MARK_COLUMNS)} FROM _backfills WHERE {where} ORDER BY job_id, item")
        return [Mark(*r) for r in rows]

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

    def views(self) -> list[str]:
        return [str(r[0]) for r in self._query("SELECT DISTINCT view FROM _checkpoints ORDER BY 1")]

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

    def forget_runs(self, run_ids: Sequence[str]) -> None:
        if run_ids:
            with self._transaction():
                for table in ("_rebuild_runs", "_backfills"):
                    self._exec(f"DELETE FROM {table} WHERE run_id IN ({', '.join(literal(r) for r in run_ids)})")

    def _set_status(self, run_id: str, status: str, forced: bool | None = None) -> None:
        extra = f", forced = {literal(forced)}" if forced is not None else ""
        self._exec(f"UPDATE _rebuild_runs SET status = {literal(status)}{extra} WHERE run_id = {literal(run_id)}")

    # -- cutover and rollback ------------------------------------------------------------------
    def cutover(self, view: str, run_id: str, forced: bool, keep: dict[str, Any] | None = None) -> Checkpoint:
        shadow = self.checkpoint(view, SHADOW)
        if shadow is None or shadow.run_id != run_id or not self.exists(shadow_name(view)):
            raise StoreError(
                f"{view} has no shadow of run {run_id} to cut over; run `rebuild run {view}` first",
                view=view,
            )
        live_cp = self.checkpoint(view, LIVE)
        if shadow.kind != "full" and self.exists(view) and self._changes_nothing(view):
            return self._cut_over_nothing(view, shadow, forced, keep or {})
        with self._transaction():
            if shadow.kind == "full":
                self._swap_full(view)
            else:
                self._apply_patch(view)
            self._move_checkpoint(view, LIVE, PREVIOUS)
            self._move_checkpoint(view, SHADOW, LIVE)
            self._keep_live(view, keep or {})
            # the run that was previous is no rollback point any more (nor those an earlier version left so)
            self._exec(f"UPDATE _rebuild_runs SET status = 'superseded' WHERE view = {literal(view)} AND status = 'previous'")
            if live_cp is not None:
                self._set_status(live_cp.run_id, "previous")
            self._set_status(run_id, "live", forced)
            point("cutover.before_commit")
        cp = self.checkpoint(view, LIVE)
        assert cp is not None
        return cp

    def _changes_nothing(self, view: str) -> bool:
        """Whether the partial shadow has no row, and live none in its scope: nothing to add or delete."""
        shadow, scope = shadow_name(view), scope_name(shadow_name(view))
        if self.count(shadow):
            return False
        if not self.count(scope):
            return True
        return not self._query(f"SELECT count(*) FROM {quote(view)} t WHERE {self._in_scope(scope, self._scope_columns(scope))}")[0][0]

    def _cut_over_nothing(self, view: str, shadow: Checkpoint, forced: bool, keep: dict[str, Any]) -> Checkpoint:
        """A patch that changes nothing: drop it and move live's position; previous stays the rollback point."""
        with self._transaction():
            self._drop(shadow_name(view))
            self._drop(scope_name(shadow_name(view)))
            self._exec(f"DELETE FROM _checkpoints WHERE view = {literal(view)} AND role = {literal(SHADOW)}")
            self._keep_live(view, {"lake_version": shadow.lake_version, "delta_version": shadow.delta_version, **keep})
            self._set_status(shadow.run_id, EMPTY, forced)
            point("cutover.before_commit")
        return self.checkpoint(view, LIVE) or shadow

    def _keep_live(self, view: str, keep: dict[str, Any]) -> None:
        """Set these fields of live's checkpoint (``Store.cutover``'s ``keep``)."""
        if keep:
            values = ", ".join(f"{quote(field)} = {literal(value)}" for field, value in keep.items())
            self._exec(f"UPDATE _checkpoints SET {values} WHERE view = {literal(view)} AND role = {literal(LIVE)}")

    def _swap_full(self, view: str) -> None:
        previous, shadow = previous_name(view), shadow_name(view)
        self._drop(previous)
        self._drop(scope_name(previous))
        if not self.exists(view):
            self._rename(shadow, view)
            return
        named = self._carry(view, shadow)
        self._rename(view, previous)
        self._rename(shadow, view)
        named()

    def _carry(self, live: str, incoming: str) -> Callable[[], None]:
        """Give table ``incoming`` what ``live`` has besides its rows (grants, indexes, ...) before a full
        swap, inside its transaction, or refuse; the step returned runs once the two are swapped."""
        return lambda: None

    def _apply_patch(self, view: str) -> None:
        """Replace live's rows in the shadow's scope with the shadow; keep the old ones as previous."""
        if not self.exists(view):
            raise StoreError(
                f"{view} has no live view to apply a partial shadow to; run `rebuild run {view} --full` "
                "and cut that over first",
                view=view,
            )
        previous, shadow = previous_name(view), shadow_name(view)
        live_types, shadow_types = self._types(view), self._types(shadow)
        check_patch_columns(view, list(live_types), list(shadow_types))
        scope = scope_name(shadow)
        columns = self._scope_columns(scope)
        try:
            check_patch_types(view, live_types, shadow_types, quote(shadow), self._query)
            self._drop(previous)
            self._drop(scope_name(previous))
            self._exec(f"CREATE TABLE {quote(previous)} AS SELECT * FROM {quote(view)} t WHERE {self._in_scope(scope, columns)}")
            self._rename(scope, scope_name(previous))
            self._replace_scope(view, shadow, scope_name(previous), columns)
        except self._value_errors as exc:
            raise patch_does_not_fit(view, exc) from exc
        self._drop(shadow)

    def _replace_scope(self, view: str, rows: str, scope: str, columns: Sequence[str]) -> None:
        names = ", ".join(quote(c) for c in self._columns(view))
        self._exec(f"DELETE FROM {quote(view)} t WHERE {self._in_scope(scope, columns)}")
        self._exec(f"INSERT INTO {quote(view)} ({names}) SELECT {names} FROM {quote(rows)}")

    def _scope_columns(self, scope: str) -> list[str]:
        return self._columns(scope)

    def _select(self, table: str, scope: str | None = None) -> str:
        """The rows of ``table`` (those in ``scope``, when given) as SQL of this store."""
        rows = f"SELECT * FROM {quote(table)} t"
        return f"{rows} WHERE {self._in_scope(scope, self._scope_columns(scope))}" if scope else rows

    def _in_scope(self, scope: str, columns: Sequence[str]) -> str:
        """``scope_match`` for table ``scope`` of this store: NULL-safe only where it holds a NULL (a
        run's scopes never do: a view's keys are never NULL), so that PostgreSQL hashes the match."""
        nulls = " OR ".join(f"{quote(c)} IS NULL" for c in columns)
        null_safe = bool(self._query(f"SELECT EXISTS (SELECT 1 FROM {quote(scope)} WHERE {nulls})")[0][0])
        return scope_match(scope, columns, null_safe)

    def rollback(self, view: str) -> Checkpoint | None:
        previous = previous_name(view)
        prev_cp, live_cp = self.checkpoint(view, PREVIOUS), self.checkpoint(view, LIVE)
        if not self.exists(previous):
            raise StoreError(f"{view} has nothing to roll back to (no {previous})", view=view)
        with self._transaction():
            if self.exists(scope_name(previous)):
                self._swap_patch_back(view)
            else:
                named = self._carry(view, previous)
                self._rename(view, f"{view}__swap")
                self._rename(previous, view)
                self._rename(f"{view}__swap", previous)
                named()
            self._move_checkpoint(view, LIVE, "swap")
            self._move_checkpoint(view, PREVIOUS, LIVE)
            self._move_checkpoint(view, "swap", PREVIOUS)
            if live_cp is not None:
                self._set_status(live_cp.run_id, "rolled_back")
            if prev_cp is not None:  # None: previous was built outside the workbench
                self._set_status(prev_cp.run_id, "live")
        return self.checkpoint(view, LIVE)

    def _swap_patch_back(self, view: str) -> None:
        """Live's rows in the scope go back to previous's, and the replaced ones become previous."""
        previous = previous_name(view)
        scope = scope_name(previous)
        columns = self._scope_columns(scope)
        self._exec(f"CREATE TABLE {quote(view + '__swap')} AS SELECT * FROM {quote(view)} t WHERE {self._in_scope(scope, columns)}")
        self._replace_scope(view, previous, scope, columns)
        self._drop(previous)
        self._rename(view + "__swap", previous)

    def drop_view(self, view: str) -> list[str]:
        landing = self.landing(view)
        tables = [t for t in (*view_tables(view), *([landing] if landing else [])) if self.exists(t)]
        with self._transaction():
            for table in tables:
                self._drop(table)
            for meta in ("_checkpoints", "_backfills"):
                self._exec(f"DELETE FROM {meta} WHERE view = {literal(view)}")
            self._exec(f"UPDATE _rebuild_runs SET status = {literal(DROPPED)} WHERE view = {literal(view)} "
                       f"AND status IN ({', '.join(map(literal, HELD))})")
        return tables

    # -- helpers -------------------------------------------------------------------------------
    def _drop(self, table: str) -> None:
        self._exec(f"DROP TABLE IF EXISTS {quote(table)}")

    def _rename(self, old: str, new: str) -> None:
        self._exec(f"ALTER TABLE {quote(old)} RENAME TO {quote(new)}")

    def _record_publish(self, record: RunRecord, checkpoint: Checkpoint, mark: Mark | None = None) -> None:
        self._exec(
            f"UPDATE _rebuild_runs SET status = 'superseded' WHERE view = {literal(record.view)} "
            f"AND status IN ('shadow', 'backfill') AND run_id <> {literal(record.run_id)}"
        )
        self._exec(f"DELETE FROM _rebuild_runs WHERE run_id = {literal(record.run_id)}")
        self._insert_run(record)
        self._put_checkpoint(checkpoint)
        if mark is not None:
            self._put_mark(mark)


def now() -> datetime:
    return datetime.now(UTC)


def plan_json(plan: dict[str, Any]) -> str:
    return json.dumps(plan, default=str)
