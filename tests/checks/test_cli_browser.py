"""`rebuild check` exit codes, and the HTML report rendered by a real headless Chromium (no network)."""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import time
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


class _DevTools:
    """A headless Chromium driven over its DevTools pipe (commands on its fd 3, replies on its fd 4, each JSON
    message ended by a NUL): no port, no websocket library."""

    def __init__(self, profile: Path) -> None:
        commands, self._to_browser = os.pipe()
        self._from_browser, replies = os.pipe()
        self.pid = os.posix_spawn(CHROMIUM, [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                             "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"],
                                  os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, commands, 3),
                                                            (os.POSIX_SPAWN_DUP2, replies, 4),
                                                            (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0)])
        os.close(commands)
        os.close(replies)
        self._sent, self._buffer = 0, b""

    def call(self, method: str, session: str | None = None, **params: object) -> dict:
        self._sent += 1
        message = {"id": self._sent, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            while b"\0" not in self._buffer:
                ready, _, _ = select.select([self._from_browser], [], [], 60)
                assert ready, f"chromium did not answer {method} within 60 s"
                chunk = os.read(self._from_browser, 1 << 16)
                assert chunk, f"chromium closed its pipe before answering {method}"
                self._buffer += chunk
            line, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(line)
            if reply.get("id") == self._sent:
                assert "error" not in reply, reply
                return reply["result"]

    def evaluate(self, session: str, expression: str) -> object:
        return self.call("Runtime.evaluate", session, expression=expression, returnByValue=True)["result"]["value"]

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except AssertionError:
            os.kill(self.pid, signal.SIGKILL)  # it did not answer: never leave it running
            raise
        finally:
            os.waitpid(self.pid, 0)
            os.close(self._to_browser)
            os.close(self._from_browser)


def test_the_report_prints_whole_in_headless_chromium(scenario, tmp_path):
    """Printed, the verdict's badge was white text on a background the browser leaves out (white on white: no
    verdict on paper); the folded tables (thresholds, each plot's numbers) must print unfolded."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: .ci/run installs it with apt-get")
        pytest.skip("chromium not installed (apt-get install chromium)")
    report = scenario.wb.check("order_summary")
    browser = _DevTools(tmp_path / "profile")
    try:
        target = browser.call("Target.createTarget", url=Path(report.paths["html"]).resolve().as_uri())["targetId"]
        session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        # the new tab's first document is about:blank, whose readyState is "complete" too: wait for the report's
        loaded = "location.protocol === 'file:' && document.readyState === 'complete'"
        for _ in range(600):
            if browser.evaluate(session, loaded):
                break
            time.sleep(0.05)
        else:
            pytest.fail("chromium did not load the report within 30 s")
        hidden = ("[...document.querySelectorAll('td, th, caption, img, li, p')]"
                  ".filter(e => !e.checkVisibility()).length")
        badge = "getComputedStyle(document.querySelector('.badge')).printColorAdjust"
        browser.call("Emulation.setEmulatedMedia", session, media="screen")
        assert browser.evaluate(session, hidden) > 0  # on screen the thresholds and the plots' numbers are folded
        browser.call("Emulation.setEmulatedMedia", session, media="print")
        assert browser.evaluate(session, hidden) == 0
        assert browser.evaluate(session, badge) == "exact"
        assert "row_count_tolerance" in str(browser.evaluate(session, "document.body.innerText"))
    finally:
        browser.close()


#: run by Chromium after the page is laid out: the words of each table cell that wrap over two lines
BROKEN_WORDS = """<script>
const broken = [];
for (const td of document.querySelectorAll('td')) {
  for (const node of td.childNodes) {
    if (node.nodeType !== 3) continue;
    for (const m of node.textContent.matchAll(/[^\\s,;]+/g)) {
      const r = document.createRange(); r.setStart(node, m.index); r.setEnd(node, m.index + m[0].length);
      if (new Set([...r.getClientRects()].map(x => Math.round(x.top))).size > 1) broken.push(m[0]);
    }
  }
}
document.body.dataset.broken = JSON.stringify(broken);
</script>"""


def test_report_cells_break_no_word(scenario, tmp_path):
    """The lineage table's narrow columns broke every word wherever the line ended: 'chan|ged',
    'missed_su|spected', 'PaymentAuthoriz|ed:1', event ids cut in two (a cell may break any word
    rather than grow). A cell now breaks a word only where it is wider than the page allows."""
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: .ci/run installs it with apt-get")
        pytest.skip("chromium not installed (apt-get install chromium)")
    import html as html_text

    report = scenario.wb.check("order_summary")
    page = tmp_path / "measured.html"
    page.write_text(Path(report.paths["html"]).read_text().replace("</body>", BROKEN_WORDS + "</body>"))
    dom = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000", "--dump-dom", page.resolve().as_uri()],
        check=True, capture_output=True, text=True, timeout=120,
    ).stdout
    broken = json.loads(html_text.unescape(re.search(r'data-broken="([^"]*)"', dom).group(1)))
    assert "<td" in dom and [w for w in broken if "-" not in w] == []  # a line may end after a hyphen
