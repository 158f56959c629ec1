"""Validation as SQL: one SELECT per raw batch turns source records into envelope columns plus
a quarantine ``reason`` (NULL for a valid event). Vectorized in DuckDB: no Python per record.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from lake.mapping import Mapping, is_path
from lake.schema import stream_too_long_sql, time_held_sql
from lake.sql import literal, quote


@dataclass(frozen=True)
class Batch:
    """Raw records of one source, ready to be staged; ``fmt`` says how to read their fields.

    A Parquet ``file`` is read by DuckDB itself, in parallel and without an Arrow copy: ``table``
    is then empty (its columns only), and ``tables`` gives the records read by pyarrow instead,
    for a file DuckDB cannot read (pyarrow says where it is damaged).
    """

    source: str
    fmt: str
    table: pa.Table
    file: Path | None = None
    tables: Callable[[], Iterable[pa.Table]] | None = None


def validate_sql(batch: Batch, mapping: Mapping, stream: str | None, source: int) -> str:
    """One SELECT turning raw records into envelope columns plus a quarantine ``reason``. Rows
    carry their source as its number ``source``: the staging keeps each name once, not per row.

    Three levels, so that each field is extracted (and each JSON line parsed) once per record:
    ``fields`` pulls the source fields out as text (or as they are when they already have the
    envelope's type: Parquet, Arrow), ``typed`` casts them, the outer level judges.
    """
    cols = set(batch.table.column_names)
    if "_rejected" in cols:
        return (
            f"SELECT {int(source)}, _line, _raw, _rejected, NULL, {literal(stream)}, "
            "NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM raw"
        )
    get = _Fields(batch, mapping)
    texts = ("event_id", "partition_key", "event_type", "sequence", "event_time", "schema_version")
    payload, payload_is_text = get.json("payload")
    stream_text = get.text("stream") if "stream" in mapping.fields else "CAST(NULL AS VARCHAR)"
    fields = ", ".join(
        [
            f"{get.ok()} AS _ok",
            f"{get.ok_reason()} AS _ok_reason",
            *[f"{get.text(c)} AS _t_{c}" for c in texts],
            f"{stream_text} AS _t_stream",
            *[f"{get.scalar(c)} AS _s_{c}" for c in ("event_id", "partition_key", "event_type", "stream")],
            f"{payload} AS _payload",
            f"coalesce({payload_is_text}, false) AS _payload_is_text",
            f"{get.metadata()} AS _metadata",
        ]
    )
    # a blank stream is a missing one, as a blank event_id is: "" cannot name a lake folder (Delta
    # reads that partition value as NULL, and every later read of the lake failed)
    record_stream = "CASE WHEN NOT regexp_full_match(_t_stream, '[\\s\\p{Z}]*') THEN _t_stream END"
    stream_expr = f"coalesce({record_stream}, {literal(stream)})" if stream else record_stream
    typed_sequence = get.is_typed("sequence")
    sequence = "CAST(_t_sequence AS BIGINT)" if typed_sequence else "TRY_CAST(trim(_t_sequence) AS BIGINT)"
    event_time = (
        _typed_time_sql("_t_event_time", get.nanoseconds("event_time")) if get.is_typed("event_time")
        else _time_sql("_t_event_time", mapping.event_time_unit, mapping.event_time_format)
    )
    typed = (
        f"SELECT *, {stream_expr} AS _stream, {sequence} AS _sequence, {event_time} AS _event_time, "
        "TRY_CAST(_t_schema_version AS INTEGER) AS _schema_version "
        f"FROM (SELECT *, {fields} FROM {get.source()})"
    )
    wrong_type = "wrong type: {c} ({name}) must be a string, not an object, array or boolean"
    checks = [
        ("_ok", "'malformed record: ' || _ok_reason"),
        *[
            (_has_text(f"_t_{c}"), literal(f"missing field {c} ({get.name(c)})"))
            for c in ("event_id", "partition_key", "event_type")
        ],
        *[
            (f"_s_{c}", literal(wrong_type.format(c=c, name=get.name(c))))
            for c in ("event_id", "partition_key", "event_type", "stream")
        ],
        # runs name keys in SQL, which holds no NUL: every catch-up of a by_key view failed on such a key
        ("strpos(_t_partition_key, chr(0)) = 0",
         literal(f"partition_key ({get.name('partition_key')}) holds a NUL character (\\u0000), which no run "
                 "can name: remove it from the key at the source")),
        ("_stream IS NOT NULL", literal("missing field stream")),
        stream_too_long_sql("_stream"),  # the folder stream=NAME must fit a file name
        ("_t_sequence IS NOT NULL", literal(f"missing field sequence ({get.name('sequence')})")),
        (
            # the regexp only runs for text that is not already the canonical digits
            "_sequence >= 0" if typed_sequence else
            "CASE WHEN _t_sequence = CAST(_sequence AS VARCHAR) THEN _sequence >= 0 "
            "ELSE _sequence IS NOT NULL AND regexp_full_match(trim(_t_sequence), '[0-9]+') END",
            "'sequence is not a non-negative int64: ' || left(CAST(_t_sequence AS VARCHAR), 40)",
        ),
        ("_t_event_time IS NOT NULL", literal(f"missing field event_time ({get.name('event_time')})")),
        ("_event_time IS NOT NULL", "'unparsable event_time: ' || left(CAST(_t_event_time AS VARCHAR), 40)"
         + ("" if mapping.event_time_unit or mapping.event_time_format else _TIME_HINT)),
        (time_held_sql("_event_time"),
         "'event_time out of range (years 1 to 9999): ' || left(CAST(_t_event_time AS VARCHAR), 40)"),
        *_offset_checks(get.is_typed("event_time") or bool(mapping.event_time_unit), mapping.event_time_format),
        ("_payload IS NULL OR NOT _payload_is_text OR json_valid(_payload)", literal("payload is not JSON")),
        ("_t_schema_version IS NULL OR _schema_version IS NOT NULL", literal("schema_version is not an int32")),
    ]
    reason = "CASE " + " ".join(f"WHEN NOT ({ok}) THEN {why}" for ok, why in checks) + " END"
    # the raw columns pass through every level, so the record is rendered for rejected rows only
    return f"""
        SELECT {int(source)}, _line, CASE WHEN _reason IS NOT NULL THEN {get.record()} END,
               _reason, _t_event_id, _stream, _t_partition_key, _sequence, _t_event_type,
               _event_time, _schema_version, _payload, _metadata
        FROM (SELECT *, {reason} AS _reason FROM ({typed}))"""


# epoch numbers parse only with a declared unit, other text than ISO-8601 with a declared format: say
# so where the reason would leave people guessing
_TIME_HINT = (
    " || CASE WHEN regexp_full_match(trim(CAST(_t_event_time AS VARCHAR)), '[2-7][0-9]{4}([.][0-9]+)?') "
    "THEN ' (a number of days, as a spreadsheet writes a date (46266.5 is 2026-09-01 12:00), is no epoch unit: "
    "write it as ISO-8601 text; an epoch number: declare its unit, event_time_unit = \"s\", \"ms\" or \"us\" "
    "under [options] in a --map file)' "
    "WHEN regexp_matches(CAST(_t_event_time AS VARCHAR), '[0-9]:60([.,Z+ -]|$)') "
    "THEN ' (a leap second: times here have no second 60; write it as :59.999999 or as the next second)' "
    "WHEN regexp_full_match(trim(CAST(_t_event_time AS VARCHAR)), '-?[0-9]+([.][0-9]+)?') "
    "THEN ' (an epoch number: declare its unit, event_time_unit = \"s\", \"ms\" or \"us\" under [options] "
    "in a --map file)' WHEN regexp_matches(CAST(_t_event_time AS VARCHAR), '[0-9][./][0-9]') "
    "THEN ' (not ISO-8601: declare its format, event_time_format = \"%d.%m.%Y %H:%M\" under [options] "
    "in a --map file)' ELSE '' END"
)


#: an ISO time's UTC offset is its wall time (the text read without its offset) less the time itself; real
#: zones lie within -12:00 and +14:00, so one beyond +/-14:00 (+23:00, +99) is a producer's bug, not a place.
#: Times written in UTC skip the second parse (a CASE evaluates its ELSE for the other rows only): 2M times
#: in one thread 105 ms -> 43 ms
_OFFSET_CHECK = (
    "CASE WHEN ends_with(CAST(_t_event_time AS VARCHAR), 'Z') OR ends_with(CAST(_t_event_time AS VARCHAR), '+00:00') "
    "THEN true ELSE abs(epoch_us(TRY_CAST(_t_event_time AS TIMESTAMP)) - epoch_us(_event_time)) <= 50400000000 END",  # 14 h in µs
    "'event_time offset beyond +/-14:00 (no time zone has one: a producer writing its offset wrong?): ' "
    "|| left(CAST(_t_event_time AS VARCHAR), 40)",
)


#: an offset ending a time (+HH, +HHMM, +HH:MM, +HH:MM:SS, as ISO text and strptime's %z write them) with minutes
#: or seconds past 59, which DuckDB reads anyway (+05:99 as +06:39); in ISO text after a time's digit
_BAD_FIELDS = r"[+-][0-9]{2}(?::?[0-9]{2})??:?[6-9][0-9](?::?[0-9]{2})?\s*$"
_ISO_BAD_FIELDS = r"[0-9]\s*" + _BAD_FIELDS
#: an offset ending a time, as a declared format's %z reads it
_OFFSET = r"([+-][0-9]{2}(?::?[0-9]{2}){0,2})\s*$"


def _offset_checks(typed: bool, time_format: str | None) -> list[tuple[str, str]]:
    """Offsets no time zone has, as a producer's bug: minutes or seconds past 59; with a declared format ending
    in %z, an offset beyond +/-14:00 too (DuckDB reads +25:00 as the day before), which ISO text's _OFFSET_CHECK
    finds. A %z elsewhere in a format cannot be found in the text, and is not checked."""
    if typed or (time_format is not None and not time_format.rstrip().endswith("%z")):
        return []
    text = "CAST(_t_event_time AS VARCHAR)"
    fields = (f"NOT regexp_matches({text}, {literal(_BAD_FIELDS if time_format else _ISO_BAD_FIELDS)})",
              "'event_time offset with minutes or seconds past 59 (no time zone has one: a producer writing its "
              f"offset wrong?): ' || left({text}, 40)")
    if not time_format:
        return [_OFFSET_CHECK, fields]
    # its digits as HHMMSS, compared as text
    digits = f"rpad(regexp_replace(regexp_extract({text}, {literal(_OFFSET)}, 1), '[^0-9]', '', 'g'), 6, '0')"
    return [(f"{digits} <= '140000'", _OFFSET_CHECK[1]), fields]


def _has_text(column: str) -> str:
    """Whether ``column`` holds more than spaces; only values starting with a space are trimmed."""
    return f"coalesce(CASE WHEN starts_with({column}, ' ') THEN trim({column}) <> '' ELSE {column} <> '' END, false)"


# lake.schema.FIRST_TIME and LAST_TIME in microseconds: archived, a time outside made `check` and `audit` fail
_FIRST_US, _LAST_US = -62_135_596_800_000_000, 253_402_300_799_999_999  # 0001-01-01, 9999-12-31 23:59:59.999999


def _typed_time_sql(column: str, nanoseconds: bool) -> str:
    """A timestamp column as the lake's time; nanoseconds are cut to microseconds, as ISO text's digits are
    (DuckDB's cast rounds them: 23:59:59.999999999 was the next day's 00:00:00, another window)."""
    if not nanoseconds:
        return f"CAST({column} AS TIMESTAMPTZ)"
    ns = f"epoch_ns(CAST({column} AS TIMESTAMP_NS))"
    return f"CAST(make_timestamp(({ns} - ({ns} % 1000 + 1000) % 1000) // 1000) AS TIMESTAMPTZ)"


def _time_sql(text: str, unit: str | None, time_format: str | None = None) -> str:
    if time_format is not None:  # a time without a zone (%z) is UTC, as ISO text without one; %n: nanoseconds
        return _typed_time_sql(f"try_strptime({text}, {literal(time_format)})", "%n" in time_format)
    if unit is None:  # DuckDB's word 'epoch' is no ISO-8601 time (it holds no digit; 'infinity' is out of range):
        # RFC 3339 allows a lower-case 't' and 'z', which DuckDB does not read: upper-cased only when the text
        # as written is no time (a coalesce reads its second argument for those rows only; zone names keep case)
        time = f"coalesce(TRY_CAST({text} AS TIMESTAMPTZ), TRY_CAST(upper({text}) AS TIMESTAMPTZ))"
        # the text is only searched at 1970-01-01 (all of it was +70%)
        return f"CASE WHEN epoch_us({time}) <> 0 OR regexp_matches({text}, '[0-9]') THEN {time} END"
    scale = {"s": 1_000_000, "ms": 1_000, "us": 1}[unit]
    # microseconds counted exactly, digits past them cut as ISO text's are (through a double, 1.9999999 s
    # rounded to 2 s, another second or day than the same time written in ISO); an integer's text reads as
    # HUGEINT (4x faster than DECIMAL); out of range is NULL before make_timestamp, which fails on it
    whole = f"TRY_CAST({text} AS HUGEINT)"
    us = (f"CASE WHEN CAST({whole} AS VARCHAR) = {text} THEN {whole} * {scale} "
          f"ELSE CAST(floor(TRY_CAST({text} AS DECIMAL(38, 12)) * {scale}) AS HUGEINT) END")
    return (f"CAST(make_timestamp(CASE WHEN {us} BETWEEN {_FIRST_US} AND {_LAST_US} "
            f"THEN CAST({us} AS BIGINT) END) AS TIMESTAMPTZ)")


def _is_text(kind: pa.DataType) -> bool:
    """Text in any of Arrow's layouts: plain, large, view, or dictionary-encoded (a pandas category,
    a Polars Categorical). A JSON payload in one is JSON text, not a string to be quoted as JSON."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)


class _Fields:
    """SQL expressions reading one envelope column's source field, per input format.

    NDJSON lines are parsed once (``from_json`` into a struct ``_s``): envelope text fields come
    out as VARCHAR directly, payload and metadata as JSON fragments. An object, array or boolean
    where text belongs renders as text too, so only such suspicious values are looked at again.
    """

    def __init__(self, batch: Batch, mapping: Mapping) -> None:
        self.fmt = batch.fmt
        self.mapping = mapping
        self.schema = batch.table.schema

    def name(self, column: str) -> str:
        return self.mapping.fields.get(column, "<unmapped>")

    def _json_fields(self) -> set[str]:
        """Source fields kept as JSON fragments: the payload, the metadata and its extra fields."""
        fields = {self.mapping.fields.get(c) for c in ("payload", "metadata")} | set(self.mapping.metadata_fields)
        return {f for f in fields if f is not None}

    def _frag(self, field_name: str) -> str:
        if is_path(field_name):  # the line is read once more for it (not for a malformed one)
            return f"CASE WHEN _object THEN json_extract(_raw, {literal(field_name)}) END"
        return f"struct_extract(_s, {literal(field_name)})"

    def _present(self, field_name: str | None) -> bool:
        return field_name is not None and (self.fmt == "ndjson" or field_name in self.schema.names)

    def text(self, column: str) -> str:
        """The field as text; a typed field (see ``typed``) as it is: checks only ask whether it is NULL."""
        source = self.mapping.fields.get(column)
        if not self._present(source):
            return "CAST(NULL AS VARCHAR)"
        assert source is not None
        if self.fmt == "ndjson":
            if source in self._json_fields() or is_path(source):
                return f"json_extract_string({self._frag(source)}, '$')"
            return self._frag(source)
        kind = self.schema.field(source).type
        if self.is_typed(column) or _is_text(kind):
            return quote(source)
        if column == "schema_version" and pa.types.is_integer(kind):
            return quote(source)  # TRY_CAST(... AS INTEGER) refuses what does not fit
        if pa.types.is_timestamp(kind):
            return f"strftime(CAST({quote(source)} AS TIMESTAMPTZ), '%Y-%m-%dT%H:%M:%S.%f+00:00')"
        if column == "sequence" and pa.types.is_floating(kind):  # pandas makes an int column with a NULL float64
            value = quote(source)  # a whole number a double holds exactly (below 2**53) is that integer
            return (f"CASE WHEN {value} = trunc({value}) AND abs({value}) < {2**53} "
                    f"THEN CAST(CAST({value} AS BIGINT) AS VARCHAR) ELSE CAST({value} AS VARCHAR) END")
        return f"CAST({quote(source)} AS VARCHAR)"

    def is_typed(self, column: str) -> bool:
        """Whether ``sequence`` or ``event_time`` comes from a column that already has the
        envelope's type (a signed integer, a timestamp): then it is cast, not parsed from text."""
        source = self.mapping.fields.get(column)
        if self.fmt == "ndjson" or not self._present(source):
            return False
        assert source is not None
        kind = self.schema.field(source).type
        if column == "sequence":
            return pa.types.is_signed_integer(kind)
        return column == "event_time" and pa.types.is_timestamp(kind) and self.mapping.event_time_unit is None

    def nanoseconds(self, column: str) -> bool:
        """Whether a typed timestamp field counts nanoseconds (pandas' datetime64[ns], Spark's INT96)."""
        kind = self.schema.field(self.mapping.fields[column]).type
        return pa.types.is_timestamp(kind) and kind.unit == "ns"

    def scalar(self, column: str) -> str:
        """True unless the field is an object, array or boolean (a text column must not be one)."""
        source = self.mapping.fields.get(column)
        if not self._present(source):
            return "true"
        assert source is not None
        if self.fmt == "ndjson":
            value = self.text(column)
            path = literal(source if is_path(source) else '$."' + source.replace("\\", "\\\\").replace('"', '\\"') + '"')
            exact = f"coalesce(json_type(json_extract(_raw, {path})) NOT IN ('OBJECT', 'ARRAY', 'BOOLEAN'), true)"
            return f"CASE WHEN {value} IN ('true', 'false') OR left({value}, 1) IN ('{{', '[') THEN {exact} ELSE true END"
        kind = self.schema.field(source).type
        return "false" if pa.types.is_nested(kind) or pa.types.is_boolean(kind) else "true"

    def json(self, column: str) -> tuple[str, str]:
        """(expression, whether it came as text that must still be checked to be JSON)."""
        source = self.mapping.fields.get(column)
        if not self._present(source):
            return "CAST(NULL AS VARCHAR)", "false"
        assert source is not None
        if self.fmt == "ndjson":  # a JSON null is SQL NULL here
            frag = self._frag(source)
            kind = f"json_type({frag})"
            value = f"CASE WHEN {kind} = 'VARCHAR' THEN json_extract_string({frag}, '$') ELSE CAST({frag} AS VARCHAR) END"
            if f"_exact_{column}" in self.schema.names:  # as written: a long decimal (see lake.jsontext)
                value = f"coalesce(_exact_{column}, {value})"
            return value, f"({kind} = 'VARCHAR')"
        if _is_text(self.schema.field(source).type):
            return f"CAST({quote(source)} AS VARCHAR)", "true"
        return f"CAST(to_json({quote(source)}) AS VARCHAR)", "false"

    def metadata(self) -> str:
        extra = [f for f in self.mapping.metadata_fields if self._present(f)]
        own, own_is_text = self.json("metadata")
        if not extra:
            return f"CASE WHEN {own_is_text} AND NOT json_valid({own}) THEN to_json({own})::VARCHAR ELSE {own} END"
        if self.fmt == "ndjson":
            parts = ", ".join(f"{literal(f)}, {self._frag(f)}" for f in extra)
        else:
            parts = ", ".join(f"{literal(f)}, to_json({quote(f)})" for f in extra)
        return f"CAST(json_object({parts}) AS VARCHAR)"

    def ok(self) -> str:
        return "_object" if self.fmt == "ndjson" else "true"

    def ok_reason(self) -> str:
        if self.fmt != "ndjson":  # typed rows have no raw text to judge (and no _raw column)
            return "CAST(NULL AS VARCHAR)"
        return "CASE WHEN _object THEN NULL WHEN json_valid(_raw) THEN 'not a JSON object' ELSE 'malformed JSON' END"

    def source(self) -> str:
        if self.fmt != "ndjson":
            return "raw"
        names = sorted({*self.mapping.fields.values(), *self.mapping.metadata_fields} - set(self.mapping.paths()))
        json_fields = self._json_fields()
        structure = literal(json.dumps({n: "JSON" if n in json_fields else "VARCHAR" for n in names}))
        # malformed lines get no struct here, and a reason further on; valid JSON that starts
        # with '{' is an object, so each line is parsed twice (validated, then read), not three times
        read = f"from_json(_raw, {structure})" if names else "NULL"  # only JSON paths: nothing to read here
        return (
            f"(SELECT *, CASE WHEN _object THEN {read} END AS _s FROM "
            "(SELECT *, json_valid(_raw) AND starts_with(ltrim(_raw, ' ' || chr(9) || chr(13)), '{') AS _object FROM raw))"
        )

    def record(self) -> str:
        if self.fmt == "ndjson":  # with its line end: cut off in _resolve, for quarantined rows only
            return "_raw"
        names = [n for n in self.schema.names if n != "_line"]
        return "CAST(to_json(struct_pack(" + ", ".join(f"{quote(n)} := {quote(n)}" for n in names) + ")) AS VARCHAR)"
