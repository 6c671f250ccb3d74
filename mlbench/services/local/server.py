"""The local model's HTTP server: POST image bytes, get `[{"label", "score"}, ...]`.

It speaks the Hugging Face endpoint contract, so the local baseline's latency and throughput are
measured through the same HTTP client path as a cloud endpoint. It runs as its own process
(started by `LocalService.connect`, or by hand with `mlbench serve local <ds> <n>`), binds
127.0.0.1 only, prints `LISTENING <url>` once ready, and dies with its parent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

READY_PREFIX = "LISTENING "


def build_app(model_dir: Path):
    from aiohttp import web

    from mlbench.services.local.model import LocalModel

    model = LocalModel.load(model_dir)
    model.warm_up()  # load the ONNX session before saying ready: no cold first request
    pool = ThreadPoolExecutor(max_workers=1)  # one inference at a time; ORT uses every core

    async def classify(request: web.Request) -> web.Response:
        data = await request.read()
        if not data:
            return web.json_response({"error": "empty body: POST the image bytes"}, status=400)
        loop = asyncio.get_running_loop()
        try:
            scores = await loop.run_in_executor(pool, model.predict_scores, data)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        ranked = sorted(scores.items(), key=lambda kv: -kv[1])
        return web.json_response([{"label": k, "score": v} for k, v in ranked])

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "classes": len(model.classes)})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/", classify)
    app.router.add_get("/health", health)
    app.on_cleanup.append(lambda _app: asyncio.to_thread(pool.shutdown))
    return app


async def serve(model_dir: Path, host: str, port: int) -> None:
    from aiohttp import web

    app = build_app(model_dir)
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
    parser.add_argument("--die-with-parent", action="store_true")
    args = parser.parse_args(argv)
    if args.die_with_parent:
        from mlbench.runlock import die_with_parent

        die_with_parent()  # the stage that started it may be SIGKILLed: never outlive it
    try:
        asyncio.run(serve(args.model_dir, args.host, args.port))
    except Exception as exc:  # report startup failures on one line for the parent to show
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), file=sys.stderr, flush=True)
        raise SystemExit(1) from exc


if __name__ == "__main__":
    main()
