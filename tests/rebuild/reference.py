"""An independent reference for the example projections, written from their documented meanings
(README, docstrings, the sample domain's contract), not from their SQL or Polars: plain Python, one
event at a time, over a plain-Python model of what the lake archives.

``ReferenceLake.ingest`` keeps what the README's ingest rules keep (the first copy of an event id,
the lake's holder of a position, else the smallest new event id there; bad records quarantined);
``views(events)`` gives the rows each example view should hold over those events.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

CENT = Decimal("0.01")
#: the status an event sets, in the README's words ("latest state per order"); items change no status
STATUS = {"OrderPlaced": "placed", "PaymentAuthorized": "paid", "PaymentFailed": "payment_failed",
          "OrderShipped": "shipped", "OrderCancelled": "cancelled", "RefundIssued": "refunded"}
ORDER_TYPES = {*STATUS, "ItemAdded", "ItemRemoved"}
MONEY_TYPES = {"OrderPlaced", "PaymentAuthorized", "RefundIssued"}  # customer_ltv and daily_revenue read these
TIMELINE_TYPES = set(STATUS)


@dataclass(frozen=True)
class Event:
    """An archived event: the envelope's columns a projection reads, the payload as parsed JSON
    (numbers kept as their text, as DuckDB reads a declared type from the text)."""

    event_id: str
    partition_key: str
    sequence: int
    event_type: str
    event_time: datetime  # in UTC
    payload: dict[str, Any]
    lake_version: int

    def text(self, name: str) -> str | None:
        """A VARCHAR field: text, or a number as written (42 reads as '42')."""
        value = self.payload.get(name)
        return value.text if isinstance(value, Number) else value if isinstance(value, str) else None

    def number(self, name: str) -> Decimal | None:
        """A number, or text holding one ("12.50", as some producers write amounts)."""
        value = self.text(name)
        try:
            return None if value is None else Decimal(value.strip())
        except InvalidOperation:
            return None

    def money(self, name: str) -> Decimal | None:
        """A DECIMAL(18,2) field: rounded half away from zero; NULL when it does not fit 16 digits."""
        value = self.number(name)
        cents = None if value is None else value.quantize(CENT, rounding=ROUND_HALF_UP)
        return cents if cents is not None and abs(cents) < Decimal(10) ** 16 else None

    def integer(self, name: str) -> int | None:
        """An INTEGER field: a number rounded half away from zero."""
        value = self.number(name)
        return None if value is None else int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


@dataclass
class ReferenceLake:
    """What the lake holds after a series of ingests, by the README's rules."""

    events: list[Event] = field(default_factory=list)
    quarantined_keys: set[str] = field(default_factory=set)

    def ingest(self, records: list[dict[str, Any]], version: int) -> list[Event]:
        """Archive one input (records in input order) as lake_version ``version``; returns the new events."""
        held_ids = {e.event_id for e in self.events}
        holders = {(e.partition_key, e.sequence): e.event_id for e in self.events}
        fresh: dict[str, dict[str, Any]] = {}
        for record in records:
            if not valid(record):
                self.quarantined_keys.add(record["partition_key"])
            elif record["event_id"] not in held_ids and record["event_id"] not in fresh:
                fresh[record["event_id"]] = record  # the first copy wins; later ones are duplicates
        contenders: dict[tuple[str, int], list[str]] = defaultdict(list)
        for record in fresh.values():
            contenders[record["partition_key"], record["sequence"]].append(record["event_id"])
        new = []
        for record in fresh.values():
            position = (record["partition_key"], record["sequence"])
            if holders.get(position, min(contenders[position])) == record["event_id"]:
                new.append(to_event(record, version))
            else:  # a conflict: quarantined
                self.quarantined_keys.add(record["partition_key"])
        self.events.extend(new)
        return new

    def as_of(self, version: int) -> list[Event]:
        return [e for e in self.events if e.lake_version <= version]


def valid(record: dict[str, Any]) -> bool:
    """The bad records the generator makes: a negative sequence, an unparsable time, a payload not JSON,
    a NUL character in the partition key."""
    bad_key = "\0" in record["partition_key"]
    return record["sequence"] >= 0 and isinstance(record["payload"], dict) and not bad_key and utc(record["event_time"]) is not None


def utc(text: str) -> datetime | None:
    """An ISO time with an offset as the UTC moment (digits past the microsecond cut), None if it is none."""
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        return None


def to_event(record: dict[str, Any], version: int) -> Event:
    payload = record["payload"]
    at = utc(record["event_time"])
    assert at is not None, record
    return Event(record["event_id"], record["partition_key"], record["sequence"], record["event_type"], at, payload, version)


@dataclass(frozen=True)
class Number:
    """A JSON number written as this text (``1.0049999999999999``), not as a float's repr."""

    text: str


def dumps(value: Any) -> str:
    """JSON text of ``value`` with every ``Number`` written as its text."""
    marks: dict[str, str] = {}

    def mark(v: Any) -> Any:
        if isinstance(v, Number):
            marks[f"@@{len(marks)}@@"] = v.text
            return f"@@{len(marks) - 1}@@"
        raise TypeError(type(v))

    text = json.dumps(value, default=mark, ensure_ascii=False)
    for placeholder, number in marks.items():
        text = text.replace(json.dumps(placeholder), number)
    return text


# -- the views ---------------------------------------------------------------------------------
Rows = dict[tuple[Any, ...], dict[str, Any]]


def by_order(events: Iterable[Event], types: set[str]) -> dict[str, list[Event]]:
    orders: dict[str, list[Event]] = defaultdict(list)
    for e in sorted(events, key=lambda e: (e.partition_key, e.sequence, e.event_id)):
        if e.event_type in types:
            orders[e.partition_key].append(e)
    return orders


def order_summary(events: Iterable[Event]) -> Rows:
    """Latest state per order, its events applied in sequence order."""
    rows: Rows = {}
    for key, history in by_order(events, ORDER_TYPES).items():
        row: dict[str, Any] = {"order_id": key, "customer_id": None, "currency": None, "status": None, "items": 0,
                               "total": Decimal("0.00"), "paid": Decimal("0.00"), "refunded": Decimal("0.00"),
                               "version": 0}
        for e in history:
            row["customer_id"] = row["customer_id"] if row["customer_id"] is not None else e.text("customer_id")
            row["currency"] = row["currency"] if row["currency"] is not None else e.text("currency")
            row["status"] = STATUS.get(e.event_type, row["status"])
            sign = {"ItemAdded": 1, "ItemRemoved": -1}.get(e.event_type, 0)
            quantity, price = e.integer("quantity"), e.money("unit_price")
            if sign and quantity is not None:
                row["items"] += sign * quantity
                if price is not None:
                    row["total"] += sign * quantity * price
            amount = e.money("amount")
            if amount is not None and e.event_type in ("PaymentAuthorized", "RefundIssued"):
                row["paid" if e.event_type == "PaymentAuthorized" else "refunded"] += amount
            row["version"] = max(row["version"], e.sequence)
        rows[(key,)] = row
    return rows


def customer_ltv(events: Iterable[Event]) -> Rows:
    """Per customer and currency (each event's own): orders placed, authorized, refunded, first order, last event."""
    rows: Rows = {}
    for e in events:
        if e.event_type not in MONEY_TYPES:
            continue
        key = (e.text("customer_id"), e.text("currency"))
        if None in key:  # no customer or currency to count it for
            continue
        row = rows.setdefault(key, {"customer_id": key[0], "currency": key[1], "orders": 0, "authorized": Decimal("0.00"),
                                    "refunded": Decimal("0.00"), "first_order_at": None, "last_event_at": e.event_time})
        amount = e.money("amount")
        if e.event_type == "OrderPlaced":
            row["orders"] += 1
            row["first_order_at"] = min(filter(None, (row["first_order_at"], e.event_time)))
        elif amount is not None:
            row["authorized" if e.event_type == "PaymentAuthorized" else "refunded"] += amount
        row["last_event_at"] = max(row["last_event_at"], e.event_time)
    return rows


def daily_revenue(events: Iterable[Event]) -> Rows:
    """Per event-time day (UTC) and currency: orders placed, authorized, refunded, net."""
    rows: Rows = {}
    for e in events:
        currency = e.text("currency")
        if e.event_type not in MONEY_TYPES or currency is None:
            continue
        day: date = e.event_time.date()
        row = rows.setdefault((day, currency), {"day": day, "currency": currency, "orders": 0,
                                                "authorized": Decimal("0.00"), "refunded": Decimal("0.00")})
        amount = e.money("amount")
        if e.event_type == "OrderPlaced":
            row["orders"] += 1
        elif amount is not None:
            row["authorized" if e.event_type == "PaymentAuthorized" else "refunded"] += amount
    for row in rows.values():
        row["net"] = row["authorized"] - row["refunded"]
    return rows


def order_timeline(events: Iterable[Event]) -> Rows:
    """Per order: placed and shipped times, hours to ship (3 decimals), status transitions and their path."""
    rows: Rows = {}
    for key, history in by_order(events, TIMELINE_TYPES).items():
        placed = min((e.event_time for e in history if e.event_type == "OrderPlaced"), default=None)
        shipped = min((e.event_time for e in history if e.event_type == "OrderShipped"), default=None)
        hours = None
        if placed and shipped:
            seconds = Decimal((shipped - placed) // timedelta(microseconds=1)) / 1_000_000
            hours = float((seconds / 3600).quantize(Decimal("0.001"), rounding=ROUND_HALF_UP))
        types = [e.event_type for e in history]
        changes = sum(1 for i, t in enumerate(types) if i == 0 or types[i - 1] != t)
        rows[(key,)] = {"order_id": key, "placed_at": placed, "shipped_at": shipped, "hours_to_ship": hours,
                        "transitions": changes, "path": " > ".join(types)}
    return rows


VIEWS: dict[str, Callable[[Iterable[Event]], Rows]] = {
    "order_summary": order_summary, "order_summary_fold": order_summary, "customer_ltv": customer_ltv,
    "daily_revenue": daily_revenue, "order_timeline": order_timeline,
}
