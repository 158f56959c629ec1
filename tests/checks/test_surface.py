"""The public surface of ``checks`` and its layering: it may read ``lake``, never ``rebuild``."""

from __future__ import annotations

import ast
from pathlib import Path

import checks

ROOT = Path(checks.__file__).parent


def test_all_names_exist():
    assert sorted(checks.__all__) == sorted(set(checks.__all__))
    for name in checks.__all__:
        assert getattr(checks, name) is not None


def test_checks_never_imports_rebuild():
    for path in ROOT.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n == "rebuild" or n.startswith("rebuild.") for n in names), path


def test_errors_share_one_root():
    assert issubclass(checks.CheckInputError, checks.CheckError)
    assert issubclass(checks.ReportError, checks.CheckError)


def test_report_cells_show_counts_with_separators_and_bidi_controls_as_text():
    """Counts read '199980' beside '199,980' in the sentences; a key holding U+202E turned the rest of its
    cell around ('paid → shipped' shown as 'deppihs ← diap')."""
    from checks.html import esc, pairs, table

    assert pairs({"rows_live": 32154, "sum_diff": -402738.12, "forced": False}) == (
        "<table class='pairs'><tbody><tr><th scope='row'>rows_live</th><td>32,154</td></tr>"
        "<tr><th scope='row'>sum_diff</th><td>-402,738.12</td></tr>"
        "<tr><th scope='row'>forced</th><td>False</td></tr></tbody></table>")
    assert "<td>12345</td>" in table([{"order_id": 12345}], numbers=False)  # a key is no count
    # a sum of integer differences is no float to a reader, nor is a mean of 9 decimals read
    from checks.html import number

    assert [number(v) for v in (-659.0, 0.123456789, 1234.56789, 2.5e-7, -0.5, float("nan"), 10**12)] == [
        "-659", "0.1235", "1,234.5679", "2.5e-07", "-0.5", "nan", "1,000,000,000,000"]
    assert esc("o-1\u202eSTATUS\u2066") == "o-1⟨U+202E⟩STATUS⟨U+2066⟩"
    assert esc("שלום") == "שלום"  # right-to-left text itself is shown as it is
