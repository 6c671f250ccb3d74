"""One HTTP path for every HTTP-speaking service: build a request, send it with retries, parse.

A service describes a call as data (`HttpRequest`) and parses an answer (`parse_response`);
this module sends it either synchronously (`urllib3`, for `evaluate`: a thread per call in
flight) or asynchronously (`aiohttp`, for the load test: many calls in flight without a thread
per request, which would inflate every latency it reports). Both go through the one retry policy
(`mlbench.retry`) and share how an answer is judged, so a 429 with `Retry-After`, a 5xx, a
Hugging Face 503 "model is loading" or a dropped connection is handled the same way in both.
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import math
import os
import threading
import urllib.request
from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import SplitResult, urlencode, urlsplit

import certifi
import urllib3

from mlbench.core import Prediction
from mlbench.errors import ServiceCallError
from mlbench.redact import scrub
from mlbench.retry import RETRY_STATUSES, RetryLater, RetryPolicy, retry_after_seconds
from mlbench.services.base import Service


class CallAgain(Exception):  # noqa: N818 - an instruction to the caller, not a failure
    """Raised by `predict` when the service recovered from losing its server (restarted it):
    the harness makes the call again and times it afresh, so a restart's seconds never end up
    in a latency."""


@dataclass(frozen=True)
class HttpRequest:
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    params: Mapping[str, str] = field(default_factory=dict)


def server_delay(status: int, headers: Mapping[str, str], body: bytes) -> float | None:
    """The wait a server asked for: `Retry-After`, or a Hugging Face 503's `estimated_time`."""
    after = retry_after_seconds(headers)
    if after is None and status == 503:
        try:
            value = json.loads(body).get("estimated_time")
        except (ValueError, AttributeError):
            return None
        after = float(value) if isinstance(value, int | float) else None
    return after


def judge(status: int, headers: Mapping[str, str], body: bytes, *, can_renew: bool) -> None:
    """Raise for an answer that is not a success: `RetryLater` when another attempt may help
    (401 once credentials were renewed, 429, 5xx), else `ServiceCallError`."""
    if 200 <= status < 300:
        return
    why = f"HTTP {status}: {snippet(body)}"
    if status == 401 and can_renew:
        raise RetryLater(why, status=status, after=0.0)
    if status in RETRY_STATUSES:
        raise RetryLater(why, status=status, after=server_delay(status, headers, body))
    raise ServiceCallError(why, status)


class HttpService(Service):
    """A service whose predictions are plain HTTP calls (local, Nyckel, Hugging Face, Vertex)."""

    retry: RetryPolicy = RetryPolicy()

    @abstractmethod
    def build_request(self, image: bytes) -> HttpRequest:
        """The request for one prediction (called again for each attempt: tokens may renew)."""

    @abstractmethod
    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> Prediction:
        """Turn a 2xx answer into a Prediction; raise ServiceCallError on a malformed body."""

    def on_unauthorized(self) -> bool:
        """Called on a 401: renew credentials and return True to retry (once), else False."""
        return False

    def on_unreachable(self) -> None:
        """Called when a call could not reach the server (refused, reset, timed out), before it
        is retried: a service that can tell the server is gone for good (the local model
        server's process exited) raises here instead of waiting out every retry."""

    def _answer(self, status: int, headers: Mapping[str, str], body: bytes, attempt: int,
                renewed: list[bool]) -> Prediction:
        can_renew = status == 401 and not renewed[0] and self.on_unauthorized()
        renewed[0] = renewed[0] or can_renew
        try:
            judge(status, headers, body, can_renew=can_renew)
        except ServiceCallError as exc:
            exc.attempts = attempt
            raise
        return self.parse_response(status, headers, body).with_attempts(attempt)

    # -- synchronous path (evaluate) -------------------------------------------------------------
    _sync: SyncClient | None = None

    def predict(self, image: bytes) -> Prediction:
        if self._sync is None:
            self._sync = SyncClient(max(10, self.ctx.in_flight))
        client, renewed = self._sync, [False]

        def attempt(n: int) -> Prediction:
            req = self.build_request(image)
            try:
                status, headers, body = client.send(req, self.retry.timeout)
            except urllib3.exceptions.HTTPError as exc:
                self.on_unreachable()
                raise RetryLater(f"{type(exc).__name__}: {exc}") from None
            return self._answer(status, headers, body, n, renewed)

        return self.retry.call(attempt, self.name)

    # -- asynchronous path (load test) -----------------------------------------------------------
    async def apredict(self, session, image: bytes) -> Prediction:  # session: aiohttp.ClientSession
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=self.retry.timeout)
        renewed = [False]

        async def attempt(n: int) -> Prediction:
            req = self.build_request(image)
            try:
                async with session.request(req.method, req.url, headers=dict(req.headers),
                                           data=req.body, params=dict(req.params) or None,
                                           timeout=timeout) as resp:
                    status, headers, body = resp.status, resp.headers, await resp.read()
            except (TimeoutError, aiohttp.ClientError) as exc:
                self.on_unreachable()
                raise RetryLater(f"{type(exc).__name__}: {exc}") from None
            return self._answer(status, headers, body, n, renewed)

        return await self.retry.acall(attempt, self.name)

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None


class SyncClient:
    """Keep-alive connection pools for the synchronous path, thread-safe, on plain urllib3.

    Why not `requests`: a single-stream latency is the vendor's time plus what the client adds,
    and `requests` re-reads the environment (proxies, `no_proxy`, netrc, CA bundle) on every
    call, work that after a call's idle wait runs on a cold CPU: against a server answering in
    50 ms, interleaved call by call, p50 was 66.4 ms through `requests`, 57.3 ms through
    urllib3 and 52.6 ms through a raw socket (`benchmarks/bench_evaluate_concurrency.py`, one
    run on 2 cores). What `requests` read from the environment is read here once per host
    instead: `http(s)_proxy` / `no_proxy` and a CA bundle in `REQUESTS_CA_BUNDLE` or
    `SSL_CERT_FILE` (else certifi's, as `requests` uses).
    """

    def __init__(self, pool_size: int):
        self._pool_size = pool_size
        self._ca_certs = (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE")
                          or certifi.where())
        self._direct = urllib3.PoolManager(maxsize=pool_size, ca_certs=self._ca_certs)
        self._managers: dict[tuple[str, str], urllib3.PoolManager] = {}
        self._lock = threading.Lock()  # calls come from the scoring threads

    def _manager(self, url: str) -> urllib3.PoolManager:
        """The pool manager for the URL's scheme and host: a proxy's when the environment names
        one that applies to the host, else the direct one (looked up once per host)."""
        parts = urlsplit(url)
        key = (parts.scheme, parts.netloc)
        with self._lock:
            manager = self._managers.get(key)
            return manager if manager is not None else self._add_manager(key, parts)

    def _add_manager(self, key: tuple[str, str], parts: SplitResult) -> urllib3.PoolManager:
        proxy = urllib.request.getproxies().get(parts.scheme)
        if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
            manager = urllib3.ProxyManager(proxy, maxsize=self._pool_size,
                                           ca_certs=self._ca_certs)
        else:
            manager = self._direct
        self._managers[key] = manager
        return manager

    def send(self, req: HttpRequest, timeout: float) -> tuple[int, Mapping[str, str], bytes]:
        """One attempt: status, headers (case-insensitive) and the whole body. No redirect is
        followed and nothing is retried here (the retry policy decides); urllib3's
        `HTTPError` when the server could not be reached or hung up."""
        url = req.url
        if req.params:
            url += ("&" if urlsplit(url).query else "?") + urlencode(dict(req.params))
        answer = self._manager(url).request(
            req.method, url, body=req.body, headers={"User-Agent": user_agent(), **req.headers},
            timeout=urllib3.Timeout(connect=timeout, read=timeout), retries=False,
            redirect=False)
        return answer.status, answer.headers, answer.data

    def close(self) -> None:
        with self._lock:
            for manager in {id(m): m for m in (self._direct, *self._managers.values())}.values():
                manager.clear()
            self._managers.clear()


@functools.cache
def user_agent() -> str:
    """`mlbench/<version>`, looked up once, by the first call (not at import: every stage
    process imports this module, few of them predict)."""
    try:
        return f"mlbench/{importlib.metadata.version('mlbench')}"
    except importlib.metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "mlbench"


def parse_label_scores(body: bytes, status: int = 200, who: str = "endpoint",
                       rename: Callable[[str], str] = str) -> Prediction:
    """The Hugging Face image-classification answer `[{"label", "score"}, ...]` (or a batch of
    one) as a Prediction; `rename` maps endpoint labels to class names (scores of labels that
    map to the same class keep the highest). Served by HF endpoints and the local model alike.

    Anything else a server answers with a 2xx (another JSON shape, a label that is not text, a
    score that is not a finite number, JSON nested too deep to parse) is a failed call, never a
    prediction nor a crash.
    """
    try:
        pairs = _label_scores(json.loads(body))
    except (ValueError, TypeError, KeyError, OverflowError, RecursionError):
        raise ServiceCallError(f"{who}: expected [{{label, score}}], got {snippet(body)}",
                               status) from None
    return best_of([(rename(label), score) for label, score in pairs])


def _label_scores(answer: object) -> list[tuple[str, float]]:
    """(label, score) pairs of a decoded answer; ValueError when it has another shape."""
    if isinstance(answer, list) and len(answer) == 1 and isinstance(answer[0], list):
        answer = answer[0]  # a batch of one
    if not isinstance(answer, list):
        raise ValueError("not a list")
    pairs = []
    for item in answer:
        label, score = item["label"], item["score"]
        if not isinstance(label, str) or isinstance(score, bool) \
                or not isinstance(score, int | float) or not math.isfinite(float(score)):
            raise ValueError("label must be text and score a finite number")
        pairs.append((label, float(score)))
    return pairs


def best_of(pairs: list[tuple[str, float]], attempts: int = 1) -> Prediction:
    """The most confident of (class, confidence) pairs; confidences clamped to [0, 1], a class
    named twice keeps its highest; no pair at all is an answer without a label."""
    scores: dict[str, float] = {}
    for name, score in pairs:
        scores[name] = max(scores.get(name, 0.0), min(1.0, max(0.0, float(score))))
    if not scores:
        return Prediction(None, 0.0, {}, attempts)
    best = max(scores, key=lambda n: (scores[n], n))
    return Prediction(best, scores[best], scores, attempts)


def image_mime(data: bytes) -> str:
    """An encoded image's MIME type from its magic bytes (what vendors pick a decoder by)."""
    for magic, mime in ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"),
                        (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"), (b"BM", "image/bmp")):
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    raise ValueError("not a JPEG, PNG, GIF, WebP or BMP image")


#: How much of an error body is read to scrub it before it is cut to a snippet.
SCRUB_WINDOW = 64 * 1024


def snippet(body: bytes, limit: int = 200) -> str:
    """The start of an answer's body for an error message, credentials scrubbed first (so a
    token cut at the limit cannot leave a prefix behind)."""
    text = scrub(body[:SCRUB_WINDOW].decode("utf-8", "replace")).replace("\n", " ")
    return text[:limit] + ("..." if len(text) > limit or len(body) > SCRUB_WINDOW else "")
