"""The HTML report read by everyone who decides on a cutover: with a screen reader, without telling colours
apart, printed, opened offline from a ticket. The report is parsed (html.parser), not matched as text."""

from __future__ import annotations

import dataclasses
import json
import re
from html.parser import HTMLParser
from datetime import UTC
from pathlib import Path

from checks import decide
from checks.plots import COLOR, HIGHLIGHT
from checks.report import ALT_BARS, CSS, alt_text

VOID = {"img", "meta", "br", "hr", "link", "input", "source", "col", "wbr"}


class Node:
    def __init__(self, tag: str, attrs: dict[str, str | None], parent: Node | None) -> None:
        self.tag, self.attrs, self.parent, self.children = tag, attrs, parent, []  # type: list[Node | str]

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def all(self, tag: str) -> list[Node]:
        found = []
        for c in self.children:
            if isinstance(c, Node):
                found += [c] if c.tag == tag else []
                found += c.all(tag)
        return found

    def inside(self, tag: str) -> bool:
        return self.parent is not None and (self.parent.tag == tag or self.parent.inside(tag))


class Tree(HTMLParser):
    """The document as nodes; an end tag that does not close the open element fails (malformed HTML)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.root = self.open = Node("#document", {}, None)
        self.feed(text)
        self.close()
        assert self.open is self.root, f"<{self.open.tag}> is never closed"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, dict(attrs), self.open)
        self.open.children.append(node)
        if tag not in VOID:
            self.open = node

    def handle_endtag(self, tag: str) -> None:
        assert self.open.tag == tag, f"</{tag}> closes <{self.open.tag}>"
        self.open = self.open.parent or self.root

    def handle_data(self, data: str) -> None:
        self.open.children.append(data)


def _failing_check(scenario):
    """A check that fails on the diff and on an expectation (a negative total)."""
    scenario.wb.store.con.execute("UPDATE order_summary__shadow SET total = -1 WHERE order_id = 'o-0000001'")
    return scenario.wb.check("order_summary")


def test_the_report_has_a_title_a_language_landmarks_and_headings_in_order(scenario):
    """A screen reader's list of headings and its jump to the main content are how a long report is read."""
    report = _failing_check(scenario)
    text = Path(report.paths["html"]).read_text()
    page = Tree(text).root
    (html,) = page.all("html")
    assert html.attrs.get("lang") == "en"
    assert page.all("title")[0].text() == f"Check of order_summary run {report.run_id}: FAIL"  # the verdict first heard
    (main,) = page.all("main")
    assert [h.tag for h in main.all("h1")] == ["h1"] and not [h for h in page.all("h2") if not h.inside("main")]
    levels = [int(t[1]) for t in re.findall(r"<(h[1-6])\b", text)]
    assert levels[0] == 1 and all(b <= a + 1 for a, b in zip(levels, levels[1:], strict=False)), levels
    (audit,) = [s for s in main.all("section") if s.attrs.get("id") == "audit"]
    assert [h.text() for h in audit.all("h3")] == ["stream orders"]  # its notes, found by a heading


def test_every_table_says_what_it_holds_and_heads_its_rows_or_columns(scenario):
    """The tables had no caption: the diff's two tables and the audit's two followed one heading each, so a
    screen reader announced 'table, 8 rows' with nothing to tell them apart."""
    page = Tree(Path(_failing_check(scenario).paths["html"]).read_text()).root
    tables = page.all("table")
    assert len(tables) >= 12
    for table in tables:
        captions = [c for c in table.children if isinstance(c, Node) and c.tag == "caption"]
        assert len(captions) == 1 and captions[0].text().strip(), table.text()[:80]
        heads = table.all("th")
        assert heads and all(th.attrs.get("scope") in ("col", "row") for th in heads), captions[0].text()
    captions = {t.all("caption")[0].text() for t in tables}
    assert {"rows compared", "columns, key and scope compared", "events per stream", "events per event type"} <= captions
    # a row of a sample or of the lineage is headed by its key: a screen reader says it beside each of its cells
    keyed = [t for s in page.all("section") if s.attrs.get("id") in ("samples", "lineage") for t in s.all("table")]
    assert len(keyed) == 2
    for table in keyed:
        for row in table.all("tbody")[0].all("tr"):
            first = next(c for c in row.children if isinstance(c, Node))
            assert first.tag == "th" and first.attrs.get("scope") == "row" and "o-00000" in first.text()


def test_pass_and_fail_are_said_in_words_not_by_colour_alone(scenario):
    """An expectation's result was the cell 'True' or 'False'; one that only warns (thresholds expectations =
    "warn") read 'False' like one that fails the check."""
    report = _failing_check(scenario)
    page = Tree(Path(report.paths["html"]).read_text()).root
    (badge,) = [s for s in page.all("span") if "badge" in (s.attrs.get("class") or "")]
    assert badge.text() == "FAIL" and not report.passed
    results = _results(page)
    assert results["expect_column_values_to_be_between total"] == "FAIL"
    assert results["expect_column_values_to_not_be_null order_id"] == "pass"
    assert set(results.values()) == {"pass", "FAIL"}
    warned = dataclasses.replace(report, verdict=decide(report.diff, report.expectations, {"expectations": "warn"}))
    results = _results(Tree(warned.to_html()).root)
    assert results["expect_column_values_to_be_between total"] == "warn (reported only)"
    assert set(results.values()) == {"pass", "warn (reported only)"}
    shown = Tree(report.expectations._repr_html_()).root  # in a notebook
    assert "FAIL" in [td.text() for td in shown.all("td")] and "False" not in shown.text()


def _results(page: Node) -> dict[str, str]:
    """``expectation column`` -> its result cell, from the expectations section's table."""
    (section,) = [s for s in page.all("section") if s.attrs.get("id") == "expectations"]
    (table,) = section.all("table")
    head = [th.text() for th in table.all("th")]
    rows = [[td.text() for td in tr.all("td")] for tr in table.all("tr")[1:]]
    return {f"{r[head.index('expectation')]} {r[head.index('column')]}": r[head.index("result")] for r in rows}


def test_every_plot_states_its_numbers_in_its_alt_text(scenario):
    """The alt text was the plot's title and 'a bar chart, its numbers in the table under it', a table folded
    away: a screen reader heard what the plot was about, not what it showed."""
    report = _failing_check(scenario)
    page = Tree(Path(report.paths["html"]).read_text()).root
    data = json.loads(Path(report.paths["json"]).read_text())["plots"]
    images = page.all("img")
    assert len(images) == sum(1 for image in report.plots.values() if image) >= 3
    for image in images:
        alt = image.attrs.get("alt") or ""
        (shown,) = [d for d in data.values() if alt.startswith(d["title"] + ":")]
        assert 0 < len(shown["values"]) <= ALT_BARS
        for label, value in shown["values"].items():
            assert f"{label} {round(value, 3):,}" in alt, (label, alt)
        assert image.attrs["src"].startswith("data:image/png;base64,")  # offline: nothing to fetch


def test_a_plot_of_many_bars_states_its_range_and_extremes():
    days = {f"2026-09-{d:02}": (d * 7) % 13 * 1000 for d in range(1, 31)}
    alt = alt_text({"title": "Differing keys per day", "label": "day (UTC)", "unit": "keys", "values": days})
    assert alt == ("Differing keys per day: a bar chart of keys per day (UTC), 30 bars from 2026-09-01 to 2026-09-30; "
                   "the highest 12,000 keys (2026-09-11), the lowest 0 keys (2026-09-13); every bar in the table of "
                   "its numbers.")


def test_the_report_needs_no_network_and_no_script(scenario):
    text = Path(_failing_check(scenario).paths["html"]).read_text()
    page = Tree(text).root
    assert not page.all("script") and not page.all("link") and not page.all("iframe")
    for tag in ("img", "a", "source"):
        for node in page.all(tag):
            for attr in ("src", "href"):
                assert (node.attrs.get(attr) or "data:").startswith(("data:", "#")), node.attrs
    assert not re.search(r"url\(|@import|@font-face", CSS)


def _contrast(one: str, other: str) -> float:
    """WCAG 2 contrast ratio of two #rgb or #rrggbb colours."""
    def luminance(colour: str) -> float:
        hex_ = colour.lstrip("#")
        hex_ = "".join(c * 2 for c in hex_) if len(hex_) == 3 else hex_
        channels = [int(hex_[i:i + 2], 16) / 255 for i in (0, 2, 4)]
        r, g, b = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    high, low = sorted((luminance(one), luminance(other)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_text_colours_keep_wcag_aa_contrast(scenario):
    """'none', 'no live view' and 'not run' were #888 on white (3.5:1, AA asks 4.5:1)."""
    rules = re.findall(r"([^{}]+)\{([^{}]*)\}", CSS.replace("@media print{", ""))
    checked = 0
    for selector, body in rules:
        colour = re.search(r"(?:^|;)color:(#[0-9a-fA-F]{3,6})", body)
        if colour and selector.strip() != ".badge":  # white on .pass or .fail: below
            background = re.search(r"background:(#[0-9a-fA-F]{3,6})", body)
            assert _contrast(colour.group(1), background.group(1) if background else "#fff") >= 4.5, selector
            checked += 1
    for selector in (".pass", ".fail"):  # the badge's backgrounds under its white text
        (background,) = re.findall(re.escape(selector) + r"\{background:(#[0-9a-fA-F]{6})\}", CSS)
        assert _contrast("#fff", background) >= 4.5, selector
    page = Tree(_failing_check(scenario).to_html()).root
    (badge,) = [s for s in page.all("span") if "badge" in (s.attrs.get("class") or "")]
    style = dict(p.split(":", 1) for p in (badge.attrs.get("style") or "").split(";") if p)
    assert _contrast(style["color"], style["background"]) >= 4.5 and checked >= 4
    for bar in (COLOR, HIGHLIGHT):  # bars are graphics: 3:1 against the white plot
        assert _contrast(bar, "#fff") >= 3, bar



def test_every_time_in_the_report_is_written_one_way(scenario):
    """The head said '2026-09-01 03:00:00 UTC', the lineage '2026-09-01T23:00:00' and the run's record
    '2026-09-01 03:00:00.501004+00:00': three ways to write a time in one page a person compares across."""
    report = _failing_check(scenario)
    text = re.sub(r"base64,[A-Za-z0-9+/=]+", "", Path(report.paths["html"]).read_text())
    times = re.findall(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d[^ <]*", text)
    assert len(times) > 10 and all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", t) for t in times), set(times)
    (run,) = [s for s in Tree(text).root.all("section") if s.attrs.get("id") == "run"]
    cells = {tr.all("th")[0].text(): tr.all("td")[0].text() for tr in run.all("tr")}
    assert cells["finished_at"] == report.run["finished_at"].astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
