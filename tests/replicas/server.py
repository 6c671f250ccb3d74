"""A download fake on 127.0.0.1: static files with Range, dropped connections, HF endpoint.

`MirrorServer(files)` serves `files[name]` at `/<name>` the way a plain web server or CDN does
(`Accept-Ranges`, `ETag`, `Last-Modified`, `206` with `Content-Range`, `If-Range`). Tests can
make it drop the connection after N body bytes (`drop_after`), answer a status a few times
(`fail`), ignore Range (`ranges = False`) or change a file (`files[name] = ...`). Every request
is logged with its headers. It also answers the Hugging Face Hub's download route
`/datasets/<repo>/resolve/<revision>/<path>` (HEAD and GET, with `X-Repo-Commit`) for files
registered under that path, which is all `huggingface_hub.hf_hub_download` needs.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import socket
import threading
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Logged:
    method: str
    path: str
    headers: dict[str, str]

    @property
    def range_start(self) -> int | None:
        m = re.fullmatch(r"bytes=(\d+)-\d*", self.headers.get("Range", ""))
        return int(m.group(1)) if m else None


class MirrorServer:
    def __init__(self, files: dict[str, bytes] | None = None, port: int = 0):
        self.port = port
        self.files: dict[str, bytes] = dict(files or {})
        self.log: list[Logged] = []
        self.drop_after: dict[str, int] = {}   # name -> drop after this many body bytes (once)
        self.fail: dict[str, list[int]] = {}   # name -> statuses to answer first, in order
        self.ranges = True
        self.sent: dict[str, int] = {}         # name -> body bytes sent in all
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._httpd is not None
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def requests_for(self, name: str, method: str = "GET") -> list[Logged]:
        return [r for r in self.log if r.path.endswith("/" + name) and r.method == method]

    def etag(self, name: str) -> str:
        return '"' + hashlib.sha256(self.files[name]).hexdigest()[:32] + '"'

    def start(self) -> MirrorServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(head=True)

            def do_GET(self) -> None:
                self._serve(head=False)

            def _serve(self, head: bool) -> None:
                path = unquote(urlsplit(self.path).path)
                with server._lock:
                    server.log.append(Logged(self.command, path, dict(self.headers.items())))
                name = path.lstrip("/")
                hf = re.fullmatch(r"datasets/(.+?/.+?)/resolve/([^/]+)/(.+)", name)
                if hf:
                    name = hf.group(3)
                with server._lock:
                    statuses = server.fail.get(name)
                    status = statuses.pop(0) if statuses else None
                if status is not None:
                    self._reply(status, b"injected", {"Retry-After": "0"}, head)
                    return
                data = server.files.get(name)
                if data is None:
                    self._reply(404, b"not found", {}, head)
                    return
                headers = {"Accept-Ranges": "bytes", "ETag": server.etag(name),
                           "Last-Modified": formatdate(0, usegmt=True),
                           "Content-Type": "application/octet-stream"}
                if hf:
                    headers["X-Repo-Commit"] = COMMIT
                start = 0
                rng = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
                if_range = self.headers.get("If-Range")
                if rng and server.ranges and (if_range is None or if_range == headers["ETag"]):
                    start = int(rng.group(1))
                    end = int(rng.group(2)) if rng.group(2) else len(data) - 1
                    if start >= len(data):
                        self._reply(416, b"", {"Content-Range": f"bytes */{len(data)}"}, head)
                        return
                    headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
                    self._reply(206, data[start:end + 1], headers, head, name)
                    return
                self._reply(200, data, headers, head, name)

            def _reply(self, status: int, body: bytes, headers: dict[str, str], head: bool,
                       name: str | None = None) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if head:
                    return
                with server._lock:
                    cut = server.drop_after.pop(name, None) if name else None
                if cut is not None and cut < len(body):
                    self.wfile.write(body[:cut])
                    self.wfile.flush()
                    server._count(name, cut)
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)
                if name:
                    server._count(name, len(body))

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        return self

    def _count(self, name: str, n: int) -> None:
        with self._lock:
            self.sent[name] = self.sent.get(name, 0) + n

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> MirrorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
