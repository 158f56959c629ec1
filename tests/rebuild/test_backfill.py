"""``rebuild backfill``: chunks, resume after kill -9 of a real process, exit codes, progress lines."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from lake import Lake
from rebuild import Config, ConfigError, Workbench
from rebuild.backfill import HEADER, chunk_text, chunks, parse_chunk, resume_command
from rebuild.cli import main
from tests.stores.conftest import orders_lake, orders_lake_template  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
VIEW = "order_summary"
RANGE = ["--since", "2026-09-02", "--until", "2026-09-08", "--chunk", "1d"]
#: the CLI in a process that announces each chunk and stalls after the second, to be killed there
SLOW = """
import sys, time
import rebuild.backfill as bf
real, done = bf.execute, []
def slow(*args, **kwargs):
    result = real(*args, **kwargs)
    done.append(1)
    print("chunk-done", flush=True)
    time.sleep(60 if len(done) == 2 else 0)
    return result
bf.execute = slow
from rebuild.cli import main
sys.exit(main(sys.argv[1:]))
"""


def cli(lake: Lake, store: str, *args: str, code: str = "from rebuild.cli import run; run()") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, "--lake", lake.uri, "--store", store, *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def shadow(lake: Lake, store: str) -> pl.DataFrame:
    with Workbench(Config(lake_uri=lake.uri, store_uri=store)) as wb:
        return wb.view(VIEW, "shadow").sort("order_id")


def test_chunks_and_durations() -> None:
    t0 = datetime(2026, 9, 1, tzinfo=UTC)
    assert parse_chunk("6h") == timedelta(hours=6) and parse_chunk("2w") == timedelta(weeks=2)
    assert chunks(t0, t0 + timedelta(hours=30), timedelta(hours=12))[-1] == (t0 + timedelta(hours=24), t0 + timedelta(hours=30))
    with pytest.raises(ConfigError):
        parse_chunk("1 fortnight")


@pytest.mark.parametrize("chunk, since", [("99999999999w", "2026-09-01"), ("1w", "0001-01-01"), ("30m", "1026-09-01")])
def test_huge_chunks_and_ranges_are_config_errors(chunk: str, since: str) -> None:
    # a chunk past the calendar (was OverflowError), or a year typo cutting the range into
    # millions of chunks (was gigabytes of memory and a job running for months)
    t0 = datetime(2026, 9, 1, tzinfo=UTC)
    with pytest.raises(ConfigError, match="--chunk"):
        chunks(datetime.fromisoformat(since).replace(tzinfo=UTC), t0 + timedelta(days=1), parse_chunk(chunk))
    assert chunks(t0, t0 + timedelta(days=1), parse_chunk("9999999w")) == [(t0, t0 + timedelta(days=1))]  # one chunk


def test_a_backfill_given_in_a_zone_is_cut_in_utc_also_across_its_dst_gap(orders_lake: Lake, tmp_path: Path) -> None:  # noqa: F811
    """wb.backfill with times of a zone (a ZoneInfo datetime, a pandas Timestamp with tz) cut the range by that
    zone's wall clock: the chunk ending in its spring-forward gap ended where it began, and the backfill stopped
    halfway with "--since 2026-09-06T00:00:00-04:00 is not before --until 2026-09-06T01:00:00-03:00"."""
    santiago = ZoneInfo("America/Santiago")  # its clocks go from 00:00 to 01:00 on 2026-09-06
    since, until = datetime(2026, 9, 5, 20, tzinfo=santiago), datetime(2026, 9, 6, 4, tzinfo=santiago)
    with Workbench(Config(lake_uri=orders_lake.uri, store_uri=str(tmp_path / "zoned.duckdb"))) as wb:
        assert wb.backfill(VIEW, since=since, until=until, chunk="1h", progress="none").chunks == 7  # 00:00 to 07:00 UTC
    reference = str(tmp_path / "reference.duckdb")
    assert main(["--lake", orders_lake.uri, "--store", reference, "--json", "backfill", VIEW, "--since", "2026-09-06T00:00",
                 "--until", "2026-09-06T07:00", "--chunk", "7h", "--progress", "none"]) == 0
    expected = shadow(orders_lake, reference)
    assert expected.height > 0 and shadow(orders_lake, str(tmp_path / "zoned.duckdb")).equals(expected)


def test_killed_backfill_resumes_to_the_same_shadow(orders_lake: Lake, tmp_path: Path) -> None:  # noqa: F811
    store = str(tmp_path / "views.duckdb")
    first = cli(orders_lake, store, "backfill", VIEW, *RANGE, "--progress", "log", code=SLOW)
    assert first.stdout is not None
    assert [first.stdout.readline().strip() for _ in range(2)] == ["chunk-done", "chunk-done"]
    locked = cli(orders_lake, store, "--json", "backfill", VIEW, *RANGE)  # a second job meanwhile
    out, _ = locked.communicate(timeout=60)
    assert locked.returncode == 2 and "locked" in json.loads(out)["error"]
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = cli(orders_lake, store, "--json", "backfill", VIEW, *RANGE, "--progress", "log")
    out, err = second.communicate(timeout=60)
    assert second.returncode == 0, err
    result = json.loads(out)
    assert result["chunks"] == 6 and result["skipped"] == 2
    assert "chunks (" in err and "left)" in err  # --progress log: one line per chunk with rate and time left
    reference = str(tmp_path / "reference.duckdb")
    assert main(["--lake", orders_lake.uri, "--store", reference, "--json", "backfill", VIEW, *RANGE, "--progress", "none"]) == 0
    expected = shadow(orders_lake, reference)
    assert expected.height > 0 and shadow(orders_lake, store).equals(expected)


def test_backfill_exit_codes(orders_lake: Lake, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    store = str(tmp_path / "views")
    base = ["--lake", orders_lake.uri, "--store", store, "--json", "backfill", VIEW]
    assert main([*base, "--since", "2026-09-02"]) == 2
    assert "--until" in json.loads(capsys.readouterr().out)["error"]
    assert main([*base, "--since", "2026-09-05", "--until", "2026-09-02"]) == 2
    assert main([*base, "--since", "2026-09-02", "--until", "2026-09-04", "--chunk", "1y"]) == 2
    capsys.readouterr()
    assert main([*base, "--buckets", "--progress", "none"]) == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "full"
    assert main([*base, "--since", "2026-09-02", "--until", "2026-09-04", "--progress", "none"]) == 0
    assert json.loads(capsys.readouterr().out)["chunks"] == 2


def test_a_backfill_of_a_view_without_live_says_its_patch_cannot_be_cut_over(orders_lake: Lake, tmp_path: Path) -> None:  # noqa: F811
    """The cron line of the README (backfill, then check) on a view not yet live: both exited 0 and the
    check said "`rebuild cutover VIEW`", which then refused ("no live view to apply a partial shadow to"):
    the night's work was found unusable only the next morning, at the last step."""
    store = str(tmp_path / "views.duckdb")

    def job(*args: str) -> tuple[int, str, str]:  # in tmp_path, where the check writes its report
        done = subprocess.run([sys.executable, "-m", "rebuild", "--lake", orders_lake.uri, "--store", store, "--json",
                               *args], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        return done.returncode, done.stdout, done.stderr

    code, _, log = job("backfill", VIEW, *RANGE, "--progress", "log")
    assert code == 0 and (f"WARNING rebuild.backfill: {VIEW} has no live view: this backfill makes a patch, which "
                          f"cutover applies only to live; `rebuild run {VIEW} --full` builds the whole view") in log
    code, out, _ = job("check", VIEW, "--progress", "none")
    checked = json.loads(out)
    assert code == 0 and checked["next"].startswith(f"this patch cannot be cut over: there is no live {VIEW}")
    assert job("cutover", VIEW)[0] == 2  # as the check says
    command = re.search(r"`rebuild (run [^`]+)`", checked["next"])
    assert command and job(*command.group(1).split(), "--progress", "none")[0] == 0
    code, out, _ = job("check", VIEW, "--progress", "none")
    assert code == 0 and json.loads(out)["next"].startswith(f"`rebuild cutover {VIEW}`")
    assert job("cutover", VIEW)[0] == 0
    code, _, log = job("backfill", VIEW, *RANGE, "--progress", "log")  # live now: no warning
    assert code == 0 and "no live view" not in log


def _kill_after_two_chunks(target: Lake, store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A backfill of RANGE killed (-9) after its second chunk: an unfinished job to rerun."""
    monkeypatch.setenv("REBUILD_FAULT_POINT", "backfill.after_chunk:2")
    killed = cli(target, store, "backfill", VIEW, *RANGE)
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    monkeypatch.delenv("REBUILD_FAULT_POINT")


def test_a_refused_check_of_an_unfinished_backfill_names_the_command_that_finishes_it(
        orders_lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    """It said "rerun the same `rebuild backfill` command", which the operator of a failed night (or of a
    notebook's job) had to find; the command it names now resumes the job."""
    store = str(tmp_path / "views.duckdb")
    _kill_after_two_chunks(orders_lake, store, monkeypatch)
    assert main(["--lake", orders_lake.uri, "--store", store, "--json", "check", VIEW]) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    [command] = re.findall(r"rerun `rebuild (backfill [^`]+)` \(wb\.backfill\(", error)
    assert command.endswith("--chunk 1d")
    assert main(["--lake", orders_lake.uri, "--store", store, "--json", *command.split(), "--progress", "none"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == 2


def test_the_command_that_finishes_a_backfill_takes_its_chunk_from_the_job_not_its_label(
        orders_lake: Lake, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    """The command was cut from the header row's label (`... by 24 h`): `--chunk 24 h`, which the shell splits
    and the CLI refuses (exit 2). It is now made of the job's params, also of a header row an earlier version
    wrote (it wrote the same params), and names a chunk the job resumes with."""
    store = str(tmp_path / "views.duckdb")
    with Workbench(Config(lake_uri=orders_lake.uri, store_uri=store)) as wb:
        done = wb.backfill(VIEW, since=RANGE[1], until=RANGE[3], chunk="24 h", progress="none")
        [header] = [m for m in wb.store.marks(VIEW) if m.item == HEADER]
        assert header.label.endswith(" by 24 h")  # as every version wrote it
        wb.store.put_mark(dataclasses.replace(header, status="started"))  # as a job killed after its last chunk
        said = resume_command(wb.store, VIEW, done.job_id)
    [command] = re.findall(r"`rebuild (backfill [^`]+)`", said)
    assert command.endswith("--chunk 1d") and said.endswith("chunk='1d'))")
    assert main(["--lake", orders_lake.uri, "--store", store, "--json", *shlex.split(command), "--progress", "none"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == done.chunks == 6


@pytest.mark.parametrize("chunk, text", [("90m", "90m"), ("60m", "1h"), ("36h", "36h"), ("14d", "2w"), ("9999999w", "9999999w")])
def test_a_chunk_is_named_in_the_largest_unit_that_divides_it(chunk: str, text: str) -> None:
    assert chunk_text(parse_chunk(chunk)) == text and parse_chunk(text) == parse_chunk(chunk)


def test_a_rerun_with_other_arguments_says_it_does_not_resume(orders_lake: Lake, tmp_path: Path,  # noqa: F811
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    # the job log said nothing: the interrupted job's chunks were silently thrown away
    store = str(tmp_path / "views.duckdb")
    _kill_after_two_chunks(orders_lake, store, monkeypatch)
    caplog.set_level(logging.WARNING, logger="rebuild.backfill")
    other = ["--since", "2026-09-02", "--until", "2026-09-10", "--chunk", "1d"]
    assert main(["--lake", orders_lake.uri, "--store", store, "--json", "backfill", VIEW, *other, "--progress", "none"]) == 0
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "not resumed" in warning and "2026-09-08" in warning and "2 parts done" in warning
    caplog.clear()  # the same arguments again: nothing unfinished is left behind, no warning
    assert main(["--lake", orders_lake.uri, "--store", store, "--json", "backfill", VIEW, *other, "--progress", "none"]) == 0
    assert "not resumed" not in " ".join(r.getMessage() for r in caplog.records)


#: the CLI of the workbench before 2026-11-24, whose fingerprint was of the code's text as written
OLD_FINGERPRINT = """
import sys
from rebuild.projection import Projection
Projection.fingerprint = Projection.legacy_fingerprint
from rebuild.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_backfill_of_other_code_says_so_not_that_it_was_asked_other_arguments(
        orders_lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
        caplog: pytest.LogCaptureFixture) -> None:
    """Rerun with the same arguments after the projection's code changed, it said "it was asked other arguments
    ... rerun it with its own": the arguments it had been asked, which could not finish it either."""
    store = str(tmp_path / "views.duckdb")
    monkeypatch.setenv("REBUILD_FAULT_POINT", "backfill.after_chunk:2")
    killed = cli(orders_lake, store, "backfill", VIEW, *RANGE, code=OLD_FINGERPRINT.replace(
        "Projection.legacy_fingerprint", "property(lambda self: 'other code')"))
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    monkeypatch.delenv("REBUILD_FAULT_POINT")
    caplog.set_level(logging.WARNING, logger="rebuild.backfill")
    assert main(["--lake", orders_lake.uri, "--store", store, "--json", "backfill", VIEW, *RANGE, "--progress", "none"]) == 0
    assert "not resumed: other code of the projection started it" in caplog.text
    assert "asked other arguments" not in caplog.text and "rerun it with its own" not in caplog.text


#: the CLI of the workbench before 2026-11-25, whose fingerprint took the consumes and streams lists as given
#: (order_summary's consumes are not sorted)
UNSORTED_FINGERPRINT = """
import importlib, sys
importlib.import_module("rebuild.fingerprint")._order_free = lambda decorators: None
importlib.import_module("rebuild.projection")._sorted_once = lambda names: names
from rebuild.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("before", [OLD_FINGERPRINT, UNSORTED_FINGERPRINT])
def test_a_backfill_killed_before_the_upgrade_resumes_after_it(orders_lake: Lake, tmp_path: Path,  # noqa: F811
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture, before: str) -> None:
    """Its job holds the fingerprint an earlier workbench gave the code (of its text; of its consumes in the
    order listed): rerun with the same arguments after the upgrade, it was "not resumed: other code of the
    projection started it" and started over, its done chunks thrown away."""
    store = str(tmp_path / "views.duckdb")
    monkeypatch.setenv("REBUILD_FAULT_POINT", "backfill.after_chunk:2")
    killed = cli(orders_lake, store, "backfill", VIEW, *RANGE, code=before)
    killed.communicate(timeout=60)
    assert killed.returncode == -signal.SIGKILL
    monkeypatch.delenv("REBUILD_FAULT_POINT")
    caplog.set_level(logging.WARNING, logger="rebuild.backfill")
    with Workbench(Config(lake_uri=orders_lake.uri, store_uri=store)) as wb:
        started = {json.loads(m.params)["fingerprint"] for m in wb.store.marks(VIEW)}
        assert len(started) == 1 and wb.projection(VIEW).fingerprint not in started  # another fingerprint
        assert wb.backfill(VIEW, since=RANGE[1], until=RANGE[3], chunk="1d", progress="none").skipped == 2
    assert "not resumed" not in caplog.text
    reference = str(tmp_path / "reference.duckdb")
    assert main(["--lake", orders_lake.uri, "--store", reference, "--json", "backfill", VIEW, *RANGE, "--progress", "none"]) == 0
    expected = shadow(orders_lake, reference)
    assert expected.height > 0 and shadow(orders_lake, store).equals(expected)


def test_a_backfill_whose_pinned_files_were_vacuumed_starts_over(orders_lake: Lake, tmp_path: Path,  # noqa: F811
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """An unfinished backfill, then the nightly `lake compact` and `lake vacuum` past the retention: each
    rerun resumed the pinned snapshot, whose files were deleted, and failed 'cannot be read ... restore
    it, or rerun with --skip-corrupted', so the backfill could never be finished with its arguments."""

    import lake as lake_pkg
    from tests.conftest import write_ndjson
    from tests.stores.conftest import orders_lake_events

    more = write_ndjson(tmp_path / "more.ndjson", orders_lake_events(10, first=40))
    lake_pkg.ingest(orders_lake, [more], stream="orders")  # a second commit: files for compaction to replace
    store = str(tmp_path / "views.duckdb")
    _kill_after_two_chunks(orders_lake, store, monkeypatch)
    _compact_and_vacuum(orders_lake)
    caplog.set_level(logging.WARNING, logger="rebuild.backfill")
    args = ["--lake", orders_lake.uri, "--store", store, "--json", "backfill", VIEW, *RANGE, "--progress", "none"]
    assert main(args) == 0
    assert "cannot resume" in caplog.text and "lake vacuum" in caplog.text
    with Workbench(Config(lake_uri=orders_lake.uri, store_uri=store)) as wb:
        backfilled = wb.view(VIEW, "shadow").sort("order_id")
        wb.run(VIEW, since="2026-09-02", until="2026-09-08", progress="none")
        assert wb.view(VIEW, "shadow").sort("order_id").equals(backfilled)


def test_a_plan_whose_pinned_files_were_vacuumed_says_to_plan_again(orders_lake: Lake, tmp_path: Path) -> None:  # noqa: F811
    """A plan made, then `lake compact` and `lake vacuum` past the retention: wb.execute(plan) failed with
    'lake file ... cannot be read; restore it, or rerun with --skip-corrupted', as if the lake were damaged."""

    import lake as lake_pkg
    from rebuild import PlanOutdated
    from tests.conftest import write_ndjson
    from tests.stores.conftest import orders_lake_events

    lake_pkg.ingest(orders_lake, [write_ndjson(tmp_path / "more.ndjson", orders_lake_events(10, first=40))],
                    stream="orders")
    with Workbench(Config(lake_uri=orders_lake.uri, store_uri=str(tmp_path / "views.duckdb"))) as wb:
        plan = wb.plan(VIEW)
        _compact_and_vacuum(orders_lake)
        with pytest.raises(PlanOutdated, match=r"lost .*\.parquet, which compaction replaced and `rebuild lake "
                                                r"vacuum` deleted; make a new plan \(wb.plan\('order_summary'"):
            wb.execute(plan, progress="none")
        assert not wb.store.exists(f"{VIEW}__shadow")
        assert wb.run(VIEW, progress="none").record.rows_written == 50  # a new plan runs


def _compact_and_vacuum(target: Lake) -> None:
    """Compaction replaces the lake's files, and a vacuum without retention deletes the replaced ones."""
    from deltalake import DeltaTable

    from lake.compact import compact

    compact(target)
    for name in ("events", "quarantine"):
        if (Path(target.table_uri(name)) / "_delta_log").exists():
            DeltaTable(target.table_uri(name)).alter.set_table_properties(
                {"delta.deletedFileRetentionDuration": "interval 0 hours"})
    assert target.vacuum(0)["events"]["files"] > 0
