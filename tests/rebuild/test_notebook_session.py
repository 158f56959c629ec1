"""One kernel open all day: the analyst edits a projection module between calls of one Workbench."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

import lake
from rebuild import Config, PlanOutdated, ProjectionError, StoreError, Workbench
from rebuild.projection import REGISTRY
from tests.conftest import write_ndjson
from tests.orders import order_events

MODULE = '''from rebuild import projection


@projection(name="{name}", key="order_id", consumes="ItemAdded")
def {name}():
    return "SELECT partition_key AS order_id, {value} AS n FROM events GROUP BY ALL"
'''


@pytest.fixture
def session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterable[Callable[[str], Workbench]]:
    """``session(module)``: a Workbench whose projections are ``module`` (a .py path or a dotted name
    found in tmp_path), registered in the global registry as a notebook's are, and taken out after."""
    monkeypatch.setattr(REGISTRY, "_items", dict(REGISTRY._items))  # other tests list the registered ones
    monkeypatch.syspath_prepend(str(tmp_path))
    target = lake.Lake(tmp_path / "lake").create()
    events = [e for o in range(1, 4) for e in order_events(o, customer=o % 2, items=2)]
    lake.ingest(target, [write_ndjson(tmp_path / "in.ndjson", events)], stream="orders")
    opened: list[Workbench] = []

    def open_(module: str) -> Workbench:
        config = Config(lake_uri=target.uri, store_uri=f"duckdb://{tmp_path}/views.duckdb",
                        projection_modules=(module,), reports_dir=str(tmp_path / "reports"))
        opened.append(Workbench(config))
        return opened[-1]

    yield open_
    for wb in opened:
        wb.close()


def _total(wb: Workbench, view: str) -> int:
    return int(wb.view(view, "shadow")["n"].sum())


@pytest.mark.parametrize("as_name", [False, True], ids=["py-file", "dotted-name"])
def test_a_module_edited_while_the_kernel_runs_is_imported_again(tmp_path: Path, session: Callable[[str], Workbench],
                                                                 as_name: bool) -> None:
    """Before, the next run replayed the code imported in the morning but recorded the fingerprint of the
    file as edited (inspect reads the file again): the plan said "full (code changed)", the shadow held
    the old code's rows, and once cut over live passed for the new code's, so its rows never changed."""
    name = f"edited_{'dotted' if as_name else 'file'}"
    path = tmp_path / f"{name}_module.py"
    path.write_text(MODULE.format(name=name, value="count(*)"))
    wb = session(f"{name}_module" if as_name else str(path))
    wb.run(name, progress="none")
    wb.cutover(name, force=True)
    assert int(wb.view(name)["n"].sum()) == 6  # 3 orders of 2 items
    stale_plan = wb.plan(name)

    path.write_text(MODULE.format(name=name, value="count(*) * 10"))  # saved in the editor
    plan = wb.plan(name)
    assert plan.mode == "full" and plan.fingerprint == wb.projection(name).fingerprint != stale_plan.fingerprint
    with pytest.raises(PlanOutdated, match="changed since this plan was made"):
        wb.execute(stale_plan, "none")
    result = wb.run(name, progress="none")
    assert _total(wb, name) == 60  # the code the file holds now
    assert result.record.fingerprint == wb.projection(name).fingerprint

    path.write_text(MODULE.format(name=name, value="count(*) * 10") + "\n# a comment\n")  # the same logic
    assert wb.plan(name).fingerprint == result.record.fingerprint


def test_an_edit_that_breaks_the_module_is_an_error_not_the_old_code(tmp_path: Path,
                                                                     session: Callable[[str], Workbench]) -> None:
    path = tmp_path / "broken_module.py"
    path.write_text(MODULE.format(name="breaks", value="count(*)") + MODULE.format(name="goes", value="1"))
    wb = session(str(path))
    wb.run("breaks", progress="none")
    path.write_text(MODULE.format(name="breaks", value="count(*) * 10") + "\nratio = 1 / 0\n")  # saved half done
    for _ in range(2):  # every call until it is fixed, not the projection imported before
        with pytest.raises(ProjectionError, match=re.escape(f"projection module '{path}' failed while it was "
                                                            "imported: ZeroDivisionError")):
            wb.run("breaks", progress="none")
    path.write_text(MODULE.format(name="breaks", value="count(*) * 10"))  # fixed; "goes" deleted from it
    wb.run("breaks", progress="none")
    assert _total(wb, "breaks") == 60
    with pytest.raises(ProjectionError, match="unknown projection 'goes'"):
        wb.plan("goes")
    assert "goes" not in {p.name for p in wb.projections()}


def test_a_store_file_held_by_an_idle_notebook_kernel_says_to_close_its_workbench(tmp_path: Path) -> None:
    """Before, the job (or the second notebook) was told to wait for the kernel 'to finish', which an idle
    kernel never does, and to look at `rebuild ls`, which the same lock refuses."""
    from jupyter_client.manager import start_new_kernel

    target = lake.Lake(tmp_path / "lake").create()
    config = Config(lake_uri=target.uri, store_uri=f"duckdb://{tmp_path}/views.duckdb", projection_modules=())
    with Workbench(config) as wb:
        wb.store  # the store file exists
    manager, kernel = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        opened = kernel.execute_interactive(
            "from rebuild import Config, Workbench\n"
            f"wb = Workbench(Config(lake_uri={target.uri!r}, store_uri={config.store_uri!r}, projection_modules=()))\n"
            "wb.ls()", timeout=60)
        assert opened["content"]["status"] == "ok"
        with pytest.raises(StoreError, match=rf"PID {manager.provisioner.pid} is a notebook's kernel: a Workbench there "
                                             r"keeps its store file open .* Run wb.close\(\) in that notebook"):
            Workbench(config).store
        kernel.execute_interactive("wb.close()", timeout=60)
        with Workbench(config) as wb:
            assert wb.store.views() == []
    finally:
        kernel.stop_channels()
        manager.shutdown_kernel(now=True)


JOB = '''import logging, sys
{setup}
from rebuild import Config, Workbench, projection

@projection(name="counted", key="order_id")
def counted():
    return "SELECT partition_key AS order_id, count(*) AS n FROM events GROUP BY ALL"

with Workbench(Config(lake_uri=sys.argv[1], store_uri=sys.argv[2], projection_modules=())) as wb:
    wb.run("counted", progress="log")
'''


@pytest.mark.parametrize("setup", ["", "logging.basicConfig(level=logging.INFO)"], ids=["no-logging", "basic-config"])
def test_progress_log_shows_its_lines_where_no_logging_is_set_up(tmp_path: Path, setup: str) -> None:
    """A notebook or a Python job that set up no logging got nothing from progress="log" (Python's last
    resort shows warnings only), and from "auto" in a job, whose log said nothing about a run. Its lines go
    to stderr then, stamped in UTC as the CLI's; where logging is set up they go there, each line once."""
    target = lake.Lake(tmp_path / "lake").create()
    lake.ingest(target, [write_ndjson(tmp_path / "in.ndjson", order_events(1))], stream="orders")
    script = tmp_path / "job.py"
    script.write_text(JOB.format(setup=setup))
    done = subprocess.run([sys.executable, str(script), target.uri, f"duckdb://{tmp_path}/views.duckdb"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "counted full" in line]
    assert len(lines) == 4 and "steps to do" in lines[0] and "done in" in lines[-1], done.stderr
    if not setup:
        assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}Z INFO rebuild.progress: ", line) for line in lines)


def test_ls_and_runs_show_as_tables_in_a_notebook(tmp_path: Path, session: Callable[[str], Workbench]) -> None:
    """They showed as their records' reprs run together: a run record's plan is 1.5 KB of JSON, so 20 runs
    filled the cell with 30 KB of text. They are still lists (of the same records) to code."""
    path = tmp_path / "listed_module.py"
    path.write_text(MODULE.format(name="listed", value="count(*)"))
    wb = session(str(path))
    assert "<p class='empty'>none</p>" in wb.runs()._repr_html_()  # type: ignore[attr-defined]
    for _ in range(2):
        wb.run("listed", full=True, progress="none")
    runs, states = wb.runs("listed"), wb.ls()
    assert isinstance(runs, list) and [r.view for r in runs] == ["listed", "listed"]
    shown = runs._repr_html_()  # type: ignore[attr-defined]
    assert shown.count("<tr>") == 3 and all(r.run_id in shown for r in runs)
    assert "<th scope='col'>plan</th>" not in shown and runs[0].plan not in shown
    assert "<th scope='col'>fingerprint</th>" in shown and "<caption>the runs of listed, newest first</caption>" in shown
    assert f"<td>{runs[0].rows_written:,}</td>" in shown  # counts as the report writes them
    table = states._repr_html_()  # type: ignore[attr-defined]
    assert "<th scope='col'>versions_behind</th>" in table and "<td>listed</td>" in table
    assert "<th scope='col'>projection_version</th>" not in table  # JSON's alias of version: one column is enough
    assert states[0]._repr_html_().count("<th scope='col'>name</th>") == 1 and "<caption>" in table
    assert table in wb._repr_html_()
