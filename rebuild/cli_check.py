"""``rebuild check VIEW``: compare the shadow with live, validate, write the report, record the verdict.

Exit code 0 when the verdict is pass, 1 when it is fail (the result is printed first).
"""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console

from rebuild.cli import Failed, State, cli, command
from rebuild.cli_views import workbench
from rebuild.progress import PROGRESS


@command(cli, "check")
@click.argument("view")
@click.option("--live", "live", help="Compare with this table instead of the live VIEW.")
@click.option("--tolerance", multiple=True, metavar="COL=ABS|COL=REL%",
              help="Numeric tolerance for a column, absolute (total=0.01) or relative (total=0.5%); repeat.")
@click.option("--progress", type=click.Choice(PROGRESS), default="auto", show_default=True,
              help="Progress display: bar for people, log lines for jobs.")
def check_cmd(state: State, view: str, live: str | None, tolerance: tuple[str, ...], progress: str) -> None:
    """Check VIEW__shadow against live: diff, lineage, expectations, lake audit -> report and verdict."""
    from checks import CheckError, parse_tolerance

    try:
        tolerances = parse_tolerance(tolerance)
    except CheckError as exc:
        raise click.BadParameter(str(exc), param_hint="--tolerance") from None
    with workbench(state) as wb:  # a CheckError is reported as every package's expected error, exit 2
        report = wb.check(view, live=live, tolerance=tolerances, progress=progress)
    data = report.to_dict()
    summary = {k: data[k] for k in ("verdict", "reasons", "view", "run_id", "rows_live", "rows_rebuilt",
                                    "only_in_live", "only_in_rebuilt", "changed_rows", "changed_by_column", "report", "next")}
    summary |= report.report_files()
    state.out.result(summary, lambda c: _print(c, report))
    if not report.passed:
        raise Failed(f"{view} run {report.run_id}: verdict fail: {'; '.join(report.verdict.reasons)}; "
                     f"report {report.paths.get('html')}")


def _print(console: Console, report: Any) -> None:
    console.print(report.summary(), markup=False)
    if report.diff is not None:
        console.print(f"  {report.diff.summary()}", markup=False)
    if why := report.why():
        console.print(f"  why, from {why[0]}:", markup=False)
        for line in why[1:]:
            console.print(f"    - {line}", markup=False)
    for note in (*report.verdict.notes, *(report.diff.notes if report.diff is not None else ()), *report.notes):
        console.print(f"  note: {note}", markup=False)
    console.print(f"  report: {report.paths.get('html')}", markup=False)
    console.print(f"next: {report.next_step()}", markup=False)
