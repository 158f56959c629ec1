"""Example projections for the sample order domain, one per incremental strategy.

Used by the demo, the notebooks, the tests and the benchmarks. Money is DECIMAL(18,2), so sums
are exact and any order of applying events gives the same totals.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import polars as pl

from rebuild.projection import Window, projection

ORDER_EVENTS = [
    "OrderPlaced", "ItemAdded", "ItemRemoved", "PaymentAuthorized", "PaymentFailed",
    "OrderShipped", "OrderCancelled", "RefundIssued",
]
PAYLOAD = {
    "customer_id": "VARCHAR",
    "currency": "VARCHAR",
    "quantity": "INTEGER",
    "unit_price": "DECIMAL(18,2)",
    "amount": "DECIMAL(18,2)",
}


@projection(
    name="order_summary",
    version=3,
    key="order_id",
    consumes=ORDER_EVENTS,
    streams=["orders"],
    incremental="by_key",
    payload=PAYLOAD,
    expectations={
        "not_null": ["customer_id", "status"],
        "between": {"items": [0, None], "total": [0, None]},
        "in_set": {"status": ["placed", "paid", "payment_failed", "shipped", "cancelled", "refunded"]},
    },
    thresholds={"max_changed_fraction": 0.0},
)
def order_summary() -> str:
    """Latest state per order: status, items, total, paid, refunded and version (last sequence)."""
    return """
        SELECT partition_key AS order_id,
               arg_min(customer_id, sequence) FILTER (WHERE customer_id IS NOT NULL) AS customer_id,
               arg_min(currency, sequence) FILTER (WHERE currency IS NOT NULL) AS currency,
               arg_max(CASE event_type
                           WHEN 'OrderPlaced' THEN 'placed'
                           WHEN 'PaymentAuthorized' THEN 'paid'
                           WHEN 'PaymentFailed' THEN 'payment_failed'
                           WHEN 'OrderShipped' THEN 'shipped'
                           WHEN 'OrderCancelled' THEN 'cancelled'
                           WHEN 'RefundIssued' THEN 'refunded' END,
                       sequence)
                   FILTER (WHERE event_type NOT IN ('ItemAdded', 'ItemRemoved')) AS status,
               CAST(coalesce(sum(CASE event_type WHEN 'ItemAdded' THEN quantity
                                                 WHEN 'ItemRemoved' THEN -quantity END), 0) AS BIGINT) AS items,
               CAST(coalesce(sum(CASE event_type WHEN 'ItemAdded' THEN quantity * unit_price
                                                 WHEN 'ItemRemoved' THEN -quantity * unit_price END), 0)
                    AS DECIMAL(18, 2)) AS total,
               CAST(coalesce(sum(amount) FILTER (WHERE event_type = 'PaymentAuthorized'), 0) AS DECIMAL(18, 2)) AS paid,
               CAST(coalesce(sum(amount) FILTER (WHERE event_type = 'RefundIssued'), 0) AS DECIMAL(18, 2)) AS refunded,
               max(sequence) AS version
        FROM events
        GROUP BY partition_key
    """


@projection(
    name="customer_ltv",
    key=["customer_id", "currency"],
    consumes=["OrderPlaced", "PaymentAuthorized", "RefundIssued"],
    streams=["orders"],
    engine="polars",
    incremental="merge",
    payload={"customer_id": "VARCHAR", "currency": "VARCHAR", "amount": "DECIMAL(18,2)"},
    merge={"orders": "sum", "authorized": "sum", "refunded": "sum", "first_order_at": "min", "last_event_at": "max"},
    expectations={"not_null": ["customer_id", "currency"], "between": {"orders": [0, None]}},
)
def customer_ltv(events: pl.LazyFrame) -> pl.LazyFrame:
    """Per customer and currency: orders placed, amounts authorized and refunded (a Polars merge).

    Events without a customer or a currency are left out, as daily_revenue leaves out those without a
    currency: a view's key is never NULL, and one such event would fail every run.
    """
    kind = pl.col("event_type")
    known = events.filter(pl.col("customer_id").is_not_null() & pl.col("currency").is_not_null())
    return known.group_by("customer_id", "currency").agg(
        orders=(kind == "OrderPlaced").sum().cast(pl.Int64),
        authorized=pl.col("amount").filter(kind == "PaymentAuthorized").sum(),
        refunded=pl.col("amount").filter(kind == "RefundIssued").sum(),
        first_order_at=pl.col("event_time").filter(kind == "OrderPlaced").min(),
        last_event_at=pl.col("event_time").max(),
    )


@projection(
    name="daily_revenue",
    key=["day", "currency"],
    consumes=["OrderPlaced", "PaymentAuthorized", "RefundIssued"],
    streams=["orders"],
    incremental="by_window",
    window=Window(column="day", size="1 day"),
    payload={"currency": "VARCHAR", "amount": "DECIMAL(18,2)"},
    expectations={"not_null": ["day", "currency"]},
)
def daily_revenue() -> str:
    """Per event-time day (UTC) and currency: orders placed, authorized, refunded, net."""
    return """
        SELECT CAST(time_bucket(INTERVAL 1 DAY, event_time) AS DATE) AS day,
               currency,
               count(*) FILTER (WHERE event_type = 'OrderPlaced') AS orders,
               CAST(coalesce(sum(amount) FILTER (WHERE event_type = 'PaymentAuthorized'), 0) AS DECIMAL(18, 2)) AS authorized,
               CAST(coalesce(sum(amount) FILTER (WHERE event_type = 'RefundIssued'), 0) AS DECIMAL(18, 2)) AS refunded,
               CAST(authorized - refunded AS DECIMAL(18, 2)) AS net
        FROM events
        WHERE currency IS NOT NULL
        GROUP BY ALL
    """


@projection(
    name="order_timeline",
    key="order_id",
    consumes=["OrderPlaced", "PaymentAuthorized", "PaymentFailed", "OrderShipped", "OrderCancelled", "RefundIssued"],
    streams=["orders"],
    incremental="by_key",
)
def order_timeline() -> str:
    """Per order: placed and shipped times, hours to ship, status transitions and their path.

    Needs sequence order: the transitions come from window functions over each order's events.
    """
    return """
        WITH ordered AS (
            SELECT partition_key, sequence, event_id, event_time, event_type,
                   lag(event_type) OVER (PARTITION BY partition_key ORDER BY sequence, event_id) AS previous
            FROM events
        )
        SELECT partition_key AS order_id,
               min(event_time) FILTER (WHERE event_type = 'OrderPlaced') AS placed_at,
               min(event_time) FILTER (WHERE event_type = 'OrderShipped') AS shipped_at,
               -- from microseconds (date_diff('second') counts whole seconds passed: 5.4 s as 5), rounded
               -- in thousandths of an hour, which a double holds exactly, so a half rounds up as it reads
               round(date_diff('microsecond', placed_at, shipped_at) / 3600000) / 1000 AS hours_to_ship,
               count(*) FILTER (WHERE previous IS DISTINCT FROM event_type) AS transitions,
               string_agg(event_type, ' > ' ORDER BY sequence, event_id) AS path
        FROM ordered
        GROUP BY partition_key
    """


@projection(
    name="order_summary_fold",
    key="order_id",
    consumes=ORDER_EVENTS,
    streams=["orders"],
    engine="python",
    incremental="by_key",
    payload=PAYLOAD,
    output={"order_id": "VARCHAR", "customer_id": "VARCHAR", "currency": "VARCHAR", "status": "VARCHAR",
            "items": "BIGINT", "total": "DECIMAL(18,2)", "paid": "DECIMAL(18,2)", "refunded": "DECIMAL(18,2)",
            "version": "BIGINT"},  # a fold's types come from here, not from its values
)
def order_summary_fold(partition_key: str, events: Iterator[dict[str, Any]]) -> dict[str, Any]:
    """order_summary as a per-event Python fold: the slow path, and the benchmark's baseline."""
    statuses = {
        "OrderPlaced": "placed", "PaymentAuthorized": "paid", "PaymentFailed": "payment_failed",
        "OrderShipped": "shipped", "OrderCancelled": "cancelled", "RefundIssued": "refunded",
    }
    row: dict[str, Any] = {"order_id": partition_key, "customer_id": None, "currency": None, "status": None,
                           "items": 0, "total": Decimal("0.00"), "paid": Decimal("0.00"),
                           "refunded": Decimal("0.00"), "version": 0}
    for e in events:
        kind = e["event_type"]
        for first in ("customer_id", "currency"):  # the first event's that has one ("" is one), as arg_min
            row[first] = e[first] if row[first] is None else row[first]
        row["status"] = statuses.get(kind, row["status"])
        sign = {"ItemAdded": 1, "ItemRemoved": -1}.get(kind, 0)
        if sign and e["quantity"] is not None:  # an item without a price still counts, as in order_summary
            row["items"] += sign * e["quantity"]
            if e["unit_price"] is not None:
                row["total"] += sign * e["quantity"] * e["unit_price"]
        if kind == "PaymentAuthorized" and e["amount"] is not None:
            row["paid"] += e["amount"]
        if kind == "RefundIssued" and e["amount"] is not None:
            row["refunded"] += e["amount"]
        row["version"] = max(row["version"], e["sequence"])
    return row
