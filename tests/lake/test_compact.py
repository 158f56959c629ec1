"""Compaction: one file per partition, sorted by (partition_key, sequence), readers undisturbed."""

from __future__ import annotations

import contextlib
import json
import threading
from collections import defaultdict
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lake
import lake.compact
from lake.compact import compact
from tests.conftest import event, write_ndjson

KEYS = [f"o{k}" for k in range(10)]


def small_commits(tmp_path: Path, commits: int = 6) -> lake.Lake:
    """``commits`` ingests, each adding one event per key per stream: many small files."""
    target = lake.Lake(tmp_path / "lake")
    for c in range(commits):
        # sequences arrive out of order across commits, so the sort is really needed
        seq = (c * 7) % commits
        records = [
            event(c * 1000 + i * 2 + s, key=key, seq=seq, stream=stream)
            for i, key in enumerate(KEYS)
            for s, stream in enumerate(("orders", "payments"))
        ]
        lake.ingest(target, [write_ndjson(tmp_path / f"c{c}.ndjson", records)])
    return target


def content(target: lake.Lake, snapshot: lake.Snapshot | None = None) -> set[tuple[object, ...]]:
    con = duckdb.connect()
    rel = lake.read_events(target, snapshot=snapshot, con=con)
    return set(rel.project("event_id, stream, partition_key, sequence, lake_version").fetchall())


def test_compaction_rewrites_each_partition_as_one_sorted_file(tmp_path: Path) -> None:
    target = small_commits(tmp_path)
    before = content(target)
    per_partition = defaultdict(list)
    for f in target.snapshot().files:
        per_partition[(f.stream, f.bucket)].append(f)
    assert max(len(v) for v in per_partition.values()) > 1

    result = compact(target)
    files = target.snapshot().files
    assert result.files_after == len(files) == len(per_partition)
    assert result.files_before == sum(len(v) for v in per_partition.values())
    assert {(f.stream, f.bucket) for f in files} == set(per_partition)
    for f in files:
        rows = pq.read_table(f.path, columns=["partition_key", "sequence", "event_id"]).to_pylist()
        keys = [(r["partition_key"], r["sequence"], r["event_id"]) for r in rows]
        assert keys == sorted(keys)
    assert content(target) == before  # same events, same lake_versions
    for f in files:  # compressed like ingest's files: uncompressed pages made a lake 4x its size
        meta = pq.ParquetFile(f.path).metadata
        assert {meta.row_group(0).column(c).compression for c in range(meta.num_columns)} == {"SNAPPY"}
    again = compact(target)
    assert again.partitions == 0  # nothing left to compact


def test_small_partitions_are_committed_together_and_removed_as_no_data_change(tmp_path: Path) -> None:
    """A commit per partition: 320 small partitions of a 1,755-commit lake took 30 s of commits out of 40 s, as
    each commit makes delta-rs go over the table's whole file list. And the old files' removal said
    dataChange=true, which a Delta streaming reader (Spark's) takes as events deleted, failing its stream."""
    target = small_commits(tmp_path)
    before, old = content(target), target.snapshot()
    partitions = {(f.stream, f.bucket) for f in old.files}
    result = compact(target)
    assert result.partitions == len(partitions) > 1
    assert target.snapshot().delta_version == old.delta_version + 1  # one commit for them all
    assert content(target) == before and len(target.snapshot().files) == len(partitions)
    log = Path(target.uri, "events", "_delta_log", f"{old.delta_version + 1:020d}.json").read_text().splitlines()
    actions = [json.loads(line) for line in log]
    removes = [a["remove"] for a in actions if "remove" in a]
    adds = [a["add"] for a in actions if "add" in a]
    assert len(removes) == len(old.files) and len(adds) == len(partitions)
    assert {r["dataChange"] for r in removes} == {a["dataChange"] for a in adds} == {False}

    (tmp_path / "each").mkdir()
    each = small_commits(tmp_path / "each")
    version = each.snapshot().delta_version
    assert compact(each, commit_events=1).partitions == len(partitions)  # a commit once a partition holds 1 event
    assert each.snapshot().delta_version == version + len(partitions)
    assert content(each) == before


def test_readers_during_compaction_always_see_the_same_events(tmp_path: Path) -> None:
    target = small_commits(tmp_path, commits=8)
    expected = content(target)
    seen: list[int] = []
    problems: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        con = duckdb.connect()
        reading = lake.Lake(target.uri)
        while not stop.is_set():
            rows = set(lake.read_events(reading, con=con).project(
                "event_id, stream, partition_key, sequence, lake_version").fetchall())
            if rows != expected:
                problems.append(f"read {len(rows)} rows, expected {len(expected)}")
            seen.append(len(rows))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        result = compact(target)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert result.partitions > 1
    assert not problems, problems[:3]
    assert len(seen) >= 1


def test_an_old_snapshot_stays_readable_after_compaction(tmp_path: Path) -> None:
    target = small_commits(tmp_path, commits=3)
    old = target.snapshot()
    before = content(target, old)
    compact(target)
    assert target.snapshot().delta_version > old.delta_version
    assert content(target, old) == before  # the old files are still there until vacuumed
    assert {f.path for f in target.snapshot().files}.isdisjoint({f.path for f in old.files})


def test_a_commit_made_meanwhile_stops_compaction_and_keeps_its_events(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = small_commits(tmp_path)
    intruder = [event(9000 + i, key=key, seq=99, stream="orders") for i, key in enumerate(KEYS)]
    other = lake.Lake(target.uri)  # another writer, without the lock (as on an object store)
    monkeypatch.setattr(other, "commit_lock", contextlib.nullcontext)

    def ingest_meanwhile(name: str) -> None:
        if name == "compact.before_partition" and not intruder_ingested:
            intruder_ingested.append(lake.ingest(other, [write_ndjson(tmp_path / "meanwhile.ndjson", intruder)]))

    intruder_ingested: list[object] = []
    monkeypatch.setattr(lake.compact, "point", ingest_meanwhile)
    with pytest.raises(lake.LakeBusy, match="another writer committed"):
        compact(target)
    ids = {r[0] for r in content(target)}
    assert {e["event_id"] for e in intruder} <= ids  # nothing of the other writer's commit was removed
    monkeypatch.undo()
    before = content(target)
    compact(target)  # the rerun finishes the job
    assert content(target) == before


def test_compacting_no_lake_or_a_stream_it_does_not_hold_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(lake.LakeNotFound, match="no event lake at"):  # "[Errno 2] ... _commit.lock", before
        compact(lake.Lake(tmp_path / "missing"))
    target = small_commits(tmp_path, commits=2)
    with pytest.raises(lake.LakeError, match="no stream order in the lake at lake_version 2; its streams: orders, payments$"):
        compact(target, streams=["order"])  # "compacted 0 partitions", before
    assert compact(target, streams="orders").partitions > 0  # one name, not its characters


@pytest.mark.parametrize("stream", ["a/b", "50%20off", "ünï=1"])
def test_a_stream_named_with_a_slash_or_percent_reads_back_as_itself_after_compaction(tmp_path: Path,
                                                                                       stream: str) -> None:
    """Compaction wrote its file under ``stream=NAME`` as the name is, where ingest's DuckDB writes the
    name percent-encoded: ``a/b`` became two folders and every read of the lake failed (a hive
    partition mismatch), and ``50%20off`` would have read back as ``50 off``."""
    target = lake.Lake(tmp_path / "lake")
    for c in range(2):
        lake.ingest(target, [write_ndjson(tmp_path / f"c{c}.ndjson", [event(c, key="k", seq=c)])], stream=stream)
    before = content(target)
    assert compact(target).partitions == 1
    assert content(target) == before and len(target.snapshot().files) == 1  # the old files are removed
    assert {s for (_, s, *_) in before} == {stream}
    assert lake.read_events(target, engine="polars").collect()["stream"].to_list() == [stream, stream]


def test_compact_no_decode_does_not_need_the_projection_modules(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A nightly `rebuild lake compact --no-decode` failed because a projection module (which the
    layout-only compaction does not use) could not be imported."""

    from rebuild.cli import main

    target = small_commits(tmp_path, commits=2)
    (tmp_path / "broken.py").write_text("import not_installed_anywhere\n")
    config = tmp_path / "workbench.toml"
    config.write_text(f'[lake]\nuri = "{target.uri}"\n[projections]\nmodules = ["broken.py"]\n')
    before = len(target.snapshot().files)
    assert main(["--config", str(config), "--json", "lake", "compact", "--no-decode"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["files_before"] == before and result["files_after"] < before
    assert main(["--config", str(config), "--json", "lake", "compact"]) == 2  # decoding needs the projections
    assert "broken.py" in json.loads(capsys.readouterr().out)["error"]


def test_vacuum_deletes_the_replaced_files_once_past_their_retention(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Compaction leaves the replaced files for the readers of older snapshots; nothing deleted them
    (3,000 nightly commits left 411 MB of them beside 5.5 MB of live files)."""

    from deltalake import DeltaTable

    from rebuild.cli import main

    target = small_commits(tmp_path, commits=3)
    old = target.snapshot()
    compact(target)
    latest = content(target)

    def on_disk() -> set[str]:
        return {str(p) for p in (tmp_path / "lake" / "events").rglob("*.parquet")}

    def vacuum(*args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
        code = main(["--lake", target.uri, "--json", "lake", "vacuum", *args])
        return code, json.loads(capsys.readouterr().out)

    code, refused = vacuum("--retain-hours", "0")  # shorter than Delta's retention: readers may need the files
    assert code == 2 and "keep at least the table's retention" in refused["error"] and len(on_disk()) > len(old.files)
    assert vacuum() == (0, {"retain_hours": 168, "dry_run": False, "tables": {
        "events": {"files": 0, "bytes": 0}, "quarantine": {"files": 0, "bytes": 0}}, "staging_runs": 0})  # replaced minutes ago
    for name in ("events", "quarantine"):  # a lake whose owners keep no history
        DeltaTable(target.table_uri(name)).alter.set_table_properties({"delta.deletedFileRetentionDuration": "interval 0 hours"})
    before = on_disk()
    code, dry = vacuum("--retain-hours", "0", "--dry-run")
    assert code == 0 and dry["tables"]["events"]["files"] == len(old.files) and on_disk() == before
    code, done = vacuum("--retain-hours", "0")
    assert code == 0 and done["tables"]["events"]["files"] == len(old.files) and done["tables"]["events"]["bytes"] > 0
    assert on_disk() == {f.path for f in target.snapshot().files}
    assert content(target) == latest
    with pytest.raises(duckdb.IOException):  # the old snapshot's files are gone
        content(target, old)


def test_audit_and_ls_say_when_small_files_await_compaction(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing prompted compaction: after hundreds of small ingest commits, the audit and `ls` said
    nothing of the files every replay opens."""

    from rebuild.cli import main

    target = small_commits(tmp_path)
    store = f"duckdb://{tmp_path / 'views.duckdb'}"

    def run(*args: str) -> tuple[int, str]:
        code = main(["--lake", target.uri, "--store", store, *args])
        return code, capsys.readouterr().out

    files = len(target.snapshot().files)
    partitions = len({(f.stream, f.bucket) for f in target.snapshot().files})
    waiting = {"files": files, "partitions": partitions, "suggested": False}  # fewer than SUGGEST_COMPACT to merge
    assert json.loads(run("--json", "lake", "audit")[1])["uncompacted"] == waiting
    assert json.loads(run("--json", "ls")[1])["lake"]["uncompacted"] == waiting
    assert "await compaction" not in run("lake", "audit")[1] + run("ls")[1]
    monkeypatch.setattr(lake.compact, "SUGGEST_COMPACT", files - partitions)
    hint = f"{files} small files in {partitions} partitions await compaction (it would leave {partitions}): run `rebuild lake compact`"
    for command in (["lake", "audit"], ["ls"]):
        code, out = run(*command)
        assert code == 0 and hint in " ".join(out.split())
    assert json.loads(run("--json", "lake", "audit")[1])["uncompacted"]["suggested"] is True
    assert compact(target).files_before == files
    assert json.loads(run("--json", "lake", "audit")[1])["uncompacted"] == {"files": 0, "partitions": 0, "suggested": False}
    assert "await compaction" not in run("lake", "audit")[1] + run("ls")[1]


def test_a_lake_of_the_version_before_is_read_ingested_and_compacted(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A lake made before 2026-11-25: no delta.dataSkippingStatsColumns, and files whose add actions hold
    the statistics of every column. Read, ingested into and compacted by this version, every event is there
    once, its files are pruned by key as before, and the rewritten files carry the three columns' statistics."""
    import lake.writer
    from deltalake import DeltaTable

    from lake.schema import DEFAULT_BUCKETS, QUARANTINE_SCHEMA, SCHEMA_VERSION, STATS_COLUMNS, STORED_SCHEMA

    # the version before: its tables created without the property, its files with every column's statistics
    description = json.dumps({"schema_version": SCHEMA_VERSION, "buckets": DEFAULT_BUCKETS})
    DeltaTable.create(str(tmp_path / "lake" / "events"), STORED_SCHEMA, partition_by=["stream", "bucket"],
                      description=description)
    DeltaTable.create(str(tmp_path / "lake" / "quarantine"), QUARANTINE_SCHEMA, description=description)
    with monkeypatch.context() as before:
        before.setattr(lake.writer, "STATS_COLUMNS", tuple(f.name for f in STORED_SCHEMA))
        target = small_commits(tmp_path, commits=3)
    events = DeltaTable(target.table_uri("events"))
    assert "delta.dataSkippingStatsColumns" not in events.metadata().configuration
    assert "min.payload" in pa.table(events.get_add_actions(flatten=True)).column_names
    lake.ingest(target, [write_ndjson(tmp_path / "new.ndjson", [event(9000 + i, key=k, seq=100, stream="orders")
                                                                for i, k in enumerate(KEYS)])])
    expected = content(target)
    assert len(expected) == 3 * 2 * len(KEYS) + len(KEYS)
    compact(target)
    assert content(target) == expected
    snapshot = target.snapshot()
    assert len(snapshot.select(keys=[KEYS[0]])) == 2  # its bucket's file of each stream
    events = DeltaTable(target.table_uri("events"))
    actions = pa.table(events.get_add_actions(flatten=True)).to_pydict()
    # every file was rewritten: the statistics of the columns readers prune by only
    assert {n.split(".", 1)[1] for n in actions if n.startswith("min.") and any(v is not None for v in actions[n])} \
        == set(STATS_COLUMNS)


def test_a_damaged_lake_file_stops_compaction_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """It was an unexpected error (exit 70) with DuckDB's traceback, naming no partition's progress."""
    from rebuild.cli import main

    target = small_commits(tmp_path, commits=3)
    before = content(target)
    damaged = target.snapshot().files[0].path
    saved = Path(damaged).read_bytes()
    Path(damaged).write_bytes(saved[:100])
    config = tmp_path / "workbench.toml"
    config.write_text(f'[lake]\nuri = "{target.uri}"\n')
    assert main(["--config", str(config), "--json", "lake", "compact", "--no-decode"]) == 2
    error = json.loads(capsys.readouterr().out)
    assert error["kind"] == "CorruptFile" and error["context"]["file"] == damaged
    assert "compaction stopped there:" in error["error"] and "restore it, then run again" in error["error"]
    Path(damaged).write_bytes(saved)  # restored, as it says: the rerun compacts and every event is there
    assert main(["--config", str(config), "--json", "lake", "compact", "--no-decode"]) == 0
    assert content(target) == before


def quarantining_nights(tmp_path: Path, nights: int = 5) -> lake.Lake:
    """``nights`` ingests of an order each, with records quarantined of every kind: a file of the quarantine each."""
    target = lake.Lake(tmp_path / "lake")
    for night in range(nights):
        key = f"k{night}"
        records: list[object] = [
            event(night * 10, key=key, seq=1),
            {**event(night * 10 + 1, key=key, seq=2), "sequence": "two"},
            {**event(night * 10 + 2, key=key, seq=3), "event_time": "not a time", "payload": {"note": "é\u00a0\U0001f600"}},
            "{broken " + "x" * night,  # no key, no event id
        ]
        lake.ingest(target, [write_ndjson(tmp_path / f"night{night}.ndjson", records)], stream="orders")
    return target


def quarantine_table(target: lake.Lake) -> pa.Table:
    """Every quarantined record, every column, in one order."""
    rows = lake.read_quarantine(target).to_arrow_table()
    return rows.sort_by([(c, "ascending") for c in ("record_hash", "source", "line")])


def test_compaction_rewrites_the_quarantine_as_one_file_keeping_every_record_as_it_was(tmp_path: Path) -> None:
    """Nothing compacted the quarantine: each ingest that quarantines adds a file (hourly ingests: ~3,000 a year),
    and every ingest that quarantines read all of them for their record hashes, as did every catch-up that
    excludes quarantined keys. Compaction rewrites them as one in one commit, each column as it was."""
    from deltalake import DeltaTable

    from checks.lineage import lineage
    from lake.audit import audit

    target = quarantining_nights(tmp_path)
    before, version = quarantine_table(target), target.quarantine_table().version()
    audited = [audit(target, as_of=v).to_dict()["quarantined"] for v in (2, 5)]
    traced = [t.quarantine for t in lineage(target, [{"k": "k3"}], partition_column="k")]
    assert before.num_rows == 15 and len(target.quarantine_files()) == 5

    result = compact(target)
    assert (result.quarantine_files_before, result.quarantine_files_after) == (5, 1)
    assert result.to_dict()["quarantine_files_before"] == 5
    table = DeltaTable(target.table_uri("quarantine"))
    assert table.version() == version + 1 and table.history(1)[0]["workbench.operation"] == "compact"
    after = quarantine_table(target)
    assert after.schema == before.schema and after.equals(before)
    assert table.to_pyarrow_table().num_rows == 15  # Delta readers see the same records (and not the provenance)
    assert [audit(target, as_of=v).to_dict()["quarantined"] for v in (2, 5)] == audited == [6, 15]
    assert [t.quarantine for t in lineage(target, [{"k": "k3"}], partition_column="k")] == traced
    assert target.quarantine_files(keys=["k2"]) == target.quarantine_files() and target.quarantine_files(keys=["zz"]) == []

    # the same input again: its records are known, in the compacted file
    again = lake.ingest(target, [tmp_path / "night2.ndjson"], stream="orders")
    assert again.already_quarantined == 3 and len(target.quarantine_files()) == 1
    assert compact(target).quarantine_files_before == 0  # one file: nothing to do
    lake.ingest(target, [write_ndjson(tmp_path / "late.ndjson", ["{late"])], stream="orders")
    assert compact(target, streams=["orders"]).quarantine_files_before == 0  # --stream: the events only
    assert compact(target).quarantine_files_before == 2
    assert quarantine_table(target).num_rows == 16 and len(target.quarantine_files()) == 1


def test_vacuum_deletes_the_quarantine_files_compaction_replaced(tmp_path: Path) -> None:
    from deltalake import DeltaTable

    target = quarantining_nights(tmp_path, nights=3)
    before = quarantine_table(target)
    compact(target)
    assert target.vacuum()["quarantine"]["files"] == 0  # replaced minutes ago: kept for readers of older versions
    for name in ("events", "quarantine"):  # a lake whose owners keep no history
        DeltaTable(target.table_uri(name)).alter.set_table_properties({"delta.deletedFileRetentionDuration": "interval 0 hours"})
    assert target.vacuum(retain_hours=0)["quarantine"]["files"] == 3
    assert [p.name for p in (tmp_path / "lake" / "quarantine").glob("*.parquet")] == [
        f.rsplit("/", 1)[-1] for f in target.quarantine_files()]
    assert quarantine_table(target).equals(before)


def test_the_compact_command_says_what_it_did_to_the_quarantine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rebuild.cli import main

    target = quarantining_nights(tmp_path, nights=2)
    assert main(["--lake", target.uri, "lake", "compact", "--no-decode"]) == 0
    assert "; the quarantine: 2 files -> 1" in capsys.readouterr().out
    assert main(["--lake", target.uri, "--json", "lake", "compact", "--no-decode"]) == 0
    done = json.loads(capsys.readouterr().out)
    assert (done["quarantine_files_before"], done["quarantine_files_after"]) == (0, 0)


def test_a_damaged_quarantine_file_stops_its_compaction_naming_it(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The README promises exit 2 naming the file, and every record kept: restored, the rerun compacts it."""
    from rebuild.cli import main

    target = quarantining_nights(tmp_path, nights=3)
    before = quarantine_table(target)
    damaged = target.quarantine_files()[0]
    saved = Path(damaged).read_bytes()
    Path(damaged).write_bytes(saved[:100])
    assert main(["--lake", target.uri, "--json", "lake", "compact", "--no-decode"]) == 2
    error = json.loads(capsys.readouterr().out)
    assert error["kind"] == "CorruptFile" and error["context"]["file"] == damaged
    assert "the quarantine was not compacted; no record is lost" in error["error"]
    assert len(target.quarantine_files()) == 3
    Path(damaged).write_bytes(saved)
    assert main(["--lake", target.uri, "--json", "lake", "compact", "--no-decode"]) == 0
    assert json.loads(capsys.readouterr().out)["quarantine_files_before"] == 3
    assert quarantine_table(target).equals(before)
