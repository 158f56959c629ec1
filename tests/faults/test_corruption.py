"""Corrupted lake files, permission errors and a full disk.

- A truncated, overwritten, bit-flipped or missing Parquet file is named (path and error) by
  ``rebuild lake audit``; a run that meets it fails with ``CorruptFile`` (``file=``), or with
  ``--skip-corrupted`` leaves it out and says so in the run record.
- A write refused mid-way (read-only folder, ``RLIMIT_FSIZE`` as a full disk) leaves nothing
  half done: the lake and the store are as before, and a rerun with room completes.
"""

from __future__ import annotations

import json
import os
import random
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import lake
from lake.audit import audit
from lake.read import CorruptFile, check_files
from rebuild import Config, Workbench
from rebuild.cli import main
from rebuild.workbench import _run_facts
from tests.faults.conftest import ROOT, VIEW, event_ids, load_json, new_orders, run_cli, run_python, same, store_state


def _damage(path: str, how: str) -> None:
    data = Path(path).read_bytes()
    if how == "truncated":
        Path(path).write_bytes(data[: len(data) // 2])
    elif how == "overwritten":
        Path(path).write_bytes(random.Random(7).randbytes(len(data)))
    elif how == "empty":
        Path(path).write_bytes(b"")
    elif how == "missing":
        Path(path).unlink()


@pytest.mark.parametrize("how", ["truncated", "overwritten", "empty", "missing"])
def test_a_damaged_file_is_named_by_the_audit_and_by_the_run(fault_lake: lake.Lake, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str], how: str) -> None:
    victim = fault_lake.snapshot().files[5]
    _damage(victim.path, how)
    report = audit(lake.Lake(fault_lake.uri))
    assert [b.path for b in report.bad_files] == [victim.path] and report.files_checked > 16
    assert report.to_dict()["events"] == sum(event_ids_ok(fault_lake, victim.path).values())
    base = ["--lake", fault_lake.uri, "--store", str(tmp_path / "views.duckdb"), "--json"]
    assert main([*base, "lake", "audit"]) == 1
    assert load_json(capsys.readouterr().out)["bad_files"][0]["path"] == victim.path

    with Workbench(Config(lake_uri=fault_lake.uri, store_uri=str(tmp_path / "views.duckdb"),
                                   reports_dir=str(tmp_path / "reports"))) as wb:
        with pytest.raises(CorruptFile) as failed:
            wb.run(VIEW, progress="none")
        assert failed.value.file == victim.path and "--skip-corrupted" in str(failed.value)  # type: ignore[attr-defined]
        assert not wb.store.exists(f"{VIEW}__shadow") and wb.store.runs() == []
        result = wb.run(VIEW, skip_corrupted=True, progress="none")
        assert result.plan.skipped_files == (victim.path,) and "SKIPPED 1" in result.summary()
        record = wb.store.run(result.run_id)
        assert record is not None and json.loads(record.plan)["skipped_files"] == [victim.path]
        assert _run_facts(record)["skipped_files"] == [victim.path]  # what the check report shows
        assert record.events_read == sum(f.rows for f in fault_lake.snapshot().files) - victim.rows
        notes = wb.check(VIEW).notes  # the report's verdict, and `rebuild check`'s text, say what is missing
        assert any(f"left out 1 unreadable lake file(s) (--skip-corrupted), so the view lacks their events: {victim.path}"
                   in n for n in notes)


def event_ids_ok(target: lake.Lake, bad: str) -> dict[str, int]:
    snapshot = target.snapshot()
    from dataclasses import replace

    good = replace(snapshot, files=tuple(f for f in snapshot.files if f.path != bad))
    rows = lake.read_events(target, snapshot=good).aggregate("event_id, count(*)").fetchall()
    return {r[0]: r[1] for r in rows}


def test_cli_run_error_names_the_file_and_skip_is_reported(fault_lake: lake.Lake, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    victim = fault_lake.snapshot().files[2].path
    _damage(victim, "truncated")
    base = ["--lake", fault_lake.uri, "--store", str(tmp_path / "views.duckdb"), "--json", "run", VIEW]
    assert main(base) == 2
    error = load_json(capsys.readouterr().out)
    assert error["kind"] == "CorruptFile" and victim in error["error"]
    assert main([*base, "--skip-corrupted", "--progress", "none"]) == 0
    assert load_json(capsys.readouterr().out)["plan"]["skipped_files"] == [victim]


@pytest.mark.parametrize("how", ["truncated", "overwritten", "empty", "missing", "manifest"])
def test_a_parquet_store_damaged_by_hand_is_a_store_error_naming_the_file(fault_lake: lake.Lake, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str],
                                                                          how: str) -> None:
    # were tracebacks (ArrowInvalid, JSONDecodeError, duckdb's IOException) or "free space"
    store = tmp_path / "views"
    base = ["--lake", fault_lake.uri, "--store", f"parquet://{store}", "--json"]
    for args in (["run", VIEW, "--progress", "none"], ["cutover", VIEW, "--force"], ["run", VIEW, "--full", "--progress", "none"]):
        assert main([*base, *args]) == 0
    capsys.readouterr()
    manifest = json.loads((store / "_manifest.json").read_text())
    victim = store / ("_manifest.json" if how == "manifest" else f"data/{manifest['tables'][VIEW][0]}")
    _damage(str(victim), "truncated" if how == "manifest" else how)
    for args in (["ls"], ["check", VIEW], ["runs"], ["backfill", VIEW, "--since", "2026-09-01", "--until", "2026-09-03"]):
        if how != "manifest" and args[0] in ("runs", "backfill"):
            continue  # they do not read live's rows
        assert main([*base, *args]) == 2, args
        error = load_json(capsys.readouterr().out)
        assert error["kind"] == "StoreError" and str(victim) in error["error"] and "outside the workbench" in error["error"]
    if how != "manifest":  # as the error says: a full run cut over replaces the damaged live view
        assert (json.loads((store / "_manifest.json").read_text()) == manifest)  # unchanged so far
        assert main([*base, "cutover", VIEW, "--force"]) == 0 and main([*base, "ls"]) == 0


def test_bucketed_run_skips_too(fault_lake: lake.Lake, tmp_path: Path) -> None:
    victim = fault_lake.snapshot().files[0].path
    _damage(victim, "overwritten")
    with Workbench(Config(lake_uri=fault_lake.uri, store_uri=str(tmp_path / "views.duckdb"),
                                   reports_dir=str(tmp_path / "reports"))) as wb:
        with pytest.raises(CorruptFile):
            wb.run(VIEW, full=True, buckets=True, progress="none")
        result = wb.run(VIEW, full=True, buckets=True, skip_corrupted=True, progress="none")
        assert result.plan.skipped_files == (victim,)


def test_a_bit_flip_inside_a_page_needs_the_read_pass(fault_lake: lake.Lake) -> None:
    """Parquet has no page checksums here: the footer is fine, only decoding the pages shows it."""
    victim = max(fault_lake.snapshot().files, key=lambda f: f.size_bytes).path
    import pyarrow.parquet as pq

    group = pq.ParquetFile(victim).metadata.row_group(0)
    chunk = next(group.column(i) for i in range(group.num_columns) if group.column(i).path_in_schema == "payload")
    data = bytearray(Path(victim).read_bytes())
    start = chunk.data_page_offset + 40  # past the page header: only compressed data is hit
    for i in range(start, start + chunk.total_compressed_size - 60, 5):
        data[i] ^= 0xFF
    Path(victim).write_bytes(bytes(data))
    assert check_files([victim]) == []
    assert [b.path for b in check_files([victim], read=True)] == [victim]
    assert [b.path for b in audit(lake.Lake(fault_lake.uri), verify="read").bad_files] == [victim]


def _damage_pages(target: lake.Lake) -> str:
    """The largest file's pages overwritten past its magic bytes, short of its footer (a bad sector)."""
    victim = max(target.snapshot().files, key=lambda f: f.size_bytes).path
    data = bytearray(Path(victim).read_bytes())
    data[8: len(data) // 2] = b"\x55" * (len(data) // 2 - 8)
    Path(victim).write_bytes(bytes(data))
    assert check_files([victim]) == []
    return victim


def test_a_bucketed_backfill_skips_a_damaged_file_as_its_error_says(fault_lake: lake.Lake, tmp_path: Path) -> None:
    """`rebuild backfill VIEW --buckets` met a damaged file saying "rerun with --skip-corrupted", which the
    backfill refused as no such option (exit 2, usage): the night's full rebuild could not be finished."""
    victim = _damage_pages(fault_lake)
    store = str(tmp_path / "views.duckdb")
    failed = run_cli(fault_lake.uri, store, "--json", "backfill", VIEW, "--buckets", "--progress", "none")
    error = load_json(failed.stdout)
    assert failed.returncode == 2 and error["kind"] == "CorruptFile" and "rerun with --skip-corrupted" in error["error"]
    done = run_cli(fault_lake.uri, store, "--json", "backfill", VIEW, "--buckets", "--skip-corrupted", "--progress", "none")
    assert done.returncode == 0, done.stderr
    assert load_json(done.stdout)["plan"]["skipped_files"] == [victim]
    chunked = run_cli(fault_lake.uri, store, "--json", "backfill", VIEW, "--since", "2026-08-01", "--until", "2026-11-01",
                      "--skip-corrupted")
    assert chunked.returncode == 2 and load_json(chunked.stdout)["error"] == (
        "a backfill's chunks do not skip files: `rebuild run order_summary --since 2026-08-01 --until 2026-11-01 "
        "--skip-corrupted` makes its shadow in one run, whose record names them")


def test_pages_damaged_behind_a_sound_footer_are_named_by_the_audit_the_run_and_the_backfill(
        fault_lake: lake.Lake, tmp_path: Path) -> None:
    """A night's job (real processes) meets a file whose middle was overwritten (a bad sector): its footer opens,
    and DuckDB's reading of the pages raised its base Error ("don't know what type", Thrift's "TProtocolException:
    Invalid data"), which `lake audit`, `run` and `backfill` took for a bug of the workbench (exit 70, a traceback)
    instead of naming the file; and the backfill's error said to rerun with --skip-corrupted, which it does not take."""
    victim = _damage_pages(fault_lake)
    store = str(tmp_path / "views.duckdb")
    audited = run_cli(fault_lake.uri, store, "--json", "lake", "audit")
    assert audited.returncode == 1, audited.stderr
    assert [b["path"] for b in load_json(audited.stdout)["bad_files"]] == [victim]
    assert load_json(audited.stdout)["events"] == sum(event_ids_ok(fault_lake, victim).values())
    for args in (["run", VIEW], ["backfill", VIEW, "--since", "2026-08-01", "--until", "2026-11-01", "--chunk", "1w"]):
        failed = run_cli(fault_lake.uri, store, "--json", *args)
        error = load_json(failed.stdout)
        assert (failed.returncode, error["kind"], error["context"]["file"]) == (2, "CorruptFile", victim), failed.stderr
    leave_out = re.search(r"`rebuild (run .*--skip-corrupted)`", error["error"])  # what the backfill says to run
    assert leave_out, error["error"]
    done = run_cli(fault_lake.uri, store, "--json", *shlex.split(leave_out.group(1)), "--progress", "none")
    assert done.returncode == 0, done.stderr
    assert load_json(done.stdout)["plan"]["skipped_files"] == [victim]


def test_the_check_of_a_run_that_skipped_a_damaged_file_does_not_read_it(fault_lake: lake.Lake, tmp_path: Path) -> None:
    """The morning after `run --skip-corrupted`, `rebuild check` traced the differing keys' events through the
    file the run had left out, and stopped with exit 70 "a bug" (TProtocolException) instead of its verdict."""
    store = str(tmp_path / "views.duckdb")

    def job(*args: str) -> subprocess.CompletedProcess[str]:  # in tmp_path, where the check writes its report
        return subprocess.run([sys.executable, "-m", "rebuild", "--lake", fault_lake.uri, "--store", store, "--json",
                               *args, "--progress", "none"], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})

    assert job("run", VIEW).returncode == 0
    assert subprocess.run([sys.executable, "-m", "rebuild", "--lake", fault_lake.uri, "--store", store, "cutover", VIEW,
                           "--force"], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, check=False).returncode == 0
    victim = _damage_pages(fault_lake)
    assert job("run", VIEW, "--full", "--skip-corrupted").returncode == 0
    checked = job("check", VIEW)
    assert checked.returncode == 1, checked.stderr  # live has the left-out file's orders: the verdict says so
    report = load_json(checked.stdout)
    written = json.loads(Path(report["report_json"]).read_text())
    assert report["only_in_live"] > 0 and written["lineage"]  # traced from the events the run read
    assert report["next"].startswith("the run left out unreadable lake files (see the notes)")  # not cutover --force
    notes = written["notes"]
    assert any(f"left out 1 unreadable lake file(s) (--skip-corrupted), so the view lacks their events: {victim}" in n
               for n in notes)


# -- permissions and a full disk: run as an unprivileged user / with a file-size limit ---------------
@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder that an unprivileged user (``nobody``) can traverse (pytest's tmp is 0700)."""
    folder = Path(tempfile.mkdtemp(prefix="faults-", dir="/tmp"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


AS_NOBODY = """
import os, sys, tomllib, json, encodings.idna
import lake, lake.ingest, lake.audit, lake.compact, rebuild.examples, checks
import rebuild.store.duckdb_store, rebuild.store.parquet_store
from rebuild.cli import main, _register
_register()
os.setgid(65534); os.setuid(65534)   # the interpreter's own files may not be readable by nobody: import first
sys.exit(main(sys.argv[1:]))
"""

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="switching to user nobody needs root")


def _open_to_nobody(path: Path, writable: bool) -> None:
    for p in [path, *path.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode) | 0o444 | (0o111 if p.is_dir() else 0)
        p.chmod(mode | 0o222 if writable else mode & ~0o222)


@pytest.mark.slow
@needs_root
def test_a_read_only_store_refuses_cleanly_and_changes_nothing(fault_lake: lake.Lake, shared_dir: Path) -> None:
    shutil.copytree(fault_lake.local, shared_dir / "lake")  # type: ignore[arg-type]
    lake_uri, store = str(shared_dir / "lake"), f"parquet://{shared_dir / 'views'}"
    assert run_cli(lake_uri, store, "run", VIEW).returncode == 0
    assert run_cli(lake_uri, store, "cutover", VIEW, "--force").returncode == 0
    before = store_state(lake_uri, store)
    _open_to_nobody(shared_dir / "lake", writable=False)
    _open_to_nobody(shared_dir / "views", writable=False)
    refused = run_python(AS_NOBODY, "--lake", lake_uri, "--store", store, "--json", "run", VIEW, "--full")
    assert refused.returncode == 2, refused.stderr
    assert "Permission denied" in load_json(refused.stdout)["error"]
    after = store_state(lake_uri, store)
    assert same(after.live, before.live) and same(after.shadow, before.shadow) and after.runs == before.runs


@pytest.mark.slow
@needs_root
def test_a_read_only_lake_refuses_an_ingest_and_keeps_its_events(fault_lake: lake.Lake, shared_dir: Path) -> None:
    shutil.copytree(fault_lake.local, shared_dir / "lake")  # type: ignore[arg-type]
    source = new_orders(shared_dir)
    before = event_ids(lake.Lake(shared_dir / "lake"))
    _open_to_nobody(shared_dir, writable=False)
    refused = run_python(AS_NOBODY, "--lake", str(shared_dir / "lake"), "--json", "lake", "ingest", str(source),
                         "--stream", "orders")
    assert refused.returncode != 0
    assert "ermission denied" in refused.stdout + refused.stderr
    assert event_ids(lake.Lake(shared_dir / "lake")) == before


FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # writes past the limit fail with EFBIG instead
limit = int(sys.argv.pop(1))
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from rebuild.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_full_disk_during_ingest_commits_nothing(fault_lake: lake.Lake, tmp_path: Path) -> None:
    big = tmp_path / "big.ndjson"
    from tests.stores.conftest import orders_lake_events
    from tests.conftest import write_ndjson

    write_ndjson(big, orders_lake_events(3000, first=1000))
    before = event_ids(fault_lake)
    failed = run_python(FULL_DISK, str(8_000), "--lake", fault_lake.uri, "--json", "lake", "ingest", str(big),
                        "--stream", "orders")
    assert failed.returncode != 0
    assert event_ids(lake.Lake(fault_lake.uri)) == before
    done = lake.ingest(lake.Lake(fault_lake.uri), [big], stream="orders")
    assert done.archived == sum(1 for _ in big.open()) and max(event_ids(lake.Lake(fault_lake.uri)).values()) == 1


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["duckdb", "parquet"])
def test_a_full_disk_during_a_run_leaves_the_store_as_it_was(fault_lake: lake.Lake, tmp_path: Path, kind: str) -> None:
    store = f"duckdb://{tmp_path / 'views.duckdb'}" if kind == "duckdb" else f"parquet://{tmp_path / 'views'}"
    assert run_cli(fault_lake.uri, store, "run", VIEW).returncode == 0
    assert run_cli(fault_lake.uri, store, "cutover", VIEW, "--force").returncode == 0
    lake.ingest(lake.Lake(fault_lake.uri), [new_orders(tmp_path, orders=400, bad=False)], stream="orders")
    before = store_state(fault_lake.uri, store)
    # RLIMIT_FSIZE caps the offset a write may reach: new files (DuckDB's WAL, a new Parquet file)
    # fail after a few KB, like a disk that fills up during the run
    failed = run_python(FULL_DISK, str(16_384 if kind == "duckdb" else 2_048), "--lake", fault_lake.uri, "--store", store, "--json",
                        "run", VIEW, "--full")
    assert failed.returncode == 2, failed.stdout + failed.stderr
    assert "File too large" in load_json(failed.stdout)["error"] and "rerun" in load_json(failed.stdout)["error"]
    after = store_state(fault_lake.uri, store)
    assert same(after.live, before.live) and same(after.shadow, before.shadow)
    assert after.checkpoints == before.checkpoints
    done = run_cli(fault_lake.uri, store, "run", VIEW, "--full")
    assert done.returncode == 0, done.stderr
