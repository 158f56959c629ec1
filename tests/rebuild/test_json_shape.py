"""What a machine reads from every command under --json: one strict JSON object on stdout, errors of one
shape, the same names of the same types, and a stderr of log lines a log shipper parses."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import write_ndjson
from tests.rebuild.conftest import logged

SINCE = ["--since", "2026-09-29", "--until", "2026-09-30"]
#: (arguments, exit code): every command, in success and in typical failures, on the sampled project
COMMANDS = [
    (["ls"], 0), (["runs"], 0), (["runs", "order_summary"], 0), (["plan", "order_summary"], 0),
    (["run", "order_summary", "--progress", "log"], 0), (["check", "order_summary", "--progress", "log"], 0),
    (["cutover", "order_summary"], 2), (["cutover", "order_summary", "--force"], 0), (["rollback", "order_summary"], 2),
    (["backfill", "order_summary", *SINCE, "--progress", "log"], 0), (["prune", "--older-than", "0"], 0),
    (["drop", "nope"], 2), (["run", "nope"], 2), (["frobnicate"], 2), (["lake"], 2), (["lake", "audit"], 0),
    (["lake", "audit", "--stream", "nope"], 2), (["lake", "ingest", "poison.ndjson", "--stream", "orders", "--strict"], 1),
    (["lake", "ingest", "missing.ndjson", "--stream", "orders"], 2), (["lake", "compact"], 0),
    (["lake", "vacuum", "--dry-run"], 0), (["--store", "postgresql://app:secret@127.0.0.1:1/shop", "ls"], 2), (["lake", "sample", "--events", "300", "--days", "3", "--out", "other"], 0),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sampled lake with order_summary's shadow run (not checked: its cutover is refused)."""
    root = tmp_path_factory.mktemp("project")
    for args in (["lake", "sample", "--events", "600", "--days", "3"], ["run", "order_summary"]):
        assert _rebuild(root, args).returncode == 0
    write_ndjson(root / "poison.ndjson", ["not json"])
    return root


def _rebuild(cwd: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rebuild", "--json", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def _strict(constant: str) -> None:
    raise ValueError(f"{constant} is no JSON (strict parsers refuse it)")


@pytest.mark.parametrize(("args", "code"), COMMANDS, ids=[" ".join(a) for a, _ in COMMANDS])
def test_every_command_prints_one_strict_object_and_logs_lines_of_one_shape(
        project: Path, tmp_path: Path, args: list[str], code: int) -> None:
    shutil.copytree(project, tmp_path / "p")
    job = _rebuild(tmp_path / "p", args)
    assert job.returncode == code, job.stderr
    [line] = job.stdout.splitlines()
    assert "secret" not in job.stdout + job.stderr
    payload = json.loads(line, parse_constant=_strict)
    assert isinstance(payload, dict)
    if code == 2:
        assert {k: type(v) for k, v in payload.items()} == {"error": str, "kind": str, "exit_code": int,
                                                            "retryable": bool, "context": dict}
        assert payload["exit_code"] == 2
        assert f"error ({payload['kind']}, exit 2): " in logged(job.stderr)
    else:
        assert "error" not in payload or payload["error"] is None
    _check_names(payload)
    messages = logged(job.stderr)  # every line: time, level, logger, message
    assert ("failed (exit 1): " in messages) == (code == 1)


def _fields(value: Any, key: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _fields(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _fields(v, key)
    if key:
        yield key, value


def _check_names(payload: dict[str, Any]) -> None:
    """The same name means the same type in every command's JSON (and in the objects nested in it)."""
    for key, value in _fields(payload):
        if key in ("run_id", "view", "job_id", "stream"):
            assert isinstance(value, str) or value is None, (key, value)
        elif key.endswith("_at"):
            assert value is None or datetime.fromisoformat(value).utcoffset() == timedelta(0), (key, value)
        elif key == "seconds" or key.endswith("_s"):
            assert value is None or type(value) in (int, float), (key, value)
        elif key in ("lake_version", "delta_version", "projection_version", "events_read", "rows_written", "rows",
                     "archived", "quarantined", "duplicates", "events", "partition_keys", "live_rows"):
            # or a section of details (a stream's quarantined records, vacuum's table `events`): never text
            assert value is None or type(value) in (int, dict), (key, value)
        elif key in ("retryable", "forced", "dry_run", "store_exists", "suggested", "stale_code"):
            assert type(value) is bool, (key, value)


def test_ls_names_a_view_and_its_projection_version_as_runs_and_plans_do(project: Path) -> None:
    """`ls --json` called them `name` and `version`, every other JSON `view` and `projection_version`: a
    dashboard joining a view's state to its runs found no common key (both names are there now)."""
    listed = json.loads(_rebuild(project, ["ls"]).stdout)
    [run] = json.loads(_rebuild(project, ["runs", "order_summary"]).stdout)["runs"]
    state = {v["view"]: v for v in listed["views"]}[run["view"]]
    assert (state["name"], state["projection_version"], state["version"]) == (
        run["view"], run["projection_version"], run["projection_version"])
