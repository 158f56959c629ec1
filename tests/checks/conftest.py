"""Factories for the checks tests: a DuckDB file with two tables, and an order lake with known faults."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

import lake
from rebuild.config import Config
from rebuild.consumer import ConsumerResult, Faults, build_live
from rebuild.workbench import Workbench
from tests.orders import T0, order_events

DUPLICATED = ("o-0000003", "o-0000017")
OLD_VERSION = ("o-0000007", "o-0000021")
POISONED = ("o-0000012", "o-0000033")
LATE = "o-0000005"
ORDERS = 40


@pytest.fixture
def duck(tmp_path: Path) -> Callable[..., duckdb.DuckDBPyConnection]:
    """``duck(live_sql, rebuilt_sql)``: a real DuckDB file with tables ``live`` and ``rebuilt``."""
    cons: list[duckdb.DuckDBPyConnection] = []

    def make(live: str, rebuilt: str) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(str(tmp_path / f"diff{len(cons)}.duckdb"))
        con.execute(f"CREATE TABLE live AS {live}")
        con.execute(f"CREATE TABLE rebuilt AS {rebuilt}")
        cons.append(con)
        return con

    yield make
    for con in cons:
        con.close()


def _events() -> list[dict[str, Any]]:
    events = []
    for n in range(1, ORDERS + 1):
        evs = order_events(n, customer=n % 5, currency="EUR" if n % 3 else "USD", refund=n % 10 == 0)
        key = evs[0]["partition_key"]
        if key in OLD_VERSION:
            last = evs[-1]
            evs.append({**last, "event_id": f"ev-{key}-removed", "sequence": last["sequence"] + 1,
                        "event_type": "ItemRemoved",
                        "payload": {**last["payload"], "sku": "sku-0", "quantity": 1, "unit_price": 1.25}})
        events += evs
    return events


def _write(path: Path, records: list[Any]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n")
    return path


def build_order_lake(root: Path) -> lake.Lake:
    """40 orders; re-delivered payments, ItemRemoved events, poison records, one late refund."""
    target = lake.Lake(root / "lake").create()
    events = _events()
    lake.ingest(target, [_write(root / "a.ndjson", events)], stream="orders", ingested_at=T0 + timedelta(hours=23))
    again = [e for e in events if e["partition_key"] in DUPLICATED and e["event_type"] == "PaymentAuthorized"]
    poison = [{"event_id": f"ev-{k}-bad", "partition_key": k, "sequence": 3, "event_type": "ItemAdded",
               "event_time": "not a time", "payload": {"order_id": k}} for k in POISONED]
    late = [{"event_id": f"ev-{LATE}-late", "partition_key": LATE, "sequence": 99, "event_type": "RefundIssued",
             "event_time": T0.isoformat(), "payload": {"order_id": LATE, "amount": 1.0}}]
    lake.ingest(target, [_write(root / "b.ndjson", again + poison)], stream="orders", ingested_at=T0 + timedelta(hours=23))
    lake.ingest(target, [_write(root / "c.ndjson", late)], stream="orders", ingested_at=T0 + timedelta(days=9))
    return target


@dataclass
class Scenario:
    wb: Workbench
    lake: lake.Lake
    consumer: ConsumerResult
    root: Path


@pytest.fixture
def scenario(tmp_path: Path) -> Scenario:
    """An order lake, a faulty live ``order_summary`` from the consumer, and a full rebuild in the shadow."""
    target = build_order_lake(tmp_path)
    config = Config(lake_uri=str(target.uri), store_uri=f"duckdb://{tmp_path / 'views.duckdb'}",
                    reports_dir=str(tmp_path / "reports"), memory_limit="1GB")
    wb = Workbench(config)
    faults = Faults(duplicates=DUPLICATED, poison_quarantined=True, old_version=True)
    consumer = build_live(target, wb.store, faults)
    wb.run("order_summary", full=True, progress="none")
    yield Scenario(wb, target, consumer, tmp_path)
    wb.close()
