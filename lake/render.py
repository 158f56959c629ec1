"""Tables for people, in a terminal (rich) and a notebook (HTML): data is shown as it is, never read
as rich markup or HTML.

Values come from the lake (stream names, keys, quarantine reasons quoting raw records), so a
``[/x]`` in a record must print as text rather than raise rich's markup error.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping, Sequence

from rich.console import OverflowMethod
from rich.markup import escape
from rich.table import Table


def table_of(title: str, rows: Sequence[Mapping[str, object]], overflow: OverflowMethod = "fold") -> Table:
    """A table from a list of dicts (the keys of the first row are the columns). The first column
    names the row and is never cut; in the others a value too long for its column folds onto
    more lines, so all of it shows (``overflow="ellipsis"`` cuts it instead, for listings)."""
    table = Table(title=escape(title), title_justify="left")
    for i, name in enumerate(rows[0] if rows else []):
        table.add_column(escape(str(name)), no_wrap=i == 0, overflow=overflow)
    for row in rows:
        table.add_row(*(escape(plain(v)) for v in row.values()))
    return table


def plain(value: object) -> str:
    """A value as a person reads it: numbers grouped, lists joined, '-' for nothing."""
    if value is None:
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, (list, tuple)):
        return ", ".join(plain(v) for v in value) or "-"
    if isinstance(value, dict):
        return "; ".join(f"{str(k).replace('_', ' ')} {plain(v)}" for k, v in value.items())
    return str(value)


MAX_CELL = 120
#: bidi embeddings, overrides and isolates: in a key or value they turn the text after them around
#: (``paid → shipped`` read as ``deppihs ← diap``), so they are shown as what they are
BIDI_CONTROLS = {c: f"⟨U+{c:04X}⟩" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}
#: and the C0 controls but tab and line feed, and DEL: an error quoting a damaged file's bytes (DuckDB's "don't
#: know what type: \x0e") or a record's text put them into a job's log, where a terminal or log shipper obeys them
CONTROLS = {**BIDI_CONTROLS, **{c: f"⟨U+{c:04X}⟩" for c in (*range(0x09), *range(0x0B, 0x20), 0x7F)}}


#: the colours of a library's error (delta-rs), which plain text drops
ANSI_COLOUR = re.compile(r"\x1b\[[0-9;]*m")


def visible(text: str) -> str:
    """``text`` without colours, its other control characters shown as ``⟨U+000E⟩``, not obeyed: for a line of a
    log or an error."""
    return ANSI_COLOUR.sub("", text).translate(CONTROLS)


def esc(value: object, shorten: bool = True) -> str:
    """Escaped text of ``value``, shortened to a readable cell (``shorten=False``: whole, for sentences
    such as a verdict's reasons, whose advice comes last); bidi controls shown, not obeyed."""
    text = "" if value is None else str(value)
    if shorten and len(text) > MAX_CELL:
        text = text[: MAX_CELL - 1] + "…"
    return html.escape(text.translate(BIDI_CONTROLS))


def html_table(rows: Sequence[Mapping[str, object]], caption: str | None, *, columns: Sequence[str] | None = None,
               row_headers: bool = False, cell: Callable[[str, object], str] | None = None) -> str:
    """An HTML table of dict rows (the columns: ``columns``, or every row's keys in order), whose caption says
    what it holds and whose header cells are scoped (a screen reader announces both; a printout keeps the
    caption). ``row_headers``: the first column names its row (``<th scope='row'>``: a key, a setting).
    ``cell(column, value)`` writes a value's escaped text; by default as ``plain`` writes it, whole."""
    if not rows:
        return ""
    names = list(columns or dict.fromkeys(k for r in rows for k in r))
    text = cell or (lambda _column, value: esc(plain(value), shorten=False))
    head = "".join(f"<th scope='col'>{esc(n)}</th>" for n in names)

    def row(r: Mapping[str, object]) -> str:
        cells = [text(n, r.get(n, "")) for n in names]
        first = f"<th scope='row'>{cells[0]}</th>" if row_headers else f"<td>{cells[0]}</td>"
        return "<tr>" + first + "".join(f"<td>{c}</td>" for c in cells[1:]) + "</tr>"

    return f"<table>{caption_html(caption)}<thead><tr>{head}</tr></thead><tbody>{''.join(row(r) for r in rows)}</tbody></table>"


def caption_html(caption: str | None) -> str:
    """A table's caption, whole (it says what the table holds), or nothing."""
    return f"<caption>{esc(caption, shorten=False)}</caption>" if caption else ""
