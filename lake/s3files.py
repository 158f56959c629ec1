"""The s3fs filesystem DuckDB reads a bucket's lake files through (``lake.storage.attach``).

DuckDB asks a registered filesystem about a file at each open (its size) and each check of its
caches (its modification time), and s3fs answers each question with a HEAD request: 8 per file and
query, so a read of 3,200 small files made 26,000 HEADs before its 3,200 GETs. A lake's data files
are written once under a name holding a UUID and never rewritten (Delta's rule), so what one HEAD
said of such a file stays true: it is kept. Files named otherwise (a distributed run's staging parts,
which a retried task rewrites) are asked about each time. A kept file that vacuum then deletes fails
at its GET, as it would have at the HEAD.
"""

from __future__ import annotations

import re
from typing import Any

import s3fs

#: ``part-{uuid}...parquet``: DuckDB's and compaction's files, and delta-rs' ``part-00000-{uuid}-c000``
WRITTEN_ONCE = re.compile(r"/part-[^/]*[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}[^/]*\.parquet$")
#: files whose details are kept (about 300 bytes each); the oldest make room
KEPT = 100_000


class LakeFiles(s3fs.S3FileSystem):  # type: ignore[misc]
    """``s3fs.S3FileSystem`` that asks about each written-once file once."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._known: dict[str, dict[str, Any]] = {}

    async def _info(self, path: str, bucket: str | None = None, key: str | None = None, refresh: bool = False,
                    version_id: str | None = None) -> dict[str, Any]:
        name = self._strip_protocol(path)
        if not refresh and version_id is None and name in self._known:
            return self._known[name]
        found: dict[str, Any] = await super()._info(path, bucket, key, refresh=refresh, version_id=version_id)
        if found.get("type") == "file" and WRITTEN_ONCE.search("/" + name):
            if len(self._known) >= KEPT:
                del self._known[next(iter(self._known))]
            self._known[name] = found
        return found
