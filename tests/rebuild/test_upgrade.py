"""A lake and store an earlier version wrote, run by this one (README: "Upgrading under an existing lake and store")."""

from __future__ import annotations

from tests.conftest import archive_unchecked
from tests.orders import order_events
from tests.rebuild.conftest import Bench

NUL_KEY = "o-nul\x00x"


def test_a_key_holding_nul_that_an_earlier_version_archived_is_caught_up_and_checked(bench: Bench) -> None:
    """Versions before 2026-11-25 archived a partition_key holding NUL (ingest quarantines it now): every
    catch-up of a by_key view touching it exited 70 ('string literal contains NUL'), every night, until now."""
    bench.ingest(order_events(1))
    bench.rebuild_live("order_summary")
    archive_unchecked(bench.wb.lake, [("old-nul", NUL_KEY, 1, "2026-09-01 10:00:00+00")])
    run = bench.wb.run("order_summary", progress="none")
    assert (run.record.mode, run.record.rows_written) == ("incremental", 1)
    report = bench.wb.check("order_summary", progress="none")
    assert [r.split(":")[0] for r in report.verdict.reasons] == [  # the event has no customer: nothing else
        "expectation expect_column_values_to_not_be_null(customer_id) failed"]
    bench.wb.cutover("order_summary", force=True)
    assert bench.rows("order_summary")["order_id"].to_list() == ["o-0000001", NUL_KEY]
