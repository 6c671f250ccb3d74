"""Nyckel OAuth2 client-credentials tokens: read from the environment, cached, renewed early.

Why not `nyckel.Credentials` from the official client: on a failed token request it raises a
`ValueError` whose message contains the whole form, client secret included (it would end up in
a traceback or a log), and it posts without a timeout. This module does the same exchange
(`POST <base>/connect/token`, form-encoded `grant_type=client_credentials`, `client_id`,
`client_secret`) with a timeout, retries on 429/5xx, and errors that never carry the secret.

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

from mlbench.errors import UserError
from mlbench.services.http import retry_after_seconds

DEFAULT_API_URL = "https://www.nyckel.com"
ENV_CLIENT_ID = "NYCKEL_CLIENT_ID"
ENV_CLIENT_SECRET = "NYCKEL_CLIENT_SECRET"
ENV_API_URL = "NYCKEL_API_URL"
RENEW_MARGIN_SECONDS = 600.0
TOKEN_TIMEOUT_SECONDS = 30.0
TOKEN_ATTEMPTS = 4


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
            raise UserError(
                f"Nyckel credentials missing: set {' and '.join(missing)} (both "
                f"{ENV_CLIENT_ID} and {ENV_CLIENT_SECRET} come from the API tab of the Nyckel "
                "console)"
            )
        return cls(cid, secret)


class TokenProvider:
    """A thread-safe cache of one bearer token for one (base URL, client) pair."""

    def __init__(
        self,
        credentials: ClientCredentials,
        base_url: str,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self._credentials = credentials
        self._base_url = base_url.rstrip("/")
        self.clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._token: str | None = None
        self._renew_at = 0.0
        #: How many tokens were fetched (tests and `status` report it).
        self.fetches = 0

    @property
    def client_id(self) -> str:
        return self._credentials.client_id

    def token(self) -> str:
        """A valid token, fetched or renewed when due (one fetch even with many threads)."""
        with self._lock:
            if self._token is None or self.clock() >= self._renew_at:
                self._token, lifetime = self._fetch()
                margin = min(RENEW_MARGIN_SECONDS, lifetime / 2)
                self._renew_at = self.clock() + lifetime - margin
            return self._token

    def invalidate(self, rejected: str | None = None) -> None:
        """Forget the token after a 401, unless another thread already replaced it."""
        with self._lock:
            if rejected is None or rejected == self._token:
                self._token = None

    def _fetch(self) -> tuple[str, float]:
        url = f"{self._base_url}/connect/token"
        form = {
            "grant_type": "client_credentials",
            "client_id": self._credentials.client_id,
            "client_secret": self._credentials.client_secret,
        }
        last = ""
        for attempt in range(1, TOKEN_ATTEMPTS + 1):
            try:
                resp = requests.post(url, data=form, timeout=TOKEN_TIMEOUT_SECONDS)
            except requests.RequestException as exc:
                last = type(exc).__name__
                self._sleep(min(8.0, 0.5 * 2 ** (attempt - 1)))
                continue
            if resp.status_code == 200:
                try:
                    body = resp.json()
                    token, lifetime = str(body["access_token"]), float(body["expires_in"])
                except (ValueError, KeyError, TypeError):
                    raise UserError(
                        f"{url} answered 200 without access_token/expires_in: is "
                        f"{ENV_API_URL} pointing at the Nyckel API?"
                    ) from None
                self.fetches += 1
                return token, lifetime
            if resp.status_code in (400, 401, 403):
                raise UserError(
                    f"Nyckel rejected the client credentials (HTTP {resp.status_code} from "
                    f"{url}): check {ENV_CLIENT_ID} and {ENV_CLIENT_SECRET}"
                )
            last = f"HTTP {resp.status_code}"
            wait = retry_after_seconds(resp.headers)
            self._sleep(min(30.0, wait if wait is not None else 0.5 * 2 ** (attempt - 1)))
        raise UserError(f"could not get a Nyckel token from {url} ({last}); retry later")
