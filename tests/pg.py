"""A real PostgreSQL server for the tests, started once per test session by ``pgserver`` (pip).

Use it from a conftest (or a test module) with::

    from tests.pg import postgres_server, postgres_uri, fresh_database  # noqa: F401

``postgres_uri`` (session) is a URI to the server's ``postgres`` database; ``fresh_database``
(function) creates an empty database per test and yields its URI, so tests never see each
other's tables. Under pytest-xdist each worker starts its own server in its own folder.
"""

from __future__ import annotations

import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[object]:
    """The pgserver handle (``.get_uri()``, ``.psql()``); the server and its data go at the end."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR in containers
        import pgserver

        # a short path: the server's Unix socket lives in this folder (108-byte socket path limit)
        folder = Path(tempfile.mkdtemp(prefix="pg-", dir="/tmp"))
        server = pgserver.get_server(folder, cleanup_mode="delete")
    yield server
    server._cleanup()


@pytest.fixture(scope="session")
def postgres_uri(postgres_server: object) -> str:
    return str(postgres_server.get_uri())  # type: ignore[attr-defined]


def with_database(uri: str, database: str) -> str:
    """``uri`` pointing at another database on the same server."""
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(path="/" + database))


@pytest.fixture
def fresh_database(postgres_uri: str) -> Iterator[str]:
    """A new empty database for one test; dropped afterwards."""
    import psycopg
    from psycopg import sql

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield with_database(postgres_uri, name)
    with psycopg.connect(postgres_uri, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
