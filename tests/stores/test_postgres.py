"""PostgreSQL specifics: the schema in the URI, quoting, and atomic cutover under concurrent readers."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest

import lake
from bench.stores import record_maker
from lake import Lake
from rebuild import Config, StoreError, Workbench, projection
from rebuild.projection import Registry
from rebuild.store import open_store
from rebuild.store import postgres_store
from rebuild.store.postgres_store import LOCK_TIMEOUT, pg_type, split_schema
from tests.conftest import write_ndjson
from tests.pg import with_database
from tests.orders import T0, order_events
from tests.stores.conftest import schema_uri

VIEW = "order_summary"


def test_schema_parameter_is_ours_and_quoted(postgres_uri: str) -> None:
    name = f'odd "schema" {uuid.uuid4().hex[:6]}'
    dsn, schema = split_schema(schema_uri(postgres_uri, name))
    assert schema == name and "schema=" not in dsn
    store = open_store(schema_uri(postgres_uri, name))
    try:
        assert store.exists("_rebuild_runs") and store.runs() == []
    finally:
        store.close()
    with psycopg.connect(postgres_uri) as conn:
        tables = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (name,)).fetchall()
    assert {"_rebuild_runs", "_checkpoints", "_backfills", "_rebuild_locks"} <= {t[0] for t in tables}


def test_duckdb_types_map_to_postgres_types() -> None:
    assert pg_type("VARCHAR") == ("", "text")
    assert pg_type("DECIMAL(18,2)") == ("", "numeric(18,2)")
    assert pg_type("TIMESTAMP WITH TIME ZONE") == ("", "timestamptz")
    assert pg_type("DOUBLE") == ("", "double precision")
    assert pg_type("HUGEINT") == ("DECIMAL(38,0)", "numeric(38,0)")
    assert pg_type("VARCHAR[]") == ("VARCHAR", "text")


def test_view_columns_have_postgres_types(orders_lake: Lake, postgres_uri: str) -> None:
    uri = schema_uri(postgres_uri, f"t_{uuid.uuid4().hex[:10]}")
    with Workbench(Config(lake_uri=orders_lake.uri, store_uri=uri)) as wb:
        wb.run(VIEW)
        conn = wb.store.conn  # type: ignore[attr-defined]
        types = dict(conn.execute(
            "SELECT column_name, format_type(atttypid, atttypmod) FROM information_schema.columns c "
            "JOIN pg_attribute a ON a.attname = c.column_name AND a.attrelid = %s::regclass "
            "WHERE table_schema = current_schema() AND table_name = %s", (f"{VIEW}__shadow", f"{VIEW}__shadow"),
        ).fetchall())
    assert types["order_id"] == "text" and types["total"] == "numeric(18,2)" and types["items"] == "bigint"


def test_cutover_is_atomic_for_concurrent_readers(orders_lake: Lake, postgres_uri: str) -> None:
    """A reader hammering the live view never sees it missing while cutovers and rollbacks swap it."""
    uri = schema_uri(postgres_uri, f"t_{uuid.uuid4().hex[:10]}")
    wb = Workbench(Config(lake_uri=orders_lake.uri, store_uri=uri))
    wb.run(VIEW)
    wb.cutover(VIEW, force=True)
    dsn, schema = split_schema(uri)
    stop, errors, counts = threading.Event(), [], []

    def reader() -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(psycopg.sql.SQL("SET search_path TO {}").format(psycopg.sql.Identifier(schema)))
            while not stop.is_set():
                try:
                    counts.append(conn.execute(f'SELECT count(*) FROM "{VIEW}"').fetchone()[0])  # type: ignore[index]
                except psycopg.Error as exc:
                    errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(6):
            wb.run(VIEW, full=True) if i % 2 == 0 else wb.run(VIEW, keys=["o-0000001"])
            wb.cutover(VIEW, force=True)
            wb.rollback(VIEW)
            wb.rollback(VIEW)
    finally:
        stop.set()
        thread.join()
        wb.close()
    assert errors == []
    assert len(counts) > 20 and set(counts) == {40}


def test_a_server_that_does_not_answer_is_a_store_error_a_job_may_retry(postgres_uri: str) -> None:
    """A server down or restarting at 3 a.m. is worth another try (``retryable``); a database that does not
    exist on a server that answered is not: running the same command again cannot help."""
    with pytest.raises(StoreError, match="cannot connect") as down:
        open_store("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(StoreError, match="cannot connect") as missing:
        open_store(with_database(postgres_uri, "no_such_database"))
    assert (down.value.retryable, missing.value.retryable) == (True, False)


def test_a_swap_that_would_leave_views_on_the_old_table_is_refused(orders_lake: Lake, postgres_uri: str) -> None:
    """A report's view on live followed the table into order_summary__previous at a full cutover (PostgreSQL
    binds a view to its table, not its name), so it went on showing the drifted rows; and the next cutover
    died with a traceback (cannot drop order_summary__previous: other objects depend on it), exit 1."""
    from rebuild.errors import StoreError

    with _live(orders_lake, postgres_uri, cutovers=2) as (wb, conn):  # live, and a previous to roll back to
        conn.execute(f'CREATE VIEW "paid report" AS SELECT sum(paid) AS paid FROM "{VIEW}"')
        wb.run(VIEW, full=True)
        with pytest.raises(StoreError, match=r"views \['paid report'\] read order_summary: PostgreSQL binds a view "
                                             r"to its table.*--keys"):
            wb.cutover(VIEW, force=True)
        with pytest.raises(StoreError, match=r"views \['paid report'\] read order_summary"):
            wb.rollback(VIEW)
        definition = conn.execute("SELECT pg_get_viewdef('\"paid report\"')").fetchone()[0]
        assert "__previous" not in definition and wb.store.exists(f"{VIEW}__shadow")
        wb.run(VIEW, keys=["o-0000001"])  # a patch changes live's rows, not its table: the view sees them
        wb.cutover(VIEW, force=True)
        wb.rollback(VIEW)
        assert "__previous" not in conn.execute("SELECT pg_get_viewdef('\"paid report\"')").fetchone()[0]


def test_a_drop_under_views_that_read_the_view_is_refused_whole(orders_lake: Lake, postgres_uri: str) -> None:
    """`rebuild drop` of a retired view that a report's view still reads: refused naming the views,
    before any table is dropped (PostgreSQL would refuse only at that table, CASCADE would drop the report)."""
    from rebuild.errors import StoreError
    from rebuild.projection import Registry

    with _live(orders_lake, postgres_uri, cutovers=2) as (wb, conn):
        conn.execute(f'CREATE VIEW "paid report" AS SELECT sum(paid) AS paid FROM "{VIEW}__previous"')
        wb.run(VIEW, full=True)
        with Workbench(wb.config, registry=Registry()) as retired:
            with pytest.raises(StoreError, match=r"views \['paid report'\] read order_summary__previous: drop them"):
                retired.drop(VIEW)
            assert all(retired.store.exists(t) for t in (VIEW, f"{VIEW}__shadow", f"{VIEW}__previous"))
            assert retired.store.views() == [VIEW]
            conn.execute('DROP VIEW "paid report"')
            assert set(retired.drop(VIEW)["tables"]) == {VIEW, f"{VIEW}__shadow", f"{VIEW}__previous"}
            assert retired.store.views() == [] and not retired.store.exists(VIEW)


def test_a_nul_character_postgresql_text_cannot_hold_is_a_store_error(orders_lake: Lake, postgres_uri: str,
                                                                      tmp_path) -> None:  # noqa: ANN001
    """JSON strings may hold \\u0000 (DuckDB and Parquet keep it); PostgreSQL's text cannot. The run
    failed with ADBC's traceback (exit 1); now a store error names the view, the column and the fix."""
    from rebuild import StoreError
    from tests.conftest import write_ndjson
    from tests.orders import order_events

    import lake

    events = order_events(900, items=0, ship=False)
    events[0]["payload"]["customer_id"] = "c-\x00042"
    lake.ingest(orders_lake, [write_ndjson(tmp_path / "nul.ndjson", events)], stream="orders")
    uri = schema_uri(postgres_uri, f"t_{uuid.uuid4().hex[:10]}")
    with Workbench(Config(lake_uri=orders_lake.uri, store_uri=uri)) as wb:
        with pytest.raises(StoreError, match=r"PostgreSQL cannot store the NUL character .* column customer_id"):
            wb.run(VIEW, progress="none")
        assert not wb.store.exists(f"{VIEW}__shadow")


def _as_role(dsn: str, schema: str, role: str, sql: str) -> object:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("SET ROLE {}").format(psycopg.sql.Identifier(role)))
        return conn.execute(psycopg.sql.SQL(sql).format(psycopg.sql.Identifier(schema))).fetchone()[0]  # type: ignore[index]


def _surroundings(conn: psycopg.Connection, table: str) -> dict[str, object]:  # type: ignore[type-arg]
    oid = conn.execute("SELECT %s::regclass::oid", (f'"{table}"',)).fetchone()[0]  # type: ignore[index]
    return {
        "indexes": sorted(r[0] for r in conn.execute(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = %s", (oid,)).fetchall()),
        "constraints": sorted(conn.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                                           "WHERE conrelid = %s", (oid,)).fetchall()),
        "comment": conn.execute("SELECT obj_description(%s, 'pg_class'), col_description(%s, 1)", (oid, oid)).fetchone(),
        "owner": conn.execute("SELECT relowner::regrole::text FROM pg_class WHERE oid = %s", (oid,)).fetchone()[0],  # type: ignore[index]
    }


def test_a_full_cutover_keeps_lives_grants_owner_comments_constraints_and_indexes(orders_lake: Lake,
                                                                                   postgres_uri: str) -> None:
    """A full cutover renamed live away and the shadow (a plain CREATE TABLE) to live: the BI role's
    SELECT failed with "permission denied", the primary key, indexes, comments and owner were gone."""
    tag = uuid.uuid4().hex[:8]
    reader, owner, schema = f"bi_{tag}", f"owner_{tag}", f"t_{tag}"
    uri = schema_uri(postgres_uri, schema)
    dsn, _ = split_schema(uri)
    with Workbench(Config(lake_uri=orders_lake.uri, store_uri=uri)) as wb:
        wb.run(VIEW)
        wb.cutover(VIEW, force=True)
        conn = wb.store.conn  # type: ignore[attr-defined]
        for sql in (f'CREATE ROLE "{reader}"', f'CREATE ROLE "{owner}"', f'GRANT USAGE ON SCHEMA "{schema}" TO "{reader}"',
                    f'GRANT CREATE ON SCHEMA "{schema}" TO "{owner}"', f'GRANT SELECT ON "{VIEW}" TO "{reader}"',
                    f'GRANT SELECT (order_id) ON "{VIEW}" TO PUBLIC', f'ALTER TABLE "{VIEW}" OWNER TO "{owner}"',
                    f'ALTER TABLE "{VIEW}" ADD PRIMARY KEY (order_id)', f'CREATE INDEX by_customer ON "{VIEW}" (customer_id)',
                    f'ALTER TABLE "{VIEW}" ADD CONSTRAINT paid_ok CHECK (paid >= 0)',
                    f"COMMENT ON TABLE \"{VIEW}\" IS 'orders, 100% of them'", f"COMMENT ON COLUMN \"{VIEW}\".order_id IS 'o-'"):
            conn.execute(sql)
        before = _surroundings(conn, VIEW)
        count = f'SELECT count(*) FROM {{}}."{VIEW}"'
        wb.run(VIEW, full=True)
        wb.cutover(VIEW, force=True)
        assert _as_role(dsn, schema, reader, count) == 40
        assert _surroundings(conn, VIEW) == before
        assert conn.execute(f'SELECT has_column_privilege(\'public\', \'"{VIEW}"\', \'order_id\', \'SELECT\')').fetchone()[0]
        previous = _surroundings(conn, f"{VIEW}__previous")  # still indexed, under names of its own
        assert [c for c, _ in previous["constraints"]] == ["order_summary_pkey__previous", "paid_ok"]  # type: ignore[attr-defined]
        for _ in range(2):  # back and forth: live always has them under live's names
            wb.rollback(VIEW)
            assert _as_role(dsn, schema, reader, count) == 40
            assert _surroundings(conn, VIEW) == before


def test_a_full_cutover_whose_rows_break_lives_constraint_is_refused(orders_lake: Lake, postgres_uri: str) -> None:
    from rebuild.errors import StoreError

    with _live(orders_lake, postgres_uri) as (wb, conn):
        conn.execute(f"DELETE FROM \"{VIEW}\" WHERE status = 'refunded'")
        conn.execute(f"ALTER TABLE \"{VIEW}\" ADD CONSTRAINT no_refunds CHECK (status <> 'refunded')")
        wb.run(VIEW, full=True)
        with pytest.raises(StoreError, match=r"the rows becoming live order_summary break live's constraint no_refunds "
                                             r"\(CHECK .*nothing was changed. Fix the projection"):
            wb.cutover(VIEW, force=True)
        assert wb.store.count(VIEW) == 32 and wb.store.exists(f"{VIEW}__shadow")


def test_a_full_swap_refuses_what_it_cannot_carry(orders_lake: Lake, postgres_uri: str) -> None:
    """A trigger on live, or another table's foreign key to it, stayed with the table renamed to previous
    (and the next cutover could not drop previous under the foreign key)."""
    from rebuild.errors import StoreError

    with _live(orders_lake, postgres_uri, cutovers=2) as (wb, conn):  # live, and a previous to roll back to
        conn.execute(f'ALTER TABLE "{VIEW}" ADD PRIMARY KEY (order_id)')
        conn.execute(f'CREATE TABLE notes (order_id text REFERENCES "{VIEW}", note text)')
        conn.execute("CREATE FUNCTION audit() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'")
        conn.execute(f'CREATE TRIGGER audited BEFORE UPDATE ON "{VIEW}" FOR EACH ROW EXECUTE FUNCTION audit()')
        wb.run(VIEW, full=True)
        for swap in (lambda: wb.cutover(VIEW, force=True), lambda: wb.rollback(VIEW)):
            with pytest.raises(StoreError, match=r"order_summary has triggers \['audited'\], foreign keys pointing at it "
                                                 r"\['notes.notes_order_id_fkey'\]: .*--keys"):
                swap()
        assert wb.store.exists(f"{VIEW}__shadow") and wb.store.count(VIEW) == 40
        assert conn.execute("SELECT confrelid::regclass::text FROM pg_constraint WHERE contype = 'f'").fetchone()[0] == VIEW


def test_an_index_on_a_column_the_full_rebuild_dropped_is_left_with_the_old_table(orders_lake: Lake, postgres_uri: str,
                                                                                  caplog: pytest.LogCaptureFixture) -> None:
    with _live(orders_lake, postgres_uri) as (wb, conn):
        conn.execute(f'ALTER TABLE "{VIEW}" ADD COLUMN legacy text')
        conn.execute(f'CREATE INDEX by_legacy ON "{VIEW}" (legacy)')
        conn.execute(f'CREATE INDEX by_status ON "{VIEW}" (status)')
        wb.run(VIEW, full=True)
        wb.cutover(VIEW, force=True)  # the rebuild replaces live whole, its columns too
        indexes = {r[0] for r in conn.execute(f"SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = '\"{VIEW}\"'::regclass")}
        assert indexes == {"by_status"}
        assert "live order_summary's index by_legacy (USING btree (legacy)) is not carried" in caplog.text


@contextlib.contextmanager
def _live(orders_lake: Lake, postgres_uri: str, cutovers: int = 1) -> Iterator[tuple[Workbench, Any]]:
    """A workbench on a schema of its own whose view went live ``cutovers`` times, and its connection."""
    uri = schema_uri(postgres_uri, f"t_{uuid.uuid4().hex[:10]}")
    with Workbench(Config(lake_uri=orders_lake.uri, store_uri=uri)) as wb:
        for _ in range(cutovers):
            wb.run(VIEW, full=True)
            wb.cutover(VIEW, force=True)
        yield wb, wb.store.conn  # type: ignore[attr-defined]


def test_a_patch_is_matched_to_live_by_a_hash_join_not_a_nested_loop(postgres_uri: str, tmp_path, monkeypatch) -> None:
    """A patch's scope was matched with ``IS NOT DISTINCT FROM``, which PostgreSQL joins only in a
    nested loop, every live row against every key of the scope: a 2,000-key patch of a 50,000-row view
    took 20 s to cut over and as long to roll back; at 10M rows it would take days. Every statement
    of the cutover and the rollback that matches a scope is explained before it runs."""
    from tests.stores.synthetic import synthetic_lake

    source = synthetic_lake(tmp_path / "lake", 20_000)
    uri = schema_uri(postgres_uri, f"t_{uuid.uuid4().hex[:10]}")
    with Workbench(Config(lake_uri=source.uri, store_uri=uri)) as wb:
        wb.run(VIEW, full=True)
        wb.cutover(VIEW, force=True)
        keys = [r[0] for r in wb.store.conn.execute(f"SELECT order_id FROM {VIEW} ORDER BY md5(order_id) LIMIT 1000").fetchall()]  # type: ignore[attr-defined]
        patch = wb.run(VIEW, keys=keys)
        assert patch.record.rows_written == 1000
        plans: list[str] = []
        execute, query = wb.store._exec, wb.store._query  # type: ignore[attr-defined]

        def explained(run: Any) -> Any:
            def run_explained(sql: str) -> Any:
                if " s WHERE s." in sql:  # a scope_match
                    plans.append("\n".join(r[0] for r in query(f"EXPLAIN {sql}")))
                return run(sql)
            return run_explained

        monkeypatch.setattr(wb.store, "_exec", explained(execute))
        monkeypatch.setattr(wb.store, "_query", explained(query))
        wb.cutover(VIEW, force=True)
        wb.rollback(VIEW)
    assert len(plans) >= 4  # live's replaced rows kept, deleted; rolled back: kept, deleted
    assert all("Hash" in plan and "Nested Loop" not in plan for plan in plans), plans


def test_a_scope_holding_null_still_matches_lives_null_key_rows(postgres_uri: str) -> None:
    """Only a scope without NULL is matched with ``=``: one that holds a NULL key (a live view made
    outside the workbench can have such rows) replaces live's NULL-key row as before."""
    store = open_store(schema_uri(postgres_uri, f"t_{uuid.uuid4().hex[:10]}"))
    try:
        con = store.compute()
        con.execute("CREATE TEMP TABLE full_rows AS SELECT * FROM (VALUES ('a', 1), ('b', 2), (NULL, 3)) v(k, n)")
        con.execute("CREATE TEMP TABLE patch AS SELECT * FROM (VALUES ('b', 20), (NULL, 30)) v(k, n)")
        con.execute("CREATE TEMP TABLE patch_scope AS SELECT k FROM patch")
        store.publish(con, "v", "full_rows", None, (), ("k",), record_maker("v"))
        store.cutover("v", "bench-v-full", forced=True)
        store.publish(con, "v", "patch", "patch_scope", ("k",), ("k",), record_maker("v", "keys"))
        store.cutover("v", "bench-v-keys", forced=True)
        assert sorted(store.read("v").to_pylist(), key=str) == sorted(
            [{"k": "a", "n": 1}, {"k": "b", "n": 20}, {"k": None, "n": 30}], key=str)
    finally:
        store.close()



def test_a_merge_catch_up_reads_lives_rows_of_its_new_events_keys_not_all_of_live(orders_lake: Lake, postgres_uri: str,
                                                                                   tmp_path, monkeypatch) -> None:
    """A merge catch-up copied all of live out of PostgreSQL to add its new events' sums to: at 1M live
    rows, 0.45 s of a 0.6 s catch-up of 1,000 new orders, growing with live, and all of live in memory.
    The new events' keys are matched in PostgreSQL; only live's rows of them travel."""
    registry = Registry()
    projection(name="per_order", key="order_id", incremental="merge", merge={"events": "sum"},
               payload={"order_id": "VARCHAR"}, registry=registry)(
        lambda: "SELECT order_id, count(*) AS events FROM events GROUP BY ALL")
    config = Config(lake_uri=orders_lake.uri, store_uri=schema_uri(postgres_uri, f"t_{uuid.uuid4().hex[:10]}"),
                    projection_modules=(), reports_dir=str(tmp_path / "reports"))
    with Workbench(config, registry=registry) as wb:
        wb.run("per_order", full=True)
        wb.cutover("per_order", force=True)
        before = dict(wb.store.conn.execute("SELECT order_id, events FROM per_order").fetchall())  # type: ignore[attr-defined]
        later = [e for o in (3, 7) for e in order_events(o, items=0, ship=False, first_seq=50)] + order_events(100)
        lake.ingest(wb.lake, [write_ndjson(tmp_path / "later.ndjson", later)], stream="orders")
        read, travelled = wb.store.read, []

        def counted(table: str, scope: str | None = None) -> Any:
            data = read(table, scope)  # type: ignore[call-arg]
            travelled.append((table, data.num_rows))
            return data

        monkeypatch.setattr(wb.store, "read", counted)
        assert wb.run("per_order").record.strategy == "merge"
        wb.cutover("per_order", force=True)
        after = dict(wb.store.conn.execute("SELECT order_id, events FROM per_order").fetchall())  # type: ignore[attr-defined]
    assert travelled == [("per_order", 2)]  # of live's 40 rows, those of o-0000003 and o-0000007
    assert after == {**before, "o-0000003": before["o-0000003"] + 2, "o-0000007": before["o-0000007"] + 2,
                     "o-0000100": len(order_events(100))}


def test_a_cutover_waits_no_longer_than_its_lock_timeout_for_a_session_reading_live(orders_lake: Lake, postgres_uri: str,
                                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A full cutover renames live, so it waits for every session that read live in a transaction still
    open (a notebook's, a BI tool's); meanwhile PostgreSQL queues every new reader of live behind it. The
    cutover hung until that session ended, and live could not be read by anyone. It now gives up after
    ``LOCK_TIMEOUT`` (the new reader gets its rows then), names the session, and changes nothing."""
    monkeypatch.setattr(postgres_store, "LOCK_ATTEMPTS", 1)  # the last attempt's answer (the next test: the others)
    with _live(orders_lake, postgres_uri) as (wb, _):
        wb.run(VIEW, full=True)
        shadow = wb.store.checkpoint(VIEW, "shadow")
        idle = psycopg.connect(wb.store.dsn)  # type: ignore[attr-defined]
        idle.execute(f"SELECT count(*) FROM {wb.store.schema}.{VIEW}").fetchall()  # type: ignore[attr-defined]
        pid = idle.info.backend_pid
        outcome: dict[str, Any] = {}

        def cutover() -> None:
            try:
                wb.cutover(VIEW, force=True)
            except StoreError as exc:
                outcome["error"] = exc

        def read() -> None:
            with psycopg.connect(wb.store.dsn, autocommit=True) as reader:  # type: ignore[attr-defined]
                outcome["rows"] = reader.execute(f"SELECT count(*) FROM {wb.store.schema}.{VIEW}").fetchall()[0][0]  # type: ignore[attr-defined]

        threads = [threading.Thread(target=cutover, daemon=True), threading.Thread(target=read, daemon=True)]
        threads[0].start()
        with psycopg.connect(wb.store.dsn, autocommit=True) as watcher:  # type: ignore[attr-defined]
            while not watcher.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'").fetchone()[0]:  # type: ignore[index]
                # a cutover that gave up unseen (a stalled machine) would leave this loop waiting forever
                assert threads[0].is_alive(), f"the cutover ended before it was seen waiting for live: {outcome}"
                time.sleep(0.05)  # the cutover waits for live
        threads[1].start()
        for thread in threads:
            thread.join(30)
        waited = [thread.is_alive() for thread in threads]
        idle.close()  # its transaction ends: a cutover still waiting goes on
        for thread in threads:
            thread.join()
        assert waited == [False, False]  # both returned while the session still held live
        assert outcome["rows"] == 40
        # the new reader, granted live once the cutover gave up, may be named beside the idle session
        assert re.search(rf"pid {pid} \(\w+, no application name, idle in transaction since [\d: -]+\) on {VIEW}[;)]"
                         rf".* waits at most {LOCK_TIMEOUT} \(lock_timeout= in the store URI\), and nothing was changed\. Rerun the command once they have "
                         rf"finished \(or end them: SELECT pg_terminate_backend\([\d, ]*\b{pid}\b[\d, ]*\)\)", str(outcome["error"]))
        assert wb.store.checkpoint(VIEW, "shadow") == shadow  # nothing changed: cut over now
        wb.cutover(VIEW, force=True)


def test_a_cutover_held_up_by_a_reader_tries_again_and_goes_through_once_the_reader_is_done(
        orders_lake: Lake, postgres_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Giving up after ``LOCK_TIMEOUT`` keeps live readable, but a report query running at 3 a.m. would
    then fail the night's cutover: it pauses (the readers go on) and tries again, and goes through once
    the session reading live has ended, here as soon as the first try has given up."""
    monkeypatch.setattr(postgres_store, "LOCK_PAUSE", 0.2)
    with _live(orders_lake, postgres_uri) as (wb, _):
        wb.run(VIEW, full=True)
        idle = psycopg.connect(wb.store.dsn)  # type: ignore[attr-defined]
        idle.execute(f"SELECT count(*) FROM {wb.store.schema}.{VIEW}").fetchall()  # type: ignore[attr-defined]

        class EndTheReader(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if "trying again" in record.getMessage():
                    idle.close()

        handler = EndTheReader()
        postgres_store.log.addHandler(handler)
        try:
            live = wb.cutover(VIEW, force=True)
        finally:
            postgres_store.log.removeHandler(handler)
        assert idle.closed and live.run_id == wb.store.checkpoint(VIEW, "live").run_id  # type: ignore[union-attr]
        assert wb.store.checkpoint(VIEW, "shadow") is None


def test_the_store_uri_sets_how_long_a_change_waits_for_a_table(postgres_uri: str) -> None:
    """The 3 s wait was fixed: a database with long report queries on live could only fail its cutovers.
    ``?lock_timeout=`` in the store URI sets it (libpq never sees the parameter); a value PostgreSQL
    would refuse is refused when the store opens, naming the parameter."""
    uri = schema_uri(postgres_uri, f"t_{uuid.uuid4().hex[:10]}") + "&lock_timeout=250ms"
    store = open_store(uri)
    try:
        assert "lock_timeout" not in store.dsn  # type: ignore[attr-defined]
        with store._transaction():  # type: ignore[attr-defined]
            assert store._query("SHOW lock_timeout") == [("250ms",)]  # type: ignore[attr-defined]
    finally:
        store.close()
    with pytest.raises(StoreError, match=r"lock_timeout='3 seconds' in the store URI is not a PostgreSQL time: give one like 3s"):
        open_store(schema_uri(postgres_uri, "public") + "&lock_timeout=3 seconds")


def _typed_bench(orders_lake: Lake, postgres_uri: str, columns: str, reports: Path,
                 payload: dict[str, str] | None = None) -> Workbench:
    """A workbench on a schema of its own with the view ``typed``: each order's key and ``columns``."""
    registry = Registry()
    projection(name="typed", key="order_id", payload=payload, registry=registry)(
        lambda: f"SELECT partition_key AS order_id, {columns} FROM events GROUP BY partition_key")
    uri = schema_uri(postgres_uri, f"t_{uuid.uuid4().hex[:10]}")
    config = Config(lake_uri=orders_lake.uri, store_uri=uri, projection_modules=(), reports_dir=str(reports))
    return Workbench(config, registry=registry)


def test_uuid_enum_and_coarse_timestamp_columns_go_to_postgresql_and_back_unchanged(orders_lake: Lake,
                                                                                     postgres_uri: str,
                                                                                     tmp_path: Path) -> None:
    """A UUID column, mapped to uuid, failed every run ("incorrect binary data format": COPY got it as text);
    an ENUM (a Polars Categorical), a TIMESTAMP_MS or TIMESTAMP_S and an all-NULL column were refused as
    having no PostgreSQL type, naming no column. They go as uuid, text, timestamp and text now."""
    columns = ("md5(partition_key)::UUID AS uid, 'web'::ENUM('web', 'app') AS channel, "
               "min(event_time)::TIMESTAMP_MS AS placed_ms, min(event_time)::TIMESTAMP_S AS placed_s, NULL AS nothing")
    with _typed_bench(orders_lake, postgres_uri, columns, tmp_path / "reports") as wb:
        wb.run("typed", full=True, progress="none")
        wb.cutover("typed", force=True)
        wb.run("typed", keys=["o-0000001"], progress="none")
        report = wb.check("typed")
        assert report.verdict.passed and report.diff.changed_rows == 0, report.verdict.reasons
        wb.cutover("typed")
        conn = wb.store.conn  # type: ignore[attr-defined]
        rows = conn.execute("SELECT order_id, uid::text, channel, placed_ms, placed_s, nothing FROM typed "
                            "ORDER BY order_id").fetchall()
        types = conn.execute("SELECT string_agg(format_type(atttypid, atttypmod), ',' ORDER BY attnum) FROM pg_attribute "
                             "WHERE attrelid = 'typed'::regclass AND attnum > 0").fetchone()[0]
    assert types == "text,uuid,text,timestamp without time zone,timestamp without time zone,text"
    first = min(e["event_time"] for e in order_events(0))  # order 0 is placed at T0
    assert rows[0][:5] == ("o-0000000", str(uuid.UUID(hashlib.md5(b"o-0000000").hexdigest())), "web",
                           datetime.fromisoformat(first).replace(tzinfo=None), T0.replace(tzinfo=None))
    assert len(rows) == 40 and {r[5] for r in rows} == {None}


@pytest.mark.parametrize(("columns", "problem"), [
    ("min(event_time)::TIMESTAMP_NS AS placed_ns",
     r"column placed_ns of typed's rows: PostgreSQL has no type for DuckDB's TIMESTAMP_NS; cast the column in the "
     r"projection, e.g. to TIMESTAMP \(PostgreSQL keeps microseconds\)"),
    ("170141183460469231731687303715884105727::HUGEINT - count(*) AS huge",
     r"typed's rows cannot go to PostgreSQL: Conversion Error: Could not cast value 1701411834604692317316873037158841"
     r"057\d\d to DECIMAL\(38,0\) when casting from source column huge; cast that column"),
    (f'count(*) AS "{"items_" * 11}"',  # was a traceback (exit 70): PostgreSQL cut the name to 63 bytes
     r"column 'items_items_.*' of typed's rows has a name of 66 bytes, and PostgreSQL's names hold at most 63: "
     r"name it shorter"),
])
def test_a_column_postgresql_cannot_hold_is_refused_naming_it(orders_lake: Lake, postgres_uri: str, columns: str,
                                                              problem: str, tmp_path: Path) -> None:
    """A TIMESTAMP_NS column was refused naming neither the column nor the view; a HUGEINT past 38 digits
    failed with DuckDB's ConversionException (an internal error, exit 70)."""
    with _typed_bench(orders_lake, postgres_uri, columns, tmp_path / "reports") as wb:
        with pytest.raises(StoreError, match=problem):
            wb.run("typed", full=True, progress="none")
        assert not wb.store.exists("typed__shadow") and wb.store.runs() == []


def test_any_refusal_of_the_rows_by_postgresql_is_told_with_its_message(orders_lake: Lake, postgres_uri: str,
                                                                        tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A refusal ADBC raises as neither DataError nor OperationalError (here PostgreSQL cut a 66-byte
    column name, with the workbench's own check of names lifted) left DuckDB's result open, and the
    run failed with DuckDB's 'connection has an open result' instead (exit 70)."""
    from rebuild.store import postgres_store

    monkeypatch.setattr(postgres_store, "MAX_NAME", 1000)
    with _typed_bench(orders_lake, postgres_uri, f'count(*) AS "{"items_" * 11}"', tmp_path / "reports") as wb:
        with pytest.raises(StoreError, match=r"^PostgreSQL refused the rows of typed's rows: .*items_items_"):
            wb.run("typed", full=True, progress="none")
        assert not wb.store.exists("typed__shadow") and wb.store.runs() == []


def test_a_view_name_too_long_for_its_postgresql_tables_is_refused_before_the_replay(orders_lake: Lake,
                                                                                      postgres_uri: str) -> None:
    """A projection may be named with up to 63 characters, but PostgreSQL cuts names past 63 bytes: for a
    55-character name VIEW__incoming and VIEW__incoming_scope were one table, and every patch failed with
    'relation ...__incomi does not exist' (exit 70) after its replay."""
    registry = Registry()
    name = "v" + "_x" * 27
    projection(name=name, key="order_id", registry=registry)(
        lambda: "SELECT partition_key AS order_id, count(*) AS n FROM events GROUP BY ALL")
    projection(name="v" + "_x" * 23, key="order_id", registry=registry)(
        lambda: "SELECT partition_key AS order_id, count(*) AS n FROM events GROUP BY ALL")
    uri = schema_uri(postgres_uri, f"t_{uuid.uuid4().hex[:10]}")
    with Workbench(Config(lake_uri=orders_lake.uri, store_uri=uri, projection_modules=()), registry=registry) as wb:
        for run in ({"full": True}, {"keys": ["o-0000001"]}):
            with pytest.raises(StoreError, match=rf"^view '{name}' has a name of 55 bytes: its tables in PostgreSQL, "
                                                 rf"such as {name}__previous_scope, must fit PostgreSQL's 63-byte "
                                                 r"names, so a view name holds at most 47 there"):
                wb.run(name, progress="none", **run)
        assert wb.store.runs() == []
        fits = "v" + "_x" * 23  # 47 characters
        wb.run(fits, full=True, progress="none")
        wb.cutover(fits, force=True)
        wb.run(fits, keys=["o-0000001"], progress="none")
        wb.cutover(fits, force=True)
        assert wb.store.count(fits) == wb.store.count(f"{fits}__previous") + 39


def test_a_numeric_column_without_a_precision_is_compared_as_numbers(orders_lake: Lake, postgres_uri: str,
                                                                    tmp_path: Path) -> None:
    """A live view made elsewhere with ``numeric`` columns (no precision, as PostgreSQL users often declare
    them) was read as text: its 10.5 differed from the rebuilt 10.50, and a tolerance on it was refused."""
    columns = "sum(amount)::DECIMAL(18,2) AS paid, sum(amount)::DOUBLE AS ratio"
    with _typed_bench(orders_lake, postgres_uri, columns, tmp_path / "reports", {"amount": "DECIMAL(18,2)"}) as wb:
        wb.run("typed", full=True, progress="none")
        conn = wb.store.conn  # type: ignore[attr-defined]
        conn.execute("CREATE TABLE typed (order_id text, paid numeric, ratio numeric)")
        for row in wb.store.read("typed__shadow").to_pylist():  # as a consumer writes them: 10.5, not 10.50
            paid = float(row["paid"]) + (0.004 if row["order_id"] == "o-0000003" else 0)
            conn.execute("INSERT INTO typed VALUES (%s, %s::numeric, %s::numeric)", (row["order_id"], paid, row["ratio"]))
        assert conn.execute("SELECT paid::text FROM typed WHERE order_id = 'o-0000000'").fetchone() == ("10.5",)
        exact = wb.check("typed").diff
        loose = wb.check("typed", tolerance=["paid=0.01"]).diff
    assert exact.changed_by_column == {"paid": 1, "ratio": 0} and exact.samples["changed"][0]["order_id"] == "o-0000003"
    assert loose.changed_rows == 0


def _rows_scanned(plan: dict[str, Any]) -> int:
    """Rows a plan's scans read (returned, and removed by their filter), over all its nodes."""
    own = plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0) if "Scan" in plan["Node Type"] else 0
    return int(own) + sum(_rows_scanned(p) for p in plan.get("Plans", ()))


def test_a_nights_statements_read_few_run_records_of_a_long_history(orders_lake: Lake, postgres_uri: str,
                                                                     tmp_path) -> None:
    """A year of hourly runs of a few views leaves tens of thousands of run records. `rebuild runs` and each
    publish's settling of the view's earlier shadow scanned all of them (150,000: 91 ms and 44 ms, growing
    with age); indexes let every statement of a run, a cutover and the listings read a view's few rows."""
    config = Config(lake_uri=orders_lake.uri, store_uri=schema_uri(postgres_uri, f"t_{uuid.uuid4().hex[:10]}"),
                    projection_modules=("rebuild.examples",), reports_dir=str(tmp_path / "reports"))
    with Workbench(config) as wb:
        wb.run(VIEW, full=True)
        wb.cutover(VIEW, force=True)
        history = 20_000
        wb.store._exec(  # type: ignore[attr-defined]
            "INSERT INTO _rebuild_runs SELECT 'old-' || g, 'view_' || (g % 4), mode, strategy, kind, 'previous', plan, "
            "lake_version, delta_version, projection_version, fingerprint, events_read, rows_written, scope_rows, "
            "started_at - g * INTERVAL '1 hour', finished_at - g * INTERVAL '1 hour', seconds, forced, verdict, report, "
            f"error FROM _rebuild_runs, generate_series(1, {history}) g")
        wb.store._exec("ANALYZE _rebuild_runs")  # type: ignore[attr-defined]
        sent: list[str] = []

        def recorded(real: Any) -> Any:
            def send(sql: str) -> Any:
                sent.append(sql)
                return real(sql)
            return send

        for name in ("_exec", "_query"):
            setattr(wb.store, name, recorded(getattr(wb.store, name)))
        lake.ingest(wb.lake, [write_ndjson(tmp_path / "later.ndjson", order_events(100))], stream="orders")
        wb.run(VIEW)
        wb.cutover(VIEW, force=True)
        wb.runs(VIEW)
        wb.runs()
        conn = wb.store.conn  # type: ignore[attr-defined]
        scanned = {}
        for sql in {s for s in sent if "_rebuild_runs" in s and s.lstrip().startswith(("SELECT", "UPDATE", "DELETE"))}:
            conn.execute("BEGIN")
            try:
                scanned[sql] = _rows_scanned(conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}".encode()).fetchall()[0][0][0]["Plan"])
            finally:
                conn.execute("ROLLBACK")
    assert len(scanned) >= 5 and max(scanned.values()) < 500, sorted(scanned.items(), key=lambda s: -s[1])[:3]


def test_a_store_made_before_its_indexes_opens_for_a_role_that_does_not_own_its_tables(
        postgres_uri: str, caplog: pytest.LogCaptureFixture) -> None:
    """Only the tables' owner can index them: the first command after the upgrade as another role (a job's
    user, granted the tables) failed with "must be owner of table _rebuild_runs", as every one after it."""
    tag = uuid.uuid4().hex[:8]
    schema, role = f"t_{tag}", f"job_{tag}"
    made = open_store(schema_uri(postgres_uri, schema))
    for name, _, _ in postgres_store.META_INDEXES:  # as a store made before them
        made._exec(f"DROP INDEX {name}")  # type: ignore[attr-defined]
    made.close()
    with psycopg.connect(postgres_uri, autocommit=True) as conn:
        for sql in (f'CREATE ROLE "{role}" LOGIN', f'GRANT CREATE ON DATABASE "{conn.info.dbname}" TO "{role}"',
                    f'GRANT USAGE, CREATE ON SCHEMA "{schema}" TO "{role}"',
                    f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"'):
            conn.execute(sql)
    parts = urlsplit(postgres_uri)
    as_job = urlunsplit(parts._replace(netloc=f"{role}@{parts.netloc.rpartition('@')[2]}"))
    with caplog.at_level(logging.WARNING, logger=postgres_store.__name__):
        store = open_store(schema_uri(as_job, schema))
    try:
        assert store.runs() == [] and "only the owner of _rebuild_runs" in caplog.text
    finally:
        store.close()
    open_store(schema_uri(postgres_uri, schema)).close()  # the owner's next command makes them
    with psycopg.connect(postgres_uri) as conn:
        made_now = conn.execute("SELECT count(*) FROM pg_indexes WHERE schemaname = %s AND indexname = ANY(%s)",
                                (schema, [n for n, _, _ in postgres_store.META_INDEXES])).fetchone()
    assert made_now == (len(postgres_store.META_INDEXES),)
