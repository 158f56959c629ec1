"""The SQL of the diff: column comparison expressions and the one-pass aggregate over the join.

Everything here builds SQL text from validated, quoted identifiers; ``checks.diff`` runs it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from lake.sql import is_numeric, quote

from checks.errors import CheckInputError

Tolerance = tuple[float, float]  # (absolute, relative)
FLOAT_TOLERANCE: Tolerance = (0.0, 1e-9)
FLOATS = ("FLOAT", "DOUBLE", "REAL")
ZONED = "TIMESTAMP WITH TIME ZONE"
MAX_MASK_COLUMNS = 62  # the per-row change mask is a BIGINT
#: change patterns kept, the most common first: columns changing independently make one per changed row
MAX_PATTERNS = 50


@dataclass(frozen=True)
class Compared:
    """One non-key column present on both sides, and how it is compared."""

    name: str
    live_type: str
    rebuilt_type: str
    numeric: bool
    tolerance: Tolerance | None
    #: the types differ only in the order of struct fields, which DuckDB matches by name
    field_order: bool = False

    @property
    def retyped(self) -> bool:
        return self.live_type != self.rebuilt_type

    @property
    def times(self) -> bool:
        """Both sides are points in time (with or without a zone): compared as instants in UTC."""
        return {self.live_type, self.rebuilt_type} <= {"TIMESTAMP", ZONED}


def parse_tolerance(items: Sequence[str]) -> dict[str, Tolerance]:
    """``["total=0.01", "paid=0.5%"]`` -> ``{"total": (0.01, 0.0), "paid": (0.0, 0.005)}``."""
    result: dict[str, Tolerance] = {}
    for item in items:
        column, sep, value = item.partition("=")
        column = column.strip()
        try:
            if not sep or not column:
                raise ValueError(item)
            number = float(value[:-1]) / 100 if value.endswith("%") else float(value)
            if not math.isfinite(number) or number < 0:
                raise ValueError(item)
        except ValueError:
            raise CheckInputError(
                f"tolerance {item!r} is not COL=ABS or COL=REL% with a number >= 0 (e.g. total=0.01 or total=0.5%)",
                tolerance=item,
            ) from None
        if column in result:
            raise CheckInputError(f"tolerance for {column!r} is given twice", tolerance=item)
        result[column] = (0.0, number) if value.endswith("%") else (number, 0.0)
    return result


def _check_tolerance(tolerance: dict[str, Tolerance]) -> None:
    """(abs, rel) pairs of finite numbers >= 0 (NaN and inf are no SQL literals; a negative one means 0)."""
    if not isinstance(tolerance, dict):
        raise CheckInputError(f"tolerance must be {{column: (absolute, relative)}}, e.g. {{'total': (0.01, 0)}}, not "
                              f"{tolerance!r}", tolerance=repr(tolerance))
    for column, pair in tolerance.items():
        ok = isinstance(pair, tuple | list) and len(pair) == 2 and all(
            isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 for v in pair)
        if not ok:
            raise CheckInputError(f"tolerance for {column!r} must be (absolute, relative), two numbers >= 0, "
                                  f"not {pair!r}", column=column)


def compared_columns(live: dict[str, str], rebuilt: dict[str, str], key: Sequence[str],
                     tolerance: dict[str, Tolerance], field_order: Collection[str] = ()) -> list[Compared]:
    """Non-key columns on both sides; floats get a tiny default relative tolerance. ``field_order``:
    columns whose types differ only in the order of struct fields."""
    _check_tolerance(tolerance)
    unknown = set(tolerance) - (set(live) & set(rebuilt))
    if unknown:
        raise CheckInputError(f"tolerance names columns not in both views: {sorted(unknown)}", columns=sorted(unknown))
    out = []
    for name, live_type in live.items():
        if name in key or name not in rebuilt:
            continue
        rebuilt_type = rebuilt[name]
        numeric = is_numeric(live_type) and is_numeric(rebuilt_type)
        tol = tolerance.get(name)
        if tol is None and numeric and (live_type.upper() in FLOATS or rebuilt_type.upper() in FLOATS):
            tol = FLOAT_TOLERANCE
        out.append(Compared(name, live_type, rebuilt_type, numeric, tol if numeric else None, name in field_order))
    not_numbers = {c.name: c.live_type for c in out if c.name in tolerance and not c.numeric}
    if not_numbers:  # it would be ignored: every difference there would still count
        raise CheckInputError(f"tolerance is for number columns; {not_numbers} are not (their values either match "
                              "or differ)", columns=sorted(not_numbers))
    return out


def changed_expr(c: Compared) -> str:
    """TRUE when the column differs between ``l`` and ``r`` (NULL vs value is a change)."""
    lc, rc = f"l.{quote(c.name)}", f"r.{quote(c.name)}"
    if c.numeric and c.tolerance is not None:
        absolute, relative = c.tolerance
        lf, rf = f"CAST({lc} AS DOUBLE)", f"CAST({rc} AS DOUBLE)"
        d, scale = f"abs({rf} - {lf})", f"greatest(abs({lf}), abs({rf}))"
        # equal is no change, also inf = inf and NaN = NaN (DuckDB's); unequal with a non-finite side is
        # one (inf - inf is NaN, which DuckDB orders above every number; NaN against 5 gives a NaN scale)
        return (f"CASE WHEN {lc} IS NULL AND {rc} IS NULL THEN false WHEN {lc} IS NULL OR {rc} IS NULL THEN true "
                f"WHEN {lf} = {rf} THEN false WHEN NOT (isfinite({lf}) AND isfinite({rf})) THEN true "
                f"ELSE {d} > greatest({float(absolute)!r}, {float(relative)!r} * {scale}) END")
    if c.retyped and c.numeric:  # DuckDB's own comparison is exact (BIGINT vs HUGEINT); a DOUBLE holds 53 bits
        return f"{lc} IS DISTINCT FROM {rc}"
    if c.retyped and c.times:  # a live view made elsewhere often keeps UTC times without a zone
        return f"{_naive_utc(lc, c.live_type)} IS DISTINCT FROM {_naive_utc(rc, c.rebuilt_type)}"
    if c.retyped and not c.field_order:  # as text, {'n': 5, 'last': 'x'} differed from {'last': 'x', 'n': 5}
        return f"CAST({lc} AS VARCHAR) IS DISTINCT FROM CAST({rc} AS VARCHAR)"
    return f"{lc} IS DISTINCT FROM {rc}"


def _drift_expr(c: Compared) -> str:
    """rebuilt - live as a DOUBLE; 0 for equal floats, also infinities (inf - inf is NaN). Decimals of up
    to 18 digits subtract as decimals: summed as DOUBLEs, 4,950 changed totals of a DECIMAL(18,2) column
    gave -402738.119999977 for -402738.12 (their sum, a DECIMAL(38,s), cannot overflow)."""
    if all(_small_decimal(t) for t in (c.live_type, c.rebuilt_type)):
        return f"r.{quote(c.name)} - l.{quote(c.name)}"
    lf, rf = f"CAST(l.{quote(c.name)} AS DOUBLE)", f"CAST(r.{quote(c.name)} AS DOUBLE)"
    if c.live_type.upper() in FLOATS or c.rebuilt_type.upper() in FLOATS:
        return f"CASE WHEN {rf} = {lf} THEN 0 ELSE {rf} - {lf} END"
    return f"{rf} - {lf}"


def _small_decimal(sql_type: str) -> bool:
    found = re.fullmatch(r"DECIMAL\((\d+),\s*\d+\)", sql_type.upper())
    return found is not None and int(found.group(1)) <= 18


def _naive_utc(column: str, sql_type: str) -> str:
    """A time as UTC without a zone: a zoned one converted, one without a zone taken as UTC."""
    return f"timezone('UTC', {column})" if sql_type == ZONED else column


def source_sql(table: str, scope: str | None, scope_columns: Sequence[str]) -> str:
    """The rows of ``table``; with a scope, only those matching the scope table (NULL-safe)."""
    if scope is None:
        return f"SELECT *, true AS __present FROM {quote(table)}"
    if not scope_columns:
        raise CheckInputError("a scope table needs scope_columns", scope=scope)
    terms = " AND ".join(f"s.{quote(c)} IS NOT DISTINCT FROM t.{quote(c)}" for c in scope_columns)
    return (f"SELECT t.*, true AS __present FROM {quote(table)} t "
            f"WHERE EXISTS (SELECT 1 FROM {quote(scope)} s WHERE {terms})")


def field(name: str) -> str:
    """A struct field name as a SQL string literal."""
    return "'" + name.replace("'", "''") + "'"


def key_value(key: Sequence[str]) -> str:
    """The key as one value: a struct of the key columns (never NULL, so ``arg_min`` keeps NULL keys)."""
    return "{" + ", ".join(f"{field(k)}: {quote(k)}" for k in key) + "}"


def main_query(live_sql: str, rebuilt_sql: str, key: Sequence[str], compared: Sequence[Compared],
               samples: int, max_keys: int, limited: Collection[str] = ()) -> str:
    """One pass over the full outer join: counts, per-column flags and drift, sample keys, differing keys.

    Result columns: matched, only_in_live, only_in_rebuilt, changed_rows, masks (``patterns``: how many there
    are, ``rows``: the rows they count, ``top``: the ``MAX_PATTERNS`` most common), sample keys (only live, only rebuilt, changed), differing keys, then per
    compared column its change count (and for numbers the sum of rebuilt - live and the max of |rebuilt - live|),
    and last the changed rows with a change in a column not in ``limited`` (the columns with a limit of their own).
    """
    # NULL-safe: a NULL key on both sides is one key (compared, or counted as a duplicate), not two
    on = " AND ".join(f"l.{quote(k)} IS NOT DISTINCT FROM r.{quote(k)}" for k in key)
    keys = ", ".join(f"coalesce(l.{quote(k)}, r.{quote(k)}) AS {quote(k)}" for k in key)
    flags = "".join(f", ({changed_expr(c)}) AND l.__present AND r.__present AS __d{i}" for i, c in enumerate(compared))
    drift = "".join(f", {_drift_expr(c)} AS __x{i}" for i, c in enumerate(compared) if c.numeric)
    masked = len(compared[:MAX_MASK_COLUMNS])
    mask = " + ".join(f"CAST(__d{i} AS BIGINT) * {1 << i}" for i in range(masked)) or "0"
    changed = "__mask <> 0" + "".join(f" OR __d{i}" for i in range(masked, len(compared)))
    inner = (
        f"SELECT {keys}, l.__present IS NOT NULL AS in_live, r.__present IS NOT NULL AS in_rebuilt{flags}{drift} "
        f"FROM ({live_sql}) l FULL OUTER JOIN ({rebuilt_sql}) r ON {on}"
    )
    kv, h = key_value(key), "hash(" + ", ".join(quote(k) for k in key) + ")"
    only_live, only_rebuilt = "in_live AND NOT in_rebuilt", "in_rebuilt AND NOT in_live"
    aggs = [
        "count(*) FILTER (WHERE in_live AND in_rebuilt)",
        f"count(*) FILTER (WHERE {only_live})",
        f"count(*) FILTER (WHERE {only_rebuilt})",
        f"count(*) FILTER (WHERE {changed})",
        "histogram(__mask) FILTER (WHERE __mask <> 0)",
        f"arg_min({kv}, {h}, {max(1, int(samples))}) FILTER (WHERE {only_live})",
        f"arg_min({kv}, {h}, {max(1, int(samples))}) FILTER (WHERE {only_rebuilt})",
        f"arg_min({kv}, {h}, {max(1, int(samples))}) FILTER (WHERE {changed})",
        f"arg_min({kv}, {h}, {max(1, int(max_keys))}) FILTER (WHERE {changed} OR NOT in_live OR NOT in_rebuilt)",
    ]
    for i, c in enumerate(compared):
        aggs.append(f"count(*) FILTER (WHERE __d{i})")
        if c.numeric:
            aggs.append(f"sum(__x{i}), max(abs(__x{i}))")
    # exact over every column: the masks hold only the first MAX_MASK_COLUMNS
    elsewhere = " OR ".join(f"__d{i}" for i, c in enumerate(compared) if c.name not in limited) or "false"
    aggs.append(f"count(*) FILTER (WHERE {elsewhere})")
    named = ", ".join(f"{a} AS __a{i}" for i, a in enumerate(aggs))
    # a million patterns left DuckDB as a map, then a dict, a JSON object and an HTML table of a million entries
    top = (f"list_slice(list_reverse_sort(list_transform(map_entries(__a4), lambda e: {{'n': e.value, 'neg': -e.key}})), "
           f"1, {MAX_PATTERNS})")  # the most common first, ties by mask
    masks = (f"{{'patterns': coalesce(cardinality(__a4), 0), 'rows': coalesce(list_sum(map_values(__a4)), 0), "
             f"'top': coalesce({top}, [])}}")  # no changed row: no map
    return f"SELECT * REPLACE ({masks} AS __a4) FROM (SELECT {named} FROM (SELECT *, {mask} AS __mask FROM ({inner})))"


def rows_query(source_sql: str, key: Sequence[str], keys_table: str, null_safe: bool = False) -> str:
    """The rows of ``source_sql`` whose key is in ``keys_table`` (a few sample keys).

    ``null_safe`` matches NULL key values too; only then, because ``IS NOT DISTINCT FROM`` keeps
    DuckDB from pushing the few keys into the scan (150 ms instead of 3 ms on 10M rows)."""
    match = "IS NOT DISTINCT FROM" if null_safe else "="
    on = " AND ".join(f"t.{quote(k)} {match} s.{quote(k)}" for k in key)
    return f"SELECT t.* EXCLUDE (__present) FROM ({source_sql}) t SEMI JOIN {quote(keys_table)} s ON {on}"


def changed_columns_query(live_sql: str, rebuilt_sql: str, key: Sequence[str], compared: Sequence[Compared],
                          keys_table: str) -> str:
    """Per key of ``keys_table`` (a few changed sample keys): the names of its changed columns, by
    :func:`changed_expr`, so a sample shows exactly the changes the counts counted."""
    on = " AND ".join(f"l.{quote(k)} IS NOT DISTINCT FROM r.{quote(k)}" for k in key)
    match = " AND ".join(f"l.{quote(k)} IS NOT DISTINCT FROM s.{quote(k)}" for k in key)
    names = ", ".join(f"CASE WHEN {changed_expr(c)} THEN {field(c.name)} END" for c in compared) or "NULL"
    keys = ", ".join(f"l.{quote(k)}" for k in key)
    return (f"SELECT {keys}, list_filter([{names}], lambda x: x IS NOT NULL) FROM ({live_sql}) l JOIN ({rebuilt_sql}) r "
            f"ON {on} SEMI JOIN {quote(keys_table)} s ON {match}")


def duplicates_query(source_sql: str, key: Sequence[str], samples: int) -> str:
    """Keys appearing more than once in ``source_sql``: how many, and a sample with their counts."""
    keys = ", ".join(quote(k) for k in key)
    kstruct = "{" + ", ".join(f"{field(k)}: {quote(k)}" for k in key) + ", '__rows': n}"
    return (f"SELECT count(*), arg_min({kstruct}, hash({keys}), {samples}) FROM "
            f"(SELECT {keys}, count(*) AS n FROM ({source_sql}) GROUP BY ALL HAVING count(*) > 1)")
