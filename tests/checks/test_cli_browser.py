"""`rebuild check` exit codes, and the HTML report rendered by a real headless Chromium (no network)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from rebuild.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _args(scenario) -> list[str]:
    c = scenario.wb.config
    path = c.store_uri.removeprefix("duckdb://")
    return ["--lake", c.lake_uri, "--store", f"duckdb:///{path}"]  # duckdb:////abs/path


def test_cli_exit_codes(scenario, capsys, monkeypatch):
    monkeypatch.chdir(scenario.root)  # the reports folder is relative to the working directory
    scenario.wb.close()  # the CLI opens the store file itself
    assert main([*_args(scenario), "check", "order_summary", "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["verdict"] == "fail" and data["changed_rows"] == 6 and Path(data["report"]["html"]).is_file()
    assert main([*_args(scenario), "cutover", "order_summary", "--force"]) == 0
    assert main([*_args(scenario), "run", "order_summary", "--full", "--progress", "none"]) == 0
    capsys.readouterr()
    assert main([*_args(scenario), "check", "order_summary"]) == 0
    assert "PASS" in capsys.readouterr().out
    assert main([*_args(scenario), "check", "order_summary", "--tolerance", "total"]) == 2


def test_report_renders_in_headless_chromium(scenario, tmp_path):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: .ci/run installs it with apt-get")
        pytest.skip("chromium not installed (apt-get install chromium)")
    report = scenario.wb.check("order_summary")
    html = Path(report.paths["html"])
    assert not re.search(r"""(src|href)\s*=\s*['"]?\s*https?:""", html.read_text())
    shot = tmp_path / "report.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1280,2000",
         html.resolve().as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    assert shot.is_file()
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2000)
    colours = image.getcolors(maxcolors=1_000_000) or []
    assert len(colours) > 200, "the screenshot looks blank"
    shutil.copy(shot, Path(os.environ.get("CHECKS_SCREENSHOT", tmp_path / "copy.png")))


def test_cli_check_prints_that_the_differing_keys_are_a_part(scenario, capsys, monkeypatch):
    """The diff's notes (only a part of the differing keys kept) were in the HTML's diff section only."""
    import functools

    import checks.suite

    monkeypatch.chdir(scenario.root)
    scenario.wb.close()
    monkeypatch.setattr(checks.suite, "compare", functools.partial(checks.suite.compare, max_keys=2))
    assert main([*_args(scenario), "check", "order_summary"]) == 1
    out = capsys.readouterr().out
    assert "note: 6 differing rows: differing_keys holds 2 of their keys" in out
