"""What every `mlbench` command shares, the main CLI and each service's sub-commands alike."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from mlbench.console import err
from mlbench.errors import UserError

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn a UserError into one clear line and exit status 2 (no traceback)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            err.print(f"[bold red]error:[/bold red] {exc}")
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


def run_script(run: Callable[[list[str]], Any], argv: list[str] | None = None) -> int:
    """Entry point of a seed-compatible script: a UserError is one line and status 2."""
    import sys

    import click

    try:
        run(sys.argv[1:] if argv is None else argv)
    except UserError as exc:
        err.print(f"[bold red]error:[/bold red] {exc}")
        return 2
    except click.ClickException as exc:  # a typer command called from the script
        exc.show()
        return exc.exit_code
    return 0
