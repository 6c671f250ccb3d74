"""The load tester: exact call counts, the concurrency it promises, errors and retries counted."""

from __future__ import annotations

import threading
import time

import pytest

from mlbench.bench.load import drive, summarise
from mlbench.core import Prediction
from mlbench.params import LoadParams
from mlbench.retry import RetryPolicy
from mlbench.services.ratelimit import RateLimiter
from tests.fakes.http_base import FakeServer, Fault, Response
from tests.test_http import Echo


class InFlight:
    """Counts concurrent requests at the fake server."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.starts: list[float] = []
        self.lock = threading.Lock()

    def handler(self, delay: float):
        def classify(req):
            with self.lock:
                self.now += 1
                self.peak = max(self.peak, self.now)
                self.starts.append(time.monotonic())
            time.sleep(delay)
            with self.lock:
                self.now -= 1
            return Response.json([{"label": "cat", "score": 0.5}])

        return classify


@pytest.fixture
def fake():
    server = FakeServer()
    counter = InFlight()
    server.route("POST", "/classify")(counter.handler(0.03))
    with server:
        yield server, counter


def _echo(server) -> Echo:
    svc = Echo(server.url)
    svc.token = "new"
    return svc


@pytest.mark.parametrize("mode", ["batch", "sustained"])
def test_exact_calls_and_concurrency(fake, mode):
    server, counter = fake
    cfg = LoadParams(calls=47, concurrency=5, mode=mode, timeout=5)
    records, client = drive(_echo(server), [b"a", b"b", b"c"], cfg)
    assert client == "asyncio"
    assert sorted(r.call for r in records) == list(range(47))
    assert len(server.log) == 47
    assert counter.peak == 5
    assert all(r.ok and r.label == "cat" and r.latency >= 0.03 for r in records)
    summary = summarise(records, cfg, client)
    assert summary["calls"] == 47 and summary["errors"] == 0
    assert summary["throughput_rps"] > 0
    assert summary["latency_p50_ms"] >= 30


def test_batch_mode_waits_for_each_batch(fake):
    server, _ = fake
    cfg = LoadParams(calls=20, concurrency=10, mode="batch", timeout=5)
    records, _ = drive(_echo(server), [b"x"], cfg)
    first = [r for r in records if r.call < 10]
    second = [r for r in records if r.call >= 10]
    assert min(r.start for r in second) >= max(r.start + r.latency for r in first) - 1e-3


def test_retries_are_reported_and_every_call_ends_ok(fake):
    server, _ = fake
    # 20% of answers fail, as the acceptance test says; the default policy's 6 attempts
    # make a call that fails them all a 0.2**6 event
    server.inject(Fault(429, fraction=0.15, headers={"Retry-After": "0"}))
    server.inject(Fault(503, fraction=0.06, body={"error": "loading", "estimated_time": 0.01}))
    svc = _echo(server)
    svc.retry = RetryPolicy(max_attempts=6, base_delay=0.01, max_delay=0.1, timeout=5)
    cfg = LoadParams(calls=60, concurrency=6, mode="sustained", timeout=5)
    records, client = drive(svc, [b"x"], cfg)
    summary = summarise(records, cfg, client)
    assert summary["errors"] == 0 and summary["calls"] == 60
    assert summary["retries"] > 0 and summary["retried_calls"] > 0
    assert summary["retries"] == len(server.log) - 60


def test_failures_are_counted_not_fatal(fake):
    server, _ = fake
    server.inject(Fault(400, count=3))
    cfg = LoadParams(calls=12, concurrency=3, mode="batch", timeout=5)
    records, client = drive(_echo(server), [b"x"], cfg)
    assert summarise(records, cfg, client)["errors"] == 3
    assert sum(1 for r in records if "HTTP 400" in r.error) == 3


def test_vendor_rate_limit_is_respected(fake):
    server, counter = fake
    svc = _echo(server)
    svc.max_rps = 40.0
    drive(svc, [b"x"], LoadParams(calls=21, concurrency=10, mode="sustained", timeout=5))
    span = counter.starts[-1] - counter.starts[0]
    assert span >= 20 / 40 * 0.9


def test_services_without_http_fall_back_to_threads():
    class Sync:
        max_rps = None

        def predict(self, image: bytes) -> Prediction:
            time.sleep(0.01)
            return Prediction("x", 1.0)

    cfg = LoadParams(calls=9, concurrency=3, mode="sustained", timeout=5)
    records, client = drive(Sync(), [b"x"], cfg)  # type: ignore[arg-type]
    assert client == "threads" and len(records) == 9 and all(r.ok for r in records)


def test_rate_limiter_spaces_starts():
    limiter = RateLimiter(10.0)
    delays = [limiter.reserve() for _ in range(5)]
    assert delays[0] == 0.0
    assert delays[4] == pytest.approx(0.4, abs=0.02)
    assert RateLimiter(None).reserve() == 0.0


def test_rate_limiter_is_shared_by_threads_without_bursts():
    """Uploads on threads (Nyckel's samples) share the limiter: starts never bunch up."""
    now = [0.0]
    lock = threading.Lock()
    starts: list[float] = []

    def sleep(seconds: float) -> None:
        with lock:
            starts.append(seconds)

    limiter = RateLimiter(25.0, clock=lambda: now[0], sleep=sleep)
    threads = [threading.Thread(target=limiter.acquire) for _ in range(26)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(starts) == pytest.approx([k / 25 for k in range(1, 26)])
