"""Invariants over random lakes and random ingest splits, for every strategy on both engines:

- full rebuild == any chain of incremental runs (each cut over);
- a keys run == the full rebuild on those keys, every other row untouched;
- ``--as-of v`` == the view as it was when the lake stopped at v.
"""

from __future__ import annotations

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
KINDS = ["OrderPlaced", "ItemAdded", "PaymentAuthorized", "RefundIssued"]
PAYLOAD = {"customer_id": "VARCHAR", "amount": "DECIMAL(18,2)"}

PER_KEY_SQL = """SELECT partition_key AS k, count(*) AS n, max(sequence) AS last,
                        CAST(coalesce(sum(amount), 0) AS DECIMAL(18, 2)) AS amount,
                        arg_max(event_type, sequence) AS latest
                 FROM events GROUP BY partition_key"""
MERGE_SQL = """SELECT customer_id, count(*) AS n, CAST(coalesce(sum(amount), 0) AS DECIMAL(38, 2)) AS amount,
                      min(event_time) AS first_at, max(event_time) AS last_at
               FROM events GROUP BY customer_id"""
WINDOW_SQL = """SELECT CAST(time_bucket(INTERVAL 1 DAY, event_time) AS DATE) AS day, event_type,
                       count(*) AS n, CAST(coalesce(sum(amount), 0) AS DECIMAL(18, 2)) AS amount
                FROM events GROUP BY ALL"""
MERGE_OPS = {"n": "sum", "amount": "sum", "first_at": "min", "last_at": "max"}


def _per_key_polars(events: pl.LazyFrame) -> pl.LazyFrame:
    return events.sort("sequence").group_by("partition_key").agg(
        n=pl.len().cast(pl.Int64), last=pl.col("sequence").max(),
        amount=pl.col("amount").sum(), latest=pl.col("event_type").last(),
    ).rename({"partition_key": "k"})


def _merge_polars(events: pl.LazyFrame) -> pl.LazyFrame:
    return events.group_by("customer_id").agg(
        n=pl.len().cast(pl.Int64), amount=pl.col("amount").sum(),
        first_at=pl.col("event_time").min(), last_at=pl.col("event_time").max(),
    )


def _window_polars(events: pl.LazyFrame) -> pl.LazyFrame:
    return events.with_columns(day=pl.col("event_time").dt.date()).group_by("day", "event_type").agg(
        n=pl.len().cast(pl.Int64), amount=pl.col("amount").sum(),
    )


def _register() -> None:
    common: dict[str, Any] = {"consumes": KINDS, "payload": PAYLOAD, "registry": REGISTRY}
    window = Window(column="day", size="1 day")
    for engine, per_key, merged, windowed in (
        ("duckdb", lambda: PER_KEY_SQL, lambda: MERGE_SQL, lambda: WINDOW_SQL),
        ("polars", _per_key_polars, _merge_polars, _window_polars),
    ):
        projection(name=f"p_full_{engine}", key="k", engine=engine, incremental="full", **common)(per_key)  # type: ignore[arg-type]
        projection(name=f"p_key_{engine}", key="k", engine=engine, incremental="by_key", **common)(per_key)  # type: ignore[arg-type]
        projection(name=f"p_merge_{engine}", key="customer_id", engine=engine, incremental="merge", merge=MERGE_OPS, **common)(merged)  # type: ignore[arg-type]
        projection(name=f"p_window_{engine}", key=["day", "event_type"], engine=engine, incremental="by_window", window=window, **common)(windowed)  # type: ignore[arg-type]


_register()
NAMES = sorted(p.name for p in REGISTRY)  # type: ignore[attr-defined]


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[int]]:
    """Events of a few orders, then a random split of their (shuffled) arrival into batches."""
    events = []
    for order in range(draw(st.integers(1, 6))):
        key = f"o-{order:07d}"
        customer = f"c-{draw(st.integers(0, 2))}"
        for seq in range(1, draw(st.integers(1, 5)) + 1):
            kind = KINDS[0] if seq == 1 else draw(st.sampled_from(KINDS[1:]))
            at = T0 + timedelta(hours=draw(st.integers(0, 24 * 4)))
            amount = draw(st.decimals(min_value=0, max_value=500, places=2))
            events.append({
                "event_id": f"ev-{key}-{seq}", "partition_key": key, "sequence": seq, "event_type": kind,
                "event_time": at.isoformat(), "payload": {"customer_id": customer, "amount": float(amount)},
            })
    order = draw(st.permutations(range(len(events))))
    cuts = sorted(draw(st.lists(st.integers(1, max(1, len(events) - 1)), max_size=3, unique=True)))
    shuffled = [events[i] for i in order]
    return shuffled, cuts


def _workbench(root: Path) -> Workbench:
    config = Config.load(None, lake_uri=str(root / "lake"), store_uri=f"duckdb://{root}/v.duckdb",
                         projection_modules=())
    return Workbench(config, registry=REGISTRY)



@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(history=histories(), data=st.data())
def test_incremental_chains_keys_runs_and_as_of_agree_with_full_rebuilds(tmp_path_factory: Any, history: Any, data: st.DataObject) -> None:
    events, cuts = history
    root = tmp_path_factory.mktemp("prop")
    wb = _workbench(root)
    try:
        check_invariants(wb, root, events, cuts, NAMES, ("p_key_duckdb", "p_key_polars"), data, stream="orders")
    finally:
        wb.close()

