"""``rebuild demo`` and the view commands (ls, plan, run, backfill, check, cutover, rollback)."""

from __future__ import annotations

import click

from rebuild.cli import State, cli, command


@command(cli, "demo")
@click.option("--events", default=200_000, show_default=True, help="Size of the sample lake.")
@click.option("--seed", default=7, show_default=True)
def demo_cmd(state: State, events: int, seed: int) -> None:
    """The whole story on the embedded default: sample lake, audit (rebuild, check, cutover follow)."""
    from rebuild.demo import run_demo

    run_demo(state, events=events, seed=seed)
