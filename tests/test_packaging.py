"""How the project is installed: a notebook's folder may hold data folders named like its packages;
a wheel brings every package the code imports, and the wheel built from this checkout runs elsewhere."""

from __future__ import annotations

import ast
import email
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from lake.mapping import BUILTIN

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


# The installed package run elsewhere: the checkout, which an editable install's .pth puts on sys.path, is
# taken off it, so a module or data file missing from the wheel fails here as it does in another environment.
RUN_ELSEWHERE = """
import os, runpy, sys
site, how, what, *args = sys.argv[1:]  # how: -m (a module), -c (code), or a script file's path
sys.path[:] = [p for p in sys.path if p == site or not os.path.isfile(os.path.join(p or ".", "_rebuild_cli.py"))]
sys.argv = [what, *args]
if how == "-m":
    runpy.run_module(what, run_name="__main__", alter_sys=True)
elif how == "-c":
    exec(what)
else:
    sys.argv = [how, what, *args]
    runpy.run_path(how, run_name="__main__")
"""


def _ran(command: list[str], cwd: Path, site: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REBUILD_")}  # the defaults, as elsewhere
    if site:
        env["PYTHONPATH"] = str(site)
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this checkout, built as `python -m build` does (hatchling in an isolated environment)."""
    out = tmp_path_factory.mktemp("dist")
    _ran([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)], out)
    [built] = out.glob("*.whl")
    return built


@pytest.fixture(scope="module")
def site(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel installed without its dependencies (this venv has them) into a folder of its own."""
    target = tmp_path_factory.mktemp("site")
    _ran([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)], target)
    return target


def test_the_wheel_holds_what_the_code_reads_and_nothing_else(wheel: Path) -> None:
    """The packages with their data (mapping files; py.typed, or a project's mypy refused `import rebuild`
    as untyped) and the console script's module; no tests, benchmarks, notebooks, .demo or reports."""
    with zipfile.ZipFile(wheel) as built:
        names = {n for n in built.namelist() if ".dist-info/" not in n}
    source = {path.relative_to(ROOT).as_posix() for package in ("lake", "rebuild", "checks")
              for path in (ROOT / package).rglob("*") if path.is_file() and "__pycache__" not in path.parts}
    assert names == source | {"_rebuild_cli.py"}
    assert {f"lake/mappings/{file}" for file in BUILTIN.values()} <= names
    assert {"lake/py.typed", "rebuild/py.typed", "checks/py.typed"} <= names


def test_the_wheel_metadata_is_pyproject_s(wheel: Path) -> None:
    """What pip installs elsewhere: the version, Python and dependencies declared in pyproject.toml (the test
    above checks those against the imports), and the `rebuild` console script."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    with zipfile.ZipFile(wheel) as built:
        info = next(n.split("/")[0] for n in built.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = email.message_from_bytes(built.read(f"{info}/METADATA"))
        scripts = built.read(f"{info}/entry_points.txt").decode()
    assert (metadata["Name"], metadata["Version"]) == (project["name"], project["version"])
    assert metadata["Requires-Python"] == project["requires-python"]
    required = {Requirement(text) for text in metadata.get_all("Requires-Dist", [])}
    assert {str(r) for r in required if r.marker is None} == {str(Requirement(t)) for t in project["dependencies"]}
    assert set(metadata.get_all("Provides-Extra", [])) == set(project["optional-dependencies"])
    assert "rebuild = _rebuild_cli:run" in scripts


def test_the_installed_package_runs_outside_the_checkout(site: Path, tmp_path: Path) -> None:
    """The README's "Installed into another environment": the console script, `python -m rebuild`,
    `rebuild demo` in an empty folder, an ingest with the shipped mapping, the Python API."""
    script = str(site / "bin" / "rebuild")
    assert "Commands:" in _ran([script, "--help"], tmp_path, site).stdout  # shebang: this venv's python
    elsewhere = [sys.executable, "-c", RUN_ELSEWHERE, str(site)]
    assert "Commands:" in _ran([*elsewhere, "-m", "rebuild", "--help"], tmp_path, site).stdout
    imported = _ran([*elsewhere, "-c", "from rebuild import Workbench, projection; import lake, checks, rebuild; "
                     "print(lake.__file__, checks.__file__, rebuild.__file__)"], tmp_path, site).stdout.split()
    assert all(Path(file).is_relative_to(site) for file in imported)

    demo = json.loads(_ran([*elsewhere, script, "--json", "demo", "--events", "500"], tmp_path, site).stdout)
    check = demo["steps"]["check"]
    assert check["found_exactly_the_faults"] and Path(check["report"]).is_relative_to(tmp_path / "reports")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".demo", "reports"]

    export = tmp_path / "export"
    export.mkdir()
    (export / "events.ndjson").write_text("".join(
        json.dumps({"id": f"e{i}", "type": "OrderPlaced", "timestamp": 1767225600000 + i, "partitionKey": f"o{i}",
                    "tags": {}, "order": {"total": i}, "raw": {}}) + "\n" for i in range(3)))
    ingest = _ran([*elsewhere, script, "--json", "--lake", "lake", "lake", "ingest", "events.ndjson",
                   "--map", "aws-lambda-stream", "--stream", "orders"], export, site)
    assert (json.loads(ingest.stdout)["archived"], json.loads(ingest.stdout)["quarantined"]) == (3, 0)
