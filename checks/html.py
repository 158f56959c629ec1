"""Small HTML helpers shared by the results' ``_repr_html_`` and the report (no templates, no network)."""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from lake.render import caption_html, esc, html_table

def key_text(value: Any) -> str:
    """A key value as a person can tell it from every other: NULL as NULL, and text that would look like
    another key in quotes, with escapes for what does not show: spaces at an end, no text at all, the text
    NULL, control characters, letters not in Unicode's composed form (e + U+0301 beside é). Text that starts
    with a quote is quoted too, and a backslash in quotes escaped, so no two keys are shown alike."""
    if value is None:
        return "NULL"
    if not isinstance(value, str):
        return str(value)
    if (value not in ("", "NULL") and value.strip() == value and not value.startswith("'") and value.isprintable()
            and unicodedata.is_normalized("NFC", value)):
        return value
    return "'" + "".join(c if c.isprintable() and not unicodedata.combining(c) and c != "\\"
                         else c.encode("unicode_escape").decode() for c in value) + "'"


def percent(fraction: float) -> str:
    """A fraction as a percentage: ``15.4413%``, ``0.5%``, ``0%``: four decimals at most, no trailing zeros
    (``allowed 0.0000%`` read as noise)."""
    return f"{fraction * 100:.4f}".rstrip("0").rstrip(".") + "%"


def number(value: Any) -> Any:
    """A count or measure as people read it (``32,154``, ``-402,738.12``, a whole float ``-659`` not
    ``-659.0``, a mean ``0.1235`` not ``0.123456789``: four decimals, or four digits below 1); anything
    else as it is. The JSON keeps the values whole."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return value
    if isinstance(value, int) or not math.isfinite(value):
        return f"{value:,}"
    if value.is_integer():
        return f"{value:,.0f}"
    return f"{value:,.4f}".rstrip("0").rstrip(".") if abs(value) >= 1 else f"{value:.4g}"


def table(rows: Iterable[Mapping[str, Any]], columns: list[str] | None = None, empty: str = "none",
          numbers: bool = True, whole: Collection[str] = (), caption: str | None = None,
          row_header: bool = False) -> str:
    """``html_table`` of dict rows (columns from the first row unless given), or ``empty`` said when there are
    none; numbers with thousands separators unless ``numbers=False`` (rows of a view: a key 12345 is no
    count); the ``whole`` columns' cells are never shortened (sentences whose end matters)."""
    rows = list(rows)
    if not rows:
        return f"<p class='empty'>{esc(empty)}</p>"
    shown = number if numbers else (lambda v: v)
    return html_table(rows, caption, columns=columns or list(rows[0]), row_headers=row_header,
                      cell=lambda column, value: esc(shown(value), shorten=column not in whole))


def pairs(data: Mapping[str, Any], caption: str | None = None) -> str:
    """A two-column table: one row per key (numbers with thousands separators)."""
    body = "".join(f"<tr><th scope='row'>{esc(k)}</th><td>{esc(number(v))}</td></tr>" for k, v in data.items())
    return f"<table class='pairs'>{caption_html(caption)}<tbody>{body}</tbody></table>"


def section(section_id: str, title: str, body: str) -> str:
    """A report section with a stable id (the snapshot test relies on ids and headings)."""
    return f"<section id='{esc(section_id)}'><h2>{esc(title)}</h2>{body}</section>"
