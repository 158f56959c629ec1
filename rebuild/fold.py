"""The slow path: a per-partition Python fold, for logic that cannot be vectorized.

    @projection(name="...", key="order_id", engine="python")
    def fold(partition_key: str, events: Iterator[dict]) -> dict | list[dict] | None: ...

Each partition's events arrive in (sequence, event_id) order as dicts (payload fields decoded).
Partitions are split into chunks at key boundaries and folded in parallel processes. Expect
tens of thousands of events per second per core, not millions: use SQL or Polars when you can.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from operator import itemgetter
from typing import Any

import duckdb
import pyarrow as pa

from rebuild.projection import user_frame

Fold = Callable[[str, Iterator[dict[str, Any]]], Any]
_FOLD: Fold | None = None
BATCH = 10_000  # events turned into dicts at a time


def fold_table(con: duckdb.DuckDBPyConnection, func: Fold, workers: int | None = None) -> pa.Table:
    """Fold the ``events`` view of ``con`` partition by partition, in parallel processes."""
    ordered = con.sql("SELECT * FROM events ORDER BY partition_key, sequence, event_id")
    workers = workers or os.cpu_count() or 1
    global _FOLD
    _FOLD = func  # forked workers inherit it: a fold defined in a notebook cell needs no pickling
    try:
        if workers == 1:  # one process (a distributed task is one): the events stream in, never all at once
            rows = _fold_batches(ordered.to_arrow_reader(BATCH))
        elif len(chunks := _split(ordered.to_arrow_table(), workers)) == 1:
            rows = _fold_chunk(chunks[0])
        else:
            context = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(max_workers=len(chunks), mp_context=context) as pool:
                rows = [r for part in pool.map(_fold_chunk, chunks) for r in part]
    finally:
        _FOLD = None
    # every column any row has (from_pylist alone would keep only the first row's, dropping the rest)
    names = dict.fromkeys(name for row in rows for name in row)
    return pa.table({name: _column(name, [row.get(name) for row in rows]) for name in names})


def _column(name: str, values: list[Any]) -> pa.Array:
    """One column of the fold's rows; values no one Arrow type holds (an int past 64 bits, 1 and 'x')
    are an error naming the column, not pyarrow's "Python int too large to convert to C long"."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise TypeError(f"the fold's column {name!r} holds values no one type holds ({exc}): return one kind of "
                        "value per column, and a whole number past 64 bits as a decimal.Decimal") from None


def _split(events: pa.Table, parts: int) -> list[pa.Table]:
    """Cut ``events`` (sorted by partition_key) into ``parts`` slices at key boundaries."""
    n = events.num_rows
    if n == 0 or parts <= 1:
        return [events]
    keys = events.column("partition_key")
    cuts, start = [], 0
    for i in range(1, parts):
        at = max(start, n * i // parts)
        while 0 < at < n and keys[at].as_py() == keys[at - 1].as_py():
            at += 1
        cuts.append((start, at))
        start = at
    cuts.append((start, n))
    return [events.slice(a, b - a) for a, b in cuts if b > a]


def _fold_chunk(events: pa.Table) -> list[dict[str, Any]]:
    return _fold_batches(events.to_batches(max_chunksize=BATCH))


def _fold_batches(batches: Iterable[pa.RecordBatch]) -> list[dict[str, Any]]:
    """Fold events sorted by partition key, turned into dicts a batch at a time: all of them at once
    took ~2 KB per event (2.4 GB for a hot key bucket's 1.2M events)."""
    assert _FOLD is not None
    rows: list[dict[str, Any]] = []
    events = itertools.chain.from_iterable(batch.to_pylist() for batch in batches)
    for key, group in itertools.groupby(events, key=itemgetter("partition_key")):
        try:
            result = _FOLD(key, group)
        except Exception as exc:  # its frames stay in this worker: the place of the user's line travels with it
            exc._user_frame = user_frame(exc)  # type: ignore[attr-defined]
            raise
        if result is None:
            continue
        for row in result if isinstance(result, list) else [result]:
            if not isinstance(row, dict):
                raise TypeError(f"the fold returned {type(row).__name__} for partition key {key!r}; a fold "
                                "returns a dict (one row), a list of dicts or None")
            rows.append(row)
    return rows
