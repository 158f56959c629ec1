"""How the project is installed: a notebook's folder may hold data folders named like its packages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_data_folders_named_like_the_packages_do_not_shadow_them(tmp_path: Path) -> None:
    """An analyst's lake in ./lake (no __init__.py) must not become an empty ``import lake``."""
    for name in ("lake", "rebuild", "checks"):
        (tmp_path / name).mkdir()
    code = "import lake, rebuild, checks; print(lake.Lake.__name__, rebuild.Workbench.__name__, checks.__file__ is not None)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, capture_output=True, text=True)
    assert out.stdout.split() == ["Lake", "Workbench", "True"]
