"""A threaded HTTP server on 127.0.0.1 with fault injection, shared by every vendor fake.

A fake is a `Router` of (method, path regex) -> handler(request) -> Response. The server adds
what every fake needs: a free port, a request log to assert on, and injectable faults (a status
with optional `Retry-After`/body for the next N calls or a fraction of calls, and delays), so
tests can drive 401/429/500/503/slow answers through the real client code.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    match: re.Match[str] | None = None

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError as exc:
            raise BadRequest(f"body is not JSON: {exc}") from None

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return cls(status, json.dumps(obj).encode(), {"Content-Type": "application/json",
                                                      **(headers or {})})


class BadRequest(Exception):
    """Raised by a handler when the client sent something the real API would reject."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass
class Fault:
    """Answer `status` instead of the real handler, `count` times or for a `fraction` of calls."""

    status: int
    count: int | None = None
    fraction: float | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    path_pattern: str = ".*"
    delay: float = 0.0


Handler = Callable[[Request], Response]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops connections when a load test opens 10

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a timeout test) is expected, not a server error."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeServer:
    """Serve a set of routes on 127.0.0.1:<free port> in a background thread."""

    def __init__(self, error_body: Callable[[int, str], Response] | None = None, seed: int = 0):
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self.faults: list[Fault] = []
        self.log: list[Request] = []
        self.delay = 0.0  # seconds from a request's arrival to its answer (at least)
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._error_body = error_body or (lambda status, msg: Response.json({"error": msg}, status))
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- configuration ---------------------------------------------------------------------------
    def route(self, method: str, pattern: str) -> Callable[[Handler], Handler]:
        def deco(fn: Handler) -> Handler:
            self.routes.append((method.upper(), re.compile(pattern + r"\Z"), fn))
            return fn

        return deco

    def inject(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self.faults.clear()

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeServer:
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else ~40 ms per answer (Nagle x delayed ACK)
            wbufsize = 1 << 16  # buffered: an answer leaves in one write, when flushed

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _handle(self) -> None:
                arrived = time.monotonic()
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                parts = urlsplit(self.path)
                query = parse_qs(parts.query, keep_blank_values=True)
                req = Request(self.command, parts.path, query, dict(self.headers.items()), body)
                resp = server.dispatch(req)
                self.send_response(resp.status)
                for k, v in resp.headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(resp.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(resp.body)
                # the whole answer in one write, `delay` after the request arrived: a server
                # answering in 50 ms takes 50 ms, not 50 ms plus this fake's own Python work
                wait = arrived + server.delay - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                self.wfile.flush()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _handle

        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- dispatch --------------------------------------------------------------------------------
    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if not re.search(fault.path_pattern, path):
                    continue
                if fault.count is not None:
                    if fault.count <= 0:
                        continue
                    fault.count -= 1
                    return fault
                if fault.fraction is not None and self._rng.random() < fault.fraction:
                    return fault
        return None

    def dispatch(self, req: Request) -> Response:
        with self._lock:
            self.log.append(req)
        fault = self._take_fault(req.path)
        if fault is not None:
            if fault.delay:
                time.sleep(fault.delay)
            if fault.body is None:
                resp = self._error_body(fault.status, f"injected {fault.status}")
            elif isinstance(fault.body, bytes):
                resp = Response(fault.status, fault.body)
            else:
                resp = Response.json(fault.body, fault.status)
            resp.headers.update(fault.headers)
            return resp
        for method, pattern, handler in self.routes:
            match = pattern.match(req.path)
            if match and method == req.method:
                req.match = match
                try:
                    return handler(req)
                except BadRequest as exc:
                    return self._error_body(exc.status, str(exc))
        return self._error_body(404, f"no route for {req.method} {req.path}")


class VendorFake:
    """A vendor's fake state behind its FakeServer, started and stopped together.

    Subclasses set `self.server` (routes installed) in `__init__`; this gives them `url`,
    `log`, `start`/`stop` and the `with` form.
    """

    server: FakeServer

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def log(self) -> list[Request]:
        return self.server.log

    def start(self):  # noqa: ANN201 - returns the subclass
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self):  # noqa: ANN204 - returns the subclass
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
