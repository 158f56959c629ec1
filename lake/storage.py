"""Where the lake's files live, and how each engine reaches them: the one place that knows.

A lake is a local folder or an object-store prefix (``s3://bucket/prefix``). Its credentials and
endpoint come from the configuration (``[lake] storage_options`` in ``workbench.toml``) over the
standard AWS environment variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ...). From those
options this module builds what every reader and writer needs:

- ``delta_options``: the ``storage_options`` of ``deltalake`` (delta-rs keys, upper case)
- ``polars_options``: the same for ``pl.scan_parquet`` / ``pl.scan_delta``
- ``fsspec_filesystem`` / ``pyarrow_filesystem``: for Python-side file work (part files, cleanup)
- ``attach(con, ...)``: gives a DuckDB connection access to the lake's files. DuckDB cannot load
  its ``httpfs`` extension here, so an ``s3fs`` filesystem is registered on the connection
  (``con.register_filesystem``) and ``read_parquet('s3://...')`` goes through it. No-op for local
  lakes. Every DuckDB connection that reads lake files goes through ``attach``; the filesystem asks
  about each data file once (``lake.s3files``), not at each of DuckDB's opens.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb

from lake import scratch
from lake.errors import LakeError
from lake.sql import literal

S3_SCHEMES = ("s3://", "s3a://")
# delta-rs option keys read from the environment when the configuration does not set them
ENV_KEYS = (
    "AWS_ENDPOINT_URL", "AWS_ENDPOINT", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
    "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ALLOW_HTTP", "AWS_S3_ALLOW_UNSAFE_RENAME", "AWS_PROFILE",
)


# what s3fs/botocore, delta-rs and DuckDB say when a storage endpoint or server does not answer: exact
# phrases, never a bare "connect", which a lake path (/data/connectors/...) in a file's error may hold
_UNREACHABLE = ("EndpointConnectionError", "Could not connect to the endpoint", "ConnectTimeoutError",
                "ReadTimeoutError", "Connection refused", "Connection reset", "ConnectionResetError",
                "client error (Connect)", "error trying to connect", "connection closed before message completed",
                "Name or service not known", "Temporary failure in name resolution",
                "operation timed out")  # delta-rs' own, when an endpoint accepts connections and never answers
# what delta-rs says when it finds no credentials at all (none configured, no instance role)
_NO_CREDENTIALS = ("no credentials found", "error occurred while loading credentials")
# S3 error codes (in delta-rs' and s3fs' messages) that mean the credentials or their rights are wrong
_CREDENTIAL_ERRORS = ("403 Forbidden", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                      "ExpiredToken", "InvalidToken")


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says the storage or a server could not be reached: the network, not the data."""
    return isinstance(exc, (ConnectionError, TimeoutError)) or any(marker in str(exc) for marker in _UNREACHABLE)


def missing_credentials(exc: BaseException) -> bool:
    """Whether ``exc`` is delta-rs finding no credentials at all (none configured, no instance role)."""
    return any(phrase in str(exc) for phrase in _NO_CREDENTIALS)


def refused_credentials(exc: BaseException) -> bool:
    """Whether ``exc`` is an object store refusing the credentials or their rights."""
    return any(code in str(exc) for code in _CREDENTIAL_ERRORS)


def is_remote(uri: str) -> bool:
    """Whether ``uri`` is on an object store (anything with a scheme other than ``file://``)."""
    return "://" in uri and not uri.startswith("file://")


def resolve_options(uri: str, configured: Mapping[str, str] | None = None,
                    env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The lake's storage options: configured keys over the AWS environment.

    ``aws_*`` keys are upper-cased (every reader takes them so); others are kept as given: delta-rs
    reads its client's ``max_retries`` and ``retry_timeout`` in lower case only, and ignored
    ``MAX_RETRIES``. Local lakes need none (configured ones are kept as given). For S3 an ``http://``
    endpoint also sets ``AWS_ALLOW_HTTP`` (delta-rs refuses plain HTTP otherwise: MinIO, moto, Ceph).
    """
    given = {_option_key(str(k)): str(v) for k, v in (configured or {}).items()}
    if not is_remote(uri):
        return given
    env = os.environ if env is None else env
    options = {k: env[k] for k in ENV_KEYS if env.get(k)}
    options.update(given)
    endpoint = options.get("AWS_ENDPOINT_URL") or options.get("AWS_ENDPOINT")
    if endpoint and endpoint.startswith("http://"):
        options.setdefault("AWS_ALLOW_HTTP", "true")
    if "AWS_REGION" not in options and "AWS_DEFAULT_REGION" in options:
        options["AWS_REGION"] = options["AWS_DEFAULT_REGION"]
    return options


def _option_key(name: str) -> str:
    return name.upper() if name.upper().startswith("AWS_") else name


def delta_options(options: Mapping[str, str]) -> dict[str, str]:
    """``storage_options`` for deltalake (delta-rs reads the AWS_* keys as they are)."""
    return dict(options)


def polars_options(options: Mapping[str, str]) -> dict[str, str] | None:
    """``storage_options`` for Polars' object-store readers (lower-case keys), None when empty."""
    return {k.lower(): v for k, v in options.items() if k != "AWS_PROFILE"} or None


def _s3fs_kwargs(options: Mapping[str, str]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if options.get("AWS_ACCESS_KEY_ID"):
        kwargs["key"] = options["AWS_ACCESS_KEY_ID"]
        kwargs["secret"] = options.get("AWS_SECRET_ACCESS_KEY")
    if options.get("AWS_SESSION_TOKEN"):
        kwargs["token"] = options["AWS_SESSION_TOKEN"]
    if options.get("AWS_PROFILE"):
        kwargs["profile"] = options["AWS_PROFILE"]
    endpoint = options.get("AWS_ENDPOINT_URL") or options.get("AWS_ENDPOINT")
    if endpoint:
        kwargs["endpoint_url"] = endpoint
    if options.get("AWS_REGION"):
        kwargs["client_kwargs"] = {"region_name": options["AWS_REGION"]}
    return kwargs


def fsspec_filesystem(uri: str, options: Mapping[str, str] | None = None) -> Any:
    """An fsspec filesystem for ``uri`` (``s3fs.S3FileSystem`` for S3, local otherwise)."""
    if uri.startswith(S3_SCHEMES):
        return require_s3fs().S3FileSystem(**_s3fs_kwargs(options or {}))
    import fsspec

    return fsspec.filesystem("file")


def require_s3fs() -> Any:
    """The s3fs package, which a lake in a bucket needs (local lakes never import it): the s3 extra."""
    try:
        import s3fs
    except ImportError as exc:
        raise LakeError(f"a lake in a bucket needs the s3fs package ({exc}): install the workbench's s3 extra, "
                        "pip install 'projection-rebuild-workbench[s3]' (in a checkout: pip install '.[s3]')") from None
    return s3fs


def pyarrow_filesystem(uri: str, options: Mapping[str, str] | None = None) -> tuple[Any, str]:
    """``(pyarrow.fs.FileSystem, path inside it)`` for ``uri``: native S3 or the local disk."""
    import pyarrow.fs as pafs

    if not uri.startswith(S3_SCHEMES):
        return pafs.LocalFileSystem(), uri[len("file://"):] if uri.startswith("file://") else uri
    o = options or {}
    endpoint = o.get("AWS_ENDPOINT_URL") or o.get("AWS_ENDPOINT")
    kwargs: dict[str, Any] = {"region": o.get("AWS_REGION") or "us-east-1"}
    if o.get("AWS_ACCESS_KEY_ID"):
        kwargs.update(access_key=o["AWS_ACCESS_KEY_ID"], secret_key=o.get("AWS_SECRET_ACCESS_KEY"),
                      session_token=o.get("AWS_SESSION_TOKEN"))
    if endpoint:
        scheme, _, host = endpoint.partition("://")
        kwargs.update(endpoint_override=host.rstrip("/"), scheme=scheme)
    return pafs.S3FileSystem(**kwargs), uri.split("://", 1)[1]


def attach(con: duckdb.DuckDBPyConnection, uri: str, options: Mapping[str, str] | None = None) -> duckdb.DuckDBPyConnection:
    """Let ``con`` read (and write) files under ``uri``; idempotent, a no-op for local paths.

    The filesystem is registered once per connection; a connection keeps the first one it was
    given for a scheme (one lake per connection, or lakes sharing credentials).
    """
    if not uri.startswith(S3_SCHEMES):
        return con
    if "s3" not in con.list_filesystems():
        from lake.s3files import LakeFiles  # lazily: local lakes never need s3fs

        con.register_filesystem(LakeFiles(**_s3fs_kwargs(options or {})))
    return con


def upload_tree(local: str, uri: str, options: Mapping[str, str] | None = None) -> None:
    """Copy the files under the local folder ``local`` to the same relative paths under ``uri``, a few
    at a time. File by file: pyarrow's ``copy_files`` creates each folder first, which on S3 puts an
    empty marker object for it and each folder above it (3 PUTs and a HEAD per partition an ingest
    touched, a third of its requests); an object store needs no folders."""
    fs, path = pyarrow_filesystem(uri, options)
    root = Path(local)

    def put(file: Path) -> None:
        with open(file, "rb") as source, fs.open_output_stream(f"{path}/{file.relative_to(root).as_posix()}") as target:
            shutil.copyfileobj(source, target, 8 << 20)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(put, sorted(p for p in root.rglob("*") if p.is_file())))


def remove_tree(uri: str, options: Mapping[str, str] | None = None) -> None:
    """Delete everything under ``uri`` (a staging folder); missing is fine."""
    fs = fsspec_filesystem(uri, options)
    path = uri.split("://", 1)[1] if is_remote(uri) else uri
    if fs.exists(path):
        fs.rm(path, recursive=True)


def spill_outside_cwd(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """Let in-memory DuckDB connection ``con`` spill past its memory limit to a folder of its own in the
    system's temp directory (``tempfile.gettempdir()``: ``$TMPDIR``, else ``/tmp``), which DuckDB creates
    when it first spills and removes when ``con`` closes, instead of DuckDB's default ``.tmp`` in the
    working directory, which a job started from ``/`` may not write. A killed process's folder is removed
    by the next process that spills there (``lake.scratch``)."""
    con.execute(f"SET temp_directory = {literal(str(scratch.folder_name('rebuild-spill')))}")
    return con


def session(con: duckdb.DuckDBPyConnection | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB session in UTC for work on the lake: a cursor of ``con`` (its database's memory limit,
    temp directory and threads: the caller's configured ones; closing the cursor leaves ``con`` open),
    or, without one, a new in-memory DuckDB spilling outside the working directory (``spill_outside_cwd``)."""
    own = con.cursor() if con is not None else spill_outside_cwd(duckdb.connect())
    own.execute("SET TimeZone = 'UTC'")  # times decoded from text must not depend on the machine
    return own


__all__ = [
    "attach", "delta_options", "fsspec_filesystem", "is_remote", "polars_options", "pyarrow_filesystem",
    "remove_tree", "require_s3fs", "resolve_options", "session", "spill_outside_cwd", "upload_tree",
]
