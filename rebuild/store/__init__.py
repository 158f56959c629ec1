"""View stores by URI scheme: ``duckdb://PATH`` (default), ``postgresql://...``, ``parquet://DIR``.

The table maps a scheme to a factory, imported lazily; an unknown scheme is an error listing
the known ones.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module

from rebuild.errors import StoreError
from rebuild.store.base import LIVE, PREVIOUS, SHADOW, Checkpoint, Published, RunRecord, Store

FACTORIES: dict[str, str] = {
    "duckdb": "rebuild.store.duckdb_store:DuckDBStore",
    "postgresql": "rebuild.store.postgres_store:PostgresStore",
    "postgres": "rebuild.store.postgres_store:PostgresStore",
    "parquet": "rebuild.store.parquet_store:ParquetStore",
}


def open_store(uri: str, *, memory_limit: str | None = None, temp_directory: str | None = None,
               threads: int | None = None) -> Store:
    """The store at ``uri``; a bare path is a DuckDB file (``.duckdb``) or a Parquet directory."""
    scheme, _, rest = uri.partition("://")
    if not rest:
        scheme, rest = ("duckdb", uri) if uri.endswith((".duckdb", ".db")) else ("parquet", uri)
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


__all__ = ["LIVE", "PREVIOUS", "SHADOW", "Checkpoint", "Published", "RunRecord", "Store", "open_store"]
