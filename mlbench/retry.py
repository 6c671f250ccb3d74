"""One retry policy for every remote call: downloads, vendor control planes and predictions.

An attempt is a function of its attempt number that either returns, raises `RetryLater` (this
outcome is worth another try: a 429, a 5xx, a dropped connection, a model still loading) or
raises anything else (final). The policy waits what the server asked for (`Retry-After`,
Hugging Face's `estimated_time`), else an exponential backoff with full jitter, and gives up
after `max_attempts` with a `ServiceCallError` that carries the last status and the attempt
count. The attempt number is passed in so that a prediction can report how many calls it took.

Built on tenacity; the synchronous and asynchronous forms share the same decisions.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import tenacity

from mlbench.errors import ServiceCallError
from mlbench.runlock import pause

T = TypeVar("T")

#: HTTP statuses worth another attempt: throttled, or a server-side failure.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class RetryLater(Exception):
    """Raised by an attempt whose outcome is worth another try.

    `after` is the delay the server asked for (seconds), if it said; `status` the HTTP status
    (None for a dropped connection).
    """

    def __init__(self, message: str, *, status: int | None = None, after: float | None = None):
        super().__init__(message)
        self.status = status
        self.after = after


class GaveUp(ServiceCallError):
    """Every attempt the policy allows was worth another one: the last one's outcome."""


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts (and, optionally, for how long), how long to wait between them, and
    each attempt's own timeout."""

    max_attempts: int | None = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    #: A server's own `Retry-After` / `estimated_time` is honoured up to this many seconds.
    max_server_delay: float = 300.0
    timeout: float = 30.0
    #: Stop once this many seconds have passed since the first attempt (None: no time limit);
    #: no wait runs past it.
    max_seconds: float | None = None
    #: The shortest wait between attempts, even when a server says 0.
    min_delay: float = 0.0

    def backoff(self, attempt: int) -> float:
        """Full-jitter exponential backoff before attempt `attempt + 1`."""
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))

    def delay(self, error: RetryLater, attempt: int) -> float:
        if error.after is not None:
            return max(self.min_delay, min(max(0.0, error.after), self.max_server_delay))
        return max(self.min_delay, self.backoff(attempt))

    def _options(self, what: str) -> dict:
        def wait(state: tenacity.RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            delay = self.delay(error, state.attempt_number) if isinstance(error, RetryLater) \
                else 0.0
            if self.max_seconds is not None:
                delay = min(delay, max(0.0, self.max_seconds - (state.seconds_since_start or 0)))
            return delay

        def gave_up(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            n = state.attempt_number
            spent = f" in {state.seconds_since_start:.1f} s" if self.max_seconds else ""
            raise GaveUp(f"{what}: gave up after {n} attempt{'s' if n > 1 else ''}{spent}: "
                         f"{error}", getattr(error, "status", None), n) from None

        stop = tenacity.stop_never if self.max_attempts is None \
            else tenacity.stop_after_attempt(self.max_attempts)
        if self.max_seconds is not None:
            stop = stop | tenacity.stop_after_delay(self.max_seconds)
        return {"stop": stop, "wait": wait, "retry_error_callback": gave_up,
                "retry": tenacity.retry_if_exception_type(RetryLater)}

    def call(self, attempt: Callable[[int], T], what: str,
             sleep: Callable[[float], None] = pause) -> T:
        """Run `attempt(n)` for n = 1, 2, ... until it returns or raises something final;
        `GaveUp` when every allowed attempt asked for another."""
        for state in tenacity.Retrying(sleep=sleep, **self._options(what)):
            with state:
                return attempt(state.retry_state.attempt_number)
        raise RuntimeError("unreachable: tenacity returns or raises")  # pragma: no cover

    async def acall(self, attempt: Callable[[int], Awaitable[T]], what: str) -> T:
        """The asynchronous form of `call` (sleeps without blocking the event loop)."""
        async for state in tenacity.AsyncRetrying(sleep=asyncio.sleep, **self._options(what)):
            with state:
                return await attempt(state.retry_state.attempt_number)
        raise RuntimeError("unreachable: tenacity returns or raises")  # pragma: no cover


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """`Retry-After` as seconds or an HTTP date (RFC 9110); None when absent or malformed."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
