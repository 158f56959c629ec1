"""Quoting for the SQL this package writes: identifiers and literals are never pasted raw."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime

NUMERIC = re.compile(r"^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|UHUGEINT|"
                     r"FLOAT|DOUBLE|REAL|DECIMAL.*|NUMERIC.*)$")


def is_numeric(sql_type: str) -> bool:
    """Whether a DuckDB type name (``DECIMAL(18,2)``, ``BIGINT``, ...) is a number's."""
    return bool(NUMERIC.match(sql_type.upper()))


def quote(identifier: str) -> str:
    """A double-quoted SQL identifier; embedded quotes are doubled, NUL is refused."""
    if "\x00" in identifier:
        raise ValueError(f"identifier {identifier!r} contains NUL")
    return '"' + identifier.replace('"', '""') + '"'


def json_pointer(field: str) -> str:
    """The JSON path of a top-level object member named ``field``, as a JSON pointer (``/a.b``): a
    ``$.`` path reads ``a.b`` as member ``b`` of ``a``, ``x[0]`` as an array's item, and ``*`` (quoted
    too) as every member."""
    return "/" + field.replace("~", "~0").replace("/", "~1")


def literal(value: object) -> str:
    """A SQL literal for strings, numbers, booleans, None, datetimes and lists of them."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        return f"TIMESTAMPTZ {literal(value.isoformat())}"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    quoted = "'" + str(value).replace("'", "''") + "'"
    # a literal cannot hold NUL, and keys that versions before 2026-11-25 archived may: spelt as chr(0)
    return "(" + quoted.replace("\x00", "' || chr(0) || '") + ")" if "\x00" in quoted else quoted
