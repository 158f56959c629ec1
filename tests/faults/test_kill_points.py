"""kill -9 of a real process at named points (``REBUILD_FAULT_POINT``) of ingest, compaction,
run, bucketed run, backfill, check and cutover. After every kill: the lake holds each event id
exactly once (or the commit is wholly absent), live is the old view, the last good shadow is
whole, and rerunning the same command ends where an uninterrupted run ends.

The fast subset (one point per phase) runs in ``make test``; ``make faults`` runs every point,
on the DuckDB and Parquet stores (and PostgreSQL for the run points).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import lake
from lake.compact import compact
from tests.faults.conftest import (
    KILLED, VIEW, event_ids, load_json, new_orders, quarantine_rows, run_cli, run_python, same, store_state,
)

INGEST = "import sys, lake; lake.ingest(lake.Lake(sys.argv[1]), [sys.argv[2]], stream='orders')"
# argv: the lake, and the events of rewritten partitions that make a commit (1: a commit per partition)
COMPACT = ("import sys, lake; from lake.compact import compact; "
           "compact(lake.Lake(sys.argv[1]), small_bytes=1 << 30, commit_events=int(sys.argv[2]))")


# -- ingest ------------------------------------------------------------------------------------
INGEST_FAST = ["ingest.before_commit"]
INGEST_SLOW = ["ingest.after_quarantine", "ingest.after_commit"]


@pytest.mark.parametrize("point", [*INGEST_FAST, *[pytest.param(p, marks=pytest.mark.slow) for p in INGEST_SLOW]])
def test_ingest_killed_loses_and_doubles_nothing(fault_lake: lake.Lake, tmp_path: Path, point: str) -> None:
    before, before_q = event_ids(fault_lake), quarantine_rows(fault_lake)
    source = new_orders(tmp_path)
    reference = lake.Lake(tmp_path / "reference")
    shutil.copytree(fault_lake.local, reference.local)  # type: ignore[arg-type,type-var]
    lake.ingest(reference, [source], stream="orders")
    expected, expected_q = event_ids(reference), quarantine_rows(reference)

    killed = run_python(INGEST, fault_lake.uri, str(source), fault=point)
    assert killed.returncode == KILLED, killed.stderr
    after = event_ids(lake.Lake(fault_lake.uri))
    assert max(after.values()) == 1, "an event id is in the lake twice"
    assert after in (before, expected), f"{point}: a partial commit is visible"
    assert quarantine_rows(lake.Lake(fault_lake.uri)) in (before_q, expected_q)

    lake.ingest(lake.Lake(fault_lake.uri), [source], stream="orders")
    final = lake.Lake(fault_lake.uri)
    assert event_ids(final) == expected and quarantine_rows(final) == expected_q


# -- compaction --------------------------------------------------------------------------------
@pytest.mark.parametrize(("point", "commit_events"), [
    ("compact.before_partition:3", 1_000_000),  # the 16 partitions are one commit: nothing committed yet
    ("compact.after_commit:2", 1),  # a commit per partition: two committed, fourteen not
    pytest.param("compact.after_partition:9", 1_000_000, marks=pytest.mark.slow),
    pytest.param("compact.after_partition:1", 1, marks=pytest.mark.slow),  # rewritten, not committed
    pytest.param("compact.before_partition:8", 1, marks=pytest.mark.slow),
])
def test_compaction_killed_keeps_every_event_once(fault_lake: lake.Lake, point: str, commit_events: int) -> None:
    before, files, version = event_ids(fault_lake), len(fault_lake.snapshot().files), fault_lake.snapshot().delta_version
    killed = run_python(COMPACT, fault_lake.uri, str(commit_events), fault=point)
    assert killed.returncode == KILLED, killed.stderr
    assert event_ids(lake.Lake(fault_lake.uri)) == before
    committed = {"compact.after_commit:2": 2, "compact.before_partition:8": 7}.get(point, 0)
    assert lake.Lake(fault_lake.uri).snapshot().delta_version == version + committed
    result = compact(lake.Lake(fault_lake.uri), small_bytes=1 << 30)
    final = lake.Lake(fault_lake.uri)
    assert event_ids(final) == before
    assert result.partitions >= 1 and len(final.snapshot().files) <= 16 < files


@pytest.mark.parametrize("point", ["compact.quarantine_written", "compact.quarantine_committed"])
def test_compaction_killed_while_compacting_the_quarantine_loses_and_doubles_no_record(
        fault_lake: lake.Lake, tmp_path: Path, point: str) -> None:
    lake.ingest(fault_lake, [new_orders(tmp_path)], stream="orders")  # a second quarantine file
    records = lake.read_quarantine(fault_lake).order("record_hash").fetchall()
    assert len(records) == 4 and len(fault_lake.quarantine_files()) == 2
    killed = run_python(COMPACT, fault_lake.uri, "1000000", fault=point)
    assert killed.returncode == KILLED, killed.stderr
    files = 1 if point == "compact.quarantine_committed" else 2  # written, not committed: not read
    assert len(lake.Lake(fault_lake.uri).quarantine_files()) == files
    assert lake.read_quarantine(lake.Lake(fault_lake.uri)).order("record_hash").fetchall() == records
    result = compact(lake.Lake(fault_lake.uri))
    assert result.quarantine_files_before == (2 if files == 2 else 0)
    final = lake.Lake(fault_lake.uri)
    assert lake.read_quarantine(final).order("record_hash").fetchall() == records and len(final.quarantine_files()) == 1


# -- runs: by steps, at publish, on every store ----------------------------------------------------
def _stores(tmp_path: Path, request: pytest.FixtureRequest, kind: str) -> str:
    if kind == "parquet":
        return f"parquet://{tmp_path / 'views'}"
    if kind == "postgres":
        from tests.stores.conftest import schema_uri
        import uuid

        return schema_uri(request.getfixturevalue("postgres_uri"), f"f_{uuid.uuid4().hex[:10]}")
    return f"duckdb://{tmp_path / 'views.duckdb'}"


def kill_params(points: list[tuple[str, str, bool]]) -> list[object]:
    """(fault point, store kind, slow?) rows as parameters; the slow ones run under `make faults`."""
    return [pytest.param(p, k, marks=[pytest.mark.slow] if slow else [], id=f"{p}-{k}") for p, k, slow in points]


RUN_POINTS = [
    ("run.before_publish", "duckdb", False),
    ("publish.before_commit", "parquet", False),
    ("run.after_step:1", "duckdb", True),
    ("publish.before_commit", "duckdb", True),
    ("run.before_publish", "parquet", True),
    ("publish.before_commit", "postgres", True),
    ("run.after_step:2", "postgres", True),
]


@pytest.mark.parametrize(("point", "kind"), kill_params(RUN_POINTS))
def test_incremental_run_killed_then_rerun(fault_lake: lake.Lake, tmp_path: Path, request: pytest.FixtureRequest,
                                           point: str, kind: str) -> None:
    store = _stores(tmp_path, request, kind)
    assert run_cli(fault_lake.uri, store, "run", VIEW, "--progress", "none").returncode == 0
    assert run_cli(fault_lake.uri, store, "cutover", VIEW, "--force").returncode == 0
    lake.ingest(lake.Lake(fault_lake.uri), [new_orders(tmp_path, bad=False)], stream="orders")
    assert run_cli(fault_lake.uri, store, "run", VIEW, "--keys", "o-0000001").returncode == 0  # a last good shadow
    old = store_state(fault_lake.uri, store)

    killed = run_cli(fault_lake.uri, store, "run", VIEW, "--progress", "none", fault=point)
    assert killed.returncode == KILLED, killed.stderr
    now = store_state(fault_lake.uri, store)
    assert same(now.live, old.live) and same(now.shadow, old.shadow) and now.checkpoints == old.checkpoints

    done = run_cli(fault_lake.uri, store, "--json", "run", VIEW, "--progress", "none")
    assert done.returncode == 0, done.stderr
    assert load_json(done.stdout)["mode"] == "incremental"
    final = store_state(fault_lake.uri, store)
    reference = f"duckdb://{tmp_path / 'reference.duckdb'}"
    for args in (("run", VIEW), ("cutover", VIEW, "--force")):
        assert run_cli(fault_lake.uri, reference, *args).returncode == 0
    lake_now = lake.Lake(fault_lake.uri)
    assert final.live is not None and final.shadow is not None
    expected = store_state(lake_now.uri, reference).live
    assert expected is not None
    # the incremental patch over the old live equals a from-scratch view of the whole lake
    patched = final.live.filter(~final.live["order_id"].is_in(final.shadow["order_id"].implode())).vstack(
        final.shadow.select(final.live.columns)).sort("order_id")
    assert patched.equals(expected)


# -- bucketed full runs and chunked backfills --------------------------------------------------
BUCKET_POINTS = [
    ("buckets.mid_bucket:3", "duckdb", False),
    ("stage.before_commit:5", "parquet", True),
    ("buckets.after_bucket:8", "duckdb", True),
    ("buckets.before_publish", "duckdb", True),
    ("publish_staged.before_commit", "duckdb", True),
    ("buckets.mid_bucket:1", "parquet", True),
    ("publish_staged.before_commit", "parquet", True),
]


@pytest.mark.parametrize(("point", "kind"), kill_params(BUCKET_POINTS))
def test_bucketed_run_killed_resumes_to_the_same_shadow(fault_lake: lake.Lake, tmp_path: Path,
                                                        request: pytest.FixtureRequest, point: str, kind: str) -> None:
    store = _stores(tmp_path, request, kind)
    killed = run_cli(fault_lake.uri, store, "backfill", VIEW, "--buckets", "--progress", "none", fault=point)
    assert killed.returncode == KILLED, killed.stderr
    now = store_state(fault_lake.uri, store)
    assert now.live is None and now.shadow is None and now.checkpoints["shadow"] is None
    done = run_cli(fault_lake.uri, store, "--json", "backfill", VIEW, "--buckets", "--progress", "none")
    assert done.returncode == 0, done.stderr
    reference = f"duckdb://{tmp_path / 'reference.duckdb'}"
    assert run_cli(fault_lake.uri, reference, "run", VIEW, "--full").returncode == 0
    assert same(store_state(fault_lake.uri, store).shadow, store_state(fault_lake.uri, reference).shadow)


RANGE = ["--since", "2026-09-02", "--until", "2026-09-12", "--chunk", "2d"]


@pytest.mark.parametrize(("point", "kind"), [
    pytest.param("backfill.after_chunk:2", "duckdb", id="after_chunk-duckdb"),
    pytest.param("publish.before_commit:3", "parquet", marks=pytest.mark.slow, id="publish-parquet"),
    pytest.param("run.after_step:7", "duckdb", marks=pytest.mark.slow, id="mid_chunk-duckdb"),
])
def test_backfill_killed_resumes_to_the_same_shadow(fault_lake: lake.Lake, tmp_path: Path,
                                                    request: pytest.FixtureRequest, point: str, kind: str) -> None:
    store = _stores(tmp_path, request, kind)
    killed = run_cli(fault_lake.uri, store, "backfill", VIEW, *RANGE, "--progress", "none", fault=point)
    assert killed.returncode == KILLED, killed.stderr
    refused = run_cli(fault_lake.uri, store, "cutover", VIEW, "--force")
    assert refused.returncode == 2 and ("unfinished backfill" in refused.stderr or "no shadow" in refused.stderr)
    done = run_cli(fault_lake.uri, store, "--json", "backfill", VIEW, *RANGE, "--progress", "none")
    assert done.returncode == 0, done.stderr
    assert load_json(done.stdout)["skipped"] >= 1
    reference = f"duckdb://{tmp_path / 'reference.duckdb'}"
    assert run_cli(fault_lake.uri, reference, "backfill", VIEW, *RANGE, "--progress", "none").returncode == 0
    expected = store_state(fault_lake.uri, reference).shadow
    assert expected is not None and len(expected) > 0
    assert same(store_state(fault_lake.uri, store).shadow, expected)


def test_backfill_killed_after_its_last_chunk_reports_what_it_wrote(fault_lake: lake.Lake, tmp_path: Path) -> None:
    # the rerun had every chunk done already and reported scope_rows 0 for a shadow patch of many keys
    store = f"duckdb://{tmp_path / 'views.duckdb'}"
    reference = f"duckdb://{tmp_path / 'reference.duckdb'}"
    uninterrupted = run_cli(fault_lake.uri, reference, "--json", "backfill", VIEW, *RANGE, "--progress", "none")
    expected = load_json(uninterrupted.stdout)
    killed = run_cli(fault_lake.uri, store, "backfill", VIEW, *RANGE, "--progress", "none",
                     fault=f"backfill.after_chunk:{expected['chunks']}")
    assert killed.returncode == KILLED, killed.stderr
    done = run_cli(fault_lake.uri, store, "--json", "backfill", VIEW, *RANGE, "--progress", "none")
    result = load_json(done.stdout)
    assert result["skipped"] == result["chunks"] == expected["chunks"]
    assert (result["rows"], result["scope_rows"]) == (expected["rows"], expected["scope_rows"]) and expected["scope_rows"] > 0


# -- check and cutover -------------------------------------------------------------------------
@pytest.mark.parametrize(("point", "kind"), [
    pytest.param("cutover.before_commit", "duckdb", id="cutover-duckdb"),
    pytest.param("cutover.before_commit", "parquet", marks=pytest.mark.slow, id="cutover-parquet"),
    pytest.param("cutover.before_commit", "postgres", marks=pytest.mark.slow, id="cutover-postgres"),
])
def test_cutover_killed_leaves_the_old_live_view(fault_lake: lake.Lake, tmp_path: Path,
                                                 request: pytest.FixtureRequest, point: str, kind: str) -> None:
    store = _stores(tmp_path, request, kind)
    for args in (("run", VIEW), ("cutover", VIEW, "--force")):
        assert run_cli(fault_lake.uri, store, *args).returncode == 0
    lake.ingest(lake.Lake(fault_lake.uri), [new_orders(tmp_path, bad=False)], stream="orders")
    assert run_cli(fault_lake.uri, store, "run", VIEW, "--full").returncode == 0
    old = store_state(fault_lake.uri, store)
    killed = run_cli(fault_lake.uri, store, "cutover", VIEW, "--force", fault=point)
    assert killed.returncode == KILLED, killed.stderr
    now = store_state(fault_lake.uri, store)
    assert same(now.live, old.live) and same(now.shadow, old.shadow) and now.checkpoints == old.checkpoints
    assert run_cli(fault_lake.uri, store, "cutover", VIEW, "--force").returncode == 0
    final = store_state(fault_lake.uri, store)
    assert same(final.live, old.shadow) and same(final.previous, old.live)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["check.before_verdict", "check.after_html"])
def test_check_killed_records_no_verdict_and_a_rerun_does(fault_lake: lake.Lake, tmp_path: Path, point: str) -> None:
    store = f"duckdb://{tmp_path / 'views.duckdb'}"
    reports = tmp_path / "reports"
    config = tmp_path / "workbench.toml"
    config.write_text(f'[reports]\ndir = "{reports}"\n')
    assert run_cli(fault_lake.uri, store, "run", VIEW).returncode == 0
    killed = run_cli(fault_lake.uri, store, "--config", str(config), "check", VIEW, fault=point)
    assert killed.returncode == KILLED, killed.stderr
    if point == "check.after_html":  # killed between the two files: no half-written JSON under its name
        assert list((reports / VIEW).glob("*.html")) and not list((reports / VIEW).glob("*.json"))
    refused = run_cli(fault_lake.uri, store, "cutover", VIEW)
    assert refused.returncode == 2 and "no passing check report" in refused.stderr
    assert run_cli(fault_lake.uri, store, "--config", str(config), "check", VIEW).returncode == 0
    assert len(list((reports / VIEW).glob("*.json"))) == 1  # the report (the kept audit is in reports/.audits)
    assert run_cli(fault_lake.uri, store, "cutover", VIEW).returncode == 0
