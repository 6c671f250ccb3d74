"""The Nyckel calls the benchmark makes: the v1 REST API, and the official client for one read.

Every call is one attempt at a time through the shared `RetryPolicy`, spaced by the shared
`RateLimiter` (Nyckel allows 25 requests/s), and judged the same way: 429/5xx and dropped
connections are retried, a 401 renews the token once, 402/403 and a refused fresh token are
the user's to fix (`UserError`), anything else fails the call (`ServiceCallError`).

Raw v1 API (requests) where the benchmark needs control, and why not the official client there:
- functions, labels, samples: the client's list calls split the URL on ".com" (or ":5000") to
  follow pagination, so they break against `NYCKEL_API_URL` fakes and proxies; its sample
  upload runs 10 threads with no request-rate cap and returns bare ids, so a resumable,
  per-sample record (`externalId` -> sample id, 409 `existingSampleId`) needs the raw calls.
- invoke (`service.py`): the client cannot send `capture=false`, so every benchmark image would
  become a sample of the function.
The official client answers the training status (`is_trained`): it reads two undocumented v0.9
endpoints, and delegating keeps the vendor's own definition of "trained" in one place. Its
HTTP goes through `_attempt` too (see `_ClientSession`), so its own handling of a non-200 (a
`RuntimeError`, `ValueError` or `AssertionError`, depending on the call) is never reached.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import nyckel
import requests

from mlbench.errors import ServiceCallError, UserError
from mlbench.retry import RetryLater, RetryPolicy
from mlbench.services.http import image_mime, judge, snippet
from mlbench.services.nyckel.auth import ENV_CLIENT_ID, ENV_CLIENT_SECRET, TokenProvider
from mlbench.services.nyckel.settings import NYCKEL_MAX_RPS
from mlbench.services.ratelimit import RateLimiter

IMAGE_CLASSIFICATION = ("Image", "Classification")


def data_uri(data: bytes) -> str:
    """`data:image/<type>;base64,<payload>`: how Nyckel's JSON endpoints take an image."""
    return f"data:{image_mime(data)};base64,{base64.b64encode(data).decode('ascii')}"


def kind(fn: dict[str, Any]) -> tuple[str | None, str | None]:
    """A function's (input, output), e.g. ("Image", "Classification")."""
    return fn.get("input"), fn.get("output")


#: One limiter per (API, account, rate) in this process: Nyckel's limit is the account's, and
#: `mlbench submit` / `mlbench measure` run several functions of one account at once, each
#: through its own `NyckelApi`.
_ACCOUNT_LIMITERS: dict[tuple[str, str, float], RateLimiter] = {}
_ACCOUNT_LOCK = threading.Lock()


def account_limiter(base_url: str, client_id: str, rps: float) -> RateLimiter:
    """The rate limiter every call of this account shares, whichever run makes it."""
    key = (base_url, client_id, rps)
    with _ACCOUNT_LOCK:
        if key not in _ACCOUNT_LIMITERS:
            _ACCOUNT_LIMITERS[key] = RateLimiter(rps)
        return _ACCOUNT_LIMITERS[key]


class NyckelApi:
    """One account's view of the Nyckel API (thread-safe: one session per thread)."""

    def __init__(self, tokens: TokenProvider, base_url: str, rps: float = NYCKEL_MAX_RPS,
                 retry: RetryPolicy | None = None):
        self.tokens = tokens
        self.base_url = base_url.rstrip("/")
        self.limiter = account_limiter(self.base_url, tokens.client_id,
                                       min(rps, NYCKEL_MAX_RPS))
        self.retry = retry or RetryPolicy()
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self._official: dict[str, tuple[Any, _Call]] = {}

    # -- transport -------------------------------------------------------------------------------
    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            with self._lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()
        self._local = threading.local()

    def _attempt(self, method: str, url: str, call: _Call, ok: tuple[int, ...] = (200,),
                 **kwargs: Any) -> requests.Response:
        """Send one request with the current token; return an answer in `ok` (or another 2xx),
        else raise RetryLater (worth another attempt), UserError or ServiceCallError."""
        url = url if url.startswith(("http://", "https://")) else self.base_url + url
        token = self.tokens.token()
        headers = {**(kwargs.pop("headers", None) or {}), "Authorization": f"Bearer {token}"}
        self.limiter.acquire()
        try:
            resp = self._session().request(method, url, headers=headers,
                                           timeout=self.retry.timeout, **kwargs)
        except requests.RequestException as exc:
            raise RetryLater(f"{type(exc).__name__}: {exc}") from None
        status = resp.status_code
        if status in ok:
            return resp
        if status == 401 and call.renewed:
            raise UserError(f"Nyckel refused a fresh token for {method} {url}: check "
                            f"{ENV_CLIENT_ID} and {ENV_CLIENT_SECRET}")
        if status == 402:
            raise UserError(f"Nyckel billing/quota problem (HTTP 402): {snippet(resp.content)}")
        if status == 403:
            raise UserError(f"Nyckel denied {method} {url} (HTTP 403): the credentials in "
                            f"{ENV_CLIENT_ID} have no access to it")
        if status == 401:
            self.tokens.invalidate(token)
            call.renewed = True
        try:
            judge(status, resp.headers, resp.content, can_renew=status == 401)
        except ServiceCallError as exc:
            raise ServiceCallError(f"nyckel: {method} {url}: {exc}", status,
                                   call.attempt) from None
        return resp

    def request(self, method: str, path: str, ok: tuple[int, ...] = (200,),
                **kwargs: Any) -> requests.Response:
        """One API call on the retry policy (`kwargs` as for `requests`: json=, params=)."""
        call = _Call()
        return self.retry.call(lambda n: self._attempt(method, path, call.at(n), ok, **kwargs),
                               f"nyckel: {method} {path}")

    def list_all(self, path: str) -> list[dict[str, Any]]:
        """GET a list endpoint, following `Link: <...>; rel="next"` pages."""
        items: list[dict[str, Any]] = []
        url: str | None = path
        while url:
            resp = self.request("GET", url)
            page = resp.json()
            if not isinstance(page, list):
                raise ServiceCallError(f"nyckel: GET {path}: expected a JSON list, got "
                                       f"{type(page).__name__}")
            items.extend(page)
            nxt = resp.links.get("next", {}).get("url")
            url = urljoin(self.base_url + "/", nxt) if nxt else None
        return items

    # -- functions -------------------------------------------------------------------------------
    def create_function(self, name: str) -> str:
        """A new image-classification function called `name`; its id."""
        body = {"name": name, "input": "Image", "output": "Classification"}
        return str(self.request("POST", "/v1/functions", json=body).json()["id"])

    def find_function(self, name: str) -> str | None:
        """The id of an image-classification function called `name` (oldest first), if any."""
        return next((str(fn["id"]) for fn in self.list_all("/v1/functions")
                     if fn.get("name") == name and kind(fn) == IMAGE_CLASSIFICATION), None)

    def get_function(self, function_id: str) -> dict[str, Any] | None:
        resp = self.request("GET", f"/v1/functions/{function_id}", ok=(200, 404))
        return None if resp.status_code == 404 else resp.json()

    # -- labels and samples ----------------------------------------------------------------------
    def ensure_labels(self, function_id: str, names: Iterable[str]) -> None:
        """Create the labels the function lacks (a rerun never duplicates one)."""
        have = {lb["name"] for lb in self.list_all(f"/v1/functions/{function_id}/labels")}
        for name in names:
            if name not in have:
                self.request("POST", f"/v1/functions/{function_id}/labels", json={"name": name})

    def post_sample(self, function_id: str, image: bytes, label: str,
                    external_id: str) -> tuple[str, bool]:
        """Create one annotated sample; returns (sample id, created). A 409 duplicate answers
        the existing sample's id, which makes a rerun idempotent."""
        body = {"data": data_uri(image), "externalId": external_id,
                "annotation": {"labelName": label}}
        resp = self.request("POST", f"/v1/functions/{function_id}/samples", ok=(200, 409),
                            json=body)
        payload = resp.json()
        if resp.status_code == 200:
            return str(payload["id"]), True
        existing = payload.get("existingSampleId") if isinstance(payload, dict) else None
        if not existing:
            raise ServiceCallError(f"nyckel: 409 without existingSampleId for {external_id}", 409)
        return str(existing), False

    # -- training status (official client) --------------------------------------------------------
    def is_trained(self, function_id: str) -> bool:
        """Whether the official client says the function has a model trained on all samples."""
        if function_id not in self._official:  # its constructor asserts the kind: check first
            found = self.get_function(function_id)
            if found is None or kind(found) != IMAGE_CLASSIFICATION:
                raise ServiceCallError(f"nyckel: this account has no image-classification "
                                       f"function {function_id}", 404 if found is None else None)
            self._official[function_id] = (None, _Call())
        fn, call = self._official[function_id]

        def attempt(n: int) -> bool:
            nonlocal fn
            call.at(n)
            if fn is None:  # its constructor reads the function: through _attempt as well
                fn = nyckel.ImageClassificationFunction(function_id, _Credentials(self, call))
                self._official[function_id] = (fn, call)
            return bool(fn.has_trained_model())

        call.renewed = False
        return self.retry.call(attempt, f"nyckel: training status of {function_id}")


@dataclass
class _Call:
    """One logical call across its attempts: the attempt under way, and whether the token was
    already renewed for it (a second 401 means the credentials are refused)."""

    attempt: int = 1
    renewed: bool = False

    def at(self, attempt: int) -> _Call:
        self.attempt = attempt
        return self


class _ClientSession(requests.Session):
    """What the official client gets as its session: every request it makes is one
    `NyckelApi._attempt` (our token, timeout, rate limit and judgement of the answer)."""

    def __init__(self, api: NyckelApi, call: _Call):
        super().__init__()
        self._api, self._call = api, call

    def request(self, method: str | bytes, url: str | bytes,  # type: ignore[override]
                **kwargs: Any) -> requests.Response:
        kwargs.pop("allow_redirects", None)
        return self._api._attempt(str(method), str(url), self._call, **kwargs)


class _Credentials(nyckel.Credentials):
    """The official client's credentials: no secret, sessions from `_ClientSession`."""

    def __init__(self, api: NyckelApi, call: _Call):
        super().__init__(client_id=api.tokens.client_id, client_secret="",
                         server_url=api.base_url)
        self._api, self._call = api, call

    @property
    def token(self) -> str:  # type: ignore[override]
        return self._api.tokens.token()

    def get_session(self) -> requests.Session:
        return _ClientSession(self._api, self._call)

