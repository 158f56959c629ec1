"""Archiving from a real PostgreSQL event table (pgserver): resume, idempotence, mapping, errors."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest

import lake
from lake.postgres import ingest_postgres, last_position
from lake.table import EVENTS
from rebuild.cli import main
from tests.conftest import T0, event, expire_log, write_ndjson
from tests.pg import fresh_database, postgres_server, postgres_uri  # noqa: F401

pytestmark = pytest.mark.postgres

ENVELOPE_TABLE = """
CREATE TABLE {name} (
    id bigserial PRIMARY KEY,
    event_id text NOT NULL,
    partition_key text NOT NULL,
    sequence bigint NOT NULL,
    event_type text NOT NULL,
    event_time timestamptz NOT NULL,
    payload jsonb
)"""


def insert(uri: str, rows: list[tuple[object, ...]], table: str = "events") -> None:
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.cursor().executemany(
            f"INSERT INTO {table} (event_id, partition_key, sequence, event_type, event_time, payload) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            rows,
        )


def rows(start: int, stop: int, key: str = "o1") -> list[tuple[object, ...]]:
    return [
        (f"e{n}", key, n, "OrderPlaced", T0 + timedelta(minutes=n), json.dumps({"n": n}))
        for n in range(start, stop)
    ]


@pytest.fixture
def pg(fresh_database: str) -> str:  # noqa: F811
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute(ENVELOPE_TABLE.format(name="events"))
    return fresh_database


def archived(target: lake.Lake) -> list[tuple[object, ...]]:
    return lake.read_events(target).order("event_id").project("event_id, sequence, payload").fetchall()


def test_archive_then_resume_reads_only_new_rows(pg: str, tmp_path: Path) -> None:
    target = lake.Lake(tmp_path / "lake")
    insert(pg, rows(1, 6))
    first = ingest_postgres(target, pg, "events", stream="orders", batch_rows=2)
    assert (first.archived, first.duplicates, first.quarantined) == (5, 0, 0)
    assert json.loads(str(archived(target)[0][2])) == {"n": 1}
    source = first.files[0]
    assert source.startswith("postgres:") and last_position(target, source, "orders") == 5

    insert(pg, rows(6, 9))
    second = ingest_postgres(target, pg, "public.events", stream="orders", batch_rows=2)
    # only the new rows were read: nothing counted as a duplicate
    assert (second.read, second.archived, second.duplicates) == (3, 3, 0)
    assert second.lake_version == first.lake_version + 1
    assert len(archived(target)) == 8 and last_position(target, source, "orders") == 8


def test_polling_again_without_new_rows_commits_nothing(pg: str, tmp_path: Path) -> None:
    target = lake.Lake(tmp_path / "lake")
    insert(pg, rows(1, 4))
    first = ingest_postgres(target, pg, "events", stream="orders")
    versions = len(target.commit_metadata())
    again = ingest_postgres(target, pg, "events", stream="orders")
    assert (again.read, again.archived) == (0, 0)
    assert len(target.commit_metadata()) == versions
    assert again.lake_version == first.lake_version


def test_rows_already_in_the_lake_still_advance_the_position(pg: str, tmp_path: Path) -> None:
    """A poll that archives nothing (all duplicates) commits its position, so it is not re-read."""
    target = lake.Lake(tmp_path / "lake")
    insert(pg, rows(1, 4))
    lake.ingest(target, [_ndjson(tmp_path, 1, 4)], stream="orders")
    poll = ingest_postgres(target, pg, "events", stream="orders")
    assert (poll.read, poll.archived, poll.duplicates) == (3, 0, 3)
    assert last_position(target, poll.files[0], "orders") == 3
    assert ingest_postgres(target, pg, "events", stream="orders").read == 0


def test_idempotent_when_the_position_is_lost(pg: str, tmp_path: Path) -> None:
    """Another stream name has no stored position: everything is re-read, nothing duplicated."""
    target = lake.Lake(tmp_path / "lake")
    insert(pg, rows(1, 6))
    ingest_postgres(target, pg, "events", stream="orders")
    other = lake.Lake(tmp_path / "copy")
    ingest_postgres(other, pg, "events", stream="orders")
    again = ingest_postgres(other, pg, "events", stream="orders")
    assert again.read == 0
    assert archived(other) == archived(target)


def test_a_source_idle_past_the_log_retention_keeps_its_position(pg: str, tmp_path: Path) -> None:
    """The position was only commit metadata: once Delta deleted log entries past their retention
    (30 days) while other streams committed, the next poll re-read the whole table from the start."""
    target = lake.Lake(tmp_path / "lake")
    insert(pg, rows(1, 6))
    source = ingest_postgres(target, pg, "events", stream="orders").files[0]
    for n in (1, 2):
        lake.ingest(target, [write_ndjson(tmp_path / f"{n}.ndjson", [event(100 + n, key="k")])], stream="other")
    expire_log(tmp_path / "lake")
    fresh = lake.Lake(tmp_path / "lake")
    assert last_position(fresh, source, "orders") == 5
    insert(pg, rows(6, 7))
    assert ingest_postgres(fresh, pg, "events", stream="orders").read == 1


def test_the_position_is_a_delta_transaction_of_the_events_commit(pg: str, tmp_path: Path) -> None:
    """Checkpoints keep a Delta txn action (appId, version), not commit metadata: the position is one,
    in the same commit as the events, also for a poll that archives nothing (all duplicates)."""
    target = lake.Lake(tmp_path / "lake")
    insert(pg, rows(1, 4))
    first = ingest_postgres(target, pg, "events", stream="orders")
    lake.ingest(target, [_ndjson(tmp_path, 4, 6)], stream="orders")
    insert(pg, rows(4, 6))
    second = ingest_postgres(target, pg, "events", stream="orders")
    assert (first.archived, second.archived, second.duplicates) == (3, 0, 2)
    app_id = json.dumps([first.files[0], "orders"])
    for version, position, adds in ((1, 3, True), (3, 5, False)):  # version 2: the file's ingest
        log = tmp_path / "lake" / "events" / "_delta_log" / f"{version:020d}.json"
        actions = [json.loads(line) for line in log.read_text().splitlines()]
        assert {"txn": {"appId": app_id, "version": position}} in actions
        assert any("add" in a for a in actions) == adds


def test_a_lake_polled_before_positions_were_transactions_resumes_from_its_metadata(pg: str, tmp_path: Path) -> None:
    """Lakes written before the position was a Delta transaction have it only in commit metadata."""
    target = lake.Lake(tmp_path / "lake").create()
    with psycopg.connect(pg) as conn:
        source = f"postgres:{conn.info.dbname}/public.events"
    old = {"workbench.source": source, "workbench.stream": "orders", "workbench.position": "3"}
    with target.commit_lock():  # what a poll of rows 1 to 3 committed then, without its events
        target.commit_files(EVENTS, [], expected_version=target.next_version(), metadata=old)
    insert(pg, rows(1, 6))
    assert last_position(target, source, "orders") == 3
    assert ingest_postgres(target, pg, "events", stream="orders").read == 2
    assert last_position(target, source, "orders") == 5


def test_mapping_of_other_column_names_and_a_bad_row(fresh_database: str, tmp_path: Path) -> None:  # noqa: F811
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute(
            'CREATE SCHEMA "Shop"; CREATE TABLE "Shop"."order events" (pos integer PRIMARY KEY, '
            "uuid text, aggregate text, version bigint, kind text, at_ms bigint, body jsonb, tags text[])"
        )
        conn.cursor().executemany(
            'INSERT INTO "Shop"."order events" VALUES (%s, %s, %s, %s, %s, %s, %s, %s)',
            [
                (10, "a", "o1", 1, "OrderPlaced", 1_709_251_200_000, '{"total": 5}', ["x"]),
                (20, "b", "o1", 2, "OrderShipped", 1_709_251_260_000, None, []),
                (30, "c", "o2", -1, "OrderPlaced", 1_709_251_320_000, "{}", None),  # bad sequence
            ],
        )
    mapping_file = tmp_path / "shop.toml"
    mapping_file.write_text(
        'name = "shop"\n[fields]\nevent_id = "uuid"\npartition_key = "aggregate"\nsequence = "version"\n'
        'event_type = "kind"\nevent_time = "at_ms"\npayload = "body"\n'
        '[options]\nevent_time_unit = "ms"\nmetadata = ["tags"]\n'
    )
    target = lake.Lake(tmp_path / "lake")
    result = ingest_postgres(
        target, fresh_database, 'Shop.order events', stream="orders",
        mapping=lake.Mapping.load(mapping_file), position_column="pos",
    )
    assert (result.archived, result.quarantined) == (2, 1)
    got = lake.read_events(target).order("event_id").project(
        "event_id, partition_key, sequence, event_type, event_time, payload, metadata"
    ).fetchall()
    assert [r[:4] for r in got] == [("a", "o1", 1, "OrderPlaced"), ("b", "o1", 2, "OrderShipped")]
    assert got[0][4] == T0 and json.loads(str(got[0][5])) == {"total": 5}
    assert json.loads(str(got[0][6])) == {"tags": ["x"]}
    bad = lake.read_quarantine(target).project("source, line, reason").fetchall()
    assert bad == [(result.files[0], 30, "sequence is not a non-negative int64: -1")]
    assert last_position(target, result.files[0], "orders") == 30


def test_errors_are_source_errors_without_the_password(pg: str, tmp_path: Path) -> None:
    target = lake.Lake(tmp_path / "lake")
    secret = "s3cr3t-Pa55"
    with_password = pg.replace("postgres:@", f"postgres:{secret}@")
    unreachable = f"postgresql://app:{secret}@127.0.0.1:1/db"
    cases = [
        (unreachable, "events", {}, "cannot connect"),
        (with_password, "nope", {}, "does not exist"),
        (with_password, "Events", {}, "(there is a table public.events: names are case-sensitive, give --table "
                                      "public.events)"),
        (with_password, "events", {"position_column": "pos"}, "no column ['pos']"),
        (with_password, "events", {"position_column": "event_id"}, "not an integer"),
        (with_password, "events", {"mapping": lake.Mapping.load("aws-lambda-stream")}, "no column"),
    ]
    for uri, table, options, expected in cases:
        with pytest.raises(lake.SourceError) as caught:
            ingest_postgres(target, uri, table, stream="orders", **options)  # type: ignore[arg-type]
        assert expected in str(caught.value)
        assert secret not in str(caught.value) and secret not in repr(caught.value.context)
        assert caught.value.__cause__ is None or secret not in str(caught.value.__cause__)
    assert not target.exists() or lake.read_events(target).count("*").fetchall()[0][0] == 0


@pytest.fixture(autouse=True)
def _no_workbench_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads ./workbench.toml and REBUILD_*: run it where neither exists."""
    monkeypatch.chdir(tmp_path)
    for name in ("REBUILD_CONFIG", "REBUILD_LAKE_URI", "REBUILD_STORE_URI", "REBUILD_MEMORY_LIMIT", "REBUILD_TEMP_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)


def test_cli_from_postgres(pg: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    insert(pg, rows(1, 4))
    base = ["--lake", str(tmp_path / "lake"), "lake", "ingest", "--from-postgres", pg]
    assert main([*base, "--table", "events", "--stream", "orders", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["archived"] == 3
    secret_uri = pg.replace("postgres:@", "postgres:hunter2@")
    code = main(["--lake", str(tmp_path / "lake"), "lake", "ingest", "--from-postgres", secret_uri,
                 "--table", "missing", "--stream", "orders", "--json"])
    captured = capsys.readouterr()
    assert code == 2 and "does not exist" in json.loads(captured.out)["error"]
    assert "hunter2" not in captured.out + captured.err


def test_cli_from_a_table_whose_position_column_is_not_id(fresh_database: str, tmp_path: Path,  # noqa: F811
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI polled `id` only, and its error said to fix --map, which cannot name the position column."""
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute(ENVELOPE_TABLE.format(name="events").replace("id bigserial", "pos bigserial"))
    insert(fresh_database, rows(1, 4))
    base = ["--lake", str(tmp_path / "lake"), "--json", "lake", "ingest", "--from-postgres", fresh_database,
            "--table", "events", "--stream", "orders"]
    assert main(base) == 2
    assert "Name the table's position column with --position-column" in json.loads(capsys.readouterr().out)["error"]
    assert main([*base, "--position-column", "pos"]) == 0
    assert json.loads(capsys.readouterr().out)["archived"] == 3


def test_cli_from_tables_in_schemas_and_names_with_a_dot(fresh_database: str, tmp_path: Path,  # noqa: F811
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """`--table schema.table` was split at every dot: a name holding one (`"order.events"`), or a name
    double-quoted as SQL writes it (`"Shop"."Order events"`), was refused or looked for with its quotes."""
    tables = {'events."order.events"': '"events"."order.events"', '"Shop"."Order events"': '"Shop"."Order events"',
              '"my.app".events': '"my.app"."events"', "Shop.Events": '"Shop"."Events"'}
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute('CREATE SCHEMA events; CREATE SCHEMA "Shop"; CREATE SCHEMA "my.app"')
        for n, name in enumerate(tables.values()):
            conn.execute(ENVELOPE_TABLE.format(name=name))
            insert(fresh_database, rows(1, 2 + n, key=f"k{n}"), table=name)
    base = ["--lake", str(tmp_path / "lake"), "--json", "lake", "ingest", "--from-postgres", fresh_database, "--stream"]
    for n, given in enumerate(tables):
        assert main([*base, f"s{n}", "--table", given]) == 0, given
        assert json.loads(capsys.readouterr().out)["archived"] == 1 + n, given
    for given, hint in [('shop."order events"', "'Shop.Order events'"), ('EVENTS."Order.Events"', """'events."order.events"'""")]:
        assert main([*base, "x", "--table", given]) == 2  # names are case-sensitive, quoted or not
        assert f"names are case-sensitive, give --table {hint})" in json.loads(capsys.readouterr().out)["error"]
    assert main([*base, "x", "--table", "a.b.c"]) == 2
    assert "double-quote a name that holds a dot" in json.loads(capsys.readouterr().out)["error"]


def _ndjson(tmp_path: Path, start: int, stop: int) -> Path:
    records = [
        {"event_id": f"e{n}", "partition_key": "o1", "sequence": n, "event_type": "OrderPlaced",
         "event_time": (T0 + timedelta(minutes=n)).isoformat(), "payload": {"n": n}}
        for n in range(start, stop)
    ]
    return write_ndjson(tmp_path / "same.ndjson", records)


def test_a_position_shared_by_rows_on_a_page_boundary_loses_no_row(fresh_database: str, tmp_path: Path) -> None:  # noqa: F811
    """A non-unique position column (a batch or transaction id): a page that ends inside a run of
    equal positions used to resume above it, skipping the rest of the run without a word."""
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute(ENVELOPE_TABLE.format(name="events").replace("bigserial PRIMARY KEY", "bigint NOT NULL"))
        conn.cursor().executemany(
            "INSERT INTO events VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [(pos, *row) for pos, row in zip([1, 2, 2, 2, 3, 5, 5], rows(1, 8), strict=True)],
        )
    target = lake.Lake(tmp_path / "lake")
    result = ingest_postgres(target, fresh_database, "events", stream="orders", batch_rows=2)
    assert (result.read, result.archived) == (7, 7)
    assert [r[0] for r in archived(target)] == [f"e{n}" for n in range(1, 8)]
    assert last_position(target, result.files[0], "orders") == 5


def test_the_first_poll_reads_positions_zero_and_below(fresh_database: str, tmp_path: Path) -> None:  # noqa: F811
    """Offsets start at 0: the first poll used to read only positions above 0, and never the rest."""
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute(ENVELOPE_TABLE.format(name="events").replace("bigserial", "bigint"))
        conn.cursor().executemany(
            "INSERT INTO events VALUES (%s, %s, %s, %s, %s, %s, %s)",
            [(pos, *row) for pos, row in zip([-3, 0, 1], rows(1, 4), strict=True)],
        )
    target = lake.Lake(tmp_path / "lake")
    assert last_position(target, "postgres:x/public.events", "orders") is None
    result = ingest_postgres(target, fresh_database, "events", stream="orders")
    assert (result.read, result.archived) == (3, 3)
    assert last_position(target, result.files[0], "orders") == 1


def test_rows_without_a_position_are_named_not_skipped_in_silence(fresh_database: str, tmp_path: Path,  # noqa: F811
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A NULL position matches no `position > n`: such rows were never archived, without a word."""
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute(ENVELOPE_TABLE.format(name="events").replace("id bigserial PRIMARY KEY", "id bigint"))
        conn.cursor().executemany(
            "INSERT INTO events (id, event_id, partition_key, sequence, event_type, event_time) VALUES (%s, %s, 'o1', %s, 'OrderPlaced', %s)",
            [(n, f"e{n}", n, T0) for n in (1, 2)] + [(None, "e3", 3, T0)])
    result = ingest_postgres(lake.Lake(tmp_path / "lake"), fresh_database, "events", stream="orders")
    assert result.archived == 2
    assert "1 rows have no id (NULL), so no poll archives them; give them a position" in caplog.text
    caplog.clear()
    with psycopg.connect(fresh_database, autocommit=True) as conn:  # a NOT NULL column is not counted
        conn.execute("DELETE FROM events WHERE id IS NULL")
        conn.execute("ALTER TABLE events ALTER COLUMN id SET NOT NULL")
    ingest_postgres(lake.Lake(tmp_path / "lake"), fresh_database, "events", stream="orders")
    assert "no poll archives them" not in caplog.text


def test_cli_polls_a_table_by_another_position_column_in_bounded_pages(
        fresh_database: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    """The CLI had no --position-column, --batch-rows or --max-rows: a table keyed by `seq` could
    not be archived from a job, and files given beside --from-postgres were silently not ingested."""
    with psycopg.connect(fresh_database, autocommit=True) as conn:
        conn.execute(ENVELOPE_TABLE.format(name="events").replace("id bigserial PRIMARY KEY", "seq bigint NOT NULL"))
        conn.cursor().executemany("INSERT INTO events VALUES (%s, %s, %s, %s, %s, %s, %s)",
                                  [(n * 10, *row) for n, row in enumerate(rows(1, 6), start=1)])
    base = ["--lake", str(tmp_path / "lake"), "lake", "ingest", "--from-postgres", fresh_database, "--table", "events",
            "--stream", "orders", "--position-column", "seq", "--batch-rows", "2", "--max-rows", "3", "--json"]
    assert main(base) == 0
    assert json.loads(capsys.readouterr().out)["archived"] == 3  # one poll: at most 3 rows
    assert main(base) == 0
    assert json.loads(capsys.readouterr().out)["archived"] == 2  # the next poll goes on from seq 30
    assert [r[0] for r in archived(lake.Lake(tmp_path / "lake"))] == [f"e{n}" for n in range(1, 6)]
    for wrong, message in [(["--max-rows", "0"], "0 is not in the range x>=1"),
                           (["x.ndjson"], "give files to ingest or --from-postgres, not both")]:
        assert main([*base, *wrong]) == 2
        assert message in json.loads(capsys.readouterr().out)["error"]
    assert main(["--lake", str(tmp_path / "lake"), "lake", "ingest", "x.ndjson", "--max-rows", "5", "--json"]) == 2
    assert "--max-rows: only with --from-postgres URI" in json.loads(capsys.readouterr().out)["error"]
