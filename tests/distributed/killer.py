"""A projection that kills the worker process running it the first time (a marker file says
whether it already did): order_summary otherwise. Shipped to workers by value (cloudpickle)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from rebuild.examples import order_summary
from rebuild.projection import projection

# set by the test before the run, or for a run by the `rebuild` command (a projection module from workbench.toml)
# from $KILLER_MARKER; captured when the projection is pickled
MARKER = os.environ.get("KILLER_MARKER", "")


@projection(name="order_summary_killer", key="order_id", consumes=order_summary.consumes,
            streams=order_summary.streams, incremental="by_key", payload=order_summary.payload)
def order_summary_killer() -> str:
    marker = Path(MARKER)
    if MARKER and not marker.exists():
        marker.touch()
        os._exit(1)  # the worker dies mid-run, as on a lost machine
    return str(order_summary.func())


@projection(name="order_summary_orphaned", key="order_id", consumes=order_summary.consumes,
            streams=order_summary.streams, incremental="by_key", payload=order_summary.payload)
def order_summary_orphaned() -> str:
    """With MARKER set, interrupts the dask worker running it, as Ctrl-C at a terminal does: the worker
    closes, and its nanny (in the driver's process) starts no other: a local cluster left without workers."""
    from distributed import get_worker

    if MARKER:
        get_worker()  # in a dask worker only (ValueError elsewhere): never the test's own process
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(60)  # the worker closes meanwhile
    return str(order_summary.func())
