"""The notebooks: stripped in git, public API only, and each runs top to bottom and shows what it claims.

Each notebook is executed in a fresh kernel (nbclient; 05 through the papermill CLI, as cron
would) with its working directory in ``tmp_path``, so its ``.work/`` sample lake lands there.
After the last cell a probe cell prints facts from the kernel's namespace as JSON; the tests
assert on those facts and on the outputs of the cells tagged as key cells (their rendered HTML,
their plots), not only that the notebook ran.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nbformat
import pytest

import lake
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = ROOT / "notebooks"
NAMES = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
PROBE = "__probe__"
#: the project's modules a notebook may import: the packages and their public, documented modules
PUBLIC = {"lake", "lake.audit", "lake.sample", "rebuild", "rebuild.consumer", "rebuild.examples", "checks"}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


# -- static checks ---------------------------------------------------------------------------------
def test_the_five_notebooks_exist() -> None:
    assert NAMES == ["01_explore_the_lake", "02_write_and_rebuild_a_projection", "03_compare_with_live",
                     "04_correct_and_cut_over", "05_backfill_job"]


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebooks_have_no_outputs(name: str) -> None:
    """Outputs stay out of git; clear them with (README, "Working in JupyterLab"):

    jupyter nbconvert --clear-output --inplace --ClearMetadataPreprocessor.enabled=True --ClearMetadataPreprocessor.preserve_cell_metadata_mask=tags --ClearMetadataPreprocessor.preserve_nb_metadata_mask=kernelspec notebooks/*.ipynb
    """
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name}: a cell has outputs: {cell.source[:60]!r}"
            assert cell.execution_count is None, f"{name}: a cell has an execution count: {cell.source[:60]!r}"
        assert "execution" not in cell.metadata, f"{name}: a cell keeps execution timings"


def test_the_readmes_clear_command_leaves_the_committed_notebooks_as_they_are(tmp_path: Path) -> None:
    """The README's command, run as it says before committing, changed all five notebooks: it drops the
    notebook's language_info, which they kept, so following it gave a diff of metadata to commit or undo."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    [command] = re.findall(r"`(jupyter nbconvert --clear-output [^`]*) notebooks/\*\.ipynb`", readme)
    for name in NAMES:
        shutil.copy(NOTEBOOKS / f"{name}.ipynb", tmp_path)
    jupyter = Path(sys.executable).with_name("jupyter")
    args = [str(jupyter), *command.split()[1:], *sorted(str(p) for p in tmp_path.glob("*.ipynb"))]
    subprocess.run(args, check=True, capture_output=True)
    for name in NAMES:
        assert (tmp_path / f"{name}.ipynb").read_bytes() == (NOTEBOOKS / f"{name}.ipynb").read_bytes(), name


def _code(nb: Any) -> str:
    """The notebook's code, with IPython magics and shell lines commented out so ``ast`` parses it."""
    lines = []
    for cell in nb.cells:
        if cell.cell_type == "code":
            lines += [("# " + line) if line.lstrip().startswith(("%", "!")) else line for line in cell.source.splitlines()]
            lines.append("")
    return "\n".join(lines)


def private_uses(source: str) -> list[str]:
    """Imports of private or internal modules and names, and attributes starting with ``_``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            modules = [node.module or ""]
            found += [f"from {node.module} import {a.name}" for a in node.names if a.name.startswith("_")]
        for module in modules:
            parts = module.split(".")
            if any(p.startswith("_") for p in parts):
                found.append(f"import of private module {module}")
            elif parts[0] in ("lake", "rebuild", "checks") and module not in PUBLIC:
                found.append(f"import of internal module {module} (public: {sorted(PUBLIC)})")
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            found.append(f"private attribute .{node.attr} (line {node.lineno})")
    return found


@pytest.mark.parametrize("name", NAMES)
def test_notebooks_use_only_the_public_api(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert private_uses(_code(nb)) == []


def test_the_public_api_scan_catches_private_imports() -> None:
    bad = ("import rebuild.store.base\nfrom rebuild.runner import execute\nfrom lake import _x\n"
           "import lake._hidden\nwb._store.con\nfrom rebuild import Workbench\nimport lake.audit\n")
    assert len(private_uses(bad)) == 5


def test_papermill_parameters_cell() -> None:
    nb = nbformat.read(NOTEBOOKS / "05_backfill_job.ipynb", as_version=4)
    [cell] = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    names = {t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign) for t in node.targets}
    assert {"view", "since", "until", "chunk", "lake_uri", "store_uri", "reports_dir"} <= names


#: Okabe and Ito's palette: its colours are told apart with every kind of colour blindness
OKABE_ITO = {"#000000", "#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7"}


@pytest.mark.parametrize("name", NAMES)
def test_notebook_plots_use_a_colour_blind_safe_palette(name: str) -> None:
    """Plots drew the run checked in red beside steel blue, and a threshold line in red on a blue histogram."""
    from checks.plots import COLOR, HIGHLIGHT

    colours = re.findall(r"color=\"(#[0-9A-Fa-f]{6})\"", _code(nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)))
    assert {c.upper() for c in (*colours, COLOR, HIGHLIGHT)} <= OKABE_ITO, colours


def plots_without_words(nb: Any) -> list[str]:
    """The cells that show a plot and no text or table of its numbers beside it (an image says nothing to a
    screen reader, and a printout of a log-scale histogram says little more)."""
    bare = []
    for cell in nb.cells:
        shown = cell.get("outputs", [])
        if any("image/png" in o.get("data", {}) for o in shown):
            said = [o for o in shown if (o.output_type == "stream" and o.text.strip())
                    or "<table" in o.get("data", {}).get("text/html", "")]
            bare += [] if said else [cell.source[:60]]
    return bare


def unlabelled_tables(page: str) -> list[str]:
    """The workbench's tables in a cell's HTML that lack a caption or a header cell with its scope (a screen
    reader reads a table by its caption and its headers)."""
    tables = re.findall(r"<table.*?</table>", page, flags=re.S)
    assert tables, "no table"
    return [t[:80] for t in tables if "<caption>" not in t or re.search(r"<th(?=[\s>])(?![^>]*\bscope=)", t)]


# -- running them ------------------------------------------------------------------------------------
def execute(name: str, cwd: Path, facts: dict[str, str]) -> tuple[Any, dict[str, Any]]:
    """Run ``name`` top to bottom in ``cwd``, then evaluate ``facts`` (name -> expression) in its kernel."""
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    probe = ", ".join(f"{k!r}: ({v})" for k, v in facts.items())
    nb.cells.append(new_code_cell(f"import json as _j\nprint({PROBE!r} + _j.dumps({{{probe}}}, default=str))"))
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    nb.cells.pop()
    return nb, json.loads(text.split(PROBE, 1)[1])


def outputs(nb: Any, tag: str) -> list[Any]:
    [cell] = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    assert not [o for o in cell.outputs if o.output_type == "error"]
    return list(cell.outputs)


def html(nb: Any, tag: str) -> str:
    return "".join(o.get("data", {}).get("text/html", "") for o in outputs(nb, tag))


def text(nb: Any, tag: str) -> str:
    return "".join(o.get("text", "") for o in outputs(nb, tag) if o.output_type == "stream")


def has_png(nb: Any, tag: str) -> bool:
    return any("image/png" in o.get("data", {}) for o in outputs(nb, tag))


def has_progress_bar(nb: Any, tag: str) -> bool:
    return any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs(nb, tag))


def test_01_explore_the_lake(tmp_path: Path) -> None:
    nb, f = execute("01_explore_the_lake", tmp_path, {
        "sample": "sample.to_dict()", "audit": "report.to_dict()", "key": "key", "missing": "missing",
        "types": "types['event_type'].to_list()", "history": "len(history)", "late": "late",
    })
    s, a = f["sample"], f["audit"]
    # the audit finds exactly the anomalies the sample planted, and the notebook shows both side by side
    assert (a["gaps"], a["conflicts"], a["late"], a["out_of_order"], a["quarantined"]) == (
        s["gaps"], s["conflicts"], s["late"], s["out_of_order"], s["quarantined"])
    assert a["events"] == s["archived"] == 19_997
    assert "OrderPlaced" in f["types"] and len(f["types"]) == 8
    assert "Sample lake" in html(nb, "setup") and unlabelled_tables(html(nb, "setup")) == []
    audit_html = html(nb, "audit")
    assert "lake_version 14" in audit_html and "lateness" in audit_html and "<table" in audit_html
    assert has_png(nb, "lateness-plot") and has_png(nb, "commits-plot") and plots_without_words(nb) == []
    assert f"{f['late']:,} events arrived more than" in text(nb, "lateness-plot")
    assert f"<td>{a['lake_version']}</td>" in html(nb, "commits-plot")  # the table of events per commit
    # the partition with a gap really has one, and the history shows it
    assert len(f["missing"]) >= 1 and f["key"] in text(nb, "history-gap")
    assert f["history"] >= 2


def test_02_write_and_rebuild_a_projection(tmp_path: Path) -> None:
    nb, f = execute("02_write_and_rebuild_a_projection", tmp_path, {
        "module": "order_items.func.__module__", "mode": "plan.mode", "rows": "result.record.rows_written",
        "orders": "sample.orders", "shadow": "len(shadow)", "columns": "shadow.columns",
        "currencies": "sorted(wb.view('payments_by_currency', 'shadow')['currency'])",
        "polars_engine": "polars_plan.engine", "verdict": "check.verdict.verdict",
        "replan": "[replan.mode, replan.reason]", "names": "[p.name for p in wb.projections()]",
    })
    assert f["module"] == "__main__"  # defined in a cell, not in a module
    assert {"order_items", "payments_by_currency", "order_summary"} <= set(f["names"])
    assert f["mode"] == "full" and "<b>Plan</b>" in html(nb, "plan") and "full run" in html(nb, "plan")
    assert unlabelled_tables(html(nb, "plan")) == [] and unlabelled_tables(html(nb, "cutover")) == []
    assert f["rows"] == f["shadow"] == f["orders"]
    assert "<b>Run</b>" in html(nb, "run") and has_progress_bar(nb, "run")
    assert f["columns"] == ["order_id", "customer_id", "items", "goods"]
    assert f["polars_engine"] == "polars" and f["currencies"] == ["EUR", "GBP", "USD"]
    assert f["verdict"] == "pass" and has_png(nb, "shadow-plot") and plots_without_words(nb) == []
    assert f["replan"][0] == "full" and "code changed" in f["replan"][1]


def test_03_compare_with_live(tmp_path: Path) -> None:
    nb, f = execute("03_compare_with_live", tmp_path, {
        "faulted": "sorted(faulted)", "found": "sorted(found)", "changed": "report.diff.changed_rows",
        "verdict": "report.verdict.verdict", "html": "report.paths['html']", "order": "order",
        "suspect": "sorted(suspect)", "lineage": "len(report.lineage)",
        "paid": "report.diff.changed_by_column['paid']",
    })
    assert len(f["faulted"]) == 8  # 5 payments applied twice, 3 orders stalled by a poison record
    assert f["found"] == f["faulted"] and f["changed"] == len(f["faulted"])
    assert f["verdict"] == "fail" and f["lineage"] == 8
    assert "True" in text(nb, "found")
    assert "FAIL" in html(nb, "check").upper() and unlabelled_tables(html(nb, "check")) == []
    assert has_png(nb, "columns-plot") and plots_without_words(nb) == []
    assert f"paid {f['paid']:,}" in text(nb, "columns-plot")  # the plot's numbers in words
    assert f["order"] in html(nb, "wrong-row") and f["suspect"]
    assert Path(f["html"]).is_file() and "cutover refused" in text(nb, "refused")
    screenshot_of_the_diff(nb, tmp_path)


def test_04_correct_and_cut_over(tmp_path: Path) -> None:
    nb, f = execute("04_correct_and_cut_over", tmp_path, {
        "plan": "[plan.mode, plan.kind, plan.method]", "keys": "sorted(late_keys)", "changed": "sorted(changed_keys)",
        "changed_rows": "report.diff.changed_rows", "arrived": "arrived.archived",
        "after": "live_after.filter(pl.col('order_id').is_in(late_keys))['status'].to_list()",
        "restored": "restored.sort('order_id').equals(live_before.sort('order_id'))",
        "forward": "wb.view('order_summary').sort('order_id').equals(live_after.sort('order_id'))",
        "forced": "[r.forced for r in wb.runs('order_summary') if r.run_id == result.run_id]",
    })
    assert f["plan"] == ["targeted", "patch", "by_key"] and "targeted run" in html(nb, "plan")
    assert f["arrived"] == 4 and f["changed"] == f["keys"] and f["changed_rows"] == 4
    assert f["after"] == ["refunded"] * 4  # the cutover made the correction live
    assert f["restored"] is True and f["forward"] is True  # rollback restored the rows; again redid it
    assert f["forced"] == [True]
    assert "refused:" in text(nb, "cutover") and has_progress_bar(nb, "run")


def test_04_correction_cells_run_again_in_the_same_kernel(tmp_path: Path) -> None:
    """An analyst reruns the correction, its check and the cutover cell: a check that now passes
    cuts over without force, and the cell no longer fails with 'has no shadow to cut over'."""
    nb = nbformat.read(NOTEBOOKS / "04_correct_and_cut_over.ipynb", as_version=4)
    client = NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    tagged = {tag: (i, c) for i, c in enumerate(nb.cells) for tag in c.metadata.get("tags", [])}
    with client.setup_kernel():
        for i, cell in enumerate(nb.cells):
            if cell.cell_type == "code":
                client.execute_cell(cell, i)
        for tag in ("run", "check", "cutover"):
            client.execute_cell(tagged[tag][1], tagged[tag][0])  # raises CellExecutionError on an error
    assert "refunded" in "".join(str(o.get("data", {})) for o in outputs(nb, "cutover"))


def test_05_backfill_job_under_papermill(tmp_path: Path) -> None:
    """The cron line of the README, with the sample lake and store under tmp_path, on a server in another zone:
    its log lines said 02:21 (Pacific/Chatham, unmarked, the next day) next to run ids in UTC (12:36)."""
    out, lake_dir, store = tmp_path / "out.ipynb", tmp_path / "lake", tmp_path / "views.duckdb"
    papermill = Path(sys.executable).with_name("papermill")
    command = [str(papermill), str(NOTEBOOKS / "05_backfill_job.ipynb"), str(out), "-k", "python3",
               "-p", "view", "order_summary", "-p", "since", "2026-09-21", "-p", "until", "2026-09-23",
               "-p", "chunk", "12h", "-p", "lake_uri", str(lake_dir), "-p", "store_uri", f"duckdb:///{store}",
               "-p", "reports_dir", str(tmp_path / "reports"), "-p", "demo", "True", "--cwd", str(tmp_path)]
    before = datetime.now(UTC).replace(microsecond=0)
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env={**os.environ, "TZ": "Pacific/Chatham"})
    assert done.returncode == 0, done.stderr[-3000:]
    nb = nbformat.read(out, as_version=4)
    summary = json.loads(text(nb, "summary"))
    logged = "".join(o.get("text", "") for o in outputs(nb, "backfill") if o.output_type == "stream").splitlines()[0]
    assert before <= datetime.strptime(logged[:24], "%Y-%m-%d %H:%M:%S.%fZ").replace(tzinfo=UTC) <= datetime.now(UTC), logged
    assert (summary["since"], summary["until"], summary["chunks"], summary["verdict"]) == ("2026-09-21", "2026-09-23", 4, "pass")
    assert Path(summary["report"]["html"]).parent.parent == tmp_path / "reports"
    # the shadow holds exactly the orders with events in [since, until), read from the lake directly
    from rebuild import Workbench

    with Workbench.open(None, lake_uri=str(lake_dir), store_uri=str(store)) as wb:
        p = wb.projection("order_summary")
        expected = set(wb.events(streams=p.streams, event_types=p.consumes, since=datetime(2026, 9, 21, tzinfo=UTC),
                                 until=datetime(2026, 9, 23, tzinfo=UTC)).aggregate("partition_key").fetchall())
        shadow = set(wb.view("order_summary", "shadow").select("order_id").rows())
    assert shadow == expected and summary["shadow_rows"] == len(expected) > 0
    assert "4/4 chunks" in "".join(o.get("text", "") for o in outputs(nb, "backfill") if o.output_type == "stream")


# -- the rendered diff report in a real browser ---------------------------------------------------------
def screenshot_of_the_diff(nb: Any, tmp_path: Path) -> None:
    """Export the check's cells of the executed notebook 03 to HTML and screenshot it in headless Chromium."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: .ci/run installs it with apt-get")
        return
    from nbconvert import HTMLExporter
    from PIL import Image

    keep = {"check", "found", "columns-plot", "lineage"}
    shown = nbformat.v4.new_notebook(metadata=nb.metadata, cells=[nb.cells[0]] + [
        c for c in nb.cells if keep & set(c.metadata.get("tags", []))])
    exporter = HTMLExporter(template_name="lab")
    exporter.exclude_input_prompt = exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(shown)
    body = re.sub(r"<script[^>]*src=['\"]https?://[^>]*></script>", "", body)  # nothing from the network
    page, shot = tmp_path / "03.html", tmp_path / "03.png"
    page.write_text(body, encoding="utf-8")
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2400",
         page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    keep_shot = os.environ.get("NOTEBOOK_SCREENSHOT")  # a path: keep the PNG to look at it
    if keep_shot:
        shutil.copy(shot, keep_shot)
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2400)
    colours = image.getcolors(maxcolors=1_000_000) or []
    assert len(colours) > 200, "the screenshot looks blank"
    # the diff's tables fill the top of the page with text (dark pixels), not an empty frame
    top = image.crop((0, 0, 1280, 800)).convert("L")
    dark = sum(n for value, n in enumerate(top.histogram()) if value < 128)
    assert dark > 5_000, f"only {dark} dark pixels at the top: the report did not render"


def test_05_backfill_job_names_an_unknown_view(tmp_path: Path) -> None:
    """-p view with a typo fails in the setup cell naming the known views (it was a bare KeyError)."""
    out = tmp_path / "out.ipynb"
    papermill = Path(sys.executable).with_name("papermill")
    command = [str(papermill), str(NOTEBOOKS / "05_backfill_job.ipynb"), str(out), "-k", "python3",
               "-p", "view", "order_sumary", "-p", "lake_uri", str(tmp_path / "lake"),
               "-p", "store_uri", f"duckdb:///{tmp_path / 'views.duckdb'}", "--cwd", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode != 0
    nb = nbformat.read(out, as_version=4)
    [error] = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert error.ename == "ProjectionError" and "unknown projection 'order_sumary'; known: " in error.evalue
    assert "order_summary" in error.evalue and not (tmp_path / "lake").exists()  # nothing built for a typo


def test_05_backfill_job_refuses_a_store_without_live(tmp_path: Path) -> None:
    """-p demo False with a store that has no live view (a typo in store_uri makes a new, empty one)
    failed nowhere: the patch was built, judged 'pass' on expectations and the job exited 0, though
    no cutover can ever apply it. The job now fails at once, naming the store."""
    from lake.sample import generate

    generate(lake.Lake(str(tmp_path / "lake")), events=2_000, days=3, seed=1)
    out, store = tmp_path / "out.ipynb", tmp_path / "typo" / "views.duckdb"
    papermill = Path(sys.executable).with_name("papermill")
    command = [str(papermill), str(NOTEBOOKS / "05_backfill_job.ipynb"), str(out), "-k", "python3",
               "-p", "demo", "False", "-p", "lake_uri", str(tmp_path / "lake"), "-p", "store_uri", f"duckdb:///{store}",
               "-p", "reports_dir", str(tmp_path / "reports"), "--cwd", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert done.returncode != 0
    nb = nbformat.read(out, as_version=4)
    [error] = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert error.ename == "ValueError" and f"no live order_summary in duckdb://{store}" in error.evalue
    assert "check -p store_uri" in error.evalue and not (tmp_path / "reports").exists()
