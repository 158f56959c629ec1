"""Every input format, the aws-lambda-stream mapping of a foreign Parquet lake, and the CLI."""

from __future__ import annotations

import csv
import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lake
from rebuild.cli import main
from tests.conftest import T0, event, write_ndjson

COLUMNS = ["event_id", "partition_key", "sequence", "event_type", "event_time", "payload"]


def write_csv(path: Path, records: list[dict[str, object]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for r in records:
            writer.writerow([json.dumps(r[c]) if c == "payload" else r[c] for c in COLUMNS])
    return path


def write_parquet(path: Path, records: list[dict[str, object]]) -> Path:
    table = pa.table(
        {
            "event_id": [r["event_id"] for r in records],
            "partition_key": [r["partition_key"] for r in records],
            "sequence": pa.array([r["sequence"] for r in records], pa.int64()),
            "event_type": [r["event_type"] for r in records],
            "event_time": pa.array(
                [datetime.fromisoformat(str(r["event_time"])) for r in records], pa.timestamp("ms", tz="UTC")
            ),
            "payload": [json.dumps(r["payload"]) for r in records],
        }
    )
    pq.write_table(table, path)
    return path


def content(target: lake.Lake) -> list[tuple[object, ...]]:
    rel = lake.read_events(target).order("event_id")
    return [
        (r[0], r[1], r[2], r[3], r[4], r[5], json.loads(str(r[6])))
        for r in rel.project("event_id, stream, partition_key, sequence, event_type, event_time, payload").fetchall()
    ]


@pytest.mark.parametrize("writer", [write_ndjson, write_csv, write_parquet], ids=["ndjson", "csv", "parquet"])
def test_every_format_gives_the_same_events(tmp_path: Path, writer: object) -> None:
    records = [event(n, key=f"o{n % 3}", seq=n) for n in range(1, 11)]
    suffix = {write_ndjson: "ndjson", write_csv: "csv", write_parquet: "parquet"}[writer]  # type: ignore[index]
    source = writer(tmp_path / f"in.{suffix}", records)  # type: ignore[operator]
    target = lake.Lake(tmp_path / "lake")
    result = lake.ingest(target, [source], stream="orders")
    assert (result.read, result.archived, result.quarantined) == (10, 10, 0)
    rows = content(target)
    assert rows[0] == ("e1", "orders", "o1", 1, "OrderPlaced", T0 + timedelta(minutes=1), {"n": 1})
    assert {r[0] for r in rows} == {f"e{n}" for n in range(1, 11)}


@pytest.mark.parametrize("writer", [write_ndjson, write_csv], ids=["ndjson", "csv"])
def test_a_byte_order_mark_is_not_data(tmp_path: Path, writer: object) -> None:
    """Exporters on Windows start UTF-8 text with a BOM: the first record is still an event, and
    the first column keeps its name (and so its text type: ids with leading zeros stay as they are)."""
    records = [{**event(n), "event_id": f"000{n}"} for n in (1, 2)]
    plain = writer(tmp_path / f"in.{writer.__name__[6:]}", records)  # type: ignore[operator,attr-defined]
    marked = tmp_path / f"marked{plain.suffix}"
    marked.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    target = lake.Lake(tmp_path / "lake")
    result = lake.ingest(target, [marked], stream="orders")
    assert (result.archived, result.quarantined) == (2, 0)
    assert sorted(lake.read_events(target).project("event_id").fetchall()) == [("0001",), ("0002",)]


@pytest.mark.parametrize("writer", [write_ndjson, write_csv], ids=["ndjson", "csv"])
def test_gzip_files_are_read_as_they_are_decompressed(tmp_path: Path, writer: object) -> None:
    """Archives are often gzip: by suffix (.ndjson.gz, also in a folder) or by content (--format)."""
    records = [event(n, key=f"o{n % 3}") for n in range(1, 31)]
    suffix = writer.__name__[6:]  # type: ignore[attr-defined]
    plain = writer(tmp_path / f"plain.{suffix}", [*records[:5], {**records[5], "sequence": -1}, *records[6:]])  # type: ignore[operator]
    folder = tmp_path / "archive"
    folder.mkdir()
    (folder / f"part-0.{suffix}.gz").write_bytes(gzip.compress(plain.read_bytes()))
    (tmp_path / "blob.bin").write_bytes(gzip.compress(plain.read_bytes()))
    expected = lake.ingest(lake.Lake(tmp_path / "plain-lake"), [plain], stream="orders")
    for name, paths, fmt in (("folder", [folder], None), ("named", [tmp_path / "blob.bin"], suffix)):
        target = lake.Lake(tmp_path / f"{name}-lake")
        result = lake.ingest(target, paths, stream="orders", fmt=fmt)
        assert (result.archived, result.quarantined) == (expected.archived, expected.quarantined) == (29, 1)
        assert content(target) == content(lake.Lake(tmp_path / "plain-lake"))
        assert lake.read_quarantine(target).project("line").fetchall() == [(7 if suffix == "csv" else 6,)]


@pytest.mark.parametrize("suffix", ["ndjson", "csv"])
def test_a_truncated_gzip_file_is_an_error_naming_it_and_nothing_is_archived(tmp_path: Path, suffix: str) -> None:
    writer = write_ndjson if suffix == "ndjson" else write_csv
    plain = writer(tmp_path / f"in.{suffix}", [event(n, payload={"pad": "x" * 200, "n": n}) for n in range(1, 3001)])
    packed = gzip.compress(plain.read_bytes())
    broken = tmp_path / f"in.{suffix}.gz"
    broken.write_bytes(packed[: len(packed) * 2 // 3])
    target = lake.Lake(tmp_path / "lake")
    with pytest.raises(lake.SourceError, match=f"cannot read .*in.{suffix}.gz"):
        lake.ingest(target, [write_ndjson(tmp_path / "good.ndjson", [event(9999)]), broken], stream="orders")
    assert not target.exists() or lake.read_events(target).count("*").fetchall()[0][0] == 0


def test_formats_mix_in_one_commit_and_dedupe_across_them(tmp_path: Path) -> None:
    records = [event(n) for n in range(1, 7)]
    files = [
        write_ndjson(tmp_path / "a.ndjson", records[:3]),
        write_csv(tmp_path / "b.csv", records[2:5]),
        write_parquet(tmp_path / "c.parquet", records[4:]),
    ]
    result = lake.ingest(lake.Lake(tmp_path / "lake"), files, stream="orders")
    assert (result.read, result.archived, result.duplicates) == (8, 6, 2)


def test_ndjson_lines_are_numbered_across_chunks_blanks_and_bad_bytes(tmp_path: Path) -> None:
    """Lines cut across many read chunks (batch_rows=1 reads 64 KB at a time) keep their numbers;
    blank and whitespace-only lines are skipped but counted, also after a line whose invalid
    UTF-8 was replaced; CRLF line ends and a last line without one are fine."""
    lines: list[bytes] = []
    for n in range(1, 1501):
        if n % 100 == 0:
            lines.append(b" \t ")
        elif n % 250 == 1:
            lines.append(b'{"event_id": "bad\xff\xfe", "oops"')
        else:
            lines.append(json.dumps(event(n, key=f"o{n % 13}")).encode())
    source = tmp_path / "in.ndjson"
    source.write_bytes(b"\r\n".join(lines))  # no line end after the last line
    target = lake.Lake(tmp_path / "lake")
    result = lake.ingest(target, [source], stream="orders", batch_rows=1)
    bad = [n for n in range(1, 1501) if n % 250 == 1]
    assert (result.read, result.archived, result.quarantined) == (1500 - 15, 1500 - 15 - len(bad), len(bad))
    assert [r[0] for r in lake.read_quarantine(target).order("line").project("line").fetchall()] == bad
    assert lake.read_events(target).filter("event_id = 'e1499'").count("*").fetchall() == [(1,)]


# -- a foreign aws-lambda-stream lake ------------------------------------------------------------
AWS_START = 1_709_251_200_000  # 2024-03-01T00:00:00Z in epoch ms


def aws_lake(folder: Path, files: int = 3, per_file: int = 4) -> list[dict[str, object]]:
    """Plain Parquet files with the aws-lambda-stream event fields (no Delta, no envelope)."""
    folder.mkdir(parents=True)
    written = []
    for f in range(files):
        rows = [
            {
                "id": f"ev-{f}-{i}",
                "type": "order-submitted" if i == 0 else "order-updated",
                "timestamp": AWS_START + (f * per_file + i) * 1000,
                "partitionKey": f"order-{i % 2}",
                "tags": {"account": "dev", "region": "eu-west-1"},
                "order": {"id": f"order-{i % 2}", "total": float(i)},
                "raw": json.dumps({"dynamodb": {"Keys": {"pk": f"order-{i % 2}"}}}),
            }
            for i in range(per_file)
        ]
        pq.write_table(pa.Table.from_pylist(rows), folder / f"part-{f:03d}.parquet")
        written.extend(rows)
    (folder / "_SUCCESS").write_text("")
    return written


def test_aws_lambda_stream_foreign_lake(tmp_path: Path) -> None:
    written = aws_lake(tmp_path / "foreign")
    target = lake.Lake(tmp_path / "lake")
    result = lake.ingest(
        target, [tmp_path / "foreign"], stream="orders", mapping=lake.Mapping.load("aws-lambda-stream")
    )
    assert (result.read, result.archived, result.quarantined) == (12, 12, 0)
    assert len(result.files) == 3
    rows = lake.read_events(target).order("event_id").project(
        "event_id, stream, partition_key, sequence, event_type, event_time, payload, metadata"
    ).fetchall()
    first = next(r for r in rows if r[0] == "ev-1-1")
    source = next(w for w in written if w["id"] == "ev-1-1")
    assert first[:5] == ("ev-1-1", "orders", "order-1", source["timestamp"], "order-updated")
    assert first[5] == datetime.fromtimestamp(int(source["timestamp"]) / 1000, UTC)  # type: ignore[call-overload]
    assert json.loads(str(first[6])) == source["order"]
    metadata = json.loads(str(first[7]))
    assert metadata["tags"] == source["tags"] and metadata["raw"] == source["raw"]


def test_aws_lambda_stream_same_millisecond_is_a_conflict(tmp_path: Path) -> None:
    folder = tmp_path / "foreign"
    aws_lake(folder, files=1, per_file=2)
    extra = {"id": "ev-dup-ms", "type": "order-updated", "timestamp": AWS_START, "partitionKey": "order-0",
             "tags": {"account": "dev", "region": "eu-west-1"}, "order": {"id": "order-0", "total": 9.0},
             "raw": "{}"}
    pq.write_table(pa.Table.from_pylist([extra]), folder / "part-999.parquet")
    target = lake.Lake(tmp_path / "lake")
    result = lake.ingest(target, [folder], stream="orders", mapping=lake.Mapping.load("aws-lambda-stream"))
    assert (result.archived, result.quarantined) == (2, 1)
    reason, source, line = lake.read_quarantine(target).project("reason, source, line").fetchall()[0]
    assert reason.startswith("conflict: partition_key order-0") and source.endswith("part-999.parquet")
    assert line == 1


# -- through the CLI -----------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _no_workbench_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads ./workbench.toml and REBUILD_*: run it where neither exists."""
    monkeypatch.chdir(tmp_path)
    for name in ("REBUILD_CONFIG", "REBUILD_LAKE_URI", "REBUILD_STORE_URI", "REBUILD_MEMORY_LIMIT", "REBUILD_TEMP_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)


def run(capsys: pytest.CaptureFixture[str], lake_dir: Path, *args: str) -> tuple[int, dict[str, object]]:
    code = main(["--lake", str(lake_dir), "lake", "ingest", *args, "--json"])
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out  # exactly one JSON object
    return code, json.loads(lines[0])


def test_cli_ingests_and_reports_one_json_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = write_ndjson(tmp_path / "in.ndjson", [event(1), event(2), "{bad"])
    code, out = run(capsys, tmp_path / "lake", str(source), "--stream", "orders")
    assert code == 0 and out["archived"] == 2 and out["quarantined"] == 1
    assert out["quarantine_reasons"] == {"malformed record: malformed JSON": 1}
    code, out = run(capsys, tmp_path / "lake", str(source), "--stream", "orders", "--strict")
    assert code == 1 and out["duplicates"] == 2  # --strict: the result is printed, then exit 1


def test_cli_aws_lambda_stream_map(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    aws_lake(tmp_path / "foreign", files=2, per_file=3)
    code, out = run(capsys, tmp_path / "lake", str(tmp_path / "foreign"), "--map", "aws-lambda-stream", "--stream", "orders")
    assert code == 0 and out["archived"] == 6


def _corrupt_parquet(path: Path) -> Path:
    pq.write_table(pa.table({"event_id": [f"x{i}" for i in range(3000)]}), path, row_group_size=1000)
    data = bytearray(path.read_bytes())
    offset = pq.ParquetFile(path).metadata.row_group(1).column(0).data_page_offset
    data[offset : offset + 64] = b"\xff" * 64  # a broken page header; the footer is intact
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("problem", ["missing", "garbage", "corrupted", "unfit-mapping"])
def test_cli_whole_input_errors_exit_2_and_archive_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], problem: str
) -> None:
    good = write_ndjson(tmp_path / "good.ndjson", [event(1)])
    bad = tmp_path / "bad.parquet"
    extra: list[str] = []
    if problem == "garbage":
        bad.write_bytes(b"this is not parquet at all" * 10)
    elif problem == "corrupted":
        bad = _corrupt_parquet(bad)
        extra = ["--map", str(_id_only_mapping(tmp_path))]
        good = write_parquet(tmp_path / "good.parquet", [{**event(1), "event_id": "x1"}])
    elif problem == "unfit-mapping":
        write_parquet(bad, [event(2)])
        extra = ["--map", "aws-lambda-stream"]
    code, out = run(capsys, tmp_path / "lake", str(good), str(bad), "--stream", "orders", *extra)
    assert code == 2, out
    assert "bad.parquet" in str(out["error"]) and out["exit_code"] == 2
    target = lake.Lake(tmp_path / "lake")
    assert not target.exists() or lake.read_events(target).count("*").fetchall()[0][0] == 0


def _id_only_mapping(tmp_path: Path) -> Path:
    """A mapping whose required fields a one-column file satisfies (so reading, not checking, fails)."""
    path = tmp_path / "ids.toml"
    path.write_text(
        'name = "ids"\n[fields]\nevent_id = "event_id"\npartition_key = "event_id"\n'
        'sequence = "event_id"\nevent_type = "event_id"\nevent_time = "event_id"\n'
    )
    return path
