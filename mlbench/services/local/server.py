"""The local model's HTTP server: POST image bytes, get `[{"label", "score"}, ...]`.

It speaks the Hugging Face endpoint contract, so the local baseline's latency and throughput are
measured through the same HTTP client path as a cloud endpoint. It runs as its own process
(started by `LocalService.connect`, or by hand with `mlbench local serve <ds> <n>`), binds
127.0.0.1 only, prints `LISTENING <url>` once ready, and dies with its parent.

Serving at the model's speed. A call is decode + resize, the network, the head: all of it runs
in one of `sessions` worker threads (one per core by default), each with its own one-thread
onnxruntime session, so calls in flight use every core side by side, as the fastest raw
configuration does (one-thread sessions, one per core, beat one session on all cores by 15%
and batches of 2-8 on 2 cores: `benchmarks/bench_local.py`). Nothing is serialised but the
event loop's HTTP parsing. A call that finds no other call in the server runs instead on a
session over every core, so one call at a time is answered faster than before. Its threads
spin briefly between runs, as onnxruntime's do by default: with spinning off, every operator
woke them afresh and a single call took twice as long (bench_local, one run: p50 13.1 ms with
spinning, 15.7 ms with the old one-session server; 30.3 ms without spinning in an earlier run
against 18.3 ms for the old server). Under load it is rarely used.
All sessions compute the same features bit for bit; the head is `NumpyHead`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import signal
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlbench.services.local.features import Extractor
    from mlbench.services.local.model import LocalModel

READY_PREFIX = "LISTENING "


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Lanes:
    """Runs predictions on `sessions` worker threads, each with its own one-thread extractor,
    and a call alone in the server on the extractor over every core (see the module doc)."""

    def __init__(self, model: LocalModel, sessions: int):
        if sessions < 1:
            raise ValueError(f"sessions must be at least 1, not {sessions}")
        self.model, self.sessions = model, sessions
        self.pool = ThreadPoolExecutor(max_workers=sessions, thread_name_prefix="predict")
        self._narrow: queue.SimpleQueue[Extractor] = queue.SimpleQueue()
        for _ in range(sessions):
            self._narrow.put(model.new_extractor(threads=1))
        cores = usable_cores()
        self._wide = model.new_extractor(threads=cores, spin=True) if cores > 1 else None
        self._wide_lock = threading.Lock()
        self._mine = threading.local()
        #: Calls received and not yet answered; written by the event loop only.
        self.pending = 0

    def warm_up(self) -> None:
        """Load every session before the server says it is ready: no cold first calls."""
        extractors = [self._narrow.get() for _ in range(self.sessions)]
        for extractor in [*extractors, *([self._wide] if self._wide else [])]:
            self.model.warm_up(extractor)
        for extractor in extractors:
            self._narrow.put(extractor)

    def _predict(self, data: bytes) -> dict[str, float]:
        """In a worker thread: the wide session when this call is alone, else the thread's."""
        if self._wide is not None and self.pending <= 1 \
                and self._wide_lock.acquire(blocking=False):
            try:
                return self.model.predict_scores(data, self._wide)
            finally:
                self._wide_lock.release()
        mine = getattr(self._mine, "extractor", None)
        if mine is None:  # a worker thread's first call: it takes a session of its own
            mine = self._mine.extractor = self._narrow.get()
        return self.model.predict_scores(data, mine)

    async def predict(self, data: bytes) -> dict[str, float]:
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self.pool, self._predict, data)
        finally:
            self.pending -= 1


def build_app(model_dir: Path, sessions: int | None = None):
    from aiohttp import web

    from mlbench.services.local.model import LocalModel

    model = LocalModel.load(model_dir)
    lanes = Lanes(model, sessions or usable_cores())
    lanes.warm_up()

    async def classify(request: web.Request) -> web.Response:
        data = await request.read()
        if not data:
            return web.json_response({"error": "empty body: POST the image bytes"}, status=400)
        try:
            scores = await lanes.predict(data)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        ranked = sorted(scores.items(), key=lambda kv: -kv[1])
        return web.json_response([{"label": k, "score": v} for k, v in ranked])

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "classes": len(model.classes)})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/", classify)
    app.router.add_get("/health", health)
    app.on_cleanup.append(lambda _app: asyncio.to_thread(lanes.pool.shutdown))
    return app


async def serve(model_dir: Path, host: str, port: int, sessions: int | None = None) -> None:
    from aiohttp import web

    app = build_app(model_dir, sessions)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    site = web.SockSite(runner, sock)
    await site.start()
    bound = sock.getsockname()
    print(f"{READY_PREFIX}http://{bound[0]}:{bound[1]}/", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--sessions", type=int, default=None,
                        help="one-thread inference sessions side by side (default: one per core)")
    parser.add_argument("--die-with-parent", action="store_true")
    args = parser.parse_args(argv)
    if args.die_with_parent:
        from mlbench.runlock import die_with_parent

        die_with_parent()  # the stage that started it may be SIGKILLed: never outlive it
    try:
        asyncio.run(serve(args.model_dir, args.host, args.port, args.sessions))
    except Exception as exc:  # report startup failures on one line for the parent to show
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), file=sys.stderr, flush=True)
        raise SystemExit(1) from exc


if __name__ == "__main__":
    main()
