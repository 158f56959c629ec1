"""Errors of the rebuild package.

    RebuildError              root: a run, plan, store or cutover cannot go on
    ├── ConfigError           workbench.toml or an option is wrong
    ├── ProjectionError       a projection is unknown, raises, or returns the wrong shape
    ├── StoreError            the view store refuses (missing table, bad URI, ...)
    ├── ViewLocked            another run, backfill or cutover holds the view's lock
    ├── PlanOutdated          the projection or live changed since the plan was made: plan again
    └── CutoverRefused        no passing check report for the shadow (use --force to override)

Like ``lake.LakeError``, every error carries its context as attributes and says what to do next.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from lake.errors import ContextError


def near_name(name: str, held: Sequence[str]) -> str | None:
    """The name of ``held`` a misspelt ``name`` stands for: the same in another case (names are
    case-sensitive), else one a letter or two away; None when none is near."""
    same = [h for h in held if h.lower() == name.lower()]
    return same[0] if same else next(iter(difflib.get_close_matches(name, held, n=1, cutoff=0.8)), None)


class RebuildError(ContextError):
    """Root of the rebuild package's errors."""


class ConfigError(RebuildError):
    """The configuration or a command-line option cannot be used."""


class ProjectionError(RebuildError):
    """A projection is unknown, failed, or produced rows that break its contract."""


class StoreError(RebuildError):
    """The view store cannot do what was asked."""


class ViewLocked(RebuildError):
    """Another process holds the view's lock."""

    retryable = True


class PlanOutdated(RebuildError):
    """A plan made earlier no longer fits the projection's code or live's checkpoint."""

    retryable = True


class CutoverRefused(RebuildError):
    """Cutover needs a passing check report for the shadow's run."""
