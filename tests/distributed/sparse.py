"""A Python fold without declared output whose rows differ by key bucket: a column only one order has
(``note``), and an amount whose inferred DECIMAL type depends on the values a bucket holds."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from rebuild.projection import projection


@projection(name="order_notes", key="order_id", consumes=["OrderPlaced", "ItemAdded"], streams=["orders"],
            engine="python", incremental="by_key")
def order_notes(partition_key: str, events: Iterator[dict[str, Any]]) -> dict[str, Any]:
    row = {"order_id": partition_key, "events": sum(1 for _ in events),
           "amount": Decimal("12345.678") if partition_key == "o-0000011" else Decimal("1.5")}
    if partition_key == "o-0000007":
        row["note"] = "flagged"
    return row
