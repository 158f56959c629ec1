"""JSON for the workbench's results (CLI output, report files): one ``default`` for ``json.dumps``."""

from __future__ import annotations

import json
import math
from datetime import date, datetime
from typing import Any


def dumps(value: object, **kwargs: Any) -> str:
    """``value`` as JSON text, with ``json_default`` and NaN and infinities as text (``finite``)."""
    return json.dumps(finite(value), default=json_default, **kwargs)


def json_default(value: object) -> object:
    """Times as ISO text, results by their ``to_dict()``, anything else (Decimal, Path) as text."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if hasattr(value, "to_dict"):
        return finite(value.to_dict())
    return str(value)


def finite(value: Any) -> Any:
    """``value`` with each NaN or infinite float as the text "NaN", "Infinity" or "-Infinity": JSON has
    no such numbers, and the bare tokens Python's json writes are refused by most other parsers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}[str(value)]
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
