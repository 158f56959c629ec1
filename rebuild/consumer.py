"""A per-event Python consumer for ``order_summary``: how production builds the live view.

It reads the events in ``(partition_key, sequence, event_id)`` order and applies them one at a
time, as a message consumer would, with realistic faults that the checks must find:

- ``duplicates``: a re-delivered ``PaymentAuthorized`` applied twice for these orders;
- ``poison``: these orders hit a record the consumer cannot handle at a sequence; it and every
  later event of the order are skipped (``poison_quarantined`` adds the orders whose records the
  lake quarantined, at the quarantined sequence);
- ``old_version``: the bug of an old projection version: ``ItemRemoved`` ignored.

``build_live`` writes the result with ``store.write_table("order_summary", ...)``, with the same
columns and types as the ``order_summary`` projection, and says which orders each fault changed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa

from lake import EventFilter, Lake, read_events, read_quarantine
from rebuild.store import Store

VIEW = "order_summary"
SCHEMA = pa.schema([
    ("order_id", pa.string()), ("customer_id", pa.string()), ("currency", pa.string()), ("status", pa.string()),
    ("items", pa.int64()), ("total", pa.decimal128(18, 2)), ("paid", pa.decimal128(18, 2)),
    ("refunded", pa.decimal128(18, 2)), ("version", pa.int64()),
])  # fmt: skip
STATUS = {"OrderPlaced": "placed", "PaymentAuthorized": "paid", "PaymentFailed": "payment_failed",
          "OrderShipped": "shipped", "OrderCancelled": "cancelled", "RefundIssued": "refunded"}
CENT = Decimal("0.01")


@dataclass(frozen=True)
class Faults:
    """Which faults the consumer has; empty means a correct consumer."""

    duplicates: tuple[str, ...] = ()
    poison: Mapping[str, int] = field(default_factory=dict)
    poison_quarantined: bool = False
    old_version: bool = False


@dataclass(frozen=True)
class ConsumerResult:
    """The live rows written and, per fault, the orders whose row it changed."""

    rows: int
    events: int
    touched: dict[str, tuple[str, ...]]

    @property
    def faulted(self) -> set[str]:
        return {k for keys in self.touched.values() for k in keys}


def build_live(lake: Lake, store: Store, faults: Faults | None = None, table: str = VIEW) -> ConsumerResult:
    """Consume every order event of the lake's latest snapshot into ``table`` of ``store``."""
    faults = faults or Faults()
    poison = dict(faults.poison)
    if faults.poison_quarantined:
        poison.update({k: v for k, v in _quarantined(lake).items() if k not in poison})
    touched: dict[str, set[str]] = {"duplicates": set(), "poison": set(), "old_version": set()}
    rows, events = [], 0
    for order, stream in _orders(lake):
        state, hits = _fold(order, stream, faults, poison.get(order))
        events += len(stream)
        rows.append(state)
        for name in hits:
            touched[name].add(order)
    store.write_table(table, pa.Table.from_pylist(rows, schema=SCHEMA))
    return ConsumerResult(len(rows), events, {k: tuple(sorted(v)) for k, v in touched.items()})


def _orders(lake: Lake) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Each order's events in sequence order (one order in memory at a time)."""
    con = _quiet(duckdb.connect())
    try:
        rel = read_events(lake, EventFilter(streams=("orders",)), con=con)
        yield from by_order(rel.order("partition_key, sequence, event_id").to_arrow_reader(50_000))
    finally:
        con.close()


def _quiet(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """No DuckDB progress bar: it printed itself on stdout mid-way through `rebuild demo`'s lines (and into
    the job's log under --json, where stdout is the JSON's alone) while the consumer read the lake for seconds."""
    con.execute("SET enable_progress_bar = false")
    return con


def by_order(batches: Iterable[pa.RecordBatch]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Events sorted by (partition_key, sequence) as Python dicts, one order at a time."""
    current: str | None = None
    events: list[dict[str, Any]] = []
    for batch in batches:
        for event in batch.to_pylist():
            if event["partition_key"] != current and events:
                yield current, events  # type: ignore[misc]
                events = []
            current = event["partition_key"]
            events.append(event)
    if events:
        yield current, events  # type: ignore[misc]


def _quarantined(lake: Lake) -> dict[str, int]:
    """Orders with a quarantined record, at its sequence (0 when unknown: the whole order)."""
    con = _quiet(duckdb.connect())
    try:
        rows = read_quarantine(lake, con).filter("partition_key IS NOT NULL") \
            .aggregate("partition_key, min(coalesce(sequence, 0))").fetchall()
    finally:
        con.close()
    return {str(k): int(s) for k, s in rows}


def _fold(order: str, events: Sequence[dict[str, Any]], faults: Faults, poison_at: int | None) -> tuple[dict[str, Any], set[str]]:
    """Apply one order's events; returns its row and the faults that changed it."""
    good = apply(order, events, Faults(), None)
    bad = apply(order, events, faults, poison_at)
    hits = set()
    if bad != good:
        for name, only in (("duplicates", Faults(duplicates=faults.duplicates)), ("old_version", Faults(old_version=faults.old_version))):
            if apply(order, events, only, None) != good:
                hits.add(name)
        if poison_at is not None and apply(order, events, Faults(), poison_at) != good:
            hits.add("poison")
    return bad, hits


def apply(order: str, events: Sequence[dict[str, Any]], faults: Faults, poison_at: int | None = None) -> dict[str, Any]:
    """One order's row: its events applied one at a time, in order."""
    row: dict[str, Any] = {"order_id": order, "customer_id": None, "currency": None, "status": None, "items": 0,
                           "total": Decimal(0), "paid": Decimal(0), "refunded": Decimal(0), "version": None}
    for event in events:
        if poison_at is not None and event["sequence"] >= poison_at:
            break  # the consumer chokes on the poison record and skips the rest of the order
        times = 2 if event["event_type"] == "PaymentAuthorized" and order in faults.duplicates else 1
        for _ in range(times):
            _event(row, event, faults)
    return row


def _event(row: dict[str, Any], event: dict[str, Any], faults: Faults) -> None:
    body = json.loads(event["payload"] or "{}")
    kind = event["event_type"]
    row["customer_id"] = row["customer_id"] or body.get("customer_id")
    row["currency"] = row["currency"] or body.get("currency")
    row["version"] = event["sequence"]
    if kind in STATUS:
        row["status"] = STATUS[kind]
    if kind in ("ItemAdded", "ItemRemoved"):
        if kind == "ItemRemoved" and faults.old_version:
            return
        sign = 1 if kind == "ItemAdded" else -1
        quantity = int(body.get("quantity") or 0)
        row["items"] += sign * quantity
        row["total"] = (row["total"] + sign * quantity * _money(body.get("unit_price"))).quantize(CENT)
    elif kind == "PaymentAuthorized":
        row["paid"] = (row["paid"] + _money(body.get("amount"))).quantize(CENT)
    elif kind == "RefundIssued":
        row["refunded"] = (row["refunded"] + _money(body.get("amount"))).quantize(CENT)


def _money(value: Any) -> Decimal:
    return Decimal(str(value)) if value is not None else Decimal(0)
