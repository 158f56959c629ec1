"""The validation report: one self-contained HTML file (inline CSS and PNG plots) plus JSON.

``reports/VIEW/RUN_ID.html`` and ``reports/VIEW/RUN_ID.json``; the HTML loads nothing from the
network. Section ids are stable (the snapshot test reads them): see :data:`SECTIONS`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from checks import plots
from checks.causes import Cause, causes
from checks.diff import DiffResult
from checks.errors import ReportError
from checks.expect import ExpectationsResult
from checks.html import esc, key_text, number, pairs, section, table
from checks.lineage import KeyLineage
from checks.verdict import Verdict, columns_text, shown
from lake.encode import dumps
from lake.faults import point

__all__ = ["SECTIONS", "CheckReport"]
CHANGES, EXPLAINED = "changes (live → rebuilt)", "explained by (live - rebuilt: event, field, reading)"
SECTIONS = ("verdict", "diff", "columns", "plots", "samples", "lineage", "expectations", "audit", "run")
CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0;font-size:12.5px} th,td{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
thead th{background:#f3f5f8} tbody th{font-weight:400} table.pairs th{background:#f8f9fb;font-weight:600} caption{text-align:left;color:#444;padding:2px 0;white-space:nowrap}
.badge{display:inline-block;padding:4px 14px;border-radius:4px;color:#fff;font-weight:700;font-size:16px}
.pass{background:#1e7d32} .fail{background:#c0392b} .empty{color:#666;font-style:italic}
.plots img{max-width:100%;border:1px solid #eee;margin:6px 0} .note{color:#666} code{background:#f4f4f4;padding:0 3px}
section{overflow-x:auto} td{overflow-wrap:break-word;min-width:4ch} figure{margin:8px 0} summary{cursor:pointer}
@media print{body{max-width:none;margin:0;padding:0} section{overflow:visible} table{font-size:10px}
 .badge{print-color-adjust:exact;-webkit-print-color-adjust:exact;border:2px solid #000}
 details::details-content{content-visibility:visible;display:block} h2,h3{break-after:avoid} tr,figure{break-inside:avoid}}
"""


@dataclass(frozen=True)
class CheckReport:
    """Everything one check found about one shadow run, and its verdict."""

    view: str
    run_id: str
    live: str | None
    rebuilt: str
    verdict: Verdict
    diff: DiffResult | None
    lineage: tuple[KeyLineage, ...]
    expectations: ExpectationsResult | None
    run: dict[str, Any]
    audit: dict[str, Any] | None = None
    audit_html: str | None = None
    notes: tuple[str, ...] = ()
    plots: dict[str, str | None] = field(default_factory=dict)
    plot_data: dict[str, dict[str, Any]] = field(default_factory=dict)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    paths: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.verdict.passed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; ``verdict`` and the diff's counts are at the top for scripts; sample values longer
        than ``JSON_CHARS`` are cut (``diff.samples_cut`` names each, and a note says so)."""
        d = self.diff
        diff, notes = (_json_diff(d) if d else None), list(self.notes)
        if diff and (cut := diff["samples_cut"]["values"]):
            notes.append(f"{len(cut):,} sample values longer than {JSON_CHARS:,} characters are cut in this JSON, "
                         "marked … where cut and ending with their length in characters (diff.samples_cut names "
                         "them); the views hold them whole")
        return {
            "verdict": self.verdict.verdict, "reasons": list(self.verdict.reasons), "view": self.view,
            "run_id": self.run_id, "live": self.live, "rebuilt": self.rebuilt,
            "created_at": self.created_at.isoformat(),
            "rows_live": d.rows_live if d else None, "rows_rebuilt": d.rows_rebuilt if d else None,
            "only_in_live": d.only_in_live if d else None, "only_in_rebuilt": d.only_in_rebuilt if d else None,
            "changed_rows": d.changed_rows if d else None, "changed_by_column": d.changed_by_column if d else None,
            "causes": [c.to_dict() for c in self.causes_found()],
            "thresholds": self.verdict.thresholds, "verdict_notes": list(self.verdict.notes), "cutover": self.cutover(),
            "diff": diff, "lineage": [k.to_dict() for k in self.lineage],
            "expectations": self.expectations.to_dict() if self.expectations else None,
            "next": self.next_step(), "run": self.run, "audit": self.audit, "notes": notes,
            "plots": self.plot_data, "report": self.paths,
        }

    def summary(self) -> str:
        head = f"{self.view} run {self.run_id}: {self.verdict.verdict.upper()}"
        return head + "".join(f"\n  - {r}" for r in self.verdict.reasons)

    def write(self, reports_dir: str | Path, name: str | None = None) -> CheckReport:
        """Write ``VIEW/NAME.html`` and ``.json`` under ``reports_dir`` (NAME: the run id); returns the
        report with paths."""
        folder = Path(reports_dir) / self.view
        name = name or self.run_id
        try:
            folder.mkdir(parents=True, exist_ok=True)
            html_path, json_path = folder / f"{name}.html", folder / f"{name}.json"
            done = CheckReport(**{**self.__dict__, "paths": {"html": str(html_path), "json": str(json_path)}})
            write_atomically(html_path, done.to_html())
            point("check.after_html")
            write_atomically(json_path, dumps(done.to_dict(), indent=1))
        except OSError as exc:
            raise ReportError(f"cannot write the report under {folder}: {exc}; let this user write there, or set "
                              "[reports] dir in workbench.toml to a folder it may write",
                              path=str(folder)) from exc
        return done

    def to_html(self) -> str:
        """The whole report as one HTML document (no external references)."""
        body = "".join([
            section("verdict", "Verdict", self._verdict_html()),
            section("diff", "Rebuilt vs live", self._diff_html()),
            section("columns", "Changes per column", self._columns_html()),
            section("plots", "Plots", self._plots_html()),
            section("samples", "Samples", self._samples_html()),
            section("lineage", "Lineage of sampled differences", self._lineage_html()),
            section("expectations", "Expectations", self._expectations_html()),
            section("audit", "Lake audit of the consumed streams", self._audit_html()),
            section("run", "Run", self._run_html()),
        ])
        title = f"Check of {self.view} run {self.run_id}"
        return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
                "<meta name='viewport' content='width=device-width, initial-scale=1'>"
                # the verdict in the title too: the first words a screen reader says, and a tab's or a ticket's name
                f"<title>{esc(title)}: {self.verdict.verdict.upper()}</title><style>{CSS}</style></head>"
                f"<body><main><h1>{esc(title)}</h1>"
                f"<p>{self._compared_html()}</p>{body}</main></body></html>")

    def _repr_html_(self) -> str:
        return self._verdict_html() + self._diff_html()

    def _compared_html(self) -> str:
        """What was compared with what, in one sentence: the run (its mode, projection version and code,
        the lake and the lake_version it read) and live, and when the report was made (UTC)."""
        r = self.run
        made = f"Report made {_utc(self.created_at)}."
        if r:
            how = (f"a {esc(r.get('mode'))} run of projection version {esc(r.get('projection_version'))} "
                   f"(code {esc(r.get('fingerprint'))}) that read the lake {_code(self._lake())} up to lake_version "
                   f"{esc(number(r.get('lake_version')))} and finished {_utc(r.get('finished_at'))}")
            rebuilt = f"The rebuilt view {_code(self.rebuilt)} (run {esc(self.run_id)}: {how})"
        else:
            rebuilt = f"The rebuilt view {_code(self.rebuilt)} (run {esc(self.run_id)})"
        if self.diff is None:
            return f"{rebuilt} was checked on its own: there is no live view to compare it with. {made}"
        scope = " (its rows in the patch's scope)" if self.diff.scope is not None else ""
        return f"{rebuilt} was compared with live {_code(self.live)}{scope}. {made}"

    def _patch(self) -> bool:
        """Whether the rebuilt view is a patch (a targeted run's or a backfill's), which only live can take."""
        return (self.run or {}).get("kind") == "patch"

    def _lake(self) -> str | None:
        return (self.audit or {}).get("lake")

    # -- sections ------------------------------------------------------------------------------
    def _verdict_html(self) -> str:
        v = self.verdict
        reasons = "".join(f"<li>{esc(r, shorten=False)}</li>" for r in v.reasons) or "<li>every threshold met</li>"
        notes = "".join(f"<li class='note'>{esc(n, shorten=False)}</li>" for n in (*v.notes, *self.notes))
        colour = "#1e7d32" if v.verdict == "pass" else "#c0392b"  # inline: a notebook has no report CSS
        badge = (f"<span class='badge {v.verdict}' style='background:{colour};color:#fff;padding:2px 8px;"
                 f"border-radius:4px;font-weight:bold'>{v.verdict.upper()}</span>")
        why = "".join(f"<li>{esc(line, shorten=False)}</li>" for line in self.why()[1:])
        why = why and (f"<p><b>Why</b>, from {esc(self.why()[0])} (the lineage lists their events):</p>"
                       f"<ul class='why'>{why}</ul>")
        return (f"<p>{badge}</p><ul>{reasons}{notes}</ul>{why}<p><b>Cutover</b>: {esc(self.cutover(), shorten=False)}</p>"
                f"<p><b>Next step</b>: {esc(self.next_step(), shorten=False)}</p>"
                f"<details><summary>thresholds</summary>{pairs(shown(v.thresholds), caption='the thresholds this verdict applies')}"
                "</details>")

    def causes_found(self) -> list[Cause]:
        """Why the views differ, by what the sampled differing keys' events (and changed values) have in common."""
        return causes(self.lineage, self.diff.samples.get("changed", []) if self.diff is not None else [])

    def why(self) -> list[str]:
        """What the sampled differing keys' events have in common, a heading then a line per cause, the most
        common first (``[]`` with no key sampled): the verdict's answer to why the views differ."""
        d, found = self.diff, self.causes_found()
        if not found or d is None:
            return []
        differing = d.changed_rows + d.only_in_live + d.only_in_rebuilt
        head = f"the events of {len(self.lineage):,} sampled of the {differing:,} differing keys"
        return [head, *(c.text(len(self.lineage)) for c in found)]

    def report_files(self) -> dict[str, str | None]:
        """Where the report was written, as every ``--json`` object names it (``RunRecord.report_files``)."""
        return {"report_html": self.paths.get("html"), "report_json": self.paths.get("json")}

    def next_step(self) -> str:
        """The step a person takes after reading this verdict (the CLI prints it last)."""
        d, view = self.diff, self.view
        if self.live not in (None, view):
            return f"this verdict compared with {self.live}; `rebuild check {view}` compares with live before a cutover"
        if d is None and self._patch():
            return (f"this patch cannot be cut over: there is no live {view} to apply it to; `rebuild run {view} "
                    "--full` (it replays every event, this correction too), check and cut over that")
        if self.passed and d is not None and d.scope is not None and d.rows_live == d.rows_rebuilt == 0:
            return (f"`rebuild cutover {view}`: the patch changes no row, so live only takes its lake position "
                    f"(`rebuild rollback {view}` still undoes the cutover before it)")
        if self.passed:
            return f"`rebuild cutover {view}` (and `rebuild rollback {view}` to undo it)"
        if (self.run or {}).get("skipped_files"):  # the differences may be the left-out events: no --force
            return (f"the run left out unreadable lake files (see the notes), whose events the differences may be: "
                    f"restore them (`rebuild lake audit` lists them) and `rebuild run {view}` again before a cutover")
        if d is not None and d.scope is not None and (d.added or d.removed):  # cutover refuses it, also forced
            return (f"this patch cannot be cut over, also not with --force: it changes live's rows, and its columns "
                    f"differ from live's ({_columns_changed(d, 'added', 'removed', 'retyped')}); to change live's columns, "
                    f"`rebuild run {view} --full`, check and cut over that")
        empty = [c for c, v in d.added_values.items() if v.get("values") == 0] if d is not None else []
        if d is not None and empty and d.differences == len(d.added) and len(self.verdict.reasons) == 1:
            return (f"the rebuilt view equals live in every column live has, but the {columns_text(empty)} it adds {'are' if len(empty) > 1 else 'is'} "
                    f"NULL in every row: fix the projection and `rebuild run {view} --full` again, or, if NULL is what "
                    f"they should hold, `rebuild cutover {view} --force`")
        if d is not None and d.added and d.differences == len(d.added) and len(self.verdict.reasons) == 1:
            return (f"the rebuilt view equals live in every column live has and adds {columns_text(d.added)}, computed from "
                    f"the whole history: no data of live is wrong; `rebuild cutover {view} --force` makes the new "
                    f"columns live (the run record keeps it; `rebuild rollback {view}` undoes it)")
        if d is not None and d.differences == 0:  # only the expectations failed
            return ("the rebuilt view equals live, which fails the same expectations: no cutover changes that; fix the "
                    "data or the projection's expectations (see the report)")
        return (f"read the report; if the differences are the corrections you meant, `rebuild cutover {view} --force` "
                f"(the run record keeps it); if not, fix the projection and `rebuild run {view}` again")

    def cutover(self) -> str:
        """What ``rebuild cutover VIEW`` would do to live with this shadow, and how to undo it."""
        d, view = self.diff, self.view
        if d is None and self._patch():
            return f"there is no live {view}, and cutover applies a patch (this shadow) only to live: it refuses"
        if d is None:
            rows = f"its {self.expectations.rows:,} rows" if self.expectations else "it"
            return f"there is no live {view} to compare with: cutover makes the rebuilt view ({rows}) live {view}"
        if self.live != view:
            return (f"this check compared with {self.live}, not with live {view}: `rebuild check {view}` does, "
                    "before a cutover")
        effect = (f"{d.changed_rows:,} change, {d.only_in_live:,} go and {d.rows_matched - d.changed_rows:,} stay the "
                  f"same, and {d.only_in_rebuilt:,} are added")
        if d.scope is None:
            columns = f", and every row {changed}" if (changed := _columns_changed(d)) else ""
            return (f"the rebuilt view replaces live {view} in one transaction: of live's {d.rows_live:,} rows "
                    f"{effect} ({d.rows_rebuilt:,} rows then){columns}; live as it is now is kept: "
                    f"`rebuild rollback {view}` brings it back")
        if d.rows_live == d.rows_rebuilt == 0:
            return f"the patch changes no row of live {view}: live only takes its lake position"
        return (f"the patch replaces live {view}'s {d.rows_live:,} rows in its scope in one transaction: of those "
                f"{effect}; live's other rows stay as they are; the replaced rows are kept: `rebuild rollback {view}` "
                "puts them back")

    def _diff_html(self) -> str:
        d = self.diff
        if d is None:
            return "<p class='empty'>no live view: nothing to compare</p>"
        counts = {k: getattr(d, k) for k in ("rows_live", "rows_rebuilt", "rows_matched", "only_in_live",
                                            "only_in_rebuilt", "changed_rows", "duplicate_keys_live",
                                            "duplicate_keys_rebuilt")}
        scope = f"those in the patch's scope ({d.scope})" if d.scope is not None else "all"
        schema = {"columns added": ", ".join(d.added) or "none", "columns removed": ", ".join(d.removed) or "none",
                  "columns retyped": ", ".join(d.retyped_columns()) or "none", "live rows compared": scope, "key": ", ".join(d.key),
                  "seconds": d.seconds}  # words, not Python's [] and {}
        added = [{"column": c, "type": v["type"], "with a value": v["values"], "NULL": v["nulls"], "distinct (about)": v["distinct"],
                  "smallest": v["min"], "largest": v["max"]} for c, v in d.added_values.items()]
        return (f"<p>{esc(d.summary(), shorten=False)}</p>" + pairs(counts, caption="rows compared")
                + pairs(schema, caption="columns, key and scope compared")
                + (table(added, caption="what rebuilt holds in the columns it adds (live has none to compare)",
                         row_header=True) if added else "")
                + "".join(f"<p class='note'>{esc(n, shorten=False)}</p>" for n in d.notes))

    def _columns_html(self) -> str:
        if self.diff is None:
            return "<p class='empty'>no live view</p>"
        rows = [{**c.__dict__, "tolerance": c.tolerance and list(c.tolerance)} for c in self.diff.columns]
        patterns = [{"changed columns": k, "rows": v} for k, v in self.diff.change_patterns.items()]
        legend = ("<p class='note'>sum_diff and mean_diff: rebuilt - live, summed and averaged over the matched rows "
                  "(negative: rebuilt is lower); max_abs_diff: the largest |rebuilt - live|</p>")
        kept = len(patterns)
        more = (f"<p class='note'>the {kept:,} most common of {self.diff.change_pattern_count:,} combinations of "
                 "changed columns</p>" if self.diff.change_pattern_count > kept else "")
        return (table(rows, empty="no compared columns", caption="rows changed per compared column", row_header=True)
                + legend + "<h3>Change patterns</h3>"
                + table(patterns, empty="no changes", caption="rows per combination of changed columns", row_header=True)
                + more)

    def _samples_html(self) -> str:
        if self.diff is None:
            return "<p class='empty'>no live view</p>"
        parts = []
        for kind, rows in self.diff.samples.items():
            shown = [{**{k: key_text(v) if k in self.diff.key else v for k, v in r.items() if k != "changes"},
                      **({CHANGES: _changes(r["changes"])} if "changes" in r else {})} for r in rows]
            what = kind.replace("_", " ")
            parts.append(f"<h3 id='samples-{esc(kind)}'>{esc(what)}</h3>"
                         + table(shown, numbers=False, whole=(CHANGES,), caption=f"sampled rows: {what}",
                                 row_header=True))
        return "".join(parts)

    def _lineage_html(self) -> str:
        rows = [{"key": ", ".join(f"{k}={key_text(v)}" for k, v in x.key.items()), "kind": x.kind, "flags": _flags(x),
                 "events": x.events, "types": ", ".join(f"{k}:{v}" for k, v in x.event_types.items()),
                 "sequences": _sequences(x),
                 "ingested (UTC)": x.ingested_range and " .. ".join(_when(t) for t in x.ingested_range),
                 "lake_versions": x.lake_versions and "..".join(map(str, dict.fromkeys(x.lake_versions))),
                 EXPLAINED: _explained(x.explained_by),
                 "quarantine": _quarantine(x.quarantine),
                 "event ids": _ids(x.event_ids, 8)}
                for x in self.lineage]
        return table(rows, empty="no differences to trace", whole=(EXPLAINED, "flags", "quarantine", "event ids"),
                     caption="the events of each sampled differing key", row_header=True)

    def _expectations_html(self) -> str:
        e = self.expectations
        if e is None:
            return "<p class='empty'>not run</p>"
        # a failure that only warns (thresholds expectations = "warn") looked like one that fails the check
        failed = "warn (reported only)" if self.verdict.thresholds.get("expectations") == "warn" else "FAIL"
        rows = e.table_rows(failed, engine=True)
        return (f"<p>{e.rows:,} rows in {e.chunks:,} chunk(s), {e.seconds:,.1f} s</p>"
                + table(rows, caption="each expectation, its result and the values that did not meet it"))

    def _plots_html(self) -> str:
        shown = [_figure(name, data, self.plot_data.get(name)) for name, data in self.plots.items() if data]
        missing = [name for name, data in self.plots.items() if not data]
        note = f"<p class='note'>nothing to plot: {esc(', '.join(missing))}</p>" if missing else ""
        return f"<div class='plots'>{''.join(shown)}</div>{note}"

    def _run_html(self) -> str:
        """The run's record as read before this check (its verdict and report are this report's own), its
        times as the report's head writes them (``2026-09-01 03:00:00 UTC``, not ``...00.501004+00:00``)."""
        shown = {k: f"{_when(v)} UTC" if isinstance(v, datetime) else v for k, v in self.run.items()
                 if k not in ("verdict", "report")}
        return pairs(shown, caption="the run's record before this check")

    def _audit_html(self) -> str:
        if self.audit_html:
            return self.audit_html
        return "<p class='empty'>lake audit not available</p>"


def _flags(x: KeyLineage) -> str:
    """The flags with what they point at: the late and duplicated event ids, the missing sequences (of
    which stream, for a key of several: their sequences are each stream's own)."""
    gap = f"{x.missing_sequences} missing" if x.missing_sequences else ""
    if len(x.streams) > 1:
        gap = ", ".join(f"{s} {v['missing']} missing" for s, v in x.streams.items() if v["missing"])
    shown = {"late": _ids(x.late), "duplicate": _ids(x.duplicates), "gap": gap}
    return "; ".join(f"{f}: {shown[f]}" if shown.get(f) else f for f in x.flags)


def _columns_changed(d: DiffResult, added: str = "gains", removed: str = "loses", retyped: str = "retypes") -> str:
    """The columns a full cutover adds, removes and retypes in live, in words: ``gains column lines``."""
    return " and ".join(f"{what} {columns_text(names)}" for what, names in (
        (added, list(d.added)), (removed, list(d.removed)), (retyped, sorted(d.retyped))) if names)


def _quarantine(rows: Sequence[dict[str, Any]], shown: int = 3) -> str:
    """The key's quarantined records, each named as the lake's quarantine names it, with its sequence and
    reason: ``ev-9 (sequence 3): unparsable event_time: not a time`` (the reason alone named neither the
    poison record a consumer skipped nor the re-delivered copy a conflict quarantined)."""
    said = []
    for q in rows[:shown]:
        name = q.get("event_id") or f"{q.get('source')} line {q.get('line')}"
        at = f" (sequence {q['sequence']})" if q.get("sequence") is not None else ""
        said.append(f"{name}{at}: {q['reason']}")
    return "; ".join(said) + (f" (+{len(rows) - shown:,} more in the JSON)" if len(rows) > shown else "")


def _sequences(x: KeyLineage) -> str | None:
    """The key's sequence range, per stream for a key of several (each numbers its events on its own)."""
    ranges = {s: v for s, v in x.streams.items() if v["events"]}
    if len(ranges) > 1:
        return "; ".join(f"{s} {v['first']}-{v['last']}" for s, v in ranges.items())
    return x.sequence_range and f"{x.sequence_range[0]}-{x.sequence_range[1]}"


def _ids(ids: tuple[str, ...], shown: int = 3) -> str:
    """The first ``shown`` ids whole, and how many more (a cell cut mid-id names no event)."""
    return ", ".join(ids[:shown]) + (f" (+{len(ids) - shown:,} more)" if len(ids) > shown else "")


def _explained(explained: Sequence[dict[str, Any]], shown: int = 3) -> str:
    """The likeliest causes, each naming its event and what live did with it: ``items +1: ItemRemoved
    ev-7 (quantity), live misses it``."""
    said = [f"{e['column']} {e['live_minus_rebuilt']:+,g}: {e['event_type']} {e['event_id']} ({e['field']}), "
            f"{e['reading']}" for e in explained[:shown]]
    return "; ".join(said) + (f" (+{len(explained) - shown} more in the JSON)" if len(explained) > shown else "")


#: of a changed sample, the columns shown and the characters of each value: a changed 4 MB document
#: is shown around its first difference, with its length, so the report stays readable and small
SHOWN_CHANGES = 10
SHOWN_CHARS = 40


def _changes(changes: dict[str, dict[str, Any]]) -> str:
    """``column: live → rebuilt`` per changed column, each value cut around where the two first differ."""
    parts = []
    for column, pair in list(changes.items())[:SHOWN_CHANGES]:
        live, rebuilt = str(pair["live"]), str(pair["rebuilt"])
        at = _first_difference(live, rebuilt)
        parts.append(f"{column}: {_around(live, at)} → {_around(rebuilt, at)}")
    more = len(changes) - SHOWN_CHANGES
    return "; ".join(parts) + (f"; +{more:,} more columns" if more > 0 else "")


def _first_difference(live: str, rebuilt: str) -> int:
    """Where two texts of a changed value first differ: the HTML and the JSON show each around it."""
    return len(os.path.commonprefix([live, rebuilt]))


def _around(text: str, at: int, width: int = SHOWN_CHARS) -> str:
    """``text``, or the ``width`` characters of it around position ``at``, with its length."""
    if len(text) <= width:
        return text
    start = max(0, min(at - width // 4, len(text) - width))
    end = start + width
    return f"{'…' if start else ''}{text[start:end]}{'…' if end < len(text) else ''} ({len(text):,} characters)"


#: of a sample value in the JSON, the characters kept: a changed 4 MB document was 8 MB of JSON for
#: one changed row; it is cut as the HTML cuts it, around where live and rebuilt first differ, wider
JSON_CHARS = 1_000


def _json_diff(diff: DiffResult) -> dict[str, Any]:
    """The diff for the JSON, its samples' values cut to ``JSON_CHARS`` (the key columns whole: they name
    the row), each value cut named under ``samples_cut``."""
    data = diff.to_dict()
    cut: list[dict[str, Any]] = []
    samples = data["samples"]
    for kind in ("only_in_live", "only_in_rebuilt"):
        samples[kind] = [{c: v if c in diff.key else _cut(v, 0, {"samples": kind, "row": i, "column": c}, cut)
                          for c, v in row.items()} for i, row in enumerate(samples[kind])]
    for i, row in enumerate(samples["changed"]):
        changes = {}
        for column, pair in row["changes"].items():
            at = _first_difference(_text(pair["live"]), _text(pair["rebuilt"]))
            changes[column] = {side: _cut(value, at, {"samples": "changed", "row": i, "column": column, "side": side},
                                          cut) for side, value in pair.items()}
        row["changes"] = changes
    data["samples_cut"] = {"characters_kept": JSON_CHARS, "values": cut}
    return data


def _cut(value: Any, at: int, where: dict[str, Any], cut: list[dict[str, Any]]) -> Any:
    """``value``, or its text cut around ``at`` when longer than ``JSON_CHARS`` (``where`` then joins ``cut``)."""
    text = _text(value)
    if len(text) <= JSON_CHARS:
        return value
    cut.append({**where, "characters": len(text)})
    return _around(text, at, JSON_CHARS)


def _text(value: Any) -> str:
    """A value as its text: a string as it is, anything else (a struct, a list) as its JSON."""
    return value if isinstance(value, str) else dumps(value)


def _utc(moment: datetime | str | None) -> str:
    """A time as people read it, saying its zone: ``2026-09-01 03:00:00 UTC`` (escaped for HTML)."""
    return esc(_when(moment) + " UTC") if moment is not None else "(unknown)"


def _when(moment: datetime | str) -> str:
    """A time in UTC to the second, as the report writes every time: ``2026-09-01 03:00:00`` (a column or
    sentence around it says UTC); a time without a zone is UTC, as the workbench stores times."""
    at = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def _code(text: str | None) -> str:
    return f"<code>{esc(text, shorten=False)}</code>"


def _figure(name: str, image: str, data: dict[str, Any] | None) -> str:
    """A plot with alt text that says what it shows, its numbers too, and all its numbers in a table under it
    (a screen reader, a printout of a plot too small to read, a colour the reader cannot tell apart)."""
    if data is None:
        return f"<figure><img alt='{esc(name)}' src='data:image/png;base64,{image}'></figure>"
    title = data["title"]
    rows = [{data["label"]: label, data["unit"]: round(value, 3)} for label, value in data["values"].items()]
    return (f"<figure><img alt='{esc(alt_text(data), shorten=False)}' "
            f"src='data:image/png;base64,{image}'><figcaption><details><summary>the numbers of "
            f"{esc(title, shorten=False)}</summary>{table(rows, caption=title, row_header=True)}</details></figcaption></figure>")


#: a plot of at most this many bars has each one named in its alt text; a longer one its range and extremes
ALT_BARS = 12


def alt_text(data: dict[str, Any]) -> str:
    """What a plot of :func:`plot_data` shows, in words: ``Differences per column: a bar chart of rows per
    column: items 450, total 450, paid 9.`` (an alt of its title alone told a screen reader nothing)."""
    values, unit = data["values"], data["unit"]
    head = f"{data['title']}: a bar chart of {unit} per {data['label']}"
    if len(values) <= ALT_BARS:
        return f"{head}: {', '.join(f'{label} {number(round(v, 3))}' for label, v in values.items())}."
    top, low = max(values, key=values.get), min(values, key=values.get)
    return (f"{head}, {len(values):,} bars from {list(values)[0]} to {list(values)[-1]}; the highest "
            f"{number(round(values[top], 3))} {unit} ({top}), the lowest {number(round(values[low], 3))} {unit} "
            f"({low}); every bar in the table of its numbers.")


def plot_data(diff: DiffResult | None, days: dict[str, int], lateness: dict[str, int],
              runs: list[dict[str, Any]], run_id: str) -> dict[str, dict[str, Any]]:
    """What the four plots show (changes per column, differences per event day, lateness, run throughput):
    per plot its title, what its bars are (``label``) and measure (``unit``), and the values."""
    changes = {k: v for k, v in (diff.changed_by_column if diff else {}).items()}
    if diff is not None:
        changes = {"only in live": diff.only_in_live, "only in rebuilt": diff.only_in_rebuilt, **changes}
    # the run checked is drawn in another colour and said in its label, for readers who cannot tell them apart
    # whole events per second: 63,082.019 told a reader three digits of noise
    throughput = {_run_label(r["run_id"], run_id): round(r["events_read"] / r["seconds"]) for r in runs
                  if r.get("seconds")}
    kept, differing = (len(diff.differing_keys), diff.only_in_live + diff.only_in_rebuilt + diff.changed_rows) \
        if diff else (0, 0)
    part = f" ({kept:,} keys kept of {differing:,} differing rows)" if kept < differing else ""
    return {
        "changes per column": {"title": "Differences per column", "label": "column", "unit": "rows",
                               "values": changes if any(changes.values()) else {}},
        "differences per day": {"title": f"Differing keys per day of event time{part}", "label": "day (UTC)",
                                "unit": "keys", "values": days},
        "lateness": {"title": "Lateness (ingested_at - event_time)", "label": "lateness", "unit": "events",
                     "values": lateness},
        "run throughput": {"title": "Run throughput", "label": "run", "unit": "events/s", "values": throughput},
    }


def _run_label(run: str, checked: str) -> str:
    return f"{run[-13:]} (this run)" if run == checked else run[-13:]


def make_plots(data: dict[str, dict[str, Any]], run_id: str) -> dict[str, str | None]:
    """The plots of :func:`plot_data` as base64 PNG (None: nothing to plot)."""
    def bars(name: str, xlabel: str | None = None, **options: Any) -> str | None:
        d = data[name]
        return plots.bars(d["values"], d["title"], d["label"] if xlabel is None else xlabel, d["unit"], **options)

    return {
        "changes per column": bars("changes per column", "", horizontal=True),
        "differences per day": bars("differences per day"),
        "lateness": bars("lateness", ""),
        "run throughput": bars("run throughput", highlight=[_run_label(run_id, run_id)]),
    }


def write_atomically(path: Path, text: str) -> None:
    """A reader (or a job collecting reports) sees the whole file or none: a crash mid-write
    leaves only a ``.tmp`` file behind, never a truncated report under the real name."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
