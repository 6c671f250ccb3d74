"""Nyckel OAuth2 client-credentials tokens: read from the environment, cached, renewed early.

Why not `nyckel.Credentials` from the official client: on a failed token request it raises a
`ValueError` whose message contains the whole form, client secret included (it would end up in
a traceback or a log), and it posts without a timeout. This module does the same exchange
(`POST <base>/connect/token`, form-encoded `grant_type=client_credentials`, `client_id`,
`client_secret`) with a timeout, the shared retry policy, and errors that never carry the
secret (nor the server's answer, which could echo it).

The token is renewed 10 minutes before it expires (as the official client does; for a token
that lives less than 20 minutes, at half its life) and immediately after a 401 (`invalidate`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests

from mlbench import redact
from mlbench.errors import ServiceCallError, UserError
from mlbench.retry import RETRY_STATUSES, RetryLater, RetryPolicy, retry_after_seconds

DEFAULT_API_URL = "https://www.nyckel.com"
ENV_CLIENT_ID = "NYCKEL_CLIENT_ID"
ENV_CLIENT_SECRET = "NYCKEL_CLIENT_SECRET"
ENV_API_URL = "NYCKEL_API_URL"
RENEW_MARGIN_SECONDS = 600.0


def api_url() -> str:
    """The API base URL: `NYCKEL_API_URL` (a fake or a proxy) or the public API."""
    return (os.environ.get(ENV_API_URL) or DEFAULT_API_URL).rstrip("/")


@dataclass(frozen=True)
class ClientCredentials:
    """The pair from the Nyckel console's API tab. `repr` hides the secret."""

    client_id: str
    client_secret: str

    def __repr__(self) -> str:
        return f"ClientCredentials(client_id={self.client_id!r}, client_secret=***)"

    @classmethod
    def from_env(cls) -> ClientCredentials:
        """Read both variables; a missing one is a user mistake named in one line."""
        cid = os.environ.get(ENV_CLIENT_ID, "").strip()
        secret = os.environ.get(ENV_CLIENT_SECRET, "").strip()
        missing = [name for name, value in ((ENV_CLIENT_ID, cid), (ENV_CLIENT_SECRET, secret))
                   if not value]
        if missing:
            raise UserError(f"Nyckel credentials missing: set {' and '.join(missing)} (both "
                            f"{ENV_CLIENT_ID} and {ENV_CLIENT_SECRET} come from the API tab of "
                            "the Nyckel console)")
        return cls(cid, secret)


class TokenProvider:
    """A thread-safe cache of one bearer token for one (base URL, client) pair."""

    def __init__(self, credentials: ClientCredentials, base_url: str,
                 retry: RetryPolicy | None = None, clock: Callable[[], float] = time.monotonic):
        self._credentials = credentials
        self.url = f"{base_url.rstrip('/')}/connect/token"
        self.retry = retry or RetryPolicy()
        self.clock = clock
        self._lock = threading.Lock()
        self._token: str | None = None
        self._renew_at = 0.0
        #: How many tokens were fetched (tests report it).
        self.fetches = 0

    @property
    def client_id(self) -> str:
        return self._credentials.client_id

    def token(self) -> str:
        """A valid token, fetched or renewed when due (one fetch even with many threads)."""
        with self._lock:
            if self._token is None or self.clock() >= self._renew_at:
                self._token, lifetime = self.retry.call(self._fetch, f"nyckel token ({self.url})")
                redact.remember(self._token)  # an error body echoing it is scrubbed too
                self._renew_at = self.clock() + lifetime - min(RENEW_MARGIN_SECONDS, lifetime / 2)
                self.fetches += 1
            return self._token

    def invalidate(self, rejected: str | None = None) -> None:
        """Forget the token after a 401, unless another thread already replaced it."""
        with self._lock:
            if rejected is None or rejected == self._token:
                self._token = None

    def _fetch(self, attempt: int) -> tuple[str, float]:
        """One token request. Messages name statuses and exception types only: never the form."""
        form = {"grant_type": "client_credentials", "client_id": self._credentials.client_id,
                "client_secret": self._credentials.client_secret}
        try:
            resp = requests.post(self.url, data=form, timeout=self.retry.timeout)
        except requests.RequestException as exc:
            raise RetryLater(type(exc).__name__) from None
        status = resp.status_code
        if status in (400, 401, 403):
            raise UserError(f"Nyckel rejected the client credentials (HTTP {status} from "
                            f"{self.url}): check {ENV_CLIENT_ID} and {ENV_CLIENT_SECRET}")
        if status in RETRY_STATUSES:
            raise RetryLater(f"HTTP {status}", status=status,
                             after=retry_after_seconds(resp.headers))
        if status != 200:
            raise ServiceCallError(f"{self.url}: HTTP {status}", status, attempt)
        try:
            body = resp.json()
            return str(body["access_token"]), float(body["expires_in"])
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{self.url} answered 200 without access_token/expires_in: is "
                            f"{ENV_API_URL} pointing at the Nyckel API?") from None
