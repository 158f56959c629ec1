"""A realistic order-domain sample lake with known anomalies, written through the real ingest.

The domain (a contract: the example projections depend on it) is one stream, ``orders``, keyed
by the order id (``o-0000001``), sequences 1, 2, 3, ... per order. An order is placed
(``OrderPlaced``), gets 1-5 items (``ItemAdded``; rare bulk orders get 10-40), sometimes loses one
(``ItemRemoved``), maybe fails a payment (``PaymentFailed``), is paid (``PaymentAuthorized``, the
order total at that time), and ends ``OrderShipped`` or ``OrderCancelled``; a few shipped orders
are refunded later (``RefundIssued``). Every payload has ``order_id``, ``customer_id`` and
``currency``. Orders still open at the end of the period simply stop (in progress).

Everything is drawn with numpy and formatted with pyarrow (no Python per event), from one seed,
and the clock is fixed (the history ends at :data:`END`), so one seed always gives the same lake.
The events are delivered as one ingest commit per simulated day (``ingested_at`` = the end of
that day) with anomalies in known numbers: duplicates (same day and a later day), late events,
out-of-order arrival, conflicts, sequence gaps and poison records. ``SampleResult`` says how many.
"""

from __future__ import annotations

import contextlib
import ctypes
import html
import importlib
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from rich.console import Console
from rich.markup import escape

from lake.errors import LakeError
from lake.ingest import Batch, ingest_batches
from lake.mapping import Mapping
from lake.render import html_table
from lake.table import Lake

log = logging.getLogger(__name__)

END = datetime(2026, 10, 1, tzinfo=UTC)
LATE_AFTER = timedelta(days=2)
DAY = 86_400_000_000  # microseconds
SECOND = 1_000_000
END_US = int(END.timestamp()) * SECOND
LATE_US = LATE_AFTER // timedelta(microseconds=1)
STREAMS = ("orders",)

TYPES = (
    "OrderPlaced", "ItemAdded", "ItemRemoved", "PaymentAuthorized",
    "PaymentFailed", "OrderShipped", "OrderCancelled", "RefundIssued",
)  # fmt: skip
PLACED, ADDED, REMOVED, AUTHORIZED, FAILED, SHIPPED, CANCELLED, REFUNDED = range(8)
CURRENCIES = ("EUR", "USD", "GBP")
CHANNELS = ("web", "app", "store")
CARRIERS = ("dhl", "ups", "dpd", "fedex")
PAYMENT_FAILURES = ("insufficient_funds", "card_declined", "expired_card")
CANCEL_REASONS = ("customer_request", "payment_failed", "out_of_stock")
#: seconds before an event of each type, after the order's previous event (log-uniform)
GAPS = {
    PLACED: (0, 0), ADDED: (20, 900), REMOVED: (60, 1800), AUTHORIZED: (30, 1800),
    FAILED: (30, 1200), SHIPPED: (7200, 3 * 86400), CANCELLED: (600, 2 * 86400),
    REFUNDED: (2 * 86400, 20 * 86400),
}  # fmt: skip
#: (share of events, minimum) per anomaly; gaps are counted in orders
RATES = {
    "dup_same": (0.0025, 3), "dup_later": (0.0025, 3), "late": (0.001, 3),
    "out_of_order": (0.001, 3), "conflicts": (0.0002, 3), "gaps": (0.0001, 3), "poison": (0.0001, 3),
}  # fmt: skip


@dataclass(frozen=True)
class SampleResult:
    """What the generator wrote; the anomaly counts are exact, not estimates."""

    stream: str
    seed: int
    days: int
    orders: int
    events_generated: int
    archived: int
    duplicates: int
    quarantined: int
    conflicts: int
    gaps: int
    missing: int
    late: int
    out_of_order: int
    poison: int
    commits: int
    lake_version: int
    seconds: float
    drift: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {**asdict(self), "seconds": round(self.seconds, 3)}

    def render(self, console: Console, audit: str = "rebuild lake audit") -> None:
        """A few lines for people: what was written and which anomalies to expect in it; ``audit``
        is the command that audits this lake."""
        console.print(
            f"wrote [bold]{self.archived:,}[/bold] of {self.events_generated:,} generated events "
            f"({self.orders:,} orders, stream {escape(self.stream)}, seed {self.seed}) in {self.commits} daily "
            f"commits -> lake_version {self.lake_version} ({self.seconds:.1f}s)"
        )
        console.print(
            f"known anomalies: {self.duplicates:,} duplicates dropped at ingest, {self.conflicts:,} conflicts "
            f"and {self.poison:,} poison records quarantined ({self.quarantined:,}), {self.gaps:,} orders "
            f"with a sequence gap, {self.late:,} late events, {self.out_of_order:,} out of order"
        )
        console.print(f"next: `{escape(audit)}` should find the same numbers")

    def _repr_html_(self) -> str:
        """What ``render`` says, for notebooks: one line, then the planted anomalies as a table."""
        counts = {name: getattr(self, name) for name in (
            "archived", "duplicates", "conflicts", "poison", "quarantined", "gaps", "late", "out_of_order")}
        return (
            f"<p><b>Sample lake</b>: {self.events_generated:,} events of {self.orders:,} orders in stream "
            f"<code>{html.escape(self.stream)}</code> (seed {self.seed}), {self.commits} daily commits -&gt; "
            f"lake_version {self.lake_version} in {self.seconds:.1f}s. Known anomalies:</p>"
            + html_table([counts], "the anomalies planted")
        )


@dataclass
class _History:
    """The true history, one entry per event, grouped by order and in sequence order."""

    order: np.ndarray  # index into the per-order arrays
    seq: np.ndarray
    etype: np.ndarray
    time: np.ndarray  # microseconds since the epoch
    sku: np.ndarray
    qty: np.ndarray
    cents: np.ndarray  # unit price of items, amount of payments and refunds
    code: np.ndarray  # channel, failure reason, carrier or cancel reason
    order_id: pa.Array  # per order
    customer_id: pa.Array
    currency: np.ndarray
    correlation: pa.Array

    def __len__(self) -> int:
        return len(self.seq)


@dataclass
class _Plan:
    """Which history events are delivered in which daily commit, and how."""

    src: np.ndarray  # history index per delivered record
    commit: np.ndarray
    conflict: np.ndarray  # bool: a second event id for an existing position
    poison_src: np.ndarray
    poison_commit: np.ndarray
    counts: dict[str, int]


def generate(
    lake: Lake,
    *,
    events: int,
    seed: int,
    days: int = 42,
    streams: tuple[str, ...] | list[str] = STREAMS,
    memory_limit: str = "2GB",
    temp_directory: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> SampleResult:
    """Write ``events`` order events spanning ``days`` days into an empty ``lake``, one commit a day.

    ``progress(done, days)`` is called after each simulated day's commit.
    """
    stream = _check(lake, events, days, seed, tuple(streams))
    started = time.monotonic()
    totals = {"archived": 0, "duplicates": 0, "quarantined": 0, "commits": 0, "lake_version": 0}
    with _small_pages():
        rng = np.random.default_rng(seed)
        history = _history(rng, events, days)
        plan = _plan(rng, history, days)
        for day, batches in enumerate(_formatted(history, plan, stream, seed, days)):
            result = ingest_batches(
                lake, batches, stream=stream, mapping=Mapping(), sources=[b.source for b in batches],
                memory_limit=memory_limit, temp_directory=temp_directory,
                ingested_at=END - timedelta(days=days - day - 1),  # the end of the simulated day
            )  # fmt: skip
            for key in ("archived", "duplicates", "quarantined", "lake_version"):
                totals[key] = getattr(result, key) + (totals[key] if key != "lake_version" else 0)
            totals["commits"] += 1 if result.archived else 0
            if progress is not None:
                progress(day + 1, days)
    c = plan.counts
    return SampleResult(
        stream=stream, seed=seed, days=days, orders=len(history.order_id), events_generated=len(history),
        conflicts=c["conflicts"], gaps=c["gaps"], missing=c["gaps"], late=c["late"],
        out_of_order=c["out_of_order"], poison=c["poison"], seconds=time.monotonic() - started,
        drift={"OrderShipped": {"added": "tracking_number", "since": _drift_start(days).isoformat()}}, **totals,
    )  # fmt: skip


def _formatted(h: _History, plan: _Plan, stream: str, seed: int, days: int) -> Iterator[list[Batch]]:
    """Each day's ingest batches; the next day is formatted (numpy and pyarrow, which release the
    GIL) in a thread while the caller ingests this one, so the two overlap on two cores."""

    def day_batches(day: int, records: np.ndarray, poison: np.ndarray) -> list[Batch]:
        source = f"sample:{stream}/seed-{seed}/day-{day + 1:02d}"
        return _batches(h, plan, records, poison, stream, source, days)

    deliveries = _days(plan, days)
    with ThreadPoolExecutor(1, thread_name_prefix="sample-format") as pool:
        upcoming = pool.submit(day_batches, 0, *deliveries[0])
        for day in range(days):
            batches = upcoming.result()
            if day + 1 < days:
                upcoming = pool.submit(day_batches, day + 1, *deliveries[day + 1])
            yield batches


def hugepage_setting() -> Callable[[bool], bool]:
    """numpy's (private) switch of huge pages for its arrays, which returns the previous setting."""
    # numpy.core is numpy._core since numpy 2 (the old name warns there); before, np._core can be there
    # (pyarrow makes it, 1.26.4) without multiarray, or not at all (1.26.0)
    name = "numpy._core.multiarray" if int(np.__version__.split(".")[0]) >= 2 else "numpy.core.multiarray"
    setting: Callable[[bool], bool] = importlib.import_module(name)._set_madvise_hugepage
    return setting


@contextlib.contextmanager
def _small_pages() -> Iterator[None]:
    """numpy asks for transparent huge pages for its large arrays. The generator makes many large
    short-lived temporaries, and where the kernel compacts memory to fault huge pages in (THP
    ``defrag = madvise``, common on servers) that costs more than the TLB saves: drawing a 10M
    history took 8.5 s with huge pages, 5.2 s without, on the 2-core machine. Restored after."""
    madvise = hugepage_setting()
    previous = madvise(False)
    try:
        with _reused_heap():
            yield
    finally:
        madvise(previous)


@contextlib.contextmanager
def _reused_heap() -> Iterator[None]:
    """glibc gives each array over 32 MB fresh pages of its own (mmap) and returns them when it is
    freed, so each of the history's 80 MB temporaries faulted its memory in again: 1.7M page
    faults, half of drawing a 10M history. With mmap off and the heap kept, freed arrays are
    reused: the history and plan took 3.4 s instead of 6.1 s. After it, glibc's defaults are set again
    (glibc cannot tell the values set before) and the heap's free memory is handed back; elsewhere than
    glibc, nothing changes."""
    try:
        libc = ctypes.CDLL(None)
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (OSError, AttributeError):
        yield
        return
    trim_threshold, mmap_max = -1, -4  # glibc's M_TRIM_THRESHOLD and M_MMAP_MAX
    mallopt(mmap_max, 0)
    mallopt(trim_threshold, 2**31 - 1)
    try:
        yield
    finally:
        mallopt(mmap_max, 65536)  # glibc's defaults
        mallopt(trim_threshold, 128 * 1024)
        malloc_trim(0)


def _check(lake: Lake, events: int, days: int, seed: int, streams: tuple[str, ...]) -> str:
    if streams != STREAMS:
        raise LakeError(f"the sample knows the streams {list(STREAMS)}, not {list(streams)}", streams=streams)
    if events < 100 or days < 3:
        raise LakeError(f"a sample needs at least 100 events and 3 days (got {events}, {days})")
    if seed < 0:
        raise LakeError(f"the seed must be 0 or more (got {seed})")
    if lake.exists() and lake.snapshot().files:
        raise LakeError(
            f"the lake at {lake.uri} already holds events; sample into a new location (--out PATH)",
            uri=lake.uri,
        )
    return streams[0]


def _drift_start(days: int) -> datetime:
    """From here on, OrderShipped payloads carry ``tracking_number`` (a producer upgrade)."""
    return END - timedelta(days=days // 3)


# -- the history -------------------------------------------------------------------------------
def _uniform_log(rng: np.random.Generator, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    lo = np.maximum(lo, 1e-9)
    return lo * (hi / lo) ** rng.random(len(lo))


def _orders(rng: np.random.Generator, count: int, days: int) -> dict[str, np.ndarray]:
    """Per order: how it goes (flags), when it is placed, who orders."""
    bulk = rng.random(count) < 0.002
    items = np.where(bulk, rng.integers(10, 41, count), rng.integers(1, 6, count))
    paid = rng.random(count) < 0.88
    failed = np.where(paid, rng.random(count) < 0.08, rng.random(count) < 0.5)
    shipped = paid & (rng.random(count) < 0.95)
    o = {
        "items": items, "removed": rng.random(count) < 0.15, "failed": failed, "paid": paid,
        "shipped": shipped, "refunded": shipped & (rng.random(count) < 0.06),
        "placed": END_US - days * DAY + rng.integers(0, days * DAY, count),
        "customer": rng.integers(1, min(999_999, max(10, count // 12)) + 1, count),
    }  # fmt: skip
    o["length"] = 2 + items + o["removed"] + failed + paid + o["refunded"]
    return o


def _types(o: dict[str, np.ndarray], order: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Event type per event from its position: placed, items, then the order's tail."""
    r, f, a = (o[k].astype(np.int16)[order] for k in ("removed", "failed", "paid"))
    j = pos - o["items"][order] - 1  # position inside the tail
    terminal = np.where(o["shipped"][order], SHIPPED, CANCELLED)
    return np.select(
        [pos == 0, j < 0, (r == 1) & (j == 0), (f == 1) & (j == r), (a == 1) & (j == r + f), j == r + f + a],
        [PLACED, ADDED, REMOVED, FAILED, AUTHORIZED, terminal],
        REFUNDED,
    ).astype(np.int8)


def _expand(rng: np.random.Generator, o: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One row per event of every order, with its type and event time."""
    length = o["length"]
    order = np.repeat(np.arange(len(length)), length)
    start = np.cumsum(length) - length
    pos = np.arange(len(order)) - start[order]
    etype = _types(o, order, pos)
    bounds = np.array([GAPS[t] for t in range(len(TYPES))], dtype=np.float64) * SECOND
    gaps = np.where(etype == PLACED, 0, _uniform_log(rng, bounds[etype, 0], bounds[etype, 1])).astype(np.int64)
    total = np.cumsum(gaps)
    times = o["placed"][order] + total - total[start][order]
    return {"order": order, "pos": pos, "etype": etype, "time": times, "start": start}


def _choose(e: dict[str, np.ndarray], events: int) -> np.ndarray | None:
    """Events kept: the history up to END, cut after exactly ``events`` (None: too few orders)."""
    kept = e["time"] < END_US  # times grow inside an order, so this keeps a prefix of each
    per_order = np.add.reduceat(kept.astype(np.int64), e["start"])
    total = np.cumsum(per_order)
    if total[-1] < events:
        return None
    last = int(np.searchsorted(total, events))
    limit = per_order.copy()
    limit[last] -= int(total[last]) - events
    limit[last + 1 :] = 0
    return np.flatnonzero(e["pos"] < limit[e["order"]])


def _history(rng: np.random.Generator, events: int, days: int) -> _History:
    pool = max(64, events // 5)  # an order has about 6 events: enough, and doubled if not
    while True:
        o = _orders(rng, pool, days)
        e = _expand(rng, o)
        keep = _choose(e, events)
        if keep is not None:
            break
        pool *= 2
    kept = e["order"][keep]  # sorted: events are grouped by order
    etype, times = e["etype"][keep], e["time"][keep]
    del e, keep  # the pool's events: at 100M events, its arrays would double the peak memory
    first = np.r_[True, kept[1:] != kept[:-1]]
    o = {k: v[kept[first]] for k, v in o.items()}
    order = np.cumsum(first) - 1
    del kept
    start = np.flatnonzero(np.r_[True, order[1:] != order[:-1]])
    seq = np.arange(len(order)) - start[order] + 1
    number = np.empty(len(start), np.int64)
    number[np.argsort(o["placed"], kind="stable")] = np.arange(1, len(start) + 1)
    sku, qty, cents, code = _details(rng, o, order, start, etype)
    return _History(
        order=order, seq=seq, etype=etype, time=times, sku=sku, qty=qty, cents=cents, code=code,
        order_id=_ids("o-", number, 7), customer_id=_ids("c-", o["customer"], 6),
        currency=_currency(o["customer"]), correlation=_hex(rng, len(start)),
    )  # fmt: skip


def _details(
    rng: np.random.Generator, o: dict[str, np.ndarray], order: np.ndarray, start: np.ndarray, etype: np.ndarray
) -> tuple[np.ndarray, ...]:
    """Items (sku, quantity, unit price), amounts and the categorical choice of each event."""
    n = len(order)
    catalog = (_uniform_log(rng, np.full(600, 2.0), np.full(600, 300.0)).astype(np.int64)) * 100 + 99
    # in place where it can be: at 100M events each temporary array is 0.8 GB
    popular = rng.random(n)
    popular **= 2
    popular *= 600
    sku = popular.astype(np.int64)  # popular items first
    del popular
    qty = np.array([1, 1, 1, 1, 2, 2, 3, 5])[rng.integers(0, 8, n)]
    removed = np.flatnonzero(etype == REMOVED)
    source = start[order[removed]] + 1 + (rng.random(len(removed)) * o["items"][order[removed]]).astype(np.int64)
    sku[removed] = sku[source]
    qty[removed] = 1 + (rng.random(len(removed)) * qty[source]).astype(np.int64)
    price = catalog[sku]
    item = (etype == ADDED) | (etype == REMOVED)
    line = np.where(etype == ADDED, qty, -qty)
    line *= price
    line[~item] = 0
    total = np.add.reduceat(line, start)[order]
    del line
    refund = total // 2
    whole = rng.random(n) < 0.6
    refund[whole] = total[whole]
    del whole
    cents = np.where(etype == REFUNDED, refund, total)
    del refund, total
    cents[item] = price[item]
    return sku, qty, cents, _codes(rng, o, order, etype)


def _codes(rng: np.random.Generator, o: dict[str, np.ndarray], order: np.ndarray, etype: np.ndarray) -> np.ndarray:
    """Channel (placed), failure reason, carrier or cancel reason: an index into its vocabulary."""
    u = rng.random(len(order))
    cancel = np.where(o["paid"], 2, np.where(o["failed"], 1, 0))[order]
    channel = np.searchsorted(np.array([0.55, 0.90]), u)
    by_type = np.where(etype == FAILED, (u * 3).astype(np.int64), (u * 4).astype(np.int64))
    return np.where(etype == PLACED, channel, np.where(etype == CANCELLED, cancel, by_type))


def _ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.utf8_lpad(pa.array(numbers).cast(pa.string()), width, "0"), "")


def _currency(customer: np.ndarray) -> np.ndarray:
    """A customer always pays in one currency (fixed per customer id, not per seed)."""
    share = (customer * 2_654_435_761) % 100
    return np.select([share < 60, share < 85], [0, 1], 2)


def _hex(rng: np.random.Generator, count: int) -> pa.Array:
    data = rng.bytes(8 * count).hex().encode()
    offsets = np.arange(0, 16 * count + 1, 16, dtype=np.int32)
    return pa.StringArray.from_buffers(count, pa.py_buffer(offsets), pa.py_buffer(data))


# -- the deliveries ----------------------------------------------------------------------------
def _pick(rng: np.random.Generator, eligible: np.ndarray, used: np.ndarray, count: int) -> np.ndarray:
    """Up to ``count`` random eligible events not chosen for another anomaly; marks them used."""
    free = np.flatnonzero(eligible & ~used)
    # choice without replacement costs O(count); a permutation of every free event cost O(events)
    chosen = np.sort(rng.choice(free, min(count, len(free)), replace=False))
    used[chosen] = True
    return chosen


def _plan(rng: np.random.Generator, h: _History, days: int) -> _Plan:
    n = len(h)
    want = {k: max(floor, round(n * rate)) for k, (rate, floor) in RATES.items()}
    used = np.zeros(n, bool)  # every event carries at most one anomaly
    dropped = _gaps(rng, h, want["gaps"], used)
    commit = _commits(rng, h, days, dropped, used, want)
    delivered = ~dropped
    copies = _pick(rng, delivered, used, want["dup_same"])
    later = _pick(rng, delivered, used, want["dup_later"])
    conflicts = _pick(rng, delivered, used, want["conflicts"])
    poison = np.sort(rng.choice(n, min(n, want["poison"]), replace=False))
    orig = np.flatnonzero(delivered)
    src = np.concatenate([orig, copies, later, conflicts])
    counts = {
        "gaps": int(dropped.sum()), "late": _late(h, orig, commit, days),
        "out_of_order": _out_of_order(h, orig, commit, days), "conflicts": len(conflicts),
        "poison": len(poison), "duplicates": len(copies) + len(later),
    }  # fmt: skip
    return _Plan(
        src=src,
        commit=np.concatenate([
            commit[orig], commit[copies],
            np.minimum(days - 1, commit[later] + rng.integers(1, 4, len(later))),
            np.minimum(days - 1, commit[conflicts] + rng.integers(0, 3, len(conflicts))),
        ]),  # fmt: skip
        conflict=np.r_[np.zeros(len(src) - len(conflicts), bool), np.ones(len(conflicts), bool)],
        poison_src=poison,
        poison_commit=rng.integers(0, days, len(poison)),
        counts=counts,
    )


def _commits(
    rng: np.random.Generator, h: _History, days: int, dropped: np.ndarray, used: np.ndarray, want: dict[str, int]
) -> np.ndarray:
    """The daily commit each event arrives in: seconds to 20 minutes after it happened, except
    the late ones (2-7 days) and the ones held back until after the next event of their order."""
    n = len(h)
    arrival = h.time + _uniform_log(rng, np.full(n, 1.0), np.full(n, 1200.0)).astype(np.int64) * SECOND
    late = _pick(rng, h.time < END_US - LATE_US - 3600 * SECOND, used, want["late"])
    room = np.minimum(5 * DAY, END_US - 1 - h.time[late] - LATE_US)
    arrival[late] = h.time[late] + LATE_US + (rng.random(len(late)) * room).astype(np.int64)
    commit = np.clip((arrival - (END_US - days * DAY)) // DAY, 0, days - 1)
    nxt = np.minimum(np.arange(n) + 1, n - 1)
    same = np.r_[h.order[1:] == h.order[:-1], False]  # the next event belongs to the same order
    movable = same & ~dropped & ~dropped[nxt] & (commit[nxt] < days - 1)
    moved = _pick(rng, movable, used, want["out_of_order"])
    commit[moved] = np.minimum(days - 1, commit[moved + 1] + 1 + rng.integers(0, 2, len(moved)))
    return commit


def _gaps(rng: np.random.Generator, h: _History, count: int, used: np.ndarray) -> np.ndarray:
    """Drop one middle event of ``count`` orders: a sequence gap a reader can detect."""
    length = np.bincount(h.order)
    start = np.cumsum(length) - length
    eligible = np.flatnonzero(length >= 3)
    orders = np.sort(rng.choice(eligible, min(count, len(eligible)), replace=False))
    victims = start[orders] + 1 + (rng.random(len(orders)) * (length[orders] - 2)).astype(np.int64)
    dropped = np.zeros(len(h), bool)
    dropped[victims] = True
    used |= dropped
    return dropped


def _late(h: _History, orig: np.ndarray, commit: np.ndarray, days: int) -> int:
    ingested = END_US - (days - 1 - commit[orig]) * DAY
    return int((ingested - h.time[orig] >= LATE_US).sum())


def _out_of_order(h: _History, orig: np.ndarray, commit: np.ndarray, days: int) -> int:
    """Events archived in an earlier commit than an event before them in their order."""
    value = h.order[orig] * days + commit[orig]  # orders never mix: each adds its own offset
    before = np.r_[-1, np.maximum.accumulate(value)[:-1]]
    return int((value < before).sum())


def _days(plan: _Plan, days: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Record indexes (into the plan) and poison indexes of each commit, in delivery order."""
    order = np.lexsort((plan.src, plan.commit))
    cuts = np.searchsorted(plan.commit[order], np.arange(days + 1))
    poison = [np.flatnonzero(plan.poison_commit == d) for d in range(days)]
    return [(order[cuts[d] : cuts[d + 1]], poison[d]) for d in range(days)]


# -- formatting --------------------------------------------------------------------------------
def _join(*parts: object) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _money(cents: np.ndarray) -> pa.Array:
    whole = pa.array(cents // 100).cast(pa.string())
    return _join(whole, ".", pc.utf8_lpad(pa.array(cents % 100).cast(pa.string()), 2, "0"))


def _words(vocabulary: tuple[str, ...], codes: np.ndarray) -> pa.Array:
    return pa.array(vocabulary).take(pa.array(codes))


def _tail(h: _History, idx: np.ndarray, etype: int, days: int) -> pa.Array:
    """The type-specific end of the payload JSON of events ``idx`` (all of type ``etype``)."""
    code, cents = h.code[idx], h.cents[idx]
    if etype == PLACED:
        return _join(',"channel":"', _words(CHANNELS, code), '"}')
    if etype in (ADDED, REMOVED):
        sku = _ids("SKU-", h.sku[idx] + 1, 5)
        qty = pa.array(h.qty[idx]).cast(pa.string())
        return _join(',"sku":"', sku, '","quantity":', qty, ',"unit_price":', _money(cents), "}")
    if etype in (AUTHORIZED, REFUNDED):
        return _join(',"amount":', _money(cents), "}")
    if etype == FAILED:
        return _join(',"amount":', _money(cents), ',"reason":"', _words(PAYMENT_FAILURES, code), '"}')
    if etype == CANCELLED:
        return _join(',"reason":"', _words(CANCEL_REASONS, code), '"}')
    carrier = _join(',"carrier":"', _words(CARRIERS, code), '"')
    tracking = _ids("1Z", (h.order[idx] * 7_919 + h.seq[idx]) % 10**10, 10)
    newer = pa.array(h.time[idx] >= int(_drift_start(days).timestamp()) * SECOND)
    return _join(carrier, pc.if_else(newer, _join(',"tracking_number":"', tracking, '"'), ""), "}")


def _payloads(h: _History, idx: np.ndarray, days: int) -> pa.Array:
    head = _join(
        '{"order_id":"', h.order_id.take(pa.array(h.order[idx])),
        '","customer_id":"', h.customer_id.take(pa.array(h.order[idx])),
        '","currency":"', _words(CURRENCIES, h.currency[h.order[idx]]), '"',
    )  # fmt: skip
    by_type = np.argsort(h.etype[idx], kind="stable")
    kinds = h.etype[idx][by_type]
    cuts = np.searchsorted(kinds, np.arange(len(TYPES) + 1))
    tails = [_tail(h, idx[by_type[cuts[t] : cuts[t + 1]]], t, days) for t in range(len(TYPES))]
    tail = pa.concat_arrays(tails).take(pa.array(np.argsort(by_type)))
    return _join(head, tail)


def _event_ids(h: _History, idx: np.ndarray, conflict: np.ndarray) -> pa.Array:
    base = _join("ev-", h.order_id.take(pa.array(h.order[idx])), "-", pa.array(h.seq[idx]).cast(pa.string()))
    return pc.if_else(pa.array(conflict), _join(base, "-r1"), base)  # a producer retry with a new id


def _envelope(h: _History, idx: np.ndarray, conflict: np.ndarray, stream: str, days: int) -> pa.Table:
    """The typed envelope columns of events ``idx``, as a Parquet-format ingest batch."""
    n = len(idx)
    return pa.table({
        "_line": pa.array(np.arange(1, n + 1, dtype=np.int64)),
        "event_id": _event_ids(h, idx, conflict),
        "stream": _words((stream,), np.zeros(n, np.int64)),
        "partition_key": h.order_id.take(pa.array(h.order[idx])),
        "sequence": pa.array(h.seq[idx], pa.int64()),
        "event_type": _words(TYPES, h.etype[idx]),
        "event_time": pa.array(h.time[idx], pa.timestamp("us", tz="UTC")),
        "schema_version": pa.array(np.ones(n, np.int32)),
        "payload": _payloads(h, idx, days),
        "metadata": _join('{"source":"sample","correlation_id":"', h.correlation.take(pa.array(h.order[idx])), '"}'),
    })  # fmt: skip


def _poison(h: _History, idx: np.ndarray, kind: np.ndarray, stream: str, days: int) -> pa.Table:
    """NDJSON lines that ingest must quarantine: cut-off JSON, no event_type, sequence 2.5."""
    e = _envelope(h, idx, np.zeros(len(idx), bool), stream, days)
    time_text = pc.strftime(e["event_time"], format="%Y-%m-%dT%H:%M:%SZ")
    seq = e["sequence"].cast(pa.string())
    head = _join('{"event_id":"', e["event_id"], '","stream":"', stream, '","partition_key":"', e["partition_key"])
    typed = _join(',"event_type":"', e["event_type"], '"')
    line = _join(
        head, '","sequence":', pc.if_else(pa.array(kind == 2), _join(seq, ".5"), seq),
        pc.if_else(pa.array(kind == 1), "", typed), ',"event_time":"', time_text,
        '","payload":', e["payload"], "}",
    )  # fmt: skip
    cut = pc.utf8_slice_codeunits(line, 0, -12)
    raw = pc.if_else(pa.array(kind == 0), cut, line)
    return pa.table({"_line": pa.array(np.arange(1, len(idx) + 1, dtype=np.int64)), "_raw": raw})


def _batches(
    h: _History, plan: _Plan, records: np.ndarray, poison: np.ndarray, stream: str, source: str, days: int
) -> list[Batch]:
    batches = [Batch(f"{source}.parquet", "parquet", _envelope(h, plan.src[records], plan.conflict[records], stream, days))]
    if len(poison):
        batches.append(Batch(f"{source}-rejects.ndjson", "ndjson", _poison(h, plan.poison_src[poison], poison % 3, stream, days)))
    return batches
