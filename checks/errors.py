"""Errors of the checks package.

    CheckError                root: a check cannot be computed
    ├── CheckInputError       a table, column or option handed to a check is unusable
    └── ReportError           the report cannot be written

Like ``lake.LakeError`` and ``rebuild.RebuildError``, every error carries its context as
attributes (``table``, ``column``, ``path``, ...) and its message says what to do next.
"""

from __future__ import annotations

from lake.errors import ContextError


class CheckError(ContextError):
    """Root of the checks package's errors."""


class CheckInputError(CheckError):
    """A table, column, tolerance or threshold given to a check cannot be used."""


class ReportError(CheckError):
    """The report files cannot be written."""
