"""The ingest benchmark's --repeat: runs alternate, the fastest of each kind is reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import ingest as bench_ingest


def test_repeat_alternates_and_keeps_the_fastest_of_each(monkeypatch: pytest.MonkeyPatch) -> None:
    times = iter([3.0, 5.0, 1.0, 6.0, 2.0, 4.0])  # baseline, ingest, baseline, ingest, ...
    order: list[str] = []

    def measure(kind: str, source: Path, memory_limit: str) -> dict[str, float]:
        order.append(kind)
        return {"seconds": next(times)}

    monkeypatch.setattr(bench_ingest, "measure", measure)
    base, run = bench_ingest._best_of(3, Path("x.parquet"), "1GB")
    assert order == ["baseline", "ingest"] * 3
    assert (base["seconds"], run["seconds"]) == (1.0, 4.0)
