"""Fault-injection helpers: a real CLI process killed at a named point, and the state to compare.

``run_cli(..., fault="publish.before_commit:2")`` runs ``rebuild ...`` in a subprocess with
``REBUILD_FAULT_POINT`` set, so the process SIGKILLs itself exactly there (see ``lake.faults``).
``lake_state`` and ``store_state`` capture what must survive: every event id (counted, so a
doubled event shows), the quarantine, and live/shadow/previous with their checkpoints.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import lake
from rebuild import Config, Workbench
from tests.conftest import write_ndjson
from tests.pg import postgres_server, postgres_uri  # noqa: F401  (PostgreSQL for the slow sweeps)
from tests.stores.conftest import orders_lake_events

ROOT = Path(__file__).resolve().parents[2]
VIEW = "order_summary"
KILLED = -9


def run_cli(lake_uri: str, store_uri: str, *args: str, fault: str | None = None, timeout: float = 120,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``rebuild --lake L --store S ARGS`` in a real process; ``fault`` arms a kill point."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    environ.pop("REBUILD_FAULT_POINT", None)
    if fault:
        environ["REBUILD_FAULT_POINT"] = fault
    return subprocess.run(
        [sys.executable, "-c", "from rebuild.cli import run; run()", "--lake", lake_uri, "--store", store_uri, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=environ,
    )


def run_python(code: str, *args: str, fault: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    environ.pop("REBUILD_FAULT_POINT", None)
    if fault:
        environ["REBUILD_FAULT_POINT"] = fault
    return subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=environ)


def event_ids(target: lake.Lake) -> Counter[str]:
    """Every event id of the latest snapshot with how often it is there (a doubled event shows)."""
    rows = lake.read_events(target).aggregate("event_id, count(*)").fetchall()
    return Counter({r[0]: int(r[1]) for r in rows})


def quarantine_rows(target: lake.Lake) -> int:
    return int(lake.read_quarantine(target).count("*").fetchall()[0][0])


@dataclass(frozen=True)
class StoreState:
    """A view's roles and checkpoints, as read by a fresh process would see them."""

    live: pl.DataFrame | None
    shadow: pl.DataFrame | None
    previous: pl.DataFrame | None
    checkpoints: dict[str, str | None]
    runs: int


def store_state(lake_uri: str, store_uri: str, view: str = VIEW) -> StoreState:
    with Workbench(Config(lake_uri=lake_uri, store_uri=store_uri)) as wb:
        store = wb.store
        key = list(wb.projection(view).key)

        def rows(role: str, table: str) -> pl.DataFrame | None:
            return wb.view(view, role).sort(key) if store.exists(table) else None

        live, shadow, previous = rows("live", view), rows("shadow", f"{view}__shadow"), rows("previous", f"{view}__previous")
        checkpoints = {}
        for role in ("live", "shadow", "previous"):
            cp = store.checkpoint(view, role)
            checkpoints[role] = cp.run_id if cp else None
            if cp is not None and role == "shadow" and shadow is not None:
                record = store.run(cp.run_id)
                assert record is not None, f"shadow checkpoint of run {cp.run_id} without its run record"
                if record.status != "backfill":
                    assert record.rows_written == len(shadow) == cp.rows, "shadow, checkpoint and run record disagree"
        return StoreState(live, shadow, previous, checkpoints, len(store.runs(view, 1000)))


def same(a: pl.DataFrame | None, b: pl.DataFrame | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.equals(b)


@pytest.fixture(scope="session")
def fault_lake_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 orders over ~5 weeks in three ingest commits (so partitions have several small files),
    plus 2 poison lines that are quarantined."""
    folder = tmp_path_factory.mktemp("fault-lake")
    target = lake.Lake(folder / "lake").create()
    events = orders_lake_events(120)
    for n, part in enumerate((events[: len(events) // 3], events[len(events) // 3: 2 * len(events) // 3],
                              events[2 * len(events) // 3:])):
        lines: list[object] = list(part)
        if n == 1:
            lines += ['{"event_id": "cut-off', {"event_id": "p-2", "partition_key": "o-0000007", "sequence": "2.5",
                                               "event_type": "ItemAdded", "event_time": "2026-09-02T00:00:00+00:00"}]
        lake.ingest(target, [write_ndjson(folder / f"part-{n}.ndjson", lines)], stream="orders")
    return folder / "lake"


@pytest.fixture
def fault_lake(fault_lake_template: Path, tmp_path: Path) -> lake.Lake:
    shutil.copytree(fault_lake_template, tmp_path / "lake")
    return lake.Lake(tmp_path / "lake")


def new_orders(folder: Path, first: int = 500, orders: int = 30, bad: bool = True) -> Path:
    """An NDJSON file of new orders (and, with ``bad``, two poison lines) to ingest."""
    lines: list[object] = list(orders_lake_events(orders, first=first))
    if bad:
        lines += ["{not json", {"event_id": "x-1", "partition_key": "o-9", "sequence": -1,
                                "event_type": "OrderPlaced", "event_time": "2026-09-03T00:00:00+00:00"}]
    return write_ndjson(folder / f"new-{first}.ndjson", lines)


def load_json(out: str) -> dict[str, Any]:
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    return json.loads(lines[0])  # type: ignore[no-any-return]

