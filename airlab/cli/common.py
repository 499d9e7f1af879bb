"""Shared CLI helpers: the consoles and JSON output."""

from __future__ import annotations

import json
import sys

from rich.console import Console


class PipeConsole(Console):
    """A rich Console that lets the CLI's error boundary handle a closed pipe (exit 141, quietly)
    instead of rich's own `SystemExit(1)`."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError("the reader of airlab's output went away")


out = PipeConsole(soft_wrap=True)
err = PipeConsole(stderr=True, soft_wrap=True)


_argv: list[str] = []


def set_invocation(argv: list[str]) -> None:
    """Remember the arguments this CLI run was given (for env.json)."""
    _argv[:] = list(argv)


def invocation() -> list[str]:
    return list(_argv)


def print_json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
