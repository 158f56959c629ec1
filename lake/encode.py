"""JSON for the workbench's results (CLI output, report files): one ``default`` for ``json.dumps``."""

from __future__ import annotations

from datetime import date, datetime


def json_default(value: object) -> object:
    """Times as ISO text, results by their ``to_dict()``, anything else (Decimal, Path) as text."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return str(value)
