"""What a machine reads from every command under --json: one strict JSON object on stdout, errors of one
shape, the same names of the same types, and a stderr of log lines a log shipper parses."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import click
import duckdb
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
    (["lake", "vacuum", "--dry-run"], 0), (["lake", "dedupe", "--dry-run"], 0),
    (["--store", "postgresql://app:secret@127.0.0.1:1/shop", "ls"], 2), (["lake", "sample", "--events", "300", "--days", "3", "--out", "other"], 0),
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
        if key in ("run_id", "view", "job_id", "stream", "lake_uri", "report_html", "report_json", "shadow_run_id"):
            assert isinstance(value, str) or value is None, (key, value)
        elif key in ("inputs", "run_ids"):  # a list, and each of its items (text)
            assert isinstance(value, list | str), (key, value)
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


README = Path(__file__).resolve().parents[2] / "README.md"
#: the README table's words for JSON types (`number`: a float or an int)
TYPES: dict[str, tuple[type, ...]] = {"text": (str,), "int": (int,), "number": (int, float), "bool": (bool,),
                                      "object": (dict,), "list": (list,)}
KEY = re.compile(r"(\[)?`(\w+)` (" + "|".join(TYPES) + r")(\?)?( \S*\(\*deprecated\*\))?")
#: (arguments, exit code): every command once, in the order that reaches each of its shapes. Live is first a
#: view built outside the workbench, with one order wrong (the check fails), so a rollback returns to it (a live
#: with no checkpoint).
SCENARIO = [
    (["ls"], 0), (["runs"], 0), (["plan", "order_summary"], 0), (["check", "order_summary", "--progress", "log"], 1),
    (["cutover", "order_summary", "--force"], 0), (["rollback", "order_summary"], 0),
    (["run", "order_summary", "--full", "--progress", "log"], 0), (["cutover", "order_summary", "--force"], 0),
    (["run", "order_summary", "--full", "--progress", "log"], 0), (["cutover", "order_summary", "--force"], 0),
    (["rollback", "order_summary"], 0), (["backfill", "order_summary", *SINCE, "--progress", "log"], 0),
    (["backfill", "order_summary", "--buckets", "--progress", "log"], 0), (["prune", "--older-than", "0"], 0),
    (["--config", "bare.toml", "ls"], 0), (["--config", "bare.toml", "drop", "order_summary", "--dry-run"], 0), (["lake", "audit"], 0),
    (["lake", "ingest", "poison.ndjson", "--stream", "orders"], 0), (["lake", "compact"], 0), (["lake", "dedupe"], 0),
    (["lake", "vacuum", "--dry-run"], 0), (["lake", "sample", "--events", "300", "--days", "3", "--out", "other"], 0),
    (["run", "nope"], 2),
]


def _documented() -> dict[str, dict[str, tuple[str, bool, bool, bool]]]:
    """The README's table: command -> {key: (type, may be null, only sometimes there, deprecated)}."""
    text = README.read_text(encoding="utf-8")
    rows = text.split("| command | top-level keys |\n|---|---|\n", 1)[1].split("\n\n", 1)[0].splitlines()
    table = {}
    for row in rows:
        commands, keys = (cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:3])
        spec = {name: (kind, bool(null), bool(sometimes), bool(old))
                for sometimes, name, kind, null, old in KEY.findall(keys)}
        for command in re.findall(r"`([^`]+)`", commands) or ["error"]:
            table[command] = spec
    return table


def _command(args: list[str], code: int) -> str:
    """The table's row for ``args``: global options dropped, `lake X` and `backfill --buckets` as written there."""
    if code == 2:
        return "error"
    while args[0].startswith("--"):
        args = args[2:]
    if args[0] == "lake":
        return " ".join(args[:2])
    return "backfill --buckets" if args[0] == "backfill" and "--buckets" in args else args[0]


def _matches(payload: dict[str, Any], spec: dict[str, tuple[str, bool, bool, bool]]) -> list[str]:
    """What in ``payload`` the table does not say (an empty list when it says it all)."""
    wrong = [f"{key}: not in the table" for key in payload if key not in spec]
    for key, (kind, null, sometimes, _) in spec.items():
        if key not in payload:
            wrong += [] if sometimes else [f"{key}: missing"]
        elif not _typed(payload[key], kind, null):
            wrong.append(f"{key}: {payload[key]!r} is no {kind}{'?' if null else ''}")
    return wrong


def _typed(value: Any, kind: str, null: bool) -> bool:
    if value is None:
        return null
    return isinstance(value, TYPES[kind]) and (type(value) is bool) == (kind == "bool")  # True is an int too


def test_each_commands_object_has_the_keys_and_types_the_readme_table_gives(project: Path, tmp_path: Path) -> None:
    """A scheduled job parses what the README's table promises: every command's top-level keys and their types
    (`lake` was a URI in the audit and an object in `ls`, `report` a path in runs and an object in checks)."""
    table = _documented()
    root = tmp_path / "p"
    shutil.copytree(project, root)
    (root / "bare.toml").write_text('[lake]\nuri = ".demo/lake"\n[store]\nuri = "duckdb://.demo/views.duckdb"\n'
                                    "[projections]\nmodules = []\n", encoding="utf-8")
    with duckdb.connect(str(root / ".demo" / "views.duckdb")) as con:  # live as a consumer built it: no checkpoint
        con.execute("CREATE TABLE order_summary AS SELECT * FROM order_summary__shadow")
        con.execute("UPDATE order_summary SET total = total + 1 WHERE order_id = (SELECT min(order_id) FROM order_summary)")
    (tmp_path / "empty").mkdir()
    seen = set()
    for args, code in [*SCENARIO, (["demo", "--events", "1500"], 0)]:
        job = _rebuild(tmp_path / "empty" if args[0] == "demo" else root, args)
        assert job.returncode == code, (args, job.stderr)
        command = _command(args, code)
        payload = json.loads(job.stdout)
        assert _matches(payload, table[command]) == [], args
        _check_names(payload)
        seen.add(command)
    assert seen == set(table)  # every row is tried


def test_the_readme_table_has_a_row_for_every_command() -> None:
    from rebuild.cli import _register, cli

    _register()
    lake_group = cli.commands["lake"]
    assert isinstance(lake_group, click.Group)
    commands = {*cli.commands, *(f"lake {name}" for name in lake_group.commands)} - {"lake"}
    assert commands <= set(_documented())


def test_an_error_of_the_checks_is_of_its_own_kind(project: Path, tmp_path: Path) -> None:
    """A report that cannot be written was kind `RebuildError`, the root every rebuild error shares, so an alert
    routing by kind could not tell it from the others; it is `ReportError` now, as the checks package names it."""
    shutil.copytree(project, tmp_path / "p")
    (tmp_path / "p" / "taken").write_text("a file where the reports folder would be", encoding="utf-8")
    (tmp_path / "p" / "reports.toml").write_text('[reports]\ndir = "taken/reports"\n', encoding="utf-8")
    job = _rebuild(tmp_path / "p", ["--config", "reports.toml", "check", "order_summary", "--progress", "none"])
    error = json.loads(job.stdout)
    assert (job.returncode, error["kind"], error["exit_code"]) == (2, "ReportError", 2), job.stderr
    assert error["context"] == {"path": str(tmp_path / "p" / "taken" / "reports" / "order_summary")}


def test_the_readme_table_gives_a_name_one_type_in_every_command() -> None:
    """Where a name had two types (`lake` a URI and an object), the old key stays, marked deprecated, beside a
    new one of one type; a new key of a type its name has elsewhere fails here before a job's parser does."""
    types: dict[str, set[str]] = {}
    for spec in _documented().values():
        for key, (kind, _, _, deprecated) in spec.items():
            if not deprecated:
                types.setdefault(key, set()).add(kind)
    # the README names these: a list of names in a plan, an object keyed by name in an audit
    mixed = {key: kinds for key, kinds in types.items() if len(kinds) > 1 and key not in ("streams", "event_types")}
    assert mixed == {}
