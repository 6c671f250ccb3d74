"""One HTTP path for every HTTP-speaking service: build a request, send it with retries, parse.

A service describes a call as data (`HttpRequest`) and parses an answer (`parse_response`);
this module sends it either synchronously (`requests`, for `evaluate`: one call at a time) or
asynchronously (`aiohttp`, for the load test: many calls in flight without a thread per request,
which would inflate every latency it reports). Both go through the one retry policy
(`mlbench.retry`) and share how an answer is judged, so a 429 with `Retry-After`, a 5xx, a
Hugging Face 503 "model is loading" or a dropped connection is handled the same way in both.
"""

from __future__ import annotations

import json
import math
from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import requests

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
    _session: requests.Session | None = None

    def predict(self, image: bytes) -> Prediction:
        if self._session is None:
            self._session = requests.Session()
        session, renewed = self._session, [False]

        def attempt(n: int) -> Prediction:
            req = self.build_request(image)
            try:
                resp = session.request(req.method, req.url, headers=dict(req.headers),
                                       data=req.body, params=dict(req.params),
                                       timeout=self.retry.timeout)
            except requests.RequestException as exc:
                self.on_unreachable()
                raise RetryLater(f"{type(exc).__name__}: {exc}") from None
            return self._answer(resp.status_code, resp.headers, resp.content, n, renewed)

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
        if self._session is not None:
            self._session.close()
            self._session = None


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
