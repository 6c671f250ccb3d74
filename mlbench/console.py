"""The one stderr console every stage prints progress notes and warnings to, and its bars."""

from __future__ import annotations

from typing import Any

from rich.console import Console

err = Console(stderr=True, soft_wrap=True, highlight=False)

#: Tables and other results a user reads go to stdout (pipeable); notes go to `err`.
out = Console(soft_wrap=True, highlight=False)
if not out.is_terminal:
    out.width = 140  # a log file or pipe: do not squeeze tables to 80 columns

_bars = True


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {message}")


def show_bars(on: bool) -> None:
    """Turn every progress bar of this process on or off. A stage that drives many runs at
    once (the `submit` and `score` stages) shows one display of its own instead of dozens of
    bars writing over each other."""
    global _bars
    _bars = on


def progress(*args: Any, **kwargs: Any) -> Any:
    """A tqdm bar, silent while bars are off (see `show_bars`)."""
    from tqdm import tqdm

    asked_off = bool(kwargs.pop("disable", False))
    return tqdm(*args, disable=asked_off or not _bars, **kwargs)
