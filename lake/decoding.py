"""How a payload value decodes to its declared type, as a small code per event and field.

``from_json`` reads a value that does not convert as NULL, rounds a number to fit an integer or a
DECIMAL, reads JSON ``true`` as 1 where a number is declared and a number as ``true`` where a BOOLEAN
is: all without a word. The code says which happened, so a run can count every event's exactly.
Compaction stores it beside each decoded field (``lake.schema.decoding_column``), so a run counts the compacted
files' codes without parsing a payload; it computes the others' as they are read.
"""

from __future__ import annotations

import duckdb


#: a value given (present, not JSON null) that reads as NULL, as another kind of value, or rounded to fit
LOST, COERCED, ROUNDED = 1, 2, 3
#: the declarable types a value is rounded to fit (12.34 reads as 12 when declared INTEGER)
EXACT_NUMBERS = ("tinyint", "smallint", "integer", "bigint", "hugeint", "utinyint", "usmallint", "uinteger",
                 "ubigint", "uhugeint", "decimal")
NUMBERS = (*EXACT_NUMBERS, "float", "double")


def decoding_code(raw: str, value: str, type_: str) -> str:
    """SQL for the code of a JSON value ``raw`` (as ``json_extract`` gives it) that decoded to ``value``. The
    value's JSON text is looked at, not parsed again: a JSON number starts with a digit or ``-``."""
    kind = duckdb.sqltype(type_).id
    number = f"(ascii({raw}) BETWEEN 48 AND 57 OR ascii({raw}) = 45)"
    coerced = ("false" if kind not in (*NUMBERS, "boolean") else
               f"{raw} IN ('true', 'false')" if kind in NUMBERS else number)
    # a number, or text that holds one ("12.50"), read as another number
    rounded = f"TRY_CAST(trim({raw}, '\"') AS DOUBLE) <> CAST({value} AS DOUBLE)" if kind in EXACT_NUMBERS else "false"
    return (f"CAST(CASE WHEN {raw} IS NULL OR {raw} = 'null' THEN NULL WHEN {value} IS NULL THEN {LOST} "
            f"WHEN {coerced} THEN {COERCED} WHEN {rounded} THEN {ROUNDED} ELSE 0 END AS UTINYINT)")
