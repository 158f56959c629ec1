"""Rich tables for people: data is shown as it is, never read as rich markup.

Values come from the lake (stream names, keys, quarantine reasons quoting raw records), so a
``[/x]`` in a record must print as text rather than raise rich's markup error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rich.console import OverflowMethod
from rich.markup import escape
from rich.table import Table


def table_of(title: str, rows: Sequence[Mapping[str, object]], overflow: OverflowMethod = "ellipsis") -> Table:
    """A table from a list of dicts (the keys of the first row are the columns). The first column
    names the row and is never cut; in the others a value too long for its column is cut with an
    ellipsis, or folded onto more lines with ``overflow="fold"`` where all of it must show."""
    table = Table(title=escape(title), title_justify="left")
    for i, name in enumerate(rows[0] if rows else []):
        table.add_column(escape(str(name)), no_wrap=i == 0, overflow=overflow)
    for row in rows:
        table.add_row(*(_cell(v) for v in row.values()))
    return table


def _cell(value: object) -> str:
    """Numbers with thousands separators, '-' for nothing, no rich markup from data."""
    if value is None:
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return escape(str(value))
