"""After ``rebuild lake dedupe``: which views (live, or a shadow not cut over) applied the copies it removed, and the run that corrects each.

Rows keep their lake_version, so a catch-up sees no new event: the plan of a view whose live was built before a
dedupe commit and applied one of its copies adds the correction itself (``pending``, from the lake's records of
what each dedupe removed, ``lake.dedupe.records``), and the command names the runs that correct each view now.
A keys run (``--keys-file``, the partition keys of every copy) recomputes a ``by_key`` view's keys,
and a ``by_window`` view's windows those keys' events fall in, from all their events. A ``merge`` or ``full``
view's keys run reads every event anyway (README, "Incremental strategies"), and a ``merge`` patch must be at
live's lake_version: these get a full run. So does a ``by_window`` view when a removed copy differed from the
copy kept (its window may hold none of the keys' events now), and every view when live is ahead of the lake
(the removed copies were all a commit held) or a key cannot be written on a line of its own (a line
break in it, or nothing but white space, as a tab: a keys file skips a blank line).
"""

from __future__ import annotations

import html
import shlex
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape

from lake.dedupe import RECORDS, DedupeResult, Deduped, records
from lake.table import Lake, Snapshot
from lake.render import html_table
from rebuild.projection import Projection
from rebuild.store import LIVE, SHADOW, Checkpoint, Store
from rebuild.store.base import EMPTY, RunRecord


#: the view's newest run records looked at for the one that moved live to its position (not found: every record counts)
POSITION_RUNS = 100
#: the statuses of runs once cut over (live's position came from one of them)
CUT_OVER = ("live", "previous", "superseded", EMPTY)


@dataclass(frozen=True)
class NextRun:
    """The run that corrects one live view after the dedupe, and why that one."""

    view: str
    command: str
    why: str


@dataclass(frozen=True)
class Correction:
    """What a view's next run adds because dedupes committed since its live was built removed copies it applied."""

    deduped: tuple[int, ...]  # the Delta versions of those dedupe commits
    keys: tuple[str, ...]  # the partition keys of their copies, which a by_key or by_window catch-up recomputes
    full: str | None  # why only a full run corrects it, or None

    def reason(self) -> str:
        """The plan's words for it."""
        versions = ", ".join(map(str, self.deduped))
        done = self.full or f"recomputes the {_count(len(self.keys), 'partition key')} of its copies"
        return f"lake deduped at Delta version {versions}, removing copies live applied: {done}"


def pending(lake: Lake, p: Projection, live: Checkpoint | None, snapshot: Snapshot,
            store: Store | None = None) -> Correction | None:
    """The correction ``p``'s live still needs: of the dedupes committed after its run's snapshot (after none if
    the version before built it, ``_reads_records``), up to ``snapshot``, those that removed a copy it applied
    (None: none did, or no live)."""
    last = snapshot.last_dedupe
    if live is None or last is None:
        return None
    after = live.delta_version if _reads_records(store, live) else -1
    every = records(lake, after, snapshot)
    if last > after and last not in {r.delta_version for r in every}:
        return Correction((last,), (), f"its record, {lake.uri}/{RECORDS}/{last}.parquet, is missing: a full run")
    found = [r for r in every if _applied(p, live, r)]
    if not found:
        return None
    ahead = live.lake_version > snapshot.lake_version
    full = next((why for r in found if (why := _why_full(p, ahead, r)) is not None), None)
    keys = tuple(sorted(set().union(*(r.keys for r in found))))
    return Correction(tuple(r.delta_version for r in found), keys, full)


def _reads_records(store: Store | None, live: Checkpoint) -> bool:
    """Whether the run that moved live to its position was planned by a version that reads the dedupe records (its
    plan says ``deduped``). The version before did not: rolled back to it, its catch-ups cut over moved live past
    dedupes they never corrected, so for a live it built every record counts (a view it rebuilt in full after one is
    recomputed once more). That run is not always live's: a targeted patch keeps live's position, and a patch that
    changes nothing moves it but keeps live's run id; it is the newest cut over at that position but a targeted one."""
    if store is None:
        return False
    own = store.run(live.run_id)  # nearly always the one: a plan reads one record, not POSITION_RUNS
    runs = [own] if own is not None and _moved(own, live) else store.runs(live.view, POSITION_RUNS)
    moved = next((r for r in runs if _moved(r, live)), None)
    return moved is not None and "deduped" in moved.planned()


def _moved(run: RunRecord, live: Checkpoint) -> bool:
    """Whether ``run`` may have moved live to its position: cut over, not targeted, of live's lake and Delta versions."""
    return (run.status in CUT_OVER and run.mode != "targeted"
            and (run.lake_version, run.delta_version) == (live.lake_version, live.delta_version))


@dataclass(frozen=True)
class DedupeReport:
    """The lake's ``DedupeResult`` (with the file listing its partition keys) and each view's correcting run."""

    result: DedupeResult
    next_runs: tuple[NextRun, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**self.result.to_dict(), "next_runs": [asdict(n) for n in self.next_runs]}

    def summary(self) -> str:
        r = self.result
        if not r.removed:
            return "no event id is archived twice: nothing to remove"
        done = "would remove" if r.dry_run else f"removed (Delta version {r.delta_version})"
        return (f"{_count(r.duplicated_ids, 'event id')} archived more than once: {done} "
                f"{_count(r.removed, 'later copy', 'later copies')} from {_count(r.files_rewritten, 'file')}, "
                f"{r.quarantined:,} of them quarantined (their content differs from the copy kept); "
                f"{_count(len(r.keys), 'partition key')}" + (f", listed in {r.keys_file}" if r.keys_file else ""))

    def render(self, console: Console) -> None:
        console.print(escape(self.summary()))
        if self.next_runs:
            console.print("views that applied the copies (live, or a shadow not cut over): the next run of each corrects it, "
                          "a scheduled `rebuild run VIEW --incremental` too (the lake records what was removed); or "
                          "correct one now; then check it and cut over (its check shows what the copies did in live: "
                          "--force once it shows nothing else):")
        for n in self.next_runs:
            console.print(f"  {escape(n.command)}  [dim]# {escape(n.why)}[/dim]")

    def _repr_html_(self) -> str:
        return f"<p>{html.escape(self.summary())}</p>" + html_table([asdict(n) for n in self.next_runs],
                                                                   "the runs that correct the views (live, or a shadow not cut over)")


def next_runs(projections: Iterable[Projection], store: Store | None, result: DedupeResult) -> list[NextRun]:
    """The views whose live read a removed copy (built from its lake_version on, of its stream and event type),
    and those whose shadow did, which a cutover would make live. Without a keys file (a dry run) the commands say ``KEYS_FILE``."""
    keys_file = result.keys_file
    if not result.removed or store is None:
        return []
    runs = []
    for p in projections:
        live = store.checkpoint(p.name, LIVE)
        if not _applied(p, live, result):
            if _applied(p, store.checkpoint(p.name, SHADOW), result):  # cut over, its live would hold the copies
                runs.append(NextRun(p.name, f"rebuild run {shlex.quote(p.name)}", "its shadow, not cut over yet, "
                                    "applied the copies: a run replaces it (resumed, an unfinished backfill reads them "
                                    "again: its snapshot is pinned)"))
            continue
        why = _why_full(p, live.lake_version > result.lake_version if live else False, result) or _unlisted(result)
        flag = "--full" if why else f"--keys-file {shlex.quote(str(keys_file)) if keys_file else 'KEYS_FILE'}"
        keys = _count(len(result.keys), "key")
        scope = (f"the windows of the events of the {keys}" if p.incremental == "by_window"
                 else f"the {keys} from all {'its' if len(result.keys) == 1 else 'their'} events")
        runs.append(NextRun(p.name, f"rebuild run {shlex.quote(p.name)} {flag}", why or f"recomputes {scope}"))
    return runs


def _applied(p: Projection, checkpoint: Checkpoint | None, result: DedupeResult | Deduped) -> bool:
    """Whether ``p``'s view built up to ``checkpoint`` read a removed copy: one of its streams and event types
    archived at or before the checkpoint's lake_version (a copy of another type archived earlier is not one)."""
    return checkpoint is not None and any(
        version <= checkpoint.lake_version and _reads(p.streams, (stream,)) and _reads(p.consumes, (event_type,))
        for stream, event_type, version in result.first_of)


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n:,} {one if n == 1 else many or one + 's'}"


def _reads(wanted: tuple[str, ...] | None, held: tuple[str, ...]) -> bool:
    return wanted is None or bool(set(wanted) & set(held))


def _unlisted(result: DedupeResult) -> str | None:
    """Why a keys file cannot correct the view (a catch-up, which takes the keys from the lake's record, can)."""
    if any("\n" in k or "\r" in k or not k.strip() for k in result.keys):  # --keys-file skips a blank line
        return "a partition key is blank or holds a line break, which a keys file cannot list"
    return None


def _why_full(p: Projection, ahead: bool, result: DedupeResult | Deduped) -> str | None:
    """Why the view needs a full run, or None when recomputing the copies' keys (or their windows) corrects it."""
    if ahead:
        return "live is ahead of the lake's lake_version now (a commit held nothing but copies): its next run is full"
    if p.incremental in ("merge", "full"):
        return f"a {p.incremental} view's keys run reads every event too, and a full run replaces its rows at once"
    if p.incremental == "by_window" and result.quarantined:
        return "a removed copy differed from the one kept: its window may hold none of the keys' events now"
    return None
