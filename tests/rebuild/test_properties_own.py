"""The README's invariants for projections written the ways analysts write them, beyond the examples
(HAVING, FILTER, CASE, aggregates over nothing, count(DISTINCT), composite, INTEGER and DATE keys,
windows of an hour, a week and a month, merge with columns without ops, Polars, a Python fold), over
random small lakes: payload fields NULL or missing, duplicates, events at midnight UTC and across
week and month ends, late and out-of-order arrival in random ingest splits:

- full rebuild == any chain of incremental runs (each cut over); cutover then rollback restores live;
- ``--as-of v`` == the view as it was when the lake stopped at v;
- a keys run (by_key) or a time-range run (by_window) over a stale live == the full rebuild in its
  scope, every other row untouched;

on the DuckDB store, and for a subset on the Parquet-directory and PostgreSQL stores. Below them, the
defects they found, as plain examples.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lake
from rebuild import ProjectionError, Workbench, projection as define
from rebuild.config import Config
from rebuild.projection import Registry, Window, projection
from tests.conftest import write_ndjson
from tests.orders import order_events
from tests.stores.conftest import postgres_server, postgres_uri, schema_uri  # noqa: F401  (PostgreSQL fixtures)

REGISTRY = Registry()
T0 = datetime(2026, 9, 28, tzinfo=UTC)  # a Monday, three days before a month's end
TYPES = ["OrderPlaced", "ItemAdded", "PaymentAuthorized", "RefundIssued", "OrderNoted"]
COMMON: dict[str, Any] = {
    "consumes": TYPES[:4], "registry": REGISTRY,
    "payload": {"customer_id": "VARCHAR", "amount": "DECIMAL(18,2)", "qty": "INTEGER", "region": "VARCHAR"},
}
SETTINGS = settings(max_examples=3, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# -- by_key ------------------------------------------------------------------------------------
projection(name="k_having", key="k", **COMMON)(lambda: """
    SELECT partition_key AS k, count(*) AS n, sum(amount) FILTER (WHERE event_type = 'RefundIssued') AS refunded,
           min(qty) AS min_qty, avg(amount) AS avg_amount, count(DISTINCT customer_id) AS customers,
           CASE WHEN count(*) FILTER (WHERE event_type = 'RefundIssued') > 0 THEN 'refunded' ELSE 'open' END AS status
    FROM events GROUP BY partition_key HAVING count(*) FILTER (WHERE event_type = 'ItemAdded') > 0""")
projection(name="k_composite", key=["k", "event_type"], **COMMON)(lambda: """
    SELECT partition_key AS k, event_type, count(*) AS n, sum(qty) AS qty FROM events GROUP BY ALL""")
projection(name="k_int", key="order_no", **COMMON)(lambda: """
    SELECT CAST(partition_key AS INTEGER) AS order_no, count(*) AS n, arg_max(event_type, sequence) AS latest
    FROM events GROUP BY 1""")


def _k_polars(events: pl.LazyFrame) -> pl.LazyFrame:
    return events.group_by("partition_key").agg(
        n=pl.len().cast(pl.Int64), refunded=pl.col("amount").filter(pl.col("event_type") == "RefundIssued").sum(),
        max_qty=pl.col("qty").max(), region=pl.col("region").sort_by("sequence").last(),
    ).filter(pl.col("n") > 1).rename({"partition_key": "k"})


def _k_fold(partition_key: str, events: Iterator[dict[str, Any]]) -> dict[str, Any] | None:
    row: dict[str, Any] = {"k": partition_key, "n": 0}  # 'refunded' and 'region' only when some event has them
    for e in events:
        row["n"] += 1
        if e["event_type"] == "RefundIssued" and e["amount"] is not None:
            row["refunded"] = (row.get("refunded") or 0) + e["amount"]
        if e["region"] is not None:
            row["region"] = e["region"]
    return row if row["n"] > 1 else None


projection(name="k_polars", key="k", engine="polars", **COMMON)(_k_polars)
projection(name="k_fold", key="k", engine="python",
           output={"k": "VARCHAR", "n": "BIGINT", "refunded": "DECIMAL(18,2)", "region": "VARCHAR"}, **COMMON)(_k_fold)

# -- merge -------------------------------------------------------------------------------------
projection(name="m_customer", key="customer", incremental="merge", **COMMON,
           merge={"n": "sum", "refunded": "sum", "qty": "sum", "first_at": "min", "last_at": "max", "top": "max",
                  "low": "min"})(lambda: """
    SELECT coalesce(customer_id, '?') AS customer, upper(coalesce(customer_id, '?')) AS label, count(*) AS n,
           sum(amount) FILTER (WHERE event_type = 'RefundIssued') AS refunded, sum(qty) AS qty,
           min(event_time) AS first_at, max(event_time) AS last_at, max(amount) AS top, min(amount) AS low
    FROM events GROUP BY 1, 2""")
projection(name="m_day", key=["customer", "day"], incremental="merge", merge={"n": "sum", "amount": "sum"}, **COMMON)(
    lambda: """SELECT coalesce(customer_id, '?') AS customer, CAST(event_time AS DATE) AS day, count(*) AS n,
                      sum(amount) AS amount FROM events GROUP BY ALL""")
projection(name="m_int", key="qty_key", incremental="merge", merge={"n": "sum", "last_at": "max"}, **COMMON)(
    lambda: "SELECT coalesce(qty, -1) AS qty_key, count(*) AS n, max(event_time) AS last_at FROM events GROUP BY 1")


def _m_polars(events: pl.LazyFrame) -> pl.LazyFrame:
    return events.with_columns(customer=pl.col("customer_id").fill_null("?")).group_by("customer").agg(
        n=pl.len().cast(pl.Int64), amount=pl.col("amount").sum(), top=pl.col("amount").max(), qty=pl.col("qty").sum(),
    )


projection(name="m_polars", key="customer", engine="polars", incremental="merge",
           merge={"n": "sum", "amount": "sum", "top": "max", "qty": "sum"}, **COMMON)(_m_polars)

# -- by_window ---------------------------------------------------------------------------------
projection(name="w_hour", key="hour", incremental="by_window", window=Window("hour", "1 hour"), **COMMON)(lambda: """
    SELECT time_bucket(INTERVAL 1 hour, event_time) AS hour, count(*) AS n, sum(amount) AS amount
    FROM events GROUP BY 1 HAVING count(*) > 1""")
projection(name="w_week", key=["week", "event_type"], incremental="by_window", window=Window("week", "1 week"),
           **COMMON)(lambda: """
    SELECT CAST(date_trunc('week', event_time) AS DATE) AS week, event_type, count(*) AS n, avg(amount) AS avg_amount,
           count(DISTINCT partition_key) AS orders, min(qty) AS min_qty
    FROM events GROUP BY ALL""")
projection(name="w_month", key="month", incremental="by_window", window=Window("month", "1 month"), **COMMON)(lambda: """
    SELECT date_trunc('month', event_time) AS month, count(*) FILTER (WHERE amount IS NULL) AS no_amount,
           sum(amount) FILTER (WHERE event_type = 'PaymentAuthorized') AS paid
    FROM events GROUP BY 1""")
projection(name="w_day_naive", key="day", incremental="by_window", window=Window("day", "1 day"), **COMMON)(
    lambda: "SELECT CAST(time_bucket(INTERVAL 1 day, event_time) AS TIMESTAMP) AS day, count(*) AS n FROM events GROUP BY 1")


def _w_polars(events: pl.LazyFrame) -> pl.LazyFrame:
    return events.with_columns(week=pl.col("event_time").dt.truncate("1w")).group_by("week").agg(
        n=pl.len().cast(pl.Int64), amount=pl.col("amount").sum(),
    ).filter(pl.col("n") >= 2)


projection(name="w_polars", key="week", engine="polars", incremental="by_window", window=Window("week", "1 week"),
           **COMMON)(_w_polars)

# -- full --------------------------------------------------------------------------------------
projection(name="f_rank", key="k", incremental="full", **COMMON)(lambda: """
    SELECT partition_key AS k, sum(amount) AS amount,
           rank() OVER (ORDER BY sum(amount) DESC NULLS LAST, partition_key) AS r
    FROM events GROUP BY 1""")

NAMES = sorted(p.name for p in REGISTRY)  # type: ignore[attr-defined]
ON_STORES = ["k_int", "k_fold", "m_day", "w_week"]  # the subset run on the Parquet and PostgreSQL stores


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[int]]:
    """A few orders keyed '100', '101', ... (INTEGER-castable), fields NULL or missing, some events
    delivered twice; their arrival shuffled and split into up to four ingest commits."""
    events = []
    for order in range(draw(st.integers(1, 4))):
        key, customer = str(100 + order), draw(st.sampled_from(["c-0", "c-1", None]))
        for seq in range(1, draw(st.integers(1, 5)) + 1):
            at = T0 + timedelta(days=draw(st.integers(-3, 12))) + draw(st.sampled_from([
                timedelta(0), timedelta(hours=24) - timedelta(microseconds=1), timedelta(hours=12), timedelta(minutes=30)]))
            payload: dict[str, Any] = {} if customer is None else {"customer_id": customer}
            for field, values in (("amount", st.decimals(0, 500, places=2).map(float)), ("qty", st.integers(0, 3)),
                                  ("region", st.sampled_from(["eu", "us"]))):
                value = draw(st.none() | values | st.just("missing"))
                if value != "missing":
                    payload[field] = value
            events.append({"event_id": f"ev-{key}-{seq}", "partition_key": key, "sequence": seq,
                           "event_type": TYPES[0] if seq == 1 else draw(st.sampled_from(TYPES[1:])),
                           "event_time": at.isoformat(), "payload": payload})
    again = draw(st.lists(st.sampled_from(range(len(events))), max_size=2))
    arrival = [events[i] for i in draw(st.permutations(range(len(events))))] + [events[i] for i in again]
    cuts = sorted(draw(st.lists(st.integers(1, max(1, len(arrival) - 1)), max_size=3, unique=True)))
    return arrival, cuts


def _rows(wb: Workbench, view: str, role: str = "live") -> pl.DataFrame:
    return wb.view(view, role).sort(list(wb.projection(view).key), nulls_last=True)


def _check(root: Path, store_uri: str, names: list[str], history: Any, data: st.DataObject) -> None:
    events, cuts = history
    config = Config.load(None, lake_uri=str(root / "lake"), store_uri=store_uri, projection_modules=())
    with Workbench(config, registry=REGISTRY) as wb:
        snapshots: list[tuple[int, dict[str, pl.DataFrame]]] = []
        for i, (a, b) in enumerate(zip([0, *cuts], [*cuts, len(events)], strict=True)):
            version = lake.ingest(wb.lake, [write_ndjson(root / f"b{i}.ndjson", events[a:b])], stream="orders").lake_version
            for name in names:
                before = _rows(wb, name) if i else None
                run = wb.run(name, progress="none")  # full the first time, incremental afterwards
                if wb.cutover(name, force=True).run_id != run.run_id:  # an empty patch (a batch of duplicates):
                    assert _rows(wb, name).equals(before), f"{name}: empty patch"  # rollback undoes the one before
                elif before is not None:
                    after = _rows(wb, name)
                    wb.rollback(name)
                    assert _rows(wb, name).equals(before), f"{name}: rollback"
                    wb.rollback(name)
                    assert _rows(wb, name).equals(after), f"{name}: rolling back again redoes the cutover"
            snapshots.append((version, {n: _rows(wb, n) for n in names}))
        full = {}
        for name in names:
            wb.run(name, full=True, progress="none")
            full[name] = _rows(wb, name, "shadow")
            assert _rows(wb, name).equals(full[name]), f"{name}: incremental chain != full"
        version, expected = data.draw(st.sampled_from(snapshots), label="as_of")
        for name in names:
            wb.run(name, as_of=str(version), progress="none")
            assert _rows(wb, name, "shadow").equals(expected[name]), f"{name}: as-of {version}"
        _check_targeted(wb, names, full, snapshots[0][0], data)


def _check_targeted(wb: Workbench, names: list[str], full: dict[str, pl.DataFrame], first: int,
                    data: st.DataObject) -> None:
    """Over live as of the first commit: a keys run (by_key) or a time range (by_window), cut over,
    equals the full rebuild in its scope and leaves every other row of live as it was."""
    keys = sorted({r[0] for r in lake.read_events(wb.lake).project("partition_key").fetchall()})
    chosen = data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=2, unique=True), label="keys")
    since = T0 + timedelta(days=data.draw(st.integers(-4, 12), label="since"))
    until = since + timedelta(days=data.draw(st.integers(1, 5), label="days"))
    for name in names:
        p = wb.projection(name)
        if p.incremental not in ("by_key", "by_window"):
            continue
        wb.run(name, as_of=str(first), progress="none")
        wb.cutover(name, force=True)
        live = _rows(wb, name)
        if p.incremental == "by_key":
            wb.run(name, keys=chosen, progress="none")
            starts: set[datetime] = set()
        else:
            assert p.window is not None
            wb.run(name, since=since.isoformat(), until=until.isoformat(), progress="none")
            starts = _window_starts(wb, p.window.size, p.consumes, since, until)
        wb.cutover(name, force=True)
        after, rebuilt = _rows(wb, name), full[name]
        assert after.filter(_scope(p, after, chosen, starts)).equals(rebuilt.filter(_scope(p, rebuilt, chosen, starts))), \
            f"{name}: a targeted run, inside its scope"
        assert after.filter(~_scope(p, after, chosen, starts)).equals(live.filter(~_scope(p, live, chosen, starts))), \
            f"{name}: a targeted run, outside its scope"


def _scope(p: Any, frame: pl.DataFrame, keys: list[str], starts: set[datetime]) -> pl.Series:
    """The rows a keys run (by_key) or a time-range run (by_window: windows starting in ``starts``) replaces."""
    if p.incremental == "by_key":
        return frame[p.partition_column].cast(pl.String).is_in(keys)

    def instant(value: Any) -> datetime:
        if not isinstance(value, datetime):  # a DATE
            value = datetime(value.year, value.month, value.day)
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return pl.Series([instant(v) in starts for v in frame[p.window.column]], dtype=pl.Boolean)


def _window_starts(wb: Workbench, size: str, consumes: Any, since: datetime, until: datetime) -> set[datetime]:
    """The windows holding an event of [since, until): those a time-range run recomputes."""
    events = lake.read_events(wb.lake, lake.EventFilter(event_types=tuple(consumes), since=since, until=until))
    rows = events.project(f"time_bucket(INTERVAL '{size}', event_time) AS s").distinct().fetchall()
    return {r[0].astimezone(UTC) for r in rows}


@SETTINGS
@given(history=histories(), data=st.data())
def test_invariants_hold_for_analysts_projections(tmp_path_factory: pytest.TempPathFactory, history: Any,
                                                  data: st.DataObject) -> None:
    root = tmp_path_factory.mktemp("own")
    _check(root, f"duckdb://{root}/v.duckdb", NAMES, history, data)


@pytest.mark.parametrize("kind", ["parquet", pytest.param("postgres", marks=pytest.mark.postgres)])
@settings(SETTINGS, max_examples=2)
@given(history=histories(), data=st.data())
def test_invariants_hold_on_the_other_stores(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest,
                                             kind: str, history: Any, data: st.DataObject) -> None:
    root = tmp_path_factory.mktemp(kind)
    uri = (schema_uri(request.getfixturevalue("postgres_uri"), f"p_{uuid.uuid4().hex[:10]}") if kind == "postgres"
           else f"parquet://{root}/views")
    _check(root, uri, ON_STORES, history, data)


# -- the defects these found -------------------------------------------------------------------
def _workbench(root: Path, store_uri: str, registry: Registry = REGISTRY) -> Workbench:
    return Workbench(Config(lake_uri=str(root / "lake"), store_uri=store_uri, projection_modules=()), registry=registry)


def _ingest(wb: Workbench, root: Path, name: str, events: list[dict[str, Any]]) -> None:
    lake.ingest(wb.lake, [write_ndjson(root / f"{name}.ndjson", events)], stream="orders")


def _numbered(order: int, **options: Any) -> list[dict[str, Any]]:
    """An order's events under the partition key '10N', as systems with numeric ids have them."""
    return [{**e, "partition_key": str(100 + order)} for e in order_events(order, **options)]


def test_a_fold_catch_up_whose_rows_lack_a_declared_column_gets_it_as_null(tmp_path: Path) -> None:
    """k_fold gives 'refunded' only to an order with a refund: the catch-up of a night without refunds failed
    "returned the wrong schema: refunded expected DECIMAL(18,2), got nothing", though output= declares it."""
    with _workbench(tmp_path, f"duckdb://{tmp_path}/v.duckdb") as wb:
        _ingest(wb, tmp_path, "day1", _numbered(1, refund=True))
        wb.run("k_fold", progress="none")
        wb.cutover("k_fold", force=True)
        _ingest(wb, tmp_path, "day2", _numbered(2))
        assert wb.run("k_fold", progress="none").plan.mode == "incremental"
        wb.cutover("k_fold", force=True)
        live = _rows(wb, "k_fold")
        assert live.columns == ["k", "n", "refunded", "region"] and live["refunded"].to_list()[1:] == [None]
        wb.run("k_fold", full=True, progress="none")
        assert live.equals(_rows(wb, "k_fold", "shadow"))


def test_a_by_key_view_keyed_by_the_partition_key_as_an_integer_cuts_over_on_every_store(
        tmp_path: Path, store_uri: str) -> None:
    """CAST(partition_key AS INTEGER) AS order_no: the patch's scope held the keys as text, which PostgreSQL
    does not compare with an integer, so the cutover of every catch-up died in psycopg's UndefinedFunction."""
    with _workbench(tmp_path, store_uri) as wb:
        _ingest(wb, tmp_path, "day1", [e for o in (1, 2) for e in _numbered(o)])
        wb.run("k_int", progress="none")
        wb.cutover("k_int", force=True)
        before = _rows(wb, "k_int")
        _ingest(wb, tmp_path, "day2", _numbered(2, first_seq=6, items=0, ship=False) + _numbered(3))
        wb.run("k_int", progress="none")
        wb.cutover("k_int", force=True)
        after = _rows(wb, "k_int")
        assert after["order_no"].to_list() == [101, 102, 103] and after["n"].to_list() == [4, 6, 4]
        wb.run("k_int", full=True, progress="none")
        assert after.equals(_rows(wb, "k_int", "shadow"))
        wb.rollback("k_int")
        assert _rows(wb, "k_int").equals(before)


@pytest.fixture
def registry() -> Registry:
    return Registry()


def test_a_by_window_column_of_text_is_refused_by_the_full_run(tmp_path: Path, registry: Registry) -> None:
    """strftime(event_time, '%Y-%m-%d') AS day: a catch-up replaced the windows by their start, which no text
    equals, so a day that no longer passed the HAVING kept its live row (a full run has none)."""
    define(name="busy", key="day", incremental="by_window", window=Window("day", "1 day"), registry=registry)(
        lambda: "SELECT strftime(event_time, '%Y-%m-%d') AS day, count(*) AS n FROM events GROUP BY 1")
    with _workbench(tmp_path, f"duckdb://{tmp_path}/v.duckdb", registry) as wb:
        _ingest(wb, tmp_path, "day1", order_events(1))
        with pytest.raises(ProjectionError, match=r"projection 'busy' is by_window, but its window column 'day' is "
                                                  r"VARCHAR, not a DATE or a time: .* return time_bucket\(INTERVAL "
                                                  r"'1 day', event_time\) .* or use incremental='full'; nothing was written"):
            wb.run("busy", progress="none")
        assert not wb.store.exists("busy__shadow")


def test_a_by_window_column_in_another_time_zone_is_refused_by_the_catch_up(tmp_path: Path, registry: Registry) -> None:
    """Berlin days: a catch-up recomputed the UTC day of a late event at 23:30 UTC, which gave a row for the
    next Berlin day from that one event, replacing live's row of that day with a wrong count."""
    define(name="berlin", key="day", incremental="by_window", window=Window("day", "1 day"), registry=registry)(
        lambda: "SELECT CAST(timezone('Europe/Berlin', event_time) AS DATE) AS day, count(*) AS n FROM events GROUP BY 1")
    with _workbench(tmp_path, f"duckdb://{tmp_path}/v.duckdb", registry) as wb:
        _ingest(wb, tmp_path, "day1", order_events(1, start=datetime(2026, 9, 2, tzinfo=UTC)))
        wb.run("berlin", progress="none")
        wb.cutover("berlin", force=True)
        _ingest(wb, tmp_path, "late", order_events(2, start=datetime(2026, 9, 1, 23, 30, tzinfo=UTC))[:1])
        with pytest.raises(ProjectionError, match=r"projection 'berlin' is by_window with windows of time_bucket\("
                                                  r"INTERVAL '1 day', event_time\) in UTC, but its window column 'day' "
                                                  r"holds values that are not the start of such a window .*\['2026-09-02'\]"):
            wb.run("berlin", progress="none")
        assert _rows(wb, "berlin")["n"].to_list() == [5] and not wb.store.exists("berlin__shadow")
