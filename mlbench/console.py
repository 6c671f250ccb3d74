"""The one stderr console every stage prints progress notes and warnings to."""

from rich.console import Console

err = Console(stderr=True, soft_wrap=True, highlight=False)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {message}")

#: Tables and other results a user reads go to stdout (pipeable); notes go to `err`.
out = Console(soft_wrap=True, highlight=False)
if not out.is_terminal:
    out.width = 140  # a log file or pipe: do not squeeze tables to 80 columns
