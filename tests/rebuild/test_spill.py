"""A rebuild larger than DuckDB's memory limit spills to the configured temp directory instead of failing."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from lake import EventFilter, Lake
from rebuild import Config, ProjectionError, Workbench
from rebuild.errors import ConfigError
from rebuild.replay import Selection, events_sql, materialize
from rebuild.store.duckdb_store import connect
from tests.stores.synthetic import synthetic_lake

ORDERS = 300_000  # ~1.9M events: order_summary needs more than 100MB of aggregate state
LIMIT = "100MB"


@pytest.fixture(scope="module")
def big_lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    return synthetic_lake(tmp_path_factory.mktemp("big") / "lake", ORDERS)


def test_the_rebuild_does_not_fit_without_spilling(big_lake: Lake) -> None:
    """The control: with spilling switched off the same rebuild runs out of memory."""
    with Workbench(Config(lake_uri=big_lake.uri, store_uri="parquet:///unused")) as wb:
        projection = wb.projection("order_summary")
    con = connect(":memory:", LIMIT, None, 2)
    con.execute("SET temp_directory = ''")
    f = EventFilter(streams=projection.streams, event_types=projection.consumes)
    sql, _, _ = events_sql(big_lake, big_lake.snapshot(), projection, Selection(f))
    with pytest.raises(ProjectionError, match="Out of Memory"):
        materialize(con, projection, sql, "rebuilt")
    con.close()


def test_rebuild_spills_to_the_configured_temp_directory(big_lake: Lake, tmp_path: Path) -> None:
    spill = tmp_path / "spill"
    config = Config(lake_uri=big_lake.uri, store_uri=f"parquet://{tmp_path / 'views'}", memory_limit=LIMIT,
                    temp_directory=str(spill), threads=2)
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(len(os.listdir(spill)) if spill.is_dir() else 0)
            done.wait(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with Workbench(config) as wb:
            result = wb.run("order_summary")
    finally:
        done.set()
        watcher.join()
    assert result.record.rows_written == ORDERS
    assert max(seen) > 0, "DuckDB wrote no temp files: the test lake no longer needs to spill"


def test_large_payloads_fit_the_memory_the_replay_needs(tmp_path: Path) -> None:
    """The look at the first 10,000 events' payload fields (do they convert to their declared types?)
    held those events whole and parsed each payload once per field: with 20 kB payloads it needed
    about 700MB where the replay itself needs 250MB, and the run died with DuckDB's traceback."""
    import lake
    from tests.conftest import write_ndjson

    pad = "x" * 20_000
    events = [{"event_id": f"e{n}", "partition_key": f"o{n % 50}", "sequence": n, "event_type": "ItemAdded",
               "event_time": "2026-09-01T00:00:00+00:00",
               "payload": {"customer_id": "c1", "currency": "EUR", "quantity": 1, "unit_price": "1.00", "note": pad}}
              for n in range(1, 4001)]
    target = lake.Lake(tmp_path / "lake").create()
    lake.ingest(target, [write_ndjson(tmp_path / "big.ndjson", events)], stream="orders")
    config = Config(lake_uri=target.uri, store_uri=f"duckdb://{tmp_path}/views.duckdb", memory_limit="400MB",
                    temp_directory=str(tmp_path / "spill"), threads=2)
    with Workbench(config) as wb:
        assert wb.run("order_summary", progress="none").record.rows_written == 50


def test_without_temp_directory_a_scratch_spills_to_the_system_temp_dir_not_the_working_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without [duckdb] temp_directory a Parquet store's scratch DuckDB spilled to .tmp in the working
    directory, which a job started from / may not write (root ignores modes: a file stands there), and
    the run failed."""
    import tempfile

    from lake import scratch

    small = synthetic_lake(tmp_path / "lake", 20_000)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".tmp").write_text("not a folder")
    (tmp_path / "system-temp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "system-temp"))
    # 16MB: the run must spill (12MB is too little even so, at 24MB it does not spill)
    config = Config(lake_uri=small.uri, store_uri=f"parquet://{tmp_path / 'views'}", memory_limit="16MB", threads=1)
    with Workbench(config) as wb:
        assert wb.run("order_timeline").record.rows_written > 0
    # DuckDB removes its spill folder when it closes; this process's owner lock (lake.scratch) stays until it exits
    assert [p.name for p in (tmp_path / "system-temp").iterdir()] == [f"rebuild-owner-{scratch._token()}.lock"]


def test_a_temp_directory_that_cannot_be_made_names_the_setting_not_the_projection(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A spill folder that cannot be made said "projection 'order_timeline' failed", as if its SQL were wrong."""
    import tempfile

    small = synthetic_lake(tmp_path / "lake", 20_000)
    (tmp_path / "system-temp").write_text("not a folder")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "system-temp"))
    config = Config(lake_uri=small.uri, store_uri=f"parquet://{tmp_path / 'views'}", memory_limit="8MB", threads=1)
    with Workbench(config) as wb, pytest.raises(ConfigError, match=r"could not spill to its temp directory "
                                                r".*system-temp/rebuild-spill-.* set \[duckdb\] temp_directory in workbench.toml"):
        wb.run("order_timeline")
