"""An analyst's own projections and their mistakes: each is a clear error naming the projection
(exit 2 from the CLI), never a traceback, and never a view silently wrong."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

import lake
from rebuild import Config, ProjectionError, Workbench, projection
from rebuild.cli import main
from rebuild.projection import Registry, load_modules
from tests.conftest import write_ndjson
from tests.orders import order_events


@pytest.fixture
def registry() -> Registry:
    return Registry()  # not the global one: other tests list the registered projections


@pytest.fixture
def wb(tmp_path: Path, registry: Registry) -> Iterable[Workbench]:
    target = lake.Lake(tmp_path / "lake").create()
    events = [e for o in range(1, 6) for e in order_events(o, customer=o % 2)]
    lake.ingest(target, [write_ndjson(tmp_path / "in.ndjson", events)], stream="orders")
    config = Config(lake_uri=target.uri, store_uri=f"duckdb://{tmp_path}/views.duckdb", projection_modules=())
    with Workbench(config, registry=registry) as bench:
        yield bench


def _raises_zero_division(events: Any) -> Any:
    return 1 / 0


@pytest.mark.parametrize("engine", ["duckdb", "polars", "python"])
def test_a_projection_that_raises_is_an_error_naming_it_and_its_line(wb: Workbench, registry: Registry,
                                                                     engine: str) -> None:
    func = (lambda key, events: _raises_zero_division(events)) if engine == "python" else _raises_zero_division
    projection(name="raises", key="order_id", engine=engine, registry=registry)(func)  # type: ignore[arg-type]
    with pytest.raises(ProjectionError, match=r"projection 'raises' failed: ZeroDivisionError") as failed:
        wb.run("raises", progress="none")
    if engine != "python":  # a fold's error comes back from another process, without its frames
        assert f"{__file__}:" in str(failed.value) and "_raises_zero_division" in str(failed.value)
    assert wb.store.runs() == []


def test_a_module_that_fails_while_imported_is_an_error_naming_it(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    module = tmp_path / "mine.py"
    module.write_text("import math\n\nratio = 1 / 0\n")
    with pytest.raises(ProjectionError, match=r"projection module .*mine.py' failed while it was imported: "
                                              r"ZeroDivisionError: division by zero \(at .*mine.py:3"):
        load_modules([str(module)])
    config = tmp_path / "workbench.toml"
    config.write_text(f'[lake]\nuri = "lake"\n[store]\nuri = "duckdb://v.duckdb"\n[projections]\nmodules = ["{module}"]\n')
    assert main(["--config", str(config), "--json", "ls"]) == 2
    assert '"kind": "ProjectionError"' in capsys.readouterr().out
