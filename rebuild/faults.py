"""Fault points of the rebuild package: see ``lake.faults`` (one implementation for both)."""

from lake.faults import ENV, point

__all__ = ["ENV", "point"]
