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
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from operator import itemgetter
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from rebuild.projection import user_frame

Fold = Callable[[str, Iterator[dict[str, Any]]], Any]
Keyed = tuple[str, dict[str, Any]]  # a row folded, and its partition key
_FOLD: Fold | None = None
BATCH = 10_000  # events turned into dicts at a time
CHUNK = 100_000  # events sent to a worker process at a time


def fold_table(con: duckdb.DuckDBPyConnection, func: Fold, workers: int | None = None,
               parts: Sequence[str] = ()) -> pa.Table:
    """Fold the ``events`` view of ``con`` partition by partition, in parallel processes. ``parts``: the
    events cut by key bucket (a key's events all lie in one), sorted one at a time: the whole lake's sort
    held up to DuckDB's memory limit."""
    sources = [f"({part})" for part in parts] or ["events"]
    batches = (batch for source in sources
               for batch in con.sql(f"SELECT * FROM {source} ORDER BY partition_key, sequence, event_id").to_arrow_reader(BATCH))
    workers = workers or os.cpu_count() or 1
    global _FOLD
    _FOLD = func  # forked workers inherit it: a fold defined in a notebook cell needs no pickling
    try:
        # one process (a distributed task is one): the events stream in, never all at once
        keyed = _fold_batches(batches) if workers == 1 else _fold_chunks(_chunks(batches), workers)
    finally:
        _FOLD = None
    # in key order, as one sort of every event gave them (the parts come bucket by bucket): a column first
    # returned by a later key stays after one returned by an earlier key
    rows = [row for _, row in sorted(keyed, key=itemgetter(0))]
    # every column any row has (from_pylist alone would keep only the first row's, dropping the rest)
    names = dict.fromkeys(name for row in rows for name in row)
    return pa.table({name: _column(name, [row.get(name) for row in rows]) for name in names})


def _fold_chunks(chunks: Iterator[list[pa.RecordBatch]], workers: int) -> list[Keyed]:
    """Fold ``chunks`` in ``workers`` forked processes, their rows in the chunks' order. Beyond the chunk being
    read, at most ``workers`` are sent and not yet folded: memory follows a few chunks, not the events."""
    first, second = next(chunks, []), next(chunks, None)
    if second is None:  # few events: no processes to start
        return _fold_batches(first)
    rows: list[Keyed] = []
    pending: deque[Future[list[Keyed]]] = deque()
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("fork"),
                               initializer=exit_with_parent, initargs=(os.getpid(),))
    try:
        for chunk in itertools.chain([first, second], chunks):
            pending.append(pool.submit(_fold_batches, chunk))
            while len(pending) > workers:
                rows += pending.popleft().result()
        while pending:
            rows += pending.popleft().result()
    finally:
        pool.shutdown(cancel_futures=True)  # after a failed fold, the chunks not yet started are of no use
    return rows


def exit_with_parent(parent: int) -> None:
    """In each pool worker: exit once the process that started the pool is gone (SIGTERM or kill -9). A worker
    left behind would fold or replay what it was sent for no one, then wait forever for more."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _chunks(batches: Iterable[pa.RecordBatch], size: int = CHUNK) -> Iterator[list[pa.RecordBatch]]:
    """Events sorted by partition key in lists of batches of about ``size`` events, cut between keys. The batches
    are DuckDB's own: a slice of one table pickles with the whole table's buffers (pyarrow 26), so cutting one
    table in slices sent every worker the whole of it."""
    chunk: list[pa.RecordBatch] = []
    rows = 0
    for batch in batches:
        chunk.append(batch)
        rows += batch.num_rows
        keys = batch.column("partition_key")
        if rows < size or not len(keys):
            continue
        last = pc.index(keys, keys[-1]).as_py()  # its last key may go on in the next batch
        if last == 0:  # the batch is one key's: a hot key goes on
            continue
        yield [*chunk[:-1], batch.slice(0, last)]
        chunk, rows = [batch.slice(last)], batch.num_rows - last
    if rows:
        yield chunk


def _column(name: str, values: list[Any]) -> pa.Array:
    """One column of the fold's rows; values no one Arrow type holds (an int past 64 bits, 1 and 'x')
    are an error naming the column, not pyarrow's "Python int too large to convert to C long"."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
        raise TypeError(f"the fold's column {name!r} holds values no one type holds ({exc}): return one kind of "
                        "value per column, and a whole number past 64 bits as a decimal.Decimal") from None


def _fold_batches(batches: Iterable[pa.RecordBatch]) -> list[Keyed]:
    """Fold events sorted by partition key, turned into dicts a batch at a time: all of them at once
    took ~2 KB per event (2.4 GB for a hot key bucket's 1.2M events)."""
    assert _FOLD is not None
    rows: list[Keyed] = []
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
            rows.append((key, row))
    return rows
