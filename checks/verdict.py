"""The verdict: pass or fail, with reasons, from the diff, the expectations and thresholds.

Thresholds come from ``Projection.thresholds`` and override :data:`DEFAULTS` key by key:

| key | default | meaning |
|---|---|---|
| ``max_changed_fraction`` | 0.0 | changed rows / matched rows, over columns without their own limit |
| ``columns`` | {} | per column: the largest fraction of matched rows that may differ in it |
| ``max_only_in_live`` | 0 | keys live has and the rebuild lacks |
| ``max_only_in_rebuilt`` | 0 | keys the rebuild has and live lacks |
| ``max_duplicate_keys`` | 0 | duplicate keys on either side |
| ``allow_schema_changes`` | False | columns added, removed or retyped |
| ``expectations`` | "fail" | a failed expectation fails the check ("warn": reported only) |
| ``row_count_tolerance`` | 0.1 | allowed relative difference of the row count against live |

The defaults say "identical to live, or explain it": loosen them per projection when live is
known to be wrong in a counted way (a fix being rolled out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from checks.diff import DiffResult
from checks.diffsql import MAX_MASK_COLUMNS
from checks.errors import CheckInputError
from checks.expect import ExpectationsResult
from checks.html import percent

__all__ = ["DEFAULTS", "Verdict", "decide", "shown", "thresholds_of"]

DEFAULTS: dict[str, Any] = {
    "max_changed_fraction": 0.0,
    "columns": {},
    "max_only_in_live": 0,
    "max_only_in_rebuilt": 0,
    "max_duplicate_keys": 0,
    "allow_schema_changes": False,
    "expectations": "fail",
    "row_count_tolerance": 0.1,
}


@dataclass(frozen=True)
class Verdict:
    """``pass`` or ``fail``; ``reasons`` says why a check failed (and notes when it passed)."""

    passed: bool
    reasons: tuple[str, ...]
    thresholds: dict[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fail"

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reasons": list(self.reasons), "notes": list(self.notes),
                "thresholds": self.thresholds}


#: thresholds given as fractions (of the matched rows, of live's rows): shown as percentages, as the reasons say them
FRACTIONS = ("max_changed_fraction", "row_count_tolerance")


def shown(thresholds: dict[str, Any]) -> dict[str, Any]:
    """``thresholds`` as the report shows them to people: fractions as percentages (0.1 as 10%), as every reason
    and the row count's expectation say them; per column ``paid: 5%``. The JSON keeps the fractions given."""
    out = {k: percent(v) if k in FRACTIONS and isinstance(v, int | float) else v for k, v in thresholds.items()}
    if "columns" in thresholds:
        out["columns"] = ", ".join(f"{c}: {percent(v)}" for c, v in thresholds["columns"].items()) or "none"
    return out


def thresholds_of(overrides: dict[str, Any] | None) -> dict[str, Any]:
    """:data:`DEFAULTS` with ``overrides`` applied; unknown keys are an error, not ignored."""
    overrides = dict(overrides or {})
    unknown = set(overrides) - set(DEFAULTS)
    if unknown:
        raise CheckInputError(f"unknown thresholds {sorted(unknown)}; known: {sorted(DEFAULTS)}", thresholds=sorted(unknown))
    if overrides.get("expectations", "fail") not in ("fail", "warn"):
        raise CheckInputError("threshold expectations must be 'fail' or 'warn'")
    return {**DEFAULTS, **overrides}


def decide(diff: DiffResult | None, expectations: ExpectationsResult | None,
           thresholds: dict[str, Any] | None = None, catch_up_from: int | None = None) -> Verdict:
    """Judge the diff (None when there is no live view) and the expectations against thresholds.

    ``catch_up_from``: the rebuild is a catch-up of live from that lake_version, so its changed, new
    and gone keys are the new events' effects by construction: they are noted, not judged (duplicate
    keys, schema changes and expectations still are)."""
    t = thresholds_of(thresholds)
    reasons: list[str] = []
    notes: list[str] = []
    if diff is None:
        notes.append("no live view to compare with: judged on expectations only")
    elif catch_up_from is not None:
        reasons += _diff_reasons(diff, t, counts=False)
        notes.append(f"a catch-up from lake_version {catch_up_from}: {diff.changed_rows:,} changed rows, "
                     f"{diff.only_in_rebuilt:,} new keys and {diff.only_in_live:,} keys gone are the effects of the "
                     "events archived since, so they are not judged; to look for drift, check a --full run")
    else:
        reasons += _diff_reasons(diff, t)
    if expectations is not None:
        failed = [f"expectation {r.expectation}({r.column or ''}) failed: {r.observed}" for r in expectations.failed]
        (reasons if t["expectations"] == "fail" else notes).extend(failed)
    return Verdict(passed=not reasons, reasons=tuple(reasons), thresholds=t, notes=tuple(notes))


def _diff_reasons(diff: DiffResult, t: dict[str, Any], counts: bool = True) -> list[str]:
    """Why the diff fails ``t``; without ``counts`` (a catch-up) only duplicate keys and schema changes
    count, not the keys on one side or the changed rows."""
    reasons = []
    sides = [(diff.only_in_live, t["max_only_in_live"], "keys only in live"),
             (diff.only_in_rebuilt, t["max_only_in_rebuilt"], "keys only in rebuilt")] if counts else []
    for count, limit, what in (
        *sides, (diff.duplicate_keys_live + diff.duplicate_keys_rebuilt, t["max_duplicate_keys"], "duplicate keys"),
    ):
        if count > limit:
            reasons.append(f"{count:,} {what} (allowed {limit:,})")
    if not t["allow_schema_changes"] and (diff.added or diff.removed or diff.retyped):
        # a patch goes into live's columns as they are (their types too): forcing it leaves live so, and every
        # catch-up after it fails again; a view an earlier version stored otherwise (a Parquet HUGEINT as DOUBLE)
        patch = ("; a catch-up keeps live's columns and their types, so every catch-up fails on this until a full run "
                 "(--full), checked and cut over (--force if you meant the change), gives live the new ones") if not counts else ""
        said = [f"{what} {columns_text(names)}"  # not "removed [], retyped []"
                for what, names in (("added", diff.added), ("removed", diff.removed), ("retyped", diff.retyped_columns())) if names]
        reasons.append(f"schema changed: {'; '.join(said)}{patch}")
    if not counts:
        return reasons
    matched = max(diff.rows_matched, 1)
    columns: dict[str, float] = t["columns"]
    for column, limit in columns.items():
        changed = diff.changed_by_column.get(column, 0)
        if changed / matched > limit:
            reasons.append(f"column {column}: {changed:,} rows changed ({percent(changed / matched)}, allowed {percent(limit)})")
    rest = _changed_outside(diff, set(columns))
    if rest / matched > t["max_changed_fraction"]:
        reasons.append(f"{rest:,} changed rows ({percent(rest / matched)} of {diff.rows_matched:,}, allowed "
                       f"{percent(t['max_changed_fraction'])})" + (f" outside columns {sorted(columns)}" if columns else ""))
    return reasons


def _changed_outside(diff: DiffResult, columns: set[str]) -> int:
    """Changed rows with a change in a column that has no threshold of its own: counted by ``compare``
    when it was given these columns; else from the change patterns when they name every compared
    column and every changed row (past MAX_MASK_COLUMNS columns they miss changes); else every changed row."""
    if not columns:
        return diff.changed_rows
    if set(diff.limited) == columns:
        return diff.changed_elsewhere
    if len(diff.columns) > MAX_MASK_COLUMNS or sum(diff.change_patterns.values()) != diff.changed_rows:
        return diff.changed_rows
    return sum(n for pattern, n in diff.change_patterns.items() if set(pattern.split("+")) - columns)


def columns_text(names: Sequence[str]) -> str:
    """``column lines`` or ``columns a, b``: column names in words, not as a Python list."""
    return f"column{'s' if len(names) > 1 else ''} {', '.join(names)}"
