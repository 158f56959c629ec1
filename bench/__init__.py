"""Benchmarks: ``python -m bench ingest [--events N ...]`` (see docs/benchmarks.md)."""

from __future__ import annotations

import resource
from pathlib import Path


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB: ``VmHWM`` where Linux has it. ``ru_maxrss`` is
    not used there: after fork (or vfork) and exec it still counts the parent's memory."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
