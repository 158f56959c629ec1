"""The lake audit: what one snapshot holds, per stream, and what looks wrong in it.

Every figure is one DuckDB query over the snapshot's files (and the quarantine table), grouped by
stream: nothing is pulled into Python rows except the small aggregates. Figures per stream:
events, partition keys, lake versions, duplicates and conflicts (in the lake and quarantined),
sequence gaps, out-of-order arrival, event types, payload schema drift, lateness
(``ingested_at - event_time``), hot partition keys and quarantined records by reason. Duplicates are
counted over every stream's ids, as an id is unique in the lake (see ``_later_copies``).

Duplicates found at ingest are not stored in the lake rows (they were never archived); the audit
reads them from the commit metadata key ``workbench.duplicates`` when ingest records it there.
"""

from __future__ import annotations

import html
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from typing import Any

import duckdb
import pyarrow as pa
from deltalake import DeltaTable
from rich.console import Console
from rich.markup import escape

from lake.compact import Uncompacted, uncompacted
from lake.errors import LakeError
from lake.sql import literal
from lake.storage import is_remote, session
from lake.read import (BadFile, EventFilter, as_names, as_version, check_files, damaged_file, read_events,
                       read_quarantine)
from lake.render import html_table, table_of
from lake.schema import ENVELOPE_COLUMNS, FIRST_COPY, time_held_sql
from lake.table import EVENTS, Lake, Snapshot, refuse_unknown_streams

log = logging.getLogger(__name__)

LATE_AFTER = timedelta(days=2)
VERIFY = ("footer", "read", "none")  # the file-integrity pass: footers, every page, or none
DUPLICATES_KEY = "workbench.duplicates"
#: lateness histogram: (label, lower bound in seconds, upper bound); the bounds are constants
BUCKETS = (
    ("negative", -1e15, 0), ("< 1 min", 0, 60), ("1-60 min", 60, 3600), ("1-6 h", 3600, 21600),
    ("6-24 h", 21600, 86400), ("1-2 d", 86400, 172800), ("2-7 d", 172800, 604800), (">= 7 d", 604800, 1e15),
)  # fmt: skip
#: drifting payload fields listed per stream, changes (added, removed) before optional fields: a stream
#: whose events each hold a few of thousands of fields has a drifting field per event type and field
MAX_DRIFT = 50
#: quarantine reasons that end in data (an id, a value) are grouped by the text before it
REASON_KIND = (
    "CASE WHEN reason LIKE 'conflict%' THEN 'conflict' WHEN reason LIKE 'malformed record:%' "
    "THEN reason ELSE split_part(reason, ': ', 1) END"
)


@dataclass(frozen=True)
class StreamAudit:
    """The audit of one stream; every field is plain data (JSON-ready)."""

    stream: str
    events: int = 0
    partition_keys: int = 0
    lake_versions: dict[str, Any] = field(default_factory=dict)
    event_time: dict[str, Any] = field(default_factory=dict)
    #: events whose event_time is outside the years 1 to 9999 (or infinity), which an older version archived
    times_out_of_range: dict[str, Any] = field(default_factory=lambda: {"events": 0, "examples": []})
    duplicates: int = 0
    conflicts: dict[str, int] = field(default_factory=lambda: {"in_lake": 0, "quarantined": 0})
    gaps: dict[str, Any] = field(default_factory=lambda: {"keys": 0, "missing": 0, "examples": []})
    out_of_order: int = 0
    event_types: dict[str, int] = field(default_factory=dict)
    unknown_event_types: list[dict[str, Any]] = field(default_factory=list)
    drift: list[dict[str, Any]] = field(default_factory=list)
    drift_total: int = 0  # drifting fields in all; ``drift`` lists the first MAX_DRIFT
    lateness: dict[str, Any] = field(default_factory=dict)
    hot_partitions: list[dict[str, Any]] = field(default_factory=list)
    quarantined: dict[str, Any] = field(default_factory=lambda: {"total": 0, "reasons": []})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AuditReport:
    """The audit of a snapshot: totals over the streams, and each stream's detail."""

    lake_uri: str
    lake_version: int
    delta_version: int
    streams: tuple[StreamAudit, ...]
    duplicates_at_ingest: int | None
    late_after_seconds: float
    bad_files: tuple[BadFile, ...] = ()
    files_checked: int = 0
    known_event_types: tuple[str, ...] | None = None  # None: every type counts as known
    commit_log_from: int | None = None  # the Delta version the commit log starts at, when older entries expired
    uncompacted: Uncompacted = Uncompacted(files=0, partitions=0)  # small files awaiting `rebuild lake compact`
    keys_audited: int | None = None  # the partition keys the figures are of (None: every key)

    def total(self, name: str) -> int:
        return sum(int(getattr(s, name)) for s in self.streams)

    def to_dict(self) -> dict[str, Any]:
        types: dict[str, int] = {}
        for s in self.streams:
            for name, count in s.event_types.items():
                types[name] = types.get(name, 0) + count
        return {
            "lake": self.lake_uri,  # deprecated: `lake` is an object in `rebuild ls`; lake_uri is text everywhere
            "lake_uri": self.lake_uri,
            "lake_version": self.lake_version,
            "delta_version": self.delta_version,
            "events": self.total("events"),
            "partition_keys": self.total("partition_keys"),
            "duplicates": self.total("duplicates"),
            "duplicates_at_ingest": self.duplicates_at_ingest,
            "commit_log_from": self.commit_log_from,
            "conflicts": sum(sum(s.conflicts.values()) for s in self.streams),
            "gaps": sum(s.gaps["keys"] for s in self.streams),
            "missing_sequences": sum(s.gaps["missing"] for s in self.streams),
            "out_of_order": self.total("out_of_order"),
            "late": sum(s.lateness.get("late", 0) for s in self.streams),
            "times_out_of_range": sum(s.times_out_of_range["events"] for s in self.streams),
            "late_after_seconds": self.late_after_seconds,
            "quarantined": sum(s.quarantined["total"] for s in self.streams),
            "event_types": dict(sorted(types.items())),
            "unknown_event_types": None if self.known_event_types is None else _unknown_totals(self.streams),
            "files_checked": self.files_checked,
            "bad_files": [b.to_dict() for b in self.bad_files],
            "uncompacted": self.uncompacted.to_dict(),
            "keys_audited": self.keys_audited,
            "streams": {s.stream: s.to_dict() for s in self.streams},
        }

    def render(self, console: Console) -> None:
        """Readable tables for people: a summary row per stream, then each stream's detail."""
        totals = self.to_dict()
        console.print(
            f"[bold]{escape(self.lake_uri)}[/bold] at lake_version {self.lake_version}: {totals['events']:,} events, "
            f"{totals['partition_keys']:,} partition keys, {totals['quarantined']:,} quarantined"
            f"{self._dropped_at_ingest()}{escape(self._of_keys())}"
        )
        console.print(table_of("Streams", _summary_rows([_summary(s) for s in self.streams], console.width)))
        if self.commit_log_from is not None:
            console.print(f"[dim]duplicates dropped at ingest: unknown, the lake's commit log before Delta version "
                          f"{self.commit_log_from} has expired (Delta's log retention)[/dim]")
        elif self.duplicates_at_ingest is None and self.keys_audited is None:
            console.print("[dim]duplicates dropped at ingest: not recorded in the commit metadata[/dim]")
        if self.bad_files:
            console.print(f"[red bold]{len(self.bad_files)} unreadable lake file(s)[/red bold] (left out of the "
                          "figures below; restore them from a backup, or rebuild views without their events: "
                          "`rebuild run VIEW --skip-corrupted`):")
            console.print(table_of("Unreadable files", [b.to_dict() for b in self.bad_files]))
        if self.uncompacted.suggested:
            console.print(escape(self.uncompacted.hint()), style="yellow")
        for s in self.streams:
            _render_stream(console, s)

    def _repr_html_(self) -> str:
        rows = [_summary(s) for s in self.streams]
        types = [{"stream": s.stream, "event_type": t, "events": n} for s in self.streams for t, n in s.event_types.items()]
        return (
            f"<p><b>{html.escape(self.lake_uri)}</b> at lake_version {self.lake_version}{self._dropped_at_ingest()}"
            f"{html.escape(self._of_keys())}</p>"
            + (f"<p>{html.escape(self.uncompacted.hint())}</p>" if self.uncompacted.suggested else "")
            + html_table(rows, "events per stream") + html_table(types, "events per event type")
            + "".join(_html_notes(s) for s in self.streams)
        )  # fmt: skip

    def _dropped_at_ingest(self) -> str:
        """The duplicates ingest dropped, which the lake's rows cannot show (its ``duplicates`` are 0): the
        figure `rebuild lake sample` reports, which a reader looks for here."""
        n = self.duplicates_at_ingest
        return "" if n is None else f", {n:,} duplicate{'' if n == 1 else 's'} dropped at ingest"

    def _of_keys(self) -> str:
        return "" if self.keys_audited is None else (
            f" (the events of {self.keys_audited:,} partition keys only; duplicates dropped at ingest are counted "
            "per commit, not per key)")


def audit(
    lake: Lake,
    *,
    streams: str | Sequence[str] | None = None,
    snapshot: Snapshot | None = None,
    late_after: timedelta = LATE_AFTER,
    verify: str = "footer",
    as_of: int | None = None,
    known_event_types: Iterable[str] | Mapping[str | None, Iterable[str] | None] | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
    partition_keys: Sequence[str] | None = None,
    refuse_unknown: bool = True,
) -> AuditReport:
    """Audit one snapshot (default: the latest) of ``lake``, for ``streams`` (default: all),
    as it was at lake_version ``as_of`` (default: the snapshot's; what a run ``--as-of`` replayed).

    ``known_event_types``: the types consumers handle (``rebuild lake audit`` passes every configured
    projection's ``consumes``); each stream's other types are listed as unknown, with their count and
    the lake_version and time they first arrived. None: no type is unknown. Per stream, a mapping
    ``{stream: types}`` (key None: every stream; types None: every type), as a type of one name may be
    read in one stream and in no other; a stream it names nowhere has no type known.

    ``verify`` is the file-integrity pass: ``footer`` opens every data file's Parquet footer,
    ``read`` also decodes every page, ``none`` skips it. Unreadable files are reported in
    ``bad_files`` (path and error) and left out of the figures, so the rest is still audited.

    ``con``: the audit runs in a cursor of it, within its memory limit, temp directory and threads (a
    check passes the run's connection, the CLI one with the configured settings); None: a new in-memory
    DuckDB with its defaults, spilling to the system's temp directory.

    ``partition_keys``: only these keys' events and quarantined records (a patch's check audits the
    keys it corrects: the whole 10M-event sample took 8.8 s of an 11 s check of a 29,000-key
    catch-up); the duplicates dropped at ingest are then unknown (counted per commit).

    ``refuse_unknown``: a named stream the lake does not hold is an error (a misspelt ``--stream``
    would pass as a clean, empty stream); False: it is audited as empty, as in an empty lake (a
    check of a view one of whose streams has no events yet).
    """
    if verify not in VERIFY:
        raise LakeError(f"verify {verify!r} is not one of {list(VERIFY)}")
    wanted = as_names(streams, "streams") or None  # none named: every stream
    explicit = snapshot is not None
    snapshot = snapshot or lake.snapshot()
    as_of = as_version(as_of, "as_of")
    if as_of is not None and not 0 <= as_of <= snapshot.lake_version:
        raise LakeError(f"as_of {as_of} is not a lake_version of this lake (0 to {snapshot.lake_version})")
    upto = as_of if as_of is not None else snapshot.delta_version if explicit else None  # commits audited
    known = set(snapshot.streams())
    layout = uncompacted(snapshot.select(streams=wanted))
    keys = as_names(partition_keys, "partition_keys")
    # the files the audit reads: of some keys, only those their bucket and key statistics allow (a check of a
    # 3-key patch opened the footers of all 7,000 files of a lake archived every few minutes: 3.8 s)
    event_files = [f.path for f in EventFilter(streams=wanted, partition_keys=keys).files(snapshot, lake)]
    # an id is unique in the whole lake: of some streams, the others' ids are read too, for copies archived there first
    audited = set(event_files)
    other_files = [f.path for f in EventFilter(partition_keys=keys).files(snapshot, lake)
                   if f.path not in audited] if wanted else []
    quarantine_files = lake.quarantine_files(keys=keys)
    started = time.monotonic()
    read_files = [*event_files, *other_files, *quarantine_files]
    bad = check_files(read_files, read=verify == "read", storage_options=lake.storage_options) if verify != "none" else []
    checked = len(read_files)
    log.info("checked %s file%s (%s) in %.1fs", checked, "" if checked == 1 else "s", verify, time.monotonic() - started)
    judged = _known(known_event_types)
    selected = EventFilter(streams=wanted, as_of=as_of, partition_keys=keys)
    while True:  # once more per file whose footer opened but whose pages do not decode
        unreadable = {b.path for b in bad}
        readable = replace(snapshot, files=tuple(f for f in snapshot.files if f.path not in unreadable))
        cursor = session(con)  # a new one each time: its temp views are made again
        try:
            # each query would open every file again: fetched once where that is what costs (see ``_events_view``)
            _events_view(cursor, read_events(lake, selected, snapshot=readable, con=cursor),
                         is_remote(lake.uri) or layout.suggested)
            _ids_view(cursor, lake, readable, replace(selected, streams=None) if wanted else None)
            _quarantine_view(cursor, lake, wanted, upto, [f for f in quarantine_files if f not in unreadable], keys)
            found = _collect(cursor, late_after, judged)
            break
        except duckdb.Error as exc:
            damaged = damaged_file(exc, [f for f in read_files if f not in unreadable],
                                   storage_options=lake.storage_options)
            if damaged is None:
                raise
            log.warning("lake file %s cannot be read (%s): left out of the audit", damaged.path, damaged.error)
            bad.append(damaged)
        finally:
            cursor.close()
    snapshot = readable
    if refuse_unknown:
        refuse_unknown_streams(wanted, known | set(found), snapshot.lake_version)
    names = sorted(set(found) | set(wanted or ()))
    at_ingest, log_from = (None, None) if keys is not None else _ingest_duplicates(
        lake, snapshot.delta_version if upto is None else upto)
    return AuditReport(
        lake_uri=lake.uri,
        lake_version=as_of if as_of is not None else snapshot.lake_version,
        delta_version=snapshot.delta_version,
        streams=tuple(StreamAudit(stream=n, **found.get(n, {})) for n in names),
        duplicates_at_ingest=at_ingest,
        commit_log_from=log_from,
        late_after_seconds=late_after.total_seconds(),
        bad_files=tuple(bad),
        files_checked=checked if verify != "none" else 0,
        known_event_types=None if judged is None else tuple(sorted({t for v in judged.values() for t in v or ()})),
        uncompacted=layout,
        keys_audited=None if keys is None else len(set(keys)),
    )


def _events_view(con: duckdb.DuckDBPyConnection, events: duckdb.DuckDBPyRelation, fetch_once: bool) -> None:
    """``events``: the envelope but the payload and metadata, which no query reads, and ``field_sets``:
    the events counted by their payload's top-level field names, which drift reads. Each query would
    read the files again: on an object store (a fetch each), or in a lake of many small files awaiting
    compaction (opening a file costs more than its rows: 5,700 files of a 2,000-commit lake were opened
    nine times, 11 s), ``fetch_once`` reads them once into a temp table with their field names instead
    of their payloads (a copy with payloads took gigabytes at 3 a.m.), counted into ``field_sets``, and
    the names dropped; past the connection's memory limit it spills to its temp directory. A compacted
    local lake is read by a view: each query reads only its columns of a few large files."""
    con.register("__lake_events", events)  # a view of a relation is refused in a cursor of a database file
    columns = ", ".join(c for c in ENVELOPE_COLUMNS if c not in ("payload", "metadata"))
    fields = "CASE WHEN json_type(payload) = 'OBJECT' THEN json_keys(payload) END AS fields"
    kind = "TABLE" if fetch_once else "VIEW"
    con.execute(f"CREATE TEMP {kind} __events AS SELECT {columns}, {fields} FROM __lake_events")
    con.execute(f"""
        CREATE TEMP {kind} field_sets AS
        SELECT stream, event_type, lake_version, count(*) AS n, min(ingested_at) AS t0, max(ingested_at) AS t1, fields
        FROM __events GROUP BY ALL""")  # fmt: skip
    if fetch_once:
        con.execute("ALTER TABLE __events DROP COLUMN fields")
    con.execute("CREATE TEMP VIEW events AS FROM __events")


def _ids_view(con: duckdb.DuckDBPyConnection, lake: Lake, snapshot: Snapshot, every_stream: EventFilter | None) -> None:
    """``ids``: what the duplicates are counted from, the events' ids in every stream (an id is unique in the
    lake, and dedupe removes its later copy in any stream): ``events`` when it holds every stream, else the
    ``every_stream`` events' (read again, only the columns the count reads)."""
    if every_stream is None:
        con.execute("CREATE TEMP VIEW ids AS SELECT event_id, stream, lake_version, sequence FROM events")
        return
    rel = read_events(lake, every_stream, snapshot=snapshot, con=con).select("event_id, stream, lake_version, sequence")
    con.register("ids", rel)


def _quarantine_view(con: duckdb.DuckDBPyConnection, lake: Lake, streams: Sequence[str] | None, upto: int | None,
                     files: list[str] | None = None, keys: Sequence[str] | None = None) -> None:
    rel = read_quarantine(lake, con, files)
    if streams:
        rel = rel.filter(f"stream IN (SELECT unnest({literal(list(streams))}))")
    if keys is not None:
        rel = rel.join(con.from_arrow(pa.table({"partition_key": list(keys)})), "partition_key", how="semi")
    if upto is not None:  # quarantine rows carry the events version their commit was for
        rel = rel.filter(f"lake_version <= {int(upto)}")
    con.register("quarantined", rel)  # a view of it is refused in a cursor of a database file


def _ingest_duplicates(lake: Lake, delta_version: int) -> tuple[int | None, int | None]:
    """Duplicates dropped at ingest, summed from the commits' metadata (None: never recorded, or
    unknown), and the Delta version the commit log starts at when older entries expired (Delta
    deletes them past their retention, 30 days by default): a sum of what is left would be a part."""
    table = DeltaTable(lake.table_uri(EVENTS), storage_options=lake.storage_options)
    history = table.history()
    start = min((int(c["version"]) for c in history), default=0)
    if start > 1:  # commit 1 onwards may have dropped duplicates
        return None, start
    counts = [
        int(c[DUPLICATES_KEY]) for c in history if DUPLICATES_KEY in c and int(c["version"]) <= delta_version
    ]
    return (sum(counts) if counts else None), None


# -- queries: each returns {stream: {field: value}} ---------------------------------------------
def _collect(con: duckdb.DuckDBPyConnection, late_after: timedelta,
             known: Known | None) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    parts: dict[str, Callable[[], dict[str, dict[str, Any]]]] = {
        "counts": lambda: _basics(con), "gaps": lambda: _walk(con), "conflicts": lambda: _conflicts(con),
        "event types": lambda: _types(con, known), "drift": lambda: _drift(con),
        "lateness": lambda: _lateness(con, late_after), "hot keys": lambda: _hot(con), "quarantine": lambda: _quarantine(con),
    }  # fmt: skip
    for name, part in parts.items():  # a job's log (-v) follows an audit that takes minutes at 100M events
        started = time.monotonic()
        for stream, values in part().items():
            found.setdefault(stream, {}).update(values)
        log.info("audited %s in %.1fs", name, time.monotonic() - started)
    return found


def _rows(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, Any]]:
    rel = con.sql(sql)
    names = rel.columns
    return [dict(zip(names, row, strict=True)) for row in rel.fetchall()]


def _basics(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, Any]]:
    copies = _later_copies(con)
    rows = _rows(con, f"""
        SELECT stream, count(*) AS events, count(DISTINCT partition_key) AS keys,
               count(DISTINCT lake_version) AS versions, min(lake_version) AS first, max(lake_version) AS last,
               min(event_time) FILTER (held) AS t0, max(event_time) FILTER (held) AS t1,
               count(*) FILTER (NOT held) AS unheld
        FROM (SELECT *, {time_held_sql("event_time")} AS held FROM events) GROUP BY stream""")  # fmt: skip
    found = {
        r["stream"]: {
            "events": r["events"], "partition_keys": r["keys"], "duplicates": copies.get(r["stream"], 0),
            "lake_versions": {"count": r["versions"], "first": r["first"], "last": r["last"]},
            "event_time": {"first": r["t0"] and r["t0"].isoformat(), "last": r["t1"] and r["t1"].isoformat()},
        }  # fmt: skip
        for r in rows
    }
    if any(r["unheld"] for r in rows):  # only then read the lake again, for their names
        for stream, out in _times_out_of_range(con).items():
            found[stream]["times_out_of_range"] = out
    return found


def _later_copies(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Per stream, the copies of an event id after its first, in any stream: the first is the one `rebuild lake
    dedupe` keeps (lowest lake_version, then sequence, then stream), so each stream counts the copies dedupe would
    remove there. The ids held more than once are found by one pass over ``ids``; only when there are some are
    their copies read again and ranked (a lake without duplicates pays one aggregation, as a count distinct)."""
    con.execute("CREATE TEMP TABLE copied AS SELECT event_id FROM ids GROUP BY event_id HAVING count(*) > 1")
    if not con.sql("SELECT count(*) FROM copied").fetchall()[0][0]:
        return {}
    rows = con.sql(f"""
        SELECT stream, count(*) FILTER (WHERE nth > 1) FROM (
            SELECT stream, row_number() OVER (PARTITION BY event_id ORDER BY {FIRST_COPY}) AS nth
            FROM ids SEMI JOIN copied USING (event_id))
        GROUP BY stream""").fetchall()  # fmt: skip
    return {stream: n for stream, n in rows}


def _times_out_of_range(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, Any]]:
    """Per stream, the events whose time no report can show (see ``lake.schema.FIRST_TIME``) and the first
    five, their time as DuckDB writes it ('infinity', '20260-01-01 00:00:00+00', '0044-03-15 (BC) ...')."""
    rows = _rows(con, f"""
        SELECT stream, event_id, partition_key, sequence, CAST(event_time AS VARCHAR) AS event_time,
               count(*) OVER (PARTITION BY stream) AS total
        FROM events WHERE NOT ({time_held_sql("event_time")})
        QUALIFY row_number() OVER (PARTITION BY stream ORDER BY partition_key, sequence, event_id) <= 5
        ORDER BY stream, partition_key, sequence, event_id""")  # fmt: skip
    found: dict[str, dict[str, Any]] = {}
    for r in rows:
        total = r.pop("total")
        found.setdefault(r.pop("stream"), {"events": total, "examples": []})["examples"].append(r)
    return found


def _conflicts(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, Any]]:
    rows = _rows(con, f"""
        WITH lake AS (SELECT stream, count(*) FILTER (WHERE clash) AS n FROM walk GROUP BY stream),
        q AS (SELECT coalesce(stream, '(none)') AS stream, count(*) AS n FROM quarantined
              WHERE {REASON_KIND} = 'conflict' GROUP BY ALL)
        SELECT stream, coalesce(lake.n, 0) AS in_lake, coalesce(q.n, 0) AS quarantined
        FROM lake FULL JOIN q USING (stream)""")  # fmt: skip
    return {r["stream"]: {"conflicts": {"in_lake": r["in_lake"], "quarantined": r["quarantined"]}} for r in rows}


def _walk(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, Any]]:
    """One walk through every key in replay order: sequence gaps, events archived before an event
    with a lower sequence (out of order), and events at a position another event holds (clash)."""
    con.execute("""
        CREATE TEMP TABLE walk AS SELECT * FROM (
            SELECT stream, partition_key, sequence,
                   sequence - lag(sequence) OVER w - 1 AS missing,
                   sequence = lag(sequence) OVER w AND event_id <> lag(event_id) OVER w AS clash,
                   lake_version < max(lake_version) OVER (
                       PARTITION BY stream, partition_key ORDER BY sequence, event_id
                       ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS early
            FROM events WINDOW w AS (PARTITION BY stream, partition_key ORDER BY sequence, event_id))
        WHERE missing > 0 OR early OR clash""").fetchall()  # fmt: skip
    totals = _rows(con, """
        SELECT stream, count(DISTINCT partition_key) FILTER (missing > 0) AS keys,
               coalesce(sum(missing) FILTER (missing > 0), 0) AS missing, count(*) FILTER (early) AS early
        FROM walk GROUP BY stream""")  # fmt: skip
    examples = _rows(con, """
        SELECT stream, partition_key, sum(missing) AS missing, min(sequence - missing) AS first_missing
        FROM walk WHERE missing > 0 GROUP BY stream, partition_key
        QUALIFY row_number() OVER (PARTITION BY stream ORDER BY sum(missing) DESC, partition_key) <= 5
        ORDER BY stream, missing DESC, partition_key""")  # fmt: skip
    found: dict[str, dict[str, Any]] = {}
    for r in totals:
        keys = [{k: e[k] for k in ("partition_key", "missing", "first_missing")} for e in examples if e["stream"] == r["stream"]]
        found[r["stream"]] = {
            "gaps": {"keys": r["keys"], "missing": int(r["missing"]), "examples": keys},
            "out_of_order": r["early"],
        }
    return found


#: per stream (None: every stream), the event types consumers handle there (None: every type)
Known = dict[str | None, frozenset[str] | None]


def _known(given: Iterable[str] | Mapping[str | None, Iterable[str] | None] | None) -> Known | None:
    """``known_event_types`` as a :data:`Known` (names: known in every stream)."""
    if given is None:
        return None
    if not isinstance(given, Mapping):
        return {None: frozenset(as_names(given, "known_event_types") or ())}
    return {s: None if v is None else frozenset(as_names(v, "known_event_types") or ()) for s, v in given.items()}


def _is_known(known: Known, stream: str, event_type: str) -> bool:
    return any(k is None or event_type in k for k in (known.get(None, frozenset()), known.get(stream, frozenset())))


def _unknown_totals(streams: Iterable[StreamAudit]) -> dict[str, int]:
    """Events of each unknown type, over every stream (a type may be unknown in several)."""
    totals: dict[str, int] = {}
    for s in streams:
        for u in s.unknown_event_types:
            totals[u["event_type"]] = totals.get(u["event_type"], 0) + u["events"]
    return dict(sorted(totals.items()))


def _types(con: duckdb.DuckDBPyConnection, known: Known | None) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for r in _rows(con, "SELECT stream, event_type, count(*) AS n, min(lake_version) AS v0, min(ingested_at) AS t0 "
                        "FROM events GROUP BY ALL ORDER BY ALL"):
        entry = found.setdefault(r["stream"], {"event_types": {}, "unknown_event_types": []})
        entry["event_types"][r["event_type"]] = r["n"]
        if known is not None and not _is_known(known, r["stream"], r["event_type"]):
            entry["unknown_event_types"].append({"event_type": r["event_type"], "events": r["n"],
                                                 "first_version": r["v0"], "first_ingested": r["t0"].isoformat()})
    return found


def _drift(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, Any]]:
    """Top-level payload fields not in every event of their type: added, removed or optional."""
    rows = _rows(con, f"""
        WITH sets AS (FROM field_sets),
        by_type AS (
            SELECT stream, event_type, sum(n) AS events, min(lake_version) AS v0, max(lake_version) AS v1
            FROM sets GROUP BY ALL),
        by_field AS (
            SELECT stream, event_type, field, sum(n) AS events, min(lake_version) AS v0, max(lake_version) AS v1,
                   min(t0) AS t0, max(t1) AS t1
            FROM (SELECT *, unnest(fields) AS field FROM sets) GROUP BY ALL)
        SELECT f.stream, f.event_type, f.field,
               CASE WHEN f.v0 > t.v0 AND f.v1 < t.v1 THEN 'added, then removed' WHEN f.v0 > t.v0 THEN 'added'
                    WHEN f.v1 < t.v1 THEN 'removed' ELSE 'optional' END AS change,
               f.events, t.events AS of_events, f.v0 AS first_version, f.v1 AS last_version,
               f.t0 AS first_ingested, f.t1 AS last_ingested, count(*) OVER (PARTITION BY f.stream) AS total
        FROM by_field f JOIN by_type t USING (stream, event_type)
        WHERE f.events < t.events
        QUALIFY row_number() OVER (PARTITION BY f.stream ORDER BY change = 'optional', f.event_type, f.field) <= {MAX_DRIFT}
        ORDER BY f.stream, change = 'optional', f.event_type, f.field""")  # fmt: skip
    found: dict[str, dict[str, Any]] = {}
    for r in rows:
        r["first_ingested"], r["last_ingested"] = r["first_ingested"].isoformat(), r["last_ingested"].isoformat()
        entry = found.setdefault(r.pop("stream"), {"drift": []})
        entry["drift"].append(r)
        entry["drift_total"] = r.pop("total")
    return found


def _lateness(con: duckdb.DuckDBPyConnection, late_after: timedelta) -> dict[str, dict[str, Any]]:
    buckets = ", ".join(
        f"count(*) FILTER (WHERE s >= {lo} AND s < {hi}) AS \"{label}\"" for label, lo, hi in BUCKETS
    )
    rows = _rows(con, f"""
        SELECT stream, quantile_cont(s, [0.5, 0.9, 0.99]) AS q, max(s) AS max_s,
               count(*) FILTER (WHERE s >= {late_after.total_seconds()}) AS late, {buckets}
        FROM (SELECT stream, epoch(ingested_at) - epoch(event_time) AS s FROM events
              WHERE {time_held_sql("event_time")}) GROUP BY stream""")  # fmt: skip
    return {
        r["stream"]: {"lateness": {
            "p50_s": round(r["q"][0], 3), "p90_s": round(r["q"][1], 3), "p99_s": round(r["q"][2], 3),
            "max_s": round(r["max_s"], 3), "late": r["late"],
            "histogram": {label: r[label] for label, _, _ in BUCKETS},
        }}  # fmt: skip
        for r in rows
    }


def _hot(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, Any]]:
    rows = _rows(con, """
        SELECT stream, partition_key, count(*) AS events, max(sequence) AS last_sequence
        FROM events GROUP BY stream, partition_key
        QUALIFY row_number() OVER (PARTITION BY stream ORDER BY count(*) DESC, partition_key) <= 5
        ORDER BY stream, events DESC, partition_key""")  # fmt: skip
    found: dict[str, dict[str, Any]] = {}
    for r in rows:
        found.setdefault(r.pop("stream"), {"hot_partitions": []})["hot_partitions"].append(r)
    return found


def _quarantine(con: duckdb.DuckDBPyConnection) -> dict[str, dict[str, Any]]:
    rows = _rows(con, f"""
        SELECT coalesce(stream, '(none)') AS stream, {REASON_KIND} AS reason, count(*) AS count,
               min(reason) AS example
        FROM quarantined GROUP BY ALL ORDER BY stream, count DESC, reason""")  # fmt: skip
    found: dict[str, dict[str, Any]] = {}
    for r in rows:
        entry = found.setdefault(r.pop("stream"), {"quarantined": {"total": 0, "reasons": []}})["quarantined"]
        entry["total"] += r["count"]
        entry["reasons"].append(r)
    return found


# -- rendering ---------------------------------------------------------------------------------
def _summary(s: StreamAudit) -> dict[str, Any]:
    versions = s.lake_versions
    return {
        "stream": s.stream, "events": s.events, "keys": s.partition_keys,
        "lake_versions": f"{versions.get('first')}..{versions.get('last')} ({versions.get('count', 0)})",
        "duplicates": s.duplicates, "conflicts": sum(s.conflicts.values()), "gap keys": s.gaps["keys"],
        "missing": s.gaps["missing"], "out of order": s.out_of_order, "late": s.lateness.get("late", 0),
        "quarantined": s.quarantined["total"],
    }  # fmt: skip


def _summary_rows(summaries: list[dict[str, Any]], width: int) -> list[dict[str, Any]]:
    """A column per stream while they fit the console's width (a figure per row reads best for a
    few), else a row per stream: 30 streams' columns were three characters wide, each number folded."""
    if not summaries or sum(max(len(str(r["stream"])), 14) + 3 for r in summaries) + 16 > width:
        return summaries
    return [{"": name, **{str(r["stream"]): r[name] for r in summaries}} for name in list(summaries[0])[1:]]


def _render_stream(console: Console, s: StreamAudit) -> None:
    console.print(f"\n[bold]stream {escape(s.stream)}[/bold]")
    if s.times_out_of_range["events"]:
        console.print(escape(_times_out_of_range_line(s)), style="red")
    console.print(table_of("Event types", [{"event_type": k, "events": v} for k, v in s.event_types.items()]))
    if s.lateness:
        late = s.lateness
        console.print(
            f"lateness (ingested_at - event_time): p50 {_span(late['p50_s'])}, p90 {_span(late['p90_s'])}, "
            f"p99 {_span(late['p99_s'])}, max {_span(late['max_s'])}; late: {late['late']:,}"
        )
        console.print(table_of("Lateness", [late["histogram"]]))
    for title, rows in (
        ("Sequence gaps (examples)", s.gaps["examples"]),
        ("Hot partition keys", s.hot_partitions),
        ("Unknown event types (no projection consumes them)", s.unknown_event_types),
        (f"Payload schema drift{_drift_part(s)}", [_drift_row(d) for d in s.drift]),
        ("Quarantined by reason", s.quarantined["reasons"]),
    ):
        if rows:
            console.print(table_of(title, rows))


def _drift_part(s: StreamAudit) -> str:
    """What the drift table leaves out, when it does."""
    if s.drift_total <= len(s.drift):
        return ""
    return f" (the first {len(s.drift):,} of {s.drift_total:,} drifting fields: added and removed ones first)"


def _drift_row(d: dict[str, Any]) -> dict[str, Any]:
    return {
        "event_type": d["event_type"], "field": d["field"], "change": d["change"],
        "events": f"{d['events']:,} of {d['of_events']:,}",
        "lake_versions": f"{d['first_version']}..{d['last_version']}",
        "ingested": f"{d['first_ingested'][:16]} .. {d['last_ingested'][:16]}".replace("T", " "),
    }  # fmt: skip


def _times_out_of_range_line(s: StreamAudit) -> str:
    """What a person reads of the events an older version archived with times no report can show."""
    out = s.times_out_of_range
    named = "; ".join(f"{e['event_id']} ({e['partition_key']} #{e['sequence']}): {e['event_time']}" for e in out["examples"])
    more = f" and {out['events'] - len(out['examples']):,} more" if out["events"] > len(out["examples"]) else ""
    return (f"{out['events']:,} event{'' if out['events'] == 1 else 's'} with an event_time outside the years 1 to 9999, "
            f"archived before ingest quarantined such times: {named}{more}. They are left out of event_time and "
            "lateness here; views replay them as they are (a Python fold stops on them): fix the producer, and have "
            "projections leave them out (WHERE event_time BETWEEN '0001-01-01' AND '9999-12-31 23:59:59.999999') or handle them")


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def _html_notes(s: StreamAudit) -> str:
    """Lateness, gaps, drift and quarantine of one stream as short lines (tables stay two)."""
    lines = [_times_out_of_range_line(s)] if s.times_out_of_range["events"] else []
    if s.lateness:
        late = s.lateness
        lines.append(
            f"lateness (ingested_at - event_time): p50 {_span(late['p50_s'])}, p90 {_span(late['p90_s'])}, "
            f"p99 {_span(late['p99_s'])}, max {_span(late['max_s'])}; {late['late']:,} late"
        )
    if s.gaps["keys"]:
        keys = ", ".join(str(g.get("partition_key")) for g in s.gaps["examples"][:5])
        lines.append(f"{s.gaps['keys']:,} partition keys with sequence gaps ({s.gaps['missing']:,} missing), e.g. {keys}")
    lines += [f"unknown event type {u['event_type']}: {u['events']:,} events since lake_version {u['first_version']} "
              "(no projection consumes it)" for u in s.unknown_event_types]
    lines += [f"payload drift: {d['event_type']}.{d['field']} {d['change']} ({d['events']:,} of {d['of_events']:,} events)"
              for d in s.drift]
    lines += [f"payload drift: {s.drift_total - len(s.drift):,} more drifting fields{_drift_part(s)}"] \
        if s.drift_total > len(s.drift) else []
    lines += [f"quarantined: {r['count']:,} x {r['reason']}" for r in s.quarantined["reasons"]]
    items = "".join(f"<li>{html.escape(line)}</li>" for line in lines)
    # a heading, not bold text: a screen reader lists it and jumps to the stream (the report's h2 is the audit's)
    return f"<h3>stream {html.escape(s.stream)}</h3><ul>{items}</ul>" if items else ""
