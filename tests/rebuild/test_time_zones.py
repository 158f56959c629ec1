"""The machine's zone changes nothing: the same input ingested and rebuilt under TZ=X gives the same lake,
views, backfill and event days as under UTC, also across DST changes (a process per zone: DuckDB and
Python read TZ when they start)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zoneinfo
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import write_ndjson
from tests.orders import order_events

ROOT = Path(__file__).resolve().parents[2]
# each order's events start near a DST change or a day's edge somewhere; written as Z, +05:30 or naive text
STARTS = [datetime(2026, 11, 1, 3, tzinfo=UTC), datetime(2026, 10, 24, 23, tzinfo=UTC),
          datetime(2026, 3, 8, 5, tzinfo=UTC), datetime(2026, 9, 26, 13, tzinfo=UTC), datetime(1969, 12, 31, 22, tzinfo=UTC)]
WRITTEN = ["%Y-%m-%dT%H:%M:%S.%fZ", "+05:30", "%Y-%m-%dT%H:%M:%S"]

REBUILD = """
import json, sys
import lake
from rebuild import Workbench
root = sys.argv[1]
wb = Workbench.open(None, lake_uri=root + "/lake", store_uri=f"duckdb://{root}/views.duckdb", reports_dir=root + "/r")
lake.ingest(wb.lake, [root + "/events.ndjson"], stream="orders")
out = {}
for view in ("daily_revenue", "order_timeline", "order_summary"):
    wb.run(view, progress="none")
    wb.cutover(view, force=True)
    out[view] = wb.view(view).sort(list(wb.projection(view).key)).rows()
wb.run("daily_revenue", since="2026-10-24", until="2026-10-26", progress="none")
out["targeted"] = wb.view("daily_revenue", "shadow").sort("day", "currency").rows()
wb.backfill("order_timeline", since="2026-10-31T22:00", until="2026-11-01T14:00", chunk="1h", progress="none")
out["backfill"] = wb.view("order_timeline", "shadow").sort("order_id").rows()
days = "CAST(event_time AS DATE) AS d, date_trunc('hour', event_time) AS h, event_time"
out["events"] = wb.events().project(days).order("event_time").fetchall()
print(json.dumps(out, default=str))
"""


def events() -> list[dict[str, Any]]:
    made = []
    for n in range(1, 31):
        start = STARTS[n % len(STARTS)] + timedelta(minutes=37 * n)
        for i, e in enumerate(order_events(n, currency=("EUR", "USD")[n % 2], start=start, refund=n % 3 == 0)):
            at = datetime.fromisoformat(str(e["event_time"]))
            form = WRITTEN[(n + i) % len(WRITTEN)]
            e["event_time"] = at.astimezone(zoneinfo.ZoneInfo("Asia/Kolkata")).isoformat() if form == "+05:30" \
                else at.strftime(form)
            made.append(e)
    return made


def rebuilt_under(zone: str, root: Path) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)  # hypothesis may draw a zone twice: the run starts over
    for old in ("lake", "r"):
        shutil.rmtree(root / old, ignore_errors=True)
    (root / "views.duckdb").unlink(missing_ok=True)
    write_ndjson(root / "events.ndjson", events())
    env = {**os.environ, "TZ": zone, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", REBUILD, str(root)], env=env, cwd=root, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout)
    return result


_UTC: dict[str, Any] = {}


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(zone=st.sampled_from(["America/New_York", "Pacific/Chatham", "Asia/Kolkata", "Europe/Berlin",
                             "America/St_Johns", "Australia/Lord_Howe", "Pacific/Kiritimati", "Etc/GMT+12"]))
def test_views_backfills_and_event_days_do_not_depend_on_the_machines_zone(tmp_path: Path, zone: str) -> None:
    if not _UTC:
        _UTC.update(rebuilt_under("UTC", tmp_path / "UTC"))
        assert len(_UTC["events"]) == 30 * 5 + 10 and _UTC["backfill"] and _UTC["targeted"]
    assert rebuilt_under(zone, tmp_path / zone.replace("/", "_")) == _UTC
