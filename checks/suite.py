"""All checks of one rebuilt view, from plain inputs: diff, lineage, expectations, audit, verdict, report.

``rebuild.Workbench.check`` gathers the inputs (the shadow, its run, the projection's metadata)
and calls :func:`check_view`; this module knows nothing of projections or stores.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

import duckdb

from lake import Lake, Snapshot
from lake.audit import audit as audit_lake
from lake.encode import dumps

from checks.diff import DiffResult, Tolerance, compare
from checks.expect import validate, warm_up
from checks.lineage import LATE_AFTER, difference_days, lineage
from checks.report import CheckReport, make_plots, plot_data, write_atomically
from checks.verdict import decide, thresholds_of

__all__ = ["CHECK_STEPS", "ViewSpec", "check_view"]
log = logging.getLogger(__name__)
#: the steps of a check, each reported to ``check_view``'s ``step`` once done (progress for long checks)
CHECK_STEPS = ("diff", "lineage", "audit", "days", "expectations", "report")
#: whole-lake audits kept under ``{reports_dir}/.audits`` for the next check of the same snapshot
AUDITS_KEPT = 16


@dataclass(frozen=True)
class ViewSpec:
    """What the checks need to know about a view and the projection that built it."""

    view: str
    key: tuple[str, ...]
    partition_column: str | None = None
    window: tuple[str, str] | None = None
    streams: tuple[str, ...] | None = None
    event_types: tuple[str, ...] | None = None
    expectations: dict[str, Any] = field(default_factory=dict)
    thresholds: dict[str, Any] = field(default_factory=dict)


def check_view(
    con: duckdb.DuckDBPyConnection,
    lake: Lake,
    spec: ViewSpec,
    *,
    run_id: str,
    rebuilt: str,
    live: str | None,
    tolerance: dict[str, Tolerance] | None = None,
    scope: str | None = None,
    scope_columns: Sequence[str] = (),
    as_of: int | None = None,
    run: dict[str, Any] | None = None,
    runs: Sequence[dict[str, Any]] = (),
    reports_dir: str | None = None,
    late_after: timedelta = LATE_AFTER,
    report_name: str | None = None,
    catch_up_from: int | None = None,
    names: tuple[str | None, str] | None = None,
    audit_keys: Sequence[str] | None = None,
    notes: Sequence[str] = (),
    step: Callable[[str], None] = lambda name: None,
) -> CheckReport:
    """Compare ``rebuilt`` with ``live`` (None: no live view), validate, trace, judge and report.

    ``catch_up_from``: ``rebuilt`` catches live up from that lake_version (see ``decide``).
    ``names``: the store's names of live and rebuilt when ``con`` reads them through views of other names.
    ``audit_keys``: the partition keys a patch corrects; the lake audit is of their events only.
    ``notes``: the caller's, shown first (payload values the view's events hold that do not decode).
    ``step(name)`` is called as each of ``CHECK_STEPS`` is done (a check of 100M events takes minutes)."""
    warm_up()  # Great Expectations imports while DuckDB compares, traces and audits: it runs last
    thresholds = thresholds_of(spec.thresholds)
    shown_live, shown_rebuilt = names or (live, rebuilt)
    diff = compare(con, live, rebuilt, spec.key, tolerance, scope, scope_columns, names=(shown_live or live, shown_rebuilt),
                   limited=tuple(thresholds["columns"])) if live else None
    step("diff")
    skipped = tuple((run or {}).get("skipped_files") or ())  # unreadable: the check reads what the run read
    traced = _lineage(con, lake, spec, diff, as_of, late_after, skipped)
    step("lineage")
    audit, audit_html, lateness = _audit(con, lake, spec, as_of, audit_keys, reports_dir)
    step("audit")
    days = difference_days(lake, list(diff.differing_keys) if diff else [], partition_column=spec.partition_column,
                           window=spec.window, streams=spec.streams, as_of=as_of, con=con, without_files=skipped)
    step("days")
    live_rows = diff.rows_live if diff and catch_up_from is None else None  # a catch-up adds and removes rows
    expectations = replace(validate(con, rebuilt, spec.key, spec.expectations, live_rows=live_rows,
                                    row_tolerance=thresholds["row_count_tolerance"]), table=shown_rebuilt)
    step("expectations")
    drawn = plot_data(diff, days, lateness, [dict(r) for r in runs], run_id)
    report = CheckReport(
        view=spec.view, run_id=run_id, live=shown_live, rebuilt=shown_rebuilt, verdict=decide(diff, expectations, thresholds, catch_up_from),
        diff=diff, lineage=tuple(traced), expectations=expectations, run=dict(run or {}), audit=audit,
        audit_html=audit_html,  # a keyed audit (of no key, for an empty catch-up) shows no stream whole
        notes=(*notes, *([] if audit_keys is not None else [*_empty_streams(spec, audit), *_unheld_event_types(spec, audit)]),
               *_times_out_of_range(audit), *_skipped_files(run or {}), *_full_because(run or {}),
               *_deduped(run or {})),
        plots=make_plots(drawn, run_id), plot_data=drawn,
    )
    report = report.write(reports_dir, report_name) if reports_dir else report
    step("report")
    return report


def _lineage(con: duckdb.DuckDBPyConnection, lake: Lake, spec: ViewSpec, diff: DiffResult | None, as_of: int | None,
             late_after: timedelta, without_files: tuple[str, ...]) -> list[Any]:
    """Lineage of the diff's sampled keys (only in live, only in rebuilt, changed), in ``con``'s database."""
    if diff is None:
        return []
    kinds: dict[tuple[Any, ...], str] = {}
    changes: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = {}
    keys: list[dict[str, Any]] = []
    for kind in ("only_in_live", "only_in_rebuilt", "changed"):
        for row in diff.samples[kind]:
            k = {c: row[c] for c in diff.key}
            kt = tuple(k.values())
            if kt not in kinds:
                keys.append(k)
                kinds[kt] = kind
            if "changes" in row:
                changes[kt] = row["changes"]
    return lineage(lake, keys, partition_column=spec.partition_column, window=spec.window, streams=spec.streams,
                   event_types=spec.event_types, as_of=as_of, late_after=late_after, kinds=kinds, changes=changes,
                   con=con, without_files=without_files)


def _audit(con: duckdb.DuckDBPyConnection, lake: Lake, spec: ViewSpec, as_of: int | None,
           keys: Sequence[str] | None = None, reports_dir: str | None = None) -> tuple[dict[str, Any], str, dict[str, int]]:
    """The lake audit of the consumed streams (of partition ``keys`` only, when given), as the run saw
    the lake (lake_version ``as_of``), in a cursor of ``con`` (within its memory limit, temp directory
    and threads).

    A whole-lake audit is the larger part of a full run's check (8.8 s of 11 s at 10M events, minutes at
    100M) and the same for every check of one lake snapshot and lake_version: another view's, or this
    view's again with another tolerance. It is kept under ``{reports_dir}/.audits`` and read back then."""
    snapshot, kept = None, None
    if reports_dir and keys is None and as_of is not None:  # a keyed audit is cheap: not kept
        snapshot = lake.snapshot()
        kept = _kept_audit(Path(reports_dir), lake, snapshot, spec.streams, as_of)
    if kept is not None and kept.is_file():
        try:
            found = json.loads(kept.read_text(encoding="utf-8"))
            return found["audit"], found["html"], found["lateness"]
        except (OSError, ValueError, KeyError) as exc:
            log.warning("cannot read the kept lake audit %s (%s); auditing the lake again", kept, exc)
    report = audit_lake(lake, streams=list(spec.streams) if spec.streams else None, as_of=as_of, con=con,
                        partition_keys=keys, snapshot=snapshot, refuse_unknown=False)  # noted: _empty_streams
    data = report.to_dict()
    lateness: dict[str, int] = {}
    for stream in data.get("streams", {}).values():
        for label, n in stream.get("lateness", {}).get("histogram", {}).items():
            lateness[label] = lateness.get(label, 0) + int(n)
    html = report._repr_html_()
    if kept is not None:
        _keep_audit(kept, {"audit": data, "html": html, "lateness": lateness})
    return data, html, lateness


def _kept_audit(reports_dir: Path, lake: Lake, snapshot: Snapshot, streams: Sequence[str] | None,
                as_of: int) -> Path:
    """Where the audit of this snapshot and lake_version is kept: named by them, the lake, its files
    (a lake made again at the same place, as a notebook does, has other files under the same Delta
    versions) and the audit's code, so that another lake, a new commit or a new audit misses."""
    files = hashlib.sha256("\n".join(sorted(f.path for f in snapshot.files)).encode()).hexdigest()
    key = json.dumps([lake.uri, snapshot.delta_version, files, sorted(streams) if streams else None, as_of, _audit_code()])
    return reports_dir / ".audits" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


@cache
def _audit_code() -> str:
    return hashlib.sha256(inspect.getsource(inspect.getmodule(audit_lake)).encode()).hexdigest()  # type: ignore[arg-type]


def _keep_audit(path: Path, found: dict[str, Any]) -> None:
    """Write ``found`` at ``path`` and remove all but the newest ``AUDITS_KEPT``; a failure only costs the
    next check an audit (the report itself is written elsewhere, and says so when it cannot be)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, dumps(found))
        kept = sorted(path.parent.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in kept[AUDITS_KEPT:]:
            old.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("cannot keep the lake audit at %s (%s); the next check audits the lake again", path, exc)


def _skipped_files(run: dict[str, Any]) -> list[str]:
    """A run with --skip-corrupted left files out: what it rebuilt lacks their events, whatever the verdict."""
    skipped = run.get("skipped_files") or []
    if not skipped:
        return []
    return [f"the run left out {len(skipped)} unreadable lake file(s) (--skip-corrupted), so the view lacks their "
            f"events: {', '.join(skipped[:3])}{' ...' if len(skipped) > 3 else ''}; restore them and run again"]


def _full_because(run: dict[str, Any]) -> list[str]:
    """A full run since live was built by other code (an upgrade's, say): its differences may be that change's."""
    why = run.get("full_because")
    return [f"a full run, since {why}; its differences from live may be the effects of that change, "
            "not of the events"] if why else []


def _deduped(run: dict[str, Any]) -> list[str]:
    """A run that corrects what dedupes removed (``rebuild.dedupe.pending``): its differences are the copies' doing."""
    versions = run.get("deduped")
    return [f"the run corrects what `rebuild lake dedupe` removed at Delta version {', '.join(map(str, versions))} "
            "(copies of events live applied): its differences from live are what the copies did there; cut over "
            "with --force once the report shows nothing else"] if versions else []


def _times_out_of_range(audit: dict[str, Any]) -> list[str]:
    """Events an older version archived with a time no report can show: the view replayed them as they are."""
    return [f"stream {stream} holds {out['events']:,} event(s) with an event_time outside the years 1 to 9999 "
            f"(e.g. {out['examples'][0]['event_id']}: {out['examples'][0]['event_time']}), archived before ingest "
            "quarantined such times: the view replayed them as they are; `rebuild lake audit` names them"
            for stream, s in (audit.get("streams") or {}).items() if (out := s.get("times_out_of_range", {})).get("events")]


def _empty_streams(spec: ViewSpec, audit: dict[str, Any]) -> list[str]:
    """A stream the view reads that holds no events yet (one that starts later) or at all (misspelt)
    gives the view none of its rows, and is no error: say so."""
    held = audit.get("streams") or {}
    empty = [s for s in spec.streams or () if not (held.get(s) or {}).get("events")]
    if not empty:
        return []
    many = len(empty) > 1
    return [f"{'streams' if many else 'stream'} {empty} {'hold' if many else 'holds'} no events up to lake_version "
            f"{audit.get('lake_version')}: the view has none of their events yet; the next runs read them as they "
            "arrive, but a misspelt stream never: check streams= in the projection against `rebuild lake audit`"]


def _unheld_event_types(spec: ViewSpec, audit: dict[str, Any]) -> list[str]:
    """A consumed event type the lake does not hold (a typo: 'PaymentAuthorised') reads no events, and
    a view without live passes on its expectations alone: say so."""
    held = audit.get("event_types") or {}
    missing = [t for t in spec.event_types or () if t not in held]
    if not missing:
        return []
    where = f"the lake's streams {list(spec.streams)}" if spec.streams else "the lake"
    return [f"consumes {missing}, event types not in {where} (event types there: {sorted(held)}); a misspelt "
            "event type reads nothing: check consumes= in the projection"]
