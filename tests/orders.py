"""A tiny order domain for rebuild tests: events with the sample lake's payload contract."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

T0 = datetime(2026, 9, 1, tzinfo=UTC)


def order_events(order: int, *, customer: int = 1, currency: str = "EUR", start: datetime = T0,
                 items: int = 2, ship: bool = True, refund: bool = False, first_seq: int = 1) -> list[dict[str, Any]]:
    """A plausible order's events: placed, items, payment, shipped, refunded."""
    key = f"o-{order:07d}"
    base = {"order_id": key, "customer_id": f"c-{customer:06d}", "currency": currency}
    kinds: list[tuple[str, dict[str, Any]]] = [("OrderPlaced", {"channel": "web"})]
    total = 0.0
    for i in range(items):
        price = round(1.25 + i + order % 7, 2)
        total += 2 * price
        kinds.append(("ItemAdded", {"sku": f"sku-{i}", "quantity": 2, "unit_price": price}))
    kinds.append(("PaymentAuthorized", {"amount": round(total, 2)}))
    if ship:
        kinds.append(("OrderShipped", {"carrier": "dhl"}))
    if refund:
        kinds.append(("RefundIssued", {"amount": round(total / 2, 2)}))
    return [
        {
            "event_id": f"ev-{key}-{n}",
            "partition_key": key,
            "sequence": n,
            "event_type": kind,
            "event_time": (start + timedelta(hours=3 * (n - first_seq))).isoformat(),
            "payload": {**base, **extra},
        }
        for n, (kind, extra) in enumerate(kinds, start=first_seq)
    ]
