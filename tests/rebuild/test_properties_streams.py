"""The invariants of ``test_properties`` for projections over several streams keyed by the same
orders, each stream numbering its own sequences (an order's items 1, 2, 3 and its payments 1, 2), over
random lakes and random ingest splits (a stream may arrive after the views were built, and a keys run
or ``--as-of`` may pick a lake_version before it existed), for every strategy on both engines and a fold:

- full rebuild == any chain of incremental runs (each cut over);
- a keys run == the full rebuild on those keys, every other row untouched;
- ``--as-of v`` == the view as it was when the lake stopped at v.

A projection beside them reads one stream only: the other stream's events of its keys change nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rebuild import Workbench
from rebuild.config import Config
from rebuild.projection import Registry, Window, projection
from tests.orders import T0
from tests.rebuild.invariants import check_invariants

REGISTRY = Registry()
STREAMS = {"orders": ["OrderPlaced", "ItemAdded", "OrderShipped"], "payments": ["PaymentAuthorized", "PaymentRefunded"]}
TYPES = [t for types in STREAMS.values() for t in types]
COMMON: dict[str, Any] = {"streams": list(STREAMS), "consumes": TYPES, "registry": REGISTRY,
                          "payload": {"customer_id": "VARCHAR", "amount": "DECIMAL(18,2)"}}

# the latest event of a key across streams: sequences tie across streams, so (sequence, stream) orders them
PER_KEY_SQL = """SELECT partition_key AS k, count(*) FILTER (WHERE stream = 'orders') AS order_events,
                        count(*) FILTER (WHERE stream = 'payments') AS payment_events,
                        CAST(coalesce(sum(amount) FILTER (WHERE event_type = 'ItemAdded'), 0) AS DECIMAL(18, 2)) AS total,
                        CAST(coalesce(sum(amount) FILTER (WHERE event_type = 'PaymentAuthorized'), 0) AS DECIMAL(18, 2)) AS paid,
                        arg_max(event_type, (sequence, stream)) AS latest
                 FROM events GROUP BY partition_key"""
MERGE_SQL = """SELECT customer_id, stream, count(*) AS n, CAST(coalesce(sum(amount), 0) AS DECIMAL(38, 2)) AS amount,
                      min(event_time) AS first_at, max(event_time) AS last_at
               FROM events GROUP BY ALL"""
WINDOW_SQL = """SELECT CAST(time_bucket(INTERVAL 1 DAY, event_time) AS DATE) AS day, stream, count(*) AS n,
                       CAST(coalesce(sum(amount), 0) AS DECIMAL(18, 2)) AS amount
                FROM events GROUP BY ALL"""
MERGE_OPS = {"n": "sum", "amount": "sum", "first_at": "min", "last_at": "max"}


def _per_key_polars(events: pl.LazyFrame) -> pl.LazyFrame:
    return events.sort("sequence", "stream").group_by("partition_key").agg(
        order_events=(pl.col("stream") == "orders").sum().cast(pl.Int64),
        payment_events=(pl.col("stream") == "payments").sum().cast(pl.Int64),
        total=pl.col("amount").filter(pl.col("event_type") == "ItemAdded").sum(),
        paid=pl.col("amount").filter(pl.col("event_type") == "PaymentAuthorized").sum(),
        latest=pl.col("event_type").last(),
    ).rename({"partition_key": "k"})


def _merge_polars(events: pl.LazyFrame) -> pl.LazyFrame:
    return events.group_by("customer_id", "stream").agg(
        n=pl.len().cast(pl.Int64), amount=pl.col("amount").sum(),
        first_at=pl.col("event_time").min(), last_at=pl.col("event_time").max(),
    )


def _window_polars(events: pl.LazyFrame) -> pl.LazyFrame:
    return events.with_columns(day=pl.col("event_time").dt.date()).group_by("day", "stream").agg(
        n=pl.len().cast(pl.Int64), amount=pl.col("amount").sum(),
    )


def _fold(partition_key: str, events: Iterator[dict[str, Any]]) -> dict[str, Any]:
    """The replay order a fold gets: (sequence, event_id), whatever the stream."""
    return {"k": partition_key, "trail": ",".join(f"{e['stream'][0]}{e['sequence']}" for e in events)}


def _register() -> None:
    window = Window(column="day", size="1 day")
    for engine, per_key, merged, windowed in (
        ("duckdb", lambda: PER_KEY_SQL, lambda: MERGE_SQL, lambda: WINDOW_SQL),
        ("polars", _per_key_polars, _merge_polars, _window_polars),
    ):
        projection(name=f"s_full_{engine}", key="k", engine=engine, incremental="full", **COMMON)(per_key)  # type: ignore[arg-type]
        projection(name=f"s_key_{engine}", key="k", engine=engine, **COMMON)(per_key)  # type: ignore[arg-type]
        projection(name=f"s_merge_{engine}", key=["customer_id", "stream"], engine=engine, incremental="merge",
                   merge=MERGE_OPS, **COMMON)(merged)  # type: ignore[arg-type]
        projection(name=f"s_window_{engine}", key=["day", "stream"], engine=engine, incremental="by_window",
                   window=window, **COMMON)(windowed)  # type: ignore[arg-type]
    projection(name="s_fold", key="k", engine="python", output={"k": "VARCHAR", "trail": "VARCHAR"}, **COMMON)(_fold)
    projection(name="s_orders_only", key="k", streams="orders", consumes=TYPES, registry=REGISTRY)(
        lambda: "SELECT partition_key AS k, count(*) AS n, max(sequence) AS last FROM events GROUP BY 1")


_register()
NAMES = sorted(p.name for p in REGISTRY)  # type: ignore[attr-defined]
BY_KEY = ("s_key_duckdb", "s_key_polars", "s_fold", "s_orders_only")


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[int]]:
    """Events of a few orders in two streams, each numbered from 1 per stream, then a random split of
    their (shuffled) arrival into batches; an order may have payments before (or without) order events."""
    events = []
    for order in range(draw(st.integers(1, 5))):
        key = f"o-{order:07d}"
        customer = f"c-{draw(st.integers(0, 1))}"
        for stream, types in STREAMS.items():
            for seq in range(1, draw(st.integers(0, 4)) + 1):
                events.append({
                    "event_id": f"{stream}-{key}-{seq}", "stream": stream, "partition_key": key, "sequence": seq,
                    "event_type": draw(st.sampled_from(types)),
                    "event_time": (T0 + timedelta(hours=draw(st.integers(0, 24 * 3)))).isoformat(),
                    "payload": {"customer_id": customer, "amount": float(draw(st.decimals(0, 500, places=2)))},
                })
    if not events:
        events.append({"event_id": "orders-o-0-1", "stream": "orders", "partition_key": "o-0", "sequence": 1,
                       "event_type": "OrderPlaced", "event_time": T0.isoformat(), "payload": {"customer_id": "c-0"}})
    order = draw(st.permutations(range(len(events))))
    cuts = sorted(draw(st.lists(st.integers(1, max(1, len(events) - 1)), max_size=3, unique=True)))
    return [events[i] for i in order], cuts



@settings(max_examples=5, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(history=histories(), data=st.data())
def test_streams_incremental_chains_keys_runs_and_as_of_agree_with_full_rebuilds(
        tmp_path_factory: Any, history: Any, data: st.DataObject) -> None:
    events, cuts = history
    root: Path = tmp_path_factory.mktemp("streams")
    config = Config.load(None, lake_uri=str(root / "lake"), store_uri=f"duckdb://{root}/v.duckdb", projection_modules=())
    wb = Workbench(config, registry=REGISTRY)
    try:
        check_invariants(wb, root, events, cuts, NAMES, BY_KEY, data)
    finally:
        wb.close()

