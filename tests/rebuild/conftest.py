"""Factories for rebuild tests: a workbench over a fresh lake and DuckDB store in tmp_path."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import lake
from rebuild import Workbench
from tests.conftest import write_ndjson
from tests.stores.conftest import postgres_server, postgres_uri, store_uri  # noqa: F401  (fixtures for test_locks)

VIEWS = ("order_summary", "customer_ltv", "daily_revenue", "order_timeline")
#: the one shape of a line of the CLI's log on stderr (rebuild.progress.utc_formatter): time, level, logger, message
LOG_LINE = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z) (DEBUG|INFO|WARNING|ERROR|CRITICAL) ([\w.]+): (.*)")


def logged(err: str) -> str:
    """The messages of ``err``'s log lines, one a line, each line checked to have the log's shape."""
    messages = []
    for line in err.splitlines():
        match = LOG_LINE.fullmatch(line)
        assert match, f"not a log line: {line!r}"
        messages.append(match[4] + "\n")
    return "".join(messages)


class Bench:
    """A workbench plus helpers to ingest event dicts and read views sorted by key."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.batches = 0
        self.wb = Workbench.open(None, lake_uri=str(root / "lake"), store_uri=f"duckdb://{root}/views.duckdb",
                                 reports_dir=str(root / "reports"))

    def ingest(self, events: Iterable[dict[str, Any]], stream: str = "orders") -> lake.IngestResult:
        self.batches += 1
        path = write_ndjson(self.root / f"batch-{self.batches}.ndjson", list(events))
        return lake.ingest(self.wb.lake, [path], stream=stream)

    def rows(self, view: str, role: str = "live") -> pl.DataFrame:
        key = list(self.wb.projection(view).key)
        return self.wb.view(view, role).sort(key)

    def rebuild_live(self, view: str, **options: Any) -> None:
        self.wb.run(view, progress="none", **options)
        self.wb.cutover(view, force=True)


@pytest.fixture
def bench(tmp_path: Path) -> Iterable[Bench]:
    b = Bench(tmp_path)
    yield b
    b.wb.close()


@pytest.fixture
def make_bench(tmp_path: Path) -> Iterable[Callable[[str], Bench]]:
    made: list[Bench] = []

    def make(name: str) -> Bench:
        (tmp_path / name).mkdir()
        made.append(Bench(tmp_path / name))
        return made[-1]

    yield make
    for b in made:
        b.wb.close()
