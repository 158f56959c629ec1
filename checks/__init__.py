"""Checks: compare rebuilt with live, expectations, lineage of differences, verdict and report.

``checks`` reads ``lake`` and the tables it is handed (a DuckDB connection and names); it never
imports ``rebuild``, which composes these functions in ``Workbench.check`` and ``rebuild check``.
"""

from checks.diff import ColumnDiff, DiffResult, compare, parse_tolerance
from checks.errors import CheckError, CheckInputError, ReportError
from checks.expect import ExpectationResult, ExpectationsResult, validate
from checks.lineage import KeyLineage, difference_days, lineage
from checks.plots import COLOR, HIGHLIGHT
from checks.report import SECTIONS, CheckReport
from checks.suite import CHECK_STEPS, ViewSpec, check_view
from checks.verdict import DEFAULTS, Verdict, decide, thresholds_of

__all__ = [
    "CHECK_STEPS",
    "COLOR",
    "HIGHLIGHT",
    "DEFAULTS",
    "SECTIONS",
    "CheckError",
    "CheckReport",
    "ExpectationResult",
    "ExpectationsResult",
    "KeyLineage",
    "Verdict",
    "ViewSpec",
    "check_view",
    "decide",
    "difference_days",
    "lineage",
    "thresholds_of",
    "validate",
    "CheckInputError",
    "ColumnDiff",
    "DiffResult",
    "ReportError",
    "compare",
    "parse_tolerance",
]
