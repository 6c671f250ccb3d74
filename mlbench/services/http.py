"""One HTTP path for every HTTP-speaking service: build a request, send it with retries, parse.

A service describes a call as data (`HttpRequest`) and parses an answer (`parse_response`);
this module sends it either synchronously (`requests`, for `evaluate`: one call at a time) or
asynchronously (`aiohttp`, for the load test: many calls in flight without a thread per request,
which would inflate every latency it reports). Both share the retry decision, so a 429 with
`Retry-After`, a 5xx, a Hugging Face 503 "model is loading" or a dropped connection is handled
the same way in both.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import requests

from mlbench.services.base import Prediction, Service

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class ServiceCallError(Exception):
    """A call that failed for good (after retries, or a non-retryable status)."""

    def __init__(self, message: str, status: int | None = None, attempts: int = 1):
        super().__init__(message)
        self.status = status
        self.attempts = attempts


@dataclass(frozen=True)
class HttpRequest:
    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes | None = None
    params: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, capped; `Retry-After` wins when the server sends it."""

    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0
    #: A server's own `Retry-After` / `estimated_time` is honoured up to this many seconds.
    max_server_delay: float = 300.0
    timeout: float = 30.0

    def backoff(self, attempt: int) -> float:
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Parse `Retry-After` as seconds or an HTTP date (RFC 9110); None when absent or bad."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


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

    def retry_delay(
        self, status: int, headers: Mapping[str, str], body: bytes, attempt: int
    ) -> float | None:
        """Seconds to wait before retrying this answer, or None when it must not be retried."""
        if status not in RETRY_STATUSES:
            return None
        after = retry_after_seconds(headers)
        if after is None and status == 503:
            after = _estimated_time(body)  # Hugging Face: {"error": ..., "estimated_time": s}
        if after is not None:
            return min(after, self.retry.max_server_delay)
        return self.retry.backoff(attempt)

    # -- synchronous path (evaluate) -------------------------------------------------------------
    _session: requests.Session | None = None

    def predict(self, image: bytes) -> Prediction:
        if self._session is None:
            self._session = requests.Session()
        attempts = _Attempts(self)
        for attempt in range(1, self.retry.max_attempts + 1):
            req = self.build_request(image)
            try:
                resp = self._session.request(
                    req.method, req.url, headers=dict(req.headers), data=req.body,
                    params=dict(req.params), timeout=self.retry.timeout,
                )
            except requests.RequestException as exc:
                time.sleep(attempts.failed(exc, attempt))
                continue
            outcome = attempts.answered(resp.status_code, resp.headers, resp.content, attempt)
            if isinstance(outcome, Prediction):
                return outcome
            time.sleep(outcome)
        raise attempts.give_up()

    # -- asynchronous path (load test) -----------------------------------------------------------
    async def apredict(self, session, image: bytes) -> Prediction:  # session: aiohttp.ClientSession
        import aiohttp

        attempts = _Attempts(self)
        timeout = aiohttp.ClientTimeout(total=self.retry.timeout)
        for attempt in range(1, self.retry.max_attempts + 1):
            req = self.build_request(image)
            try:
                async with session.request(
                    req.method, req.url, headers=dict(req.headers), data=req.body,
                    params=dict(req.params) or None, timeout=timeout,
                ) as resp:
                    status, headers, body = resp.status, resp.headers, await resp.read()
            except (TimeoutError, aiohttp.ClientError) as exc:
                await asyncio.sleep(attempts.failed(exc, attempt))
                continue
            outcome = attempts.answered(status, headers, body, attempt)
            if isinstance(outcome, Prediction):
                return outcome
            await asyncio.sleep(outcome)
        raise attempts.give_up()

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


class _Attempts:
    """The retry decisions of one call, shared by the sync and the async sender."""

    def __init__(self, svc: HttpService):
        self.svc = svc
        self.reauthed = False
        self.last = "no attempt made"
        self.status: int | None = None

    def failed(self, exc: Exception, attempt: int) -> float:
        """A connection error or timeout: seconds to wait before the next attempt."""
        self.last, self.status = f"{type(exc).__name__}: {exc}", None
        return self.svc.retry.backoff(attempt)

    def answered(self, status: int, headers: Mapping[str, str], body: bytes,
                 attempt: int) -> Prediction | float:
        """The prediction, or seconds to wait before retrying; raises when it must stop."""
        self.status = status
        if 200 <= status < 300:
            return _with_attempts(self.svc.parse_response(status, headers, body), attempt)
        self.last = f"HTTP {status}: {_snippet(body)}"
        if status == 401 and not self.reauthed and self.svc.on_unauthorized():
            self.reauthed = True
            return 0.0
        delay = self.svc.retry_delay(status, headers, body, attempt)
        if delay is None:
            raise ServiceCallError(self.last, status, attempt)
        return delay

    def give_up(self) -> ServiceCallError:
        n = self.svc.retry.max_attempts
        return ServiceCallError(f"gave up after {n} attempts: {self.last}", self.status, n)


def parse_label_scores(body: bytes, status: int = 200, who: str = "endpoint",
                       rename: Callable[[str], str] = str) -> Prediction:
    """The Hugging Face image-classification answer `[{"label", "score"}, ...]` (or a batch of
    one) as a Prediction; `rename` maps endpoint labels to class names (scores of labels that
    map to the same class keep the highest). Served by HF endpoints and the local model alike.
    """
    try:
        answer = json.loads(body)
        if isinstance(answer, list) and answer and isinstance(answer[0], list):
            answer = answer[0]  # a batch of one
        pairs = [(str(item["label"]), float(item["score"])) for item in answer]
    except (ValueError, TypeError, KeyError) as exc:
        raise ServiceCallError(f"{who}: expected [{{label, score}}], got {body[:200]!r}",
                               status) from exc
    if not pairs:
        return Prediction(None, 0.0, {})
    scores: dict[str, float] = {}
    for label, score in pairs:
        name = rename(label)
        scores[name] = max(scores.get(name, 0.0), min(1.0, max(0.0, score)))
    best = max(scores, key=scores.__getitem__)
    return Prediction(best, scores[best], scores)


def image_mime(data: bytes) -> str:
    """An encoded image's MIME type from its magic bytes (what vendors pick a decoder by)."""
    for magic, mime in ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"),
                        (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"), (b"BM", "image/bmp")):
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    raise ValueError("not a JPEG, PNG, GIF, WebP or BMP image")


def _with_attempts(pred: Prediction, attempts: int) -> Prediction:
    if attempts == pred.attempts:
        return pred
    return Prediction(pred.label, pred.confidence, pred.scores, attempts)


def _estimated_time(body: bytes) -> float | None:
    try:
        value = json.loads(body).get("estimated_time")
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) else None


def _snippet(body: bytes, limit: int = 200) -> str:
    text = body[:limit].decode("utf-8", "replace").replace("\n", " ")
    return text + ("..." if len(body) > limit else "")
