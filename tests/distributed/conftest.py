"""A Dask LocalCluster (2 worker processes) for the module, and a small synthetic order lake."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

import lake
from tests.stores.synthetic import synthetic_lake

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="session")
def cluster_address() -> Iterator[str]:
    """The scheduler address of a LocalCluster: 2 workers, processes, one thread each."""
    logging.getLogger("distributed").setLevel(logging.ERROR)  # a killed worker is expected noise here
    # silence_logs=False: by default the cluster sets every handler of the `distributed` logger to WARNING
    # while it lives, and pytest attaches its capture handlers to that (non-propagating) logger too: every
    # later test in this process lost its INFO records (a test of a job's progress log failed after this one)
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                                       silence_logs=False)
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


@pytest.fixture(scope="session")
def orders_lake(tmp_path_factory: pytest.TempPathFactory) -> lake.Lake:
    """3,000 synthetic orders (about 14,000 events) in two commits; read-only for the tests."""
    root: Path = tmp_path_factory.mktemp("distributed") / "lake"
    target = lake.Lake(root).create(buckets=8)
    synthetic_lake(root, 2_000, target=target)
    return synthetic_lake(root, 1_000, first=2_000, target=target)
