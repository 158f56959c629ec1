"""A Python fold that fails on the orders of one key bucket and folds the others slowly, noting each
order it folds, with its process id, in a file: how much a run replayed after one bucket failed, and
in which processes. The bucket and the file come from the environment, which pool workers inherit;
without them it is only slow (about 4 s per bucket of the test lake)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from lake.schema import bucket_of
from rebuild.projection import projection

BUCKETS = 8  # the test lake's


@projection(name="order_events_poisoned", key="order_id", consumes=["OrderPlaced", "ItemAdded"], streams=["orders"],
            engine="python", incremental="by_key", output={"order_id": "VARCHAR", "events": "BIGINT"})
def order_events_poisoned(partition_key: str, events: Iterator[dict[str, Any]]) -> dict[str, Any]:
    if bucket_of(partition_key, BUCKETS) == int(os.environ.get("POISONED_BUCKET", "-1")):
        raise ValueError(f"poison order {partition_key}")
    time.sleep(0.01)
    if "POISONED_FOLDED" in os.environ:
        with open(os.environ["POISONED_FOLDED"], "a") as noted:
            noted.write(f"{os.getpid()} {partition_key}\n")
    return {"order_id": partition_key, "events": sum(1 for _ in events)}
