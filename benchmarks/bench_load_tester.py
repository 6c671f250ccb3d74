"""Benchmark (issue 3): the load tester's own overhead and ceiling, side by side with `wrk`.

Starts nginx (Debian's package) on 127.0.0.1 with a temporary config answering every
`POST /` with the fixed Hugging Face-style JSON `[{"label":"a","score":0.9}]`: a server that
costs next to nothing, so what is measured is the client. Then, in the same run, against the
same server, at 10 connections:

- `wrk` (one thread, a Lua script POSTing a 2 kB body): the reference C client;
- `mlbench.bench.load.drive` through a minimal `HttpService` (our aiohttp path, exactly what
  `mlbench load` runs) in `sustained` mode (10 in flight) and in `batch` mode (the seed's: send
  10, wait for all, repeat), with the client's CPU time per call.

nginx gets one worker process, so the client has the other core of a 2-core machine.
Target (issue 3): our tester sustains >= 2,000 requests/s and its p50 exceeds wrk's by at most
1 ms. Rounds are interleaved and repeated (`--repeat`); the median round is reported.
`--profile` adds a cProfile of a sustained run, grouped by package, to show where the
client's time goes. nginx is always stopped (also on error or Ctrl-C).

Needs: `apt-get install -y nginx wrk` (Debian/Ubuntu). Run from the project root:
`python benchmarks/bench_load_tester.py [--calls 20000] [--profile]`.
Writes results/bench/load_tester.json and prints a table.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _common import (
    Stopwatch,
    check_quiet,
    cpu_seconds,
    print_table,
    say,
    write_result,
)

from mlbench.bench.load import drive, summarise
from mlbench.core import AblationSplit, ModelRef, Prediction
from mlbench.params import LoadParams
from mlbench.services.base import Job, ServiceContext, ServiceSettings
from mlbench.services.http import HttpRequest, HttpService, parse_label_scores

ANSWER = '[{"label":"a","score":0.9}]'
BODY_BYTES = 2048
CONNECTIONS = 10
TARGET_RPS = 2000.0
TARGET_P50_GAP_MS = 1.0

NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} reuseport;
        location = / {{
            client_body_buffer_size 64k;
            client_max_body_size 1m;
            default_type application/json;
            return 200 '{answer}';
        }}
    }}
}}
"""

WRK_SCRIPT = """\
wrk.method = "POST"
wrk.body = string.rep("x", {size})
wrk.headers["Content-Type"] = "application/octet-stream"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {{\\"requests\\": %d, \\"duration_us\\": %d, \\"errors\\": %d, "
    .. "\\"p50_us\\": %d, \\"p95_us\\": %d, \\"p99_us\\": %d, \\"mean_us\\": %.1f}}\\n",
    summary.requests, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.mean))
end
"""


# -- the system under test: a trivial HTTP service ---------------------------------------------
class FixedJsonService(HttpService):
    """The smallest real `HttpService`: POST the bytes, parse the label/score list."""

    name = "bench-fixed-json"

    def __init__(self, ctx: ServiceContext, url: str):
        super().__init__(ctx)
        self.url = url

    def submit(self, split: AblationSplit) -> Job:
        """Nothing to train: the server answers a fixed JSON."""
        return Job(split.dataset, split.size)

    def wait(self, job: Job) -> ModelRef:
        return ModelRef(self.name, job.dataset, job.ablation)

    def connect(self, model: ModelRef) -> None:
        """Nothing to connect: the URL is given at construction."""

    def build_request(self, image: bytes) -> HttpRequest:
        return HttpRequest("POST", self.url, {"Content-Type": "application/octet-stream"}, image)

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> Prediction:
        return parse_label_scores(body)


# -- nginx ---------------------------------------------------------------------------------------
def require_tools() -> tuple[str, str]:
    nginx, wrk = shutil.which("nginx") or _sbin("nginx"), shutil.which("wrk")
    if not nginx or not wrk:
        missing = " and ".join(n for n, p in (("nginx", nginx), ("wrk", wrk)) if not p)
        raise SystemExit(f"{missing} not found; install with `apt-get update && apt-get install "
                         "-y nginx wrk` (Debian/Ubuntu), then rerun")
    return nginx, wrk


def _sbin(name: str) -> str | None:
    path = Path("/usr/sbin") / name
    return str(path) if path.exists() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def nginx_server(nginx: str, tmp: Path):
    """Run nginx in the foreground on a free loopback port; yield its URL; always stop it."""
    from mlbench.services.local.server import die_with_parent

    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, port=port, answer=ANSWER))
    proc = subprocess.Popen([nginx, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=die_with_parent)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"nginx exited: {proc.stderr.read() if proc.stderr else ''}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("nginx did not start listening within 10 s") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/"
    finally:
        if proc.poll() is None:
            proc.terminate()  # SIGTERM: nginx fast shutdown, master stops its workers
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        say(f"nginx stopped (exit {proc.returncode})")


def verify_server(url: str, requests: int = 3) -> None:
    """Pipeline POSTs with 2 kB bodies on ONE connection: each must get the fixed JSON.

    nginx's `return` answers before reading the body and then discards it; if it did not
    consume the body, the next request on the keep-alive connection would be parsed from body
    bytes and fail, so this proves the server is safe for the keep-alive clients below.
    """
    port = int(url.rsplit(":", 1)[1].strip("/"))
    body = os.urandom(BODY_BYTES)
    head = (f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall((head + body) * requests)
        data = b""
        while data.count(ANSWER.encode()) < requests:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    answers = data.count(b"HTTP/1.1 200 OK")
    if answers != requests or data.count(ANSWER.encode()) != requests or (
            b"application/json" not in data):
        raise SystemExit(f"nginx did not answer {requests} pipelined POSTs on one connection: "
                         f"{data[:300]!r}")


# -- the contenders -----------------------------------------------------------------------------
def run_wrk(wrk: str, url: str, tmp: Path, seconds: int) -> dict[str, Any]:
    script = tmp / "post.lua"
    script.write_text(WRK_SCRIPT.format(size=BODY_BYTES))
    out = subprocess.run([wrk, "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "--timeout", "5s",
                          "-s", str(script), url], capture_output=True, text=True, check=True)
    line = next(ln for ln in out.stdout.splitlines() if ln.startswith("WRKJSON "))
    raw = json.loads(line[len("WRKJSON "):])
    secs = raw["duration_us"] / 1e6
    return {"calls": raw["requests"], "wall_seconds": secs, "errors": raw["errors"],
            "throughput_rps": raw["requests"] / secs, "latency_mean_ms": raw["mean_us"] / 1000,
            "latency_p50_ms": raw["p50_us"] / 1000, "latency_p95_ms": raw["p95_us"] / 1000,
            "latency_p99_ms": raw["p99_us"] / 1000}


def run_ours(svc: FixedJsonService, images: list[bytes], calls: int, mode: str,
             profile: cProfile.Profile | None = None) -> dict[str, Any]:
    cfg = LoadParams(calls=calls, concurrency=CONNECTIONS, mode=mode)  # type: ignore[arg-type]
    cpu0 = cpu_seconds()
    if profile is not None:
        profile.enable()
    with Stopwatch() as sw:
        records, client = drive(svc, images, cfg)
    if profile is not None:
        profile.disable()
    summary = summarise(records, cfg, client)
    summary["client_cpu_us_per_call"] = (cpu_seconds() - cpu0) / calls * 1e6
    summary["drive_seconds"] = sw.seconds
    return summary


def profile_by_package(prof: cProfile.Profile, top: int = 12) -> dict[str, Any]:
    """Own (tottime) seconds per package and the costliest functions, from a cProfile run."""
    stats = pstats.Stats(prof)
    by_pkg: dict[str, float] = {}
    funcs = []
    for (file, line, fn), (_cc, _nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        pkg = _package(file)
        by_pkg[pkg] = by_pkg.get(pkg, 0.0) + tt
        funcs.append((tt, ct, f"{pkg}:{Path(file).name}:{line}({fn})"))
    total = sum(by_pkg.values()) or 1.0
    funcs.sort(reverse=True)
    return {
        "total_seconds": total,
        "by_package_percent": {k: round(100 * v / total, 1)
                               for k, v in sorted(by_pkg.items(), key=lambda kv: -kv[1])[:top]},
        "top_functions": [{"tottime": round(tt, 3), "cumtime": round(ct, 3), "function": name}
                          for tt, ct, name in funcs[:top]],
    }


def _package(file: str) -> str:
    if file.startswith("<") or file == "~":
        return "builtins/C"
    parts = Path(file).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].split(".")[0]
    if "mlbench" in parts:
        return "mlbench/" + "/".join(parts[parts.index("mlbench") + 1:])
    return "stdlib/" + Path(file).stem


# -- main --------------------------------------------------------------------------------------
def _median_run(tries: list[dict[str, Any]]) -> dict[str, Any]:
    """The try with the median throughput (whole run kept, so its numbers belong together)."""
    ranked = sorted(tries, key=lambda r: r["throughput_rps"])
    chosen = dict(ranked[(len(ranked) - 1) // 2])
    chosen["tries_rps"] = [round(r["throughput_rps"], 1) for r in tries]
    chosen["tries_p50_ms"] = [round(r["latency_p50_ms"], 3) for r in tries]
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=20_000, help="calls per mlbench run")
    parser.add_argument("--wrk-seconds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3,
                        help="rounds of wrk / sustained / batch, interleaved; the median is kept")
    parser.add_argument("--profile", action="store_true", help="cProfile a sustained run")
    args = parser.parse_args()

    nginx, wrk = require_tools()
    meta: dict[str, Any] = {}
    check_quiet(meta)
    images = [os.urandom(BODY_BYTES) for _ in range(16)]
    tmp = Path(tempfile.mkdtemp(prefix="mlbench-bench-nginx-"))
    tries: dict[str, list[dict[str, Any]]] = {"wrk": [], "mlbench sustained": [],
                                              "mlbench batch": []}
    profile: dict[str, Any] | None = None
    try:
        with nginx_server(nginx, tmp) as url:
            verify_server(url)
            say(f"nginx answering on {url}")
            ctx = ServiceContext("bench-fixed-json", ServiceSettings(), "digits", 0, 0, {},
                                 tmp / "state")
            svc = FixedJsonService(ctx, url)
            try:
                run_ours(svc, images, 500, "sustained")  # warm-up: imports, connection pool
                for r in range(args.repeat):  # interleaved: a burst of other load hits all
                    say(f"round {r + 1}/{args.repeat}: wrk {args.wrk_seconds} s, then mlbench "
                        f"sustained and batch, {args.calls} calls each, {CONNECTIONS} in flight")
                    tries["wrk"].append(run_wrk(wrk, url, tmp, args.wrk_seconds))
                    for mode in ("sustained", "batch"):
                        tries[f"mlbench {mode}"].append(run_ours(svc, images, args.calls, mode))
                if args.profile:
                    say("profiling a sustained run ...")
                    prof = cProfile.Profile()
                    run_ours(svc, images, min(args.calls, 5000), "sustained", prof)
                    profile = profile_by_package(prof)
            finally:
                svc.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    runs = {k: _median_run(v) for k, v in tries.items()}
    ours, theirs = runs["mlbench sustained"], runs["wrk"]
    gap = ours["latency_p50_ms"] - theirs["latency_p50_ms"]
    rows = [(k, v["calls"], v["throughput_rps"], v["latency_p50_ms"], v["latency_p95_ms"],
             v["latency_p99_ms"], v.get("client_cpu_us_per_call", "-"), v["errors"],
             " ".join(f"{x:.0f}" for x in v["tries_rps"]))
            for k, v in runs.items()]
    print_table(f"load tester vs wrk against nginx (fixed JSON), {CONNECTIONS} connections, "
                f"{BODY_BYTES} B POST bodies, median of {args.repeat} interleaved rounds",
                ["client", "calls", "req/s", "p50 ms", "p95 ms", "p99 ms", "client CPU us/call",
                 "errors", "req/s per round"], rows)
    ok_rps = ours["throughput_rps"] >= TARGET_RPS
    ok_gap = gap <= TARGET_P50_GAP_MS
    verdict = "PASS" if ok_rps and ok_gap else "MISS"
    print(f"\ntarget: >= {TARGET_RPS:.0f} req/s sustained: {ours['throughput_rps']:.0f} "
          f"({'ok' if ok_rps else 'miss'}); p50 - wrk p50 <= {TARGET_P50_GAP_MS} ms: "
          f"{gap:+.2f} ms ({'ok' if ok_gap else 'miss'}) -> {verdict}")
    if profile is not None:
        print("\nprofile of a sustained run (own wall time by package, %):")
        for k, v in profile["by_package_percent"].items():
            print(f"  {v:5.1f}  {k}")
        print("costliest functions (own seconds):")
        for f in profile["top_functions"]:
            print(f"  {f['tottime']:7.3f}  {f['function']}")
    path = write_result("load_tester", {
        **meta, "runs": runs, "p50_gap_ms": gap, "verdict": verdict,
        "targets": {"rps": TARGET_RPS, "p50_gap_ms": TARGET_P50_GAP_MS},
        **({"profile": profile} if profile is not None else {}),
    }, params={"calls": args.calls, "connections": CONNECTIONS, "body_bytes": BODY_BYTES,
               "wrk_seconds": args.wrk_seconds, "repeat": args.repeat, "nginx_workers": 1,
               "wrk_threads": 1})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
