"""Readers that turn an input file into batches of raw records, each with its line (or row) number.

Nothing is validated here: NDJSON lines stay text, CSV cells stay text, Parquet keeps its types.
Rows a reader itself cannot split (a CSV row with the wrong number of cells) come back as
``Rejected`` records so that they are quarantined, not lost.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from lake.errors import SourceError

FORMATS = ("ndjson", "csv", "parquet")
SUFFIXES = {".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "ndjson", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class Rejected:
    line: int
    record: str
    reason: str


def detect_format(path: Path, given: str | None) -> str:
    if given is not None:
        if given not in FORMATS:
            raise SourceError(f"unknown format {given!r}: use one of {list(FORMATS)}", file=str(path))
        return given
    fmt = SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise SourceError(
            f"cannot tell the format of {path} from its suffix: pass --format {'|'.join(FORMATS)}",
            file=str(path),
        )
    return fmt


def read_batches(path: Path, fmt: str, rows: int, rejected: list[Rejected]) -> Iterator[pa.Table]:
    """Yield tables with a ``_line`` column; rows the reader cannot split go to ``rejected``."""
    if fmt == "ndjson":
        yield from _ndjson(path, rows)
    elif fmt == "csv":
        yield from _csv(path, rows, rejected)
    else:
        yield from _parquet(path, rows)


def _ndjson(path: Path, rows: int) -> Iterator[pa.Table]:
    """Lines numbered from 1, cut by numpy and handed to Arrow without a Python object per line.

    Each ``_raw`` value keeps its line end (``\\n`` or ``\\r\\n``): JSON allows the whitespace, and
    the values stay zero-copy slices of the chunk read. Blank lines are skipped (but counted).
    """
    start = 1
    with open(path, "rb") as handle:
        tail = b""
        while True:
            chunk = handle.read(max(rows * 256, 1 << 16))
            data = tail + chunk
            if not data:
                return
            if not chunk and not data.endswith(b"\n"):
                data += b"\n"  # the last line has no line end
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # no line end yet: read on
                tail = data
                continue
            data, tail = data[:cut], data[cut:]
            lines = _lines(data)
            numbers = pa.array(np.arange(start, start + len(lines), dtype=np.int64))
            start += len(lines)
            yield pa.table({"_line": numbers, "_raw": lines}).filter(_not_blank(data, lines))


def _lines(data: bytes) -> pa.Array:
    """``data`` (ending with a line end) as a string array of its lines, line ends included."""
    ends = np.flatnonzero(np.frombuffer(data, np.uint8) == 10) + 1
    offsets = np.concatenate(([0], ends)).astype(np.int64)
    lines = pa.Array.from_buffers(pa.large_string(), len(ends), [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    try:
        lines.validate(full=True)
    except pa.ArrowInvalid:  # invalid UTF-8: replace the bad bytes (line ends are never touched)
        return _lines(data.decode("utf-8", errors="replace").encode("utf-8"))
    return lines


def _not_blank(data: bytes, lines: pa.Array) -> pa.Array:
    """False for lines holding only whitespace; only lines starting with whitespace are looked at."""
    offsets = np.frombuffer(lines.buffers()[1], np.int64)[: len(lines) + 1]
    first = np.frombuffer(data, np.uint8)[offsets[:-1]]
    keep = np.ones(len(lines), dtype=bool)
    for i in np.flatnonzero(np.isin(first, (9, 10, 13, 32))):
        keep[i] = bool(data[offsets[i] : offsets[i + 1]].strip())
    return pa.array(keep)


def _csv(path: Path, rows: int, rejected: list[Rejected]) -> Iterator[pa.Table]:
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        header = next(csv.reader(io.StringIO(handle.readline())), [])
    if not header:
        return

    def on_invalid(row: pacsv.InvalidRow) -> str:
        rejected.append(
            Rejected(
                line=int(row.number or 0),
                record=row.text or "",
                reason=f"malformed CSV row: {row.actual_columns} cells, expected {row.expected_columns}",
            )
        )
        return "skip"

    try:
        reader = pacsv.open_csv(
            path,
            # single-threaded: only then does pyarrow tell the number of a row it cannot split
            read_options=pacsv.ReadOptions(block_size=max(1 << 20, rows * 128), use_threads=False),
            parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header}, strings_can_be_null=True
            ),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"cannot read CSV {path}: {exc}", file=str(path)) from exc
    line = 2  # data starts after the header; skipped rows keep their own numbers
    for batch in reader:
        skipped = {r.line for r in rejected}
        numbers = []
        while len(numbers) < batch.num_rows:
            if line not in skipped:
                numbers.append(line)
            line += 1
        yield pa.Table.from_batches([batch]).append_column("_line", pa.array(numbers, pa.int64()))


def _parquet(path: Path, rows: int) -> Iterator[pa.Table]:
    try:
        handle = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(
            f"cannot read Parquet file {path}: {exc}; nothing of this ingest was archived",
            file=str(path),
        ) from exc
    start = 1
    try:
        for batch in handle.iter_batches(batch_size=rows):
            numbers = pa.array(np.arange(start, start + batch.num_rows, dtype=np.int64))  # no Python int per row
            start += batch.num_rows
            yield pa.Table.from_batches([batch]).append_column("_line", numbers)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(
            f"Parquet file {path} is corrupted near row {start}: {exc}; nothing of this ingest was "
            "archived",
            file=str(path),
        ) from exc


def parquet_columns(path: Path) -> list[str]:
    try:
        return list(pq.read_schema(path).names)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"cannot read Parquet file {path}: {exc}", file=str(path)) from exc
