"""Replay: the events of a selection as the relation ``events``, and a projection applied to it.

Everything is SQL over the lake's Parquet files in one DuckDB connection: the files are chosen
from the snapshot (stream, bucket, time and version statistics), the payload is decoded once
into typed columns, and the projection's result is materialized as a temporary table.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

import duckdb
import polars as pl
from polars.io.plugins import register_io_source
import pyarrow as pa

from lake import EventFilter, Lake, Snapshot
from lake.decoding import decoding_code
from lake.schema import ENVELOPE_COLUMNS, decoded_column, decoding_column
from lake.read import quarantine_provenance
from lake.table import DataFile
from lake.sql import is_numeric, json_pointer, literal, quote
from rebuild.errors import ConfigError, ProjectionError, near_name
from rebuild.fold import fold_table
from rebuild.projection import Projection, unmerged_aggregates, user_frame

log = logging.getLogger(__name__)
HIVE = "hive_partitioning = true, hive_types = {'stream': VARCHAR, 'bucket': INTEGER}"


@dataclass(frozen=True)
class Selection:
    """Which events a step reads: a lake filter plus, optionally, a table of partition keys."""

    filter: EventFilter
    keys_table: str | None = None  # distinct partition keys: the events are joined with it
    buckets: tuple[int, ...] | None = None
    exclude_quarantined: bool = False
    keys: tuple[str, ...] | None = None  # the keys_table's keys, to prune files by key statistics


def events_sql(lake: Lake, snapshot: Snapshot, projection: Projection, selection: Selection) -> tuple[str, list[DataFile], int]:
    """SQL for the selected events with decoded payload; also the files it reads and their rows."""
    files, where = _selected(lake, snapshot, selection)
    typed, plain = _by_decoding(lake, projection, [x.path for x in files])
    parts = [f"SELECT {', '.join(fields)} FROM {_source(paths, selection)} WHERE {where}"
             for paths, fields in ((typed, _decoded_fields(projection)), (plain, _json_fields(projection)))
             if paths]
    sql = " UNION ALL ".join(parts) or f"SELECT {', '.join(_json_fields(projection))} FROM {_empty_events()}"
    return sql, files, sum(x.rows for x in files)


def decoding_sql(lake: Lake, snapshot: Snapshot, projection: Projection, selection: Selection,
                 without: Sequence[str] = ()) -> str:
    """SQL for the events of ``events_sql`` as ``event_id``, ``payload`` and a code per declared payload field,
    ``__code_0``, ...: how its value decoded (``lake.decoding``). Compacted files carry the codes; the others' are
    computed here, parsing their payloads (one ``json_extract`` of every field and one ``from_json``). The files
    ``without`` are left out."""
    files, where = _selected(lake, snapshot, selection)
    typed, plain = _by_decoding(lake, projection, [x.path for x in files if x.path not in without])
    fields = list((projection.payload or {}).items())
    stored = [quote(decoding_column(f, t)) for f, t in fields]
    computed = [decoding_code(f"__raw[{i + 1}]", f"__d.{quote(f)}", t) for i, (f, t) in enumerate(fields)]
    # the values as the run's from_json decodes them: decoding each raw value on its own (one parse, not two) read
    # -1 declared BOOLEAN as true where the payloads' from_json, over a batch of them, read NULL
    parse = (f"*, json_extract(payload, {literal([json_pointer(f) for f, _ in fields])}) AS __raw, "
             f"from_json(payload, {literal(json.dumps(dict(fields)))}) AS __d")
    parts = [f"SELECT {', '.join(['event_id', 'payload', *_codes(codes)])} FROM (SELECT {columns} FROM "
             f"{_source(paths, selection)} WHERE {where})"
             for paths, columns, codes in ((typed, "*", stored), (plain, parse, computed)) if paths]
    empty = f"SELECT {', '.join(['NULL::VARCHAR AS event_id', 'NULL::VARCHAR AS payload', *_codes(['NULL::UTINYINT'] * len(fields))])}"
    return " UNION ALL ".join(parts) or f"{empty} WHERE false"


def decoded_files(lake: Lake, snapshot: Snapshot, projection: Projection, selection: Selection) -> list[str]:
    """The files of ``selection`` that carry the projection's decoded payload fields and their codes."""
    files, _ = _selected(lake, snapshot, selection)
    return _by_decoding(lake, projection, [x.path for x in files])[0] if projection.payload else []


def _codes(values: list[str]) -> list[str]:
    return [f"{value} AS __code_{i}" for i, value in enumerate(values)]


def _selected(lake: Lake, snapshot: Snapshot, selection: Selection) -> tuple[list[DataFile], str]:
    """The snapshot's files that may hold events of ``selection``, and the condition its events meet."""
    f = selection.filter
    files = snapshot.select(
        streams=f.streams, buckets=selection.buckets, since=f.since, until=f.until,
        after_version=f.after_version, as_of=f.as_of, keys=selection.keys or f.partition_keys,
    )
    if f.partition_keys is not None:
        wanted = set(lake.buckets_of(f.partition_keys))
        files = [x for x in files if x.bucket in wanted]
    where = [f.where()]
    if f.partition_keys is not None:
        where.append(f"partition_key IN (SELECT unnest({literal(list(f.partition_keys))}))")
    if selection.keys:  # a constant range lets the Parquet reader skip row groups by statistics
        where.append(f"partition_key BETWEEN {literal(min(selection.keys))} AND {literal(max(selection.keys))}")
    if selection.exclude_quarantined:
        where.append("partition_key NOT IN (SELECT partition_key FROM __quarantined_keys)")
    return files, " AND ".join(where)


@dataclass(frozen=True)
class BucketEvents:
    """One key bucket's share of a selection's events: ``events_sql`` narrowed to the bucket."""

    bucket: int
    sql: str
    files: list[DataFile]
    events: int  # rows of its files


def bucket_events(lake: Lake, snapshot: Snapshot, projection: Projection, selection: Selection,
                  bucket: int) -> BucketEvents:
    """The events of ``selection`` in key bucket ``bucket`` (``selection.buckets`` is replaced). A key's events
    all lie in one bucket, so the buckets can be replayed or sorted one at a time: a full run sorts a Polars
    projection's or a fold's events bucket by bucket (a sort the size of a bucket, not of the lake: at 100M
    events, 7.0 GB at a 4GB limit for the whole lake's), a distributed run makes a task of each, and a
    bucketed run stages each."""
    return BucketEvents(bucket, *events_sql(lake, snapshot, projection, replace(selection, buckets=(bucket,))))


def _source(paths: list[str], selection: Selection) -> str:
    source = f"read_parquet({literal(paths)}, {HIVE})"
    if selection.keys_table is None:
        return source
    # an inner join, not IN (subquery): at 1M keys over 100M events DuckDB ran the semi join 2.5x
    # slower; the keys are distinct, so the join repeats no event
    return f"(SELECT e.* FROM {source} e JOIN {quote(selection.keys_table)} USING (partition_key))"


def _by_decoding(lake: Lake, projection: Projection, paths: list[str]) -> tuple[list[str], list[str]]:
    """The files that carry every payload field the projection declares as a decoded column of
    the same type (``lake.compact``), and the others, whose payload is parsed here."""
    if not projection.payload:
        return [], paths
    wanted = (c for f, t in projection.payload.items() for c in (decoded_column(f, t), decoding_column(f, t)))
    return lake.split_decoded(paths, wanted)


def _decoded_fields(projection: Projection) -> list[str]:
    _check_payload(projection)
    return [quote(c) for c in ENVELOPE_COLUMNS] + [
        f"{quote(decoded_column(f, t))} AS {quote(f)}" for f, t in (projection.payload or {}).items()
    ]


def _json_fields(projection: Projection) -> list[str]:
    fields = [quote(c) for c in ENVELOPE_COLUMNS]
    if projection.payload:
        _check_payload(projection)
        fields.append(f"unnest(from_json(payload, {literal(json.dumps(projection.payload))}))")
    return fields


def _empty_events() -> str:
    return (
        "(SELECT NULL::VARCHAR AS event_id, NULL::VARCHAR AS stream, NULL::VARCHAR AS partition_key, "
        "NULL::BIGINT AS sequence, NULL::VARCHAR AS event_type, NULL::TIMESTAMPTZ AS event_time, "
        "NULL::TIMESTAMPTZ AS ingested_at, NULL::BIGINT AS lake_version, NULL::INTEGER AS schema_version, "
        "NULL::VARCHAR AS payload, NULL::VARCHAR AS metadata WHERE false)"
    )


def _check_payload(projection: Projection) -> None:
    clash = set(projection.payload or ()) & set(ENVELOPE_COLUMNS)
    if clash:
        raise ProjectionError(
            f"projection {projection.name!r}: payload fields {sorted(clash)} clash with envelope columns",
            projection=projection.name,
        )


def _spill_problem(con: duckdb.DuckDBPyConnection, exc: Exception) -> str | None:
    """What to do when DuckDB could not spill to its temp directory (by default a folder in the
    system's temp directory, or next to a DuckDB store's file): no fault of the projection's."""
    if not isinstance(exc, duckdb.IOException):
        return None
    try:
        folder = str(con.sql("SELECT current_setting('temp_directory')").fetchall()[0][0])
    except duckdb.Error:
        return None
    if not folder or f'"{folder}' not in str(exc):
        return None
    return (f"DuckDB could not spill to its temp directory {folder} ({exc}): set [duckdb] temp_directory in "
            "workbench.toml (or $REBUILD_TEMP_DIRECTORY) to a folder this user may write, with room to spill; "
            "nothing was written")


def materialize(con: duckdb.DuckDBPyConnection, projection: Projection, events: str, target: str,
                fold_workers: int | None = None, temp: bool = True, parts: Sequence[str] = ()) -> int:
    """Run ``projection`` over the events SQL into table ``target``; returns its row count.

    ``target`` is a temp table unless ``temp`` is false (a store landing rows in place). ``parts``: the
    events SQL cut by bucket (:func:`bucket_events`), which a Polars projection's or a fold's events are sorted
    by one at a time.
    ``fold_workers`` caps a Python fold's processes (1 inside a worker that is one already)."""
    con.execute(f"CREATE OR REPLACE TEMP VIEW events AS {events}")
    create = f"CREATE OR REPLACE {'TEMP ' if temp else ''}TABLE {quote(target)} AS"
    try:
        if projection.engine == "polars":
            _polars(con, projection, create, parts)
        elif projection.engine == "python":
            _fold(con, projection, create, fold_workers, parts)
        else:
            _duckdb(con, projection, create)
    except (ProjectionError, duckdb.InterruptException):
        raise
    except Exception as exc:  # the projection's own code may raise anything: name it, never a traceback
        if isinstance(exc, RuntimeError) and str(exc) == "Query interrupted":
            raise  # Ctrl-C inside a query
        spill = _spill_problem(con, exc)
        if spill:
            raise ConfigError(spill) from exc
        raise ProjectionError(
            f"projection {projection.name!r} failed: {type(exc).__name__}: {exc}{user_frame(exc)}; "
            f"{_undeclared_field(projection, exc)}nothing was written",
            projection=projection.name,
        ) from exc
    _check_key_columns(con, projection, target)  # before a run's own SQL uses them (scope, windows, merge)
    return int(con.sql(f"SELECT count(*) FROM {quote(target)}").fetchall()[0][0])


_MISSING_COLUMN = re.compile(r'(?:Referenced column|unable to find column|^Column) "([^"]+)"', re.MULTILINE)


def _undeclared_field(projection: Projection, exc: Exception) -> str:
    """A payload field is a column of ``events`` only when declared: say so when the projection
    names a column that is neither the envelope's nor a declared field (``max(carrier)``)."""
    if not isinstance(exc, duckdb.BinderException | pl.exceptions.ColumnNotFoundError):
        return ""
    found = _MISSING_COLUMN.search(str(exc).removeprefix("Binder Error: "))
    name = found.group(1) if found else None
    columns = [*ENVELOPE_COLUMNS, *projection.payload]
    if name is None or name.lower() in {c.lower() for c in columns}:
        return ""
    near = near_name(name, columns)
    if near:  # a typo: declaring the misspelt name would read NULLs
        return f"{near!r} is a column of events, {name!r} is not; "
    return (f"if {name!r} is a payload field, declare it in payload= ({{{name!r}: 'VARCHAR'}}, say), which makes it "
            "a column of events; ")


def _duckdb(con: duckdb.DuckDBPyConnection, projection: Projection, create: str) -> None:
    result = projection.func() if _takes_no_args(projection) else projection.func(con.view("events"))
    if isinstance(result, str):
        con.execute(f"{create} {result}")
        return
    if not isinstance(result, duckdb.DuckDBPyRelation):
        raise ProjectionError(
            f"projection {projection.name!r} returned {type(result).__name__}; a DuckDB projection "
            "returns SQL text or a DuckDBPyRelation",
            projection=projection.name,
        )
    con.register("__projection_result", result)  # a temp view: create_view's is kept in a DuckDB store's file
    con.execute(f"{create} SELECT * FROM __projection_result")


def _polars(con: duckdb.DuckDBPyConnection, projection: Projection, create: str, parts: Sequence[str] = ()) -> None:
    source = _EventSource(con, parts)
    try:
        result = projection.func(source.frame())
        if not isinstance(result, pl.LazyFrame | pl.DataFrame):
            raise ProjectionError(
                f"projection {projection.name!r} returned {type(result).__name__}; a Polars projection "
                "returns a LazyFrame",
                projection=projection.name,
            )
        frame = result.collect(engine="streaming") if isinstance(result, pl.LazyFrame) else result
    finally:
        source.close()
    _check_names(projection, frame.columns)
    _register_table(con, frame.to_arrow(), create)


def _fold(con: duckdb.DuckDBPyConnection, projection: Projection, create: str, workers: int | None,
          parts: Sequence[str] = ()) -> None:
    """A Python fold's rows, cast to the declared ``output`` types: Arrow would infer them from the
    values (DECIMAL(5,2) from 123.45), so they could change from run to run."""
    table = fold_table(con, projection.func, workers=workers, parts=parts)
    _check_names(projection, [*table.column_names, *(projection.output or {})])
    output = {c: str(duckdb.sqltype(t)) for c, t in (projection.output or {}).items()}
    if table.num_rows == 0:
        if not output:
            raise ProjectionError(
                f"projection {projection.name!r}: the fold returned no rows, so the view's columns are unknown; "
                "declare them with output={column: TYPE, ...}",
                projection=projection.name,
            )
        columns = {**{k: "VARCHAR" for k in projection.key if k not in output}, **output}
        con.execute(f"{create} SELECT {', '.join(f'NULL::{t} AS {quote(c)}' for c, t in columns.items())} WHERE false")
        return
    # declared columns first, in their order, NULL when no folded row has them (a patch whose orders
    # have no refund has no 'refunded' key): a run's columns must not depend on which rows it folded
    returned = set(table.column_names)
    cast = [f"CAST({quote(c)} AS {t}) AS {quote(c)}" if c in returned else f"NULL::{t} AS {quote(c)}" for c, t in output.items()]
    cast += [quote(c) for c in table.column_names if c not in output]
    _register_table(con, table, create, select=", ".join(cast))


class _EventSource:
    """The ``events`` relation as a LazyFrame that DuckDB feeds in Arrow batches in replay order,
    ``(partition_key, sequence, event_id)``, reading and decoding only the columns the projection's
    plan uses (Polars pushes its projection down).

    DuckDB gives a connection one open result at a time: the frame is cached, so a projection that
    uses it twice (a join with its own aggregate, a concat) reads it once; two reads at once that
    Polars cannot merge (a join of two differently filtered frames) are refused saying so. ``close``
    ends a read the projection failed in or stopped early, which would leave the connection busy. With
    ``parts`` (``events`` cut by bucket) the events are sorted one part at a time."""

    def __init__(self, con: duckdb.DuckDBPyConnection, parts: Sequence[str] = ()) -> None:
        self.con = con
        self.parts = parts
        self.open: list[pa.RecordBatchReader] = []
        self.reading = threading.Lock()  # Polars starts its scans in threads of its own
        self.starting = threading.Lock()  # a read starting against close(), which ends them for good
        self.closed = False

    def frame(self) -> pl.LazyFrame:
        schema = pl.from_arrow(self.con.sql("SELECT * FROM events LIMIT 0").to_arrow_table()).schema  # type: ignore[union-attr]
        return register_io_source(self._batches, schema=schema, is_pure=True).cache()

    def close(self) -> None:
        """Ends the reads, for good: a projection that failed may still have a thread reading the next part."""
        with self.starting:
            self.closed = True
            self._close_readers()

    def _close_readers(self) -> None:
        for reader in self.open:
            reader.close()
        self.open.clear()

    def _batches(self, columns: list[str] | None, predicate: pl.Expr | None, n_rows: int | None,
                 batch_size: int | None) -> Iterator[pl.DataFrame]:
        if not self.reading.acquire(blocking=False):
            raise RuntimeError(_TWO_READS)
        try:
            names = ", ".join(quote(c) for c in columns) if columns else "*"
            limit = f" LIMIT {int(n_rows)}" if n_rows is not None else ""  # a head(): the first rows, in one sort
            for source in (f"({part})" for part in self.parts) if self.parts and not limit else ["events"]:
                with self.starting:
                    if self.closed:
                        return
                    reader = self.con.sql(f"SELECT {names} FROM {source} ORDER BY partition_key, sequence, event_id"
                                          f"{limit}").to_arrow_reader(batch_size or 256_000)
                    self.open.append(reader)
                for batch in reader:
                    frame = pl.from_arrow(batch)
                    assert isinstance(frame, pl.DataFrame)
                    yield frame if predicate is None else frame.filter(predicate)
                self._close_readers()
        finally:
            self._close_readers()
            self.reading.release()


_TWO_READS = ("the projection reads events in two places at once, with other filters or columns each (a join or "
              "concat of two differently filtered frames), and the events are fed by one DuckDB query at a time: "
              "select and filter once, then split (events.select(...) as one frame both sides start from), "
              "or read them into memory first (events.collect().lazy())")


def _check_names(projection: Projection, columns: list[str]) -> None:
    """Columns differing only by case, which DuckDB's names ignore: one would be renamed (amount_1),
    or, cast by name, read the other's values."""
    by_case: dict[str, list[str]] = {}
    for c in dict.fromkeys(columns):
        by_case.setdefault(c.lower(), []).append(c)
    same = next((sorted(names) for names in by_case.values() if len(names) > 1), None)
    if same:
        raise ProjectionError(f"projection {projection.name!r} returned columns {same} that differ only by case, "
                              "which DuckDB's column names ignore: rename one (or merge them)", projection=projection.name)


def _register_table(con: duckdb.DuckDBPyConnection, table: pa.Table, create: str, select: str = "*") -> None:
    con.register("__arrow_result", table)
    try:
        con.execute(f"{create} SELECT {select} FROM __arrow_result")
    finally:
        con.unregister("__arrow_result")


def _takes_no_args(projection: Projection) -> bool:
    return not inspect.signature(projection.func).parameters


def _check_key_columns(con: duckdb.DuckDBPyConnection, projection: Projection, table: str) -> dict[str, str]:
    """The table's columns and types, after checking that the key columns are among them."""
    described = {r[0]: r[1] for r in con.sql(f"DESCRIBE {quote(table)}").fetchall()}
    missing = [k for k in projection.key if k not in described]
    if missing:
        raise ProjectionError(
            f"projection {projection.name!r} returned no key column {missing} (it returned {list(described)})",
            projection=projection.name,
        )
    return described


def check_merge_ops(con: duckdb.DuckDBPyConnection, projection: Projection, columns: dict[str, str]) -> None:
    """A merge op names a column the projection returns, and ``sum`` a number column: checked on every
    run, so a renamed column fails the analyst's full run, not the first catch-up at night."""
    ops = projection.merge or {}
    unknown = set(ops) - set(columns)
    if unknown:
        raise ProjectionError(f"projection {projection.name!r}: merge names columns it does not return: {sorted(unknown)} "
                              f"(it returns {list(columns)})", projection=projection.name)
    not_numbers = {c: columns[c] for c, op in ops.items() if op == "sum" and not is_numeric(columns[c])}
    if not_numbers:
        raise ProjectionError(f"projection {projection.name!r}: merge 'sum' needs number columns; {not_numbers} "
                              "are not: use 'min'/'max' or leave them out of merge (the new value then wins)",
                              projection=projection.name)
    unmerged = unmerged_aggregates(con, projection)
    if unmerged:
        raise ProjectionError(
            f"projection {projection.name!r} is merge, but its columns {unmerged} are aggregates of the events without a "
            "merge op, so a catch-up would give them the new events' value alone, not combined with live's: add them "
            "to merge= (a count or sum: 'sum'; min, max: the same op), or use incremental='by_key' or 'full' for what "
            "cannot combine (avg, count(DISTINCT ...), a CASE over aggregates)", projection=projection.name)


def check_window_column(projection: Projection, columns: dict[str, str]) -> None:
    """A by_window view's window column holds window starts as a DATE or a time: a catch-up replaces
    live's rows by those starts, so text ('2026-09-01') would match none and keep stale rows."""
    if projection.incremental != "by_window" or projection.window is None:
        return
    column, kind = projection.window.column, columns.get(projection.window.column)
    if kind is None or not (kind == "DATE" or kind.startswith("TIMESTAMP")):
        raise ProjectionError(
            f"projection {projection.name!r} is by_window, but its window column {column!r} is "
            f"{kind or 'not returned'}, not a DATE or a time: a catch-up replaces the windows it recomputes by their "
            f"start, so return time_bucket(INTERVAL '{projection.window.size}', event_time) (as a DATE or a time) as "
            f"{column!r}, or use incremental='full'; nothing was written", projection=projection.name)


def check_window_starts(con: duckdb.DuckDBPyConnection, projection: Projection, table: str, windows: str) -> None:
    """The rows recomputed from the events of the touched windows (``touched_windows``) carry those
    windows' starts; another value means the window column is computed otherwise (another size,
    another time zone), so its rows were recomputed from a part of their events."""
    assert projection.window is not None
    column, size = quote(projection.window.column), projection.window.size
    found = con.sql(f"SELECT DISTINCT CAST({column} AS VARCHAR) FROM {quote(table)} WHERE {column} IS NOT NULL AND "
                    f"CAST({column} AS TIMESTAMPTZ) NOT IN (SELECT window_start FROM {quote(windows)}) LIMIT 3").fetchall()
    if found:
        raise ProjectionError(
            f"projection {projection.name!r} is by_window with windows of time_bucket(INTERVAL '{size}', event_time) in "
            f"UTC, but its window column {projection.window.column!r} holds values that are not the start of such a "
            f"window of its events (e.g. {[r[0] for r in found]}), so a catch-up would recompute them from a part of "
            "their events: compute the column that way (a window of another size or time zone cannot be caught up), "
            "or use incremental='full'; nothing was written", projection=projection.name)


def check_output(con: duckdb.DuckDBPyConnection, projection: Projection, table: str) -> None:
    """Keys present, not null and unique; declared output columns and types present; merge ops fit."""
    described = _check_key_columns(con, projection, table)
    check_merge_ops(con, projection, described)
    check_window_column(projection, described)
    if projection.output:
        # compared as DuckDB spells them: TIMESTAMPTZ is TIMESTAMP WITH TIME ZONE, TEXT is VARCHAR
        wrong = {c: (t, described.get(c)) for c, t in projection.output.items() if described.get(c) != str(duckdb.sqltype(t))}
        if wrong:
            raise ProjectionError(
                f"projection {projection.name!r} returned the wrong schema: "
                + ", ".join(f"{c} expected {t}, got {g or 'nothing'}" for c, (t, g) in wrong.items()),
                projection=projection.name,
            )
    keys = ", ".join(quote(k) for k in projection.key)
    nulls = " OR ".join(f"{quote(k)} IS NULL" for k in projection.key)
    rows, distinct, null_rows = con.sql(
        f"SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT {keys} FROM {quote(table)})), "
        f"count(*) FILTER (WHERE {nulls}) FROM {quote(table)}"
    ).fetchall()[0]
    if null_rows:
        _refuse_null_keys(con, projection, table, null_rows, nulls)
    if distinct != rows:
        sample = con.sql(
            f"SELECT {keys}, count(*) AS n FROM {quote(table)} GROUP BY ALL HAVING n > 1 LIMIT 3"
        ).fetchall()
        raise ProjectionError(
            f"projection {projection.name!r} returned {rows - distinct} duplicate keys ({keys}), "
            f"e.g. {sample}; nothing was written",
            projection=projection.name,
        )


def _refuse_null_keys(con: duckdb.DuckDBPyConnection, projection: Projection, table: str, rows: int, nulls: str) -> None:
    """Name the key columns that hold NULLs, a row, and the two ways out."""
    names = [quote(k) for k in projection.key]
    counts, example = con.sql(
        f"SELECT [{', '.join(f'count(*) FILTER (WHERE {k} IS NULL)' for k in names)}], "
        f"(SELECT [{', '.join(f'CAST({k} AS VARCHAR)' for k in names)}] FROM {quote(table)} WHERE {nulls} ORDER BY ALL LIMIT 1) "
        f"FROM {quote(table)}").fetchall()[0]
    null = [(k, n) for k, n in zip(projection.key, counts, strict=True) if n]
    first = null[0][0]
    raise ProjectionError(
        f"projection {projection.name!r} returned {rows} rows with a NULL key: "
        + ", ".join(f"{k} is NULL in {n}" for k, n in null)
        + " (e.g. " + ", ".join(f"{k}={'NULL' if v is None else repr(v)}" for k, v in zip(projection.key, example, strict=True))
        + "); a view's key is never NULL, as a patch replaces live's rows by it: give those rows a key "
        f"(coalesce({first}, '(none)')) or leave them out (WHERE {first} IS NOT NULL); nothing was written",
        projection=projection.name)


def check_partition_column(con: duckdb.DuckDBPyConnection, projection: Projection, table: str, stray: str) -> None:
    """A by_key projection's rows are recomputed per partition key, so its first key column must
    hold the partition key: ``stray`` is the SQL condition (over ``value``) of a value that cannot be
    one of the replayed partition keys. Such rows would be added to live next to the old ones."""
    column = quote(projection.partition_column)
    found = con.sql(
        f"SELECT value FROM (SELECT CAST({column} AS VARCHAR) AS value FROM {quote(table)}) "
        f"WHERE value IS NOT NULL AND {stray} LIMIT 3"
    ).fetchall()
    if found:
        raise ProjectionError(
            f"projection {projection.name!r} is by_key, which recomputes rows per partition key, but its first key "
            f"column {projection.partition_column!r} holds values that are not the partition keys of their events "
            f"(e.g. {[r[0] for r in found]}); put the partition key first in key=..., or use incremental='merge' "
            "or 'full'; nothing was written",
            projection=projection.name,
        )


def quarantined_keys(con: duckdb.DuckDBPyConnection, lake: Lake, streams: tuple[str, ...] | None,
                     after_version: int | None = None, seen: int | None = None) -> int:
    """Temp table ``__quarantined_keys`` of the partition keys that have quarantined records (for
    --exclude-quarantined), each marked ``new`` when a catch-up must take it out: quarantined only
    after the quarantine table's version ``seen``, which live's run excluded (the table only grows),
    or, not knowing that, first quarantined after ``after_version`` (a commit that only quarantines
    adds no lake_version, so its records carry the next one). Returns the version read.

    Only records of ``streams`` (None: every stream) count, and those whose stream is not known: a
    poison record of another stream keyed by the same order leaves the view's events of it whole."""
    version, files = lake.quarantine_snapshot()
    lake.attach(con)
    if not files:
        con.execute("CREATE OR REPLACE TEMP TABLE __quarantined_keys (partition_key VARCHAR, new BOOLEAN)")
        return version
    if seen is not None:
        # a record was there at ``seen`` if a compaction moved it by then, or the file it was first stored in
        # was there: file names alone change with each compaction, which made every key new
        names = [path.rsplit("/", 1)[-1] for path in lake.quarantine_files(seen)] or [""]
        new = f"bool_and(coalesce(compacted_at > {int(seen)}, true) AND first_file NOT IN (SELECT unnest({literal(names)})))"
    else:
        new = f"min(lake_version) > {int(after_version)}" if after_version is not None else "false"
    ours = f" AND (stream IS NULL OR stream IN (SELECT unnest({literal(list(streams))})))" if streams else ""
    con.execute(f"CREATE OR REPLACE TEMP TABLE __quarantined_keys AS SELECT partition_key, {new} AS new "
                f"FROM ({quarantine_provenance(files)}) WHERE partition_key IS NOT NULL{ours} GROUP BY partition_key")
    return version


#: the keys a catch-up takes out as a full run does (``quarantined_keys``)
NEWLY_QUARANTINED = "SELECT partition_key FROM __quarantined_keys WHERE new"


def touched_windows(con: duckdb.DuckDBPyConnection, events: str, size: str, table: str) -> tuple[datetime | None, datetime | None]:
    """Temp table ``table`` of the event-time windows (``window_start``) the events fall in; returns
    [first window start, last window end)."""
    interval = f"INTERVAL {literal(size)}"
    con.execute(f"CREATE OR REPLACE TEMP TABLE {quote(table)} AS "
                f"SELECT DISTINCT time_bucket({interval}, event_time) AS window_start FROM ({events})")
    low, high = con.sql(f"SELECT min(window_start), max(window_start) + {interval} FROM {quote(table)}").fetchall()[0]
    # a window ending after 9999-12-31 comes back as text (datetime cannot hold it): nothing lies beyond
    return low, high if isinstance(high, datetime) else None


def in_windows(con: duckdb.DuckDBPyConnection, events: str, size: str, table: str) -> str:
    """The events SQL narrowed to the windows of ``table`` (``touched_windows``); as it is when those
    are every window of their range (late events on random keys touch every day: the filter would
    cost a look at each event and keep them all)."""
    interval, windows = f"INTERVAL {literal(size)}", quote(table)
    touched, spanned = con.sql(
        f"SELECT count(*), (SELECT count(*) FROM range((SELECT min(window_start) FROM {windows}), "
        f"(SELECT max(window_start) FROM {windows}) + {interval}, {interval})) FROM {windows}").fetchall()[0]
    if touched == spanned:
        return events
    return f"SELECT * FROM ({events}) WHERE time_bucket({interval}, event_time) IN (SELECT window_start FROM {windows})"
