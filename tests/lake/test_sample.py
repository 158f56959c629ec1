"""The sample generator: deterministic per seed, the documented anomalies really in the lake."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

import lake
from lake.sample import END, RATES, TYPES, SampleResult, generate, hugepage_setting

EVENTS, SEED, DAYS = 1500, 3, 6


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[lake.Lake, SampleResult]:
    target = lake.Lake(tmp_path_factory.mktemp("sample") / "lake")
    return target, generate(target, events=EVENTS, seed=SEED, days=DAYS)


def _content(target: lake.Lake) -> list[tuple[object, ...]]:
    return lake.read_events(target).order("event_id").project("* EXCLUDE (ingested_at)").fetchall()


def _quarantine(target: lake.Lake) -> list[tuple[object, ...]]:
    return lake.read_quarantine(target).order("reason, record").project("reason, record").fetchall()


def _want(name: str) -> int:
    rate, floor = RATES[name]
    return max(floor, round(EVENTS * rate))


def test_the_same_seed_gives_the_same_lake_and_another_seed_another(
    sample: tuple[lake.Lake, SampleResult], tmp_path: Path
) -> None:
    target, result = sample
    again = lake.Lake(tmp_path / "again")
    other = lake.Lake(tmp_path / "other")
    second = generate(again, events=EVENTS, seed=SEED, days=DAYS)
    generate(other, events=EVENTS, seed=SEED + 1, days=DAYS)
    assert _content(again) == _content(target)
    assert _quarantine(again) == _quarantine(target)
    assert {**second.to_dict(), "seconds": 0} == {**result.to_dict(), "seconds": 0}
    assert _content(other) != _content(target)


def test_counts_add_up_and_match_what_ingest_saw(sample: tuple[lake.Lake, SampleResult]) -> None:
    target, r = sample
    assert r.events_generated == EVENTS
    assert r.archived == EVENTS - r.missing == lake.read_events(target).count("*").fetchall()[0][0]
    assert r.duplicates == _want("dup_same") + _want("dup_later")  # counted by the real ingest
    assert (r.conflicts, r.gaps, r.poison) == (_want("conflicts"), _want("gaps"), _want("poison"))
    assert r.quarantined == r.conflicts + r.poison
    assert r.late >= _want("late") and r.out_of_order >= _want("out_of_order")
    assert r.commits == DAYS == r.lake_version


def test_conflicts_and_poison_are_quarantined_with_their_reasons(sample: tuple[lake.Lake, SampleResult]) -> None:
    target, r = sample
    reasons = [reason for reason, _ in _quarantine(target)]
    assert sum(x.startswith("conflict: partition_key o-") for x in reasons) == r.conflicts
    poison = [x for x in reasons if not x.startswith("conflict")]
    assert len(poison) == r.poison
    assert "malformed record: malformed JSON" in poison
    assert "missing field event_type (event_type)" in poison
    assert any(x.startswith("sequence is not a non-negative int64: ") for x in poison)


def test_gaps_late_and_out_of_order_are_visible_in_the_lake(sample: tuple[lake.Lake, SampleResult]) -> None:
    target, r = sample
    rel = lake.read_events(target)
    walk = rel.query("ev", """
        SELECT partition_key, sequence - lag(sequence) OVER w - 1 AS missing,
               lake_version < max(lake_version) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS early,
               ingested_at - event_time >= INTERVAL 2 DAY AS late
        FROM ev WINDOW w AS (PARTITION BY partition_key ORDER BY sequence)""")  # fmt: skip
    gaps, missing, early, late = walk.aggregate(
        "count(DISTINCT partition_key) FILTER (missing > 0), sum(missing) FILTER (missing > 0), "
        "count(*) FILTER (early), count(*) FILTER (late)"
    ).fetchall()[0]
    assert (gaps, missing, early, late) == (r.gaps, r.missing, r.out_of_order, r.late)


def test_the_domain_contract(sample: tuple[lake.Lake, SampleResult]) -> None:
    target, _ = sample
    rows = lake.read_events(target).project("partition_key, sequence, event_type, event_time, ingested_at, payload, metadata").fetchall()
    first: dict[str, int] = {}
    for key, seq, etype, at, ingested, payload, metadata in rows:
        body = json.loads(payload)
        assert body["order_id"] == key and len(key) == 9 and key.startswith("o-")
        assert body["customer_id"].startswith("c-") and len(body["customer_id"]) == 8
        assert body["currency"] in ("EUR", "USD", "GBP") and etype in TYPES
        assert END - timedelta(days=DAYS) <= at < END <= ingested + timedelta(days=DAYS) and ingested >= at
        assert json.loads(metadata)["source"] == "sample"
        _check_fields(etype, body)
        first[key] = min(first.get(key, seq), seq)
    assert set(first.values()) == {1}


def _check_fields(etype: str, body: dict[str, object]) -> None:
    wanted = {
        "OrderPlaced": {"channel"}, "ItemAdded": {"sku", "quantity", "unit_price"},
        "ItemRemoved": {"sku", "quantity", "unit_price"}, "PaymentAuthorized": {"amount"},
        "PaymentFailed": {"amount", "reason"}, "OrderShipped": {"carrier"}, "OrderCancelled": {"reason"},
        "RefundIssued": {"amount"},
    }[etype]  # fmt: skip
    assert wanted <= set(body)
    if "quantity" in body:
        assert isinstance(body["quantity"], int) and body["quantity"] >= 1
        assert round(float(body["unit_price"]), 2) == body["unit_price"]  # type: ignore[arg-type]
    if etype == "OrderPlaced":
        assert body["channel"] in ("web", "app", "store")


def test_payment_amount_is_the_order_total(sample: tuple[lake.Lake, SampleResult]) -> None:
    target, _ = sample
    wrong = lake.read_events(target).query("ev", """
        WITH lines AS (
            SELECT partition_key, sequence, event_type, CAST(payload->>'amount' AS DOUBLE) AS amount,
                   sum(CASE event_type WHEN 'ItemAdded' THEN 1 WHEN 'ItemRemoved' THEN -1 ELSE 0 END
                       * CAST(payload->>'quantity' AS INT) * CAST(payload->>'unit_price' AS DOUBLE))
                       OVER (PARTITION BY partition_key ORDER BY sequence) AS total,
                   max(sequence) OVER (PARTITION BY partition_key) - count(*) OVER (PARTITION BY partition_key) AS gaps
            FROM ev)
        SELECT count(*) FROM lines WHERE event_type = 'PaymentAuthorized' AND gaps = 0 AND abs(amount - total) > 0.005""")  # fmt: skip
    assert wrong.fetchall()[0][0] == 0


def test_refuses_a_lake_that_holds_events_and_unknown_streams(sample: tuple[lake.Lake, SampleResult], tmp_path: Path) -> None:
    target, _ = sample
    with pytest.raises(lake.LakeError, match="already holds events"):
        generate(target, events=200, seed=1, days=3)
    with pytest.raises(lake.LakeError, match="streams"):
        generate(lake.Lake(tmp_path / "x"), events=200, seed=1, streams=("payments",))
    with pytest.raises(lake.LakeError, match="the seed must be 0 or more"):  # numpy's traceback, before
        generate(lake.Lake(tmp_path / "y"), events=200, seed=-1, days=3)
    (tmp_path / "file").write_text("not a lake")
    with pytest.raises(lake.LakeError, match="is a file: a lake is a folder"):  # "[Errno 17] File exists", before
        generate(lake.Lake(tmp_path / "file"), events=200, seed=1, days=3)


def test_the_generator_draws_without_numpy_huge_pages_and_restores_the_setting(tmp_path: Path) -> None:
    """Huge-page faults of its many large temporaries cost more than they save (see _small_pages).
    With numpy 1.26 (np._core without multiarray, or none) generate() failed before this check."""
    madvise = hugepage_setting()
    during: list[bool] = []
    before = madvise(True)
    try:
        generate(lake.Lake(tmp_path / "lake"), events=200, seed=1, days=3,
                 progress=lambda done, days: during.append(madvise(False)))  # fmt: skip
        assert during and not any(during)
        assert madvise(True) is True  # restored
    finally:
        madvise(before)


def _mmapped_bytes() -> int:
    """glibc's bytes in blocks of their own pages (mallinfo2().hblkhd)."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    mallinfo2 = ctypes.CDLL(None).mallinfo2
    mallinfo2.restype = MallInfo2
    return int(mallinfo2().hblkhd)


def test_the_generator_reuses_freed_heap_for_large_arrays_and_restores_glibcs_setting(tmp_path: Path) -> None:
    """glibc mapped each array over 32 MB to pages of its own and unmapped it when freed: the
    history's temporaries faulted their memory in again and again (see _reused_heap)."""
    import numpy as np

    def mapped_by(size: int) -> int:
        before = _mmapped_bytes()
        block = np.ones(size // 8)
        grown = _mmapped_bytes() - before
        del block
        return grown

    during: list[int] = []
    generate(lake.Lake(tmp_path / "lake"), events=200, seed=1, days=3,
             progress=lambda done, days: during.append(mapped_by(64 << 20)))  # fmt: skip
    assert during == [0, 0, 0]  # from the heap, which keeps what is freed
    assert mapped_by(64 << 20) >= 64 << 20  # glibc's default again


def test_the_generator_draws_the_same_lake_where_glibcs_malloc_settings_are_not_found(
    sample: tuple[lake.Lake, SampleResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ctypes

    def no_libc(name: object) -> object:
        raise OSError("not glibc")

    monkeypatch.setattr(ctypes, "CDLL", no_libc)
    again = lake.Lake(tmp_path / "again")
    generate(again, events=EVENTS, seed=SEED, days=DAYS)
    assert _content(again) == _content(sample[0])


def test_the_cli_names_the_audit_of_the_lake_it_wrote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """After `rebuild lake sample --out OTHER`, the hint said `rebuild lake audit`, which audits
    the configured lake, not OTHER."""
    from rebuild.cli import main

    monkeypatch.chdir(tmp_path)  # no workbench.toml: the configured lake is .demo/lake
    monkeypatch.setenv("COLUMNS", "300")
    assert main(["lake", "sample", "--events", "300", "--days", "3", "--out", "my lake"]) == 0
    assert f"next: `rebuild --lake '{tmp_path / 'my lake'}' lake audit` should find" in capsys.readouterr().out
    assert main(["lake", "sample", "--events", "300", "--days", "3", "--out", ".demo/lake"]) == 0
    assert "next: `rebuild lake audit` should find" in capsys.readouterr().out
