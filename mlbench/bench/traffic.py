"""One vendor's calls, shared by every run measured at once: its rate, and quiet for timing.

Scoring several runs of a vendor side by side must never exceed the vendor's documented rate
(one `RateLimiter` for all of them), and a load test must measure the endpoint alone: while it
runs, the vendor's scoring calls wait (those already in flight finish first), so the throughput
it reports is not shared with our own other traffic.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from mlbench.services.ratelimit import RateLimiter


class VendorTraffic:
    def __init__(self, max_rps: float | None):
        self.rate = RateLimiter(max_rps)
        self._cond = threading.Condition()
        self._in_flight = 0
        self._alone = False

    @contextmanager
    def call(self) -> Iterator[None]:
        """Around one scoring call: waits while a load test runs, then for a rate token."""
        with self._cond:
            while self._alone:
                self._cond.wait()
            self._in_flight += 1
        try:
            self.rate.acquire()
            yield
        finally:
            with self._cond:
                self._in_flight -= 1
                self._cond.notify_all()

    @contextmanager
    def alone(self) -> Iterator[None]:
        """Around a load test: one at a time, and with none of the vendor's calls in flight."""
        with self._cond:
            while self._alone:
                self._cond.wait()
            self._alone = True
            while self._in_flight:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._alone = False
                self._cond.notify_all()
