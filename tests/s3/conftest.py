"""A real S3 endpoint for the tests: moto's server on 127.0.0.1 (a free port), one per session
(and per xdist worker).

Each test gets its own bucket, so tests never see each other's lakes (also under xdist, where
each worker process starts its own server).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

from tests.s3.server import MotoProcess, options  # noqa: E402


@dataclass(frozen=True)
class S3:
    """Where the moto server listens and the storage options that reach it."""

    endpoint: str
    options: dict[str, str]

    def bucket(self) -> str:
        """A new, empty bucket; its name."""
        name = f"lake-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def client(self):  # type: ignore[no-untyped-def]
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id="testing",
                            aws_secret_access_key="testing", region_name="us-east-1")

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [o["Key"] for page in pages for o in page.get("Contents", [])]


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3]:
    """moto's S3 server (``ThreadedMotoServer`` in a child process) for the session, stopped at the end."""
    server = MotoProcess()
    endpoint = server.start()
    try:
        yield S3(endpoint, options(endpoint))
    finally:
        server.stop()


@pytest.fixture
def s3_uri(s3_server: S3) -> str:
    """``s3://<a new bucket>/lake``."""
    return f"s3://{s3_server.bucket()}/lake"
