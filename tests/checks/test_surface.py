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
