"""Benchmark (issue 11): scoring with calls in flight against one at a time, and the
single-stream latency pass, against an endpoint that answers in 50 ms.

The endpoint is a real HTTP server on 127.0.0.1 (the tests' `FakeServer`) that answers every
POST with a Hugging Face style `[{"label", "score"}]` after sleeping `--delay` seconds (50 ms):
a vendor whose every call takes 50 ms, whatever else is in flight. The client is the real
`evaluate` code (`mlbench.bench.evaluate.evaluate_model`: resumable predictions file, rate
limiter, retries) with the smallest real `HttpService` (the load tester benchmark's
`FixedJsonService`) patched in for the registry's `open_service`.

In interleaved rounds, on the same `--images` test images of the prepared `digits`:
- `evaluate.concurrency: 1` (the seed's way: one call at a time, whose times are the latency);
- `evaluate.concurrency: 8` (the default), then its single-stream pass of `latency.samples`
  (200) images one call at a time, timed apart.

Reported: the scoring pass's seconds at each concurrency and their ratio (target >= 6x), the
single-stream p50 against the server's 50 ms (target within 5%), and the whole stage's time
(scoring + single-stream pass) for each. Beside them, in every round, bare clients' p50 against
the same server (`bare_client_p50_ms`): urllib3 (the library `evaluate` sends through),
`requests`, and a raw socket (no HTTP library): what a call costs this machine beyond the
server's 50 ms whoever makes it.

Needs the prepared `digits` in the project (`mlbench fetch digits && mlbench prepare digits`);
work files go to a temp project. Run from the project root:
`python benchmarks/bench_evaluate_concurrency.py [--images 400] [--repeat 2]`.
Writes results/bench/evaluate_concurrency.json.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import socket
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from _common import ROOT, Stopwatch, chdir, check_quiet, print_table, say, write_result
from bench_load_tester import FixedJsonService

from mlbench import paths
from mlbench.bench import evaluate, runs
from mlbench.core import ModelRef
from mlbench.data.export import load_test_images, write_test_table
from mlbench.project import parse_checked_params
from mlbench.services.base import ServiceContext, ServiceSettings
from tests.fakes.http_base import FakeServer, Response

TARGET_SPEEDUP = 6.0
TARGET_P50_TOLERANCE = 0.05
DS = "digits"


def answering_server(delay: float) -> FakeServer:
    server = FakeServer()
    server.delay = delay

    @server.route("POST", "/")
    def predict(req: Any) -> Response:  # noqa: ARG001 - every image gets the same answer
        return Response.json([{"label": "zero", "score": 0.9}, {"label": "one", "score": 0.1}])

    return server


@contextlib.contextmanager
def served_by(url: str, state: Path) -> Iterator[None]:
    """`evaluate` connects the fixed-JSON service for every run (patched in for the registry,
    where a run's `Connection` opens its service)."""

    def open_service(params: Any, service: str, ds: str, n: int) -> FixedJsonService:
        ctx = ServiceContext(service, ServiceSettings(), ds, n, params.seed, {}, state)
        return FixedJsonService(ctx, url)

    original = runs.open_service
    runs.open_service = open_service
    try:
        yield
    finally:
        runs.open_service = original


@contextlib.contextmanager
def timed_singles(sink: dict[str, float]) -> Iterator[None]:
    """Time the single-stream pass apart from the scoring pass (wraps `_time_singles`)."""
    original = evaluate._time_singles

    def wrapped(*args: Any, **kwargs: Any) -> None:
        with Stopwatch() as sw:
            original(*args, **kwargs)
        sink["single_stream_s"] = sw.seconds

    evaluate._time_singles = wrapped
    try:
        yield
    finally:
        evaluate._time_singles = original


def one_run(base: dict[str, Any], concurrency: int, images: int, run: int) -> dict[str, Any]:
    """Score `images` test images from scratch at `concurrency`; times and latency figures."""
    params = parse_checked_params({**base, "evaluate": {"concurrency": concurrency}})
    tests = load_test_images(DS)[:images]
    # a fresh run folder each time: nothing resumed
    model = ModelRef("bench", DS, 1000 + run)
    sink: dict[str, float] = {}
    with timed_singles(sink), Stopwatch() as sw:
        metrics = evaluate.evaluate_model(params, model, tests, "bench")
    single = sink.get("single_stream_s", 0.0)
    return {"concurrency": concurrency, "images": len(tests), "stage_s": sw.seconds,
            "scoring_s": sw.seconds - single, "single_stream_s": single,
            "latency_source": metrics["latency_source"],
            "latency_p50_ms": metrics["latency_p50_ms"],
            "latency_p99_ms": metrics["latency_p99_ms"], "errors": metrics["errors"]}


class RawSocketClient:
    """The least a client can do: one keep-alive TCP connection, a POST written with one
    `sendall`, the answer read up to its Content-Length; no HTTP library, no parsing beyond
    that. What it measures over the server's time is this machine's own cost of a call
    (loopback, waking a blocked thread after the wait, two syscalls), which no client avoids."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.head = (f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                     "Content-Type: application/octet-stream\r\n")

    def post(self, image: bytes) -> bytes:
        self.sock.sendall(f"{self.head}Content-Length: {len(image)}\r\n\r\n".encode() + image)
        data = b""
        while b"\r\n\r\n" not in data:
            data += self._recv()
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
        while len(body) < length:
            body += self._recv()
        return body

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        return chunk

    def close(self) -> None:
        self.sock.close()


def bare_client_p50_ms(url: str, images: list[bytes]) -> dict[str, float]:
    """p50 of plain posts, one at a time, to the same server, interleaved call by call, by:
    a bare `urllib3.PoolManager` (the library `evaluate` calls through, without any mlbench
    code), a bare `requests.Session` (what `evaluate` used before: it re-reads the environment
    on every call) and `RawSocketClient` (no HTTP library: this machine's floor)."""
    import requests
    import urllib3

    pool = urllib3.PoolManager()
    raw = RawSocketClient(url)
    headers = {"Content-Type": "application/octet-stream"}
    clients = {"urllib3": lambda image: pool.request("POST", url, body=image, headers=headers,
                                                     retries=False).data,
               "raw_socket": raw.post}
    with requests.Session() as session:
        clients["requests"] = lambda image: session.post(url, data=image,
                                                         headers=headers).content
        seconds: dict[str, list[float]] = {name: [] for name in clients}
        for image in images:
            for name, post in clients.items():
                start = time.perf_counter()
                post(image)  # the body is read: as a client does
                seconds[name].append(time.perf_counter() - start)
    pool.clear()
    raw.close()
    return {name: 1000 * statistics.median(xs) for name, xs in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=400, help="test images scored per run")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds per answer")
    parser.add_argument("--samples", type=int, default=200, help="latency.samples")
    parser.add_argument("--repeat", type=int, default=2, help="interleaved rounds")
    args = parser.parse_args()
    if not (ROOT / paths.manifest_file(DS)).exists():
        raise SystemExit("needs the prepared digits: mlbench fetch digits && mlbench prepare "
                         "digits")
    meta: dict[str, Any] = {}
    check_quiet(meta)
    base = {**yaml.safe_load((ROOT / "params.yaml").read_text()), "datasets": [DS],
            "latency": {"samples": args.samples}}
    rounds: list[dict[str, Any]] = []
    floor: list[dict[str, float]] = []  # bare clients' p50 per round
    with tempfile.TemporaryDirectory(prefix="mlbench-bench-eval-") as tmp, \
            answering_server(args.delay) as server:
        project = Path(tmp)
        (project / "data" / DS).mkdir(parents=True)
        for name in ("test", "manifest.csv", "classes.txt"):  # read only
            (project / "data" / DS / name).symlink_to(ROOT / "data" / DS / name)
        with chdir(project), served_by(server.url, project / "state"):
            write_test_table(DS, None, 0)  # the whole test split
            sample = [t.path.read_bytes() for t in load_test_images(DS)[:args.samples]]
            for r in range(args.repeat):
                floor.append(bare_client_p50_ms(server.url, sample))
                for concurrency in (1, 8):
                    say(f"round {r + 1}/{args.repeat}: concurrency {concurrency}, "
                        f"{args.images} images")
                    rounds.append({"round": r + 1, **one_run(base, concurrency, args.images,
                                                             len(rounds))})
    by = {c: [x for x in rounds if x["concurrency"] == c] for c in (1, 8)}
    speedups = [one["scoring_s"] / eight["scoring_s"] for one, eight in zip(by[1], by[8],
                                                                            strict=True)]
    stage_speedups = [one["stage_s"] / eight["stage_s"] for one, eight in zip(by[1], by[8],
                                                                              strict=True)]
    p50 = statistics.median(x["latency_p50_ms"] for x in by[8])
    off = abs(p50 - args.delay * 1000) / (args.delay * 1000)
    print_table(f"evaluate against a {args.delay * 1000:.0f} ms endpoint, {args.images} images "
                f"(single-stream pass: {args.samples} images)",
                ["round", "concurrency", "scoring s", "single-stream s", "stage s",
                 "p50 ms", "p99 ms", "latency from", "errors"],
                [(x["round"], x["concurrency"], x["scoring_s"], x["single_stream_s"],
                  x["stage_s"], x["latency_p50_ms"], x["latency_p99_ms"], x["latency_source"],
                  x["errors"]) for x in rounds])
    speedup = statistics.median(speedups)
    verdict = "PASS" if speedup >= TARGET_SPEEDUP and off <= TARGET_P50_TOLERANCE else "MISS"
    print(f"\nscoring at 8 in flight: {speedup:.2f}x faster than one at a time (per round: "
          f"{', '.join(f'{s:.2f}' for s in speedups)}; target >= {TARGET_SPEEDUP}x); whole "
          f"stage incl. the single-stream pass {statistics.median(stage_speedups):.2f}x; "
          f"single-stream p50 {p50:.2f} ms, {off:.1%} off {args.delay * 1000:.0f} ms "
          f"(target <= {TARGET_P50_TOLERANCE:.0%}): {verdict}")
    bare = {name: statistics.median(x[name] for x in floor) for name in floor[0]}
    print(f"bare clients posting to the same server, one at a time, interleaved: p50 raw socket "
          f"{bare['raw_socket']:.2f} ms ({bare['raw_socket'] / (args.delay * 1000) - 1:+.1%} "
          f"off {args.delay * 1000:.0f} ms: this machine's floor), urllib3 {bare['urllib3']:.2f}"
          f" ms, requests {bare['requests']:.2f} ms; the single-stream p50 is "
          f"{(p50 - bare['urllib3']) / bare['urllib3']:+.1%} from bare urllib3 and "
          f"{(p50 - bare['raw_socket']) / bare['raw_socket']:+.1%} from the raw socket")
    results = {**meta, "rounds": rounds, "scoring_speedup": speedup,
               "scoring_speedups": speedups, "stage_speedups": stage_speedups,
               "single_stream_p50_ms": p50, "p50_off": off, "verdict": verdict,
               "bare_client_p50_ms": bare, "bare_client_p50_ms_per_round": floor}
    path = write_result("evaluate_concurrency", results, vars(args))
    say(f"wrote {path}")


if __name__ == "__main__":
    main()
