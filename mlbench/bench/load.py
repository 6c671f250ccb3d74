"""`load` stage: the seed's concurrency test ("1,000 calls in batches of 10"), generalised.

`mode: batch` sends `concurrency` calls, waits for all of them, and repeats (the seed's method);
`mode: sustained` keeps `concurrency` calls in flight at all times. HTTP services are driven by
one asyncio event loop with a pooled aiohttp session: a thread per request would add
milliseconds of scheduling to every latency it reports. Services without an HTTP description
(boto3-based) fall back to a thread pool, and the summary says so. Latency uses the monotonic
high-resolution clock; errors are counted, never fatal, and their text is scrubbed of
credentials. The stage holds the (service, dataset) writer lock while it runs.

A model is load-tested once for its settings: `summary.json` records what the test ran with
(the model, the `load` params, the images), and a test already run with the same is kept. The
`measure` stage runs the tests ahead of this stage, each while its vendor's endpoint serves
nothing else of ours; this stage then finds them.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace

import numpy as np

from mlbench import paths
from mlbench.bench.runs import Connection, connected, fingerprint, trained_models
from mlbench.bench.stats import percentiles_ms
from mlbench.console import err
from mlbench.core import ImageRef, ModelRef, Prediction
from mlbench.data.diskspace import disk_full, is_disk_full
from mlbench.data.export import load_test_images
from mlbench.errors import ServiceCallError
from mlbench.io import atomic_write_csv, atomic_write_json, read_json
from mlbench.params import LoadParams, Params
from mlbench.redact import scrub
from mlbench.runlock import writer_lock
from mlbench.services.base import Service
from mlbench.services.http import HttpService
from mlbench.services.ratelimit import RateLimiter

HEADER = ["call", "start", "latency", "status", "attempts", "label", "error"]


@dataclass(frozen=True)
class CallRecord:
    call: int
    start: float  # seconds since the test began
    latency: float  # seconds
    ok: bool
    attempts: int
    label: str
    error: str


def _record(i: int, t0: float, start: float, outcome: Prediction | ServiceCallError
            ) -> CallRecord:
    end = time.perf_counter()
    if isinstance(outcome, ServiceCallError):
        return CallRecord(i, start - t0, end - start, False, outcome.attempts, "",
                          scrub(str(outcome))[:300])
    return CallRecord(i, start - t0, end - start, True, outcome.attempts, outcome.label or "",
                      "")


async def _drive_async(svc: HttpService, images: list[bytes], cfg: LoadParams,
                       limiter: RateLimiter) -> list[CallRecord]:
    import aiohttp

    records: list[CallRecord] = []
    connector = aiohttp.TCPConnector(limit=cfg.concurrency, limit_per_host=cfg.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        t0 = time.perf_counter()

        async def one(i: int) -> None:
            await limiter.aacquire()
            start = time.perf_counter()
            try:
                pred = await svc.apredict(session, images[i % len(images)])
                records.append(_record(i, t0, start, pred))
            except ServiceCallError as exc:
                records.append(_record(i, t0, start, exc))

        if cfg.mode == "batch":
            for first in range(0, cfg.calls, cfg.concurrency):
                last = min(first + cfg.concurrency, cfg.calls)
                await asyncio.gather(*(one(i) for i in range(first, last)))
        else:
            counter = iter(range(cfg.calls))

            async def worker() -> None:
                for i in counter:
                    await one(i)

            await asyncio.gather(*(worker() for _ in range(min(cfg.concurrency, cfg.calls))))
    return records


def _drive_threads(svc: Service, images: list[bytes], cfg: LoadParams,
                   limiter: RateLimiter) -> list[CallRecord]:
    t0 = time.perf_counter()

    def one(i: int) -> CallRecord:
        limiter.acquire()
        start = time.perf_counter()
        try:
            return _record(i, t0, start, svc.predict(images[i % len(images)]))
        except ServiceCallError as exc:
            return _record(i, t0, start, exc)

    with ThreadPoolExecutor(cfg.concurrency) as pool:
        if cfg.mode == "batch":
            records = []
            for first in range(0, cfg.calls, cfg.concurrency):
                last = min(first + cfg.concurrency, cfg.calls)
                records += list(pool.map(one, range(first, last)))
            return records
        return list(pool.map(one, range(cfg.calls)))


def drive(svc: Service, images: list[bytes], cfg: LoadParams,
          limiter: RateLimiter | None = None) -> tuple[list[CallRecord], str]:
    """Run the load test against a connected service; returns the calls and the client kind.
    `limiter`: the vendor's rate (its own, at the documented rate, unless given)."""
    limiter = limiter or RateLimiter(svc.max_rps)
    if isinstance(svc, HttpService):
        svc.retry = replace(svc.retry, timeout=cfg.timeout)
        return asyncio.run(_drive_async(svc, images, cfg, limiter)), "asyncio"
    return _drive_threads(svc, images, cfg, limiter), "threads"


def summarise(records: list[CallRecord], cfg: LoadParams, client: str) -> dict:
    ok = [r for r in records if r.ok]
    wall = max((r.start + r.latency for r in records), default=0.0)
    lat = percentiles_ms([r.latency for r in ok])
    return {
        "calls": len(records),
        "concurrency": cfg.concurrency,
        "mode": cfg.mode,
        "client": client,
        "wall_seconds": wall,
        "seconds_per_1000_calls": wall * 1000 / len(records) if records else float("nan"),
        "throughput_rps": len(ok) / wall if wall else float("nan"),
        "latency_mean_ms": float(np.mean([r.latency for r in ok]) * 1000) if ok else float("nan"),
        "latency_p50_ms": lat["p50"],
        "latency_p95_ms": lat["p95"],
        "latency_p99_ms": lat["p99"],
        "errors": len(records) - len(ok),
        "retries": sum(r.attempts - 1 for r in records),
        "retried_calls": sum(1 for r in records if r.attempts > 1),
    }


def write_results(records: list[CallRecord], summary: dict, service: str, ds: str, n: int) -> None:
    rows = [(r.call, f"{r.start:.6f}", f"{r.latency:.6f}", "ok" if r.ok else "error", r.attempts,
             r.label, r.error) for r in sorted(records, key=lambda r: r.call)]
    atomic_write_csv(paths.throughput_csv(service, ds, n), HEADER, rows)
    atomic_write_json(paths.throughput_summary(service, ds, n), summary)


def run_load(params: Params, service: str, ds: str, sizes: list[int] | None = None) -> list[dict]:
    with writer_lock(paths.writer_lock(service, ds), f"mlbench load {service} {ds}"):
        try:
            return _run_load(params, service, ds, sizes)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            raise disk_full(paths.loads_dir(service, ds), "writing the load test's results",
                            None, f"rerun `mlbench load {service} {ds}`") from None


def _run_load(params: Params, service: str, ds: str, sizes: list[int] | None) -> list[dict]:
    tests = load_test_images(ds)
    return [load_model(params, model, tests, service)
            for model in trained_models(params, service, ds, sizes)]


def load_model(params: Params, model: ModelRef, tests: list[ImageRef],
               service: str | None = None, limiter: RateLimiter | None = None,
               connection: Connection | None = None) -> dict:
    """The load test of one model, or the one already run for this model with these settings
    (the `measure` stage runs them ahead of the `load` stages, which then only find them).
    `connection`: the run's, already used to score it; else one of its own."""
    service = service or model.service
    ds, n, cfg = model.dataset, model.ablation, params.load
    chosen = tests[: cfg.calls]
    inputs = fingerprint(model.to_json(), asdict(cfg), [t.name for t in chosen])
    done = paths.throughput_summary(service, ds, n)
    if done.exists() and paths.throughput_csv(service, ds, n).exists():
        summary = read_json(done)
        if summary.get("inputs") == inputs:
            err.print(f"load {service}/{ds}/{n}: measured already, {summary['throughput_rps']:.1f}"
                      " req/s")
            return summary
    images = [t.path.read_bytes() for t in chosen]
    with connected(params, service, model, connection) as svc:
        err.print(f"load {service}/{ds}/{n}: {cfg.calls} calls, {cfg.concurrency} in flight "
                  f"({cfg.mode})")
        records, client = drive(svc, images, cfg, limiter)
    summary = {**summarise(records, cfg, client), "inputs": inputs}
    write_results(records, summary, service, ds, n)
    err.print(f"load {service}/{ds}/{n}: {summary['throughput_rps']:.1f} req/s, "
              f"p50 {summary['latency_p50_ms']:.1f} ms, p95 {summary['latency_p95_ms']:.1f} "
              f"ms, {summary['errors']} errors, {summary['retries']} retries")
    return summary
