"""The CLI's only way to print: one JSON object under --json, readable text otherwise."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.markup import escape

from lake.encode import json_default


def to_json(payload: object) -> str:
    return json.dumps(payload, default=json_default, sort_keys=False)


@dataclass
class Output:
    """Where a command's result goes: stdout as JSON for machines, rich text for people."""

    json: bool = False

    def __post_init__(self) -> None:
        self.console = Console(highlight=False, soft_wrap=True)
        self.errors = Console(stderr=True, highlight=False, soft_wrap=True)

    def result(self, payload: dict[str, Any], render: Callable[[Console], None] | None = None) -> None:
        """Print a command's result: exactly one JSON object, or ``render`` for people."""
        if self.json:
            sys.stdout.write(to_json(payload) + "\n")
            sys.stdout.flush()
        elif render is not None:
            render(self.console)
        else:
            for key, value in payload.items():
                self.console.print(f"[bold]{key}[/bold]: {escape(str(value))}")

    def error(self, message: str, code: int, kind: str) -> None:
        if self.json:
            sys.stdout.write(to_json({"error": message, "kind": kind, "exit_code": code}) + "\n")
        else:
            # escaped: messages quote config sections ("[projections] modules"), paths and values
            self.errors.print(f"[red]error[/red]: {escape(message)}")
