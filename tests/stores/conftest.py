"""Fixtures for the store conformance suite: one store of each kind, a small order lake."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

import lake
from rebuild import Config, Workbench
from tests.conftest import write_ndjson
from tests.orders import T0, order_events
from tests.pg import postgres_server, postgres_uri  # noqa: F401  (session-wide PostgreSQL)

KINDS = ("duckdb", "postgres", "parquet")


def orders_lake_events(orders: int = 40, first: int = 0) -> list[dict[str, object]]:
    """Orders placed 7 hours apart from T0 (so they span several days), every fifth refunded."""
    return [
        e
        for o in range(first, first + orders)
        for e in order_events(o, customer=o % 4, start=T0 + timedelta(hours=7 * o), refund=o % 5 == 0)
    ]


def schema_uri(base: str, schema: str) -> str:
    return f"{base}{'&' if '?' in base else '?'}schema={schema}"


@pytest.fixture(params=KINDS)
def store_uri(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store of each kind (PostgreSQL: a new schema on the session's server)."""
    if request.param == "postgres":
        return schema_uri(request.getfixturevalue("postgres_uri"), f"t_{uuid.uuid4().hex[:10]}")
    if request.param == "parquet":
        return f"parquet://{tmp_path / 'views'}"
    return f"duckdb://{tmp_path / 'views.duckdb'}"


@pytest.fixture(scope="session")
def orders_lake_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The order lake, ingested once per session; tests get a copy."""
    folder = tmp_path_factory.mktemp("orders-lake")
    source = write_ndjson(folder / "orders.ndjson", orders_lake_events())
    lake.ingest(lake.Lake(folder / "lake").create(), [source], stream="orders")
    return folder / "lake"


@pytest.fixture
def orders_lake(orders_lake_template: Path, tmp_path: Path) -> lake.Lake:
    """40 orders over about 12 days, in a lake of this test's own."""
    shutil.copytree(orders_lake_template, tmp_path / "lake")
    return lake.Lake(tmp_path / "lake")


@pytest.fixture
def bench(orders_lake: lake.Lake, store_uri: str, tmp_path: Path) -> Iterator[Workbench]:
    """A Workbench on the order lake and the store under test."""
    wb = Workbench(Config(lake_uri=orders_lake.uri, store_uri=store_uri, memory_limit="1GB",
                          reports_dir=str(tmp_path / "reports")))
    yield wb
    wb.close()
