"""The Nyckel v1 REST calls the benchmark makes, with auth, retries and a request-rate cap.

Raw API (requests) for everything the benchmark needs control over, and why not the official
`nyckel` client there:
- functions, labels, samples: the client's list calls split the URL on ".com" (or ":5000") to
  follow pagination, so they break against `NYCKEL_API_URL` fakes and proxies; its sample
  upload runs 10 threads with no request-rate cap (Nyckel allows 25/s) and returns bare ids, so a
  resumable, per-sample record (`externalId` -> sample id, 409 `existingSampleId`) needs the raw
  calls anyway.
- invoke (in `nyckel.py`): the client cannot send `capture=false`, so every benchmark image would
  become a sample of the function.
The official client is used for the training status (`is_trained`): it reads two undocumented
v0.9 endpoints, and delegating keeps the vendor's own definition of "trained" in one place.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urljoin

import requests

from mlbench.errors import UserError
from mlbench.services.http import (
    RETRY_STATUSES,
    RetryPolicy,
    ServiceCallError,
    image_mime,
    retry_after_seconds,
)
from mlbench.services.nyckel.auth import ENV_CLIENT_ID, ENV_CLIENT_SECRET, TokenProvider

#: Nyckel's documented limits: 25 requests/s and 25 requests in flight per account.
NYCKEL_MAX_RPS = 25.0
NYCKEL_MAX_IN_FLIGHT = 25


class RateLimiter:
    """Space calls at least `1/rate` seconds apart, across threads (no bursts above the rate)."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next = 0.0

    def acquire(self) -> None:
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            self._sleep(slot - now)


def data_uri(data: bytes) -> str:
    """`data:image/<type>;base64,<payload>`: how Nyckel's JSON endpoints take an image."""
    return f"data:{image_mime(data)};base64,{base64.b64encode(data).decode('ascii')}"


def _message(resp: requests.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200]
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return resp.text[:200]


class NyckelApi:
    """One account's view of the Nyckel v1 API (thread-safe: one session per thread)."""

    def __init__(
        self,
        tokens: TokenProvider,
        base_url: str,
        rps: float = NYCKEL_MAX_RPS,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.tokens = tokens
        self.base_url = base_url.rstrip("/")
        self.limiter = RateLimiter(min(rps, NYCKEL_MAX_RPS))
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self._official: dict[str, Any] = {}

    # -- transport -------------------------------------------------------------------------------
    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        with self._sessions_lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()
        self._local = threading.local()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        ok: Iterable[int] = (200,),
    ) -> requests.Response:
        """Send one API call; retry 429/5xx/connection errors, renew the token once on 401.

        Answers in `ok` are returned; 402/403 and a second 401 are user problems (UserError);
        any other status raises ServiceCallError with Nyckel's `message`.
        """
        url = path if path.startswith(("http://", "https://")) else self.base_url + path
        accepted = set(ok)
        reauthed = False
        last = "no attempt made"
        status: int | None = None
        for attempt in range(1, self.retry.max_attempts + 1):
            token = self.tokens.token()
            self.limiter.acquire()
            try:
                resp = self._session().request(
                    method, url, json=json, params=params, timeout=self.retry.timeout,
                    headers={"Authorization": f"Bearer {token}"},
                )
            except requests.RequestException as exc:
                last, status = type(exc).__name__, None
                self._sleep(self.retry.backoff(attempt))
                continue
            status = resp.status_code
            if status in accepted:
                return resp
            last = f"HTTP {status}: {_message(resp)}"
            if status == 401:
                if reauthed:
                    raise UserError(
                        f"Nyckel refused a fresh token for {method} {path}: check "
                        f"{ENV_CLIENT_ID} and {ENV_CLIENT_SECRET}"
                    )
                self.tokens.invalidate(token)
                reauthed = True
                continue
            if status == 402:
                raise UserError(f"Nyckel billing/quota problem (HTTP 402): {_message(resp)}")
            if status == 403:
                raise UserError(
                    f"Nyckel denied {method} {path} (HTTP 403): the credentials in "
                    f"{ENV_CLIENT_ID} have no access to it"
                )
            if status not in RETRY_STATUSES:
                raise ServiceCallError(f"{method} {path}: {last}", status, attempt)
            wait = retry_after_seconds(resp.headers)
            self._sleep(min(self.retry.max_delay, wait) if wait is not None
                        else self.retry.backoff(attempt))
        raise ServiceCallError(
            f"{method} {path}: gave up after {self.retry.max_attempts} attempts: {last}",
            status, self.retry.max_attempts,
        )

    def list_all(self, path: str) -> list[dict[str, Any]]:
        """GET a list endpoint, following `Link: <...>; rel="next"` pages."""
        items: list[dict[str, Any]] = []
        url: str | None = path
        while url:
            resp = self.request("GET", url)
            page = resp.json()
            if not isinstance(page, list):
                raise ServiceCallError(f"GET {path}: expected a JSON list, got {type(page)}")
            items.extend(page)
            nxt = resp.links.get("next", {}).get("url")
            url = urljoin(self.base_url + "/", nxt) if nxt else None
        return items

    # -- functions -------------------------------------------------------------------------------
    def create_function(self, name: str) -> dict[str, Any]:
        body = {"name": name, "input": "Image", "output": "Classification"}
        return self.request("POST", "/v1/functions", json=body).json()

    def find_function(self, name: str) -> str | None:
        """The id of an image-classification function called `name` (oldest first), if any."""
        for fn in self.list_all("/v1/functions"):
            if (fn.get("name") == name and fn.get("input") == "Image"
                    and fn.get("output") == "Classification"):
                return str(fn["id"])
        return None

    def get_function(self, function_id: str) -> dict[str, Any] | None:
        resp = self.request("GET", f"/v1/functions/{function_id}", ok=(200, 404))
        return None if resp.status_code == 404 else resp.json()

    # -- labels and samples ----------------------------------------------------------------------
    def ensure_labels(self, function_id: str, names: Iterable[str]) -> dict[str, str]:
        """Create the labels the function lacks; return name -> label id for all of them."""
        listed = self.list_all(f"/v1/functions/{function_id}/labels")
        have = {lb["name"]: str(lb["id"]) for lb in listed}
        for name in names:
            if name not in have:
                resp = self.request("POST", f"/v1/functions/{function_id}/labels",
                                    json={"name": name})
                have[name] = str(resp.json()["id"])
        return have

    def post_sample(
        self, function_id: str, image: bytes, label: str, external_id: str
    ) -> tuple[str, bool]:
        """Create one annotated sample; returns (sample id, created). A 409 duplicate answers
        the existing sample's id, which makes a rerun idempotent."""
        body = {"data": data_uri(image), "externalId": external_id,
                "annotation": {"labelName": label}}
        resp = self.request("POST", f"/v1/functions/{function_id}/samples", json=body,
                            ok=(200, 409))
        payload = resp.json()
        if resp.status_code == 409:
            existing = payload.get("existingSampleId") if isinstance(payload, dict) else None
            if not existing:
                raise ServiceCallError(f"409 without existingSampleId for {external_id}", 409)
            return str(existing), False
        return str(payload["id"]), True

    # -- training status (official client) --------------------------------------------------------
    def is_trained(self, function_id: str) -> bool:
        """Ask the official client whether the function has a model trained on all samples."""
        fn = self._official.get(function_id)
        if fn is None:
            fn = self._official[function_id] = self._official_function(function_id)
        return bool(fn.has_trained_model())

    def forget_status_client(self, function_id: str) -> None:
        """Drop the official client's object after an error: the next poll builds a new one."""
        self._official.pop(function_id, None)

    def _official_function(self, function_id: str) -> Any:
        import nyckel

        tokens = self.tokens

        class _SharedToken(nyckel.Credentials):
            """The official client's credentials, fed from our token cache (no secret held)."""

            @property
            def token(self) -> str:  # type: ignore[override]
                return tokens.token()

        creds = _SharedToken(client_id=tokens.client_id, client_secret="",
                             server_url=self.base_url)
        return nyckel.ImageClassificationFunction(function_id, creds)
