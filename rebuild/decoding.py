"""How a run's events' declared payload fields decoded: counted in every event it reads, refused or logged.

``from_json`` reads a value that does not convert to the declared type as NULL, and JSON ``true`` as 1 where a
number is declared, without a word. A run counts them (``lake.decoding``'s codes: compacted files carry them, the
others' are computed from their payloads) and refuses a declaration none of whose values reads as its type, or one
misspelt; it logs the others, and a check report notes them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import duckdb

from lake import EventFilter, Lake, Snapshot
from lake.decoding import COERCED, LOST, ROUNDED
from lake.schema import decoding_column
from lake.sql import json_pointer, literal, quote
from rebuild.errors import ProjectionError, near_name
from rebuild.projection import Projection
from rebuild.replay import Selection, decoded_files, decoding_sql, quarantined_keys

log = logging.getLogger(__name__)

#: the events whose payloads' field names are looked at for a misspelt declared field
DECODE_SAMPLE = 10_000
#: DuckDB 2.0 runs a constant LIMIT over the decoded payload fields (above 8,000 rows or so) by parsing
#: each payload again for every field: 300 declared fields took 30 s for 10,000 events; a LIMIT it
#: cannot fold into the plan takes 1 s
SAMPLE_LIMIT = f"LIMIT (SELECT {DECODE_SAMPLE})"


@dataclass(frozen=True)
class DecodingCount:
    """How the values of one declared payload field decoded in the events counted (``lake.decoding``)."""

    field: str
    type_: str
    given: int  # present and not JSON null
    lost: int  # read as NULL
    coerced: int  # of another kind: true read as 1.00, 1 as true
    rounded: int
    examples: dict[int, str]  # by code: a value, its event and what it reads as

    def refusal(self) -> str | None:
        """Why the declaration is wrong: none of the values reads as its type."""
        if not self.given or self.lost + self.coerced < self.given:
            return None
        return (f"payload field {self.field!r} is declared {self.type_}, but none of its {self.given:,} values converts to "
                f"it (e.g. {self.examples.get(LOST) or self.examples.get(COERCED)}), so it would read as "
                f"{'NULL' if self.lost else 'another value'} everywhere; fix its type in payload=")

    def warnings(self) -> list[str]:
        of = f"of {self.given:,} values of payload field {self.field!r}"
        return [text for count, text in (
            (self.lost, f"{self.lost:,} {of} do not convert to {self.type_} and read as NULL (e.g. {self.examples.get(LOST)})"),
            (self.coerced, f"{self.coerced:,} {of} are of another kind than {self.type_} and read as another value (e.g. "
                           f"{self.examples.get(COERCED)})"),
            (self.rounded, f"{self.rounded:,} {of} are rounded to fit {self.type_} (e.g. {self.examples.get(ROUNDED)}): "
                           "declare a type that holds them (a DECIMAL with more digits after the point, or DOUBLE)"),
        ) if count]


def check_decoding(con: duckdb.DuckDBPyConnection, lake: Lake, snapshot: Snapshot, projection: Projection,
                   selection: Selection) -> None:
    """A payload field's value that does not convert to its declared type decodes to NULL, silently
    (``from_json``); one declared as a number reads ``true`` as 1 and one declared BOOLEAN reads a number as
    ``true``; an integer or a decimal gets its numbers rounded to fit. Count them in every event a run reads
    of ``selection``: a field none of whose values reads as its type is a wrong declaration, refused, and so is one
    no payload has while one has it spelt otherwise (``Amount``, ``ammount``); the others are logged with an example
    and its event."""
    if not projection.payload:
        return
    counts, clean = _counts(con, lake, snapshot, projection, selection)
    for count in counts:
        if (refusal := count.refusal()) is not None:
            raise ProjectionError(f"projection {projection.name!r}: {refusal}", projection=projection.name, field=count.field)
        for text in count.warnings():
            log.warning("projection %s: %s", projection.name, text)
    absent = [c.field for c in counts if not c.given]  # in the files counted: the clean ones may hold a value
    for field, near in _misspelt(con, decoding_sql(lake, snapshot, projection, selection), absent):
        if not _given_in(con, lake, replace(snapshot, files=tuple(f for f in snapshot.files if f.path in clean)),
                         projection, selection, field):
            raise ProjectionError(
                f"projection {projection.name!r}: payload field {field!r} is in none of the first {DECODE_SAMPLE:,} "
                f"events' payloads, which have {near!r}, so it would read as NULL everywhere; fix its name in "
                "payload= (payload field names are case-sensitive)", projection=projection.name, field=field)


def _counts(con: duckdb.DuckDBPyConnection, lake: Lake, snapshot: Snapshot, projection: Projection,
            selection: Selection) -> tuple[list[DecodingCount], list[str]]:
    """``count_decoding`` of the events of ``selection``, and the compacted files it did not read: those whose codes'
    statistics say every value read as itself (``clean_files``; at 10M compacted events, reading every code took
    0.6 s of a 1.7 s full run). When the files read hold a value that does not, all are counted, for the totals."""
    clean = clean_files(lake, projection, decoded_files(lake, snapshot, projection, selection))
    counts = count_decoding(con, projection, decoding_sql(lake, snapshot, projection, selection, without=clean))
    if clean and any(c.lost or c.coerced or c.rounded for c in counts):
        counts = count_decoding(con, projection, decoding_sql(lake, snapshot, projection, selection))
    return counts, clean


def clean_files(lake: Lake, projection: Projection, paths: Sequence[str]) -> list[str]:
    """The compacted files of ``paths`` in which every value of every declared field read as itself, and every field
    has one: each code column's largest value, by the row groups' statistics (the footers only), is 0."""
    columns = {decoding_column(f, t) for f, t in (projection.payload or {}).items()}
    if not columns:
        return []
    worst = lake.worst_codes(paths)
    return [p for p in paths if all(worst[p].get(c) == 0 for c in columns)]


def count_decoding(con: duckdb.DuckDBPyConnection, projection: Projection, codes: str) -> list[DecodingCount]:
    """How each declared payload field's values decoded in the events of ``codes`` (:func:`decoding_sql`)."""
    fields = list((projection.payload or {}).items())
    # judged field by field in one GROUP BY: as many aggregates as fields, each over its code's column, took twice as
    # long with 150 fields (and half as long with 5: 0.04 s against 0.1 s a million events)
    counts = con.sql(
        f"SELECT count(code), count(*) FILTER (code = {LOST}), count(*) FILTER (code = {COERCED}), "
        f"count(*) FILTER (code = {ROUNDED}) FROM (SELECT unnest(range({len(fields)})) AS i, unnest({_code_list(fields)}) "
        f"AS code FROM ({codes})) GROUP BY i ORDER BY i").fetchall() or [(0, 0, 0, 0)] * len(fields)  # no event: no group
    examples = _decoding_examples(con, fields, codes) if any(sum(c[1:]) for c in counts) else {}
    return [DecodingCount(field, type_, given, lost, coerced, rounded, {code: e for (n, code), e in examples.items() if n == i})
            for i, ((field, type_), (given, lost, coerced, rounded)) in enumerate(zip(fields, counts, strict=True))]


def decoding_notes(con: duckdb.DuckDBPyConnection, lake: Lake, projection: Projection, as_of: int,
                   skipped: Sequence[str] = (), exclude_quarantined: bool = False) -> list[str]:
    """For a check report: the payload values that do not read as themselves in every event the view's projection
    consumes up to lake_version ``as_of`` (a run logs those it reads, which a job's log may not keep), but those of
    the lake files the run ``skipped`` (unreadable) and, if it excluded them, of the keys with a quarantined record."""
    if not projection.payload:
        return []
    if exclude_quarantined:
        quarantined_keys(con, lake, projection.streams)
    selection = Selection(EventFilter(streams=projection.streams, event_types=projection.consumes, as_of=as_of),
                          exclude_quarantined=exclude_quarantined)
    snapshot = lake.snapshot()
    snapshot = replace(snapshot, files=tuple(f for f in snapshot.files if f.path not in skipped))
    counts, _ = _counts(con, lake, snapshot, projection, selection)
    return [f"in the events the view replays (to lake_version {as_of}), {text}"
            for c in counts for text in [*c.warnings(), *filter(None, [c.refusal()])]]


def _decoding_examples(con: duckdb.DuckDBPyConnection, fields: list[tuple[str, str]], codes: str) -> dict[tuple[int, int], str]:
    """A value of each field that does not read as itself, per code, with its event and what it reads as. Only
    those events' payloads are parsed (rare, or the run is refused)."""
    raw = f"json_extract(payload, {literal([json_pointer(f) for f, _ in fields])})[i + 1]"
    decoded = f"from_json(payload, {literal(json.dumps(dict(fields)))})"
    text = "[" + ", ".join(f"CAST({decoded}.{quote(f)} AS VARCHAR)" for f, _ in fields) + "][i + 1]"
    rows = con.sql(
        f"SELECT i, code, any_value(CAST({raw} AS VARCHAR) || ' in event ' || event_id || "
        f"CASE WHEN code = {LOST} THEN '' ELSE ' reads as ' || {text} END) FROM (SELECT unnest(range({len(fields)})) "
        f"AS i, unnest({_code_list(fields)}) AS code, event_id, payload FROM ({codes})) "
        "WHERE code > 0 GROUP BY ALL").fetchall()
    return {(i, code): example for i, code, example in rows}


def _code_list(fields: list[tuple[str, str]]) -> str:
    return f"[{', '.join(f'__code_{i}' for i in range(len(fields)))}]"


def _misspelt(con: duckdb.DuckDBPyConnection, codes: str, absent: list[str]) -> list[tuple[str, str]]:
    """The fields of ``absent`` that none of the sampled payloads has, while they have one of a name that differs
    only by case or a letter or two (a misspelt declaration: it would read as NULL everywhere), with that name."""
    if not absent:
        return []
    sample = f"SELECT json_keys(payload) AS __keys FROM ({codes}) {SAMPLE_LIMIT}"
    held = con.sql(f"SELECT list_distinct(flatten(list(__keys))) FROM ({sample})").fetchall()[0][0] or []
    # held, but null everywhere: no misspelling
    return [(field, near) for field in absent if field not in held and (near := near_name(field, held)) is not None]


def _given_in(con: duckdb.DuckDBPyConnection, lake: Lake, snapshot: Snapshot, projection: Projection,
              selection: Selection, field: str) -> bool:
    """Whether an event of ``selection`` in ``snapshot``'s files has a value of ``field``. A clean compacted file
    (``clean_files``) has one of every field, but perhaps only in events of another type than those selected."""
    if not snapshot.files:
        return False
    codes = decoding_sql(lake, snapshot, projection, selection)
    code = f"__code_{list(projection.payload or {}).index(field)}"
    return bool(con.sql(f"SELECT 1 FROM ({codes}) WHERE {code} IS NOT NULL LIMIT 1").fetchall())
