"""The notebook-friendly facade: ``Workbench.open()`` and one method per CLI command.

    wb = Workbench.open()                    # workbench.toml, REBUILD_* env, keyword overrides
    plan = wb.plan("order_summary", keys=["o-0000042"])
    result = wb.run("order_summary", keys=["o-0000042"])
    wb.cutover("order_summary", force=True)

Options are the same ``RunOptions`` the CLI's flags are generated from.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import duckdb
import polars as pl

import lake as lake_pkg
from lake import EventFilter, Lake
from rebuild.config import Config
from rebuild.errors import CutoverRefused
from rebuild.options import RunOptions, from_kwargs
from rebuild.plan import Plan, make_plan
from rebuild.progress import choose
from rebuild.projection import REGISTRY, Projection, Registry, load_modules
from rebuild.runner import RunResult, execute
from rebuild.store import LIVE, PREVIOUS, SHADOW, Checkpoint, Store, open_store
from rebuild.store.base import previous_name, shadow_name


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

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


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
        return cls(Config.load(config, **overrides))

    @property
    def store(self) -> Store:
        if self._store is None:
            c = self.config
            self._store = open_store(c.store_uri, memory_limit=c.memory_limit, temp_directory=c.temp_directory, threads=c.threads)
        return self._store

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
        return self.registry.get(name)

    def projections(self) -> list[Projection]:
        return list(self.registry)  # type: ignore[call-overload]

    def ls(self) -> list[ViewState]:
        """Every projection with its view's state and how far behind the lake it is."""
        snapshot = self.lake.snapshot() if self.lake.exists() else None
        return [self._state(p, snapshot) for p in self.projections()]

    def _state(self, p: Projection, snapshot: Any) -> ViewState:
        store = self.store
        live = store.checkpoint(p.name, LIVE)
        shadow = store.checkpoint(p.name, SHADOW)
        lake_version = snapshot.lake_version if snapshot else 0
        behind = events = None
        if live is not None and snapshot is not None:
            behind = max(0, lake_version - live.lake_version)
            f = EventFilter(streams=p.streams, event_types=p.consumes, after_version=live.lake_version)
            events = int(lake_pkg.read_events(self.lake, f, snapshot=snapshot, con=duckdb.connect()).count("*").fetchall()[0][0]) if behind else 0
        return ViewState(
            name=p.name, version=p.version, strategy=p.incremental, engine=p.engine,
            live_rows=store.count(p.name) if store.exists(p.name) else None,
            shadow=shadow.run_id if shadow and store.exists(shadow_name(p.name)) else None,
            previous=store.exists(previous_name(p.name)),
            live_lake_version=live.lake_version if live else None, lake_version=lake_version,
            versions_behind=behind, events_behind=events,
            stale_code=bool(live and (live.fingerprint != p.fingerprint or live.projection_version != p.version)),
        )

    # -- plan, run, cutover, rollback ----------------------------------------------------------
    def plan(self, view: str, options: RunOptions | None = None, **kwargs: Any) -> Plan:
        """What a run would read and write; nothing is written."""
        return make_plan(self.lake, self.store, self.projection(view), options or from_kwargs(**kwargs))

    def run(self, view: str, options: RunOptions | None = None, **kwargs: Any) -> RunResult:
        """Plan, then execute exactly that plan into ``VIEW__shadow``."""
        options = options or from_kwargs(**kwargs)
        plan = self.plan(view, options)
        return self.execute(plan, options.progress)

    def execute(self, plan: Plan, progress: str = "auto") -> RunResult:
        """Execute a plan made earlier (it pins its lake snapshot)."""
        return execute(plan, self.lake, self.store, self.projection(plan.view), choose(progress, self.json_output))

    def cutover(self, view: str, *, force: bool = False) -> Checkpoint:
        """Make the shadow live in one transaction (needs a passing check unless ``force``)."""
        shadow = self.store.checkpoint(view, SHADOW)
        if shadow is None:
            raise CutoverRefused(f"{view} has no shadow to cut over; run `rebuild run {view}` first", view=view)
        record = self.store.run(shadow.run_id)
        if not force and (record is None or record.verdict != "pass"):
            raise CutoverRefused(
                f"run {shadow.run_id} of {view} has no passing check report; run `rebuild check {view}` "
                "(or cut over with --force, which the run record keeps)",
                view=view, run_id=shadow.run_id,
            )
        return self.store.cutover(view, shadow.run_id, forced=force and (record is None or record.verdict != "pass"))

    def rollback(self, view: str) -> Checkpoint:
        """Restore the previous live view (and make the current one previous) in one transaction."""
        return self.store.rollback(view)

    def runs(self, view: str | None = None, limit: int = 20) -> list[Any]:
        return self.store.runs(view, limit)

    # -- reading -------------------------------------------------------------------------------
    def events(self, engine: str = "duckdb", **filters: Any) -> duckdb.DuckDBPyRelation | pl.LazyFrame:
        """Events of the latest snapshot, filtered (streams, event_types, since, until, ...)."""
        f = EventFilter(**{k: tuple(v) if isinstance(v, list) else v for k, v in filters.items()})
        return lake_pkg.read_events(self.lake, f, engine=engine)  # type: ignore[call-overload,no-any-return]

    def view(self, name: str, role: str = LIVE) -> pl.DataFrame:
        """A view's rows (role live, shadow or previous) as a Polars DataFrame."""
        table = {LIVE: name, SHADOW: shadow_name(name), PREVIOUS: previous_name(name)}[role]
        return pl.from_arrow(self.store.read(table))  # type: ignore[return-value]

    def _repr_html_(self) -> str:
        rows = "".join(
            "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in s.to_dict().values()) + "</tr>"
            for s in self.ls()
        )
        head = "".join(f"<th>{html.escape(k)}</th>" for k in ViewState.__dataclass_fields__)
        return f"<b>Workbench</b> lake={html.escape(self.lake.uri)}<table><tr>{head}</tr>{rows}</table>"
