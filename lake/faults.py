"""Deterministic fault points for the fault-injection tests (``tests/faults``).

``REBUILD_FAULT_POINT=name[:n]`` makes the process kill itself with SIGKILL the n-th time (default:
the first) it reaches ``point(name)``: a crash at an exact place, not after a guessed delay.
Without the variable ``point`` costs one dictionary lookup. ``rebuild.faults`` re-exports it
(the lake imports nothing from ``rebuild``).
"""

from __future__ import annotations

import os
import signal

ENV = "REBUILD_FAULT_POINT"
_seen: dict[str, int] = {}


def point(name: str) -> None:
    """Kill this process (SIGKILL: no cleanup, no finally) if ``name`` is the armed point."""
    armed = os.environ.get(ENV)
    if not armed:
        return
    target, _, nth = armed.partition(":")
    if target != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
