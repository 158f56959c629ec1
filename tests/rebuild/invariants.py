"""The run invariants the property tests hold over random lakes and ingest splits (``test_properties``
for one stream, ``test_properties_streams`` for several):

- full rebuild == any chain of incremental runs (each cut over);
- ``--as-of v`` == the view as it was when the lake stopped at v;
- a keys run == the full rebuild on those keys, every other row untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
from hypothesis import strategies as st

import lake
from rebuild import Workbench
from tests.conftest import write_ndjson


def rows(wb: Workbench, view: str, role: str = "live") -> pl.DataFrame:
    return wb.view(view, role).sort(list(wb.projection(view).key))


def check_invariants(wb: Workbench, root: Path, events: list[dict[str, Any]], cuts: list[int], names: Sequence[str],
                     by_key: Sequence[str], data: st.DataObject, stream: str | None = None) -> None:
    """Ingest ``events`` in the batches ``cuts`` makes (into ``stream``, else each event's own), run and
    cut over ``names`` after each, then hold the invariants; ``by_key`` (keyed by ``k``) take a keys run."""
    snapshots: list[tuple[int, dict[str, pl.DataFrame]]] = []
    for i, (a, b) in enumerate(zip([0, *cuts], [*cuts, len(events)], strict=True)):
        version = lake.ingest(wb.lake, [write_ndjson(root / f"b{i}.ndjson", events[a:b])], stream=stream).lake_version
        for name in names:
            wb.run(name, progress="none")  # full the first time, incremental afterwards
            wb.cutover(name, force=True)
        snapshots.append((version, {n: rows(wb, n) for n in names}))
    for name in names:
        wb.run(name, full=True, progress="none")
        assert rows(wb, name).equals(rows(wb, name, "shadow")), f"{name}: incremental chain != full"
    version, expected = data.draw(st.sampled_from(snapshots))
    for name in names:
        wb.run(name, as_of=str(version), progress="none")
        assert rows(wb, name, "shadow").equals(expected[name]), f"{name}: as-of {version}"
    keys = sorted({r[0] for r in lake.read_events(wb.lake).project("partition_key").fetchall()})
    chosen = data.draw(st.lists(st.sampled_from(keys), min_size=1, max_size=3, unique=True))
    for name in by_key:
        wb.run(name, full=True, progress="none")
        full, live = rows(wb, name, "shadow"), rows(wb, name)
        wb.run(name, keys=chosen, progress="none")
        assert set(rows(wb, name, "shadow")["k"].to_list()) <= set(chosen), name
        wb.cutover(name, force=True)
        after = rows(wb, name)
        assert after.filter(pl.col("k").is_in(chosen)).equals(full.filter(pl.col("k").is_in(chosen))), name
        assert after.filter(~pl.col("k").is_in(chosen)).equals(live.filter(~pl.col("k").is_in(chosen))), name
