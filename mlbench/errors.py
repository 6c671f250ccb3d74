"""The exceptions that end a command with one line instead of a traceback.

- `UserError`: the user must fix something (input, params, environment, credentials); the CLI
  prints it as one line and exits with status 2.
- `ServiceError`: a vendor failed (an error after every retry, a job that failed on its side, a
  wait that timed out while the work goes on there); one line, exit status 1. A rerun continues.
- `ServiceCallError`: one call that failed for good, with its HTTP status and attempt count; a
  scoring pass records it as an error row and goes on.

Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


class UserError(Exception):
    """A mistake in input, params or environment, with a message saying what to do."""


class MissingExtra(UserError):
    """An optional dependency of one service (or of the real datasets) is not installed."""

    def __init__(self, feature: str, module: str, extra: str):
        super().__init__(f"{feature} needs the Python package {module!r}, which is not "
                         f"installed: pip install 'mlbench[{extra}]'")
        self.extra = extra


@contextmanager
def needs_extra(feature: str, extra: str) -> Iterator[None]:
    """Turn a missing third-party module imported inside into `MissingExtra` for `extra`."""
    try:
        yield
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if not missing or missing.split(".")[0] == "mlbench":
            raise
        raise MissingExtra(feature, missing, extra) from None


class ServiceError(Exception):
    """A vendor-side failure the user did not cause; the message says what a rerun does."""


class ServiceCallError(ServiceError):
    """A call that failed for good (after retries, or a status that must not be retried)."""

    def __init__(self, message: str, status: int | None = None, attempts: int = 1):
        super().__init__(message)
        self.status = status
        self.attempts = attempts
