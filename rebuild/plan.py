"""Plan, then apply: a frozen Plan says what a run will read and write; the runner executes it.

The plan pins the lake snapshot (its Delta version), so running it later reads exactly the same
events; ``rebuild plan`` and ``Workbench.plan`` show it without writing anything.
"""

from __future__ import annotations

import contextlib
import html
import itertools
import logging
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any, NamedTuple

import duckdb

from lake import EventFilter, Lake, Snapshot, read_events
from lake.errors import empty_value
from lake.render import html_table
from lake.sql import literal
from lake.table import commit_time
from rebuild.dedupe import Correction, pending
from rebuild.errors import ConfigError, ProjectionError, near_name
from rebuild.options import RunOptions, parse_time
from rebuild.projection import Projection
from rebuild.store import LIVE, Store
from rebuild.store.base import shadow_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Plan:
    """What one run reads (lake snapshot, filters, files) and writes (the shadow)."""

    view: str
    projection_version: int
    fingerprint: str
    engine: str
    strategy: str
    mode: str  # full | incremental | targeted
    method: str  # full | by_key | by_window | merge | scoped: how rows are computed
    kind: str  # full (the whole view) | patch (rows for a scope of keys or windows)
    reason: str
    other_code: bool  # full because live was built by other code (the projection's version or logic changed)
    delta_version: int
    lake_version: int
    after_version: int | None
    live_lake_version: int | None
    streams: tuple[str, ...] | None
    event_types: tuple[str, ...] | None
    since: datetime | None
    until: datetime | None
    keys: tuple[str, ...] | None
    exclude_quarantined: bool
    files: int
    buckets: tuple[int, ...]
    estimated_events: int
    writes: str
    estimated_rows: int | None
    skip_corrupted: bool = False
    skipped_files: tuple[str, ...] = ()  # set by the run: unreadable files it left out
    quarantine_version: int | None = None  # set by the run: the quarantine table's version it left out
    stream_events: tuple[tuple[str, int], ...] = ()  # estimated_events by stream, a declared one without any too
    deduped: tuple[int, ...] = ()  # the dedupe commits (Delta versions) whose copies live applied, which it corrects
    dedupe_keys: tuple[str, ...] = ()  # their copies' partition keys, which a by_key or by_window catch-up recomputes

    def selection(self) -> EventFilter:
        """The events that decide the scope (all events for a full run)."""
        return EventFilter(
            streams=self.streams, event_types=self.event_types, since=self.since, until=self.until,
            after_version=self.after_version, as_of=self.lake_version, partition_keys=self.keys,
        )

    def everything(self, since: datetime | None = None, until: datetime | None = None) -> EventFilter:
        """All events the projection consumes, up to the plan's lake_version."""
        return EventFilter(streams=self.streams, event_types=self.event_types, since=since, until=until,
                           as_of=self.lake_version)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(replace(self, keys=None, dedupe_keys=()))  # asdict would copy every key: seconds at 1M keys
        data["keys"] = list(self.keys[:20]) if self.keys else None
        data["key_count"] = len(self.keys) if self.keys else 0
        data["deduped"] = list(self.deduped)
        data["dedupe_keys"] = list(self.dedupe_keys[:20])
        data["dedupe_key_count"] = len(self.dedupe_keys)
        del data["stream_events"]
        data["reads"] = {"files": self.files, "buckets": list(self.buckets), "estimated_events": self.estimated_events,
                         "by_stream": dict(self.stream_events)}
        return data

    def summary(self) -> str:
        scope = {
            "full": "the whole view",
            "incremental": f"events after lake_version {self.after_version}",
            "targeted": "a part of the view",
        }[self.mode]
        return (
            f"{self.view} v{self.projection_version} [{self.strategy}] {self.mode} run ({self.reason}): "
            f"{scope}, lake_version <= {self.lake_version}; reads {self.files} files "
            f"(~{self.estimated_events:,} events) -> {self.writes} ({self.kind})"
        )

    def _repr_html_(self) -> str:
        rows = [{"field": k, "value": v} for k, v in self.to_dict().items() if k != "keys"]  # key_count says how many
        return f"<b>Plan</b>: {html.escape(self.summary())}" + html_table(rows, "what the run reads and writes",
                                                                          row_headers=True)


def make_plan(lake: Lake, store: Store | None, projection: Projection, options: RunOptions,
              snapshot: Snapshot | None = None) -> Plan:
    """Decide mode, scope and lake position for a run of ``projection`` with ``options``; ``store``
    None: no store yet (no view built), as a plan must not create one."""
    options.validate()
    snapshot = snapshot or lake.snapshot()
    _check_streams(lake, projection, snapshot)
    _check_event_types(lake, store, projection, snapshot)
    as_of = _as_of(lake, snapshot, options.as_of)
    live = store.checkpoint(projection.name, LIVE) if store is not None else None
    keys = _keys_as_held(lake, store, snapshot, projection, options.partition_keys())
    since, until = options.time_range()
    catching_up = keys is None and since is None and until is None and not options.full  # a backfill's chunks are not
    fix = pending(lake, projection, live, snapshot, store) if catching_up else None
    mode, reason, after, other_code, fixed = _mode(projection, options, live, keys, since, until, as_of, fix)
    method = _method(projection, mode)
    plan = Plan(
        view=projection.name, projection_version=projection.version, fingerprint=projection.fingerprint,
        engine=projection.engine, strategy=projection.incremental, mode=mode, method=method,
        kind="full" if method == "full" else "patch", reason=reason, other_code=other_code,
        delta_version=snapshot.delta_version, lake_version=as_of, after_version=after,
        live_lake_version=live.lake_version if live else None,
        streams=projection.streams, event_types=projection.consumes, since=since, until=until, keys=keys,
        exclude_quarantined=options.exclude_quarantined, files=0, buckets=(), estimated_events=0,
        writes=shadow_name(projection.name), estimated_rows=None, skip_corrupted=options.skip_corrupted,
        deduped=fix.deduped if fix is not None and fixed else (),
        dedupe_keys=fix.keys if fix is not None and fixed and mode == "incremental" else (),
    )
    return _estimate(lake, snapshot, store, plan)


def _reader(lake: Lake, store: Store | None) -> duckdb.DuckDBPyConnection:
    """A cursor to read lake files with, on the DuckDB the run replays in (a new database costs ~50 ms)."""
    return lake.attach((store.compute() if store is not None else duckdb.default_connection()).cursor())


def _keys_as_held(lake: Lake, store: Store | None, snapshot: Snapshot, projection: Projection,
                  keys: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """A key with spaces (or tabs) at an end stays as given when the lake holds it so, as partition keys may;
    otherwise it is trimmed: an editor's trailing spaces in a keys file, or a CHAR column's padding."""
    spaced = sorted({k for k in keys or () if k != k.strip()})
    if not spaced:
        return keys
    with contextlib.closing(_reader(lake, store)) as con:
        wanted = EventFilter(streams=projection.streams, partition_keys=tuple(spaced))
        rel = read_events(lake, wanted, snapshot=snapshot, con=con).project("partition_key").distinct()
        held = {str(r[0]) for r in rel.fetchall()}
    trimmed = [k for k in spaced if k not in held]
    if trimmed:
        log.info("%s of the keys have spaces at an end and are not in the lake so: trimmed (e.g. %s)", len(trimmed),
                 ", ".join(map(repr, trimmed[:3])))
    return tuple(dict.fromkeys(k if k in held else k.strip() for k in keys or ()))


_WARNED: set[tuple[str, str, str, int]] = set()  # (lake, projection, stream, lake_version) logged as not held


def _check_streams(lake: Lake, projection: Projection, snapshot: Snapshot) -> None:
    """A declared stream the lake does not hold reads no event, and the view comes out empty without an
    error. Stream names are case-sensitive: one the lake holds in another case (``ORDERS`` for
    ``orders``) is refused as misspelt; another absent one is logged (it may not have arrived yet)."""
    held = snapshot.streams()
    for stream in (s for s in projection.streams or () if s not in held and held):
        near = near_name(stream, held)
        if near is not None and near.lower() == stream.lower():
            raise ProjectionError(f"projection {projection.name!r} reads stream {stream!r}, which the lake does not "
                                  f"hold, while it holds {near!r}: stream names are case-sensitive; fix streams=",
                                  projection=projection.name, stream=stream)
        if (seen := (lake.uri, projection.name, stream, snapshot.lake_version)) in _WARNED:  # a backfill plans each chunk
            continue
        _WARNED.add(seen)
        log.warning("%s reads stream %r, which the lake does not hold at lake_version %s (its streams: %s): no event "
                    "of it is read%s", projection.name, stream, snapshot.lake_version,
                    ", ".join(map(repr, held[:10])) + (", ..." if len(held) > 10 else ""),
                    f"; did you mean {near!r}?" if near else "")


TYPE_SAMPLE = 10_000  # the events of the newest lake files whose types a plan compares with ``consumes``
#: and at most this many files of them: a lake archived every few minutes holds a few events a file, and the
#: plan of a 2,500-commit lake opened 3,300 files (1.3 s of 2.2) for its first 10,000 events
TYPE_SAMPLE_FILES = 256
_TYPES_SEEN: set[tuple[str, str, tuple[str, ...], int]] = set()  # (lake, projection, consumes, delta_version) checked


def _check_event_types(lake: Lake, store: Store | None, projection: Projection, snapshot: Snapshot) -> None:
    """A consumed event type the lake does not hold reads no event, and the view comes out without its
    rows or columns, silently. One the lake holds only in another case (``orderplaced`` for ``OrderPlaced``)
    is refused as misspelt; one like a type it holds (``PaymentAuthorised``) is logged, naming that type."""
    seen = (lake.uri, projection.name, projection.consumes or (), snapshot.delta_version)
    if not projection.consumes or seen in _TYPES_SEEN:  # a backfill plans each of its chunks
        return
    where = f"the lake's streams {list(projection.streams)}" if projection.streams else "the lake"
    with contextlib.closing(_reader(lake, store)) as con:
        unheld = _unheld_types(con, projection, snapshot)
    for wanted, near in unheld:
        if near.lower() == wanted.lower():
            raise ProjectionError(f"projection {projection.name!r} consumes {wanted!r}, which {where} does not hold, "
                                  f"while it holds {near!r}: event types are case-sensitive; fix consumes=",
                                  projection=projection.name, event_type=wanted)
        log.warning("%s consumes %r, which %s does not hold (no event of it is read): did you mean %r?",
                    projection.name, wanted, where, near)
    _TYPES_SEEN.add(seen)


def _unheld_types(con: duckdb.DuckDBPyConnection, projection: Projection, snapshot: Snapshot) -> list[tuple[str, str]]:
    """(consumed type, the lake's type of that name in another case or like it) for each consumed type the
    lake does not hold. The lake's types are those of the newest files' first ~10,000 events, in at most
    ``TYPE_SAMPLE_FILES`` files (listing them from every file would cost a fifth of a full run); one of them
    like a consumed type missing there has that type looked for in every file (their statistics skip most
    for a name in another case)."""
    files = sorted(snapshot.select(streams=projection.streams), key=lambda f: f.max_version, reverse=True)
    total = itertools.accumulate(f.rows for f in files)
    newest = [f.path for f, before in zip(files[:TYPE_SAMPLE_FILES], itertools.chain([0], total)) if before < TYPE_SAMPLE]
    found: list[tuple[str, str]] = []
    try:
        sample = f"SELECT DISTINCT event_type FROM read_parquet({literal(newest)})"
        held = [r[0] for r in con.sql(sample).fetchall()] if newest else []
        for wanted in (t for t in projection.consumes or () if t not in held):
            near = near_name(wanted, held)
            if near is not None and not con.sql(f"SELECT 1 FROM read_parquet({literal([f.path for f in files])}) "
                                                f"WHERE event_type = {literal(wanted)} LIMIT 1").fetchall():
                found.append((wanted, near))
    except duckdb.Error as exc:  # a damaged file: the run meets it (and --skip-corrupted leaves it out)
        log.debug("event types not compared with consumes: %s", exc)
    return found


def _as_of(lake: Lake, snapshot: Snapshot, text: str | None) -> int:
    if text is None:
        return snapshot.lake_version
    if not text.strip():  # was an AssertionError traceback, exit 1
        raise ConfigError(empty_value("--as-of", "give a lake_version or a time"))
    if text.strip().isdigit():
        version = int(text)
        if version > snapshot.lake_version:
            raise ConfigError(f"--as-of {version} is after the lake's latest lake_version {snapshot.lake_version}")
        return version
    when = parse_time(text, "--as-of")
    assert when is not None
    now = datetime.now(UTC)
    if when > now:  # a typo of the year, say: the lake as of then is not known yet, and tomorrow's run would read more
        raise ConfigError(
            f"--as-of {text} is in the future (now {now.isoformat(timespec='seconds').replace('+00:00', 'Z')}): the "
            f"lake as of then is not known yet. Leave --as-of out for its latest lake_version ({snapshot.lake_version})")
    version = lake.version_at(when)
    if version == 0:  # before the first events were archived: the lake held none, and the run would empty the view
        # the commit that added them, not the first commit: a PostgreSQL poll whose rows were all quarantined commits none
        first = min((f.min_version for f in snapshot.files), default=None)
        at = next((int(h["timestamp"]) for h in lake.history() if h["version"] == first), None)  # type: ignore[call-overload]
        since = f" (lake_version {first}, {commit_time(at)})" if at is not None else ""
        raise ConfigError(
            f"--as-of {text} is before the lake's first events were archived{since}: the lake held none then. --as-of "
            "takes the time events were archived, not their event time; to replay events up to an event time, "
            "use --until (a targeted run) or give a lake_version")
    return version


#: why a run is full when live was built by other code (``other_code``)
VERSION_CHANGED = "the projection's version changed since live was built"
UNORDERED = ("live was built before Polars projections got their events in (partition_key, sequence) order "
             "(first() or last() per key may have taken any event): rebuilt in full once")
CODE_CHANGED = "the projection's code changed since live was built, beyond comments and formatting"


#: how the reasons above began, as written in the plans of run records from before plans said ``other_code``
_OTHER_CODE_BEFORE = ("the projection's version changed since live was built",
                      "live was built before Polars projections got their events in (partition_key, sequence) order",
                      "the projection's code changed since live was built")


def by_other_code(plan: dict[str, Any]) -> bool:
    """Whether a run record's ``plan`` (JSON) was a full run because live was built by other code (so a check's
    differences may be that change's); a plan recorded before it said ``other_code`` says so by its reason."""
    if "other_code" in plan:
        return bool(plan["other_code"])
    return plan.get("mode") == "full" and str(plan.get("reason") or "").startswith(_OTHER_CODE_BEFORE)


class _Mode(NamedTuple):
    mode: str
    reason: str
    after: int | None = None
    other_code: bool = False  # full because live was built by other code: the projection's version or logic changed
    corrects: bool = False  # the run corrects what dedupes committed since live's run removed (``pending``)


def _mode(projection: Projection, options: RunOptions, live: Any, keys: Any, since: Any, until: Any,
          as_of: int, fix: Correction | None) -> _Mode:
    if keys is not None or since is not None or until is not None:
        return _Mode("targeted", "keys or event-time range given")
    if options.full:
        return _Mode("full", "--full")
    if options.as_of is not None and not options.incremental:
        return _Mode("full", f"replaying the lake as of lake_version {as_of}")
    if live is None:
        return _Mode("full", "no live checkpoint")
    if live.projection_version != projection.version:
        return _Mode("full", f"{VERSION_CHANGED}, from v{live.projection_version}", other_code=True)
    if live.fingerprint in projection.unordered_fingerprints:
        return _Mode("full", UNORDERED, other_code=True)
    if not projection.built_by(live.fingerprint):
        return _Mode("full", CODE_CHANGED, other_code=True)
    if live.lake_version > as_of:
        if fix is not None and fix.full is not None and options.as_of is None:  # the dedupe's newest copies were all a commit held
            return _Mode("full", fix.reason(), corrects=True)
        if options.incremental:  # asked to catch up: a full replay of an older lake would move live back
            raise ConfigError(
                f"--incremental cannot catch {projection.name} up to lake_version {as_of}: live is at lake_version "
                f"{live.lake_version} already. To rebuild the view as the lake was then, run --full --as-of {as_of} "
                "(its check shows what that changes)")
        return _Mode("full", "live is ahead of this lake snapshot")
    if fix is not None and fix.full is not None:
        return _Mode("full", fix.reason(), corrects=True)
    caught = f"catching up live from lake_version {live.lake_version} to {as_of}"
    return _Mode("incremental", caught + (f"; {fix.reason()}" if fix is not None else ""), live.lake_version,
                 corrects=fix is not None)


def _method(projection: Projection, mode: str) -> str:
    if mode == "full" or (mode == "incremental" and projection.incremental == "full"):
        return "full"
    if projection.incremental in ("by_key", "by_window"):
        return projection.incremental
    if projection.incremental == "merge" and mode == "incremental":
        return "merge"
    return "scoped"


def _estimate(lake: Lake, snapshot: Snapshot, store: Store | None, plan: Plan) -> Plan:
    """Files and events the run's deciding selection reads (by stream: a declared stream the lake holds no
    events of shows as 0, which a misspelt one does too), and rows it may write."""
    f = plan.selection() if plan.method != "full" else plan.everything()
    files = list(f.files(snapshot, lake))
    if plan.dedupe_keys:  # the keys a dedupe's correction adds decide the scope too: their files are read
        seen = {x.path for x in files}
        keyed = replace(plan.everything(), partition_keys=plan.dedupe_keys).files(snapshot, lake)
        files += [x for x in keyed if x.path not in seen]
    live_rows = store.count(plan.view) if plan.kind == "full" and store is not None and store.exists(plan.view) else None
    by_stream = dict.fromkeys(plan.streams or (), 0)
    for x in files:
        by_stream[x.stream] = by_stream.get(x.stream, 0) + x.rows
    return replace(
        plan,
        files=len(files),
        buckets=tuple(sorted({x.bucket for x in files})),
        estimated_events=sum(x.rows for x in files),
        estimated_rows=live_rows,
        stream_events=tuple(sorted(by_stream.items())),
    )
