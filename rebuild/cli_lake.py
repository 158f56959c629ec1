"""``rebuild lake ...``: ingest, sample, audit, compact, dedupe, vacuum."""

from __future__ import annotations

import logging
import shlex
from datetime import timedelta
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

import lake
from lake.audit import audit
from lake.table import RETAIN_HOURS
from rebuild.cli import Failed, State, cli, command
from rebuild.errors import ProjectionError
from rebuild.workbench import Workbench, scratch

log = logging.getLogger(__name__)


@cli.group("lake")
@click.option("--json", "json_out", is_flag=True, help="Print one JSON object on stdout.")
@click.pass_obj
def lake_group(state: State, json_out: bool) -> None:
    """The Parquet event lake: ingest, sample, audit, compact, dedupe, vacuum."""
    state.out.json = state.out.json or json_out  # `rebuild lake --json audit` as `rebuild lake audit --json`


def open_lake(state: State) -> lake.Lake:
    return lake.Lake(state.config.lake_uri, storage_options=state.config.storage_options)


@command(lake_group, "ingest")
@click.argument("paths", nargs=-1, type=click.Path())
@click.option("--stream", help="Stream the events belong to (unless the mapping has a stream field).")
@click.option("--format", "fmt", type=click.Choice(["ndjson", "csv", "parquet"]), help="Input format (default: from the suffix).")
@click.option("--map", "mapping", help="Column mapping: a TOML file or a built-in name (aws-lambda-stream).")
@click.option("--strict", is_flag=True, help="Exit 1 when any record was quarantined.")
@click.option("--from-postgres", "pg_uri", help="Archive from a PostgreSQL event table at this URI.")
@click.option("--table", "pg_table", help="With --from-postgres: the event table ([schema.]table).")
@click.option("--position-column", help="With --from-postgres: the integer column polls resume from.  [default: id]")
@click.option("--batch-rows", type=click.IntRange(min=1), help="With --from-postgres: rows per page.  [default: 100000]")
@click.option("--max-rows", type=click.IntRange(min=1),
              help="With --from-postgres: at most this many rows per poll (the next poll goes on).")
def ingest_cmd(
    state: State,
    paths: tuple[str, ...],
    stream: str | None,
    fmt: str | None,
    mapping: str | None,
    strict: bool,
    pg_uri: str | None,
    pg_table: str | None,
    position_column: str | None,
    batch_rows: int | None,
    max_rows: int | None,
) -> None:
    """Archive NDJSON, CSV or Parquet files (or a PostgreSQL table) into the lake, idempotently."""
    target = open_lake(state)
    chosen = lake.Mapping.load(mapping) if mapping else None
    config = state.config
    if pg_uri:
        if not pg_table:
            raise click.UsageError("--from-postgres needs --table")
        if paths:
            raise click.UsageError("give files to ingest or --from-postgres, not both")
        from lake.postgres import ingest_postgres

        given: dict[str, Any] = {"position_column": position_column, "batch_rows": batch_rows, "max_rows": max_rows}
        with state.out.working(f"archiving {pg_table}"):
            result = ingest_postgres(
                target, pg_uri, pg_table, stream=stream, mapping=chosen,
                memory_limit=config.memory_limit, temp_directory=config.temp_directory,
                **{name: value for name, value in given.items() if value is not None},  # else the API's defaults
            )
    else:
        named = [flag for flag, value in (("--table", pg_table), ("--position-column", position_column),
                                          ("--batch-rows", batch_rows), ("--max-rows", max_rows)) if value is not None]
        if named:
            raise click.UsageError(f"{', '.join(named)}: only with --from-postgres URI (a PostgreSQL source), not with files")
        if not paths:
            raise click.UsageError("give one or more files to ingest, or --from-postgres URI --table T")
        with state.out.working(f"archiving {len(paths):,} input{'s' if len(paths) > 1 else ''}"):
            result = lake.ingest(
                target, list(paths), stream=stream, fmt=fmt, mapping=chosen,
                memory_limit=config.memory_limit, temp_directory=config.temp_directory,
            )
    state.out.result(result.to_dict(), lambda c: _print_ingest(c, result))
    if strict and result.quarantined:
        reasons = ", ".join(f"{reason}: {count:,}" for reason, count in result.reasons.items())
        raise Failed(f"--strict: {result.quarantined:,} records quarantined{result.already()} ({reasons}); "
                     "`rebuild lake audit` lists them")


def _print_ingest(console: Console, result: lake.IngestResult) -> None:
    console.print(
        f"archived [bold]{result.archived:,}[/bold] events, {result.duplicates:,} duplicates, "
        f"{result.quarantined:,} quarantined{escape(result.already())} -> lake_version {result.lake_version} "
        f"({result.seconds:.1f}s)"
    )
    for reason, count in result.reasons.items():
        console.print(f"  quarantined {count:,}: {escape(reason)}")


@command(lake_group, "compact")
@click.option("--stream", "streams", multiple=True, help="Only these streams.")
@click.option("--no-decode", is_flag=True, help="Do not store the projections' payload fields as typed columns.")
def compact_cmd(state: State, streams: tuple[str, ...], no_decode: bool) -> None:
    """Rewrite small files sorted by (partition_key, sequence), with the payload fields the
    configured projections declare as typed columns; readers are never disturbed."""
    if no_decode:  # the layout only: the projection modules are not needed (nor imported, a broken one included)
        from lake.compact import compact

        with scratch(state.config) as con, state.out.working("compacting the lake"):
            result = compact(open_lake(state), streams=list(streams) or None, con=con)
    else:
        with Workbench(state.config) as wb, state.out.working("compacting the lake"):
            result = wb.compact(list(streams) or None)
    state.out.result(
        result.to_dict(),
        lambda c: c.print(
            f"compacted {result.partitions} partitions: {result.files_before} files -> "
            f"{result.files_after} ({result.rows:,} rows, {result.seconds:.1f}s)"
            + (f"; the quarantine: {result.quarantine_files_before:,} files -> {result.quarantine_files_after}"
               if result.quarantine_files_before else "")
        ),
    )


@command(lake_group, "dedupe")
@click.option("--dry-run", is_flag=True, help="Only find the copies; remove nothing.")
def dedupe_cmd(state: State, dry_run: bool) -> None:
    """Remove the later copies of event ids archived more than once (an earlier version's ingest did), in one
    commit; copies whose content differs are quarantined. Says which views (live, or a shadow not cut over) to run again, and how."""
    with Workbench(state.config) as wb, state.out.working("looking for events archived twice"):
        report = wb.dedupe(dry_run)
    state.out.result(report.to_dict(), report.render)


@command(lake_group, "vacuum")
@click.option("--retain-hours", default=RETAIN_HOURS, show_default=True, type=click.IntRange(min=0),
              help="Keep the files the snapshots of this many past hours read.")
@click.option("--dry-run", is_flag=True, help="Only count the files it would delete.")
def vacuum_cmd(state: State, retain_hours: int, dry_run: bool) -> None:
    """Delete the files compaction replaced, once no snapshot of the last --retain-hours reads them,
    and the staging folders of distributed runs started before then that a killed run left."""
    from rebuild.distributed import remove_abandoned_parts

    target = open_lake(state)
    found = target.vacuum(retain_hours, dry_run)
    staged = remove_abandoned_parts(target, timedelta(hours=retain_hours), dry_run)
    verb = "would delete" if dry_run else "deleted"
    counts = ", ".join(f"{name} {n['files']:,}" + (f" ({n['bytes']:,} bytes)" if n["bytes"] else "") for name, n in found.items())
    state.out.result({"retain_hours": retain_hours, "dry_run": dry_run, "tables": found, "staging_runs": staged},
                     lambda c: c.print(f"{verb} the files replaced more than {retain_hours} hours ago: {counts}; "
                                       f"staging folders of runs killed before then: {staged:,}", markup=False))


@command(lake_group, "sample")
@click.option("--events", default=100_000, show_default=True, help="How many events to generate.")
@click.option("--seed", default=7, show_default=True, help="Random seed: the same seed gives the same lake.")
@click.option("--out", type=click.Path(), help="Lake to create (default: the configured lake).")
@click.option("--days", default=42, show_default=True, help="Days of history: one ingest commit per day.")
def sample_cmd(state: State, events: int, seed: int, out: str | None, days: int) -> None:
    """Write a realistic order-domain lake with known anomalies (duplicates, late events, ...)."""
    from pathlib import Path

    from rich.progress import Progress

    from lake.sample import generate

    # --out s3://... reaches the bucket with the configured [lake.storage_options], as --lake does
    target = lake.Lake(out, storage_options=state.config.storage_options) if out else open_lake(state)
    config = state.config
    if config.temp_directory and "://" not in config.temp_directory:
        Path(config.temp_directory).mkdir(parents=True, exist_ok=True)
    with Progress(console=state.out.errors, transient=True, disable=state.out.json) as bar:
        task = bar.add_task("ingesting simulated days", total=days)
        result = generate(
            target, events=events, seed=seed, days=days, memory_limit=config.memory_limit,
            temp_directory=config.temp_directory, progress=lambda done, _: bar.update(task, completed=done),
        )  # fmt: skip
    # --out elsewhere than the configured lake: a plain `rebuild lake audit` would audit another lake
    audit = "rebuild lake audit" if target.uri == open_lake(state).uri else f"rebuild --lake {shlex.quote(target.uri)} lake audit"
    state.out.result(result.to_dict(), lambda console: result.render(console, audit))


@command(lake_group, "audit")
@click.option("--stream", "streams", multiple=True, help="Only these streams.")
@click.option("--read-files", is_flag=True, help="Decode every page of every file, not only the footers (slower).")
@click.option("--as-of", type=int, help="The lake as it was at this lake_version (what a run --as-of replays).")
def audit_cmd(state: State, streams: tuple[str, ...], read_files: bool, as_of: int | None) -> None:
    """Per stream: events, keys, duplicates, conflicts, gaps, types, drift, lateness, quarantine.

    Also checks that every data file is readable Parquet; exits 1 when one is not (named with its error).
    """
    options: dict[str, Any] = {"verify": "read" if read_files else "footer", "as_of": as_of}
    try:
        with Workbench(state.config) as wb, state.out.working("auditing the lake"):
            report = wb.audit(list(streams) or None, **options)
    except ProjectionError as exc:  # the lake's audit does not need the projections: only its unknown types do
        log.warning("unknown event types not judged: %s", exc)
        with scratch(state.config) as con, state.out.working("auditing the lake"):
            report = audit(open_lake(state), streams=list(streams) or None, con=con, **options)
    state.out.result(report.to_dict(), report.render)
    if report.bad_files:
        raise Failed(f"{len(report.bad_files)} unreadable lake file(s): {', '.join(b.path for b in report.bad_files)}; "
                     "restore them from a backup, or rebuild views without their events: `rebuild run VIEW --skip-corrupted`")
