"""Lineage of differences: for each sampled differing key, the events that produced it, with flags.

A view key maps to events in one of two ways:

- ``partition_column`` (a by_key projection): that key column *is* the event's ``partition_key``,
  so only the key buckets of the sampled keys are read;
- otherwise each key column matches a payload field of the same name (``customer_id``,
  ``currency``), or the envelope column of that name (``stream``, ``event_type``), and ``window``
  (column, size) matches ``time_bucket(size, event_time)`` (``day``).

Flags per key: ``duplicate`` (an event id occurs twice in the lake or also in the quarantine),
``duplicate_suspected`` / ``missed_suspected`` (live - rebuilt of a changed number equals one
event's payload value: an event live applied once more, or once less, than the rebuild),
``conflict`` / ``quarantined`` (quarantine rows of a contributing partition key and stream), ``late``
(``ingested_at - event_time`` over ``late_after``), ``gap`` (missing sequences, per stream), ``no_events``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import product
from typing import Any

import duckdb
import pyarrow as pa

from lake import EventFilter, Lake, read_events, read_quarantine
from lake.schema import time_held_sql
from lake.sql import json_pointer, literal, quote
from lake.storage import session

__all__ = ["KeyLineage", "lineage"]
LATE_AFTER = timedelta(days=1)
MAX_IDS = 50
#: the matched events up to which the lineage reads only the quarantine files whose statistics may hold
#: their keys or ids (a hot key's million ids would cost more to look up than the files to read)
MOST_IDS = 100_000
#: a field in more event types than this is not added up (3**6 sign choices at most): any event may explain it
MOST_TYPES = 6
#: the sign of a field that the ways of adding up a key's events to the rebuilt value disagree on
UNKNOWN = 2


@dataclass(frozen=True)
class KeyLineage:
    """The events behind one view key, and what looks wrong with them."""

    key: dict[str, Any]
    kind: str
    events: int = 0
    event_ids: tuple[str, ...] = ()
    event_types: dict[str, int] = field(default_factory=dict)
    partition_keys: tuple[str, ...] = ()
    sequence_range: tuple[int, int] | None = None
    event_time_range: tuple[str, str] | None = None
    ingested_range: tuple[str, str] | None = None
    #: the first and last lake_version (ingest commit) that added the key's events
    lake_versions: tuple[int, int] | None = None
    missing_sequences: int = 0
    #: per stream, as each numbers a key's events on its own: events, first and last sequence, missing sequences
    streams: dict[str, dict[str, Any]] = field(default_factory=dict)
    late: tuple[str, ...] = ()
    duplicates: tuple[str, ...] = ()
    quarantine: tuple[dict[str, Any], ...] = ()
    explained_by: tuple[dict[str, Any], ...] = ()
    flags: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lineage(
    lake: Lake,
    keys: Sequence[dict[str, Any]],
    *,
    partition_column: str | None = None,
    window: tuple[str, str] | None = None,
    streams: Sequence[str] | None = None,
    event_types: Sequence[str] | None = None,
    as_of: int | None = None,
    late_after: timedelta = LATE_AFTER,
    kinds: dict[tuple[Any, ...], str] | None = None,
    changes: dict[tuple[Any, ...], dict[str, dict[str, Any]]] | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
    without_files: Sequence[str] = (),
) -> list[KeyLineage]:
    """The lineage of each key in ``keys`` (dicts of view key columns) from ``lake``.

    ``kinds`` and ``changes`` (by key tuple) come from the diff samples: the difference kind and,
    for changed rows, ``{column: {"live": x, "rebuilt": y}}`` used to point at suspect events.
    ``con``: the lineage runs in a cursor of it, within its memory limit, temp directory and threads
    (a check passes the run's connection); None: a new in-memory DuckDB with its defaults, spilling
    to the system's temp directory. ``without_files``: lake files left out (those the run skipped).
    """
    if not keys:
        return []
    con = session(con)
    try:
        _match_events(con, lake, keys, partition_column, window, streams, event_types, as_of, tuple(without_files))
        per_key = _aggregate(con, late_after)
        quarantine = _quarantine(con, lake, streams)
        # the keys with a changed number (live - rebuilt, rebuilt per column): only those have payload values
        # that can explain them
        numbers = {i: n for i, k in enumerate(keys) if (n := _numbers((changes or {}).get(tuple(k.values()), {})))}
        payloads = _payloads(con, numbers) if numbers else {}
    finally:
        con.close()
    agreed = _agreed_signs(numbers, payloads)
    return [_build(k, (kinds or {}).get(tuple(k.values()), "changed"), per_key.get(i), quarantine,
                   _explain(numbers.get(i, {}), *payloads.get(i, ([], {})), agreed))
            for i, k in enumerate(keys)]


def _match_events(con: duckdb.DuckDBPyConnection, lake: Lake, keys: Sequence[dict[str, Any]],
                  partition_column: str | None, window: tuple[str, str] | None,
                  streams: Sequence[str] | None, event_types: Sequence[str] | None, as_of: int | None,
                  without_files: tuple[str, ...]) -> None:
    """Temp table ``matched``: the lake events of each key (of the consumed types), tagged with the key's
    index ``__i``, without their payload, which view ``matched_payloads`` reads from the lake when asked
    (a hot key's payloads held in memory took gigabytes); ``every_event`` has them of every type, for the
    sequence gaps (the sequences of the types a projection does not consume are no gap)."""
    rows = [{**{c: _plain(v) for c, v in k.items()}, "__i": i} for i, k in enumerate(keys)]
    con.register("__keys", pa.Table.from_pylist(rows))
    base: dict[str, Any] = dict(streams=tuple(streams) if streams else None, as_of=as_of, without_files=without_files)
    consumed = f"e.event_type IN ({', '.join(literal(t) for t in event_types)})" if event_types else "true"
    if partition_column is not None:
        wanted = tuple(str(k[partition_column]) for k in keys)
        events = read_events(lake, EventFilter(**base, partition_keys=wanted), con=con)
        on = f"e.partition_key = CAST(k.{quote(partition_column)} AS VARCHAR)"
    else:
        since, until = _window_range(con, keys, window)
        events = read_events(lake, EventFilter(**base, since=since, until=until), con=con)
        described = con.sql("SELECT * FROM __keys")
        types = dict(zip(described.columns, map(str, described.types), strict=True))
        null_safe = any(v is None for k in keys for v in k.values())
        on = " AND ".join(_payload_term(c, window, types[c], null_safe) for c in keys[0])
    con.register("__events", events)  # a view of it is refused in a cursor of a database file
    joined = f"FROM __events e JOIN __keys k ON {on}"
    con.execute(f"CREATE TEMP TABLE every_event AS SELECT k.__i, e.* EXCLUDE (payload, metadata) {joined}")
    con.execute(f"CREATE TEMP TABLE matched AS SELECT * FROM every_event e WHERE {consumed}")
    con.execute(f"CREATE TEMP VIEW matched_payloads AS SELECT k.__i, e.partition_key, e.sequence, e.event_id, "
                f"e.event_type, e.payload {joined} WHERE {consumed}")


def _plain(value: Any) -> Any:
    return float(value) if isinstance(value, Decimal) else value


#: envelope columns a view may be keyed by as they are (a day's rows per stream or per event type); no
#: payload field can be declared with their names, so a key column so named is the envelope's
ENVELOPE_KEYS = ("event_id", "stream", "partition_key", "event_type")


def _payload_term(column: str, window: tuple[str, str] | None, kind: str, null_safe: bool) -> str:
    """How an event matches the key column: a window by its start; text as text (case, spaces and
    Unicode forms count, as in the view); any other key by the payload field's value read as the key's
    type, since a DECIMAL 10.00 or a time prints otherwise than a payload writes it (``10``, ``...+02:00``).
    ``null_safe``: a NULL key (a live view made elsewhere) matches the events without the field."""
    if window is not None and column == window[0]:  # the window column holds the window's start (a DATE or a time)
        return f"time_bucket(INTERVAL {literal(window[1])}, e.event_time) = {_window_start(column)}"
    if column in ENVELOPE_KEYS:
        return f"e.{quote(column)} = CAST(k.{quote(column)} AS VARCHAR)"
    value = f"json_extract_string(e.payload, {literal(json_pointer(column))})"
    if kind not in ("VARCHAR", '"NULL"'):  # "NULL": every key of the column is NULL, which no cast can tell
        value = f"TRY_CAST({value} AS {kind})"
    return f"{value} {'IS NOT DISTINCT FROM' if null_safe else '='} k.{quote(column)}"


def _window_start(column: str) -> str:
    """The key's window column as the instant its window starts (a DATE is midnight UTC: the session's zone)."""
    return f"TRY_CAST(k.{quote(column)} AS TIMESTAMPTZ)"


def _window_range(con: duckdb.DuckDBPyConnection, keys: Sequence[dict[str, Any]],
                  window: tuple[str, str] | None) -> tuple[datetime | None, datetime | None]:
    """Event-time bounds of the sampled windows (in ``__keys``), [first start, last start + size), so only
    those files are read: a week's or a month's events too, not only those of its first days."""
    if window is None or window[0] not in keys[0]:
        return None, None
    start = _window_start(window[0])
    low, high = con.sql(f"SELECT min({start}), max({start}) + INTERVAL {literal(window[1])} FROM __keys k").fetchall()[0]
    # a window ending after 9999-12-31 comes back as text (datetime cannot hold it): nothing lies beyond
    return low, high if isinstance(high, datetime) else None


def _aggregate(con: duckdb.DuckDBPyConnection, late_after: timedelta) -> dict[int, dict[str, Any]]:
    """Per key index: counts, ids, types, ranges, late and duplicated event ids, partition keys."""
    late = late_after.total_seconds()
    rel = con.sql(f"""
        SELECT __i, count(*) AS events,
               list(event_id ORDER BY partition_key, sequence, event_id)[:{MAX_IDS}] AS event_ids,
               histogram(event_type) AS event_types,
               list(DISTINCT partition_key) AS partition_keys,
               min(sequence) AS first_seq, max(sequence) AS last_seq,
               min(event_time) AS t0, max(event_time) AS t1, min(ingested_at) AS i0, max(ingested_at) AS i1,
               min(lake_version) AS v0, max(lake_version) AS v1,
               {_out_of_range("min(event_time)")} AS t0_text, {_out_of_range("max(event_time)")} AS t1_text,
               list(event_id) FILTER (WHERE epoch(ingested_at) - epoch(event_time) > {late}) AS late,
               list(DISTINCT event_id) FILTER (WHERE n_id > 1) AS dup_ids
        FROM (SELECT *, count(*) OVER (PARTITION BY __i, event_id) AS n_id
              FROM matched)
        GROUP BY __i""")
    names = rel.columns
    rows = rel.fetchall()
    out = {}
    for r in rows:
        d = dict(zip(names, r, strict=True))
        out[int(d["__i"])] = {**d, "missing": 0, "streams": {}}
    # HUGEINT: a key numbered from 0 up to 2**63 - 1 spans one more than a BIGINT holds; per stream, as
    # each stream numbers a key's events on its own (an order's payments 1, 2, 3 beside its items 1, 2, 3)
    for i, stream, missing, events, first, last in con.sql(
            "SELECT __i, stream, sum(span), any_value(m.n), any_value(m.first), any_value(m.last) FROM ("
            "SELECT __i, stream, partition_key, CAST(max(sequence) AS HUGEINT) - min(sequence) + 1 - count(DISTINCT sequence) "
            "AS span FROM every_event JOIN (SELECT DISTINCT __i, partition_key FROM matched) USING (__i, partition_key) "
            "GROUP BY ALL) LEFT JOIN (SELECT __i, stream, count(*) AS n, min(sequence) AS first, max(sequence) AS last "
            "FROM matched GROUP BY ALL) m USING (__i, stream) GROUP BY ALL ORDER BY ALL").fetchall():
        out[int(i)]["missing"] += int(missing)
        out[int(i)]["streams"][stream] = {"events": int(events or 0), "first": first, "last": last, "missing": int(missing)}
    return out


def _quarantine(con: duckdb.DuckDBPyConnection, lake: Lake,
                streams: Sequence[str] | None) -> dict[str, list[dict[str, Any]]]:
    """Quarantine rows of the contributing partition keys in ``streams`` (or in no known stream: another
    stream's poison record of the same order is none of the view's), and of their event ids, by partition key."""
    con.register("__quarantine", read_quarantine(lake, con, _quarantine_files(con, lake)))
    ours = f"AND (q.stream IS NULL OR q.stream IN (SELECT unnest({literal(list(streams))})))" if streams else ""
    rel = con.sql(f"""
        SELECT q.partition_key, q.reason, q.event_id, q.sequence, q.event_type, q.source, q.line,
               q.event_id IN (SELECT event_id FROM matched) AS same_id
        FROM __quarantine q
        WHERE (q.partition_key IN (SELECT DISTINCT partition_key FROM matched) {ours})
           OR q.event_id IN (SELECT event_id FROM matched)
        ORDER BY q.partition_key, q.sequence""")
    names = rel.columns
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rel.fetchall():
        row = dict(zip(names, r, strict=True))
        out.setdefault(str(row["partition_key"]), []).append(row)
    return out


def _quarantine_files(con: duckdb.DuckDBPyConnection, lake: Lake) -> list[str] | None:
    """The quarantine files whose statistics may hold a matched partition key or event id (None: all of them,
    for more than ``MOST_IDS`` events, whose ids would cost more to look up than the files to read)."""
    if con.sql("SELECT count(*) FROM matched").fetchall()[0][0] > MOST_IDS:
        return None
    keys, ids = con.sql("SELECT list(DISTINCT partition_key), list(event_id) FROM matched").fetchall()[0]
    return lake.quarantine_files(keys=keys or [], event_ids=ids or [])


#: per (field, event type): the sum of that field over the key's events of that type
Sums = dict[str, dict[str, float]]


def _payloads(con: duckdb.DuckDBPyConnection,
              numbers: dict[int, dict[str, tuple[float, float]]]) -> dict[int, tuple[list[dict[str, Any]], Sums]]:
    """Per key index of ``numbers`` (:func:`_numbers` of its changes): the events whose numeric payload values
    (or pairwise products) can explain a changed column's live - rebuilt difference, in (partition_key, sequence, event_id) order,
    and the per-type sums of every such value over all the key's events (for :func:`_signs`).

    Memory stays bounded by the suspects, not the key's events (a day of a by_window view holds
    millions): the payloads are read in batches, summed as they come, and of the events that give
    the same readings (same type, same fields matching the same columns with the same signs) only the
    first ``MAX_IDS`` are kept, as no later one can rank among the ``MAX_IDS`` named (:func:`_explain`; a
    duplicate's copies give the same readings, so counting columns by event id changes nothing)."""
    deltas = {i: {column: abs(d) for column, (d, _) in n.items()} for i, n in numbers.items()}
    cursor = con.execute(f"SELECT __i, partition_key, sequence, event_id, event_type, {_NUMBERS} FROM matched_payloads "
                         "WHERE __i IN (SELECT unnest($1))", [list(numbers)])
    sums: dict[int, Sums] = {}
    kept: dict[tuple[Any, ...], list[tuple[Any, ...]]] = {}
    for i, partition_key, sequence, event_id, event_type, pairs in _batches(cursor):
        values = _values(pairs)
        i = int(i)
        for name, value in values.items():
            by_type = sums.setdefault(i, {}).setdefault(name, {})
            by_type[event_type] = by_type.get(event_type, 0.0) + value
        matches = frozenset((c, name, value > 0) for name, value in values.items() for c, d in deltas[i].items()
                            if value and abs(d - abs(value)) < 1e-6)
        if matches:  # sorted here, not in SQL: a sort there would carry every payload along
            same = kept.setdefault((i, event_type, matches), [])
            same.append((partition_key, sequence, event_id, {"event_id": event_id, "event_type": event_type, "values": values}))
            if len(same) > 2 * MAX_IDS:
                same[:] = sorted(same, key=_place)[:MAX_IDS]
    suspects: dict[int, list[tuple[Any, ...]]] = {}
    for (i, *_), same in kept.items():
        suspects.setdefault(i, []).extend(sorted(same, key=_place)[:MAX_IDS])
    return {i: ([f[3] for f in sorted(suspects.get(i, []), key=_place)], found) for i, found in sums.items()}


def _place(found: tuple[Any, ...]) -> tuple[Any, ...]:
    """An event's place in replay order: (partition_key, sequence, event_id)."""
    return found[:3]


def _numbers(changes: dict[str, dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """Per changed numeric column: live - rebuilt, and rebuilt."""
    out = {}
    for column, pair in changes.items():
        try:
            live, rebuilt = float(pair["live"]), float(pair["rebuilt"])
        except (TypeError, ValueError):
            continue
        out[column] = (live - rebuilt, rebuilt)
    return out


#: a payload's top-level numbers as (name, value) pairs, read in DuckDB: a 5 MB payload (a document, a
#: base64 blob) never crosses into Python, and one nested thousands of levels deep is no RecursionError
#: there; a payload that is no JSON object gives none; a number sent as text (``"3"``) is one, as a projection
#: that declares the field a number reads it (a strict consumer skipped such an event: the rebuild has it)
_NUMBERS = ("(SELECT list((key, v)) FROM (SELECT key, TRY_CAST(atom AS DOUBLE) AS v FROM json_each(CASE WHEN "
            "json_valid(payload) AND json_type(payload) = 'OBJECT' THEN payload END) WHERE type IN ('BIGINT', "
            "'UBIGINT', 'DOUBLE', 'VARCHAR')) WHERE isfinite(v))")
#: pairwise products (``quantity*unit_price``) are tried for payloads of at most this many numbers: a
#: payload of 3,000 numbers gave 4.5 million products, 10 s and 2 GB for one event
MAX_PRODUCT_NUMBERS = 24


def _values(numbers: list[tuple[str, float]] | None) -> dict[str, float]:
    """A payload's top-level numbers and, for up to ``MAX_PRODUCT_NUMBERS`` of them, their pairwise
    products (``quantity*unit_price``)."""
    values = dict(numbers or ())
    if len(values) > MAX_PRODUCT_NUMBERS:
        return values
    names = sorted(values)
    values.update({f"{a}*{b}": values[a] * values[b] for n, a in enumerate(names) for b in names[n + 1:]})
    return values


def _batches(cursor: duckdb.DuckDBPyConnection, size: int = 4096) -> Iterator[tuple[Any, ...]]:
    while rows := cursor.fetchmany(size):
        yield from rows


def _explain(numbers: dict[str, tuple[float, float]], events: list[dict[str, Any]], sums: Sums,
             agreed: dict[str, dict[tuple[str, str], int]]) -> list[dict[str, Any]]:
    """Of a key's changed numeric columns (``numbers``: :func:`_numbers`), the events whose payload value equals a changed column's live - rebuilt difference, the likeliest
    cause first (the first ``MAX_IDS``: in a hot key thousands of items of quantity 1 each explain a
    difference of 1).

    Whether live counts such an event once more or misses it depends on the sign it gives the column:
    an ``ItemRemoved`` of quantity 1 that live missed leaves live's items 1 higher, as a duplicated
    ``ItemAdded`` of quantity 1 would. The sign of each event type's field is the one that sums the
    key's events (``sums``) to the rebuilt value (:func:`_signs`), or, where they say, every sampled key's
    (``agreed``, per column: :func:`_agreed_signs`); a type that adds nothing there is no candidate.
    Ranked: events explaining more of the changed columns first (an event applied once more or less
    moves every column it feeds), then a missed event before one counted once more (a delivery twice
    also leaves a duplicate in the lake, which the ``duplicate`` flag shows), then sequence order. A field
    the events add up to the column by no signs (``unit_price``, where ``total`` adds up ``quantity*unit_price``;
    any for ``version``, a last sequence) is left out, unless it is in too many event types to weigh: its equal
    value is chance (it read one removal as missed by one field and counted once more by the other)."""
    found = []
    for column, (delta, rebuilt) in numbers.items():
        matched = [(order, e, name, value) for order, e in enumerate(events) for name, value in e["values"].items()
                   if value and abs(abs(delta) - abs(value)) < 1e-6]
        # the signs of the matched fields only: of every field, 300 changed columns of payloads of 20 numbers
        # (210 values with their products) took 60 s of a check's 70
        signs = {**_signs({name: sums[name] for _, _, name, _ in matched if name in sums}, rebuilt),
                 **agreed.get(column, {})}
        # a field the key's events add up to the column by explains it; another field's equal value is chance
        fitted = {name for _, name in signs}
        matched = [m for m in matched if m[2] in fitted or len(sums.get(m[2], ())) > MOST_TYPES]
        for order, e, name, value in matched:
            sign = signs.get((e["event_type"], name), 1)
            if sign:
                more = (delta > 0) == (sign * value > 0)
                reading = "live counts it once more" if more else "live misses it"
                if sign == UNKNOWN:  # items 0 = ItemAdded 2 - ItemRemoved 2, or the other way round
                    reading = "live counts it once more or misses it"
                found.append((order, {"column": column, "live_minus_rebuilt": round(delta, 6), "event_id": e["event_id"],
                                      "event_type": e["event_type"], "field": name, "reading": reading}))
    columns: dict[str, set[str]] = {}
    for _, x in found:
        columns.setdefault(x["event_id"], set()).add(x["column"])
    found.sort(key=lambda f: (-len(columns[f[1]["event_id"]]), f[1]["reading"] != "live misses it", f[0]))
    return [x for _, x in found[:MAX_IDS]]


def _signs(sums: Sums, rebuilt: float) -> dict[tuple[str, str], int]:
    """Per (event type, field): +1, -1 or 0 when every way of adding up the key's per-type sums of that
    field (``sums``) with those signs to ``rebuilt`` agrees on it (items = ItemAdded - ItemRemoved quantities);
    fields that sum to it no way are left out, those several ways add up that disagree are :data:`UNKNOWN`."""
    out: dict[tuple[str, str], int] = {}
    for name, by_type in sums.items():
        out.update(_field_signs(name, [(by_type, rebuilt)]))
    return out


def _field_signs(name: str, keys: Sequence[tuple[dict[str, float], float]]) -> dict[tuple[str, str], int]:
    """:func:`_signs` of field ``name`` over several keys at once, as (per-type sums, rebuilt value): the ways
    of adding up that fit every key (a projection adds a column up the same way for all of them)."""
    types = sorted({t for by_type, _ in keys for t in by_type})
    if len(types) > MOST_TYPES:
        return {}
    fits = [c for c in product((1, 0, -1), repeat=len(types))
            if all(abs(sum(s * by_type.get(t, 0.0) for s, t in zip(c, types, strict=True)) - rebuilt)
                   <= 1e-6 * max(1.0, abs(rebuilt)) for by_type, rebuilt in keys)]
    out: dict[tuple[str, str], int] = {}
    for n, t in enumerate(types):
        agreed = {c[n] for c in fits}
        if len(agreed) == 1:
            out[(t, name)] = agreed.pop()
        elif agreed:  # several ways disagree: a +1 guessed here read a missed ItemRemoved as counted once more
            out[(t, name)] = UNKNOWN
    return out


def _agreed_signs(numbers: dict[int, dict[str, tuple[float, float]]],
                  payloads: dict[int, tuple[list[dict[str, Any]], Sums]]) -> dict[str, dict[tuple[str, str], int]]:
    """Per changed column, the signs that add up every sampled key's events to its rebuilt value, of the
    fields whose values equal a key's difference. One key's events can add up several ways (an order that
    added 3 items and removed them: items 0 = ItemAdded - ItemRemoved, or the reverse, or neither), which
    left its missed removal read 'once more or misses it', unflagged; the other keys' events tell which way.
    A field no one way adds up for all keys adds nothing to the column (sign 0), whatever one key's add up to."""
    numbers = {i: n for i, n in numbers.items() if i in payloads}
    out: dict[str, dict[tuple[str, str], int]] = {}
    for column in {c for n in numbers.values() for c in n}:
        keys = {i: n[column] for i, n in numbers.items() if column in n}
        if len(keys) < 2:
            continue
        names = {name for i, (delta, _) in keys.items() for e in payloads[i][0] for name, value in e["values"].items()
                 if value and abs(abs(delta) - abs(value)) < 1e-6}
        for name in names:
            sums = [(payloads[i][1][name], rebuilt) for i, (_, rebuilt) in keys.items() if name in payloads[i][1]]
            signs = _field_signs(name, sums)
            types = {t for by_type, _ in sums for t in by_type}
            if not signs and len(sums) > 1 and len(types) <= MOST_TYPES:  # no way adds up every key: no suspect,
                signs = {(t, name): 0 for t in types}  # though one key's may by chance (quantities 1+2+3 = version 6)
            out.setdefault(column, {}).update(signs)
    return out


def _build(key: dict[str, Any], kind: str, agg: dict[str, Any] | None, quarantine: dict[str, list[dict[str, Any]]],
           explained: list[dict[str, Any]]) -> KeyLineage:
    if agg is None:
        return KeyLineage(key=key, kind=kind, flags=("no_events",))
    q = [row for pk in agg["partition_keys"] for row in quarantine.get(str(pk), [])]
    dups = tuple(agg["dup_ids"] or ()) + tuple(r["event_id"] for r in q if r["same_id"])
    readings = {next(e for e in explained if e["column"] == c)["reading"] for c in {e["column"] for e in explained}}
    flags = [name for name, on in (
        ("duplicate", bool(dups)),
        ("duplicate_suspected", "live counts it once more" in readings),
        ("missed_suspected", "live misses it" in readings),
        ("conflict", any(str(r["reason"]).startswith("conflict") for r in q)),
        ("quarantined", bool(q)),
        ("late", bool(agg["late"])),
        ("gap", agg["missing"] > 0),
    ) if on]
    return KeyLineage(
        key=key, kind=kind, events=int(agg["events"]), event_ids=tuple(agg["event_ids"]),
        event_types=dict(agg["event_types"]), partition_keys=tuple(sorted(agg["partition_keys"]))[:MAX_IDS],
        sequence_range=(int(agg["first_seq"]), int(agg["last_seq"])),
        event_time_range=(agg["t0_text"] or agg["t0"].isoformat(), agg["t1_text"] or agg["t1"].isoformat()),
        ingested_range=(agg["i0"].isoformat(), agg["i1"].isoformat()), lake_versions=(int(agg["v0"]), int(agg["v1"])),
        missing_sequences=agg["missing"], streams=agg["streams"], late=tuple(agg["late"] or ())[:MAX_IDS], duplicates=tuple(dict.fromkeys(dups)),
        quarantine=tuple({k: v for k, v in r.items() if k != "same_id"} for r in q)[:MAX_IDS],
        explained_by=tuple(explained), flags=tuple(flags),
    )


def _out_of_range(time: str) -> str:
    """The SQL time ``time`` as DuckDB writes it ('infinity', '20260-01-01 00:00:00+00') when it is outside the
    years 1 to 9999, as an older version archived some: fetched, infinity was 9999-12-31 and year 20260 text."""
    return f"CASE WHEN NOT {time_held_sql(time)} THEN CAST({time} AS VARCHAR) END"


def difference_days(lake: Lake, keys: Sequence[dict[str, Any]], *, partition_column: str | None = None,
                    window: tuple[str, str] | None = None, streams: Sequence[str] | None = None,
                    as_of: int | None = None, con: duckdb.DuckDBPyConnection | None = None,
                    without_files: Sequence[str] = ()) -> dict[str, int]:
    """Differing keys per day of event time: the window column's day, or the key's first event day
    (``con`` and ``without_files``: as for :func:`lineage`)."""
    if not keys:
        return {}
    if window is not None and window[0] in keys[0]:
        counts: dict[str, int] = {}
        for k in keys:
            start = k[window[0]]
            if isinstance(start, datetime) and start.tzinfo:  # fetched in the session's zone: its day in UTC
                start = start.astimezone(UTC)
            day = str(start)[:10]
            counts[day] = counts.get(day, 0) + 1
        return dict(sorted(counts.items()))
    if partition_column is None:
        return {}
    wanted = tuple(str(k[partition_column]) for k in keys)
    con = session(con)
    try:
        rel = read_events(lake, EventFilter(streams=tuple(streams) if streams else None, as_of=as_of,
                                            partition_keys=wanted, without_files=tuple(without_files)), con=con)
        con.register("__events", rel)
        rows = con.sql("SELECT strftime(day, '%Y-%m-%d'), count(*) FROM (SELECT partition_key, "
                       "CAST(min(event_time) AS DATE) AS day FROM __events GROUP BY ALL) GROUP BY ALL ORDER BY 1").fetchall()
    finally:
        con.close()
    return {str(d): int(n) for d, n in rows}
