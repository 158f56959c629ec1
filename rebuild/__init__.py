"""Replay the event lake through vectorized projections into shadow views; cut over; roll back."""

from rebuild.config import Config
from rebuild.errors import (
    ConfigError,
    CutoverRefused,
    PlanOutdated,
    ProjectionError,
    RebuildError,
    StoreError,
    ViewLocked,
)
from rebuild.options import RunOptions
from rebuild.plan import Plan
from rebuild.projection import Projection, Window, projection
from rebuild.runner import RunResult
from rebuild.workbench import PruneResult, ViewState, Workbench

__all__ = [
    "Config",
    "ConfigError",
    "CutoverRefused",
    "Plan",
    "PlanOutdated",
    "Projection",
    "ProjectionError",
    "PruneResult",
    "RebuildError",
    "RunOptions",
    "RunResult",
    "StoreError",
    "ViewLocked",
    "ViewState",
    "Window",
    "Workbench",
    "projection",
]
