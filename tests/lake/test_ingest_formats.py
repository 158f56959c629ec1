"""Every input format, the aws-lambda-stream mapping of a foreign Parquet lake, and the CLI."""

from __future__ import annotations

import csv
import gzip
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
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


@pytest.mark.parametrize(("separator", "line_end"), [(";", "\r\n"), ("\t", "\n"), ("|", "\n"), (",", "\r")],
                         ids=["excel-semicolon", "tab", "pipe", "old-mac-cr"])
def test_csv_separator_is_read_from_the_header(tmp_path: Path, separator: str, line_end: str) -> None:
    """Excel saves CSV with ';' where the decimal mark is a comma (with a BOM, CRLF), databases tabs
    or pipes, old Excel for Mac a lone CR per line: each gives the same events as the plain file,
    quoted values holding the separator or a line end included."""
    records = [event(n, key=f"o{n % 2}", payload={"note": f"a{separator}b,c", "lines": "x\ny"}) for n in range(1, 5)]
    source = tmp_path / "in.csv"
    with open(source, "w", newline="", encoding="utf-8-sig" if separator == ";" else "utf-8") as handle:
        writer = csv.writer(handle, delimiter=separator, lineterminator=line_end)
        writer.writerow(COLUMNS)
        writer.writerows([json.dumps(r[c]) if c == "payload" else r[c] for c in COLUMNS] for r in records)
    target = lake.Lake(tmp_path / "lake")
    result = lake.ingest(target, [source], stream="orders")
    assert (result.archived, result.quarantined) == (4, 0)
    lake.ingest(lake.Lake(tmp_path / "plain"), [write_ndjson(tmp_path / "in.ndjson", records)], stream="orders")
    assert content(target) == content(lake.Lake(tmp_path / "plain"))


def test_a_declared_time_format_reads_excel_dates_and_an_undeclared_one_is_named(tmp_path: Path) -> None:
    """Excel writes times in the locale's format (01.02.2026 10:00): quarantined, the reason says how to
    declare it; with event_time_format they are UTC times (or in their own zone, with %z)."""
    source = tmp_path / "excel.csv"
    source.write_text('Id;Key;Seq;Type;When\r\ne1;k;1;OrderPlaced;01.02.2026 10:00\r\ne2;k;2;OrderPlaced;01.02.2026 10:30\r\n')
    fields = '[fields]\nevent_id = "Id"\npartition_key = "Key"\nsequence = "Seq"\nevent_type = "Type"\nevent_time = "When"\n'
    (tmp_path / "plain.toml").write_text(fields)
    (tmp_path / "dated.toml").write_text(fields + '[options]\nevent_time_format = "%d.%m.%Y %H:%M"\n')
    plain = lake.ingest(lake.Lake(tmp_path / "plain"), [source], stream="orders",
                        mapping=lake.Mapping.load(tmp_path / "plain.toml"))
    assert plain.quarantined == 2 and all('event_time_format = "%d.%m.%Y %H:%M"' in r for r in plain.reasons)
    target = lake.Lake(tmp_path / "lake")
    assert lake.ingest(target, [source], stream="orders", mapping=lake.Mapping.load(tmp_path / "dated.toml")).archived == 2
    assert lake.read_events(target).order("event_id").project("event_time").fetchall() == [
        (datetime(2026, 2, 1, 10, 0, tzinfo=UTC),), (datetime(2026, 2, 1, 10, 30, tzinfo=UTC),)]
    (tmp_path / "typo.toml").write_text(fields + '[options]\nevent_time_format = "%d.%m.%Q"\n')
    with pytest.raises(lake.SourceError, match="event_time_format '%d.%m.%Q': .*%Q"):
        lake.Mapping.load(tmp_path / "typo.toml")


@pytest.mark.parametrize(("suffix", "encoding", "message"), [
    ("csv", "cp1252", "not UTF-8: convert it, e.g. iconv -f cp1252 -t utf-8"),
    ("csv", "utf-16", "is UTF-16 text: convert it to UTF-8"),
    ("ndjson", "utf-16", "is UTF-16 text: convert it to UTF-8"),
])
def test_text_in_another_encoding_is_an_error_saying_how_to_convert_it(
    tmp_path: Path, suffix: str, encoding: str, message: str
) -> None:
    """A CSV file in cp1252 (pyarrow refuses it whole) or any text in UTF-16 (Excel's 'Unicode
    Text'): the error says what to do, and nothing is archived; UTF-16 was a crash for CSV."""
    plain = (write_csv if suffix == "csv" else write_ndjson)(
        tmp_path / f"plain.{suffix}", [event(n, payload={"name": "Müller"}) for n in (1, 2)])
    source = tmp_path / f"in.{suffix}"
    source.write_bytes(plain.read_text().replace("\\u00fc", "ü").encode(encoding))  # the letter, not its escape
    target = lake.Lake(tmp_path / "lake")
    with pytest.raises(lake.SourceError, match=re.escape(message)):
        lake.ingest(target, [write_ndjson(tmp_path / "good.ndjson", [event(3)]), source], stream="orders")
    assert not target.exists() or lake.read_events(target).count("*").fetchall()[0][0] == 0


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


def test_a_small_ndjson_file_is_read_in_a_buffer_of_its_size(tmp_path: Path) -> None:
    """Each read chunk is a zero-filled buffer of 256 bytes per batch row: 122 MB (0.15-0.2 s) for a file
    of six lines, at every ingest of a scheduled job's small file. A file smaller than that is read in a
    buffer of its own size; a file that grows while it is read is still read whole."""
    import tracemalloc

    from lake.formats import _ndjson

    source = write_ndjson(tmp_path / "small.ndjson", [event(n) for n in range(1, 7)])
    tracemalloc.start()
    try:
        rows = sum(t.num_rows for t in _ndjson(source, 500_000))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rows == 6
    assert peak < 4 << 20, f"{peak:,} bytes allocated to read {source.stat().st_size:,} bytes"
    chunks = _ndjson(source, 500_000)
    first = next(chunks)
    with open(source, "a") as handle:  # appended after its size was taken
        handle.write(json.dumps(event(7)) + "\n")
    assert first.num_rows + sum(t.num_rows for t in chunks) == 7


def test_parquet_text_written_as_plain_binary_is_read_as_utf8(tmp_path: Path) -> None:
    """Impala, Hive and old Spark write strings as BYTE_ARRAY without the UTF8 annotation (Spark's
    binaryAsString setting is for them): such columns were archived as escaped bytes ('\\xC3\\x9Cber',
    a payload '"{\\x22a\\x22: ...'); they are text. Bytes that are not UTF-8 are an error naming the column."""
    records = [event(1, type="Überwiesen", payload={"name": "Müller"}), event(2)]
    table = pa.table({c: pa.array([str(r[c]).encode() if c != "payload" else json.dumps(r[c]).encode() for r in records],
                                  pa.binary()) for c in ("event_id", "partition_key", "event_type", "event_time", "payload")})
    source = tmp_path / "hive.parquet"
    pq.write_table(table.append_column("sequence", pa.array([1, 2], pa.int64())), source)
    target = lake.Lake(tmp_path / "lake")
    assert lake.ingest(target, [source], stream="orders").archived == 2
    lake.ingest(lake.Lake(tmp_path / "plain"), [write_ndjson(tmp_path / "in.ndjson", records)], stream="orders")
    assert content(target) == content(lake.Lake(tmp_path / "plain"))
    assert lake.read_events(target).filter("event_id = 'e1'").project("event_type").fetchall() == [("Überwiesen",)]
    pq.write_table(table.set_column(4, "payload", pa.array([b'{"name": "M\xfcller"}', b"{}"])).append_column(
        "sequence", pa.array([1, 2], pa.int64())), source)
    with pytest.raises(lake.SourceError, match="column payload of .*hive.parquet holds bytes that are not UTF-8"):
        lake.ingest(lake.Lake(tmp_path / "bad"), [source], stream="orders")


@pytest.mark.parametrize("shape", ["array", "pretty-array", "pretty-objects"])
def test_a_json_document_is_refused_as_ndjson_saying_how_to_convert_it(tmp_path: Path, shape: str) -> None:
    """A .json export that is one array (a CloudEvents batch, an API dump) or objects printed over many
    lines: every line was quarantined as malformed JSON and nothing archived, with exit 0. It is an
    error that says how to make NDJSON of it, and nothing is archived (nor quarantined)."""
    records = [event(1), event(2)]
    text = {"array": json.dumps(records), "pretty-array": json.dumps(records, indent=2),
            "pretty-objects": "\n".join(json.dumps(r, indent=2) for r in records)}[shape]
    source = tmp_path / "export.json"
    source.write_text(text)
    target = lake.Lake(tmp_path / "lake")
    with pytest.raises(lake.SourceError, match=r"export.json is one JSON document .* not NDJSON .*jq -c"):
        lake.ingest(target, [source], stream="orders")
    assert not target.exists() or lake.read_quarantine(target).count("*").fetchall() == [(0,)]


def test_an_ndjson_line_in_another_encoding_is_quarantined_not_archived_with_replaced_letters(tmp_path: Path) -> None:
    """A latin-1 or cp1252 line (Müller as the byte 0xFC) is valid JSON once decoded, but not UTF-8:
    archived, its payload would hold U+FFFD for the letter and nobody would know. It is quarantined
    saying how to convert the file; the UTF-8 lines around it (and blank ones) are read as ever."""
    line = json.dumps(event(1, payload={"name": "Müller €"}), ensure_ascii=False)
    same_in_utf8 = json.dumps(event(3, payload={"name": "Müller €"}), ensure_ascii=False)
    source = tmp_path / "in.ndjson"
    source.write_bytes(b"\n".join([line.encode("cp1252"), b"", json.dumps(event(2)).encode(), same_in_utf8.encode()]))
    target = lake.Lake(tmp_path / "lake")
    result = lake.ingest(target, [source], stream="orders")
    assert (result.read, result.archived, result.quarantined) == (3, 2, 1)
    reason, line_number, record = lake.read_quarantine(target).project("reason, line, record").fetchall()[0]
    assert reason.startswith("not UTF-8") and "convert the file to UTF-8" in reason
    assert (line_number, record) == (1, line.replace("ü", "\ufffd").replace("€", "\ufffd"))
    payloads = lake.read_events(target).order("event_id").project("payload").fetchall()
    assert [json.loads(p) for (p,) in payloads] == [{"n": 2}, {"name": "Müller €"}]


def test_ndjson_numbers_a_double_cannot_hold_keep_their_digits(tmp_path: Path) -> None:
    """A payload's 1.234567890123456789 (wei, a NUMERIC(38,18) exported as JSON) was archived as a
    double's 1.2345678901234567, silently. The payload and metadata of such a line keep their text as
    written; a double's own 17 digits (Python's time.time()) and big integers read back as ever."""
    exact = '{"amount": 1.234567890123456789, "total": 12345678901234567.89, "rate": -0.12345678901234567}'
    records = [
        {**event(1), "payload": "EXACT", "metadata": "FX"},
        event(2, payload={"at": 1732459999.1234567, "big": 123456789012345678901234567890, "n": 1.50}),
        {**event(3), "note": "1.234567890123456789", "payload": {"n": 3}},
    ]
    fx = '{"fx": 0.1000000000000000055511151231257827}'  # as text: Python's json would read it as 0.1
    lines = [json.dumps(r).replace('"EXACT"', exact).replace('"FX"', fx) for r in records]
    source = tmp_path / "in.ndjson"
    source.write_text("\n".join(lines) + "\n")
    target = lake.Lake(tmp_path / "lake")
    assert lake.ingest(target, [source], stream="orders").archived == 3
    rows = lake.read_events(target).order("event_id").project("payload, metadata").fetchall()
    assert rows[0] == (exact, fx)
    assert rows[1][0] == '{"at":1732459999.1234567,"big":123456789012345678901234567890,"n":1.5}'
    assert json.loads(rows[2][0]) == {"n": 3}


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


@pytest.mark.parametrize("layout", ["pandas-category", "string-view"])
def test_json_text_in_any_string_layout_is_the_payload_not_a_quoted_string(tmp_path: Path, layout: str) -> None:
    """pandas writes a category column (and Polars a Categorical) as a dictionary of strings, newer
    Arrow writers string views: JSON text in one is the payload as it is, and checked to be JSON,
    not quoted once more as a JSON string. pandas' own index column is not an event field."""
    records = [event(n) for n in (1, 2, 3)]
    payloads = ['{"total": 12.30, "items": [1, 2]}', '{"total": 0.1}', "{broken"]
    frame = pd.DataFrame({c: [str(r[c]) for r in records] for c in COLUMNS if c not in ("sequence", "payload")})
    frame["sequence"] = [r["sequence"] for r in records]
    frame["payload"] = pd.Series(payloads, dtype="category")
    frame["metadata"] = pd.Series(['{"source": "shop"}'] * 3, dtype="category")
    source = tmp_path / "in.parquet"
    if layout == "pandas-category":
        frame.index = [10, 20, 30]  # not a range: pandas keeps it as __index_level_0__
        frame.to_parquet(source)
    else:
        table = pa.Table.from_pandas(frame, preserve_index=False)
        views = {name: table[name].cast(pa.string()).cast(pa.string_view()) for name in ("payload", "metadata")}
        pq.write_table(table.drop(list(views)).append_column("payload", views["payload"])
                       .append_column("metadata", views["metadata"]), source)
    target = lake.Lake(tmp_path / "lake")
    result = lake.ingest(target, [source], stream="orders")
    assert (result.archived, result.quarantined) == (2, 1)
    assert result.reasons == {"payload is not JSON": 1}
    rows = lake.read_events(target).order("event_id").project("payload, metadata").fetchall()
    assert rows == [(payloads[0], '{"source": "shop"}'), (payloads[1], '{"source": "shop"}')]


def test_a_sequence_pandas_wrote_as_floats_is_read_as_integers(tmp_path: Path) -> None:
    """pandas turns an int column with one missing value into float64: every row was quarantined as
    "sequence is not a non-negative int64: 5.0". Whole numbers a double holds exactly are integers; the
    missing one, a fraction, a negative number and one past 2**53 (not exact in a double) are quarantined."""
    records = [event(n) for n in range(1, 7)]
    frame = pd.DataFrame({c: [json.dumps(r[c]) if c == "payload" else str(r[c]) for r in records]
                          for c in COLUMNS if c != "sequence"})
    frame["sequence"] = [5.0, 7.0, None, 1.5, -2.0, float(2**53 + 2)]
    frame.to_parquet(tmp_path / "in.parquet")
    target = lake.Lake(tmp_path / "lake")
    result = lake.ingest(target, [tmp_path / "in.parquet"], stream="orders")
    assert (result.archived, result.quarantined) == (2, 4)
    assert lake.read_events(target).order("event_id").project("sequence").fetchall() == [(5,), (7,)]
    reasons = " ".join(result.reasons)
    assert "missing field sequence" in reasons and "1.5" in reasons and "-2" in reasons and "9007199254740994" in reasons


# -- JSON envelopes that nest the event's fields ---------------------------------------------------
EVENTBRIDGE_MAP = """
[fields]
event_id = "id"
event_type = '$."detail-type"'
event_time = "time"
partition_key = "$.detail.orderId"
sequence = "$.detail.version"
payload = "detail"
[options]
metadata = ["source", "region"]
"""
DEBEZIUM_MAP = """
[fields]
event_id = "$.payload.source.lsn"
event_type = "$.payload.op"
event_time = "$.payload.ts_ms"
partition_key = "$.payload.after.id"
sequence = "$.payload.source.lsn"
payload = "$.payload.after"
[options]
event_time_unit = "ms"
"""


def test_json_paths_map_eventbridge_archives_and_kafka_connect_envelopes(tmp_path: Path) -> None:
    """EventBridge nests the entity under detail; Kafka Connect's JSON (Debezium's change events) puts
    the whole record under payload: a mapping reads such fields by JSON path, and a line whose path
    leads nowhere is quarantined naming it."""
    bridge = [{"version": "0", "id": f"eb-{i}", "detail-type": "OrderPlaced", "source": "shop", "region": "eu-west-1",
               "time": f"2026-01-01T10:00:0{i}+01:00", "detail": {"orderId": "o-1", "version": i, "total": 9.5}}
              for i in (1, 2)]
    bridge.append({**bridge[0], "id": "eb-3", "detail": "no object"})
    change = {"schema": {"type": "struct"}, "payload": {"before": None, "after": {"id": 7, "amount": "AMOUNT"},
                                                         "source": {"lsn": 1042}, "op": "u", "ts_ms": 1767261600123}}
    sources = {"eventbridge": write_ndjson(tmp_path / "eb.ndjson", bridge),
               "debezium": write_ndjson(tmp_path / "dbz.ndjson",
                                        [json.dumps(change).replace('"AMOUNT"', "1.234567890123456789")])}
    maps = {"eventbridge": EVENTBRIDGE_MAP, "debezium": DEBEZIUM_MAP}
    results = {}
    for name, source in sources.items():
        (tmp_path / f"{name}.toml").write_text(maps[name])
        results[name] = lake.ingest(lake.Lake(tmp_path / name), [source], stream="orders",
                                    mapping=lake.Mapping.load(tmp_path / f"{name}.toml"))
    assert (results["eventbridge"].archived, results["eventbridge"].reasons) == (
        2, {"missing field partition_key ($.detail.orderId)": 1})
    columns = "event_id, partition_key, sequence, event_type, event_time, payload, metadata"
    assert lake.read_events(lake.Lake(tmp_path / "eventbridge")).order("event_id").project(columns).fetchall()[0] == (
        "eb-1", "o-1", 1, "OrderPlaced", datetime(2026, 1, 1, 9, 0, 1, tzinfo=UTC),
        '{"orderId":"o-1","version":1,"total":9.5}', '{"source":"shop","region":"eu-west-1"}')
    assert lake.read_events(lake.Lake(tmp_path / "debezium")).project(columns).fetchall() == [(
        "1042", "7", 1042, "u", datetime(2026, 1, 1, 10, 0, 0, 123000, tzinfo=UTC),
        '{"id": 7, "amount": 1.234567890123456789}', None)]


def test_json_paths_are_refused_for_csv_and_parquet_and_checked_when_loaded(tmp_path: Path) -> None:
    (tmp_path / "eb.toml").write_text(EVENTBRIDGE_MAP)
    source = write_parquet(tmp_path / "in.parquet", [event(1)])
    with pytest.raises(lake.SourceError, match=r"reads JSON paths .*only NDJSON records have"):
        lake.ingest(lake.Lake(tmp_path / "lake"), [source], stream="orders", mapping=lake.Mapping.load(tmp_path / "eb.toml"))
    (tmp_path / "typo.toml").write_text(EVENTBRIDGE_MAP.replace("$.detail.orderId", "$.detail..orderId"))
    with pytest.raises(lake.SourceError, match=r"'\$.detail..orderId' is no JSON path: write \$.detail.orderId"):
        lake.Mapping.load(tmp_path / "typo.toml")


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


def test_a_parquet_file_is_read_in_row_order_with_its_row_numbers(tmp_path: Path) -> None:
    """DuckDB reads a Parquet input itself, in parallel: the first copy of an event still wins, a
    quarantined row keeps its row number, and folders named like a Hive table (``stream=web``)
    add no columns to the file's (its stream is the one given)."""
    records = [event(n, key=f"o{n % 7}", seq=n) for n in range(1, 5001)]
    records[4499] = {**records[0], "payload": {"copy": True}}  # row 4500 repeats row 1's event
    records[3100] = {**records[3100], "sequence": -1}
    folder = tmp_path / "stream=web" / "bucket=3"
    folder.mkdir(parents=True)
    source = write_parquet(folder / "in.parquet", records)
    pq.write_table(pq.read_table(source), source, row_group_size=700)
    target = lake.Lake(tmp_path / "lake")
    result = lake.ingest(target, [source], stream="orders")
    assert (result.read, result.archived, result.duplicates, result.quarantined) == (5000, 4998, 1, 1)
    assert lake.read_quarantine(target).project("line, reason").fetchall() == [
        (3101, "sequence is not a non-negative int64: -1")]
    first = lake.read_events(target).filter("event_id = 'e1'").project("stream, payload").fetchall()
    assert [(s, json.loads(p)) for s, p in first] == [("orders", {"n": 1})]


def test_a_parquet_file_duckdb_cannot_read_is_read_by_pyarrow(tmp_path: Path) -> None:
    """A column named like DuckDB's row number (``file_row_number``) stops DuckDB's reader, not the ingest."""
    source = write_parquet(tmp_path / "in.parquet", [event(n) for n in (1, 2)])
    table = pq.read_table(source)
    pq.write_table(table.append_column("file_row_number", pa.array([7, 8], pa.int64())), source, row_group_size=1)
    result = lake.ingest(lake.Lake(tmp_path / "lake"), [source], stream="orders")
    assert (result.archived, result.quarantined) == (2, 0)


def test_a_damaged_parquet_file_is_named_with_the_row_near_the_damage(tmp_path: Path) -> None:
    bad = _corrupt_parquet(tmp_path / "bad.parquet")
    with pytest.raises(lake.SourceError, match=r"bad.parquet is corrupted in rows 1,001-2,000 \(row group 1\): .* nothing of this ingest"):
        lake.ingest(lake.Lake(tmp_path / "lake"), [bad], stream="orders", mapping=lake.Mapping.load(_id_only_mapping(tmp_path)))
