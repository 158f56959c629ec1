"""The replay's Polars source: DuckDB feeds a projection only the columns its plan uses, in replay
order, and a projection that fails or reads the events twice leaves the workbench usable."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest

import lake
from rebuild import ProjectionError, Workbench, projection
from rebuild.config import Config
from rebuild.projection import Registry
from lake.read import EventFilter
from rebuild import replay
from rebuild.fold import fold_table
from rebuild.replay import Selection, _EventSource, bucket_events, events_sql
from tests.conftest import write_ndjson
from tests.orders import order_events


def test_a_polars_projection_reads_only_the_columns_it_uses() -> None:
    con = duckdb.connect()
    con.execute(
        "CREATE TEMP VIEW events AS SELECT i AS n, 'k' || (i % 3) AS partition_key, i AS sequence, 'e' || i AS event_id, "
        "CAST(CASE WHEN i >= 0 THEN error('the payload column was read') END AS VARCHAR) AS payload "
        "FROM range(10) t(i)"
    )
    source = _EventSource(con)
    frame = source.frame()
    assert frame.collect_schema().names() == ["n", "partition_key", "sequence", "event_id", "payload"]
    totals = frame.group_by("partition_key").agg(pl.col("n").sum()).sort("partition_key").collect(engine="streaming")
    assert totals.rows() == [("k0", 18), ("k1", 12), ("k2", 15)]
    with pytest.raises(Exception, match="the payload column was read"):
        frame.collect()
    source.close()
    assert con.sql("SELECT 1").fetchall() == [(1,)]


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
def wb(tmp_path: Path, registry: Registry) -> Iterable[Workbench]:
    config = Config(lake_uri=str(tmp_path / "lake"), store_uri=f"duckdb://{tmp_path}/views.duckdb", projection_modules=(),
                    reports_dir=str(tmp_path / "reports"))
    with Workbench(config, registry=registry) as bench:
        yield bench


def _ingest(wb: Workbench, path: Path, events: list[dict[str, Any]]) -> None:
    lake.ingest(wb.lake, [write_ndjson(path, events)], stream="orders")


def _status(events: pl.LazyFrame) -> pl.LazyFrame:
    return events.group_by("partition_key").agg(
        placed=pl.col("event_type").first(), status=pl.col("event_type").last(), sequences=pl.col("sequence"))


def test_a_polars_projection_gets_each_key_s_events_in_sequence_order(tmp_path: Path, wb: Workbench,
                                                                     registry: Registry) -> None:
    """first()/last() per order: the events came in the lake's file order, newest commit first, so an order
    placed in one commit and shipped in the next read 'ItemAdded' as its first event and status."""
    projection(name="status", key="partition_key", engine="polars", registry=registry)(_status)
    orders = [e for o in range(1, 9) for e in order_events(o)]
    _ingest(wb, tmp_path / "day1.ndjson", [e for e in orders if e["sequence"] <= 2])
    _ingest(wb, tmp_path / "day2.ndjson", [e for e in orders if e["sequence"] > 2])
    wb.run("status", progress="none")
    view = wb.view("status", "shadow")
    assert view.height == 8
    assert set(view["placed"]) == {"OrderPlaced"} and set(view["status"]) == {"OrderShipped"}
    assert all(s == sorted(s) for s in view["sequences"].to_list())


def _fails_mid_read(events: pl.LazyFrame) -> pl.LazyFrame:
    def refuse(sequence: int) -> int:
        raise ValueError(f"sequence {sequence} refused")
    return events.with_columns(z=pl.col("sequence").map_elements(refuse, return_dtype=pl.Int64)).group_by(
        "partition_key").agg(pl.col("z").sum())


def test_a_polars_projection_that_fails_while_reading_names_its_error_and_the_workbench_runs_on(
        tmp_path: Path, wb: Workbench, registry: Registry) -> None:
    """A raise inside map_elements left DuckDB's result open: the run failed with 'connection has an open
    result' instead of the projection's error, and the next run in the same process hung."""
    projection(name="fails", key="partition_key", engine="polars", registry=registry,
               payload={"customer_id": "VARCHAR", "amount": "DECIMAL(18,2)"})(_fails_mid_read)
    projection(name="status", key="partition_key", engine="polars", registry=registry)(_status)
    _ingest(wb, tmp_path / "day1.ndjson", [e for o in range(1, 6) for e in order_events(o)])
    with pytest.raises(ProjectionError, match=r"projection 'fails' failed: ValueError: sequence 1 refused"):
        wb.run("fails", progress="none")
    assert wb.store.runs() == []
    wb.run("status", progress="none")
    assert wb.view("status", "shadow").height == 5


def _latest_by_join(events: pl.LazyFrame) -> pl.LazyFrame:
    latest = events.group_by("partition_key").agg(top=pl.col("sequence").max())
    return events.join(latest, on="partition_key").filter(pl.col("sequence") == pl.col("top")).select(
        "partition_key", status="event_type")


def _two_filters(events: pl.LazyFrame) -> pl.LazyFrame:
    placed = events.filter(pl.col("event_type") == "OrderPlaced").select("partition_key", placed_at="event_time")
    shipped = events.filter(pl.col("event_type") == "OrderShipped").select("partition_key", shipped_at="event_time")
    return placed.join(shipped, on="partition_key")


def test_a_polars_projection_may_join_the_events_with_themselves(tmp_path: Path, wb: Workbench,
                                                                 registry: Registry) -> None:
    """events joined with its own aggregate failed with DuckDB's 'connection is busy with another call'; a
    join of two differently filtered frames of it, which Polars reads at once, says what to write instead."""
    projection(name="latest", key="partition_key", engine="polars", registry=registry)(_latest_by_join)
    projection(name="shipping", key="partition_key", engine="polars", registry=registry)(_two_filters)
    _ingest(wb, tmp_path / "day1.ndjson", [e for o in range(1, 4) for e in order_events(o, ship=o != 2)])
    wb.run("latest", progress="none")
    assert wb.view("latest", "shadow").sort("partition_key")["status"].to_list() == [
        "OrderShipped", "PaymentAuthorized", "OrderShipped"]
    with pytest.raises(ProjectionError, match=r"projection 'shipping' failed: .*reads events in two places at once.*"
                                              r"events.collect\(\).lazy\(\)"):
        wb.run("shipping", progress="none")
    wb.run("latest", progress="none")


def _status_polars(events: pl.LazyFrame) -> pl.LazyFrame:
    return events.group_by(order_id="partition_key").agg(
        placed=pl.col("event_type").first(), status=pl.col("event_type").last(), events=pl.len().cast(pl.Int64),
        paid=pl.col("amount").filter(pl.col("event_type") == "PaymentAuthorized").last())


def test_a_polars_projection_and_its_sql_give_equal_views_full_and_caught_up(tmp_path: Path, wb: Workbench,
                                                                            registry: Registry) -> None:
    """The same latest-state view written with Polars' first()/last() and with SQL's arg_min/arg_max over
    sequence, over orders whose events arrive in two commits, later sequences first."""
    payload = {"amount": "DECIMAL(18,2)"}
    projection(name="status_polars", key="order_id", engine="polars", payload=payload, registry=registry)(_status_polars)
    projection(name="status_sql", key="order_id", payload=payload, registry=registry)(lambda: """
        SELECT partition_key AS order_id, arg_min(event_type, sequence) AS placed, arg_max(event_type, sequence) AS status,
               count(*) AS events, arg_max(amount, sequence) FILTER (WHERE event_type = 'PaymentAuthorized') AS paid
        FROM events GROUP BY 1""")
    orders = [e for o in range(1, 7) for e in order_events(o, refund=o % 2 == 0)]
    _ingest(wb, tmp_path / "day1.ndjson", [e for e in orders if e["sequence"] > 2])
    _ingest(wb, tmp_path / "day2.ndjson", [e for e in orders if e["sequence"] <= 2])
    for name in ("status_polars", "status_sql"):
        wb.run(name, progress="none")
        wb.cutover(name, force=True)
    _ingest(wb, tmp_path / "day3.ndjson", [e for o in (2, 7) for e in order_events(o, first_seq=1 if o == 7 else 7)])
    for name in ("status_polars", "status_sql"):
        assert wb.run(name, progress="none").plan.mode == "incremental"
        wb.cutover(name, force=True)
    polars_view, sql_view = (wb.view(n).sort("order_id") for n in ("status_polars", "status_sql"))
    assert polars_view.equals(sql_view)
    assert polars_view["status"].to_list()[:2] == ["OrderShipped", "OrderShipped"] and polars_view.height == 7
    wb.run("status_polars", full=True, progress="none")
    assert wb.view("status_polars", "shadow").sort("order_id").equals(polars_view)


@pytest.mark.parametrize("engine", ["duckdb", "polars"])
def test_a_misspelt_column_of_events_is_named_not_said_to_be_declared(tmp_path: Path, wb: Workbench, registry: Registry,
                                                                      engine: str) -> None:
    """pl.col("amout") with amount declared: the error told to declare 'amout' in payload=, which reads NULLs."""
    func: Any = (lambda: "SELECT partition_key AS k, sum(amout) AS paid FROM events GROUP BY 1") if engine == "duckdb" \
        else (lambda events: events.group_by(k="partition_key").agg(paid=pl.col("amout").sum()))
    projection(name="paid", key="k", engine=engine, payload={"amount": "DECIMAL(18,2)"},  # type: ignore[arg-type]
               registry=registry)(func)
    _ingest(wb, tmp_path / "day1.ndjson", order_events(1))
    with pytest.raises(ProjectionError, match=r"'amount' is a column of events, 'amout' is not; nothing was written") as failed:
        wb.run("paid", progress="none")
    assert "declare" not in str(failed.value)


def test_a_polars_or_python_full_run_sorts_its_events_bucket_by_bucket(tmp_path: Path, wb: Workbench, registry: Registry,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole lake sorted at once took up to the memory limit on top of Polars' own (7.0 GB at a 4GB limit
    at 100M events), and a fold's (2.2 GB at 4M events in one process): cut by bucket, each part holds whole
    keys, and the parts hold every event once."""
    p = projection(name="status", key="partition_key", engine="polars", registry=registry)(_status)
    _ingest(wb, tmp_path / "day1.ndjson", [e for o in range(1, 40) for e in order_events(o)])
    snapshot, selection = wb.lake.snapshot(), Selection(EventFilter())
    files = events_sql(wb.lake, snapshot, p, selection)[1]
    parts = [bucket_events(wb.lake, snapshot, p, selection, b).sql for b in sorted({f.bucket for f in files})]
    init = _EventSource.__init__
    con = duckdb.connect()
    keys = [{k for (k,) in con.sql(f"SELECT DISTINCT partition_key FROM ({part})").fetchall()} for part in parts]
    assert len(parts) > 1 and sum(map(len, keys)) == len(set().union(*keys)) == 39
    whole = con.sql(f"SELECT count(*) FROM ({events_sql(wb.lake, snapshot, p, selection)[0]})").fetchall()[0][0]
    assert sum(con.sql(f"SELECT count(*) FROM ({part})").fetchall()[0][0] for part in parts) == whole
    sorted_by: list[int] = []

    def recording(self: _EventSource, con: duckdb.DuckDBPyConnection, parts: Any = ()) -> None:
        sorted_by.append(len(parts))
        init(self, con, parts)

    monkeypatch.setattr(_EventSource, "__init__", recording)
    wb.run("status", progress="none")
    assert sorted_by == [len(parts)]  # the full run's events came part by part
    folded: list[int] = []

    def folding(con: duckdb.DuckDBPyConnection, func: Any, workers: int | None = None, parts: Any = ()) -> Any:
        folded.append(len(parts))
        return fold_table(con, func, workers, parts)

    projection(name="status_fold", key="order_id", engine="python", registry=registry)(
        lambda key, events: {"order_id": key, "status": [e["event_type"] for e in events][-1]})
    monkeypatch.setattr(replay, "fold_table", folding)
    wb.run("status_fold", progress="none")
    assert folded == [len(parts)]  # and a fold's too
    assert wb.view("status_fold", "shadow").sort("order_id")["status"].to_list() == ["OrderShipped"] * 39
    view = wb.view("status", "shadow")
    assert view.height == 39 and set(view["status"]) == {"OrderShipped"}
    assert all(s == sorted(s) for s in view["sequences"].to_list())
