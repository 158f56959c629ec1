"""The lake on S3 (moto's server): ingest, read with pruning, compact, audit, rebuild + cutover,
each giving what the same lake on local disk gives; concurrent ingests stay consistent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

import lake
from lake.audit import audit
from lake.compact import compact
from lake.errors import LakeBusy
from lake.read import EventFilter, files_read, read_events
from lake.storage import resolve_options
from rebuild import Workbench
from rebuild.decoding import clean_files
from rebuild.projection import Projection
from rebuild.replay import Selection, decoded_files
from tests.conftest import write_ndjson
from tests.orders import T0, order_events
from tests.s3.conftest import S3

AT = datetime(2026, 9, 20, tzinfo=UTC)


def _batches(tmp_path: Path) -> list[Path]:
    """Two NDJSON batches of 40 orders, with a duplicate and a poison line (quarantined)."""
    first = [e for n in range(40) for e in order_events(n, customer=n % 7, currency=["EUR", "USD"][n % 2],
                                                         start=T0 + timedelta(hours=n), refund=n % 9 == 0)]
    second = [e for n in range(40, 80) for e in order_events(n, customer=n % 7, start=T0 + timedelta(days=3, hours=n))]
    return [write_ndjson(tmp_path / "a.ndjson", first),
            write_ndjson(tmp_path / "b.ndjson", [*second, first[0], '{"event_id": "cut-off'])]


def _twins(tmp_path: Path, s3_uri: str, options: dict[str, str]) -> tuple[lake.Lake, lake.Lake]:
    """The same two ingests into a local lake and an S3 lake (same ingestion times); 4 key
    buckets instead of 16 keep the file (and request) count small."""
    local = lake.Lake(tmp_path / "local").create(buckets=4)
    remote = lake.Lake(s3_uri, storage_options=options).create(buckets=4)
    for n, batch in enumerate(_batches(tmp_path)):
        for target in (local, remote):
            lake.ingest(target, [batch], stream="orders", ingested_at=AT + timedelta(days=n))
    return local, remote


def _rows(target: lake.Lake, f: EventFilter | None = None) -> list[tuple[object, ...]]:
    return read_events(target, f, con=duckdb.connect()).order("event_id").fetchall()


def test_ingest_and_read_match_local_disk(tmp_path: Path, s3_server: S3, s3_uri: str) -> None:
    local, remote = _twins(tmp_path, s3_uri, s3_server.options)
    assert remote.snapshot().files and all(f.path.startswith("s3://") for f in remote.snapshot().files)
    assert _rows(remote) == _rows(local)
    assert len(_rows(remote)) == sum(len(order_events(n, refund=n < 40 and n % 9 == 0)) for n in range(80))
    polars = read_events(remote, EventFilter(event_types=("ItemAdded",)), engine="polars").collect()
    assert polars.height == read_events(local, EventFilter(event_types=("ItemAdded",)), engine="polars").collect().height
    # a second ingest of the same file archives nothing (idempotent on S3 too)
    again = lake.ingest(remote, [tmp_path / "a.ndjson"], stream="orders")
    assert again.archived == 0 and again.duplicates > 0


def test_ingest_and_compaction_put_no_folder_markers_in_the_bucket(tmp_path: Path, s3_server: S3, s3_uri: str) -> None:
    """The files were copied up with pyarrow's copy_files, which first made each folder: an empty
    object per folder and each one above it (lake/, lake/events/, ...: 3 PUTs and a HEAD per partition
    an ingest touched), which a bucket needs none of and a full vacuum then deleted."""
    _, remote = _twins(tmp_path, s3_uri, s3_server.options)
    compact(remote)
    keys = s3_server.keys(s3_uri.split("/")[2])
    assert {f.path.split("/", 3)[3] for f in remote.snapshot().files} < set(keys)
    assert [k for k in keys if k.endswith("/")] == []


def test_pruned_files_are_never_read(tmp_path: Path, s3_server: S3, s3_uri: str) -> None:
    local, remote = _twins(tmp_path, s3_uri, s3_server.options)
    wanted = EventFilter(partition_keys=("o-0000003",), since=T0, until=T0 + timedelta(days=1))
    kept = files_read(remote, wanted)
    everything = [f.path for f in remote.snapshot().files]
    assert 0 < len(kept) < len(everything)
    bucket = s3_uri.split("/")[2]
    client = s3_server.client()
    for path in set(everything) - set(kept):  # the files pruning skips are gone from the bucket
        client.delete_object(Bucket=bucket, Key=path.split("/", 3)[3])
    assert _rows(remote, wanted) == _rows(local, wanted) != []
    with pytest.raises((duckdb.Error, OSError)):
        _rows(remote)  # an unpruned read needs the deleted files: proof they were not read above


def test_a_read_asks_the_bucket_about_each_lake_file_once(
        tmp_path: Path, s3_server: S3, s3_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """DuckDB opens a file twice per query and checks its time twice, and s3fs sent a HEAD request
    each time: 8 per file and query (26,000 HEADs in the audit of a lake of 3,200 small files).
    Lake files are written once, so one HEAD each is enough; a file named otherwise (a staging part)
    is asked about again, so a rewritten one is read as it is now."""
    import s3fs

    _, remote = _twins(tmp_path, s3_uri, s3_server.options)
    heads: list[str] = []
    call = s3fs.S3FileSystem._call_s3

    async def counting(self: s3fs.S3FileSystem, method: str, *args: object, **kwargs: object) -> object:
        if method == "head_object":  # a request to the server, counted as it is sent
            heads.append(str(kwargs["Key"]))
        return await call(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counting)
    files = {f.path.split("/", 3)[3] for f in remote.snapshot().files}
    for _ in range(3):
        assert _rows(remote)
    assert set(heads) <= files and len(heads) == len(set(heads))
    part = f"{s3_uri}/_staging/v/r/bucket=00001.parquet"
    con = remote.attach(duckdb.connect())
    for n in (1, 3):
        con.execute(f"COPY (SELECT range AS n FROM range({n})) TO '{part}' (FORMAT parquet)")
        assert con.sql(f"SELECT count(*) FROM '{part}'").fetchall() == [(n,)]


def test_compact_and_audit_match_local_disk(tmp_path: Path, s3_server: S3, s3_uri: str) -> None:
    local, remote = _twins(tmp_path, s3_uri, s3_server.options)
    poison = write_ndjson(tmp_path / "poison.ndjson", ['{"event_id": "another cut-off'])
    for target in (local, remote):  # a second file in the quarantine
        lake.ingest(target, [poison], stream="orders", ingested_at=AT + timedelta(days=2))
    before = len(remote.snapshot().files)
    done = compact(remote)
    assert done.partitions > 0 and done.files_after < done.files_before
    assert len(remote.snapshot().files) == before - done.files_before + done.files_after
    assert (done.quarantine_files_before, len(remote.quarantine_files())) == (2, 1)
    compact(local)
    assert _rows(remote) == _rows(local)
    quarantined = [lake.read_quarantine(t).order("record_hash").fetchall() for t in (remote, local)]
    assert quarantined[0] == quarantined[1] and len(quarantined[0]) == 2
    totals = ("events", "partition_keys", "duplicates", "conflicts", "gaps", "quarantined", "event_types")
    remote_audit, local_audit = audit(remote).to_dict(), audit(local).to_dict()
    assert {k: remote_audit[k] for k in totals} == {k: local_audit[k] for k in totals}
    assert remote_audit["quarantined"] == 2 and not remote_audit["bad_files"]


def test_compaction_reads_the_log_once_not_once_per_partition(
        tmp_path: Path, s3_server: S3, s3_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each partition's pinned commit loaded the Delta log again from its last checkpoint, since the
    commit before left the kept table behind: 2,224 GETs of log entries to compact 16 partitions
    of a 60-commit lake on moto (15.7 s); the kept table now reads just the new entries (184, 7.8 s)."""
    import lake.table as module

    _, remote = _twins(tmp_path, s3_uri, s3_server.options)
    rows = _rows(remote)
    loads: list[object] = []

    class Counted(module.DeltaTable):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            loads.append(kwargs.get("version"))  # a new table object reads the log from its checkpoint
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(module, "DeltaTable", Counted)
    done = compact(remote)
    assert done.partitions == 4 and loads == []
    assert len(remote.snapshot().files) == 4 and _rows(remote) == rows


def test_vacuum_deletes_the_files_an_ingest_left_uncommitted(
        tmp_path: Path, s3_server: S3, s3_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """An ingest into a bucket uploads its files, then commits them: one that lost the race for its
    version to another writer (LakeBusy, rerun) or was killed between the two left its files in the
    bucket for good, since Delta's default (lite) vacuum deletes only the files a commit removed."""
    import importlib

    from deltalake import DeltaTable

    ingest_module = importlib.import_module("lake.ingest")  # the module: lake.ingest is also its function
    _, remote = _twins(tmp_path, s3_uri, s3_server.options)
    bucket = s3_uri.split("/")[2]

    def data_files() -> set[str]:
        return {k for k in s3_server.keys(bucket, "lake/") if k.endswith(".parquet")}

    upload = ingest_module.write_events
    other = write_ndjson(tmp_path / "other.ndjson", order_events(98, start=T0 + timedelta(days=9)))

    def racing(*args: object, **kwargs: object) -> object:  # another writer commits while this one uploads
        actions = upload(*args, **kwargs)  # type: ignore[arg-type]
        monkeypatch.setattr(ingest_module, "write_events", upload)
        lake.ingest(lake.Lake(s3_uri, storage_options=s3_server.options), [other], stream="orders")
        return actions

    monkeypatch.setattr(ingest_module, "write_events", racing)
    with pytest.raises(LakeBusy):
        lake.ingest(remote, [write_ndjson(tmp_path / "late.ndjson", order_events(99))], stream="orders")
    committed = {p.split("/", 3)[3] for p in [*(f.path for f in remote.snapshot().files), *remote.quarantine_files()]}
    rows = _rows(remote)
    stray = data_files() - committed  # the loser's files
    assert stray
    for name in ("events", "quarantine"):  # a lake whose owners keep no history
        DeltaTable(remote.table_uri(name), storage_options=remote.storage_options).alter.set_table_properties(
            {"delta.deletedFileRetentionDuration": "interval 0 hours"})
    assert remote.vacuum(0)["events"]["files"] == len(stray)
    assert data_files() == committed and _rows(remote) == rows


def test_vacuum_deletes_the_parts_a_killed_distributed_run_left(
        tmp_path: Path, s3_server: S3, s3_uri: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A distributed run's driver killed before its commit left its parts in {lake}/_staging for good:
    a rerun stages under a new run id and nothing else removed them. Vacuum deletes the folders of
    runs started before its retention; a run started since (maybe still going) keeps its parts."""
    from rebuild.cli import main
    from rebuild.runner import new_run_id

    _, remote = _twins(tmp_path, s3_uri, s3_server.options)
    bucket, client = s3_uri.split("/")[2], s3_server.client()
    going = new_run_id()
    for run in ("20260101T030000-a1b2c3", going):
        client.put_object(Bucket=bucket, Key=f"lake/_staging/order_summary/{run}/bucket=00001.parquet", Body=b"part")
    for name, value in s3_server.options.items():
        monkeypatch.setenv(name, value)

    def vacuum(*args: str) -> dict[str, object]:
        assert main(["--lake", s3_uri, "--json", "lake", "vacuum", *args]) == 0
        return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]

    assert vacuum("--dry-run")["staging_runs"] == 1 and len(s3_server.keys(bucket, "lake/_staging/")) == 2
    assert vacuum()["staging_runs"] == 1
    assert s3_server.keys(bucket, "lake/_staging/") == [f"lake/_staging/order_summary/{going}/bucket=00001.parquet"]
    assert _rows(remote)


def test_rebuild_and_cutover_into_a_local_store(tmp_path: Path, s3_server: S3, s3_uri: str) -> None:
    local, remote = _twins(tmp_path, s3_uri, s3_server.options)
    views = {}
    for name, target in (("local", local), ("s3", remote)):
        with Workbench.open(None, lake_uri=target.uri, store_uri=f"duckdb://{tmp_path / name}.duckdb",
                            storage_options=s3_server.options if name == "s3" else {},
                            reports_dir=str(tmp_path / "reports" / name)) as wb:
            wb.run("order_summary", full=True, progress="none")
            assert wb.check("order_summary").verdict.verdict == "pass"
            wb.cutover("order_summary")
            views[name] = wb.view("order_summary").sort("order_id")
    assert views["s3"].height == 80
    assert views["s3"].equals(views["local"])
    # the same on worker processes: parts staged in the bucket, committed once, then removed
    with Workbench.open(None, lake_uri=remote.uri, store_uri=f"duckdb://{tmp_path / 'pool'}.duckdb",
                        storage_options=s3_server.options) as wb:
        result = wb.run("order_summary", full=True, progress="none", executor="processes", workers=2)
        assert result.stats is not None and result.stats["tasks"] == 4
        assert wb.view("order_summary", "shadow").sort("order_id").equals(views["local"])
    assert not s3_server.keys(s3_uri.split("/")[2], "lake/_staging/")


def test_concurrent_ingests_commit_once_each(tmp_path: Path, s3_server: S3, s3_uri: str) -> None:
    """No lock on S3: pinned commits with conditional puts; a loser raises LakeBusy, a rerun fixes it."""
    target = lake.Lake(s3_uri, storage_options=s3_server.options).create()
    files = [write_ndjson(tmp_path / f"w{i}.ndjson", [e for n in range(i * 10, i * 10 + 10) for e in order_events(n)])
             for i in range(4)]
    busy: list[Path] = []

    def ingest(path: Path) -> None:
        try:
            lake.ingest(lake.Lake(s3_uri, storage_options=s3_server.options), [path], stream="orders")
        except LakeBusy:
            busy.append(path)

    threads = [threading.Thread(target=ingest, args=(f,)) for f in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for path in busy:  # what a scheduler does with a retryable error
        lake.ingest(target, [path], stream="orders")
    rows = read_events(target, con=duckdb.connect()).aggregate("lake_version, count(*)").fetchall()
    # every commit holds one whole file, under the lake_version its Delta commit really got
    assert sorted(n for _, n in rows) == [len(order_events(0)) * 10] * 4
    history = {h["version"] for h in target.history() if h["operation"] == "WRITE"}
    assert {v for v, _ in rows} <= history


def test_storage_options_come_from_config_over_the_environment() -> None:
    env = {"AWS_ACCESS_KEY_ID": "from-env", "AWS_SECRET_ACCESS_KEY": "s", "AWS_ENDPOINT_URL": "http://minio:9000",
           "AWS_DEFAULT_REGION": "eu-west-1"}
    options = resolve_options("s3://b/lake", {"aws_access_key_id": "from-config"}, env=env)
    assert options["AWS_ACCESS_KEY_ID"] == "from-config"
    assert options["AWS_ENDPOINT_URL"] == "http://minio:9000" and options["AWS_ALLOW_HTTP"] == "true"
    assert options["AWS_REGION"] == "eu-west-1"
    assert resolve_options("/data/lake", None, env=env) == {}


def test_an_unreachable_endpoint_is_a_plain_error_that_says_what_to_check(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """delta-rs colours its errors: the message of exit 2 is plain text, with network advice."""
    from rebuild.cli import main

    for name, value in {"AWS_ENDPOINT_URL": "http://127.0.0.1:1", "AWS_ACCESS_KEY_ID": "x",
                        "AWS_SECRET_ACCESS_KEY": "y", "AWS_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    assert main(["--lake", "s3://nowhere/lake", "--store", f"duckdb://{tmp_path}/v.duckdb", "lake", "audit", "--json"]) == 2
    error = capsys.readouterr().out
    assert "Connection refused" in error and "check that the storage or server is reachable" in error
    assert json.loads(error)["retryable"] is True  # the endpoint did not answer: a job may retry
    assert "\\u001b" not in error and "\x1b" not in error


def test_an_endpoint_that_never_answers_fails_as_configured_and_says_what_to_check(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """An S3 gateway that takes connections and never answers failed each command after 3 minutes
    (delta-rs' 10 retries) with "fix the permissions or free some space"; and [lake.storage_options]
    could not shorten that: its keys were upper-cased, and delta-rs ignores MAX_RETRIES."""
    from rebuild.cli import main
    from tests.s3.server import silent_endpoint

    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with silent_endpoint() as (endpoint, tries):
        settings = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y",
                    "AWS_REGION": "us-east-1", "timeout": "1s", "max_retries": "0"}
        config = tmp_path / "workbench.toml"
        config.write_text('[lake]\nuri = "s3://slow/lake"\n[lake.storage_options]\n'
                          + "".join(f'{k} = "{v}"\n' for k, v in settings.items()))
        code = main(["--config", str(config), "--store", f"duckdb://{tmp_path}/v.duckdb", "--json", "lake", "audit"])
        assert len(tries) == 1  # one try of 1 s, not ten (each try is a connection of its own)
    error = json.loads(capsys.readouterr().out)["error"]
    assert code == 2 and "operation timed out" in error
    assert "check that the storage or server is reachable" in error and "free some space" not in error


@pytest.mark.parametrize(("uri", "hint"), [("s3://events//lake", "did you mean s3://events/lake?"),
                                            ("s3:///lake", "give s3://bucket/prefix"), ("s3://", "give s3://bucket/prefix")])
def test_a_lake_uri_with_an_empty_segment_is_a_clear_error(
        tmp_path: Path, uri: str, hint: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A doubled slash used to end in delta-rs' traceback ("contained empty path segment")."""
    from rebuild.cli import main

    assert main(["--lake", uri, "--store", f"duckdb://{tmp_path}/v.duckdb", "lake", "audit", "--json"]) == 2
    error = json.loads(capsys.readouterr().out)
    assert error["kind"] == "LakeError" and "empty bucket or path segment" in error["error"] and hint in error["error"]
    assert lake.Lake("s3://events/lake/").uri == "s3://events/lake"  # a trailing slash is fine


def test_a_missing_bucket_or_refused_credentials_say_what_to_fix(
        tmp_path: Path, s3_server: S3, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Both used to end in "fix the permissions or free some space"."""
    from rebuild.cli import _advice, main

    for name, value in s3_server.options.items():
        monkeypatch.setenv(name, value)
    assert main(["--lake", "s3://no-such-bucket/lake", "--store", f"duckdb://{tmp_path}/v.duckdb",
                 "lake", "audit", "--json"]) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert "the bucket does not exist: create it, or correct the bucket in the lake URI" in error
    assert "free some space" not in error
    # what delta-rs raises for a key the store does not know (moto with authentication on)
    refused = OSError("Kernel error -> The operation lacked the necessary privileges to complete for path "
                      "lake/events/_delta_log/_last_checkpoint\n ↳ 403 Forbidden\n ↳ <Error><Code>"
                      "InvalidAccessKeyId</Code></Error>")
    assert _advice(refused).startswith("the object store refused the credentials")


def test_an_endpoint_that_goes_down_mid_run_is_no_corrupt_file(tmp_path: Path) -> None:
    """The run's reads failing because the endpoint went away used to be reported as a corrupt lake
    file ("rerun with --skip-corrupted"), and --skip-corrupted then skipped file after file."""
    from tests.s3.server import MotoProcess, options

    server = MotoProcess()
    endpoint = server.start()
    try:
        settings = options(endpoint)
        S3(endpoint, settings).client().create_bucket(Bucket="going")
        remote = lake.Lake("s3://going/lake", storage_options=settings).create(buckets=2)
        lake.ingest(remote, [_batches(tmp_path)[0]], stream="orders", ingested_at=AT)
        with Workbench.open(None, lake_uri=remote.uri, store_uri=f"duckdb://{tmp_path}/v.duckdb",
                            storage_options=settings) as wb:
            plan = wb.plan("order_summary", full=True, skip_corrupted=True)
            server.stop()
            with pytest.raises(ConnectionError, match="cannot reach the lake's storage"):
                wb.execute(plan, progress="none")
    finally:
        server.stop()


@pytest.mark.parametrize(("error", "expected"), [
    # s3fs/botocore, delta-rs (DNS and refused), a socket: the network
    (OSError("Could not connect to the endpoint URL: http://127.0.0.1:1/b"), True),
    (OSError("Generic S3 error\n ↳ error sending request\n ↳ client error (Connect)\n ↳ dns error\n"
             " ↳ Name or service not known"), True),
    (OSError("tcp connect error: Connection refused (os error 111)"), True),
    (ConnectionResetError(104, "reset"), True),
    # a damaged file in a lake whose path says "connect": the data, not the network
    (OSError("Invalid Input Error: No magic bytes found at end of file '/data/connectors/lake/events/p.parquet'"), False),
    (OSError(28, "No space left on device"), False),
])
def test_one_classifier_tells_the_network_from_the_data(error: OSError, expected: bool) -> None:
    """The CLI's advice and the run's corrupt-file handling ask the same question."""
    from lake.storage import unreachable
    from rebuild.cli import _advice

    assert unreachable(error) is expected
    assert ("reachable" in _advice(error)) is expected


def test_sample_out_to_a_bucket_uses_the_configured_storage_options(
        tmp_path: Path, s3_server: S3, s3_uri: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`rebuild lake sample --out s3://...` ignored [lake.storage_options] (--lake s3://... used
    them) and failed looking for credentials elsewhere."""
    from rebuild.cli import main

    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    options = "".join(f'{name} = "{value}"\n' for name, value in s3_server.options.items())
    config = tmp_path / "workbench.toml"
    config.write_text(f'[lake]\nuri = "{tmp_path / "local"}"\n[lake.storage_options]\n{options}')
    assert main(["--config", str(config), "--json", "lake", "sample", "--events", "300", "--days", "3",
                 "--out", s3_uri]) == 0, capsys.readouterr().out
    assert json.loads(capsys.readouterr().out)["commits"] == 3
    assert audit(lake.Lake(s3_uri, storage_options=s3_server.options)).to_dict()["lake_version"] == 3


def test_no_credentials_at_all_say_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A job on AWS whose environment lost its AWS_* keys (and has no instance role) was told to
    "fix the permissions or free some space"."""
    from rebuild.cli import main

    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to fall back on here
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    assert main(["--lake", "s3://events-prod/lake", "--store", f"duckdb://{tmp_path}/v.duckdb", "--json",
                 "lake", "audit"]) == 2
    error = json.loads(capsys.readouterr().out)["error"]
    assert "no credentials for the object store were found: set AWS_ACCESS_KEY_ID" in error
    assert "free some space" not in error


def test_the_audit_of_an_s3_lake_holds_no_payloads_and_runs_within_the_given_connection(
        tmp_path: Path, s3_server: S3, s3_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On S3 the audit copied every event of the audited streams, payloads and metadata included, into a
    temp table of its own DuckDB (80% of the machine's memory, whatever [duckdb] memory_limit said);
    `rebuild check` runs it for the consumed streams at 3 a.m. Now it copies the envelope without them
    (drift counts the payloads' field names as they are fetched), in a cursor of the connection given."""
    import lake.audit as module

    from tests.conftest import event

    local, remote = _twins(tmp_path, s3_uri, s3_server.options)
    drifted = write_ndjson(tmp_path / "c.ndjson", [event(1, key="z-1", payload={"order_id": "z-1", "channel": "web"})])
    for target in (local, remote):  # an OrderPlaced with a new payload field: drift
        lake.ingest(target, [drifted], stream="orders", ingested_at=AT + timedelta(days=2))
    seen: dict[str, object] = {}
    collect = module._collect

    def spy(con: duckdb.DuckDBPyConnection, *args: object) -> dict[str, dict[str, object]]:
        seen["columns"] = {c for (c,) in con.sql("SELECT column_name FROM duckdb_columns() JOIN duckdb_tables() "
                                                 "USING (database_name, schema_name, table_name)").fetchall()}
        seen["memory_limit"] = con.sql("SELECT current_setting('memory_limit')").fetchall()[0][0]
        return collect(con, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(module, "_collect", spy)
    con = duckdb.connect()
    con.execute("SET memory_limit = '321MB'")
    remote_audit = audit(remote, con=con).to_dict()
    assert seen["columns"] and not {"payload", "metadata"} & seen["columns"]  # type: ignore[operator]
    assert seen["memory_limit"] == con.sql("SELECT current_setting('memory_limit')").fetchall()[0][0]
    local_audit = audit(local).to_dict()
    assert remote_audit["streams"]["orders"]["drift"] == local_audit["streams"]["orders"]["drift"] != []
    assert {k: remote_audit[k] for k in ("events", "gaps", "event_types")} == {k: local_audit[k] for k in ("events", "gaps", "event_types")}
    con.sql("SELECT 1").fetchall()  # the cursor is closed, the connection given is not


def test_a_lake_in_a_bucket_without_the_s3_extra_says_which_to_install(
        tmp_path: Path, s3_server: S3, s3_uri: str) -> None:
    """Installed without the s3 extra, `rebuild lake audit` of a lake in a bucket exited 70 with
    s3fs' ModuleNotFoundError, and `lake sample --out s3://...` committed its first day before
    failing so. Here s3fs cannot be imported, as where it is not installed."""
    lake.ingest(lake.Lake(s3_uri, storage_options=s3_server.options), _batches(tmp_path)[:1], stream="orders")
    keys = s3_server.keys(s3_uri.split("/")[2])
    blocked = "import sys; sys.modules['s3fs'] = None; from rebuild.cli import run; run()"
    env = {**os.environ, **s3_server.options}
    for command in (["--lake", s3_uri, "lake", "audit"], ["lake", "sample", "--events", "300", "--days", "3", "--out", f"{s3_uri}2"]):
        done = subprocess.run([sys.executable, "-c", blocked, "--json", *command], env=env, capture_output=True, text=True)
        assert done.returncode == 2, done.stderr
        assert "pip install 'projection-rebuild-workbench[s3]'" in json.loads(done.stdout)["error"]
    assert s3_server.keys(s3_uri.split("/")[2]) == keys  # the sample wrote nothing


def test_the_compacted_files_a_decoding_count_leaves_out_are_found_on_s3_as_on_local_disk(
        tmp_path: Path, s3_server: S3, s3_uri: str) -> None:
    """``clean_files`` reads the footers through DuckDB's httpfs and matches the names it gives back with the
    snapshot's paths: on S3 a mismatch (a scheme or a slash) would leave every file to be counted, or none."""
    local, remote = _twins(tmp_path, s3_uri, s3_server.options)
    declared = Projection(name="p", version=1, key=("partition_key",), func=lambda: "", payload={"currency": "VARCHAR"})
    found = []
    for target in (local, remote):
        compact(target, decode=[("currency", "VARCHAR")])
        typed = decoded_files(target, target.snapshot(), declared, Selection(EventFilter()))
        clean = clean_files(target, declared, typed)
        assert typed and clean == typed  # every event holds a currency as text
        found.append(sorted(p.rsplit("/", 2)[-2] for p in clean))
    assert found[0] == found[1]
