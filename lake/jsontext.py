"""JSON members as written, for the NDJSON lines whose numbers a double cannot hold.

DuckDB reads JSON numbers with a fraction or an exponent as doubles and writes them back with at
most 17 digits: a payload's ``1.234567890123456789`` (an amount in wei, a NUMERIC(38,18) column
exported as JSON) would be archived as ``1.2345678901234567``. Vectorized regexes find the lines
holding a decimal of 16 digits or more that a double may change (rare); for those the member's text
is taken as it is written, in Python (about 30 us a line).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from json.decoder import scanstring  # type: ignore[attr-defined]

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# a decimal with 16 or more digits around its point: 15 always survive a double. Digits inside a
# string match too; such a line only takes the slower path and is archived as ever.
LONG_DECIMAL = "|".join(rf"[0-9]{{{k}}}\.[0-9]{{{16 - k}}}" for k in range(1, 16)) + r"|[0-9]{16}\."
_LONG_NUMBER = rf"-?[0-9]*(?:{LONG_DECIMAL})[0-9]*(?:[eE][-+]?[0-9]+)?"
_RUN = r"-?[0-9][0-9.]{15,}(?:[eE][-+]?[0-9]+)?"  # a long decimal's text, or a long integer, or 1.2.3...
_NUMBER = re.compile(r"-?[0-9]+\.[0-9]+(?:[eE][-+]?[0-9]+)?")
_STEP = re.compile(r'\.([A-Za-z_][A-Za-z0-9_]*)|\."([^"\\]+)"|\[([0-9]+)\]')  # of a JSON path (lake.mapping)
_SPACE = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def exact_members(table: pa.Table, fields: dict[str, str]) -> pa.Table:
    """``table`` (NDJSON lines in ``_raw``) with a column ``_exact_<column>`` for each envelope column
    of ``fields`` (column -> source field): the field's text as written on lines with a number that a
    double would change, NULL elsewhere. Unchanged when no line has one."""
    if not fields:
        return table
    lines = table["_raw"].combine_chunks()
    may = _may_change(lines)
    if not pc.any(may).as_py():  # the usual case: no Python per line (nor numpy to Arrow, which imports pandas)
        return table
    at = pc.indices_nonzero(may)
    changed = [i for i, line in zip(at.to_pylist(), lines.take(at).to_pylist(), strict=True) if _changed(line)]
    if not changed:
        return table
    mask = np.zeros(table.num_rows, dtype=bool)
    mask[changed] = True
    texts = lines.take(changed).to_pylist()
    for column, field in fields.items():
        found = pa.array([member_at(text, field) for text in texts], pa.large_string())
        table = table.append_column(
            f"_exact_{column}", pc.replace_with_mask(pa.nulls(table.num_rows, pa.large_string()), mask, found)
        )
    return table


def _may_change(lines: pa.Array) -> pa.Array:
    """Which lines hold a long decimal that a double may change, vectorized. RE2 is fast for a pattern
    that starts with a literal: two such passes pick the lines that may hold a long decimal ('.' then
    8 digits, and on each line's bytes reversed, 9 digits before a '.'), the exact patterns run on
    those alone, and a line whose one long number is a decimal that reads back the same from a
    double (a float printed with its 17 digits, as Python's ``time.time()``) is left out."""
    maybe = pc.or_(
        pc.match_substring_regex(lines, r"\.[0-9]{8}"),
        pc.match_substring_regex(pc.binary_reverse(lines.cast(pa.large_binary())), r"\.[0-9]{9}"),
    )
    if not pc.any(maybe).as_py():
        return maybe
    some = lines.filter(maybe)
    decimals, runs = pc.count_substring_regex(some, _LONG_NUMBER), pc.count_substring_regex(some, _RUN)
    first = pc.struct_field(pc.extract_regex(some, f"(?P<n>{_RUN})"), "n")
    number = pc.if_else(pc.match_substring_regex(first, f"^{_NUMBER.pattern}$"), first, None)  # the cast refuses 1.2.3
    kept = pc.equal(pc.cast(pc.cast(number, pa.float64()), pa.string()), number)  # shortest digits, as repr
    alone = pc.and_(pc.equal(decimals, 1), pc.equal(runs, 1))
    changes = pc.and_(pc.greater(decimals, 0), pc.invert(pc.fill_null(pc.and_(alone, kept), False)))
    return pc.replace_with_mask(maybe, maybe, changes)


def _changed(line: str) -> bool:
    """Whether a number of ``line`` reads back otherwise from a double (written with its shortest digits)."""
    return any(repr(float(n)) != n and Decimal(n) != Decimal(repr(float(n)))
               for n in _NUMBER.findall(line) if len(n) > 16)


def member_at(text: str, source: str) -> str | None:
    """``member`` for a source field, or for a JSON path of names (``$.payload.after``) step by step."""
    if not source.startswith("$"):
        return member(text, source)
    for name, quoted, index in _STEP.findall(source):
        found = None if index else member(text, name or quoted)  # by name only: [0] reads as ever
        if found is None:
            return None
        text = found
    return text


def member(text: str, name: str) -> str | None:
    """The text of the first member ``name`` of the JSON object ``text``, as written; None when it is
    absent, a string (whose value is read exactly anyway) or ``text`` is no JSON object."""
    try:
        at = _SPACE.match(text, 0).end()  # type: ignore[union-attr]
        if text[at] != "{":
            return None
        at += 1
        while True:
            at = _SPACE.match(text, at).end()  # type: ignore[union-attr]
            if text[at] != '"':
                return None
            key, at = scanstring(text, at + 1)
            at = _SPACE.match(text, at).end()  # type: ignore[union-attr]
            if text[at] != ":":
                return None
            start = _SPACE.match(text, at + 1).end()  # type: ignore[union-attr]
            end = _DECODER.raw_decode(text, start)[1]
            if key == name:
                return None if text[start] == '"' else text[start:end]
            at = _SPACE.match(text, end).end()  # type: ignore[union-attr]
            if text[at] != ",":
                return None
            at += 1
    except (ValueError, IndexError):  # not JSON: the line is quarantined as malformed anyway
        return None
