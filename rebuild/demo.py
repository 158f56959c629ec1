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

import lake
from lake.audit import audit
from lake.sample import generate
from rebuild.errors import RebuildError

if TYPE_CHECKING:
    from rebuild.cli import State

log = logging.getLogger(__name__)

DEMO_FOLDER = ".demo"
#: what a lake folder may hold for the demo to delete it (anything else: refuse)
LAKE_ENTRIES = frozenset({"events", "quarantine", "_commit.lock"})


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
            state.out.console.print(f"[bold]{step.name}[/bold]: {step.summary(result)}")
    seconds = time.monotonic() - started
    payload = {"lake": ctx.lake.uri, "events": events, "seed": seed, "seconds": round(seconds, 3), "steps": ctx.results}
    state.out.result(payload, lambda console: _render(console, ctx, seconds))


def _render(console: Console, ctx: DemoContext, seconds: float) -> None:
    console.print(f"demo finished in {seconds:.1f}s; the lake is at {ctx.lake.uri}")
    console.print("next: `rebuild lake audit` for the full audit")


# -- step: reset ---------------------------------------------------------------------------------
def inside_demo_folder(path: Path) -> bool:
    """Whether ``path`` lies inside (not at) a folder named ``.demo``."""
    return any(parent.name == DEMO_FOLDER for parent in path.parents)


def _reset(ctx: DemoContext) -> dict[str, Any]:
    """Delete the previous demo lake, only inside ``.demo/`` and only if it looks like a lake."""
    path = ctx.lake.local
    if path is None:
        if ctx.lake.exists():
            raise RebuildError(
                f"the demo needs a fresh lake, and {ctx.lake.uri} already holds one; the demo only "
                f"deletes local lakes inside a {DEMO_FOLDER} folder: pass --lake {DEMO_FOLDER}/lake",
                uri=ctx.lake.uri,
            )
        return {"removed": False}
    if not path.exists():
        return {"removed": False}
    _check_removable(path)
    shutil.rmtree(path)
    return {"removed": True}


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
    return (
        f"{r['events']:,} events, {r['partition_keys']:,} keys, {r['conflicts']} conflicts, "
        f"{r['gaps']} keys with gaps, {r['late']:,} late, {r['quarantined']} quarantined"
    )


STEPS: list[Step] = [
    Step("reset", _reset, lambda r: "removed the previous demo lake" if r["removed"] else "new lake"),
    Step("sample", _sample, _sample_line),
    Step("audit", _audit, _audit_line),
]
