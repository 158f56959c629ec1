"""The Parquet event lake: archive events, read snapshots, audit, sample data.

This package imports nothing from ``rebuild`` or ``checks``.
"""

from lake.errors import LakeBusy, LakeError, LakeNotFound, SourceError
from lake.ingest import IngestResult, ingest
from lake.mapping import Mapping
from lake.read import EventFilter, files_read, read_events, read_quarantine
from lake.schema import DEFAULT_BUCKETS, EVENT_SCHEMA, QUARANTINE_SCHEMA, bucket_of
from lake.table import DataFile, Lake, Snapshot

__all__ = [
    "DEFAULT_BUCKETS",
    "EVENT_SCHEMA",
    "QUARANTINE_SCHEMA",
    "DataFile",
    "EventFilter",
    "IngestResult",
    "Lake",
    "LakeBusy",
    "LakeError",
    "LakeNotFound",
    "Mapping",
    "Snapshot",
    "SourceError",
    "bucket_of",
    "files_read",
    "ingest",
    "read_events",
    "read_quarantine",
]
