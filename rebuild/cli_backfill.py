"""``rebuild backfill``: a long correction in event-time chunks (or a full run by key bucket),
unattended and resumable. Exit codes: 0 the shadow awaits `rebuild check` / `rebuild cutover`,
2 usage or expected error (including another process holding the view's lock), 130 interrupted.
"""

from __future__ import annotations

import click

from rebuild.cli import State, cli, command
from rebuild.cli_views import workbench
from rebuild.errors import ConfigError
from rebuild.progress import PROGRESS


@command(cli, "backfill")
@click.argument("view")
@click.option("--since", help="First event time to correct (ISO date or time, UTC).")
@click.option("--until", help="Correct events before this event time (ISO date or time, UTC).")
@click.option("--chunk", default="1d", show_default=True, help="Event-time chunk per step: 30m, 6h, 1d, 1w.")
@click.option("--buckets", is_flag=True, help="Instead: a full rebuild key bucket by key bucket (by_key views).")
@click.option("--exclude-quarantined", is_flag=True, help="Leave out partition keys that have quarantined records.")
@click.option("--skip-corrupted", is_flag=True,
              help="With --buckets: skip unreadable lake files (named in the run record) instead of failing.")
@click.option("--progress", default="auto", show_default=True, type=click.Choice(PROGRESS),
              help="Progress display: bar for people, log lines (one per chunk) for jobs.")
def backfill_cmd(state: State, view: str, since: str | None, until: str | None, chunk: str, buckets: bool,
                 exclude_quarantined: bool, skip_corrupted: bool, progress: str) -> None:
    """Correct VIEW over [--since, --until) chunk by chunk into VIEW__shadow; rerun to resume."""
    with workbench(state) as wb:
        if buckets:
            if since or until:
                raise ConfigError("--buckets rebuilds the whole view: drop --since/--until")
            run = wb.run(view, full=True, exclude_quarantined=exclude_quarantined, skip_corrupted=skip_corrupted,
                         progress=progress, buckets=True)
            state.out.result(run.to_dict(), lambda c: c.print(run.summary()))
            return
        if not since or not until:
            raise ConfigError("a backfill needs --since and --until (or --buckets for a full rebuild)")
        if skip_corrupted:  # each chunk is a run of its own, whose record the next one's replaces
            raise ConfigError(f"a backfill's chunks do not skip files: `rebuild run {view} --since {since} --until "
                              f"{until}{' --exclude-quarantined' if exclude_quarantined else ''} --skip-corrupted` makes its shadow "
                              "in one run, whose record names them")
        result = wb.backfill(view, since=since, until=until, chunk=chunk, progress=progress,
                             exclude_quarantined=exclude_quarantined)
    state.out.result(result.to_dict(), lambda c: c.print(result.summary()))
