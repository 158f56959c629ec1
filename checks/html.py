"""Small HTML helpers shared by the results' ``_repr_html_`` and the report (no templates, no network)."""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from typing import Any

MAX_CELL = 120


def esc(value: Any, shorten: bool = True) -> str:
    """Escaped text of ``value``, shortened to a readable cell (``shorten=False``: whole, for sentences
    such as a verdict's reasons, whose advice comes last)."""
    text = "" if value is None else str(value)
    if shorten and len(text) > MAX_CELL:
        text = text[: MAX_CELL - 1] + "…"
    return html.escape(text)


def table(rows: Iterable[Mapping[str, Any]], columns: list[str] | None = None, empty: str = "none",
          whole: Iterable[str] = ()) -> str:
    """An HTML table of dict rows (columns from the first row unless given; those in ``whole`` are
    not shortened: their values are cut to a readable length already)."""
    rows = list(rows)
    if not rows:
        return f"<p class='empty'>{esc(empty)}</p>"
    columns = columns or list(rows[0])
    kept = set(whole)
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{esc(r.get(c), c not in kept)}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def pairs(data: Mapping[str, Any]) -> str:
    """A two-column table: one row per key."""
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in data.items())
    return f"<table class='pairs'><tbody>{body}</tbody></table>"


def section(section_id: str, title: str, body: str) -> str:
    """A report section with a stable id (the snapshot test relies on ids and headings)."""
    return f"<section id='{esc(section_id)}'><h2>{esc(title)}</h2>{body}</section>"
