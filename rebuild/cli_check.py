"""``rebuild check VIEW``: compare the shadow with live, validate, write the report, record the verdict.

Exit code 0 when the verdict is pass, 1 when it is fail (the result is printed first).
"""

from __future__ import annotations

from typing import Any

import click
from rich.console import Console

from rebuild.cli import Failed, State, cli, command
from rebuild.cli_views import workbench
from rebuild.errors import RebuildError
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
    try:
        with workbench(state) as wb:
            report = wb.check(view, live=live, tolerance=tolerances, progress=progress)
    except CheckError as exc:  # the CLI reports expected errors of every package with exit code 2
        raise RebuildError(str(exc), **exc.context) from exc
    data = report.to_dict()
    summary = {k: data[k] for k in ("verdict", "reasons", "view", "run_id", "rows_live", "rows_rebuilt",
                                    "only_in_live", "only_in_rebuilt", "changed_rows", "changed_by_column", "report")}
    state.out.result(summary, lambda c: _print(c, report, view, live))
    if not report.passed:
        raise Failed(f"{view} run {report.run_id}: verdict fail: {'; '.join(report.verdict.reasons)}; "
                     f"report {report.paths.get('html')}")


def _print(console: Console, report: Any, view: str, live: str | None) -> None:
    console.print(report.summary(), markup=False)
    if report.diff is not None:
        console.print(f"  {report.diff.summary()}", markup=False)
    for note in (*report.verdict.notes, *(report.diff.notes if report.diff is not None else ()), *report.notes):
        console.print(f"  note: {note}", markup=False)
    console.print(f"  report: {report.paths.get('html')}", markup=False)
    console.print(f"next: {_next(report, view, live)}", markup=False)


def _next(report: Any, view: str, live: str | None) -> str:
    """The step a person takes after reading this verdict."""
    if live not in (None, view):
        return f"this verdict compared with {live}; `rebuild check {view}` compares with live before a cutover"
    d = report.diff
    if report.passed and d is not None and d.scope is not None and d.rows_live == d.rows_rebuilt == 0:
        return (f"`rebuild cutover {view}`: the patch changes no row, so live only takes its lake position "
                f"(`rebuild rollback {view}` still undoes the cutover before it)")
    if report.passed:
        return f"`rebuild cutover {view}` (and `rebuild rollback {view}` to undo it)"
    if d is not None and d.scope is not None and (d.added or d.removed):  # cutover refuses it, also forced
        return (f"this patch cannot be cut over, also not with --force: it changes live's rows, and its columns "
                f"differ from live's (added {list(d.added)}, removed {list(d.removed)}); to change live's columns, "
                f"`rebuild run {view} --full`, check and cut over that")
    if d is not None and d.differences == 0:  # only the expectations failed
        return ("the rebuilt view equals live, which fails the same expectations: no cutover changes that; fix the "
                "data or the projection's expectations (see the report)")
    return (f"read the report; if the differences are the corrections you meant, `rebuild cutover {view} --force` "
            f"(the run record keeps it); if not, fix the projection and `rebuild run {view}` again")
