"""Readers that turn an input file into batches of raw records, each with its line (or row) number.

Nothing is validated here: NDJSON lines stay text, CSV cells stay text, Parquet keeps its types.
Rows a reader itself cannot split (a CSV row with the wrong number of cells) come back as
``Rejected`` records so that they are quarantined, not lost.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from lake.errors import SourceError
from lake.sql import literal

FORMATS = ("ndjson", "csv", "parquet")
SEPARATORS = (",", ";", "\t", "|")
SUFFIXES = {".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "ndjson", ".csv": "csv", ".parquet": "parquet"}


# a line of another encoding (latin-1, cp1252) is refused whole: archived, it would hold U+FFFD for its letters
NOT_UTF8 = ("not UTF-8 (bytes of another encoding, shown as U+FFFD here): convert the file to UTF-8, e.g. "
            "iconv -f cp1252 -t utf-8, and ingest it again")


@dataclass(frozen=True)
class Rejected:
    line: int
    record: str
    reason: str


def format_suffix(path: Path) -> str:
    """The suffix that names the format: ``.ndjson`` for ``events.ndjson.gz`` too."""
    suffixes = [s.lower() for s in path.suffixes]
    return suffixes[-2] if len(suffixes) > 1 and suffixes[-1] == ".gz" else path.suffix.lower()


def detect_format(path: Path, given: str | None) -> str:
    if given is not None:
        if given not in FORMATS:
            raise SourceError(f"unknown format {given!r}: use one of {list(FORMATS)}", file=str(path))
        return given
    fmt = SUFFIXES.get(format_suffix(path))
    if fmt is None:
        raise SourceError(
            f"cannot tell the format of {path} from its suffix: pass --format {'|'.join(FORMATS)}",
            file=str(path),
        )
    return fmt


#: DuckDB stages 2,048 rows at a time, and its JSON functions hold several copies of their text: a
#: batch holding a row over ``LARGE_ROW`` bytes (a 4 MB document, a base64 blob) is staged in slices of
#: about ``BATCH_BYTES`` (a row at least), so 30 payloads of 4 MB no longer need 2 GB at once. Batches of
#: small rows are staged whole, as before.
BATCH_BYTES = 16 << 20
LARGE_ROW = BATCH_BYTES // 2048
#: and their events are written to the lake about this many bytes at a time (see lake.ingest._commit)
WRITE_BYTES = 4 * BATCH_BYTES


def large_rows(table: pa.Table) -> bool:
    """Whether ``table`` holds a text or binary value over ``LARGE_ROW`` bytes, or other columns that
    average more (a struct payload); quick (no copy): every batch of every ingest asks."""
    for column in table.columns:
        if _lengths_known(column.type):
            if (pc.max(pc.binary_length(column)).as_py() or 0) > LARGE_ROW:
                return True
        elif column.nbytes > LARGE_ROW * table.num_rows:
            return True
    return False


def slices(table: pa.Table) -> Iterator[tuple[pa.Table, bool]]:
    """``table`` whole, or in slices of about ``BATCH_BYTES`` when it holds a row over ``LARGE_ROW`` bytes;
    each with whether it was sliced (its rows are large)."""
    if not large_rows(table):
        yield table, False
        return
    ends = np.cumsum(_row_bytes(table))
    start = 0
    while start < table.num_rows:
        before = int(ends[start - 1]) if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, before + BATCH_BYTES, side="right")))
        yield table.slice(start, stop - start), True
        start = stop


def _row_bytes(table: pa.Table) -> np.ndarray:
    """Each row's bytes: its text and binary values' lengths, and an even share of the other columns'."""
    sizes = np.zeros(table.num_rows, dtype=np.int64)
    for column in table.columns:
        if _lengths_known(column.type):
            sizes += pc.fill_null(pc.binary_length(column), 0).to_numpy()
        else:  # a string view, a dictionary, a struct or list payload: no length per row at hand
            sizes += column.nbytes // max(table.num_rows, 1)
    return sizes


def _lengths_known(kind: pa.DataType) -> bool:
    return (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind))


def read_batches(path: Path, fmt: str, rows: int, rejected: list[Rejected]) -> Iterator[pa.Table]:
    """Yield tables with a ``_line`` column; rows the reader cannot split go to ``rejected``."""
    if fmt == "parquet":
        yield from _parquet(path, rows)  # with its own messages (where in the file it broke)
        return
    try:
        yield from _ndjson(path, rows) if fmt == "ndjson" else _csv(path, rows, rejected)
    except (EOFError, OSError, zlib.error, pa.ArrowInvalid) as exc:  # a truncated or damaged gzip file, ...
        raise SourceError(
            f"cannot read {path}: {exc}{_encoding_hint(exc)}; nothing of this ingest was archived", file=str(path)
        ) from exc


def _encoding_hint(exc: Exception) -> str:
    """What to do when pyarrow found a CSV value that is not UTF-8 (an export in latin-1 or cp1252)."""
    if "invalid UTF8" not in str(exc):
        return ""
    return (" (the file is not UTF-8: convert it, e.g. iconv -f cp1252 -t utf-8, or save it from Excel as "
            "'CSV UTF-8')")


def _refuse_json_document(path: Path, head: bytes) -> None:
    """A JSON array (an export, a CloudEvents batch) or an object over many lines is one document, not
    one event a line: each of its lines would be quarantined as malformed, and nothing archived."""
    first = head.removeprefix(codecs.BOM_UTF8).lstrip(b" \t\r\n")
    if first.startswith(b"[") or first.split(b"\n", 1)[0].strip() == b"{":
        raise SourceError(
            f"{path} is one JSON document (an array, or an object over many lines), not NDJSON (one JSON object "
            "a line): convert it, e.g. jq -c '.[]' (an array) or jq -c . (objects); nothing was archived",
            file=str(path),
        )


def _refuse_utf16(path: Path, head: bytes) -> None:
    """UTF-16 text (Excel's 'Unicode Text', PowerShell's default) reads as NUL-riddled bytes: say so."""
    if head[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        raise SourceError(
            f"{path} is UTF-16 text: convert it to UTF-8, e.g. iconv -f utf-16 -t utf-8; nothing was archived",
            file=str(path),
        )


def _gzipped(path: Path) -> bool:
    """Whether the file starts with gzip's magic bytes (whatever its name says)."""
    with open(path, "rb") as handle:
        return handle.read(2) == b"\x1f\x8b"


def _open_text_source(path: Path, gzipped: bool) -> io.BufferedIOBase:
    """NDJSON or CSV bytes, decompressed on the fly when the file is gzip (archives often are)."""
    return gzip.GzipFile(path, "rb") if gzipped else open(path, "rb")


def _ndjson(path: Path, rows: int) -> Iterator[pa.Table]:
    """Lines numbered from 1, cut by numpy and handed to Arrow without a Python object per line.

    Each ``_raw`` value keeps its line end (``\\n`` or ``\\r\\n``): JSON allows the whitespace, and
    the values stay zero-copy slices of the chunk read (each chunk is read into a buffer of its
    own, so nothing is copied). Blank lines are skipped (but counted). A UTF-8 byte order mark
    at the start of the file, as some exporters write, is not part of the first line. Lines that
    are not UTF-8 come back rejected (a ``_rejected`` table). A gzip file is decompressed as it is read.
    """
    start = 1
    size = max(rows * 256, 1 << 16)
    gzipped = _gzipped(path)
    if not gzipped and path.is_file():  # a chunk no larger than the file: each is a zero-filled buffer
        size = min(size, max(path.stat().st_size, 1 << 16))  # (122 MB of zeros for a line of a few bytes)
    with _open_text_source(path, gzipped) as handle:
        head = handle.read(1 << 16)
        _refuse_utf16(path, head)
        _refuse_json_document(path, head)
        tail = head.removeprefix(codecs.BOM_UTF8)
        while True:
            buffer = bytearray(len(tail) + size + 1)  # + 1: room for a missing last line end
            buffer[: len(tail)] = tail
            read = handle.readinto(memoryview(buffer)[len(tail) : -1])
            end = len(tail) + read
            if not read:  # the end of the file
                if not tail:
                    return
                if buffer[end - 1] != 10:  # the last line has no line end
                    buffer[end] = 10
                    end += 1
            cut = buffer.rfind(b"\n", 0, end) + 1
            tail = bytes(buffer[cut if cut else 0 : end])
            if cut == 0:  # no line end yet: read on
                continue
            lines, not_utf8 = _lines(memoryview(buffer)[:cut])
            numbers = line_numbers(start, len(lines))
            start += len(lines)
            table = pa.table({"_line": numbers, "_raw": lines})
            blank = _blank(lines)
            if not_utf8 is None:
                yield table if blank is None else table.filter(pc.invert(blank))
                continue
            yield table.filter(pc.invert(not_utf8 if blank is None else pc.or_(blank, not_utf8)))
            bad = table.filter(not_utf8)
            yield bad.append_column("_rejected", pa.repeat(pa.scalar(NOT_UTF8), bad.num_rows))


def line_numbers(start: int, count: int) -> pa.Array:
    """``start``, ``start + 1``, ... as an int64 array: no Python int per row, and not through
    ``pa.array`` (which imports pandas, ~0.4 s, to look for a DataFrame in a numpy array)."""
    numbers = np.arange(start, start + count, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), count, [None, pa.py_buffer(numbers)])


def _lines(data: memoryview) -> tuple[pa.Array, pa.Array | None]:
    """``data`` (ending with a line end) as a string array of its lines, line ends included, and
    which lines are not UTF-8 (None when all are): their bad bytes are replaced by U+FFFD, so that
    the quarantine can show the record (line ends are never touched)."""
    ends = np.flatnonzero(np.frombuffer(data, np.uint8) == 10) + 1
    offsets = np.concatenate(([0], ends)).astype(np.int64)
    lines = pa.Array.from_buffers(pa.large_string(), len(ends), [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    try:
        lines.validate(full=True)
    except pa.ArrowInvalid:  # only a chunk holding such a line is looked at line by line
        raw = bytes(data)
        not_utf8 = [not _is_utf8(raw[a:b]) for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
        return _lines(memoryview(raw.decode("utf-8", errors="replace").encode("utf-8")))[0], pa.array(not_utf8)
    return lines, None


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _blank(lines: pa.Array) -> pa.Array | None:
    """True for lines holding only whitespace, None when there is none; only lines starting
    with whitespace are looked at."""
    offsets = np.frombuffer(lines.buffers()[1], np.int64)[: len(lines) + 1]
    data = np.frombuffer(lines.buffers()[2], np.uint8)
    suspects = np.flatnonzero(np.isin(data[offsets[:-1]], (9, 10, 13, 32)))
    blank = [i for i in suspects if not bytes(data[offsets[i] : offsets[i + 1]]).strip()]
    if not blank:
        return None
    mask = np.zeros(len(lines), dtype=bool)
    mask[blank] = True
    bits = np.packbits(mask, bitorder="little")  # Arrow's booleans; pa.array(mask) would import pandas
    return pa.Array.from_buffers(pa.bool_(), len(lines), [None, pa.py_buffer(bits)])


def _csv_header(path: Path, gzipped: bool) -> tuple[list[str], str]:
    """The header's names and the separator: of ``,``, ``;`` (Excel's where the decimal mark is a
    comma), tab and ``|``, the one the header line holds most (``,`` when none)."""
    with _open_text_source(path, gzipped) as handle:
        head = handle.read(1 << 16)
    _refuse_utf16(path, head)
    # utf-8-sig: a byte order mark is not part of the first column's name (pyarrow skips it too);
    # newline="": a line may end in \r\n, \n or a lone \r (old Excel for Mac)
    text = head.decode("utf-8-sig", errors="replace")
    first = text.splitlines()[0] if text else ""
    separator = max(SEPARATORS, key=first.count)
    return next(csv.reader(io.StringIO(text, newline=""), delimiter=separator), []), separator


def _csv(path: Path, rows: int, rejected: list[Rejected]) -> Iterator[pa.Table]:
    gzipped = _gzipped(path)
    header, separator = _csv_header(path, gzipped)
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
            pa.input_stream(str(path), compression="gzip" if gzipped else None),
            # single-threaded: only then does pyarrow tell the number of a row it cannot split
            read_options=pacsv.ReadOptions(block_size=max(1 << 20, rows * 128), use_threads=False),
            parse_options=pacsv.ParseOptions(
                delimiter=separator, invalid_row_handler=on_invalid, newlines_in_values=True
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in header}, strings_can_be_null=True
            ),
        )
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"cannot read CSV {path}: {exc}{_encoding_hint(exc)}", file=str(path)) from exc
    line = 2  # data starts after the header; skipped rows keep their own numbers
    for batch in reader:
        skipped = {r.line for r in rejected}
        numbers: list[int] = []
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
        for batch in handle.iter_batches(batch_size=_parquet_rows(handle, rows)):
            numbers = line_numbers(start, batch.num_rows)
            start += batch.num_rows
            yield pa.Table.from_batches([batch]).append_column("_line", numbers)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(
            f"Parquet file {path} is corrupted {_damaged_rows(handle, start)}: {' '.join(str(exc).split())}; "
            "nothing of this ingest was archived",
            file=str(path),
        ) from exc


def _damaged_rows(handle: pq.ParquetFile, start: int) -> str:
    """Where a file that failed in the batch from row ``start`` on is damaged: the rows (from 1) of its first
    row group that cannot be read, or else near ``start`` (a batch spans row groups: "near row 1" said little)."""
    first = 1
    for group in range(handle.metadata.num_row_groups):
        count = handle.metadata.row_group(group).num_rows
        if first + count > start:
            try:
                handle.read_row_group(group)
            except (pa.ArrowInvalid, OSError):
                return f"in rows {first:,}-{first + count - 1:,} (row group {group})"
        first += count
    return f"near row {start:,}"


def parquet_widest_row(meta: pq.FileMetaData) -> int:
    """The most bytes a row takes in one of the file's row groups, uncompressed (an average per group)."""
    return max((meta.row_group(i).total_byte_size // max(meta.row_group(i).num_rows, 1)
                for i in range(meta.num_row_groups)), default=0)


def _parquet_rows(handle: pq.ParquetFile, rows: int) -> int:
    """``rows``, or fewer for a file of large rows (by its row groups' uncompressed sizes): a batch of
    ``rows`` 4 MB payloads is read whole into memory before it is staged in slices."""
    widest = parquet_widest_row(handle.metadata)
    return max(1, min(rows, BATCH_BYTES // widest)) if widest > LARGE_ROW else rows


def parquet_metadata(path: Path) -> pq.FileMetaData:
    try:
        return pq.read_metadata(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"cannot read Parquet file {path}: {exc}", file=str(path)) from exc


def parquet_rows_sql(path: Path) -> str:
    """The rows of a Parquet file, numbered from 1 in ``_line``, as DuckDB reads them; folders
    named ``key=value`` above the file add no columns (it is one input file, not a table)."""
    return (f"SELECT * EXCLUDE (file_row_number), file_row_number + 1 AS _line "
            f"FROM read_parquet({literal(str(path))}, file_row_number = true, hive_partitioning = false)")
