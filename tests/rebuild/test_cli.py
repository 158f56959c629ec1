"""The CLI: plan/run/cutover/rollback/ls through main(argv), exit codes and one JSON object."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import uuid
from dataclasses import fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import duckdb
import pytest

import lake
from lake.audit import audit

from rebuild.cli import _register, cli, main
from rebuild.options import RunOptions
from rebuild.projection import REGISTRY
from tests.conftest import archive_unchecked, event, write_ndjson
from tests.orders import order_events
from tests.rebuild.conftest import Bench, logged


def _call(capsys: pytest.CaptureFixture[str], bench: Bench, *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    code = main(["--lake", str(bench.root / "lake"), "--store", f"duckdb://{bench.root}/views.duckdb", *args, "--json"])
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    return code, json.loads(lines[0])


def test_plan_run_cutover_rollback_ls(capsys: pytest.CaptureFixture[str], bench: Bench) -> None:
    bench.ingest(e for o in range(1, 4) for e in order_events(o))
    bench.wb.close()
    code, plan = _call(capsys, bench, "plan", "order_summary")
    assert code == 0 and plan["mode"] == "full" and plan["writes"] == "order_summary__shadow"
    code, run = _call(capsys, bench, "run", "order_summary")
    assert code == 0 and run["rows_written"] == 3 and run["status"] == "shadow"
    code, refused = _call(capsys, bench, "cutover", "order_summary")
    assert code == 2 and "no passing check report" in refused["error"]
    code, cp = _call(capsys, bench, "cutover", "order_summary", "--force")
    assert code == 0 and cp["run_id"] == run["run_id"]
    code, views = _call(capsys, bench, "ls")
    summary = {v["name"]: v for v in views["views"]}["order_summary"]
    assert summary["live_rows"] == 3 and summary["versions_behind"] == 0
    assert views["lake"] == {"uri": bench.wb.lake.uri, "lake_version": 1,
                             "uncompacted": {"files": 0, "partitions": 0, "suggested": False}}
    assert views["store"].startswith("duckdb://")
    code, back = _call(capsys, bench, "rollback", "order_summary")
    assert code == 2 and "nothing to roll back" in back["error"]  # the first live had no predecessor
    code, patch = _call(capsys, bench, "run", "order_summary", "--keys", "o-0000001")
    assert code == 0 and patch["kind"] == "patch" and patch["scope_rows"] == 1
    code, cp = _call(capsys, bench, "cutover", "order_summary", "--force")
    # `rows` is the patch's: the JSON also says how many rows live has, as the text does
    assert code == 0 and cp["kind"] == "patch" and cp["rows"] == 1 and cp["live_rows"] == 3 and cp["changed"]
    code, again = _call(capsys, bench, "run", "order_summary", "--incremental")  # a second run: nothing new
    assert code == 0 and again["kind"] == "patch" and again["scope_rows"] == 0
    code, cp = _call(capsys, bench, "cutover", "order_summary", "--force")
    assert code == 0 and cp["changed"] is False and cp["run_id"] == patch["run_id"] and cp["live_rows"] == 3
    code, back = _call(capsys, bench, "rollback", "order_summary")
    assert code == 0 and back["run_id"] == run["run_id"] and back["live_rows"] == 3
    code, pruned = _call(capsys, bench, "prune", "--older-than", "0")  # live and previous stay
    assert code == 0 and pruned["runs"] == [again["run_id"]]
    assert _call(capsys, bench, "prune", "nope", "--older-than", "0")[0] == 2


def test_an_empty_patch_on_a_live_built_outside_the_workbench_says_nothing_changed(
        capsys: pytest.CaptureFixture[str], bench: Bench) -> None:
    """Live made by a consumer (no live checkpoint), then a keys run of a key without rows: the cutover
    changed nothing (the run's status is 'empty') but said 'the patch ... is applied' and "changed": true."""
    bench.ingest(e for o in range(1, 4) for e in order_events(o))
    bench.wb.run("order_summary", progress="none")
    bench.wb.store.con.execute("CREATE TABLE order_summary AS SELECT * FROM order_summary__shadow")  # type: ignore[attr-defined]
    bench.wb.close()
    code, patch = _call(capsys, bench, "run", "order_summary", "--keys", "o-nope")
    assert code == 0 and patch["kind"] == "patch"
    code, cp = _call(capsys, bench, "cutover", "order_summary", "--force")
    assert code == 0 and cp["changed"] is False and cp["run_id"] is None and cp["live_rows"] == 3
    assert main(["--lake", str(bench.root / "lake"), "--store", f"duckdb://{bench.root}/views.duckdb",
                 "runs", "order_summary", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"][0]["status"] == "empty"


def test_prune_older_than_more_days_than_the_calendar_holds_keeps_every_run(
        capsys: pytest.CaptureFixture[str], bench: Bench) -> None:
    """--older-than 1000000 ('keep about everything') failed with an OverflowError traceback, exit 1."""
    bench.ingest(order_events(1))
    bench.wb.close()
    assert _call(capsys, bench, "run", "order_summary")[0] == 0
    code, pruned = _call(capsys, bench, "prune", "--older-than", "1000000")
    assert code == 0 and pruned["runs"] == [] and pruned["jobs"] == []


def test_usage_errors_exit_2_with_one_json_object(capsys: pytest.CaptureFixture[str], bench: Bench) -> None:
    code, error = _call(capsys, bench, "run", "nope")
    assert code == 2 and "unknown projection 'nope'" in error["error"]
    code, error = _call(capsys, bench, "run", "order_summary", "--full", "--incremental")
    assert code == 2 and "exclude each other" in error["error"]
    code, error = _call(capsys, bench, "run", "order_summary", "--since", "yesterday")
    assert code == 2 and "not an ISO date" in error["error"]
    code, error = _call(capsys, bench, "plan", "order_summary", "--keys", "o-1", "o-2")
    assert code == 2 and "give several keys as --keys a,b" in error["error"]
    code, error = _call(capsys, bench, "runs", "nope")  # a misspelt view, not an empty list
    assert code == 2 and "unknown projection 'nope'" in error["error"]
    assert _call(capsys, bench, "runs", "daily_revenue") == (0, {"runs": []})  # known, never run
    code, error = _call(capsys, bench, "runs", "--limit", "-1")  # was DuckDB's Binder traceback
    assert code == 2 and "'--limit': -1 is not in the range x>=1" in error["error"]


def test_an_error_under_json_is_also_in_the_jobs_log(capsys: pytest.CaptureFixture[str], bench: Bench) -> None:
    """A nightly job sends --json to a file it overwrites and appends stderr to its log: the log
    said nothing of a night that failed (a locked view, a damaged lake file), only stdout did."""
    code, error = _call(capsys, bench, "run", "nope")  # one JSON object on stdout, as ever
    assert code == 2 and "unknown projection 'nope'" in error["error"]
    bench.wb.close()
    assert main(["--lake", str(bench.root / "lake"), "--store", f"duckdb://{bench.root}/views.duckdb", "--json",
                 "run", "nope"]) == 2
    err = capsys.readouterr().err
    assert "error (ProjectionError, exit 2): unknown projection 'nope'" in logged(err)



def test_a_failed_verdict_under_json_says_why_in_the_jobs_log(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch,
                                                             bench: Bench) -> None:
    """A night's `check` that failed (exit 1), an `ingest --strict` that quarantined, an audit that met a damaged
    file: under --json the result went to stdout (a file the job overwrites) and stderr, its log, said nothing."""
    monkeypatch.chdir(tmp_path)  # the reports land in ./reports
    bench.ingest(e for o in range(1, 4) for e in order_events(o))
    bench.rebuild_live("order_summary")
    bench.wb.store.con.execute("UPDATE order_summary SET total = total + 1 WHERE order_id = 'o-0000002'")  # type: ignore[attr-defined]
    bench.wb.run("order_summary", full=True, progress="none")
    bench.wb.close()
    at = ["--lake", str(bench.root / "lake"), "--store", f"duckdb://{bench.root}/views.duckdb", "--json"]
    assert main([*at, "check", "order_summary"]) == 1
    out, err = capsys.readouterr()
    checked = json.loads(out)
    assert logged(err) == (f"failed (exit 1): order_summary run {checked['run_id']}: verdict fail: {checked['reasons'][0]}; "
                   f"report {checked['report']['html']}\n")
    poison = write_ndjson(tmp_path / "poison.ndjson", ["not json"])
    assert main([*at, "lake", "ingest", str(poison), "--stream", "orders", "--strict"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["quarantined"] == 1
    assert logged(err).startswith("failed (exit 1): --strict: 1 records quarantined (malformed record: malformed JSON: 1)")
    victim = lake.Lake(str(bench.root / "lake")).snapshot().files[0].path
    Path(victim).write_bytes(b"")
    assert main([*at, "lake", "audit"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["bad_files"][0]["path"] == victim
    assert logged(err) == (f"failed (exit 1): 1 unreadable lake file(s): {victim}; restore them from a backup, or "
                           "rebuild views without their events: `rebuild run VIEW --skip-corrupted`\n")


def test_check_and_audit_of_a_lake_with_times_an_older_version_archived_name_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, bench: Bench) -> None:
    """An older version archived event times outside the years 1 to 9999: `check` and `lake audit` of such a lake
    exited 70 (an internal error); they now report, and name the events."""
    monkeypatch.chdir(tmp_path)  # the reports land in ./reports
    orders = [e for o in range(1, 3) for e in order_events(o)]
    bench.ingest(orders)
    archive_unchecked(bench.wb.lake, [("old1", "o-0000009", 1, "infinity"), ("old2", "o-0000009", 2, "20260-01-01")])
    bench.rebuild_live("order_timeline")
    # a changed row whose placed_at is infinity: the diff samples it and traces its events
    bench.wb.store.con.execute("UPDATE order_timeline SET transitions = 7 WHERE order_id = 'o-0000009'")  # type: ignore[attr-defined]
    bench.wb.run("order_timeline", full=True, progress="none")
    bench.wb.close()
    code, audited = _call(capsys, bench, "lake", "audit")
    assert (code, audited["times_out_of_range"], audited["events"]) == (0, 2, len(orders) + 2)  # counted as events
    assert [e["event_id"] for e in audited["streams"]["orders"]["times_out_of_range"]["examples"]] == ["old1", "old2"]
    code, checked = _call(capsys, bench, "check", "order_timeline")
    assert (code, checked["changed_rows"]) == (1, 1), checked
    report = json.loads(Path(checked["report"]["json"]).read_text())
    assert [t["event_time_range"] for t in report["lineage"]] == [["20260-01-01 00:00:00+00", "infinity"]]
    assert ("stream orders holds 2 event(s) with an event_time outside the years 1 to 9999 (e.g. old1: infinity), "
            "archived before ingest quarantined such times") in " ".join(report["notes"])


def test_a_bug_exits_70_with_one_json_object_and_its_traceback_in_the_log(
        capsys: pytest.CaptureFixture[str], bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unexpected error (a bug of ours or a library's; seven such were found in `rebuild --json ...` on odd
    input) was Python's traceback and exit 1, which says the checks failed, and --json printed no object."""
    from rebuild.workbench import Workbench

    def planted(self: Workbench) -> None:  # stands for any bug: a component raising what nobody expects
        raise TypeError("can only concatenate str (not 'int') to str in postgresql://app:s3cret@db/shop")

    monkeypatch.setattr(Workbench, "ls", planted)
    code = main(["--lake", str(bench.root / "lake"), "--store", f"duckdb://{bench.root}/views.duckdb", "--json", "ls"])
    out, err = capsys.readouterr()
    assert code == 70
    assert json.loads(out) == {"error": "unexpected error (a bug): TypeError: can only concatenate str (not 'int') to "
                                        "str in postgresql://app:***@db/shop. Its traceback is above on stderr: report "
                                        "it with the command. Commits already made stay whole, the one in flight is not "
                                        "made", "kind": "internal", "exit_code": 70, "retryable": False,
                                        "context": {}}
    assert "Traceback (most recent call last)" in err and ", in planted" in err and "s3cret" not in err
    # a log shipper starts a record at a stamped line: the traceback follows one of its own, not a progress line
    first, second = err.splitlines()[:2]
    assert logged(first) == "unexpected error (a bug), its traceback:\n" and second == "Traceback (most recent call last):"

def test_an_os_error_says_what_to_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file where a folder must be is no matter of permissions or space."""
    (tmp_path / "file").write_text("")
    code = main(["--json", "lake", "sample", "--events", "200", "--days", "3", "--out", str(tmp_path / "file" / "lake")])
    error = json.loads(capsys.readouterr().out)
    assert code == 2 and error["kind"] == "NotADirectoryError"
    assert error["error"].endswith("a file stands where a folder is needed, or the reverse: move it or give another path, "
                                   "then rerun the same command")



def test_a_store_file_that_is_no_duckdb_database_is_named_so_not_as_locked(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """--store pointing at a file that is no DuckDB database (a typo, a SQLite file, a damaged header) was told to
    wait for the process holding it and to close read-only connections: there was none."""
    (tmp_path / "views.db").write_text("order_id,total\n")
    assert main(["--lake", str(tmp_path / "lake"), "--store", f"duckdb://{tmp_path}/views.db", "--json", "runs"]) == 2
    error = json.loads(capsys.readouterr().out)
    assert error["kind"] == "StoreError" and "not a valid DuckDB database file" in error["error"]
    assert f"It is no store this DuckDB ({duckdb.__version__}) can open: point --store" in error["error"]
    assert "Wait for that process" not in error["error"]


@pytest.mark.postgres
def test_a_store_password_with_a_bracket_or_a_hash_is_read_as_libpq_reads_it(
        postgres_uri: str, capsys: pytest.CaptureFixture[str], bench: Bench) -> None:
    """A PostgreSQL store URI whose password held one '[' was a traceback ("Invalid IPv6 URL") and exit 1, which
    a scheduler reads as failed checks, and one with a '#' lost its ?schema= (what followed was a fragment),
    though libpq reads both passwords as they are (the pgserver here takes any password)."""
    import psycopg

    bench.ingest(order_events(1))
    bench.wb.close()
    user, _, where = postgres_uri.split("://", 1)[1].partition("@")
    schema = f"t_{uuid.uuid4().hex[:10]}"
    store = f"postgresql://{user.split(':')[0]}:pa[ss#w0rd@{where}&schema={schema}"
    assert main(["--lake", str(bench.root / "lake"), "--store", store, "--json", "run", "order_summary"]) == 0
    assert json.loads(capsys.readouterr().out)["rows_written"] == 1
    with psycopg.connect(postgres_uri) as conn:
        assert conn.execute(f"SELECT count(*) FROM {schema}.order_summary__shadow").fetchone() == (1,)

def test_check_says_what_to_do_next(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the reports land in ./reports
    source = write_ndjson(tmp_path / "in.ndjson", order_events(1))
    at = ["--lake", str(tmp_path / "lake"), "--store", f"duckdb://{tmp_path}/views.duckdb"]
    assert main([*at, "lake", "ingest", str(source), "--stream", "orders"]) == 0
    assert main([*at, "run", "order_summary"]) == 0
    capsys.readouterr()
    assert main([*at, "check", "order_summary"]) == 0
    assert "next: `rebuild cutover order_summary` (and `rebuild rollback order_summary` to undo it)" in capsys.readouterr().out
    assert main([*at, "--json", "check", "order_summary"]) == 0  # a night job's JSON says it too
    assert json.loads(capsys.readouterr().out)["next"] == ("`rebuild cutover order_summary` (and `rebuild rollback "
                                                           "order_summary` to undo it)")
    assert main([*at, "cutover", "order_summary"]) == 0
    assert main([*at, "run", "order_summary", "--full"]) == 0
    capsys.readouterr()
    assert main([*at, "check", "order_summary", "--live", "order_summary__shadow"]) == 0
    assert "next: this verdict compared with order_summary__shadow; `rebuild check order_summary` compares with live" \
        in capsys.readouterr().out
    assert main([*at, "lake", "ingest", str(write_ndjson(tmp_path / "more.ndjson", order_events(2))), "--stream", "orders"]) == 0
    assert main([*at, "run", "order_summary"]) == 0  # incremental: a patch of order 2
    capsys.readouterr()
    assert main([*at, "cutover", "order_summary", "--force"]) == 0
    assert "is applied; live has 2 rows" in capsys.readouterr().out  # not "(1 rows, patch)", as if live had one
    assert main([*at, "run", "order_summary"]) == 0  # the same night again: nothing new
    capsys.readouterr()
    assert main([*at, "check", "order_summary"]) == 0
    assert ("next: `rebuild cutover order_summary`: the patch changes no row, so live only takes its lake position "
            "(`rebuild rollback order_summary` still undoes the cutover before it)") in capsys.readouterr().out
    assert main([*at, "cutover", "order_summary"]) == 0
    assert "changes no row of live; live stays run" in capsys.readouterr().out


def test_check_of_a_patch_with_other_columns_than_live_says_it_cannot_be_cut_over(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A column added to the projection, then a --keys run: the check's next step was `cutover --force`,
    which the cutover then refused (a patch changes live's rows, not its columns)."""
    monkeypatch.chdir(tmp_path)
    at = ["--lake", str(tmp_path / "lake"), "--store", f"duckdb://{tmp_path}/views.duckdb"]
    source = write_ndjson(tmp_path / "in.ndjson", order_events(1) + order_events(2))
    assert main([*at, "lake", "ingest", str(source), "--stream", "orders"]) == 0
    assert main([*at, "run", "order_summary"]) == 0
    assert main([*at, "cutover", "order_summary", "--force"]) == 0
    p = REGISTRY.get("order_summary")
    monkeypatch.setitem(REGISTRY._items, "order_summary", replace(p, func=lambda: f"SELECT *, 1 AS lines FROM ({p.func()})"))
    assert main([*at, "run", "order_summary", "--keys", "o-0000001"]) == 0
    capsys.readouterr()
    assert main([*at, "check", "order_summary"]) == 1
    assert ("next: this patch cannot be cut over, also not with --force: it changes live's rows, and its columns differ "
            "from live's (added column lines); to change live's columns, `rebuild run order_summary --full`, "
            "check and cut over that") in capsys.readouterr().out
    assert main([*at, "cutover", "order_summary", "--force"]) == 2


def test_check_of_a_rebuild_equal_to_live_that_fails_expectations_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """'if the differences are the corrections you meant, cut over --force' was the advice when there were none:
    the rebuilt view equalled live and failed an expectation (orders without a customer), as live does."""
    monkeypatch.chdir(tmp_path)
    events = [{**e, "payload": {k: v for k, v in e["payload"].items() if k != "customer_id"}} for e in order_events(1)]
    at = ["--lake", str(tmp_path / "lake"), "--store", f"duckdb://{tmp_path}/views.duckdb"]
    assert main([*at, "lake", "ingest", str(write_ndjson(tmp_path / "in.ndjson", events)), "--stream", "orders"]) == 0
    assert main([*at, "run", "order_summary"]) == 0
    assert main([*at, "cutover", "order_summary", "--force"]) == 0
    assert main([*at, "run", "order_summary", "--full"]) == 0
    capsys.readouterr()
    assert main([*at, "check", "order_summary"]) == 1
    out = capsys.readouterr().out
    assert "identical: live 1 rows, rebuilt 1" in out and "expect_column_values_to_not_be_null(customer_id)" in out
    assert ("next: the rebuilt view equals live, which fails the same expectations: no cutover changes that; fix the "
            "data or the projection's expectations (see the report)") in out


def test_text_output_shows_data_and_messages_as_they_are(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Brackets in records, keys and messages are text for people, not rich markup to drop or fail on."""
    monkeypatch.delenv("COLUMNS", raising=False)
    source = write_ndjson(tmp_path / "in.ndjson", [event(1, key="o[bold]1"), {**event(2), "sequence": "[/x]"}])
    at = ["--lake", str(tmp_path / "lake"), "--store", f"duckdb://{tmp_path}/views.duckdb"]
    assert main([*at, "lake", "ingest", str(source), "--stream", "orders"]) == 0
    assert "sequence is not a non-negative int64: [/x]" in capsys.readouterr().out
    assert main([*at, "lake", "audit"]) == 0
    out = capsys.readouterr().out
    assert "o[bold]1" in out and "[/x]" in out
    assert main([*at, "plan", "order_summary"]) == 0  # values as a person reads them, not Python reprs
    out = capsys.readouterr().out
    assert "streams: orders\n" in out and "after_version: -\n" in out and "estimated events 1\n" in out
    assert main([*at, "ls"]) == 0  # piped (a job's log), the table is not cut to 80 columns
    out = capsys.readouterr().out
    assert (f"no store at duckdb://{tmp_path}/views.duckdb yet (`rebuild run VIEW` makes one); "
            f"lake {tmp_path / 'lake'} at lake_version 1") in out  # the plan wrote nothing, not even a store
    assert main(["--lake", str(tmp_path / "elsewhere"), "--store", at[3], "ls"]) == 0  # the wrong folder shows
    assert f"no event lake at {tmp_path / 'elsewhere'}" in capsys.readouterr().out
    assert "by_window" in out and "code changed" in out and "…" not in out
    assert main([*at, "run", "nope"]) == 2
    assert "List modules under [projections] modules" in capsys.readouterr().err


def test_ctrl_c_exits_130_with_one_json_object_and_leaves_whole_commits(tmp_path: Path) -> None:
    """SIGINT mid-job (here inside a DuckDB query of the sample's ingests, which DuckDB raises as a
    RuntimeError, not KeyboardInterrupt) is exit 130 and one JSON object, not a traceback."""
    out = tmp_path / "lake"
    rebuild = Path(sys.executable).parent / "rebuild"  # the console script, as a job runs it
    command = [str(rebuild), "lake", "sample", "--events", "3000000", "--out", str(out), "--json"]
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((out / "events" / "_delta_log").glob("*2.json")) and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # interrupt once the daily commits are under way
    job.send_signal(signal.SIGINT)
    stdout, stderr = job.communicate(timeout=120)
    assert job.returncode == 130, stderr
    assert [json.loads(line) for line in stdout.splitlines()] == [
        {"error": "interrupted", "kind": "interrupted", "exit_code": 130, "retryable": False, "context": {}}]
    report = audit(lake.Lake(out))  # the lake holds whole commits only, readable as ever
    assert report.lake_version >= 2 and not report.bad_files


def _signalled_while_importing(tmp_path: Path, signum: int, args: list[str]) -> subprocess.CompletedProcess[str]:
    """The console script's entry point that pyproject.toml names, run as pip's script runs it, with ``signum``
    arriving as Polars starts to import (a command's first second or two)."""
    module, function = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text(encoding="utf-8"))[
        "project"]["scripts"]["rebuild"].split(":")
    script = ("import os, signal, sys\n"
              "class Signal:\n"
              "    def find_spec(self, name, path=None, target=None):\n"
              "        if name == 'polars':\n"
              f"            os.kill(os.getpid(), {int(signum)})\n"
              "sys.meta_path.insert(0, Signal())\n"
              f"from {module} import {function}\n"
              f"sys.exit({function}())\n")
    return subprocess.run([sys.executable, "-c", script, *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)


def test_ctrl_c_while_the_libraries_import_is_one_line_and_exit_130(tmp_path: Path) -> None:
    """A Ctrl-C in a command's first second or two, while DuckDB, Polars and pyarrow import, ended in Python's
    traceback of the import (the process killed by SIGINT, and no JSON object under --json)."""
    for args, stdout, stderr in [
        (["ls", "--json"], [{"error": "interrupted", "kind": "interrupted", "exit_code": 130, "retryable": False, "context": {}}],
         "error (interrupted, exit 130): interrupted\n"),
        (["ls"], [], "error: interrupted\n"),
    ]:
        job = _signalled_while_importing(tmp_path, signal.SIGINT, args)
        assert (job.returncode, logged(job.stderr) if "--json" in args else job.stderr) == (130, stderr)
        assert [json.loads(line) for line in job.stdout.splitlines()] == stdout


def test_sigterm_while_the_libraries_import_is_one_line_and_exit_143(tmp_path: Path) -> None:
    """A scheduler's SIGTERM in a command's first second or two ended the job without a word in its log (the
    process killed by the signal): now it says so, in the words of a SIGTERM later, and exits 143 at once."""
    from rebuild.cli import TERMINATED

    for args, stdout, stderr in [
        (["ls", "--json"], [{"error": TERMINATED, "kind": "terminated", "exit_code": 143, "retryable": False, "context": {}}],
         f"error (terminated, exit 143): {TERMINATED}\n"),
        (["ls"], [], f"error: {TERMINATED}\n"),
    ]:
        job = _signalled_while_importing(tmp_path, signal.SIGTERM, args)
        assert (job.returncode, logged(job.stderr) if "--json" in args else job.stderr) == (143, stderr)
        assert [json.loads(line) for line in job.stdout.splitlines()] == stdout


def test_sigterm_exits_143_at_once_with_one_json_object_and_leaves_whole_commits(tmp_path: Path) -> None:
    """A scheduler's SIGTERM mid-job (here during the sample's daily ingests) ends it with one JSON
    object for the scheduler, not silently with the signal's status."""
    out = tmp_path / "lake"
    rebuild = Path(sys.executable).parent / "rebuild"
    command = [str(rebuild), "lake", "sample", "--events", "3000000", "--out", str(out), "--json"]
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list((out / "events" / "_delta_log").glob("*2.json")) and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    job.terminate()
    stdout, stderr = job.communicate(timeout=120)
    assert job.returncode == 143, stderr
    [error] = [json.loads(line) for line in stdout.splitlines()]
    assert error["kind"] == "terminated" and error["exit_code"] == 143 and "rerun the same command" in error["error"]
    report = audit(lake.Lake(out))
    assert report.lake_version >= 2 and not report.bad_files


@pytest.fixture(scope="module")
def sampled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lake of `rebuild lake sample --events 2000`, made once for the tests that only need one (42 daily
    commits: 5-15 s a process on a loaded CI machine): each works on a copy, ``copy_of(sampled, where)``."""
    out = tmp_path_factory.mktemp("sampled") / "lake"
    made = subprocess.run([str(Path(sys.executable).parent / "rebuild"), "lake", "sample", "--events", "2000",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr
    return out


def copy_of(sampled: Path, where: Path) -> Path:
    return Path(shutil.copytree(sampled, where))


def test_a_reader_that_goes_away_is_exit_141_not_checks_failed(tmp_path: Path, sampled: Path) -> None:
    """`rebuild lake audit | head -1`: the reader closes the pipe before the output is written. rich and
    click would exit 1 ("checks failed") there; the CLI exits 141, as a shell reports a Unix tool
    that SIGPIPE stopped, and says nothing (no traceback, no "Exception ignored")."""
    out = copy_of(sampled, tmp_path / "lake")
    rebuild = Path(sys.executable).parent / "rebuild"
    for json_flag in ([], ["--json"]):
        read, write = os.pipe()
        os.close(read)  # gone before the command writes a byte
        job = subprocess.run([str(rebuild), "--lake", str(out), "lake", "audit", *json_flag],
                             stdout=write, stderr=subprocess.PIPE, text=True, timeout=120)
        os.close(write)
        assert (job.returncode, job.stderr) == (141, ""), json_flag


def test_only_ctrl_c_counts_as_an_interrupt() -> None:
    """click turns an EOFError (a truncated gzip file, say) into Abort as it does Ctrl-C: not exit 130."""
    from rebuild.cli import _interrupted

    end_of_file = click.Abort()
    end_of_file.__cause__ = EOFError("Compressed file ended before the end-of-stream marker was reached")
    assert _interrupted(click.Abort()) and _interrupted(KeyboardInterrupt()) and _interrupted(RuntimeError("Query interrupted"))
    assert not _interrupted(end_of_file) and not _interrupted(RuntimeError("some other failure"))


def test_a_library_failing_as_ctrl_c_unwinds_the_command_is_an_interrupt(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A Ctrl-C that cut a lazy import short left a dask cluster's close, run as the interrupt unwound the
    run, to fail with "NameError: name 'base_events' is not defined": exit 70, 'a bug' (seen once in 40
    interrupts of a real run; stood in for here). A NameError without a Ctrl-C behind it is still a bug."""
    from rebuild import cli as cli_module

    def interrupted_then_broken(**_: object) -> None:
        try:
            raise KeyboardInterrupt
        finally:
            raise NameError("name 'base_events' is not defined")  # noqa: B012 - a library's clean-up, as seen

    monkeypatch.setattr(cli_module.cli, "main", interrupted_then_broken)
    assert cli_module.main(["--json", "ls"]) == 130
    assert json.loads(capsys.readouterr().out)["error"] == "interrupted"

    def broken(**_: object) -> None:
        raise NameError("name 'base_events' is not defined")

    monkeypatch.setattr(cli_module.cli, "main", broken)
    assert cli_module.main(["--json", "ls"]) == 70


def test_verbose_shows_the_workbenchs_lines_not_great_expectations_chatter(tmp_path: Path, sampled: Path) -> None:
    """`rebuild -v check` wrote ~215 log lines, all but two of them Great Expectations' INFO chatter
    ("Skipping registering function ..."); they show with -vv only."""
    rebuild = Path(sys.executable).parent / "rebuild"
    at = [str(rebuild), "--lake", str(copy_of(sampled, tmp_path / "lake")), "--store", f"duckdb://{tmp_path}/v.duckdb"]
    assert subprocess.run([*at, "run", "order_summary"], capture_output=True).returncode == 0
    logs = {}
    for flag in ("-v", "-vv"):  # in tmp_path: the reports go to ./reports
        job = subprocess.run([*at, flag, "check", "order_summary"], capture_output=True, text=True, timeout=300,
                             cwd=tmp_path)
        assert job.returncode in (0, 1) and "expectations" in job.stdout, job.stderr
        logs[flag] = [line for line in job.stderr.splitlines() if " great_expectations" in line]
    assert logs["-v"] == [] and len(logs["-vv"]) > 50


def test_a_long_lake_command_shows_a_spinner_to_a_person_at_a_terminal_only(tmp_path: Path, sampled: Path) -> None:
    """`lake audit`, `lake compact` and `lake ingest` showed nothing while they worked (at 100M events an
    audit takes two minutes, a compaction as long). On a terminal they say what they do; a job's log
    (stderr not a terminal) gets nothing more."""
    import pty

    rebuild, out = Path(sys.executable).parent / "rebuild", copy_of(sampled, tmp_path / "lake")
    command = [str(rebuild), "--lake", str(out), "lake", "audit"]
    leader, follower = pty.openpty()
    job = subprocess.run(command, stdout=subprocess.PIPE, stderr=follower, timeout=120)
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal's other end is closed: all read
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert job.returncode == 0 and b"auditing the lake" in shown
    logged = subprocess.run(command, capture_output=True, timeout=120)
    assert logged.returncode == 0 and b"auditing" not in logged.stderr and logged.stdout == job.stdout


def test_a_group_without_its_command_shows_its_help_or_names_its_commands(capsys: pytest.CaptureFixture[str]) -> None:
    """`rebuild lake` printed its help as an error ("error: Usage: ..."), and under --json the whole help
    text was the error's message."""
    assert main(["lake"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("Usage: rebuild lake [OPTIONS] COMMAND") and "error" not in err
    assert main(["--json", "lake"]) == 2
    assert json.loads(capsys.readouterr().out)["error"] == (
        "`rebuild lake` needs a command (audit, compact, dedupe, ingest, sample, vacuum); `rebuild lake --help` describes them")


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    found: set[tuple[str, ...]] = set()
    for name, command in group.commands.items():
        found |= _commands(command, (*prefix, name)) if isinstance(command, click.Group) else {(*prefix, name)}
    return found


def test_every_command_prints_exactly_one_json_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """The --json contract, command by command; a new command fails here until it has a case."""
    monkeypatch.chdir(tmp_path)
    lake_dir, source = tmp_path / "lake", write_ndjson(tmp_path / "more.ndjson", [event(1, key="o-new")])
    cases = [  # in order: each may rely on the ones before
        (("lake", "sample"), ["--events", "2000", "--out", str(lake_dir)], {0}),
        (("lake", "ingest"), [str(source), "--stream", "orders"], {0}),
        (("lake", "compact"), [], {0}),
        (("lake", "dedupe"), [], {0}),
        (("lake", "vacuum"), ["--dry-run"], {0}),
        (("lake", "audit"), [], {0}),
        (("ls",), [], {0}),
        (("plan",), ["order_summary"], {0}),
        (("run",), ["order_summary"], {0}),
        (("check",), ["order_summary"], {0, 1}),  # no live view yet: the verdict may fail
        (("cutover",), ["order_summary", "--force"], {0}),
        (("backfill",), ["order_summary", "--since", "2026-10-01", "--until", "2026-10-03"], {0}),
        (("runs",), ["order_summary"], {0}),
        (("prune",), ["--older-than", "0", "--dry-run"], {0}),
        (("drop",), ["order_summary", "--dry-run"], {2}),  # a configured projection's view: refused
        (("rollback",), ["order_summary"], {0, 2}),  # 2: the first live has no predecessor
        (("demo",), ["--events", "500"], {0}),  # on its own lake under ./.demo (the default)
    ]
    _register()
    assert {c for c, _, _ in cases} == _commands(cli)
    for command, args, codes in cases:
        where = [] if command == ("demo",) else ["--lake", str(lake_dir), "--store", f"duckdb://{tmp_path}/v.duckdb"]
        code = main([*where, *command, *args, "--json"])
        lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
        assert code in codes and len(lines) == 1, (command, code, lines)
        assert isinstance(json.loads(lines[0]), dict), command



def test_json_is_taken_after_the_lake_group_too(capsys: pytest.CaptureFixture[str], bench: Bench) -> None:
    """`rebuild lake --json audit` was a usage error ("No such option '--json'"), exit 2, where
    `rebuild --json lake audit` and `rebuild lake audit --json` ran."""
    bench.ingest(order_events(1))
    bench.wb.close()
    code = main(["--lake", str(bench.root / "lake"), "--store", f"duckdb://{bench.root}/views.duckdb",
                 "lake", "--json", "audit"])
    assert code == 0 and json.loads(capsys.readouterr().out)["events"] == 5

def test_keys_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], bench: Bench) -> None:
    bench.ingest(e for o in range(1, 4) for e in order_events(o))
    bench.wb.close()
    keys = tmp_path / "keys.txt"
    keys.write_text("o-0000002\n\no-0000003\n")
    code, plan = _call(capsys, bench, "plan", "order_summary", "--keys-file", str(keys))
    assert code == 0 and plan["mode"] == "targeted" and plan["keys"] == ["o-0000002", "o-0000003"]
    # saved by a Windows editor: the byte order mark was read into the first key ("\ufeffo-0000002", no such key)
    keys.write_bytes("o-0000002\r\no-0000003\r\n".encode("utf-8-sig"))
    code, plan = _call(capsys, bench, "plan", "order_summary", "--keys-file", str(keys))
    assert code == 0 and plan["keys"] == ["o-0000002", "o-0000003"]
    keys.write_text("o-0000002\nk\u2028-\x1c-\x0c-\u0085-x\n", encoding="utf-8")  # splitlines made five keys of one
    code, plan = _call(capsys, bench, "plan", "order_summary", "--keys-file", str(keys))
    assert code == 0 and plan["keys"] == ["o-0000002", "k\u2028-\x1c-\x0c-\u0085-x"]
    keys.write_bytes(b"o-0000002\x00\x01\n")  # a binary file: the plan passed, the run was a traceback, exit 1
    for command in ("plan", "run"):
        code, error = _call(capsys, bench, command, "order_summary", "--keys-file", str(keys))
        assert code == 2 and "holds a NUL character, which no partition key does: is the keys file a binary" in error["error"]
    keys.write_bytes("o-0000002\n".encode("utf-16"))  # was a UnicodeDecodeError traceback, exit 1
    code, error = _call(capsys, bench, "plan", "order_summary", "--keys-file", str(keys))
    assert code == 2 and error["error"].startswith(f"keys file {keys} is not UTF-8 text")


def test_a_keys_file_keeps_a_key_s_spaces_when_the_lake_holds_it_so(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                  bench: Bench) -> None:
    """Each line was stripped, so a partition key with a space at an end (" o-0000009") was patched as
    "o-0000009", a key without events, and the key itself was never corrected. Spaces stay when the lake holds
    the key with them; an editor's trailing spaces (or a CHAR column's padding) are trimmed as before."""
    spaced = [{**e, "partition_key": " o-0000009"} for e in order_events(9)]
    bench.ingest([*spaced, *(e for o in range(1, 4) for e in order_events(o))])
    bench.wb.close()
    keys = tmp_path / "keys.txt"
    keys.write_text(" o-0000009\no-0000002  \n\to-0000003\t\n o-0000002\n")
    code, plan = _call(capsys, bench, "plan", "order_summary", "--keys-file", str(keys))
    assert code == 0 and plan["keys"] == [" o-0000009", "o-0000002", "o-0000003"]
    code, run = _call(capsys, bench, "run", "order_summary", "--keys-file", str(keys))
    assert code == 0 and run["rows_written"] == 3
    assert sorted(bench.rows("order_summary", "shadow")["order_id"]) == [" o-0000009", "o-0000002", "o-0000003"]


def test_keys_that_name_no_key_are_refused_not_a_run_of_the_whole_view(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                      bench: Bench) -> None:
    bench.ingest(e for o in range(1, 4) for e in order_events(o))
    bench.wb.close()
    empty = tmp_path / "keys.txt"
    empty.write_text("\n  \n")  # the job that lists tonight's keys found none
    code, error = _call(capsys, bench, "run", "order_summary", "--keys-file", str(empty))
    assert code == 2 and error["error"].startswith(f"keys file {empty} lists no partition key: nothing to correct")
    code, error = _call(capsys, bench, "run", "order_summary", "--keys-file", str(bench.root))  # was "not found"
    assert code == 2 and error["error"] == f"keys file {bench.root} is a folder, not a file"
    os.mkfifo(pipe := tmp_path / "keys.fifo")  # `--keys-file <(psql ...)`: was "not found"
    code, error = _call(capsys, bench, "run", "order_summary", "--keys-file", str(pipe))
    assert code == 2 and error["error"] == f"keys file {pipe} is a pipe or a device, not a file: save it to a file and give that"
    code, error = _call(capsys, bench, "plan", "order_summary", "--keys", ",")
    assert code == 2 and error["error"].startswith("--keys ',' names no partition key")
    code, error = _call(capsys, bench, "plan", "order_summary", "--as-of", "")  # an unset variable: was a traceback
    assert code == 2 and error["error"] == ("--as-of is empty (is a variable of the job's command unset?): "
                                            "give a lake_version or a time")
    code, error = _call(capsys, bench, "lake", "ingest", str(bench.root / "batch-1.ndjson"), "--stream", "")
    assert code == 2 and error["error"].startswith("--stream '' is empty")  # was archived as the stream ''
    assert lake.Lake(str(bench.root / "lake")).snapshot().lake_version == 1
    code, plan = _call(capsys, bench, "plan", "order_summary", "--keys", "o-0000001, o-0000002")
    assert code == 0 and plan["keys"] == ["o-0000001", "o-0000002"]  # not " o-0000002", a key with no events


def test_cli_options_and_run_options_cannot_drift() -> None:
    """Every RunOptions field is a flag of `plan` and `run`, and they take no other option."""
    from rebuild.cli import _register

    _register()
    expected = {f.name for f in fields(RunOptions)}
    for name in ("plan", "run"):
        command = cli.commands[name]
        params = {p.name for p in command.params if isinstance(p, click.Option)} - {"json_out"}
        assert params == expected, name


def test_the_notebook_methods_show_every_run_option() -> None:
    """wb.plan and wb.run take the options as keywords: their signature (a notebook's Shift-Tab and
    tab completion) and help() list them all, with the CLI's help text, though the code says **kwargs."""
    import inspect

    from rebuild import Workbench

    for method in (Workbench.plan, Workbench.run):
        parameters = inspect.signature(method).parameters
        assert {f.name for f in fields(RunOptions)} <= set(parameters), method.__name__
        assert parameters["keys"].kind is inspect.Parameter.KEYWORD_ONLY and parameters["progress"].default == "auto"
        assert all(f"{f.name} ({f.metadata['flag']}): {f.metadata['help']}" in (method.__doc__ or "")
                   for f in fields(RunOptions))


def test_duckdb_out_of_memory_is_an_error_saying_what_to_raise(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Out of memory outside a projection's own query (the payload decoding's look at the first events,
    the lake reads) was DuckDB's traceback and exit 1."""
    source = write_ndjson(tmp_path / "in.ndjson", [e for o in range(1, 200) for e in order_events(o)])
    config = tmp_path / "workbench.toml"
    config.write_text('[lake]\nuri = "lake"\n[store]\nuri = "duckdb://views.duckdb"\n[duckdb]\nmemory_limit = "2MB"\n')
    at = ["--config", str(config)]
    for args, before in ((["lake", "ingest", str(source), "--stream", "orders"], []),
                         (["run", "order_summary"], ["--lake", str(tmp_path / "lake"), "lake", "ingest", str(source), "--stream", "orders"])):
        if before:
            assert main(before) == 0
        capsys.readouterr()
        assert main([*at, "--json", *args]) == 2, args
        error = json.loads(capsys.readouterr().out)
        assert error["kind"] == "OutOfMemory" and error["error"].startswith("Out of Memory Error: ")
        assert error["error"].endswith("raise [duckdb] memory_limit in workbench.toml (or give [duckdb] temp_directory "
                                       "room to spill, or lower threads), then rerun the same command")


def test_log_lines_are_stamped_in_utc_on_a_machine_in_another_zone(tmp_path: Path) -> None:
    """Under TZ=Pacific/Chatham a job's log said 17:47 (local, unmarked) next to run ids and records
    in UTC (03:47): its lines now carry the UTC time, marked Z."""
    env = {**os.environ, "TZ": "Pacific/Chatham"}
    before = datetime.now(UTC).replace(microsecond=0)
    done = subprocess.run([sys.executable, "-c", "from rebuild.cli import run; run()", "-v", "lake", "sample",
                           "--events", "200", "--days", "3", "--out", str(tmp_path / "lake")],
                          env=env, capture_output=True, text=True, check=True)
    first = done.stderr.splitlines()[0]
    stamp = datetime.strptime(first[:24], "%Y-%m-%d %H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert before <= stamp <= datetime.now(UTC), first


@pytest.mark.parametrize("store", [None, "parquet://views"])
def test_reading_commands_in_an_empty_folder_create_no_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str], store: str | None) -> None:
    """`rebuild ls` (and `runs`, `prune`) in a folder without workbench.toml created `.demo/views.duckdb`
    (or the Parquet store's folder): a read command made the store it found empty."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REBUILD_CONFIG", raising=False)
    monkeypatch.delenv("REBUILD_STORE_URI", raising=False)
    where = ["--store", store] if store else []
    code = main([*where, "ls"])
    out = " ".join(capsys.readouterr().out.split())
    demo = "" if store else " or `rebuild demo`"  # which writes only the default store, under .demo/
    assert code == 0 and "no store at " in out and f"yet (`rebuild run VIEW`{demo} makes one)" in out
    code = main([*where, "--json", "ls"])
    listed = json.loads(capsys.readouterr().out)
    assert code == 0 and listed["store_exists"] is False and listed["views_without_projection"] == []
    assert {v["live_rows"] for v in listed["views"]} == {None}
    assert main([*where, "runs"]) == 0 and "no runs of any view yet: no store at" in capsys.readouterr().out
    assert main([*where, "--json", "runs", "order_summary"]) == 0 and json.loads(capsys.readouterr().out) == {"runs": []}
    assert main([*where, "--json", "prune", "--older-than", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["runs"] == []
    assert main([*where, "prune", "--older-than", "0"]) == 0
    assert "no store at " in " ".join(capsys.readouterr().out.split())
    assert main([*where, "--json", "runs", "nope"]) == 2  # a misspelt view is still an error
    assert list(tmp_path.iterdir()) == []


def test_plan_creates_no_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """`rebuild plan` (which writes nothing) created the DuckDB file or Parquet directory store it planned
    against when there was none yet, as `ls` did."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REBUILD_CONFIG", raising=False)
    assert main(["--json", "lake", "sample", "--events", "2000", "--seed", "1", "--out", "lake"]) == 0
    capsys.readouterr()
    for store in ("views.duckdb", "parquet://views"):
        assert main(["--lake", "lake", "--store", store, "--json", "plan", "order_summary"]) == 0
        assert json.loads(capsys.readouterr().out)["mode"] == "full"
    assert [p.name for p in tmp_path.iterdir()] == ["lake"]


@pytest.mark.parametrize("no_decode", [False, True])
def test_lake_compact_and_audit_run_within_the_configured_duckdb_settings(
        capsys: pytest.CaptureFixture[str], bench: Bench, monkeypatch: pytest.MonkeyPatch, no_decode: bool) -> None:
    """`rebuild lake compact` and `rebuild lake audit` opened DuckDB with its defaults (80% of the machine's
    memory, a spill folder in the system temp dir): a job's [duckdb] memory_limit, temp_directory and threads
    did not reach them, as they reach ingest and the run."""
    import lake.audit as audit_module
    import lake.compact as compact_module

    for batch in range(3):  # three commits: small files to compact
        bench.ingest(e for n in range(batch * 20, batch * 20 + 20) for e in order_events(n))
    bench.wb.close()
    spill = bench.root / "spill"
    monkeypatch.setenv("REBUILD_MEMORY_LIMIT", "123MB")
    monkeypatch.setenv("REBUILD_TEMP_DIRECTORY", str(spill))
    seen = []

    def settings(con: Any) -> tuple[Any, ...]:
        return con.sql("SELECT current_setting('memory_limit'), current_setting('temp_directory')").fetchall()[0]  # type: ignore[no-any-return]

    def spy_read(target: Any, filter: Any, con: Any = None, **options: Any) -> Any:
        seen.append(("audit", *settings(con)))
        return read_events(target, filter, con=con, **options)

    def spy_write(con: Any, *args: Any) -> Any:
        seen.append(("compact", *settings(con)))
        return write_partition(con, *args)

    read_events, write_partition = audit_module.read_events, compact_module.write_partition
    monkeypatch.setattr(audit_module, "read_events", spy_read)
    monkeypatch.setattr(compact_module, "write_partition", spy_write)
    code, done = _call(capsys, bench, "lake", "compact", *(["--no-decode"] if no_decode else []))
    assert code == 0 and done["partitions"] > 0
    assert _call(capsys, bench, "lake", "audit")[0] == 0
    wanted = duckdb.connect()
    wanted.execute("SET memory_limit = '123MB'")
    limit = wanted.sql("SELECT current_setting('memory_limit')").fetchall()[0][0]
    assert {kind for kind, *_ in seen} == {"compact", "audit"}
    assert {tuple(rest) for _, *rest in seen} == {(limit, str(spill))}


NOISY = '''from rebuild import projection

print("module imported")


@projection(name="noisy", key="order_id", engine="python", output={"order_id": "VARCHAR", "events": "BIGINT"})
def noisy(partition_key, events):
    print("folding", partition_key)
    return {"order_id": partition_key, "events": sum(1 for _ in events)}
'''


def test_under_json_what_projections_print_goes_to_stderr_not_into_the_json(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A print in a projection module or fold (debugging, a library's) went to stdout beside the one JSON
    object, so a scheduler's parse of `rebuild --json run` failed; a fold on --executor processes printed
    from worker processes, which write to the job's file descriptor 1 themselves."""
    (tmp_path / "noisy.py").write_text(NOISY)
    config = tmp_path / "workbench.toml"
    config.write_text('[lake]\nuri = "lake"\n[store]\nuri = "duckdb://v.duckdb"\n[projections]\nmodules = ["noisy.py"]\n')
    source = write_ndjson(tmp_path / "in.ndjson", [e for o in range(1, 4) for e in order_events(o)])
    assert main(["--config", str(config), "lake", "ingest", str(source), "--stream", "orders"]) == 0
    capsys.readouterr()
    assert main(["--config", str(config), "--json", "run", "noisy"]) == 0  # main() in this process
    out, err = capsys.readouterr()
    assert json.loads(out)["rows_written"] == 3 and "module imported" in err
    rebuild = Path(sys.executable).parent / "rebuild"
    for executor in (["local"], ["processes", "--workers", "2"]):  # a fold forks; spawned workers import the module
        job = subprocess.run([str(rebuild), "--config", str(config), "--json", "run", "noisy", "--full", "--executor",
                              *executor], capture_output=True, text=True, timeout=300)
        assert job.returncode == 0, job.stderr
        assert json.loads(job.stdout)["rows_written"] == 3, executor  # exactly one JSON object
        # the fold's processes print at once: their words may interleave ("folding folding o-0000001o-...")
        assert "module imported" in job.stderr and "folding" in job.stderr and "o-0000002" in job.stderr, executor


@pytest.mark.parametrize("damage", ["missing", "cut off"])
def test_a_lake_copied_without_all_of_its_log_is_an_error_saying_to_copy_it_again(
        capsys: pytest.CaptureFixture[str], tmp_path: Path, damage: str) -> None:
    """A lake copied to a new place by a copy that did not finish (cp or rsync stopped, a restore that
    missed a file) lacks a log entry or has one cut off: every command died with delta-rs' "Kernel
    error" as an unexpected error, exit 70, saying to report a bug of the workbench."""
    for n in range(1, 4):
        lake.ingest(lake.Lake(tmp_path / "lake"), [write_ndjson(tmp_path / f"{n}.ndjson", order_events(n))], stream="orders")
    shutil.copytree(tmp_path / "lake", tmp_path / "copy")
    log = sorted((tmp_path / "copy" / "events" / "_delta_log").glob("*.json"))
    if damage == "missing":
        log[1].unlink()
    else:
        log[-1].write_bytes(log[-1].read_bytes()[:300])
    for command in (["ls"], ["run", "order_summary"], ["lake", "audit"]):
        code = main(["--lake", str(tmp_path / "copy"), "--store", f"duckdb://{tmp_path}/views.duckdb", *command, "--json"])
        error = json.loads(capsys.readouterr().out)["error"]
        assert code == 2 and f"the Delta log of {tmp_path / 'copy' / 'events'} cannot be read" in error, error
        assert "copy or restore the whole lake folder again" in error and "\n" not in error
    assert main(["--lake", str(tmp_path / "lake"), "--store", f"duckdb://{tmp_path}/views.duckdb", "ls", "--json"]) == 0


def test_ls_on_an_older_copy_of_the_lake_says_live_is_ahead_not_up_to_date(
        capsys: pytest.CaptureFixture[str], bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store kept while the lake was restored from an older backup (or moved and mixed up with
    another copy): live was built from lake_version 2, the lake has 1, and `ls` said "0 versions,
    0 events" behind, as if live were up to date."""
    bench.ingest(order_events(1))
    shutil.copytree(bench.root / "lake", bench.root / "backup")
    bench.ingest(order_events(2))
    bench.rebuild_live("order_summary")
    bench.wb.close()
    shutil.rmtree(bench.root / "lake")
    (bench.root / "backup").rename(bench.root / "lake")
    monkeypatch.setenv("COLUMNS", "400")  # one line per row, whatever projections other tests registered
    assert main(["--lake", str(bench.root / "lake"), "--store", f"duckdb://{bench.root}/views.duckdb", "ls"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "│ order_summary " in line)
    assert "ahead: 2 > lake's 1" in row and "versions" not in row
    assert ("live of order_summary was built from a later lake_version than this lake has: the lake is an older "
            "copy (a backup restored?) or another one") in " ".join(out.split())


@pytest.mark.parametrize("closed", [1, 2])
def test_a_job_started_with_stdout_or_stderr_closed_runs_and_exits_as_it_should(tmp_path: Path, closed: int) -> None:
    """A launcher that closes stdout or stderr (`rebuild ... >&-`) got exit 1 ("checks failed") and a
    traceback before any command ran: Python has no stream for a closed descriptor. Now the command runs,
    its exit code says how, and the stream left open still says what it says."""
    rebuild = Path(sys.executable).parent / "rebuild"
    at = [str(rebuild), "--lake", str(tmp_path / "lake"), "--store", f"duckdb://{tmp_path}/views.duckdb"]

    def job(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*at, *args], capture_output=True, text=True, timeout=120,
                              preexec_fn=lambda: os.close(closed))

    made = job("lake", "sample", "--events", "500", "--days", "3", "--out", str(tmp_path / "lake"), "--json")
    assert made.returncode == 0, made.stderr
    ran = job("run", "order_summary", "--json")
    assert ran.returncode == 0, ran.stderr
    refused = job("run", "nope", "--json")
    assert refused.returncode == 2
    if closed == 1:
        assert refused.stdout == "" and logged(refused.stderr).startswith("error (ProjectionError, exit 2): ")
    else:
        assert json.loads(refused.stdout)["exit_code"] == 2 and refused.stderr == ""
        assert json.loads(ran.stdout)["status"] == "shadow"
    assert job("ls", "--json").returncode == 0


def _latin1_locale(folder: Path) -> dict[str, str] | None:
    """A Latin-1 locale of its own (LOCPATH), as legacy servers have; None where localedef cannot make one."""
    done = subprocess.run(["localedef", "-i", "de_DE", "-f", "ISO-8859-1", str(folder / "de_DE.ISO-8859-1")],
                          capture_output=True) if shutil.which("localedef") else None
    return {"LOCPATH": str(folder), "LANG": "de_DE.ISO-8859-1"} if done and done.returncode == 0 else None


@pytest.mark.parametrize("locale", ["C", "latin-1"])
def test_a_non_ascii_argument_is_read_as_utf8_under_a_locale_of_another_encoding(tmp_path: Path, locale: str) -> None:
    """A crontab's `--stream zählung` (UTF-8, as crontabs are) under a Latin-1 locale was archived as the stream
    `zÃ¤hlung`, silently, and under C without Python's UTF-8 mode it was a traceback (exit 70); bytes that are no
    UTF-8 under C were a traceback too, and are now refused saying why."""
    own = {"LC_ALL": "C"} if locale == "C" else _latin1_locale(tmp_path)
    if own is None:
        pytest.skip("localedef cannot make a Latin-1 locale here")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_")} | own | {"PYTHONUTF8": "0"}
    source = write_ndjson(tmp_path / "in.ndjson", [event(1)])
    rebuild = Path(sys.executable).parent / "rebuild"
    ingest = [os.fsencode(a) for a in (rebuild, "--lake", tmp_path / "lake", "lake", "ingest", source, "--json", "--stream")]
    done = subprocess.run([*ingest, "zählung".encode()], env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["stream"] == "zählung"
    assert lake.read_events(lake.Lake(tmp_path / "lake")).project("stream").fetchall() == [("zählung",)]
    if locale == "C":  # on a Latin-1 locale, Latin-1 bytes are that locale's text: read as such
        refused = subprocess.run([*ingest, "zählung".encode("latin-1")], env=env, capture_output=True, timeout=120)
        assert refused.returncode == 2 and b"the argument 'z\\xe4hlung' is not UTF-8 text" in refused.stderr


@pytest.mark.parametrize("module", ["rebuild", "rebuild.cli"])
def test_python_dash_m_runs_the_command(tmp_path: Path, module: str) -> None:
    """A scheduler given only an interpreter runs ``python -m rebuild``; ``-m rebuild.cli`` did nothing, exit 0."""
    done = subprocess.run([sys.executable, "-m", module, "--lake", str(tmp_path / "none"), "--json", "lake", "audit"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and json.loads(done.stdout)["kind"] == "LakeNotFound", done.stderr


def test_control_characters_an_error_quotes_are_shown_in_the_jobs_log_not_obeyed(
        capsys: pytest.CaptureFixture[str]) -> None:
    """DuckDB's error for a damaged page quotes the bytes it read ("don't know what type: \\x0e"), and a lake
    file's or record's text may hold any: a carriage return overwrote the log line on a terminal, an escape
    sequence cleared it, a log shipper split on them. The error (JSON and log line) and every log line show them."""
    from rebuild.output import Output
    from rebuild.progress import utc_formatter

    quoted = "lake file x.parquet cannot be read (don't know what type: \x0e, \r\x1b[2J\x7f)"
    Output(json=True).error(quoted, 2, "CorruptFile")
    captured = capsys.readouterr()
    shown = "don't know what type: ⟨U+000E⟩, ⟨U+000D⟩⟨U+001B⟩[2J⟨U+007F⟩)"
    assert json.loads(captured.out)["error"].endswith(shown) and captured.err.rstrip("\n").endswith(shown)
    line = utc_formatter().format(logging.LogRecord("lake", logging.WARNING, __file__, 0, "%s\tand\n%s", (quoted, "next"), None))
    assert line.endswith(f"{shown}\tand\nnext")  # a tab and a line break stay what they are
    assert utc_formatter().format(logging.LogRecord("lake", logging.ERROR, __file__, 0, "\x1b[31mred\x1b[0m", None,
                                                    None)).endswith(" ERROR lake: red")  # a library's colours dropped
