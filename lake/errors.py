"""Errors of the lake package.

    ContextError              shared base of LakeError, rebuild.RebuildError, checks.CheckError
    LakeError                 root: anything the lake refuses, with a message saying what to do
    ├── SourceError           an input file is missing, unreadable or does not fit its mapping
    ├── LakeNotFound          no lake at the location given
    └── LakeBusy              another writer holds the lake's commit lock

Every error carries its context as attributes (``file``, ``stream``, ...) so that a job can log
them and a person can act on them.
"""

from __future__ import annotations

import os


class ContextError(Exception):
    """An error that carries its context (``file``, ``stream``, ``view``, ...) as attributes.

    The roots of all three packages derive from it; ``retryable`` says whether running again can
    help.
    """

    retryable = False

    def __init__(self, message: str, **context: object) -> None:
        super().__init__(message)
        self.context = context
        for name, value in context.items():
            setattr(self, name, value)


def empty_value(flag: str, advice: str) -> str:
    """The message for an option given as empty text: in a job, its command's variable was unset."""
    return f"{flag} is empty (is a variable of the job's command unset?): {advice}"


def not_a_file(what: str, path: object) -> str:
    """The message for a file option naming a folder, a pipe (``<(zcat x.gz)``, /dev/stdin) or nothing."""
    if os.path.isdir(str(path)):
        return f"{what} {path} is a folder, not a file"
    if os.path.exists(str(path)):  # files are read more than once (a format's sniffing, then the reader)
        return f"{what} {path} is a pipe or a device, not a file: save it to a file and give that"
    return f"{what} {path} not found"


class LakeError(ContextError):
    """Root of the lake's errors."""


class SourceError(LakeError):
    """An input cannot be read as a whole; nothing of its commit is archived."""


class LakeNotFound(LakeError):
    """The location holds no lake."""


class LakeBusy(LakeError):
    """Another process is committing to this lake."""

    retryable = True
