"""kill -9 during an ingest: the lake holds all of that commit's events or none, and a rerun finishes.

A real subprocess ingests a large file; it is killed at several points, some timed from its start
(reading, staging) and some timed from the moment it starts writing the events' Delta commit (data
files written, commit not yet published). Each case starts from a copy of the same lake.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

import lake
from tests.conftest import T0

N = 40_000  # valid events in the big file (plus two bad lines)
BEFORE = 100

CHILD = r"""
import sys
import lake, lake.table
from deltalake import write_deltalake

def signalling_write(uri, *args, **kwargs):
    name = uri.table_uri if hasattr(uri, "table_uri") else str(uri)  # a DeltaTable or a URI
    print("write " + name.rstrip("/").rsplit("/", 1)[-1], flush=True)
    return write_deltalake(uri, *args, **kwargs)

ingest_module = sys.modules["lake.ingest"]  # (``lake.ingest`` is the function)
write_events = ingest_module.write_events

def signalling_events(*args, **kwargs):  # the events' data files, then their commit
    print("write events", flush=True)
    return write_events(*args, **kwargs)

lake.table.write_deltalake = signalling_write
ingest_module.write_events = signalling_events
target = lake.Lake(sys.argv[1])
print("ready", flush=True)
lake.ingest(target, [sys.argv[2]], stream="orders", temp_directory=sys.argv[3], batch_rows=10_000)
print("done", flush=True)
"""


def _line(n: int, prefix: str = "big") -> str:
    at = (T0 + timedelta(seconds=n)).isoformat()
    return (
        f'{{"event_id":"{prefix}-{n}","partition_key":"{prefix}{n % 997}","sequence":{n},'
        f'"event_type":"OrderPlaced","event_time":"{at}","payload":{{"n":{n}}}}}'
    )


@pytest.fixture(scope="module")
def big_input(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A lake with BEFORE events, and an NDJSON file with N new valid events and 2 bad lines."""
    folder = tmp_path_factory.mktemp("atomicity")
    source = folder / "big.ndjson"
    lines = [_line(n) for n in range(N)]
    lines[N // 2 : N // 2] = ["{broken", '{"event_id": "x"}']
    source.write_text("\n".join(lines) + "\n")
    base = lake.Lake(folder / "base")
    first = folder / "first.ndjson"
    first.write_text("\n".join(_line(n, "pre") for n in range(BEFORE)) + "\n")
    lake.ingest(base, [first], stream="orders")
    return base.local, source  # type: ignore[return-value]


def count(target: lake.Lake) -> int:
    return int(lake.read_events(target).count("*").fetchall()[0][0])


def kill_during_ingest(tmp_path: Path, base: Path, source: Path, marker: str, delay: float) -> lake.Lake:
    """Run the child, wait for ``marker`` on its stdout, sleep ``delay``, SIGKILL it."""
    copy = tmp_path / f"lake-{marker.replace(' ', '-')}-{delay}"
    shutil.copytree(base, copy)
    spill = tmp_path / "spill"
    spill.mkdir(exist_ok=True)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(copy), str(source), str(spill)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert child.stdout is not None
    seen = []
    for line in child.stdout:
        seen.append(line.strip())
        if line.strip() == marker:
            break
    time.sleep(delay)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert marker in seen, f"child ended before {marker!r}: {seen}"
    return lake.Lake(copy)


def check_all_or_nothing_then_rerun(target: lake.Lake, source: Path) -> str:
    after_kill = count(target)
    assert after_kill in (BEFORE, BEFORE + N), after_kill
    rerun = lake.ingest(target, [source], stream="orders")
    assert count(target) == BEFORE + N
    ids = lake.read_events(target).aggregate("count(DISTINCT event_id)").fetchall()[0][0]
    assert ids == BEFORE + N
    if after_kill == BEFORE:
        assert rerun.archived == N
        outcome = "none"
    else:
        assert (rerun.archived, rerun.duplicates) == (0, N)
        outcome = "all"
    assert lake.read_quarantine(target).count("*").fetchall()[0][0] == 2
    return outcome


# (marker, delay): timed from the start, and timed from the start of the events' Delta write
FAST_POINTS = [("ready", 0.3), ("write events", 0.0), ("write events", 0.15)]
SLOW_POINTS = [
    ("ready", 0.0), ("ready", 0.1), ("ready", 0.5), ("ready", 1.0), ("ready", 2.0),
    ("write quarantine", 0.0), ("write events", 0.02), ("write events", 0.05),
    ("write events", 0.3), ("write events", 0.6), ("write events", 1.5),
]


@pytest.mark.parametrize(("marker", "delay"), FAST_POINTS)
def test_kill_9_leaves_all_or_nothing(tmp_path: Path, big_input: tuple[Path, Path], marker: str, delay: float) -> None:
    base, source = big_input
    target = kill_during_ingest(tmp_path, base, source, marker, delay)
    check_all_or_nothing_then_rerun(target, source)


@pytest.mark.slow
def test_kill_9_at_many_points(tmp_path: Path, big_input: tuple[Path, Path]) -> None:
    base, source = big_input
    outcomes = {}
    for marker, delay in SLOW_POINTS:
        target = kill_during_ingest(tmp_path, base, source, marker, delay)
        outcomes[(marker, delay)] = check_all_or_nothing_then_rerun(target, source)
    # the kills early on must have left nothing; the matrix as a whole is printed for the record
    assert outcomes[("ready", 0.0)] == "none"
    print(json.dumps({f"{m}+{d}s": o for (m, d), o in outcomes.items()}))
