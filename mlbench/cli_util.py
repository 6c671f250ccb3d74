"""What every `mlbench` command shares, the main CLI and each service's sub-commands alike."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from mlbench.console import err
from mlbench.errors import ServiceError, UserError
from mlbench.redact import scrub
from mlbench.runlock import guard_process

F = TypeVar("F", bound=Callable[..., Any])


def exit_status(exc: BaseException) -> int | None:
    """The exit status of an error that is reported in one line, or None for a bug."""
    if isinstance(exc, UserError):
        return 2
    if isinstance(exc, ServiceError):
        return 1
    return None


def report(exc: BaseException) -> None:
    """Print the error as one line, credentials scrubbed (a vendor's message may echo them)."""
    from rich.markup import escape

    err.print(f"[bold red]error:[/bold red] {escape(scrub(str(exc)))}")


def one_line_errors(fn: F) -> F:
    """Turn a UserError (exit 2) or a ServiceError (exit 1) into one clear line, no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (UserError, ServiceError) as exc:
            report(exc)
            raise typer.Exit(exit_status(exc)) from None

    return wrapper  # type: ignore[return-value]


def run_script(run: Callable[[list[str]], Any], argv: list[str] | None = None) -> int:
    """Entry point of a seed-compatible script: errors as `one_line_errors` reports them.

    Run as a program (`argv` None: the arguments are the process's own), the process is guarded
    like every `mlbench` command: it ends when its parent dies (`runlock.guard_process`)."""
    import sys

    import click

    if argv is None:
        guard_process()
    try:
        run(sys.argv[1:] if argv is None else argv)
    except (UserError, ServiceError) as exc:
        report(exc)
        return exit_status(exc) or 1
    except click.ClickException as exc:  # a typer command called from the script
        exc.show()
        return exc.exit_code
    return 0
