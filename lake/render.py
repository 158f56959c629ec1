"""Tables for people, in a terminal (rich) and a notebook (HTML): data is shown as it is, never read
as rich markup or HTML.

Values come from the lake (stream names, keys, quarantine reasons quoting raw records), so a
``[/x]`` in a record must print as text rather than raise rich's markup error.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

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


def html_table(rows: Sequence[Mapping[str, object]], caption: str, *, row_headers: bool = False) -> str:
    """An HTML table of dict rows (the columns: every row's keys, in order), whose caption says what it holds
    and whose header cells are scoped (a screen reader announces both); values as ``plain`` writes them.
    ``row_headers``: the first column names its row (``<th scope='row'>``), as in a table of settings."""
    if not rows:
        return ""
    names = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th scope='col'>{html.escape(str(n))}</th>" for n in names)

    def cell(row: Mapping[str, object], i: int, name: str) -> str:
        tag = "th scope='row'" if row_headers and i == 0 else "td"
        return f"<{tag}>{html.escape(plain(row.get(name, '')))}</{tag.split()[0]}>"

    body = "".join("<tr>" + "".join(cell(r, i, n) for i, n in enumerate(names)) + "</tr>" for r in rows)
    return f"<table><caption>{html.escape(caption)}</caption><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
