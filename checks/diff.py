"""Compare a rebuilt view with the live one, inside DuckDB: one pass over a full outer join.

    result = compare(con, live="order_summary", rebuilt="order_summary__shadow", key=["order_id"],
                     tolerance={"total": (0.01, 0.0)})
    result.changed_rows, result.changed_by_column, result.samples["changed"]

Neither table is pulled into Python: one aggregate query counts keys only in live / only in
rebuilt, rows changed per column (``IS DISTINCT FROM``, or a tolerance for numbers), the numeric
drift, and keeps bounded samples (``arg_min(row, hash(key), n)``: deterministic, no second join).
Duplicate keys are looked for with a GROUP BY only when the counts do not reconcile.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import duckdb
import pyarrow as pa

from lake.sql import quote

from checks import diffsql
from checks.diffsql import Tolerance, parse_tolerance
from checks.errors import CheckInputError
from checks.html import esc, pairs, table

__all__ = ["ColumnDiff", "DiffResult", "Tolerance", "compare", "parse_tolerance"]


@dataclass(frozen=True)
class ColumnDiff:
    """One compared column: its types, how many matched rows differ in it, and the numeric drift."""

    name: str
    live_type: str
    rebuilt_type: str
    changed: int
    tolerance: Tolerance | None = None
    sum_diff: float | None = None
    mean_diff: float | None = None
    max_abs_diff: float | None = None


#: the characters of an added column's smallest and largest value shown (a document column's are megabytes)
ADDED_CHARS = 200


@dataclass(frozen=True)
class DiffResult:
    """What differs between live and rebuilt (``verdict`` is ``identical`` or ``different``)."""

    live: str
    rebuilt: str
    key: tuple[str, ...]
    scope: str | None
    rows_live: int
    rows_rebuilt: int
    rows_matched: int
    only_in_live: int
    only_in_rebuilt: int
    changed_rows: int
    changed_by_column: dict[str, int]
    columns: tuple[ColumnDiff, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]
    retyped: dict[str, tuple[str, str]]
    duplicate_keys_live: int
    duplicate_keys_rebuilt: int
    change_patterns: dict[str, int]
    samples: dict[str, list[dict[str, Any]]]
    differing_keys: tuple[dict[str, Any], ...]
    seconds: float
    notes: tuple[str, ...] = field(default=())
    #: the columns with a limit of their own that ``compare`` was given, and the changed rows with a
    #: change in another column (the verdict's ``max_changed_fraction`` judges those)
    limited: tuple[str, ...] = ()
    changed_elsewhere: int = 0
    #: combinations of changed columns found; ``change_patterns`` keeps the most common ``diffsql.MAX_PATTERNS``
    change_pattern_count: int = 0
    #: per added column, what rebuilt holds in it (no live value to compare it with): its type, values,
    #: NULLs, distinct values (approximate) and smallest and largest value as text
    added_values: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def differences(self) -> int:
        """Rows missing, extra or changed, plus duplicate keys and schema changes."""
        return (self.only_in_live + self.only_in_rebuilt + self.changed_rows + self.duplicate_keys_live
                + self.duplicate_keys_rebuilt + len(self.added) + len(self.removed) + len(self.retyped))

    @property
    def verdict(self) -> str:
        return "identical" if self.differences == 0 else "different"

    @property
    def changed_fraction(self) -> float:
        return self.changed_rows / max(self.rows_matched, 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the counts first, then the columns, samples and differing keys."""
        data = asdict(self)
        data["key"] = list(self.key)
        data["columns"] = [asdict(c) for c in self.columns]
        data["retyped"] = {k: list(v) for k, v in self.retyped.items()}
        data["differing_keys"] = list(self.differing_keys)
        return {"verdict": self.verdict, "changed_fraction": self.changed_fraction, **data}

    def retyped_columns(self) -> list[str]:
        """Each retyped column with both its types: ``n (INTEGER in live, VARCHAR rebuilt)``."""
        return [f"{c} ({live} in live, {rebuilt} rebuilt)" for c, (live, rebuilt) in sorted(self.retyped.items())]

    def summary(self) -> str:
        return (f"{self.verdict}: live {self.rows_live:,} rows, rebuilt {self.rows_rebuilt:,}; "
                f"{self.only_in_live:,} only in live, {self.only_in_rebuilt:,} only in rebuilt, "
                f"{self.changed_rows:,} changed")

    def _repr_html_(self) -> str:
        counts = {k: getattr(self, k) for k in ("rows_live", "rows_rebuilt", "only_in_live", "only_in_rebuilt",
                                               "changed_rows", "duplicate_keys_live", "duplicate_keys_rebuilt")}
        return (f"<b>Diff</b> {esc(self.live)} (live) vs {esc(self.rebuilt)} (rebuilt): {esc(self.summary())}"
                + pairs(counts) + table([asdict(c) for c in self.columns]))


def describe(con: duckdb.DuckDBPyConnection, table_name: str) -> dict[str, str]:
    """Column name -> DuckDB type of a table or view."""
    try:
        return {r[0]: r[1] for r in con.sql(f"DESCRIBE {quote(table_name)}").fetchall()}
    except duckdb.CatalogException as exc:
        raise CheckInputError(f"no table or view {table_name!r} to compare: {exc}", table=table_name) from exc


def _field_order_only(con: duckdb.DuckDBPyConnection, live: str, live_types: dict[str, str], rebuilt: str,
                      rebuilt_types: dict[str, str]) -> set[str]:
    """Columns whose types differ only in the order of struct fields (also inside lists and maps)."""
    names = [n for n, t in live_types.items() if n in rebuilt_types and t != rebuilt_types[n] and "STRUCT" in t]
    if not names:
        return set()
    columns = ", ".join(quote(n) for n in names)
    schemas = [con.sql(f"SELECT {columns} FROM {quote(t)} LIMIT 0").to_arrow_table().schema for t in (live, rebuilt)]
    return {n for n in names if _sorted_fields(schemas[0].field(n).type) == _sorted_fields(schemas[1].field(n).type)}


def _sorted_fields(arrow_type: pa.DataType) -> pa.DataType:
    """``arrow_type`` with the fields of its structs sorted by name."""
    if pa.types.is_struct(arrow_type):
        fields = sorted((arrow_type.field(i) for i in range(arrow_type.num_fields)), key=lambda f: f.name)
        return pa.struct([f.with_type(_sorted_fields(f.type)) for f in fields])
    if pa.types.is_map(arrow_type):
        return pa.map_(_sorted_fields(arrow_type.key_type), _sorted_fields(arrow_type.item_type))
    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return pa.list_(_sorted_fields(arrow_type.value_type))
    return arrow_type


def compare(
    con: duckdb.DuckDBPyConnection,
    live: str,
    rebuilt: str,
    key: Sequence[str],
    tolerance: dict[str, Tolerance] | None = None,
    scope: str | None = None,
    scope_columns: Sequence[str] = (),
    samples: int = 20,
    max_keys: int = 1000,
    names: tuple[str, str] | None = None,
    limited: Collection[str] = (),
) -> DiffResult:
    """Compare ``rebuilt`` with ``live`` (tables or views on ``con``) by ``key``.

    ``scope`` names a table of scope columns: only live rows matching it are compared (a partial
    shadow). ``tolerance`` maps numeric columns to ``(absolute, relative)``; NULL vs value is
    always a change. At most ``max_keys`` differing keys are kept, for lineage and plots.
    ``names``: what to call live and rebuilt in the result and errors (views on ``con`` of tables
    kept elsewhere); by default their names on ``con``.
    ``limited``: the columns the verdict gives a limit of their own (``thresholds["columns"]``);
    ``changed_elsewhere`` counts the changed rows with a change in any other column.
    """
    started = time.monotonic()
    key = tuple(key)
    shown_live, shown_rebuilt = names or (live, rebuilt)
    live_types, rebuilt_types = describe(con, live), describe(con, rebuilt)
    _check_key(key, shown_live, live_types, shown_rebuilt, rebuilt_types)
    _check_key_types(con, key, live, live_types, rebuilt, rebuilt_types)
    compared = diffsql.compared_columns(live_types, rebuilt_types, key, tolerance or {},
                                        _field_order_only(con, live, live_types, rebuilt, rebuilt_types))
    live_sql = diffsql.source_sql(live, scope, scope_columns)
    rebuilt_sql = diffsql.source_sql(rebuilt, None, ())
    row = _one(con, diffsql.main_query(live_sql, rebuilt_sql, key, compared, samples, max_keys, limited))
    sample_keys = [list(_unique(_keys(row[i]))) for i in (5, 6, 7)]  # a duplicated key once
    rows_live = int(_one(con, f"SELECT count(*) FROM ({live_sql})")[0])
    rows_rebuilt = int(_one(con, f"SELECT count(*) FROM {quote(rebuilt)}")[0])
    counts = {"matched": int(row[0]), "only_live": int(row[1]), "only_rebuilt": int(row[2])}
    differing = _keys(row[8])
    exact = counts["only_live"] + counts["only_rebuilt"] + int(row[3]) <= max_keys
    # a key duplicated on a side that also has it changes the join's counts; a key duplicated only
    # on one side shows twice in the differing keys, which hold every differing row up to max_keys
    suspect = (counts["matched"] != rows_live - counts["only_live"]
               or counts["matched"] != rows_rebuilt - counts["only_rebuilt"]
               or (exact and len(_unique(differing)) != len(differing)))
    dups_live, dups_rebuilt = _duplicates(con, live_sql, rebuilt_sql, key, samples, suspect)
    columns, changed_by_column = _columns(compared, row, counts["matched"])
    live_rows = _rows(con, live_sql, key, sample_keys[0] + sample_keys[2])
    rebuilt_rows = _rows(con, rebuilt_sql, key, sample_keys[1] + sample_keys[2])
    changed_columns = _changed_columns(con, live_sql, rebuilt_sql, key, compared, sample_keys[2])
    samples_out = {
        "only_in_live": [live_rows[_kt(k)] for k in sample_keys[0] if _kt(k) in live_rows],
        "only_in_rebuilt": [rebuilt_rows[_kt(k)] for k in sample_keys[1] if _kt(k) in rebuilt_rows],
        "changed": [_changed_sample(k, live_rows.get(_kt(k)), rebuilt_rows.get(_kt(k)), changed_columns.get(_kt(k), []))
                    for k in sample_keys[2]],
        "duplicates_live": dups_live[1],
        "duplicates_rebuilt": dups_rebuilt[1],
    }
    return DiffResult(
        live=shown_live, rebuilt=shown_rebuilt, key=key, scope=scope, rows_live=rows_live, rows_rebuilt=rows_rebuilt,
        rows_matched=counts["matched"], only_in_live=counts["only_live"], only_in_rebuilt=counts["only_rebuilt"],
        changed_rows=int(row[3]), changed_by_column=changed_by_column, columns=columns,
        added=tuple(c for c in rebuilt_types if c not in live_types),
        removed=tuple(c for c in live_types if c not in rebuilt_types),
        retyped={c.name: (c.live_type, c.rebuilt_type) for c in compared if c.retyped},
        duplicate_keys_live=dups_live[0], duplicate_keys_rebuilt=dups_rebuilt[0],
        change_patterns=_patterns(row[4]["top"], compared), change_pattern_count=int(row[4]["patterns"]),
        samples=samples_out, differing_keys=_unique(differing),
        seconds=round(time.monotonic() - started, 3),
        notes=_notes(compared, suspect, exact, max_keys, counts["only_live"] + counts["only_rebuilt"] + int(row[3]), row[4]),
        limited=tuple(limited), changed_elsewhere=int(row[-1]),
        added_values=_added_values(con, rebuilt, {c: t for c, t in rebuilt_types.items() if c not in live_types}),
    )


def _added_values(con: duckdb.DuckDBPyConnection, rebuilt: str, added: dict[str, str]) -> dict[str, dict[str, Any]]:
    """What rebuilt holds in each added column, in one pass (a new column all NULL, from a join that matched
    nothing, passed as 'added' alone); the smallest and largest value as text, cut to ``ADDED_CHARS``."""
    if not added:
        return {}
    parts = [f"count({q}), count(*) - count({q}), approx_count_distinct({q}), left(min({q})::VARCHAR, {ADDED_CHARS}), "
             f"left(max({q})::VARCHAR, {ADDED_CHARS})" for q in map(quote, added)]
    row = _one(con, f"SELECT {', '.join(parts)} FROM {quote(rebuilt)}")
    names = ("values", "nulls", "distinct", "min", "max")
    return {c: {"type": t, **dict(zip(names, row[5 * i:5 * i + 5], strict=True))} for i, (c, t) in enumerate(added.items())}


def _check_key(key: tuple[str, ...], live: str, live_types: dict[str, str], rebuilt: str,
               rebuilt_types: dict[str, str]) -> None:
    if not key:
        raise CheckInputError("compare needs at least one key column", live=live, rebuilt=rebuilt)
    for name, types in ((live, live_types), (rebuilt, rebuilt_types)):
        missing = [k for k in key if k not in types]
        if missing:
            hint = (f"; compare with a view of it that has it (CREATE VIEW ... AS SELECT <its column> AS {missing[0]}, "
                    "...) given as --live" if name == live else "")
            raise CheckInputError(f"{name} has no key column {missing} (it has {list(types)}){hint}", table=name)


def _check_key_types(con: duckdb.DuckDBPyConnection, key: tuple[str, ...], live: str, live_types: dict[str, str],
                     rebuilt: str, rebuilt_types: dict[str, str]) -> None:
    """Key columns typed differently must still be comparable (INTEGER and BIGINT are; text and numbers not)."""
    for k in key:
        if live_types[k] == rebuilt_types[k]:
            continue
        try:
            con.sql(f"SELECT coalesce(l.{quote(k)}, r.{quote(k)}) FROM {quote(live)} l JOIN {quote(rebuilt)} r "
                    f"ON l.{quote(k)} IS NOT DISTINCT FROM r.{quote(k)} LIMIT 0").fetchall()
        except duckdb.Error:
            raise CheckInputError(
                f"key column {k!r} is {live_types[k]} in live and {rebuilt_types[k]} in rebuilt, so their rows "
                f"cannot be matched; compare with a view of live that casts it (CREATE VIEW ... AS "
                f"SELECT CAST({k} AS {rebuilt_types[k]}) AS {k}, ...) given as --live, or have the projection "
                f"return {live_types[k]}", table=live, column=k) from None


def _one(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[Any, ...]:
    return con.sql(sql).fetchall()[0]


def _duplicates(con: duckdb.DuckDBPyConnection, live_sql: str, rebuilt_sql: str, key: tuple[str, ...],
                samples: int, suspect: bool) -> tuple[tuple[int, list[Any]], tuple[int, list[Any]]]:
    """Duplicate keys per side, looked for only when the join's counts do not reconcile."""
    if not suspect:
        return (0, []), (0, [])
    found = []
    for sql in (live_sql, rebuilt_sql):
        n, sample = _one(con, diffsql.duplicates_query(sql, key, samples))
        found.append((int(n), [{("rows" if k == "__rows" else k): v for k, v in s.items()} for s in sample or []]))
    return found[0], found[1]


def _columns(compared: Sequence[diffsql.Compared], row: tuple[Any, ...],
             matched: int) -> tuple[tuple[ColumnDiff, ...], dict[str, int]]:
    out, by_column, i = [], {}, 9
    for c in compared:
        changed = int(row[i])
        i += 1
        drift: dict[str, float | None] = {}
        if c.numeric:
            total, biggest = row[i], row[i + 1]
            i += 2
            drift = {"sum_diff": _num(total), "mean_diff": _num(total / matched if total is not None and matched else None),
                     "max_abs_diff": _num(biggest)}
        out.append(ColumnDiff(c.name, c.live_type, c.rebuilt_type, changed, c.tolerance, **drift))
        by_column[c.name] = changed
    return tuple(out), by_column


def _num(value: Any) -> float | None:
    return None if value is None else round(float(value), 9)


def _keys(values: list[Any] | None) -> list[dict[str, Any]]:
    """Sample keys as dicts (the query returns them as structs)."""
    return [dict(v) for v in values or []]


def _kt(k: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(k.values())


def _rows(con: duckdb.DuckDBPyConnection, source_sql: str, key: tuple[str, ...],
          keys: list[dict[str, Any]]) -> dict[tuple[Any, ...], dict[str, Any]]:
    """Full rows of a few sample keys, by key (a semi join against a small registered table)."""
    if not keys:
        return {}
    con.register("__diff_sample_keys", pa.Table.from_pylist(keys))
    try:
        nulls = any(v is None for k in keys for v in k.values())
        rel = con.sql(diffsql.rows_query(source_sql, key, "__diff_sample_keys", null_safe=nulls))
        names = rel.columns
        rows = [dict(zip(names, r, strict=True)) for r in rel.fetchall()]
    finally:
        con.unregister("__diff_sample_keys")
    return {tuple(r[k] for k in key): r for r in rows}


def _changed_columns(con: duckdb.DuckDBPyConnection, live_sql: str, rebuilt_sql: str, key: tuple[str, ...],
                     compared: Sequence[diffsql.Compared], keys: list[dict[str, Any]]) -> dict[tuple[Any, ...], list[str]]:
    """The changed columns of each changed sample key, decided by the same SQL as the counts (a Python
    comparison called DECIMAL 1.5000 and 1.50, or BOOLEAN true and VARCHAR 'true', a change)."""
    if not keys:
        return {}
    con.register("__diff_changed_keys", pa.Table.from_pylist(keys))
    try:
        rows = con.sql(diffsql.changed_columns_query(live_sql, rebuilt_sql, key, compared, "__diff_changed_keys")).fetchall()
    finally:
        con.unregister("__diff_changed_keys")
    return {tuple(r[:-1]): list(r[-1]) for r in rows}


def _changed_sample(k: dict[str, Any], live: dict[str, Any] | None, rebuilt: dict[str, Any] | None,
                    changed: list[str]) -> dict[str, Any]:
    """A changed row: its key and, per changed column, ``{"live": ..., "rebuilt": ...}``."""
    return {**k, "changes": {c: {"live": (live or {}).get(c), "rebuilt": (rebuilt or {}).get(c)} for c in changed}}


def _patterns(top: list[dict[str, int]], compared: Sequence[diffsql.Compared]) -> dict[str, int]:
    """Changed rows per combination of changed columns, e.g. ``{"items+total": 3}``, the most common first
    (``top``: their masks, negated, and counts)."""
    names = [c.name for c in compared[: diffsql.MAX_MASK_COLUMNS]]
    return {"+".join(n_ for i, n_ in enumerate(names) if -p["neg"] >> i & 1): int(p["n"]) for p in top}


def _notes(compared: Sequence[diffsql.Compared], suspect: bool, exact: bool, max_keys: int,
           differing: int, masks: dict[str, Any]) -> tuple[str, ...]:
    notes = []
    if masks["patterns"] > len(masks["top"]):
        shown = sum(p["n"] for p in masks["top"])
        notes.append(f"change patterns: the {len(masks['top']):,} most common of {masks['patterns']:,} combinations of "
                     f"changed columns are kept ({int(masks['rows']) - shown:,} changed rows are in the others); "
                     "changed_by_column counts every row")
    if not exact:
        notes.append(f"{differing:,} differing rows: differing_keys holds {max_keys:,} of their keys (the plot per "
                     "day counts those), so a --keys run made from them corrects only those: cut over the full run "
                     "instead, or check a --full run again after that patch; keys duplicated only on the side that "
                     "alone has them are not looked for (duplicates of matched keys are)")
    if len(compared) > diffsql.MAX_MASK_COLUMNS:
        notes.append(f"change patterns cover the first {diffsql.MAX_MASK_COLUMNS} columns only")
    if suspect:
        notes.append("counts did not reconcile: looked for duplicate keys")
    return tuple(notes)


def _unique(keys: list[dict[str, Any]]) -> tuple[dict[str, Any], ...]:
    seen: dict[tuple[Any, ...], dict[str, Any]] = {}
    for k in keys:
        seen.setdefault(tuple(k.values()), k)
    return tuple(seen.values())
