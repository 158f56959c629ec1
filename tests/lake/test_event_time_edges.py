"""Event times at their edges: digits past the microsecond, years no reader holds, the machine's zone."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from rich.console import Console

import lake
from lake.audit import audit
from tests.conftest import archive_unchecked, event, write_ndjson

EPOCH_MAP = """
[fields]
event_id = "id"
partition_key = "key"
sequence = "seq"
event_type = "type"
event_time = "ts"
[options]
event_time_unit = "{unit}"
"""


def ingest_epochs(tmp_path: Path, unit: str, values: list[object]) -> tuple[lake.Lake, lake.IngestResult]:
    (tmp_path / f"{unit}.toml").write_text(EPOCH_MAP.format(unit=unit))
    records = [{"id": f"e{i}", "key": "k", "seq": i, "type": "OrderPlaced", "ts": v} for i, v in enumerate(values)]
    target = lake.Lake(tmp_path / f"lake-{unit}")
    result = lake.ingest(target, [write_ndjson(tmp_path / f"{unit}.ndjson", records)], stream="orders",
                         mapping=lake.Mapping.load(tmp_path / f"{unit}.toml"))
    return target, result


def times(target: lake.Lake) -> list[datetime]:
    return [t for (t,) in lake.read_events(target).order("sequence").project("event_time").fetchall()]


def test_an_epoch_number_cuts_digits_past_the_microsecond_as_iso_text_does(tmp_path: Path) -> None:
    """The same instant as epoch seconds and as ISO text is the same event time: read through a double,
    1788307199.9999999 s was rounded into the next second, and so into the next day (another window)."""
    epochs = ["1788307199.9999999", 1788220800.1234567, "-1.0000001", "1788220800.123456", 1788220800]
    iso = ["2026-09-01T23:59:59.9999999Z", "2026-09-01T00:00:00.1234567Z", "1969-12-31T23:59:58.9999999Z",
           "2026-09-01T00:00:00.123456Z", "2026-09-01T00:00:00Z"]
    by_epoch, _ = ingest_epochs(tmp_path, "s", epochs)
    by_iso = lake.Lake(tmp_path / "iso")
    lake.ingest(by_iso, [write_ndjson(tmp_path / "iso.ndjson", [event(i, seq=i, at=None) | {"event_time": t}
                                                                 for i, t in enumerate(iso)])], stream="orders")
    assert times(by_epoch) == times(by_iso)
    assert times(by_epoch)[0] == datetime(2026, 9, 1, 23, 59, 59, 999999, tzinfo=UTC)
    millis, _ = ingest_epochs(tmp_path, "ms", ["1788220800123.4567", 1788220800999])
    assert times(millis) == [datetime(2026, 9, 1, 0, 0, 0, 123456, tzinfo=UTC),
                             datetime(2026, 9, 1, 0, 0, 0, 999000, tzinfo=UTC)]


def test_event_times_outside_years_1_to_9999_are_quarantined_not_archived(tmp_path: Path) -> None:
    """DuckDB reads 'infinity', 'epoch', year 20260 and BC years as times: archived, they made every later
    `check` and `audit` fail (exit 70), or put events on 1970-01-01; an epoch number past DuckDB's range
    stopped the whole ingest (an internal error). Quarantined, saying why; years 1 and 9999 are kept."""
    edges = {"infinity": "unparsable event_time: infinity", "-infinity": "unparsable event_time: -infinity",
             "epoch": "unparsable event_time: epoch",
             "20260-09-01T00:00:00Z": "event_time out of range (years 1 to 9999): 20260-09-01T00:00:00Z",
             "0044-03-15 (BC) 12:00:00": "event_time out of range (years 1 to 9999): 0044-03-15 (BC) 12:00:00",
             "0001-01-01T00:00:00Z": None, "9999-12-31T23:59:59.999999Z": None, "1970-01-01T00:00:00+00:00": None}
    target = lake.Lake(tmp_path / "lake")
    records = [event(i, seq=i) | {"event_time": t} for i, t in enumerate(edges)]
    result = lake.ingest(target, [write_ndjson(tmp_path / "edges.ndjson", records)], stream="orders")
    assert sorted(result.reasons) == sorted(r for r in edges.values() if r)
    assert times(target) == [datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
                             datetime(1970, 1, 1, tzinfo=UTC)]
    assert [s.events for s in audit(target).streams] == [3]  # the audit reads the kept ones
    far: list[object] = ["-9223372036854775806", "253402300800000000", "-62135596800000001", "-62135596800000000"]
    kept, result = ingest_epochs(tmp_path, "us", far)
    assert (result.archived, result.quarantined) == (1, 3)
    assert times(kept) == [datetime(1, 1, 1, tzinfo=UTC)]


def test_an_offset_no_time_zone_has_is_quarantined_as_a_producers_bug(tmp_path: Path) -> None:
    """An offset beyond +/-14:00 (+23:00, +99 hours) is in no zone: archived, the event sat a day or four away
    from when it happened. Quarantined, saying so; the edge zones (+14:00 Kiribati, -12:00), offsets written
    without a colon and named zones are kept."""
    why = "event_time offset beyond +/-14:00 (no time zone has one: a producer writing its offset wrong?): "
    given = {"2026-01-01T00:00:00+23:00": None, "2026-01-01 00:00:00+99": None, "2026-01-01T00:00:00-14:30": None,
             "2026-01-01T00:00:00+14:00:01": None,
             "2026-01-01T00:00:00+14:00": datetime(2025, 12, 31, 10, tzinfo=UTC),
             "2026-01-01T00:00:00-1200": datetime(2026, 1, 1, 12, tzinfo=UTC),
             "2026-01-01T00:00:00.5+05:45": datetime(2025, 12, 31, 18, 15, 0, 500000, tzinfo=UTC),
             "2026-07-01T00:00:00 America/New_York": datetime(2026, 7, 1, 4, tzinfo=UTC),
             "2026-01-01": datetime(2026, 1, 1, tzinfo=UTC)}
    target = lake.Lake(tmp_path / "lake")
    records = [event(i, seq=i) | {"event_time": t} for i, t in enumerate(given)]
    result = lake.ingest(target, [write_ndjson(tmp_path / "offsets.ndjson", records)], stream="orders")
    assert result.reasons == {why + t: 1 for t, kept in given.items() if kept is None}
    assert times(target) == [kept for kept in given.values() if kept is not None]
    assert sorted(r for (r,) in lake.read_quarantine(target).project("reason").fetchall()) == sorted(result.reasons)


FORMAT_MAP = EPOCH_MAP.replace('event_time_unit = "{unit}"', 'event_time_format = "%Y-%m-%d %H:%M:%S%z"')


def test_an_offset_with_minutes_past_59_or_beyond_14_hours_in_a_declared_format_is_quarantined(
        tmp_path: Path) -> None:
    """DuckDB reads +05:99 as +06:39, and a declared format's %z reads +25:00 and -24:01 too: archived, the
    event sat hours or a day from when it happened. Quarantined, saying which; real offsets are kept."""
    beyond = "event_time offset beyond +/-14:00 (no time zone has one: a producer writing its offset wrong?): "
    past_59 = ("event_time offset with minutes or seconds past 59 (no time zone has one: a producer writing its "
               "offset wrong?): ")
    iso = {"2026-01-01T00:00:00+05:99": past_59, "2026-01-01T00:00:00-0061": past_59,
           "2026-01-01T00:00:00+05:30:99": past_59, "2026-01-01T00:00:00+99:99": beyond,
           "2026-01-01T00:00:00.5+05:45": None, "2026-01-01 00:00:00-09:30": None, "2026-12-31": None}
    target = lake.Lake(tmp_path / "lake")
    records = [event(i, seq=i) | {"event_time": t} for i, t in enumerate(iso)]
    result = lake.ingest(target, [write_ndjson(tmp_path / "iso.ndjson", records)], stream="orders")
    assert result.reasons == {why + t: 1 for t, why in iso.items() if why}
    assert times(target) == [datetime(2025, 12, 31, 18, 15, 0, 500000, tzinfo=UTC),
                             datetime(2026, 1, 1, 9, 30, tzinfo=UTC), datetime(2026, 12, 31, tzinfo=UTC)]
    declared = {"2026-01-01 00:00:00+2500": beyond, "2026-01-01 00:00:00-24:01": beyond,
                "2026-01-01 00:00:00+14:00:01": beyond, "2026-01-01 00:00:00+0599": past_59,
                "2026-01-01 00:00:00+14:00": None, "2026-01-01 00:00:00-1200": None, "2026-01-01 00:00:00+05": None}
    (tmp_path / "format.toml").write_text(FORMAT_MAP)
    formatted = lake.Lake(tmp_path / "formatted")
    records = [{"id": f"e{i}", "key": "k", "seq": i, "type": "OrderPlaced", "ts": t} for i, t in enumerate(declared)]
    result = lake.ingest(formatted, [write_ndjson(tmp_path / "formatted.ndjson", records)], stream="orders",
                         mapping=lake.Mapping.load(tmp_path / "format.toml"))
    assert result.reasons == {why + t: 1 for t, why in declared.items() if why}
    assert times(formatted) == [datetime(2025, 12, 31, 10, tzinfo=UTC), datetime(2026, 1, 1, 12, tzinfo=UTC),
                                datetime(2025, 12, 31, 19, tzinfo=UTC)]
    assert len(lake.read_quarantine(formatted).fetchall()) == 4  # nothing lost


def test_the_audit_of_a_lake_an_older_version_left_with_such_times_names_them(tmp_path: Path) -> None:
    """A lake an older version wrote holds such times: its audit (and so every check) failed with an internal
    error (exit 70); it now counts every event, names those, and leaves them out of the time figures only."""
    target = lake.Lake(tmp_path / "lake")
    lake.ingest(target, [write_ndjson(tmp_path / "good.ndjson", [event(i, seq=i) for i in (1, 2)])], stream="orders")
    archive_unchecked(target, [("bad1", "o2", 1, "infinity"), ("bad2", "o2", 2, "20260-01-01 00:00:00+00"),
                               ("bad3", "o3", 1, "0044-03-15 (BC) 12:00:00+00"), ("bad4", "o4", 1, "-infinity")])
    report = audit(target)
    (orders,) = report.streams
    assert (orders.events, orders.partition_keys) == (6, 4)
    assert orders.event_time == {"first": "2024-03-01T00:01:00+00:00", "last": "2024-03-01T00:02:00+00:00"}
    assert orders.lateness["histogram"][">= 7 d"] == 2  # the two good events only
    assert report.to_dict()["times_out_of_range"] == 4
    assert orders.times_out_of_range == {"events": 4, "examples": [
        {"event_id": "bad1", "partition_key": "o2", "sequence": 1, "event_time": "infinity"},
        {"event_id": "bad2", "partition_key": "o2", "sequence": 2, "event_time": "20260-01-01 00:00:00+00"},
        {"event_id": "bad3", "partition_key": "o3", "sequence": 1, "event_time": "0044-03-15 (BC) 12:00:00+00"},
        {"event_id": "bad4", "partition_key": "o4", "sequence": 1, "event_time": "-infinity"}]}
    console = Console(record=True, width=400)
    report.render(console)
    shown = console.export_text()
    assert ("4 events with an event_time outside the years 1 to 9999, archived before ingest quarantined such times: "
            "bad1 (o2 #1): infinity; bad2 (o2 #2): 20260-01-01 00:00:00+00;") in shown
    assert "fix the producer" in shown and "bad4 (o4 #1): -infinity" in report._repr_html_()
    clean = lake.Lake(tmp_path / "clean")
    lake.ingest(clean, [write_ndjson(tmp_path / "clean.ndjson", [event(1)])], stream="orders")
    assert audit(clean).streams[0].times_out_of_range == {"events": 0, "examples": []}


def test_a_relation_of_the_lake_is_in_utc_whatever_the_default_connections_zone(tmp_path: Path) -> None:
    """On a machine in New York, the DuckDB relation read_events gives (and wb.events()) held event_time
    in New York's zone: its days (CAST AS DATE, date_trunc, a projection's own SQL) were local ones, not
    the views' UTC days, and its Arrow type was not the lake's."""
    target = lake.Lake(tmp_path / "lake")
    lake.ingest(target, [write_ndjson(tmp_path / "e.ndjson", [event(1) | {"event_time": "2026-11-01T02:00:00Z"}])],
                stream="orders")
    default = duckdb.default_connection()
    ((before,),) = default.sql("SELECT current_setting('TimeZone')").fetchall()
    default.execute("SET TimeZone = 'America/New_York'")  # as DuckDB starts on a machine there
    try:
        rel = lake.read_events(target)
        days = rel.project("CAST(event_time AS DATE), CAST(time_bucket(INTERVAL 1 DAY, event_time) AS DATE), "
                           "date_trunc('day', event_time)").fetchall()
        assert days == [(date(2026, 11, 1), date(2026, 11, 1), datetime(2026, 11, 1, tzinfo=UTC))]
        assert rel.to_arrow_table().schema.field("event_time").type == pa.timestamp("us", tz="UTC")
        assert lake.read_quarantine(target).to_arrow_table().schema.field("event_time").type.tz == "UTC"
        other = duckdb.from_arrow(pa.table({"event_id": ["e1"]}))  # relations on it still combine with the caller's
        assert rel.join(other, "event_id").project("event_id").fetchall() == [("e1",)]
    finally:
        default.execute(f"SET TimeZone = '{before}'")


def test_nanosecond_timestamps_of_parquet_are_cut_to_microseconds_not_rounded(tmp_path: Path) -> None:
    """pandas writes datetime64[ns]: 23:59:59.999999999 became the next day's 00:00:00 (DuckDB's cast rounds),
    another day and window than the same time as ISO text, whose digits past the microsecond are cut."""
    ns = [1788307199999999999, -1000000001, 1788220800123456789]
    for zone in (None, "America/New_York"):
        target = lake.Lake(tmp_path / f"lake-{zone}".replace("/", "_"))
        pq.write_table(pa.table({"event_id": ["p1", "p2", "p3"], "partition_key": ["k"] * 3, "sequence": [1, 2, 3],
                                 "event_type": ["T"] * 3, "event_time": pa.array(ns, pa.timestamp("ns", tz=zone))}),
                       tmp_path / "ns.parquet")
        assert lake.ingest(target, [tmp_path / "ns.parquet"], stream="orders").archived == 3
        assert times(target) == [datetime(2026, 9, 1, 23, 59, 59, 999999, tzinfo=UTC),
                                 datetime(1969, 12, 31, 23, 59, 58, 999999, tzinfo=UTC),
                                 datetime(2026, 9, 1, 0, 0, 0, 123456, tzinfo=UTC)]


def test_a_declared_format_with_nanoseconds_cuts_them_too(tmp_path: Path) -> None:
    """event_time_format "%d.%m.%Y %H:%M:%S.%n": 23:59:59.999999999 was rounded into the next day."""
    source = tmp_path / "export.csv"
    source.write_text("Id;Key;Seq;Type;When\ne1;k;1;T;01.09.2026 23:59:59.999999999\n"
                      "e2;k;2;T;01.09.2026 23:59:59.999999999+02:00\n")
    (tmp_path / "m.toml").write_text('[fields]\nevent_id = "Id"\npartition_key = "Key"\nsequence = "Seq"\n'
                                     'event_type = "Type"\nevent_time = "When"\n'
                                     '[options]\nevent_time_format = "%d.%m.%Y %H:%M:%S.%n"\n')
    (tmp_path / "z.toml").write_text((tmp_path / "m.toml").read_text().replace('.%n"', '.%n%z"'))
    target = lake.Lake(tmp_path / "lake")
    for name in ("m", "z"):
        lake.ingest(target, [source], stream="orders", mapping=lake.Mapping.load(tmp_path / f"{name}.toml"))
    assert times(target) == [datetime(2026, 9, 1, 23, 59, 59, 999999, tzinfo=UTC),
                             datetime(2026, 9, 1, 21, 59, 59, 999999, tzinfo=UTC)]


def test_rfc_3339_times_with_a_lower_case_t_or_z_are_archived(tmp_path: Path) -> None:
    """RFC 3339 lets 't' and 'z' be lower case; DuckDB reads only upper case, so such events were quarantined as
    unparsable. Named zones keep their case (only a time DuckDB cannot read as written is read upper-cased)."""
    given = {"2026-01-01t10:00:00z": datetime(2026, 1, 1, 10, tzinfo=UTC),
             "2026-01-01T10:00:00.25z": datetime(2026, 1, 1, 10, 0, 0, 250000, tzinfo=UTC),
             "2026-01-01t10:00:00+01:00": datetime(2026, 1, 1, 9, tzinfo=UTC),
             "2026-07-01T00:00:00 America/New_York": datetime(2026, 7, 1, 4, tzinfo=UTC)}
    target = lake.Lake(tmp_path / "lake")
    records = [event(i, seq=i) | {"event_time": t} for i, t in enumerate(given)]
    result = lake.ingest(target, [write_ndjson(tmp_path / "rfc3339.ndjson", records)], stream="orders")
    assert result.quarantined == 0, result.reasons
    assert times(target) == list(given.values())
