"""``rebuild demo`` and the view commands: ls, plan, run, cutover, rollback, runs, prune, drop."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from lake.compact import uncompacted
from lake.render import plain, table_of
from rebuild.cli import State, cli, command
from rebuild.config import redact
from rebuild.options import click_options, from_flags
from rebuild.demo import inside_demo_folder
from rebuild.store import LIVE, SHADOW, Checkpoint, store_path
from rebuild.store.base import EMPTY, previous_name
from rebuild.workbench import Workbench


def workbench(state: State) -> Workbench:
    wb = Workbench(state.config)
    wb.json_output = state.out.json
    return wb


@command(cli, "demo")
@click.option("--events", default=200_000, show_default=True, help="Size of the sample lake.")
@click.option("--seed", default=7, show_default=True)
def demo_cmd(state: State, events: int, seed: int) -> None:
    """The whole story on the embedded default: sample lake, rebuild, check, cutover, rollback."""
    from rebuild.demo import run_demo

    state.defaults_expected = True
    run_demo(state, events=events, seed=seed)


@command(cli, "ls")
def ls_cmd(state: State) -> None:
    """Projections with version, strategy, their view's state and how far behind the lake it is."""
    with workbench(state) as wb:
        states = [s.to_dict() for s in wb.ls()]
        others = wb.views_without_projection()
        exists = wb.has_store()
        snapshot = wb.lake.snapshot() if wb.lake.exists() else None
        layout = uncompacted(snapshot.files) if snapshot is not None else None  # from the Delta log: no file opened
        lake = {"uri": wb.lake.uri, "lake_version": snapshot.lake_version if snapshot is not None else None,
                "uncompacted": layout.to_dict() if layout is not None else None}
    store = redact(state.config.store_uri)
    # where the views and the lake are: `rebuild ls` in the wrong folder must not look like a fresh store
    where = (f"lake {lake['uri']} at lake_version {lake['lake_version']}" if lake["lake_version"] is not None
             else f"no event lake at {lake['uri']}")
    path = store_path(state.config.store_uri)
    demo = " or `rebuild demo`" if path is not None and inside_demo_folder(path) else ""  # the demo writes only there
    title = f"views in {store}" if exists else f"no store at {store} yet (`rebuild run VIEW`{demo} makes one)"
    state.out.result({"lake": lake, "lake_uri": lake["uri"], "store": store, "store_exists": exists, "views": states,
                      "views_without_projection": others},
                     lambda c: _print_ls(c, f"{title}; {where}", states, others,
                                         layout.hint() if layout is not None and layout.suggested else None))


def _print_ls(console: Console, title: str, states: list[dict[str, Any]], others: list[dict[str, Any]],
              hint: str | None) -> None:
    console.print(table_of(title, [_brief(v) for v in states], overflow="ellipsis"))
    if hint is not None:
        console.print(hint, markup=False)
    ahead = [v["name"] for v in states if _ahead(v)]
    deduped = any(v["deduped"] is not None for v in states if _ahead(v))
    fixed = [v["name"] for v in states if v["deduped"] is not None and not _ahead(v)]
    if fixed:  # rows keep their lake_version: "0 versions behind" would pass for up to date
        console.print(f"`rebuild lake dedupe` removed copies that live of {', '.join(fixed)} applied: the next run of "
                      "each corrects it (`rebuild run VIEW`, or a scheduled --incremental one)", markup=False)
    if ahead:  # a restored older lake (or another lake): "0 versions behind" would pass for up to date
        built = f"live of {', '.join(ahead)} was built from a later lake_version than this lake has: "
        console.print(built + ("`rebuild lake dedupe` removed the newest commits' events, all of them copies archived "
                               "twice (or the lake is an older copy, or another one); their next run rebuilds them in "
                               "full, as the dedupe said" if deduped else
                               "the lake is an older copy (a backup restored?) or another one; give the lake they were "
                               "built from (--lake), or their next run rebuilds them in full from this one"),
                      markup=False)
    if others:  # a renamed projection, or a module left out of the config: its live view is no longer updated
        listed = ", ".join(v["name"] + ("" if v["live_rows"] is None else f" (live: {v['live_rows']:,} rows)") for v in others)
        console.print(f"views of no configured projection, which nothing updates: {listed}; list their module "
                      "under [projections] modules to run them again (a renamed projection builds a new view), or "
                      "retire one with `rebuild drop VIEW`",
                      markup=False)


def _brief(v: dict[str, Any]) -> dict[str, Any]:
    """The columns a person reads first; --json has them all."""
    behind = "-" if v["versions_behind"] is None else f"{v['versions_behind']} versions, {v['events_behind']:,} events"
    if _ahead(v):
        behind = f"ahead: {v['live_lake_version']} > lake's {v['lake_version']}"
    if v["deduped"] is not None:
        behind += f"; deduped at Delta version {v['deduped']}"
    return {"view": v["name"], "v": v["version"], "strategy": v["strategy"], "engine": v["engine"],
            "live rows": v["live_rows"], "shadow": v["shadow"] or "-", "behind": behind,
            "code changed": "yes" if v["stale_code"] else ""}


def _ahead(v: dict[str, Any]) -> bool:
    """Whether live was built from a later lake_version than the lake has."""
    return v["versions_behind"] is not None and v["live_lake_version"] > v["lake_version"]


@command(cli, "plan")
@click.argument("view")
@click_options
def plan_cmd(state: State, view: str, **options: Any) -> None:
    """Show what `rebuild run VIEW` would read and write, without writing anything."""
    with workbench(state) as wb:
        plan = wb.plan(view, from_flags(**options))
    state.out.result(plan.to_dict(), lambda c: _print_plan(c, plan.to_dict(), plan.summary()))


def _print_plan(console: Console, data: dict[str, Any], summary: str) -> None:
    console.print(summary, markup=False)
    reads = {k: v for k, v in data["reads"].items() if k != "by_stream"}
    shown = {**data, "reads": reads, "by stream": data["reads"]["by_stream"] or None}
    for key in ("mode", "method", "kind", "reason", "lake_version", "after_version", "streams", "event_types",
                "since", "until", "key_count", "reads", "by stream", "writes", "estimated_rows"):
        console.print(f"  {key:>14}: {plain(shown[key])}", markup=False)


@command(cli, "run")
@click.argument("view")
@click_options
def run_cmd(state: State, view: str, **options: Any) -> None:
    """Rebuild VIEW (or part of it) into VIEW__shadow; live is never touched."""
    with workbench(state) as wb:
        result = wb.run(view, from_flags(**options))
    state.out.result(result.to_dict(), lambda c: c.print(result.summary(), markup=False))


@command(cli, "cutover")
@click.argument("view")
@click.option("--force", is_flag=True, help="Cut over without a passing check report (recorded in the run).")
def cutover_cmd(state: State, view: str, force: bool) -> None:
    """Make VIEW__shadow live in one transaction; the old live view is kept for rollback."""
    with workbench(state) as wb:
        shadow = wb.store.checkpoint(view, SHADOW)
        cp = wb.cutover(view, force=force)  # refused when there is no shadow
        assert shadow is not None
        record = wb.store.run(shadow.run_id)
        live_rows = wb.store.count(view)
        undo = wb.store.exists(previous_name(view))
    changed = record is None or record.status != EMPTY
    payload = {**cp.to_dict(), "live_rows": live_rows, "changed": changed}
    if changed:
        text = (f"{view}: the patch of run {cp.run_id} ({cp.rows:,} rows) is applied; live has {live_rows:,} rows"
                if cp.kind == "patch" else f"{view} is live from run {cp.run_id} ({live_rows:,} rows)")  # a patch's rows: not live's
    elif cp.role != LIVE:  # live was built outside the workbench: it has no checkpoint
        text = (f"{view}: run {shadow.run_id} changes no row of live; live stays the view built outside the "
                f"workbench ({live_rows:,} rows)")
        payload = {**_no_checkpoint(view), "live_rows": live_rows, "changed": False}
    else:  # a patch that changes nothing: live's rows and rollback point stay
        text = (f"{view}: run {shadow.run_id} changes no row of live; live stays run {cp.run_id} "
                f"({live_rows:,} rows), now at lake_version {cp.lake_version}"
                + (f"; `rebuild rollback {view}` still restores the view from before run {cp.run_id}" if undo else ""))
    state.out.result(payload, lambda c: c.print(text, markup=False))


@command(cli, "rollback")
@click.argument("view")
def rollback_cmd(state: State, view: str) -> None:
    """Restore the previous live VIEW in one transaction (rollback again to undo)."""
    with workbench(state) as wb:
        cp = wb.rollback(view)
        live_rows = wb.store.count(view)  # a patch's checkpoint counts the patch's rows, not live's
    if cp is None:
        state.out.result({**_no_checkpoint(view), "live_rows": live_rows},
                         lambda c: c.print(f"{view} rolled back: live is the view built outside the workbench again"))
    else:
        state.out.result({**cp.to_dict(), "live_rows": live_rows},
                         lambda c: c.print(f"{view} rolled back: live is run {cp.run_id} again ({live_rows:,} rows)"))


def _no_checkpoint(view: str) -> dict[str, Any]:
    """Live built outside the workbench has no checkpoint: its fields are null, so a job finds the same keys."""
    return {**{f.name: None for f in fields(Checkpoint)}, "view": view, "role": LIVE}


@command(cli, "runs")
@click.argument("view", required=False)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1), help="How many runs, newest first.")
def runs_cmd(state: State, view: str | None, limit: int) -> None:
    """Recent runs (newest first) from _rebuild_runs."""
    with workbench(state) as wb:
        runs = [{**r.to_dict(), **r.report_files()} for r in wb.runs(view, limit)]
        if view is not None and not runs:
            wb.projection(view)  # a misspelt view is an error that lists the known ones
        none = _no_store(state, wb)
    for r in runs:
        r.pop("plan")
    rows = [{**{k: r[k] for k in ("run_id", "view", "mode", "kind", "status", "rows_written", "lake_version", "verdict")},
             "forced": "yes" if r["forced"] else ""} for r in runs]
    state.out.result({"runs": runs}, lambda c: c.print(table_of("runs", rows, overflow="ellipsis") if rows else escape(f"no runs of {view or 'any view'} yet{none}")))


def _no_store(state: State, wb: Any) -> str:
    """What `runs` and `prune` add where there is no store yet (they create none)."""
    return "" if wb.has_store() else f": no store at {redact(state.config.store_uri)} yet (`rebuild run VIEW` makes one)"


@command(cli, "prune")
@click.argument("view", required=False)
@click.option("--older-than", "days", required=True, type=click.IntRange(min=0), help="Days since the run finished.")
@click.option("--dry-run", is_flag=True, help="Only list the runs it would forget.")
def prune_cmd(state: State, view: str | None, days: int, dry_run: bool) -> None:
    """Forget old run records and delete their check reports (live, previous and shadow runs stay)."""
    with workbench(state) as wb:
        pruned = wb.prune(days, view, dry_run)
        none = _no_store(state, wb)
    verb = "would forget" if dry_run else "forgot"
    marks = f", and the marks of {len(pruned.jobs):,} jobs no run record names" if pruned.jobs else ""
    state.out.result({"dry_run": dry_run, "older_than_days": days, **pruned.to_dict()},
                     lambda c: c.print(f"{verb} {len(pruned.runs):,} run records of {view or 'every view'} finished over "
                                       f"{days} days ago, and their reports{marks}{none}", markup=False))


@command(cli, "drop")
@click.argument("view")
@click.option("--dry-run", is_flag=True, help="Only list the tables it would drop.")
def drop_cmd(state: State, view: str, dry_run: bool) -> None:
    """Retire a view no configured projection builds any more: drop its live, shadow and previous tables."""
    with workbench(state) as wb:
        dropped = wb.drop(view, dry_run)
    tables = ", ".join(f"{t} ({rows:,} rows)" for t, rows in dropped["tables"].items()) or "no table"
    state.out.result(dropped, lambda c: c.print(
        f"{'would drop' if dry_run else 'dropped'} {tables} and the checkpoints of {view}; its run records and reports "
        "stay until `rebuild prune` forgets them", markup=False))
