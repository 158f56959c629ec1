"""A synthetic order lake made with DuckDB SQL (no Python per event), for store and spill tests.

Each order gets ``OrderPlaced``, two to five ``ItemAdded``, ``PaymentAuthorized`` and, for most,
``OrderShipped``; event times are spread over ``days`` days from ``start`` so chunked backfills
have something in every chunk. The same arguments always give the same events.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pyarrow as pa

import lake
from lake.schema import STORED_SCHEMA, bucket_sql
from lake.sql import literal
from lake.table import EVENTS

START = datetime(2026, 9, 1, tzinfo=UTC)


def events_sql(orders: int, days: int = 10, start: datetime = START, first: int = 0) -> str:
    """SQL returning the envelope fields of ``orders`` orders (ids ``first`` .. ``first+orders-1``)."""
    return f"""
    WITH o AS (
        SELECT i AS n, printf('o-%07d', i) AS key,  -- at least 7 digits, never cut (lpad would cut)
               'c-' || lpad((i % 997)::VARCHAR, 6, '0') AS customer,
               ['EUR', 'USD', 'GBP'][1 + i % 3] AS currency, 2 + i % 4 AS items,
               {literal(start)} + to_microseconds(CAST((hash(i) % ({int(days)} * 86400000000)) AS BIGINT)) AS t0
        FROM range({int(first)}, {int(first + orders)}) r(i)
    ), e AS (
        SELECT o.*, s AS sequence,
               CASE WHEN s = 1 THEN 'OrderPlaced' WHEN s <= items + 1 THEN 'ItemAdded'
                    WHEN s = items + 2 THEN 'PaymentAuthorized' ELSE 'OrderShipped' END AS event_type
        FROM o, range(1, items + 3 + CASE WHEN n % 5 = 0 THEN 0 ELSE 1 END) t(s)
    )
    SELECT 'ev-' || key || '-' || sequence AS event_id, key AS partition_key, sequence, event_type,
           t0 + to_microseconds(sequence * 3600000000) AS event_time,
           json_object('order_id', key, 'customer_id', customer, 'currency', currency,
                       'quantity', CASE WHEN event_type = 'ItemAdded' THEN 2 END,
                       'unit_price', CASE WHEN event_type = 'ItemAdded' THEN 1.25 + sequence END,
                       'amount', CASE WHEN event_type = 'PaymentAuthorized' THEN 2 * (1.25 * items + (items + 1) * (items + 2) / 2 - 1) END
                       )::VARCHAR AS payload
    FROM e
    """


def synthetic_lake(path: Path, orders: int, days: int = 10, *, first: int = 0, target: lake.Lake | None = None) -> lake.Lake:
    """A lake at ``path`` (or ``target``) with ``orders`` synthetic orders added in one commit.

    The events are valid by construction, so they are written straight into the events table
    (one Delta commit, under the lake's commit lock) instead of through the ingest's checks:
    millions of events in seconds.
    """
    the_lake = target or lake.Lake(path).create()
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    with the_lake.commit_lock():
        version = the_lake.next_version()
        sql = f"""
            SELECT event_id, 'orders' AS stream, partition_key, sequence, event_type, event_time,
                   {literal(START)} AS ingested_at, {int(version)}::BIGINT AS lake_version,
                   1::INTEGER AS schema_version, payload, NULL::VARCHAR AS metadata,
                   {bucket_sql("partition_key", the_lake.buckets)} AS bucket
            FROM ({events_sql(orders, days, first=first)})
        """
        reader = con.sql(sql).to_arrow_reader(500_000)
        data = pa.RecordBatchReader.from_batches(
            STORED_SCHEMA, (b.cast(STORED_SCHEMA) for b in reader)
        )
        the_lake.write(EVENTS, data, expected_version=version, operation="synthetic")
    con.close()
    return the_lake
