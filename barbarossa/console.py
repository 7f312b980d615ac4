"""Console output through rich; plain lines when stdout is a log file (Metaflow tasks)."""

from __future__ import annotations

import sys

from rich.console import Console

console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)


def log(message: str) -> None:
    console.print(message)
