"""``python -m rebuild ...``: the ``rebuild`` command where its console script is not on PATH (a
scheduler that calls the interpreter it was given)."""

from rebuild.cli import run

run()
