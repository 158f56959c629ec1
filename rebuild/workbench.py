"""The notebook-friendly facade: ``Workbench.open()`` and one method per CLI command.

    wb = Workbench.open()                    # workbench.toml, REBUILD_* env, keyword overrides
    plan = wb.plan("order_summary", keys=["o-0000042"])
    result = wb.run("order_summary", keys=["o-0000042"])
    wb.cutover("order_summary", force=True)

Options are the same ``RunOptions`` the CLI's flags are generated from.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa

import lake as lake_pkg
from lake import EventFilter, Lake
from lake.audit import AuditReport, audit
from lake.compact import CompactResult, compact
from lake.dedupe import dedupe
from lake.schema import percent_encoded
from lake.sql import quote
from rebuild.backfill import (
    BackfillResult, abandoned_jobs, backfill, resume_command, run_buckets, vacuumed, wants_buckets,
)
from rebuild.config import FILENAME, Config, nearest_file
from rebuild.dedupe import DedupeReport, next_runs, pending
from rebuild.errors import ConfigError, CutoverRefused, PlanOutdated, StoreError, ViewLocked
from rebuild.faults import point
from rebuild.options import RunOptions, from_kwargs, keyword_options
from rebuild.plan import Plan, by_other_code, make_plan
from rebuild.progress import Progress, choose
from rebuild.projection import REGISTRY, Projection, Registry, load_modules
from rebuild.decoding import decoding_notes
from rebuild.runner import RunResult, execute
from rebuild.store import LIVE, PREVIOUS, SHADOW, Checkpoint, Store, open_store, store_exists
from rebuild.store.base import previous_name, scope_name, settled, shadow_name, view_tables
from rebuild.store.duckdb_store import connect as duckdb_connect

log = logging.getLogger(__name__)
#: a verdict recorded as "pass against: legacy_table" came from `check --live legacy_table`, not from live
AGAINST = "against: "


@dataclass(frozen=True)
class ViewState:
    """One projection's view: what exists, what it was built from, how far behind the lake it is."""

    name: str
    version: int
    strategy: str
    engine: str
    live_rows: int | None
    shadow: str | None
    previous: bool
    live_lake_version: int | None
    lake_version: int
    versions_behind: int | None
    events_behind: int | None
    stale_code: bool
    deduped: int | None = None  # the newest dedupe commit (Delta version) whose copies live applied: its next run corrects them

    def to_dict(self) -> dict[str, Any]:
        """The fields, and ``view`` and ``projection_version`` for ``name`` and ``version``: the names every
        other JSON (runs, plans, checks, reports) gives them, which a dashboard joins ``rebuild ls`` on."""
        return {**self.__dict__, "view": self.name, "projection_version": self.version, "shadow_run_id": self.shadow}

    def _repr_html_(self) -> str:
        return Rows([self], hide=ALIASES, caption=f"the view {self.name}")._repr_html_()


#: the names ``ViewState.to_dict`` adds for JSON readers: a table shows ``name`` and ``version`` once
ALIASES = ("view", "projection_version", "shadow_run_id")


class Rows(list[Any]):
    """A list of records (``ls``, ``runs``) that a notebook shows as one table, a row per record, instead
    of their reprs run together (a run record's plan alone is 1.5 KB of JSON); ``hide`` leaves columns out,
    ``caption`` says what the table holds."""

    def __init__(self, items: Iterable[Any], hide: tuple[str, ...] = (), caption: str | None = None) -> None:
        super().__init__(items)
        self.hide, self.caption = hide, caption

    def _repr_html_(self) -> str:
        from checks.html import table  # the report's tables: header cells with scope, a caption, counts as 3,233

        rows = [{k: v for k, v in r.to_dict().items() if k not in self.hide} for r in self]
        return table(rows, caption=self.caption, whole=("error",))


@dataclass(frozen=True)
class PruneResult:
    """What ``Workbench.prune`` forgot (or would, with ``dry_run``): the run records, and the ids of the
    long jobs whose marks went with them. Iterates over ``runs``, as the list prune returned before."""

    runs: tuple[Any, ...]
    jobs: tuple[str, ...] = ()
    dry_run: bool = False

    def __iter__(self) -> Iterator[Any]:
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)

    def to_dict(self) -> dict[str, Any]:
        ids = [r.run_id for r in self.runs]  # `runs` (deprecated) holds records in `rebuild runs`: run_ids says ids
        return {"dry_run": self.dry_run, "runs": ids, "run_ids": ids, "jobs": list(self.jobs)}

    def _repr_html_(self) -> str:
        verb = "would forget" if self.dry_run else "forgot"
        runs = html.escape(", ".join(r.run_id for r in self.runs) or "none")
        return f"<p>{verb} {len(self.runs)} run records ({runs}) and the marks of {len(self.jobs)} jobs</p>"


class Workbench:
    """Lake, store and projections together, for notebooks and the CLI."""

    def __init__(self, config: Config, registry: Registry = REGISTRY) -> None:
        self.config = config
        self.registry = registry
        self.lake = Lake(config.lake_uri, storage_options=config.storage_options)
        load_modules(config.projection_modules)
        self._store: Store | None = None
        self.json_output = False

    @classmethod
    def open(cls, config: str | None = None, **overrides: Any) -> Workbench:
        """Load ``workbench.toml`` (or ``config``), apply REBUILD_* env and ``overrides``."""
        wb = cls(Config.load(config, **overrides))
        if wb.config.default_lake and not wb.lake.exists():  # a notebook's folder is not the project's
            found = nearest_file()
            log.warning("no %s in %s, so the workbench uses the defaults, whose lake %s does not exist; open it with "
                        "Workbench.open(%r)%s, or give lake_uri=... and store_uri=...", FILENAME, Path.cwd(),
                        wb.lake.uri, str(found) if found else "path/to/workbench.toml",
                        f" (the {FILENAME} above this folder is not read from here)" if found else "")
        return wb

    @property
    def store(self) -> Store:
        if self._store is None:
            c = self.config
            self._store = open_store(c.store_uri, memory_limit=c.memory_limit, temp_directory=c.temp_directory, threads=c.threads)
        return self._store

    def has_store(self) -> bool:
        """Whether the configured store is there yet (a run creates it); reading commands do not create it."""
        return self._store is not None or store_exists(self.config.store_uri)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> Workbench:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- projections and views -----------------------------------------------------------------
    def projection(self, name: str) -> Projection:
        """The projection ``name``, of its module's file as it is now (edited since it was imported: again)."""
        load_modules(self.config.projection_modules)
        return self.registry.get(name)

    def projections(self) -> list[Projection]:
        load_modules(self.config.projection_modules)
        return list(self.registry)  # type: ignore[call-overload]

    def ls(self) -> list[ViewState]:
        """Every projection with its view's state and how far behind the lake it is."""
        snapshot = self.lake.snapshot() if self.lake.exists() else None
        store = self.store if self.has_store() else None  # no store yet: no view built, and none created
        return Rows((self._state(p, snapshot, store) for p in self.projections()), hide=ALIASES,
                    caption="the views: live, shadow and how far behind the lake each is")

    def _state(self, p: Projection, snapshot: Any, store: Store | None) -> ViewState:
        live = store.checkpoint(p.name, LIVE) if store is not None else None
        shadow = store.checkpoint(p.name, SHADOW) if store is not None else None
        lake_version = snapshot.lake_version if snapshot else 0
        behind = events = None
        if live is not None and snapshot is not None:
            behind = max(0, lake_version - live.lake_version)
            f = EventFilter(streams=p.streams, event_types=p.consumes, after_version=live.lake_version)
            events = self._count(f, snapshot) if behind else 0
        fix = pending(self.lake, p, live, snapshot, store) if live is not None and snapshot is not None else None
        return ViewState(
            name=p.name, version=p.version, strategy=p.incremental, engine=p.engine,
            live_rows=store.count(p.name) if store is not None and store.exists(p.name) else None,
            shadow=shadow.run_id if store is not None and shadow and store.exists(shadow_name(p.name)) else None,
            previous=store is not None and store.exists(previous_name(p.name)),
            live_lake_version=live.lake_version if live else None, lake_version=lake_version,
            versions_behind=behind, events_behind=events,
            stale_code=bool(live and (live.projection_version != p.version or not p.built_by(live.fingerprint))),
            deduped=fix.deduped[-1] if fix is not None else None,
        )

    def views_without_projection(self) -> list[dict[str, Any]]:
        """Views in the store that no configured projection builds (renamed, or its module left out of
        ``[projections] modules``): nothing updates them, though readers may still use the live one."""
        if not self.has_store():
            return []
        store, known = self.store, {p.name for p in self.projections()}
        found = []
        for name in (v for v in store.views() if v not in known):
            live, shadow = store.checkpoint(name, LIVE), store.checkpoint(name, SHADOW)
            has_shadow = store.exists(shadow_name(name))
            found.append({"name": name, "view": name, "live_rows": store.count(name) if store.exists(name) else None,
                          "live_run_id": live.run_id if live else None,
                          "live_lake_version": live.lake_version if live else None,
                          # deprecated `shadow`, a flag here but a run id in `views`: shadow_run_id is both's
                          "shadow": has_shadow, "shadow_run_id": shadow.run_id if shadow and has_shadow else None,
                          "previous": store.exists(previous_name(name))})
        return found

    def _count(self, f: EventFilter, snapshot: Any) -> int:
        with scratch(self.config) as con:
            return int(lake_pkg.read_events(self.lake, f, snapshot=snapshot, con=con).count("*").fetchall()[0][0])

    # -- plan, run, cutover, rollback ----------------------------------------------------------
    @keyword_options
    def plan(self, view: str, options: RunOptions | None = None, **kwargs: Any) -> Plan:
        """What a run would read and write; nothing is written (no store is created)."""
        store = self.store if self.has_store() else None
        return make_plan(self.lake, store, self.projection(view), _options(options, kwargs))

    @keyword_options
    def run(self, view: str, options: RunOptions | None = None, *, buckets: bool | None = None, **kwargs: Any) -> RunResult:
        """Plan, then execute exactly that plan into ``VIEW__shadow``.

        ``buckets=True`` runs a full rebuild key bucket by key bucket (resumable); ``None`` does
        so automatically above ``rebuild.backfill.BUCKET_THRESHOLD`` events.
        """
        options = _options(options, kwargs)
        plan = self.plan(view, options)
        return self.execute(plan, options.progress, buckets=buckets, executor=options.executor,
                            address=options.address, workers=options.workers)

    def execute(self, plan: Plan, progress: str = "auto", *, buckets: bool | None = None, executor: str = "local",
                address: str | None = None, workers: int | None = None) -> RunResult:
        """Execute a plan made earlier (it pins its lake snapshot), holding the view's lock.

        ``executor`` ``processes`` or ``dask`` runs a full rebuild as key-bucket tasks on a
        process pool or a Dask cluster (``address``, or a LocalCluster): see rebuild.distributed.
        Incremental and targeted runs stay in this process.
        """
        projection = self.projection(plan.view)
        shown = choose(progress, self.json_output)
        self.lake.attach(self.store.compute())  # the replay reads the lake on the store's connection
        self.store.check_view_name(plan.view)  # before the replay: the tables it makes must be nameable
        with self.store.lock(plan.view, "run"):
            self._check_current(plan, projection)
            if executor != "local" and plan.method == "full":
                from rebuild.distributed import run_distributed

                return run_distributed(plan, self.lake, self.store, projection, executor=executor, address=address,
                                       workers=workers, progress=shown, memory_limit=self.config.memory_limit)
            if executor != "local":
                log.info("%s: a %s run reads few events; it runs in this process, not on %s", plan.view, plan.method, executor)
            if wants_buckets(plan, projection, buckets):
                return run_buckets(plan, self.lake, self.store, projection, shown)
            return execute(plan, self.lake, self.store, projection, shown)

    def _check_current(self, plan: Plan, projection: Projection) -> None:
        """Refuse a plan that no longer fits: made for other projection code, or an incremental plan
        made before live moved (a merge patch would add the same events to live a second time), or
        one whose pinned snapshot lost files to `rebuild lake vacuum`."""
        if (gone := vacuumed(self.lake, plan.delta_version)) is not None:
            raise PlanOutdated(
                f"the lake snapshot this plan of {plan.view} pinned (delta_version {plan.delta_version}) lost {gone}, "
                f"which compaction replaced and `rebuild lake vacuum` deleted; make a new plan "
                f"(wb.plan({plan.view!r}, ...)) and run that", view=plan.view)
        if (plan.fingerprint, plan.projection_version) != (projection.fingerprint, projection.version):
            raise PlanOutdated(
                f"projection {plan.view} changed since this plan was made; make a new plan "
                f"(wb.plan({plan.view!r}, ...)) and run that",
                view=plan.view,
            )
        live = self.store.checkpoint(plan.view, LIVE) if plan.mode == "incremental" else None
        if plan.mode == "incremental" and (live is None or live.lake_version != plan.live_lake_version):
            raise PlanOutdated(
                f"live {plan.view} moved since this incremental plan was made (from lake_version "
                f"{plan.live_lake_version} to {live.lake_version if live else 'none'}); make a new plan "
                f"(wb.plan({plan.view!r}, ...)) or rerun `rebuild run {plan.view}`",
                view=plan.view,
            )

    def backfill(self, view: str, *, since: str | datetime, until: str | datetime, chunk: str = "1d",
                 progress: str = "auto", exclude_quarantined: bool = False) -> BackfillResult:
        """Correct ``[since, until)`` chunk by chunk into one shadow patch; resumes after a crash."""
        return backfill(self.lake, self.store, self.projection(view), since=since, until=until, chunk=chunk,
                        progress=choose(progress, self.json_output), exclude_quarantined=exclude_quarantined)

    def cutover(self, view: str, *, force: bool = False) -> Checkpoint:
        """Make the shadow live in one transaction (needs a passing check unless ``force``)."""
        shadow = self.store.checkpoint(view, SHADOW)
        if shadow is None:
            run = _step(f"rebuild run {view}", f"wb.run({view!r})")
            raise CutoverRefused(f"{view} has no shadow to cut over; run {run} first", view=view)
        record = self.store.run(shadow.run_id)
        if record is not None and record.status == "backfill":
            raise CutoverRefused(
                f"the shadow of {view} is an unfinished backfill ({shadow.run_id}); rerun "
                f"{resume_command(self.store, view, shadow.run_id)} to finish it",
                view=view, run_id=shadow.run_id,
            )
        if not force and (record is None or record.verdict != "pass"):
            report = self._report_here(record.report) if record is not None and record.report else None
            raise CutoverRefused(_refusal(view, shadow.run_id, record, report), view=view, run_id=shadow.run_id)
        with self.store.lock(view, "cutover"):
            return self.store.cutover(view, shadow.run_id, forced=force and (record is None or record.verdict != "pass"),
                                      keep=self._live_keeps(view, shadow, record))

    def _live_keeps(self, view: str, shadow: Checkpoint, record: Any) -> dict[str, Any]:
        """The fields of its checkpoint live keeps when a patch goes live ({}: it takes the shadow's).

        Its lake position: an incremental patch catches up exactly the live it was computed from; a
        targeted one recomputes only its scope, so live's other rows stay at live's position and the
        next incremental run still reads the events after it (recomputing the scope's keys again is
        harmless, except for ``merge``, which would add those events twice). Its code: a patch made by
        other code than live's (a version bumped since, then a targeted run) leaves the other rows the
        old code's, so the next run must still be the full one."""
        live = self.store.checkpoint(view, LIVE)
        if shadow.kind != "patch" or record is None or live is None:
            return {}
        keep: dict[str, Any] = {}
        if live.projection_version != shadow.projection_version or not self._same_code(view, live, shadow):
            keep |= {"projection_version": live.projection_version, "fingerprint": live.fingerprint}
        base = _caught_up_from(record)
        if base is not None:
            if base != live.lake_version:
                raise CutoverRefused(
                    f"the shadow of {view} (run {shadow.run_id}) catches live up from lake_version {base}, but "
                    f"live is at lake_version {live.lake_version} now (rolled back or cut over since the run); "
                    f"run `rebuild run {view}` again and check that", view=view, run_id=shadow.run_id)
            return keep
        # a targeted patch corrects its scope only: what dedupes committed since live's run removed, its next
        # catch-up still corrects (``rebuild.dedupe.pending``, by live's Delta version)
        keep["delta_version"] = live.delta_version
        if shadow.lake_version == live.lake_version:
            return keep
        if self.projection(view).incremental == "merge":
            raise CutoverRefused(
                f"the shadow of {view} (run {shadow.run_id}) is a targeted patch at lake_version "
                f"{shadow.lake_version} but live is at {live.lake_version}: a merge view's next incremental run "
                f"would miss or add twice the events between; catch live up first (`rebuild run {view}`, check, "
                "cutover), then rerun the targeted run", view=view, run_id=shadow.run_id)
        if live.lake_version < shadow.lake_version:
            keep |= {"lake_version": live.lake_version, "delta_version": live.delta_version}
        return keep

    def _same_code(self, view: str, live: Checkpoint, shadow: Checkpoint) -> bool:
        """Whether the shadow was made by live's code: the same fingerprint, or both are fingerprints the
        workbench, now or before (``Projection.earlier_fingerprints``), gives the projection's code."""
        if live.fingerprint == shadow.fingerprint:
            return True
        p = self.projection(view) if view in self.registry else None
        return p is not None and p.built_by(shadow.fingerprint) and p.built_by(live.fingerprint)

    def rollback(self, view: str) -> Checkpoint | None:
        """Restore the previous live view (and make the current one previous) in one transaction."""
        with self.store.lock(view, "rollback"):
            return self.store.rollback(view)

    def drop(self, view: str, dry_run: bool = False) -> dict[str, Any]:
        """Retire ``view``, which no configured projection builds any more (``views_without_projection``):
        drop its live, shadow and previous tables, in one transaction with its checkpoints and backfill
        marks. Its run records and reports stay, for history, until ``prune`` forgets them. Returns
        ``{"view", "dry_run", "tables": {table: rows}}``: what was dropped (or would be, with ``dry_run``)."""
        if view in {p.name for p in self.projections()}:  # its module as it is now
            raise ConfigError(
                f"{view} is built by a configured projection, whose next run would build it again. To retire it, "
                f"remove it from [projections] modules (or rename it) first; to rebuild it from scratch, "
                f"`rebuild run {view} --full` and cut over", view=view)
        found = self.store.views() if self.has_store() else []
        if view not in found:  # a table the workbench did not build (another team's, say) is not its to drop
            raise ConfigError(f"no view {view!r} in {self.config.store_uri} (its views: {', '.join(found) or 'none'})",
                              view=view)
        with self.store.lock(view, "drop"):
            tables = {t: self.store.count(t) for t in view_tables(view) if self.store.exists(t)}
            if not dry_run:
                self.store.drop_view(view)
        return {"view": view, "dry_run": dry_run, "tables": tables}

    def runs(self, view: str | None = None, limit: int = 20) -> list[Any]:
        """The run records, newest first (of ``view``, or of every view)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError(f"limit must be a number of runs (1 or more), not {limit!r}")
        runs = settled(self.store.runs(view, limit), self.store.views()) if self.has_store() else []
        return Rows(runs, hide=("plan",),
                    caption=f"the runs of {view}, newest first" if view else "the runs, newest first")

    def prune(self, older_than_days: int, view: str | None = None, dry_run: bool = False) -> PruneResult:
        """Forget the run records (and delete their check reports) finished more than ``older_than_days``
        ago, of ``view`` or of every view; the runs that live, previous or a shadow are, and unfinished
        backfills, are kept. Also forgets the marks of long jobs that no run record names and that last
        moved before then (a bucketed run's; a job killed before it published), unless a job holds the
        view's lock. Returns the records forgotten (or that would be, with ``dry_run``) and those jobs' ids."""
        if isinstance(older_than_days, bool) or not isinstance(older_than_days, int) or older_than_days < 0:
            raise ConfigError(f"older_than_days must be a number of days (0 or more), not {older_than_days!r}")
        if view is not None and not (self.has_store() and (view in self.store.views() or self.store.runs(view, 1))):
            self.projection(view)  # a misspelt view is an error that lists the known ones (a dropped one has runs)
        if not self.has_store():
            return PruneResult((), (), dry_run)  # nothing to prune, and no store to create
        now = datetime.now(UTC)
        days = min(older_than_days, (now - datetime.min.replace(tzinfo=UTC)).days)  # more: before year 1, none
        store, before = self.store, now - timedelta(days=days)
        runs = settled(store.runs(view, limit=2**31), store.views())
        kept = {cp.run_id for name in {r.view for r in runs} for role in (LIVE, PREVIOUS, SHADOW)
                if (cp := store.checkpoint(name, role)) is not None}
        old = [r for r in runs if r.finished_at < before and r.run_id not in kept and r.status != "backfill"]
        if not dry_run:
            for path in self._reports_of(old):  # first: a prune killed in between leaves records a rerun forgets
                path.unlink(missing_ok=True)
            store.forget_runs([r.run_id for r in old])
        names = [view] if view is not None else sorted({*store.views(), *(r.view for r in runs),
                                                        *(p.name for p in self.projections())})
        return PruneResult(tuple(old), tuple(job for name in names for job in self._prune_jobs(name, before, dry_run)), dry_run)

    def _prune_jobs(self, view: str, before: datetime, dry_run: bool) -> list[str]:
        """Forget the marks of ``view``'s long jobs that no run record names and that last moved before
        ``before`` (a bucketed run's; a backfill or bucketed run killed before it published), unless a
        job holds the view's lock. Returns those jobs' ids."""
        try:
            with self.store.lock(view, "prune"):
                jobs = abandoned_jobs(self.store, view, before)
                if not dry_run:
                    self.store.forget_jobs(jobs)
                return jobs
        except ViewLocked as exc:
            log.warning("the marks of %s's unfinished jobs are kept: %s", view, exc)
            return []

    def _reports_of(self, records: Sequence[Any]) -> list[Path]:
        """The runs' check reports: RUN_ID.html/.json and RUN_ID--against-OTHER.*, where each run's record
        says (inside this project: in a copy of it, records name the original's) and where the configured
        reports_dir puts them. Each folder is listed once: a glob per run made a prune of 4,000 runs with
        their reports take 21 s (quadratic: 8,760 hourly runs, minutes)."""
        runs: dict[Path, set[str]] = {}
        here = Path(self.config.reports_dir)
        for r in records:
            recorded = [Path(r.report).parent] if r.report else []
            for folder in {here / r.view, *(f for f in recorded if f.is_relative_to(here.parent))}:
                runs.setdefault(folder, set()).add(r.run_id)
        return [p for folder, ids in runs.items() if folder.is_dir() for p in folder.iterdir()
                if p.name.split(".", 1)[0].split("--against-", 1)[0] in ids]

    def _report_here(self, report: str) -> Path:
        """Where a run record's report is now: a record names it by the absolute path it was written at,
        which in a project moved or copied since (a folder renamed, a backup restored elsewhere) is the
        old place; the configured reports folder's file of that view and name is the run's own."""
        path = Path(report)
        here = Path(self.config.reports_dir) / path.parent.name / path.name
        return here if here.is_file() else path

    # -- the lake ------------------------------------------------------------------------------
    def audit(self, streams: list[str] | None = None, **options: Any) -> AuditReport:
        """``lake.audit.audit`` with the event types the projections consume in each stream as the known
        ones, so a type none of them reads there (a new event upstream, a misspelt ``consumes``, a type of
        the same name as one read in another stream) is listed as unknown. A projection that consumes
        every type of every stream, or none configured, leaves nothing unknown."""
        with scratch(self.config) as con:
            return audit(self.lake, streams=streams, known_event_types=self._consumed(), **{"con": con, **options})

    def _consumed(self) -> dict[str | None, set[str] | None] | None:
        """Per stream (None: every stream), the types the projections reading it consume (None: every type)."""
        known: dict[str | None, set[str] | None] = {}
        for p in self.projections():
            for stream in p.streams or (None,):
                had = known.get(stream, set())
                known[stream] = None if p.consumes is None or had is None else had | set(p.consumes)
        return None if not known or (None in known and known[None] is None) else known

    def compact(self, streams: list[str] | None = None, decode: bool = True) -> CompactResult:
        """``lake.compact`` with the payload fields the projections declare decoded into typed
        columns (unless ``decode`` is false): their replays then read columns instead of JSON."""
        fields = {(f, t) for p in self.projections() for f, t in (p.payload or {}).items()} if decode else set()
        with scratch(self.config) as con:
            return compact(self.lake, streams=streams, decode=fields, con=con)

    def dedupe(self, dry_run: bool = False) -> DedupeReport:
        """``lake.dedupe.dedupe`` (the later copies of event ids archived twice removed), the partition keys of
        those ids written to a keys file in the reports folder, and the run that corrects each live view that
        applied the copies (``rebuild.dedupe``)."""
        reports = Path(self.config.reports_dir)
        if not dry_run:  # a folder that cannot be made fails here, not after the commit, which a rerun cannot repeat
            reports.mkdir(parents=True, exist_ok=True)
        with scratch(self.config) as con:
            result = dedupe(self.lake, dry_run=dry_run, con=con, keys_dir=None if dry_run else reports)
        store = self.store if self.has_store() else None
        return DedupeReport(result, tuple(next_runs(self.projections(), store, result)))

    # -- reading -------------------------------------------------------------------------------
    def events(self, engine: str = "duckdb", **filters: Any) -> duckdb.DuckDBPyRelation | pl.LazyFrame:
        """Events of the latest snapshot, filtered (streams, event_types, since, until, ...)."""
        f = EventFilter(**filters)
        return lake_pkg.read_events(self.lake, f, engine=engine)  # type: ignore[call-overload,no-any-return]

    def view(self, name: str, role: str = LIVE) -> pl.DataFrame:
        """A view's rows (role live, shadow or previous) as a Polars DataFrame."""
        tables = {LIVE: name, SHADOW: shadow_name(name), PREVIOUS: previous_name(name)}
        if role not in tables:
            raise ConfigError(f"role {role!r} is not one of {list(tables)}")
        if not self.store.exists(tables[role]):
            after = {LIVE: _step(f"rebuild cutover {name}", f"wb.cutover({name!r})"),
                     SHADOW: _step(f"rebuild run {name}", f"wb.run({name!r})"), PREVIOUS: "a cutover"}[role]
            raise StoreError(f"{name} has no {role} view ({tables[role]}); it exists after {after}", view=name)
        return pl.from_arrow(_polars_ready(self.store.read(tables[role])))  # type: ignore[return-value]

    def _repr_html_(self) -> str:
        return f"<b>Workbench</b> lake={html.escape(self.lake.uri)}{self.ls()._repr_html_()}"  # type: ignore[attr-defined]


    # -- checks (the glue; the checks themselves live in the ``checks`` package) ----------------
    def check(self, view: str, live: str | None = None, tolerance: Any = None, progress: str = "auto") -> Any:
        """Compare ``VIEW__shadow`` with live (or ``live``), validate, write the report, record the verdict.

        ``tolerance`` is ``{column: (abs, rel)}`` or CLI-style ``["total=0.01", "paid=0.5%"]`` (or one such text).
        ``progress`` as for ``run``: a bar, log lines or nothing, through the check's steps.
        Returns a ``checks.CheckReport``; the verdict lands in the run record (cutover reads it).
        """
        shown = choose(progress, self.json_output)
        with self.store.lock(view, "check"):  # a run or cutover meanwhile would mix two shadows in one report
            return self._check(view, live, tolerance, shown)

    def _check(self, view: str, live: str | None, tolerance: Any, shown: Progress) -> Any:
        from checks import CHECK_STEPS, ViewSpec, check_view, parse_tolerance

        p, store = self.projection(view), self.store
        shadow = store.checkpoint(view, SHADOW)
        if shadow is None or not store.exists(shadow_name(view)):
            run = _step(f"rebuild run {view}", f"wb.run({view!r})")
            raise StoreError(f"{view} has no shadow to check; run {run} first", view=view)
        record = store.run(shadow.run_id)
        if record is not None and record.status == "backfill":  # its report would pass a part for the whole
            raise StoreError(f"the shadow of {view} is an unfinished backfill ({shadow.run_id}); rerun "
                             f"{resume_command(store, view, shadow.run_id)} to finish it, then check it",
                             view=view, run_id=shadow.run_id)
        live_table = live or (view if store.exists(view) else None)
        if live_table and not store.exists(live_table):
            raise StoreError(f"no live table {live_table!r} to compare {view} with", view=view, table=live_table)
        if isinstance(tolerance, str):  # one CLI-style text: "total=0.01"
            tolerance = [tolerance]
        con = store.compute()
        scope_table = scope_name(shadow_name(view))
        scoped = shadow.kind == "patch" and store.exists(scope_table)
        spec = ViewSpec(
            view=view, key=p.key, partition_column=p.partition_column if p.incremental == "by_key" else None,
            window=(p.window.column, p.window.size) if p.window else None, streams=p.streams,
            event_types=p.consumes, expectations=p.expectations, thresholds=p.thresholds,
        )
        other = live_table not in (None, view) and store.exists(view)  # not against live: cutover will not take it
        scope = self._on(con, scope_table) if scoped else None
        live_on = self._on(con, live_table, scope_table if scoped else None) if live_table else None
        if live_table == view and live_on is not None:
            _same_key(view, p.key, con.table(live_on).columns, scoped)
        facts, planned = _run_facts(record), record.planned() if record is not None else {}
        with self.lake.attach(con.cursor()) as cursor:  # counted in every event: a job's log may not keep the run's
            notes = decoding_notes(cursor, self.lake, p, shadow.lake_version, facts.get("skipped_files", ()),
                                   bool(planned.get("exclude_quarantined")))
        shown.start(len(CHECK_STEPS), "steps", f"{view} check")
        try:
            report = check_view(
                con, self.lake, spec, run_id=shadow.run_id, rebuilt=self._on(con, shadow_name(view)), live=live_on,
                tolerance=parse_tolerance(list(tolerance)) if isinstance(tolerance, list | tuple) else tolerance,
                scope=scope, scope_columns=con.table(scope).columns if scope else (),
                as_of=shadow.lake_version, run=facts,
                runs=[r.to_dict() for r in store.runs(view, 10)], reports_dir=self.config.reports_dir,
                # the table's name with its % and / encoded: "exports/live" is no folder, two names never one file
                report_name=f"{shadow.run_id}--against-{percent_encoded(str(live_table), only='%/')}" if other else None,
                catch_up_from=None if live_table != view else _caught_up_from(record),
                names=(live_table, shadow_name(view)), audit_keys=_patch_keys(con, scope, spec.partition_column),
                notes=notes,
                step=lambda name: shown.advance(1, name),
            )
        finally:
            shown.close()
        point("check.before_verdict")
        verdict = report.verdict.verdict
        if other:
            if record is not None and record.verdict and AGAINST not in record.verdict:
                log.info("%s: run %s keeps its verdict against live (%s, %s); this comparison with %s is reported in %s",
                         view, shadow.run_id, record.verdict, record.report, live_table, report.paths.get("html"))
                return report
            verdict = f"{verdict} {AGAINST}{live_table}"
        store.set_verdict(shadow.run_id, verdict, report.paths.get("html"))
        return report

    def _on(self, con: duckdb.DuckDBPyConnection, table: str, scope: str | None = None) -> str:
        """A name for ``table`` on ``con``: itself when the store computes there, else a temp view (of
        its rows in store table ``scope``, when given: the check matches them again)."""
        if getattr(self.store, "con", None) is con:
            return table
        name = f"__check_{table}"
        self.store.relation(con, table, scope).create_view(name, replace=True)
        return name


def _same_key(view: str, key: Sequence[str], columns: Sequence[str], patch: bool) -> None:
    """Live's rows are matched with the shadow's by the projection's key: refuse, saying why and what to do,
    when live lacks a key column (the projection's key changed since live was built: one column to two)."""
    from checks import CheckInputError

    if missing := [k for k in key if k not in columns]:
        cutover = _step(f"rebuild cutover {view} --force", f"wb.cutover({view!r}, force=True)")
        then = (f"To change live's key, run `rebuild run {view} --full` and cut that over with --force (a patch cannot)"
                if patch else f"To make it live, read the shadow (wb.view({view!r}, 'shadow')) and cut over with {cutover}")
        raise CheckInputError(
            f"live {view} has no key column {missing} (it has {list(columns)}): the projection's key {list(key)} is "
            f"not live's (it changed since live was built, or live was made elsewhere), so the check cannot match "
            f"live's rows with the shadow's. {then}; or compare with a view of live that has the key "
            f"(CREATE VIEW ... AS SELECT <its column> AS {missing[0]}, ...) given as --live, which reports but does "
            f"not open the cutover", view=view, table=view)


def _patch_keys(con: duckdb.DuckDBPyConnection, scope: str | None, column: str | None) -> list[str] | None:
    """The partition keys of a by_key patch, from its scope (None: not such a patch, or a view whose
    partition column is no text, which may not give the keys back as they were: CAST('007' AS INTEGER))."""
    if scope is None or column is None:
        return None
    keys = con.sql(f"SELECT DISTINCT {quote(column)} FROM {quote(scope)}")
    return [r[0] for r in keys.fetchall()] if keys.types[0] == "VARCHAR" else None


def scratch(config: Config) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB within the configured ``[duckdb]`` memory_limit, temp_directory and threads:
    for the lake's work outside the store (the audit, compaction)."""
    return duckdb_connect(":memory:", config.memory_limit, config.temp_directory, config.threads)


def _refusal(view: str, run_id: str, record: Any, report: Path | None) -> str:
    """Why cutover needs --force for this run (whose check ``report`` is there), and what to do instead."""
    verdict = (record.verdict if record else None) or ""
    force = f"cut over with --force (wb.cutover({view!r}, force=True)), which the run record keeps"
    check = _step(f"rebuild check {view}", f"wb.check({view!r})")
    if AGAINST in verdict:
        return (f"run {run_id} of {view} was checked against {verdict.partition(AGAINST)[2]}, not against live "
                f"{view}; run {check} (or {force})")
    if verdict:
        return (f"run {run_id} of {view} failed its check (report: {report}); if the differences are the "
                f"corrections you meant, {force}; if not, fix the projection and run it again")
    return f"run {run_id} of {view} has no passing check report; run {check} (or {force})"


def _step(command: str, call: str) -> str:
    """A next step, for the command line and for a notebook: ```rebuild run v` (wb.run('v'))``."""
    return f"`{command}` ({call})"


def _options(options: RunOptions | None, kwargs: dict[str, Any]) -> RunOptions:
    """``options``, or RunOptions from keyword arguments: not both (the keywords would be ignored)."""
    if options is not None:
        if not isinstance(options, RunOptions):
            raise ConfigError(f"options must be a RunOptions, not {type(options).__name__}; or give the options as "
                              "keyword arguments (keys=[...], full=True, ...)")
        if kwargs:
            raise ConfigError(f"give a RunOptions or keyword arguments ({', '.join(kwargs)}), not both: the "
                              "keywords would be ignored")
        return options
    keys = kwargs.get("keys")
    if keys is None:
        kwargs.pop("keys", None)
    elif not isinstance(keys, str) and not hasattr(keys, "columns"):  # a table: RunOptions says what to pass
        kwargs["keys"] = list(keys)  # read once: it may be an iterator
        if not kwargs["keys"]:  # a query that found no keys is no reason to catch up the whole view
            raise ConfigError("keys=[] names no partition key: nothing to correct; leave keys out (or None) for a "
                              "run that catches up the whole view")
    return from_kwargs(**kwargs)


def _caught_up_from(record: Any) -> int | None:
    """Live's lake_version that the run caught up from, when it was an incremental run (a catch-up)."""
    if record is None or record.mode != "incremental":
        return None
    return record.planned().get("after_version")  # type: ignore[no-any-return]


def _run_facts(record: Any) -> dict[str, Any]:
    """The run record for the report, with the lake files the run skipped (--skip-corrupted)."""
    if record is None:
        return {}
    facts = {k: v for k, v in record.to_dict().items() if k != "plan"}
    plan = record.planned()
    if plan.get("skipped_files"):
        facts["skipped_files"] = plan["skipped_files"]
    if by_other_code(plan):
        facts["full_because"] = plan["reason"]
    if plan.get("deduped"):
        facts["deduped"] = plan["deduped"]
    return facts


def _polars_ready(data: pa.Table) -> pa.Table:
    """``data`` with the columns Polars cannot read as the other stores give them: a UUID (Arrow's uuid,
    from PostgreSQL) as text, an INTERVAL (Arrow's month_day_nano_interval) as a duration in microseconds
    (what a Polars Duration became), or as DuckDB's text ('1 month 2 days') when a value counts months,
    which a duration has not."""
    interval = pa.month_day_nano_interval()
    con = None  # one connection for every such column, none for a view without one
    for i, field in enumerate(data.schema):
        if field.type not in (interval, pa.uuid()):
            continue
        con = con or duckdb.connect()
        column = con.from_arrow(pa.table({"v": data.column(i)}))
        text = field.type != interval or column.aggregate(
            "bool_or(datepart('year', v) <> 0 OR datepart('month', v) <> 0)").fetchall()[0][0]
        values = column.select("CAST(v AS VARCHAR)" if text else "epoch_us(v)").to_arrow_table().column(0)
        data = data.set_column(i, field.name, values if text else values.cast(pa.duration("us")))
    return data
