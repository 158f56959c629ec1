"""``rebuild demo``: the whole story on a throw-away lake, as a list of steps.

Each :class:`Step` is a function of the shared :class:`DemoContext` returning a JSON-ready dict,
plus a one-line summary for people. The steps run in order; later stages (rebuild, check,
cutover) are appended to :data:`STEPS`. The demo deletes its lake before it starts, and only
ever a lake inside a folder named ``.demo`` (anything else is refused if it exists).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

import lake
from lake.audit import audit
from lake.sample import generate
from rebuild.config import redact
from rebuild.errors import RebuildError
from rebuild.store import store_path

if TYPE_CHECKING:
    from rebuild.cli import State

log = logging.getLogger(__name__)

DEMO_FOLDER = ".demo"
#: what a lake folder may hold for the demo to delete it (anything else: refuse); ``_staging`` is
#: where a run with --executor processes|dask writes its parts (rebuild.distributed.STAGING)
LAKE_ENTRIES = frozenset({"events", "quarantine", "_commit.lock", "_staging"})


@dataclass
class DemoContext:
    """What the steps share: the CLI state, the lake, the parameters and what earlier steps made."""

    state: State
    lake: lake.Lake
    events: int
    seed: int
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    made: dict[str, Any] = field(default_factory=dict)  # Python objects (SampleResult, AuditReport, ...)


@dataclass(frozen=True)
class Step:
    """One stage of the demo: ``run`` returns its JSON result, ``summary`` a line for people."""

    name: str
    run: Callable[[DemoContext], dict[str, Any]]
    summary: Callable[[dict[str, Any]], str]


def run_demo(state: State, *, events: int, seed: int) -> None:
    """Run every step of :data:`STEPS` on the configured lake and print the result."""
    ctx = DemoContext(state=state, lake=lake.Lake(state.config.lake_uri), events=events, seed=seed)
    started = time.monotonic()
    for step in STEPS:
        begun = time.monotonic()
        result = step.run(ctx)
        ctx.results[step.name] = {**result, "seconds": round(time.monotonic() - begun, 3)}
        log.info("demo step %s: %s", step.name, step.summary(result))
        if not state.out.json:
            state.out.console.print(f"[bold]{step.name}[/bold]: {escape(step.summary(result))}")
    seconds = time.monotonic() - started
    # `lake` is deprecated (an object in `rebuild ls`): lake_uri is the URI's name in every --json
    payload = {"lake": ctx.lake.uri, "lake_uri": ctx.lake.uri, "events": events, "seed": seed,
               "seconds": round(seconds, 3), "steps": ctx.results}
    state.out.result(payload, lambda console: _render(console, ctx, seconds))


def _render(console: Console, ctx: DemoContext, seconds: float) -> None:
    console.print(f"demo finished in {seconds:.1f}s; the lake is at {ctx.lake.uri}", markup=False)
    report = ctx.results.get("check", {}).get("report")
    if report:
        console.print(f"[bold]the validation report[/bold]: {escape(str(report))}")
    # the checkout's notebooks and Makefile: an installed wheel has neither
    lab = ", or open notebooks/ with `make lab`" if Path("notebooks").is_dir() and Path("Makefile").is_file() else ""
    console.print("next: `rebuild ls`, `rebuild runs order_summary`, `rebuild rollback order_summary` "
                  f"(again) to return to the rebuilt view{lab}")


# -- step: reset ---------------------------------------------------------------------------------
def inside_demo_folder(path: Path) -> bool:
    """Whether ``path`` lies inside (not at) a folder named ``.demo``."""
    return any(parent.name == DEMO_FOLDER for parent in path.parents)


def _check_demo_places(ctx: DemoContext) -> None:
    """The demo writes a sample lake and a faulty live ``order_summary`` into the configured lake and store:
    run in a project whose lake was not made yet, it made a sample of that lake and wrote the faulty view
    into the project's store, then failed on the project's projections. It works under ``.demo/`` only."""
    config = ctx.state.config
    places = (("lake", ctx.lake.uri, ctx.lake.local), ("store", redact(config.store_uri), store_path(config.store_uri)))
    wrong = [f"{what} {where}" for what, where, path in places if path is None or not inside_demo_folder(path)]
    if "rebuild.examples" not in config.projection_modules:
        wrong.append(f"[projections] modules {list(config.projection_modules)}, without rebuild.examples")
    if wrong:
        raise RebuildError(
            f"the demo writes a sample lake and a faulty live {VIEW} view, so it runs only on a lake and a store "
            f"inside a {DEMO_FOLDER} folder, with the projections of rebuild.examples (the defaults, where no "
            f"workbench.toml is); this configuration has {'; '.join(wrong)}. Run `rebuild demo` in an empty folder",
            uri=ctx.lake.uri,
        )


def _reset(ctx: DemoContext) -> dict[str, Any]:
    """Delete the previous demo lake, only inside ``.demo/`` and only if it looks like a lake."""
    path = ctx.lake.local
    if path is not None and path.exists():
        _check_removable(path)  # first: a lake the demo would delete is named as such
    _check_demo_places(ctx)  # a lake in a bucket is never the demo's
    if path is None or not path.exists():
        return {"removed": False}
    shutil.rmtree(path)
    _remove_demo_store(ctx)
    return {"removed": True}


def _remove_demo_store(ctx: DemoContext) -> None:
    """The demo's views start afresh too, when the store is a DuckDB file or a Parquet folder inside ``.demo``."""
    path = store_path(ctx.state.config.store_uri)
    if path is None or not inside_demo_folder(path):
        return
    if path.is_dir():  # a Parquet store
        shutil.rmtree(path)
    for leftover in (path, path.with_name(path.name + ".wal")):
        leftover.unlink(missing_ok=True)


def _check_removable(path: Path) -> None:
    if not inside_demo_folder(path):
        raise RebuildError(
            f"{path} already exists and is not inside a {DEMO_FOLDER} folder, so the demo will not "
            f"delete it: pass --lake {DEMO_FOLDER}/lake (or a new path)",
            path=str(path),
        )
    unexpected = sorted({entry.name for entry in path.iterdir()} - LAKE_ENTRIES) if path.is_dir() else [path.name]
    if unexpected:
        raise RebuildError(
            f"{path} holds {unexpected}, which is not part of a lake; the demo deletes only its own "
            "lake: remove the folder yourself or pass another --lake",
            path=str(path),
        )


# -- steps: sample, audit --------------------------------------------------------------------------
def _sample(ctx: DemoContext) -> dict[str, Any]:
    config = ctx.state.config
    if config.temp_directory and "://" not in config.temp_directory:
        Path(config.temp_directory).mkdir(parents=True, exist_ok=True)
    result = generate(
        ctx.lake, events=ctx.events, seed=ctx.seed,
        memory_limit=config.memory_limit, temp_directory=config.temp_directory,
    )  # fmt: skip
    ctx.made["sample"] = result
    return result.to_dict()


def _audit(ctx: DemoContext) -> dict[str, Any]:
    report = audit(ctx.lake)
    ctx.made["audit"] = report
    return report.to_dict()


def _sample_line(r: dict[str, Any]) -> str:
    return (
        f"{r['events_generated']:,} events of {r['orders']:,} orders in {r['commits']} daily commits "
        f"(lake_version {r['lake_version']}): {r['duplicates']:,} duplicates, {r['conflicts']} conflicts, "
        f"{r['gaps']} gaps, {r['late']:,} late, {r['out_of_order']:,} out of order, {r['poison']} poison"
    )


def _audit_line(r: dict[str, Any]) -> str:
    dropped = r["duplicates_at_ingest"]  # the sample's duplicates: ingest drops them, the lake's rows have none
    return (
        f"{r['events']:,} events, {r['partition_keys']:,} keys, "
        + ("" if dropped is None else f"{dropped:,} duplicates dropped at ingest, ")
        + f"{r['conflicts']} conflicts, "
        f"{r['gaps']} keys with gaps, {r['late']:,} late, {r['quarantined']} quarantined"
    )


# -- steps: a faulty live view, the rebuild, the check, cutover and rollback --------------------
VIEW = "order_summary"


def _workbench(ctx: DemoContext) -> Any:
    if "workbench" not in ctx.made:
        from rebuild.workbench import Workbench

        wb = ctx.made["workbench"] = Workbench(ctx.state.config)
        wb.json_output = ctx.state.out.json  # progress shows as in every command: nothing under --json
    return ctx.made["workbench"]


def _live(ctx: DemoContext) -> dict[str, Any]:
    """Build live the way production does: one event at a time, with three realistic faults."""
    from rebuild.consumer import Faults, build_live

    wb = _workbench(ctx)
    orders = [r[0] for r in lake.read_events(ctx.lake, lake.EventFilter(event_types=("PaymentAuthorized",)))
              .project("partition_key").order("partition_key").limit(40).fetchall()]
    faults = Faults(duplicates=tuple(orders[:3]), poison={orders[3]: 2, orders[4]: 3},
                    poison_quarantined=True, old_version=True)
    result = build_live(ctx.lake, wb.store, faults)
    ctx.made["faulted"] = result.faulted
    return {"rows": result.rows, "events": result.events,
            "faulted": {k: len(v) for k, v in result.touched.items()}, "faulted_orders": len(result.faulted)}


def _rebuild(ctx: DemoContext) -> dict[str, Any]:
    result = _workbench(ctx).run(VIEW, full=True)
    return {"run_id": result.run_id, "rows": result.record.rows_written, "seconds": result.record.seconds,
            "events_read": result.record.events_read}


def _check(ctx: DemoContext) -> dict[str, Any]:
    """The check must find exactly the orders the consumer's faults changed, and explain them."""
    report = _workbench(ctx).check(VIEW)
    diff = report.diff
    differing = _differing_keys(_workbench(ctx), report)
    return {"verdict": report.verdict.verdict, "reasons": list(report.verdict.reasons),
            "changed_rows": diff.changed_rows if diff else None,
            "only_in_live": diff.only_in_live if diff else None,
            "only_in_rebuilt": diff.only_in_rebuilt if diff else None,
            "found_exactly_the_faults": differing == ctx.made["faulted"],
            "report": report.paths.get("html"),  # deprecated: an object of both paths in `rebuild check`
            **report.report_files()}


def _differing_keys(wb: Any, report: Any) -> set[str]:
    live, rebuilt = wb.view(VIEW), wb.view(VIEW, "shadow")
    joined = live.join(rebuilt, on="order_id", how="full", suffix="_rebuilt", coalesce=True)
    columns = [c for c in live.columns if c != "order_id"]
    import polars as pl

    changed = joined.filter(pl.any_horizontal([pl.col(c).ne_missing(pl.col(f"{c}_rebuilt")) for c in columns]))
    return set(changed["order_id"].to_list())


def _cutover(ctx: DemoContext) -> dict[str, Any]:
    """The report explains every difference, so the operator overrides the failed verdict."""
    wb = _workbench(ctx)
    cp = wb.cutover(VIEW, force=True)
    record = wb.store.run(cp.run_id)
    return {"run_id": cp.run_id, "rows": cp.rows, "forced": bool(record and record.forced)}


def _rollback(ctx: DemoContext) -> dict[str, Any]:
    wb = _workbench(ctx)
    cp = wb.rollback(VIEW)
    rows = wb.store.count(VIEW)
    wb.close()
    return {"live_run": cp.run_id if cp else None, "rows": rows}


STEPS: list[Step] = [
    Step("reset", _reset, lambda r: "removed the previous demo lake" if r["removed"] else "new lake"),
    Step("sample", _sample, _sample_line),
    Step("audit", _audit, _audit_line),
    Step("live", _live, lambda r: f"a per-event consumer built live {VIEW} ({r['rows']:,} rows) with faults "
         f"{r['faulted']} touching {r['faulted_orders']:,} orders"),
    Step("rebuild", _rebuild, lambda r: f"replayed {r['events_read']:,} events into {VIEW}__shadow "
         f"({r['rows']:,} rows) in {r['seconds']:.2f}s, run {r['run_id']}"),
    Step("check", _check, lambda r: f"verdict {r['verdict'].upper()}: {r['changed_rows']:,} rows changed, "
         f"{r['only_in_live']:,} only in live, {r['only_in_rebuilt']:,} only in rebuilt; the differences are "
         f"{'exactly' if r['found_exactly_the_faults'] else 'NOT exactly'} the faulted orders; report {r['report']}"),
    Step("cutover", _cutover, lambda r: f"cut over run {r['run_id']} ({r['rows']:,} rows); forced={r['forced']} "
         "is kept in the run record"),
    Step("rollback", _rollback, lambda r: f"rolled back: live is the consumer's view again ({r['rows']:,} rows)"),
]
