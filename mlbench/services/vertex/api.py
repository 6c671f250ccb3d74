"""A small client of the Vertex AI v1 REST API: credentials, retries, lists, long-running waits.

Why REST over `requests` rather than the `google-cloud-aiplatform` SDK (see
docs/services/vertex.md): the SDK's high-level classes block inside `run()`/`deploy()` and
only then reveal what they created, so a crash mid-training would lose the pipeline id and a
rerun would pay for a second one; its job polling sleeps a hard-coded 5 s and more; and it
takes ~3 s to import. Here every create call returns at once, its resource name is recorded
before any waiting, and waits poll at `vertex.poll_seconds`. Tokens still come from
google-auth (`GOOGLE_APPLICATION_CREDENTIALS` or application-default credentials), and the
same bearer token serves the prediction calls.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests
from tqdm import tqdm

from mlbench.errors import UserError
from mlbench.services.http import RETRY_STATUSES, RetryPolicy, retry_after_seconds

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
CREDENTIALS_ENV = "GOOGLE_APPLICATION_CREDENTIALS"
TERMINAL_PIPELINE = {"PIPELINE_STATE_SUCCEEDED", "PIPELINE_STATE_FAILED",
                     "PIPELINE_STATE_CANCELLED"}


class TokenSource:
    """google-auth credentials -> a bearer token, refreshed when expired; thread-safe."""

    def __init__(self, credentials: Any):
        self.credentials = credentials
        self._lock = threading.Lock()

    @classmethod
    def from_environment(cls) -> TokenSource:
        """Application-default credentials with the cloud-platform scope, or one-line UserError.

        Nothing is sent here; the first token is fetched on first use, so a bad key surfaces
        as `token()`'s UserError before any resource is created.
        """
        import google.auth
        from google.auth.exceptions import DefaultCredentialsError

        try:
            creds, _ = google.auth.default(scopes=list(SCOPES))
        except DefaultCredentialsError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            hint = f" ({first[:160]})" if first else ""
            raise UserError(f"Vertex AI needs Google credentials: set {CREDENTIALS_ENV} to a "
                            f"service-account key file (or run `gcloud auth "
                            f"application-default login`){hint}") from None
        return cls(creds)

    def token(self, force: bool = False) -> str:
        from google.auth.exceptions import GoogleAuthError
        from google.auth.transport.requests import Request

        with self._lock:
            if force or not self.credentials.valid:
                try:
                    self.credentials.refresh(Request())
                except GoogleAuthError as exc:
                    raise UserError(f"Google rejected the credentials ({CREDENTIALS_ENV}): "
                                    f"{_one_line(exc)}") from None
            return str(self.credentials.token)


class ApiError(UserError):
    """A Vertex AI call that failed for good; `status` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None, reason: str = ""):
        super().__init__(message)
        self.status = status
        self.reason = reason


class VertexApi:
    """Calls on `projects/<project>/locations/<region>` of one API base URL."""

    def __init__(self, base_url: str, project: str, region: str, tokens: TokenSource,
                 retry: RetryPolicy | None = None, session: requests.Session | None = None):
        self.base_url = base_url.rstrip("/")
        self.project = project
        self.region = region
        self.tokens = tokens
        self.retry = retry or RetryPolicy()
        self.session = session or requests.Session()

    @property
    def parent(self) -> str:
        return f"projects/{self.project}/locations/{self.region}"

    # -- one call --------------------------------------------------------------------------------
    def call(self, method: str, path: str, body: Any = None,
             params: Mapping[str, str] | None = None, create: bool = False) -> dict[str, Any]:
        """`path` is a resource name (plus `:verb`) under /v1/. Retries 429/5xx and dropped
        connections with backoff (honouring Retry-After), renews the token once on a 401.

        A `create` call is not idempotent: it is retried only on 429 and 503 (refused, not
        processed). After a dropped connection or another 5xx the resource may exist, so the
        call fails instead, and the rerun finds it by its label rather than making a second.
        """
        url = f"{self.base_url}/v1/{path}"
        reauthed = False
        last, status = "no attempt made", None
        for attempt in range(1, self.retry.max_attempts + 1):
            headers = {"Authorization": f"Bearer {self.tokens.token()}",
                       "Content-Type": "application/json"}
            try:
                resp = self.session.request(method, url, headers=headers, params=params,
                                            data=None if body is None else json.dumps(body),
                                            timeout=self.retry.timeout)
            except requests.RequestException as exc:
                last, status = f"{type(exc).__name__}: {exc}", None
                if create:
                    break
                time.sleep(self.retry.backoff(attempt))
                continue
            if 200 <= resp.status_code < 300:
                return resp.json() if resp.content else {}
            status = resp.status_code
            message, reason = _google_error(resp)
            last = f"HTTP {status} {reason}: {message}".strip()
            if status == 401 and not reauthed:
                reauthed = True
                self.tokens.token(force=True)
                continue
            if status not in RETRY_STATUSES:
                raise ApiError(_explain(method, path, status, reason, message, self.project),
                               status, reason)
            if create and status not in (429, 503):
                break
            after = retry_after_seconds(resp.headers)
            time.sleep(min(after, self.retry.max_delay) if after is not None
                       else self.retry.backoff(attempt))
        raise ApiError(f"Vertex AI {method} {path}: gave up after {attempt} attempt(s) "
                       f"({last}); rerun to continue", status)

    def get(self, name: str) -> dict[str, Any] | None:
        """The resource, or None when it does not exist (any more)."""
        try:
            return self.call("GET", name)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, collection: str, filter_: str) -> list[dict[str, Any]]:
        """Every item of `<parent>/<collection>` matching the filter (follows page tokens)."""
        items: list[dict[str, Any]] = []
        token = ""
        while True:
            params = {"filter": filter_, "pageSize": "100"}
            if token:
                params["pageToken"] = token
            page = self.call("GET", f"{self.parent}/{collection}", params=params)
            items += page.get(collection) or []
            token = page.get("nextPageToken") or ""
            if not token:
                return items

    # -- waiting ---------------------------------------------------------------------------------
    def wait_operation(self, op_name: str, what: str, timeout: float, poll: float
                       ) -> dict[str, Any]:
        """Poll a long-running operation until done; its `response` (raises on its `error`)."""

        def check() -> tuple[bool, str, dict[str, Any]]:
            op = self.call("GET", op_name)
            return bool(op.get("done")), "done" if op.get("done") else "running", op

        op = _poll(check, what, timeout, poll, resume_hint="rerun to keep waiting")
        error = op.get("error")
        if error:
            raise ApiError(f"Vertex AI: {what} failed: {error.get('message', error)} "
                           f"(operation {op_name})", None, str(error.get("code", "")))
        return op.get("response") or {}

    def wait_pipeline(self, name: str, timeout: float, poll: float) -> dict[str, Any]:
        """Poll a training pipeline until it reaches a final state; the pipeline resource."""

        def check() -> tuple[bool, str, dict[str, Any]]:
            p = self.call("GET", name)
            state = str(p.get("state", "PIPELINE_STATE_UNSPECIFIED"))
            return state in TERMINAL_PIPELINE, state.removeprefix("PIPELINE_STATE_"), p

        return _poll(check, f"training {name.rsplit('/', 1)[-1]}", timeout, poll,
                     resume_hint="training goes on in Google Cloud; rerun to keep waiting")


def _poll(check: Callable[[], tuple[bool, str, dict[str, Any]]], what: str, timeout: float,
          poll: float, resume_hint: str) -> dict[str, Any]:
    """Call `check` every `poll` s until it reports done, with a live state + elapsed line."""
    start = time.monotonic()
    with tqdm(desc=f"vertex: {what}", bar_format="{desc} [{elapsed}]") as bar:
        while True:
            done, state, payload = check()
            bar.set_description_str(f"vertex: {what}: {state}")
            if done:
                return payload
            if time.monotonic() - start > timeout:
                raise UserError(f"Vertex AI: {what} still {state} after {timeout:g} s; "
                                f"{resume_hint} (or raise the vertex timeout in params.yaml)")
            time.sleep(poll)


def parse_time(value: str | None) -> dt.datetime | None:
    """An RFC 3339 timestamp as Vertex writes it (`...T12:00:00.123456789Z`), or None."""
    if not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    if "." in text:  # Python takes at most 6 fractional digits
        head, _, tail = text.partition(".")
        digits = "".join(c for c in tail if c.isdigit())
        text = f"{head}.{digits[:6].ljust(6, '0')}{tail[len(digits):]}"
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        return None


def resource_of(op_name: str) -> str:
    """`projects/.../datasets/1/operations/2` -> `projects/.../datasets/1`."""
    return op_name.split("/operations/", 1)[0]


def _google_error(resp: requests.Response) -> tuple[str, str]:
    try:
        err = resp.json().get("error")
    except (ValueError, AttributeError):
        err = None
    if isinstance(err, dict):
        return _one_line(err.get("message", "")), str(err.get("status", ""))
    return _one_line(resp.text[:200]), ""


def _explain(method: str, path: str, status: int, reason: str, message: str,
             project: str) -> str:
    base = f"Vertex AI {method} {path}: HTTP {status} {reason} {message}".replace("  ", " ")
    if status == 403:
        return (f"{base}; check that the Vertex AI API is enabled in project {project} and "
                "that the credentials have the Vertex AI User role")
    if status == 401:
        return f"{base}; check {CREDENTIALS_ENV}"
    return base


def _one_line(value: object) -> str:
    return " ".join(str(value).split())[:300]
