"""The lake audit: exact figures on a hand-made lake, and the sample's known anomalies found."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import lake
import lake.compact
import lake.read
from lake.audit import AuditReport, audit
from lake.sample import generate
from tests.conftest import T0, event, files_opened, logging_files, write_ndjson
from tests.lake.test_compact import small_commits


@pytest.fixture(scope="module")
def handmade(tmp_path_factory: pytest.TempPathFactory) -> AuditReport:
    """Two commits: a gap in ``a``, a hot key, a conflict, a duplicate, a late-added payload field,
    ``c`` archived out of order (sequence 2 before 1) and one malformed line."""
    tmp = tmp_path_factory.mktemp("handmade")
    target = lake.Lake(tmp / "lake")
    first = [
        event(1, key="a", seq=1), event(2, key="a", seq=2), event(3, key="a", seq=4),
        *(event(10 + i, key="hot", seq=1 + i) for i in range(6)),
        event(20, key="b", seq=1), event(31, key="c", seq=2),
    ]  # fmt: skip
    second = [
        event(40, key="hot", seq=3), event(1, key="a", seq=1),
        event(21, key="b", seq=2, payload={"n": 21, "extra": True}), event(30, key="c", seq=1), "{broken",
    ]  # fmt: skip
    for day, records in enumerate((first, second), start=1):
        source = write_ndjson(tmp / f"day{day}.ndjson", records)
        lake.ingest(target, [source], stream="orders", ingested_at=T0 + timedelta(days=day))
    return audit(target)


def test_exact_figures_on_a_small_lake(handmade: AuditReport) -> None:
    d = handmade.to_dict()
    assert (d["events"], d["partition_keys"], d["duplicates"], d["conflicts"], d["quarantined"]) == (13, 4, 0, 1, 2)
    assert (d["gaps"], d["missing_sequences"], d["out_of_order"], d["late"]) == (1, 1, 1, 0)
    assert d["event_types"] == {"OrderPlaced": 13}
    s = d["streams"]["orders"]
    assert s["lake_versions"] == {"count": 2, "first": 1, "last": 2}
    assert s["gaps"]["examples"] == [{"partition_key": "a", "missing": 1, "first_missing": 3}]
    assert s["hot_partitions"][0] == {"partition_key": "hot", "events": 6, "last_sequence": 6}
    assert [h["partition_key"] for h in s["hot_partitions"]] == ["hot", "a", "b", "c"]
    assert s["conflicts"] == {"in_lake": 0, "quarantined": 1}
    assert {r["reason"]: r["count"] for r in s["quarantined"]["reasons"]} == {
        "conflict": 1, "malformed record: malformed JSON": 1,
    }  # fmt: skip


def test_lateness_and_drift_on_a_small_lake(handmade: AuditReport) -> None:
    s = handmade.to_dict()["streams"]["orders"]
    late = s["lateness"]
    assert late["max_s"] == 2 * 86400 - 21 * 60  # event 21 happened at T0+21 min, ingested at T0+2 d
    assert late["histogram"]["6-24 h"] == 11 and late["histogram"]["1-2 d"] == 2
    assert sum(late["histogram"].values()) == 13
    [drift] = s["drift"]
    assert (drift["event_type"], drift["field"], drift["change"]) == ("OrderPlaced", "extra", "added")
    assert (drift["events"], drift["of_events"], drift["first_version"]) == (1, 13, 2)


def test_report_renders_for_people_notebooks_and_machines(handmade: AuditReport) -> None:
    console = Console(record=True, width=160)
    handmade.render(console)
    text = console.export_text()
    for title in ("Streams", "Event types", "Sequence gaps", "Hot partition keys", "Payload schema drift", "Quarantined"):
        assert title in text
    page = handmade._repr_html_()
    assert page.count("<table>") == 2 and "http" not in page.replace(handmade.lake_uri, "")
    assert json.loads(json.dumps(handmade.to_dict()))["streams"]["orders"]["events"] == 13


def test_a_jobs_log_follows_the_audit_step_by_step(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An audit of 100M events takes two minutes; `rebuild -v lake audit` logged nothing meanwhile."""
    target = lake.Lake(tmp_path / "lake")
    lake.ingest(target, [write_ndjson(tmp_path / "in.ndjson", [event(1), event(2, seq=2)])], stream="orders")
    caplog.set_level("INFO", logger="lake.audit")
    audit(target)
    said = [r.getMessage().rsplit(" in ", 1)[0] for r in caplog.records if r.name == "lake.audit"]
    assert said == ["checked 1 file (footer)", *(f"audited {part}" for part in (
        "counts", "gaps", "conflicts", "event types", "drift", "lateness", "hot keys", "quarantine"))]


def test_a_stream_filter_and_an_empty_lake(tmp_path: Path) -> None:
    target = lake.Lake(tmp_path / "lake").create()
    d = audit(target, streams=["orders"]).to_dict()
    assert (d["events"], d["gaps"], d["quarantined"]) == (0, 0, 0)
    assert d["streams"]["orders"]["events"] == 0


def test_a_stream_the_lake_does_not_hold_is_an_error_naming_the_streams_it_does(tmp_path: Path) -> None:
    """A misspelt --stream in a nightly audit would otherwise report a clean, empty stream."""
    target = lake.Lake(tmp_path / "lake")
    lake.ingest(target, write_ndjson(tmp_path / "in.ndjson", [event(1), event(2)]), stream="orders")
    with pytest.raises(lake.LakeError, match="no stream order in the lake at lake_version 1; its streams: orders"):
        audit(target, streams=["order"])
    assert audit(target, streams="orders").to_dict()["events"] == 2  # one name, not its characters
    with pytest.raises(lake.LakeError, match="verify 'full' is not one of"):
        audit(target, verify="full")


def test_the_audit_finds_the_samples_known_anomalies(tmp_path: Path) -> None:
    target = lake.Lake(tmp_path / "lake")
    r = generate(target, events=1200, seed=11, days=5)
    d = audit(target).to_dict()
    assert d["events"] == r.archived
    assert (d["gaps"], d["missing_sequences"], d["conflicts"]) == (r.gaps, r.missing, r.conflicts)
    assert (d["late"], d["out_of_order"], d["quarantined"]) == (r.late, r.out_of_order, r.quarantined)
    assert d["duplicates"] == 0  # duplicates never reach the lake
    assert d["duplicates_at_ingest"] == r.duplicates > 0
    s = d["streams"]["orders"]
    assert s["lake_versions"]["count"] == r.commits and s["conflicts"]["in_lake"] == 0
    assert sum(x["count"] for x in s["quarantined"]["reasons"] if x["reason"] != "conflict") == r.poison
    assert any(x["field"] == "tracking_number" and x["change"] == "added" for x in s["drift"])
    assert audit(target, streams=["orders"]).to_dict()["events"] == r.archived


def test_the_audit_shows_the_duplicates_the_sample_reported(tmp_path: Path) -> None:
    """`rebuild lake sample` said "N duplicates dropped at ingest ... `rebuild lake audit` should find the same
    numbers", and the audit's tables and the demo's audit line showed duplicates 0 (the lake's rows) and
    never N: the figure was only in the JSON."""
    from rebuild.demo import _audit_line

    r = generate(lake.Lake(tmp_path / "lake"), events=1200, seed=11, days=5)
    report = audit(lake.Lake(tmp_path / "lake"))
    console = Console(record=True, width=300)
    report.render(console)
    said = f"{r.duplicates:,} duplicates dropped at ingest"
    assert said in console.export_text() and said in report._repr_html_()
    assert said in _audit_line(report.to_dict())


def test_duplicates_and_conflicts_written_around_ingest_are_found(tmp_path: Path) -> None:
    import pyarrow as pa

    from lake.schema import STORED_SCHEMA, bucket_of
    from lake.table import EVENTS

    target = lake.Lake(tmp_path / "lake").create()
    rows = [("e1", 1), ("e1", 1), ("e2", 2), ("x2", 2), ("e3", 3)]  # e1 twice, position 2 twice
    table = pa.table({
        "event_id": [r[0] for r in rows], "stream": ["orders"] * 5, "partition_key": ["k"] * 5,
        "sequence": [r[1] for r in rows], "event_type": ["OrderPlaced"] * 5, "event_time": [T0] * 5,
        "ingested_at": [T0] * 5, "lake_version": [1] * 5, "schema_version": [1] * 5,
        "payload": ["{}"] * 5, "metadata": [None] * 5, "bucket": [bucket_of("k")] * 5,
    }).cast(STORED_SCHEMA)  # fmt: skip
    with target.commit_lock():
        target.write(EVENTS, table)
    d = audit(target).to_dict()
    assert (d["events"], d["duplicates"], d["conflicts"], d["gaps"]) == (5, 1, 1, 0)


def _commit(target: lake.Lake, rows: list[tuple[str, str, str, int]]) -> None:
    """One Delta commit of ``rows`` (event_id, stream, partition_key, sequence) at the next lake_version, as a lake
    written by other tools or an earlier version can hold them (ingest refuses an id archived under any stream)."""
    import pyarrow as pa

    from lake.schema import STORED_SCHEMA, bucket_of
    from lake.table import EVENTS

    version, n = target.next_version(), len(rows)
    table = pa.table({
        "event_id": [r[0] for r in rows], "stream": [r[1] for r in rows], "partition_key": [r[2] for r in rows],
        "sequence": [r[3] for r in rows], "event_type": ["OrderPlaced"] * n, "event_time": [T0] * n,
        "ingested_at": [T0] * n, "lake_version": [version] * n, "schema_version": [1] * n,
        "payload": ["{}"] * n, "metadata": [None] * n, "bucket": [bucket_of(r[2]) for r in rows],
    }).cast(STORED_SCHEMA)  # fmt: skip
    with target.commit_lock():
        target.write(EVENTS, table)


def test_an_event_id_archived_under_two_streams_is_a_duplicate_of_the_stream_of_its_later_copy(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An event id is unique in the whole lake, and `rebuild lake dedupe` removes its later copy in any stream:
    the audit counted duplicates per stream only, so a copy under another stream was nobody's (0 duplicates,
    and dedupe removed one). Each copy but the first archived (lowest lake_version) counts in its own stream,
    also in an audit of that stream or of some keys; the total is what dedupe removes."""
    from lake.dedupe import dedupe
    from rebuild.cli import main

    target = lake.Lake(tmp_path / "lake").create()
    _commit(target, [("p1", "payments", "k", 1), ("p2", "payments", "k", 2), ("o1", "orders", "k", 1)])
    # p1 again under orders, o1 again under payments, p2 twice more (orders and payments), o1 at the same version
    _commit(target, [("p1", "orders", "k", 2), ("o1", "payments", "k", 3), ("p2", "orders", "k", 3),
                     ("p2", "payments", "k", 4), ("o1", "orders", "k", 1)])
    per_stream = {"orders": 3, "payments": 2}
    d = audit(target).to_dict()
    assert ({s: v["duplicates"] for s, v in d["streams"].items()}, d["duplicates"]) == (per_stream, 5)
    for stream, n in per_stream.items():
        assert audit(target, streams=[stream]).to_dict()["duplicates"] == n
        keyed = audit(target, streams=[stream], partition_keys=["k"]).to_dict()
        assert (keyed["duplicates"], keyed["keys_audited"]) == (n, 1)
    assert audit(target, as_of=1).to_dict()["duplicates"] == 0
    assert main(["--lake", str(target.uri), "lake", "audit", "--json", "--stream", "orders"]) == 0
    assert json.loads(capsys.readouterr().out)["streams"]["orders"]["duplicates"] == 3
    found = dedupe(target, dry_run=True)
    assert (found.removed, found.duplicated_ids) == (5, 3)
    dedupe(target)
    assert audit(target).to_dict()["duplicates"] == 0


def test_copies_archived_at_once_under_two_streams_are_counted_where_dedupe_removes_one(tmp_path: Path) -> None:
    """Same lake_version and sequence: the copy kept is the lower stream's, in the audit and in dedupe alike
    (dedupe went by file name, and `stream=a-b/...` sorts before `stream=a/...`)."""
    from lake.dedupe import dedupe

    target = lake.Lake(tmp_path / "lake").create()
    _commit(target, [("t1", "a-b", "k", 1), ("t1", "a", "k", 1)])
    d = audit(target).to_dict()
    assert {s: v["duplicates"] for s, v in d["streams"].items()} == {"a": 0, "a-b": 1}
    dedupe(target)
    held = lake.read_events(target).aggregate("list(stream)").fetchall()[0][0]
    assert held == ["a"]


def test_as_of_counts_only_what_was_committed_up_to_that_version(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from rebuild.cli import main

    target = lake.Lake(tmp_path / "lake")
    lake.ingest(target, write_ndjson(tmp_path / "1.ndjson", [event(1), event(2, seq=2)]), stream="orders")
    lake.ingest(target, write_ndjson(tmp_path / "2.ndjson", [event(1), event(3, seq=3), "{broken"]), stream="orders")
    then, now = audit(target, as_of=1).to_dict(), audit(target).to_dict()
    assert (then["lake_version"], then["events"], then["quarantined"], then["duplicates_at_ingest"]) == (1, 2, 0, 0)
    assert (now["lake_version"], now["events"], now["quarantined"], now["duplicates_at_ingest"]) == (2, 3, 1, 1)
    base = ["--lake", str(target.uri), "lake", "audit", "--json", "--as-of"]
    assert main([*base, "1"]) == 0 and json.loads(capsys.readouterr().out)["events"] == 2
    assert main([*base, "3"]) == 2
    assert "as_of 3 is not a lake_version of this lake (0 to 2)" in json.loads(capsys.readouterr().out)["error"]


def test_event_types_no_consumer_knows_are_listed_with_when_they_arrived(tmp_path: Path) -> None:
    """DESIGN's lake audit names unknown event types: a new type upstream that no projection reads
    is a classic cause of a view drifting without a single error."""
    from rebuild import Workbench
    from rebuild.config import Config
    from rebuild.projection import Registry, projection

    target = lake.Lake(tmp_path / "lake")
    lake.ingest(target, write_ndjson(tmp_path / "1.ndjson", [event(1), event(2, seq=2)]), stream="orders")
    returned = [event(3, type="OrderReturned"), event(4, key="b", type="OrderReturned")]
    lake.ingest(target, write_ndjson(tmp_path / "2.ndjson", returned), stream="orders")
    report = audit(target, known_event_types=["OrderPlaced"])
    (unknown,) = report.streams[0].unknown_event_types
    assert (unknown["event_type"], unknown["events"], unknown["first_version"]) == ("OrderReturned", 2, 2)
    assert report.to_dict()["unknown_event_types"] == {"OrderReturned": 2}
    assert audit(target).to_dict()["unknown_event_types"] is None  # nothing known given: nothing judged
    console = Console(record=True, width=200)
    report.render(console)
    assert "Unknown event types (no projection consumes them)" in console.export_text()
    assert "unknown event type OrderReturned: 2 events since lake_version 2" in report._repr_html_()

    registry = Registry()
    config = Config(lake_uri=str(target.uri), store_uri=f"duckdb://{tmp_path}/v.duckdb")
    with Workbench(config, registry=registry) as wb:
        assert wb.audit().to_dict()["unknown_event_types"] is None  # no projection: no consumer to judge by
    projection(name="placed", key="partition_key", consumes="OrderPlaced", registry=registry)(
        lambda: "SELECT DISTINCT partition_key FROM events")
    with Workbench(config, registry=registry) as wb:
        assert wb.audit().to_dict()["unknown_event_types"] == {"OrderReturned": 2}
        projection(name="everything", key="partition_key", registry=registry)(lambda: "SELECT 1 AS partition_key")
        assert wb.audit().to_dict()["unknown_event_types"] is None  # a projection that consumes every type


def test_unknown_event_types_are_judged_per_stream(tmp_path: Path) -> None:
    """The same event type name in two streams: 'Created' of orders is read by a view of orders, 'Created'
    of returns by no view, yet it was not listed as unknown (the consumed types were pooled over every
    stream); and a type unknown in two streams was counted with the last stream's events only."""
    from rebuild import Workbench
    from rebuild.config import Config
    from rebuild.projection import Registry, projection

    target = lake.Lake(tmp_path / "lake")
    lake.ingest(target, write_ndjson(tmp_path / "1.ndjson", [event(1, type="Created"), event(2, seq=2, type="Legacy")]),
                stream="orders")
    returns = [event(3, type="Created"), event(4, key="b", type="Opened"), event(5, key="c", type="Legacy"),
               event(6, key="d", type="Legacy")]
    lake.ingest(target, write_ndjson(tmp_path / "2.ndjson", returns), stream="returns")
    assert audit(target, known_event_types=["Created", "Opened"]).to_dict()["unknown_event_types"] == {"Legacy": 3}
    registry = Registry()
    projection(name="orders_made", key="partition_key", streams="orders", consumes="Created", registry=registry)(
        lambda: "SELECT DISTINCT partition_key FROM events")
    projection(name="returns_opened", key="partition_key", streams="returns", consumes="Opened", registry=registry)(
        lambda: "SELECT DISTINCT partition_key FROM events")
    config = Config(lake_uri=str(target.uri), store_uri=f"duckdb://{tmp_path}/v.duckdb")
    with Workbench(config, registry=registry) as wb:
        report = wb.audit()
        assert report.to_dict()["unknown_event_types"] == {"Created": 1, "Legacy": 3}
        assert [u["event_type"] for u in report.streams[1].unknown_event_types] == ["Created", "Legacy"]
        projection(name="every_return", key="partition_key", streams="returns", registry=registry)(
            lambda: "SELECT DISTINCT partition_key FROM events")
        assert wb.audit().to_dict()["unknown_event_types"] == {"Legacy": 1}  # of orders: every return is read
        projection(name="all_legacy", key="partition_key", consumes="Legacy", registry=registry)(
            lambda: "SELECT DISTINCT partition_key FROM events")
        assert wb.audit().to_dict()["unknown_event_types"] == {}


def test_a_projection_module_that_fails_does_not_stop_the_lake_audit(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """The audit reads the lake; only its unknown event types need the projections."""
    from rebuild.cli import main

    target = lake.Lake(tmp_path / "lake")
    lake.ingest(target, write_ndjson(tmp_path / "1.ndjson", [event(1)]), stream="orders")
    (tmp_path / "broken.py").write_text("raise RuntimeError('half-edited module')\n")
    (tmp_path / "workbench.toml").write_text(
        f'[lake]\nuri = "{target.uri}"\n[store]\nuri = "duckdb://{tmp_path}/v.duckdb"\n[projections]\nmodules = ["broken.py"]\n')
    assert main(["--config", str(tmp_path / "workbench.toml"), "lake", "audit", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["events"] == 1 and found["unknown_event_types"] is None
    assert "unknown event types not judged: projection module" in caplog.text and "half-edited module" in caplog.text


def test_an_audit_of_some_partition_keys_counts_their_events_and_quarantined_records_only(tmp_path: Path) -> None:
    """What a patch's check reports: the keys it corrects, not the whole lake (8.8 s of an 11 s
    check of a 29,000-key catch-up at 10M events)."""
    target = lake.Lake(tmp_path / "lake")
    generate(target, events=3000, seed=11, days=5)
    whole = audit(target).to_dict()
    gapped = [e["partition_key"] for e in whole["streams"]["orders"]["gaps"]["examples"]][:2]
    held = lake.read_quarantine(target).filter("partition_key IS NOT NULL").aggregate("min(partition_key)").fetchall()[0][0]
    keys = [*gapped, held, "o-0000001"]
    report = audit(target, partition_keys=keys)
    d = report.to_dict()
    events = lake.read_events(target, lake.EventFilter(partition_keys=keys)).aggregate("count(*)").fetchall()[0][0]
    quarantined = lake.read_quarantine(target).filter(f"partition_key IN {tuple(keys)}").aggregate("count(*)").fetchall()[0][0]
    assert gapped and 0 < events < whole["events"] and 0 < quarantined < whole["quarantined"]
    assert (d["events"], d["quarantined"], d["gaps"], d["keys_audited"]) == (events, quarantined, len(gapped), len(keys))
    assert d["duplicates_at_ingest"] is None and whole["keys_audited"] is None
    assert f"the events of {len(keys)} partition keys only" in report._repr_html_()


def test_the_drift_of_payloads_with_thousands_of_fields_is_listed_in_part_and_says_so(tmp_path: Path) -> None:
    """Events each holding a few of thousands of fields (60,000 events of 30 streams, 20 of 3,000 fields
    each) drift in every field: `rebuild lake audit` printed 664,000 lines in 9.5 minutes, and its JSON
    was 168 MB, the size a check report's audit got too."""
    target = lake.Lake(tmp_path / "lake")
    sparse = [event(n, key=f"k{n}", seq=1, payload={f"f{n}": n}) for n in range(1, 81)]
    later = [event(100, key="k100", seq=1, type="OrderShipped", payload={"n": 1}),
             event(101, key="k101", seq=1, type="OrderShipped", payload={"n": 1, "carrier": "x"})]
    lake.ingest(target, [write_ndjson(tmp_path / "a.ndjson", sparse + later[:1])], stream="orders")
    lake.ingest(target, [write_ndjson(tmp_path / "b.ndjson", later[1:])], stream="orders")
    report = audit(target)
    s = report.to_dict()["streams"]["orders"]
    assert (len(s["drift"]), s.get("drift_total")) == (50, 81)
    assert (s["drift"][0]["field"], s["drift"][0]["change"]) == ("carrier", "added")  # a change before the optional
    console = Console(record=True, width=160)
    report.render(console)
    text = console.export_text()
    assert "Payload schema drift (the first 50 of 81 drifting fields: added and removed ones first)" in text
    assert "f1 " in text and "f80 " not in text
    assert "payload drift: 31 more drifting fields (the first 50 of 81" in report._repr_html_()


def test_the_audit_of_many_streams_gives_each_stream_a_row(tmp_path: Path) -> None:
    """30 streams made the summary's column per stream three characters wide, each number folded onto
    three lines, and the HTML's event types a column per type of every stream (300 columns)."""
    target = lake.Lake(tmp_path / "lake")
    records = [event(n, key=f"k{n}", type=f"Thing{n}Happened", stream=f"stream{n:02d}") for n in range(30)]
    lake.ingest(target, [write_ndjson(tmp_path / "a.ndjson", records)])
    report = audit(target)
    console = Console(record=True, width=160)
    report.render(console)
    lines = console.export_text().splitlines()
    header = next(line for line in lines if "out of order" in line)
    assert "stream" in header and "events" in header
    assert len([line for line in lines if line.startswith("│ stream") and "1 " in line]) == 30
    assert report._repr_html_().count("<th scope='col'>") == 11 + 3  # the summary's columns, then stream, event_type, events
    one = audit(target, streams=["stream00"])  # a few streams keep a column each, a figure per row
    console = Console(record=True, width=160)
    one.render(console)
    assert any(line.startswith("│ out of order ") for line in console.export_text().splitlines())


def test_the_audit_s_tables_show_counts_with_separators(tmp_path: Path) -> None:
    """The validation report and the notebook showed the audit's 1200 beside its sentences' 1,200."""
    target = lake.Lake(tmp_path / "lake")
    lake.ingest(target, [write_ndjson(tmp_path / "in.ndjson", [event(n, seq=n) for n in range(1, 1201)])], stream="orders")
    page = audit(target)._repr_html_()
    assert "<td>1,200</td>" in page and "<td>1200</td>" not in page


def test_an_audit_of_a_lake_of_many_small_files_opens_each_file_once(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A lake archived every few minutes has thousands of small files: each of the audit's nine queries
    opened every one again (5,700 files of 2,000 commits: 11 s, 4 s once each is read once)."""
    target = small_commits(tmp_path)
    events = {f.path for f in target.snapshot().files}

    def audited(suggest_compact: int) -> tuple[dict[str, Any], Counter[str]]:
        monkeypatch.setattr(lake.compact, "SUGGEST_COMPACT", suggest_compact)
        con = logging_files()
        report = audit(target, verify="none", con=con).to_dict()
        opened = files_opened(con)
        con.close()
        return {k: v for k, v in report.items() if k != "uncompacted"}, opened

    compacted, by_view = audited(10_000)  # taken for a compacted lake: a view, each query reads its columns
    small, once = audited(1)
    assert small == compacted
    con = logging_files()
    lake.read_events(target, con=con).aggregate("count(*)").fetchall()
    one_read = files_opened(con)  # what one scan opens (DuckDB opens each file twice)
    assert all(once[p] <= one_read[p] + 1 for p in events)  # + 1: binding a query opens its first file
    assert all(by_view[p] > 3 * one_read[p] for p in events)  # the view read each file a dozen times


def test_an_audit_of_some_partition_keys_checks_the_files_it_reads_only(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A patch's check audits the keys it corrects, and opened the footer of every file of the lake for
    them (7,000 files of a lake archived every few minutes: 3.8 s of the check of a 3-key patch)."""
    target = small_commits(tmp_path)
    checked: list[str] = []
    real = lake.read.check_file
    monkeypatch.setattr(lake.read, "check_file", lambda path, **kw: checked.append(path) or real(path, **kw))
    keys = ["o3"]
    report = audit(target, partition_keys=keys)
    read = {f.path for f in lake.EventFilter(partition_keys=keys).files(target.snapshot(), target)}
    events = {f.path for f in target.snapshot().files}
    assert report.to_dict()["events"] == lake.read_events(target, lake.EventFilter(partition_keys=keys)).aggregate(
        "count(*)").fetchall()[0][0] > 0
    assert set(checked) & events == read and len(read) < len(events)
    checked.clear()
    audit(target)  # the lake's audit still checks every file
    assert set(checked) >= events


def test_an_audit_of_some_partition_keys_reads_the_quarantine_files_that_may_hold_them_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing compacts the quarantine: each night's ingest that quarantined a record added a file, and every
    check of a patch of a few keys opened all of them, in its audit and its lineage (a year of hourly ingests,
    2,700 files: 2.6 s of each check, against 0.2 s at 45). Their statistics say which may hold the keys."""
    from checks.lineage import lineage

    target = lake.Lake(tmp_path / "lake")
    # a malformed line has no key or event id: a file of such records only holds none
    lake.ingest(target, [write_ndjson(tmp_path / "broken.ndjson", ["{broken"])], stream="orders")
    for night in range(12):  # each night an order and two records that cannot be read, of it and of another key
        records = [event(1, key=f"k{night:02d}", seq=1), event(2, key=f"k{night:02d}", seq=2),
                   {**event(3, key=f"k{night:02d}", seq=3), "event_time": "not a time"},
                   {**event(4, key=f"k{night:02d}x", seq=1), "sequence": -1}]
        records = [{**r, "event_id": f"n{night:02d}-{i}"} for i, r in enumerate(records)]
        lake.ingest(target, [write_ndjson(tmp_path / f"night{night}.ndjson", records)], stream="orders")
    files = target.quarantine_files()
    keys = ["k03", "k07"]
    checked: list[str] = []
    real = lake.read.check_file

    def check_file(path: str, **kw: Any) -> Any:
        checked.append(path)
        return real(path, **kw)

    monkeypatch.setattr(lake.read, "check_file", check_file)
    report = audit(target, partition_keys=keys).to_dict()
    assert len(files) == 13 and report["quarantined"] == 2
    assert len(set(checked) & set(files)) == 2  # the footers of the two nights' quarantine files, of thirteen
    con = logging_files()
    traced = lineage(target, [{"order_id": k} for k in keys], partition_column="order_id", con=con)
    opened = files_opened(con)
    con.close()
    assert [[q["sequence"] for q in t.quarantine] for t in traced] == [[3], [3]]
    assert len(set(opened) & set(files)) == 2
    assert len(target.quarantine_files(keys=["k03"], event_ids=["n11-3"])) == 2  # k11x's record, of night 11
