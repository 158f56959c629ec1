"""How the project is installed: a notebook's folder may hold data folders named like its packages;
a wheel brings every package the code imports."""

from __future__ import annotations

import ast
import os
import importlib.metadata
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).parents[1]


def test_data_folders_named_like_the_packages_do_not_shadow_them(tmp_path: Path) -> None:
    """An analyst's lake in ./lake (no __init__.py) must not become an empty ``import lake``."""
    for name in ("lake", "rebuild", "checks"):
        (tmp_path / name).mkdir()
    code = "import lake, rebuild, checks; print(lake.Lake.__name__, rebuild.Workbench.__name__, checks.__file__ is not None)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True, capture_output=True, text=True)
    assert out.stdout.split() == ["Lake", "Workbench", "True"]


def _imported(package: Path) -> set[str]:
    """The top-level names the modules under ``package`` (or that one file) import (absolute imports only)."""
    names: set[str] = set()
    for source in [package] if package.is_file() else package.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_every_package_the_code_imports_is_declared() -> None:
    """A wheel installs the declared dependencies only: `rebuild lake vacuum` imported fsspec and
    `--executor processes` cloudpickle, which came with the dev extras, and exited 70 elsewhere.
    The extras count (s3fs, distributed: imported when a lake in a bucket or Dask is used)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    declared = set()
    for text in [*project["dependencies"], *extras["s3"], *extras["dask"]]:
        requirement = Requirement(text)
        declared |= {_normalized(requirement.name), *map(_normalized, requirement.extras)}
    ours = {"lake", "rebuild", "checks", "_rebuild_cli"}  # _rebuild_cli.py: the console script's light entry point
    sources = [ROOT / "lake", ROOT / "rebuild", ROOT / "checks", ROOT / "_rebuild_cli.py"]
    imported = set().union(*(_imported(path) for path in sources)) - ours - set(sys.stdlib_module_names)
    distributions = importlib.metadata.packages_distributions()
    undeclared = {name: distributions.get(name) for name in imported
                  if not {_normalized(d) for d in distributions.get(name, [name])} & declared}
    assert undeclared == {}


def test_make_lab_in_a_folder_whose_path_has_a_space(tmp_path: Path) -> None:
    """`make lab` in `~/Mes projets/workbench` ran `JUPYTER_PATH=/home/.../Mes projets/...` unquoted: the
    shell took `projets/.../jupyter` for the command. A stand-in `jupyter` shows what it is given."""
    project = tmp_path / "Mes projets é" / "workbench"
    (project / ".venv" / "bin").mkdir(parents=True)
    (project / "Makefile").write_text((ROOT / "Makefile").read_text(encoding="utf-8"), encoding="utf-8")
    (project / "pyproject.toml").touch()
    (project / ".venv" / ".installed").touch()  # newer than pyproject.toml: nothing to install
    jupyter = project / ".venv" / "bin" / "jupyter"
    jupyter.write_text('#!/bin/sh\necho "$JUPYTER_PATH"\n')
    jupyter.chmod(0o755)
    os.utime(project / "pyproject.toml", (0, 0))
    done = subprocess.run(["make", "-s", "lab"], cwd=project, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{project}/.venv/share/jupyter"
