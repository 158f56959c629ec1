"""View stores by URI scheme: ``duckdb://PATH`` (default), ``postgresql://...``, ``parquet://DIR``.

The table maps a scheme to a factory, imported lazily; an unknown scheme is an error listing
the known ones.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from pathlib import Path

from rebuild.errors import StoreError
from rebuild.store.base import LIVE, PREVIOUS, SHADOW, Checkpoint, Published, RunRecord, Store

FACTORIES: dict[str, str] = {
    "duckdb": "rebuild.store.duckdb_store:DuckDBStore",
    "postgresql": "rebuild.store.postgres_store:PostgresStore",
    "postgres": "rebuild.store.postgres_store:PostgresStore",
    "parquet": "rebuild.store.parquet_store:ParquetStore",
}
#: how a store URI of each scheme is written, for the errors
EXAMPLES = {
    "duckdb": "duckdb://views.duckdb (next to workbench.toml) or duckdb:///abs/path/views.duckdb",
    "parquet": "parquet://views (next to workbench.toml) or parquet:///abs/path/views",
    "postgresql": "postgresql://user:pw@host/db",
    "postgres": "postgresql://user:pw@host/db",
}


def check_uri(uri: str) -> None:
    """Refuse a typo of a store URI (``duckdb:/x``, ``parquet://``) before it becomes a path of that name."""
    if not uri.strip():  # a bare path of "" is the working directory: it would become a Parquet store
        raise StoreError(f"the store URI is empty; write {EXAMPLES['duckdb']}, {EXAMPLES['postgresql']} or "
                         f"{EXAMPLES['parquet']}", uri=uri)
    scheme, sep, rest = uri.partition("://")
    head = uri.partition(":")[0].lower()
    if not sep and ":" in uri and head in FACTORIES:
        shown = f"{head}:..." if head.startswith("postgres") else uri  # may hold a password
        raise StoreError(f"store URI {shown!r} lacks the '//' after '{head}:'; write {EXAMPLES[head]}", uri=shown)
    if sep and scheme in ("duckdb", "parquet") and not rest.strip("/"):
        what = "file" if scheme == "duckdb" else "directory"
        raise StoreError(f"store URI {uri!r} names no {what}; write {EXAMPLES[scheme]}", uri=uri)
    if _scheme(uri)[0] == "duckdb" and "?" in uri:
        raise StoreError(f"store URI {uri!r} holds a '?', after which DuckDB reads a database file's path as options "
                         "(its write-ahead log would go to a folder that does not exist, and the first write fail): "
                         "name a DuckDB file whose path has no '?'", uri=uri)


def _scheme(uri: str) -> tuple[str, str]:
    """The store's scheme and what follows it; a bare path is a DuckDB file (``.duckdb``) or a Parquet directory."""
    scheme, _, rest = uri.partition("://")
    if not rest:
        scheme, rest = ("duckdb", uri) if uri.endswith((".duckdb", ".db")) else ("parquet", uri)
    return scheme, rest


def store_path(uri: str) -> Path | None:
    """The file or folder of a DuckDB or Parquet store (a bare path is one of them); None for PostgreSQL."""
    scheme, rest = _scheme(uri)
    return Path(rest) if scheme in ("duckdb", "parquet") and rest != ":memory:" else None


def store_exists(uri: str) -> bool:
    """Whether a DuckDB file or Parquet directory store is there (opening one creates it). A
    PostgreSQL store is taken to exist: its server is asked when the store is opened."""
    check_uri(uri)
    scheme, rest = _scheme(uri)
    if scheme == "duckdb":
        return rest == ":memory:" or Path(rest).exists()
    if scheme == "parquet":
        return (Path(rest) / "_manifest.json").exists()
    return True


def open_store(uri: str, *, memory_limit: str | None = None, temp_directory: str | None = None,
               threads: int | None = None) -> Store:
    """The store at ``uri``; a bare path is a DuckDB file (``.duckdb``) or a Parquet directory."""
    check_uri(uri)
    scheme, rest = _scheme(uri)
    target = FACTORIES.get(scheme)
    if target is None:
        raise StoreError(f"unknown store {scheme!r} in {uri!r}; known: {', '.join(sorted(FACTORIES))}", uri=uri)
    module, name = target.split(":")
    try:
        factory: Callable[..., Store] = getattr(import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise StoreError(f"the {scheme} store is not available: {exc}", uri=uri) from exc
    if scheme in ("postgresql", "postgres"):
        return factory(uri, memory_limit=memory_limit, temp_directory=temp_directory, threads=threads)
    return factory(rest, memory_limit=memory_limit, temp_directory=temp_directory, threads=threads)


__all__ = ["LIVE", "PREVIOUS", "SHADOW", "Checkpoint", "Published", "RunRecord", "Store", "open_store", "store_exists",
           "store_path"]
