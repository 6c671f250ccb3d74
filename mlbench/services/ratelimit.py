"""The one request-rate limiter: uploads on threads and the asyncio load test share it.

Call starts are spaced at least `1/rate` apart, across threads and coroutines alike, so a
vendor's documented limit (Nyckel: 25 requests/s) is never exceeded even in bursts.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Spaces call starts `1/rate` seconds apart; `rate=None` means no limit."""

    def __init__(self, rate: float | None, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive")
        self.interval = 1.0 / rate if rate else 0.0
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = 0.0

    def reserve(self) -> float:
        """Take the next slot; how many seconds to wait before starting the call."""
        if not self.interval:
            return 0.0
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        return slot - now

    def acquire(self) -> None:
        """Block the calling thread until its slot."""
        wait = self.reserve()
        if wait > 0:
            self._sleep(wait)

    async def aacquire(self) -> None:
        """Wait for a slot without blocking the event loop."""
        wait = self.reserve()
        if wait > 0:
            await asyncio.sleep(wait)
