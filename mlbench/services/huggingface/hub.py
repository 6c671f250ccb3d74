"""Hugging Face's control plane through `huggingface_hub`'s own client: repos and commits, Jobs,
Inference Endpoints.

Every call goes through the one retry policy: a connection failure, 408/429/5xx is tried again
(on top of `huggingface_hub`'s own backoff for the calls that have one); what the user must fix
is one `UserError` line saying what is missing: a token (401), a permission (403), credit or a
payment method (402: Hugging Face's answer when Jobs or Endpoints have nothing to bill). A 404 is
the caller's to judge (`missing_ok`): an endpoint not created yet is not an error.

The Hub is `HF_ENDPOINT` (huggingface_hub's own setting: a mirror, or the test fake). The
Inference Endpoints API has no such setting in huggingface_hub (it reads the module constant
`constants.INFERENCE_ENDPOINTS_ENDPOINT` at each call), so `huggingface.endpoints_api` in
params.yaml, when set, is put there before each endpoint call.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx2
from huggingface_hub import CommitOperationAdd, HfApi, constants
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
from huggingface_hub.utils import get_session, sha

from mlbench.errors import ServiceCallError, UserError
from mlbench.retry import RETRY_STATUSES, RetryLater, RetryPolicy
from mlbench.services.http import snippet
from mlbench.services.huggingface.api import ENV_TOKEN

T = TypeVar("T")
BILLING = "https://huggingface.co/settings/billing"
TOKENS = "https://huggingface.co/settings/tokens"
#: Job stages after which nothing more happens (huggingface_hub's TERMINAL_JOB_STAGES).
JOB_DONE = ("COMPLETED", "CANCELED", "ERROR", "DELETED")
#: Endpoint states that will not turn `running` by themselves.
ENDPOINT_BROKEN = ("failed", "updateFailed")


@dataclass(frozen=True)
class LocalFile:
    """A file to have in a repo: where, from which local path, and its two content hashes
    (the Hub lists a regular file by its git blob id, an LFS/Xet one by its sha256)."""

    path_in_repo: str
    local: Path
    sha256: str
    git_oid: str

    @classmethod
    def of(cls, path_in_repo: str, local: Path) -> LocalFile:
        data = local.read_bytes()
        return cls(path_in_repo, local, hashlib.sha256(data).hexdigest(), sha.git_hash(data))


@dataclass(frozen=True)
class JobState:
    """What mlbench reads of a Job: its stage and message, and its own timestamps."""

    id: str
    stage: str
    message: str
    url: str
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    running_secs: float | None

    @property
    def done(self) -> bool:
        return self.stage in JOB_DONE

    @property
    def seconds(self) -> float | None:
        """How long it ran, from the Job's own timestamps (the Hub's durations as a fallback)."""
        if self.started_at and self.finished_at:
            return max(0.0, (self.finished_at - self.started_at).total_seconds())
        return self.running_secs


@dataclass(frozen=True)
class EndpointState:
    """An Inference Endpoint as mlbench needs it: its state, URL, health route and model."""

    name: str
    state: str
    url: str | None
    health_route: str
    repository: str
    message: str


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return None if response is None else response.status_code


def _server_says(exc: HfHubHTTPError) -> str:
    """The server's own reason, short (`X-Error-Message`, else the JSON `error`, else body)."""
    response = exc.response
    said = response.headers.get("X-Error-Message") or ""
    if not said:
        try:
            body = response.json()
            said = body.get("error") or body.get("message") or "" if isinstance(body, dict) \
                else ""
        except (ValueError, httpx2.HTTPError):
            said = ""
    if not said:
        try:
            said = snippet(response.content)
        except httpx2.HTTPError:
            said = ""
    return " ".join(str(said).split())[:300]


def refusal(exc: HfHubHTTPError, what: str) -> Exception:
    """The exception for a Hub answer that is not a success: retry, or what the user must do."""
    status, said = _status(exc), _server_says(exc)
    reason = f"HTTP {status}" + (f": {said}" if said else "")
    if status is None or status in RETRY_STATUSES:
        return RetryLater(f"{what}: {reason}", status=status)
    if status == 401:
        return UserError(f"Hugging Face refused the token in {ENV_TOKEN} for {what} ({reason}): "
                         f"set {ENV_TOKEN} to a valid token ({TOKENS})")
    if status == 402:
        return UserError(f"Hugging Face refused {what}: no credit or payment method on the "
                         f"account ({reason}); add pre-paid credits at {BILLING}, or train "
                         "elsewhere and give the endpoint by hand "
                         "(huggingface.endpoints.<dataset>.<ablation>)")
    if status == 403:
        return UserError(f"Hugging Face refused {what} ({reason}): the token in {ENV_TOKEN} "
                         "needs write access to huggingface.namespace (and Jobs / Inference "
                         f"Endpoints permissions there) ({TOKENS})")
    return ServiceCallError(f"huggingface: {what}: {reason}", status)


class Hub:
    """One account's repos, Jobs and endpoints (`namespace`), through `HfApi`."""

    def __init__(self, token: str, endpoint: str | None, endpoints_api: str, retry: RetryPolicy):
        self.api = HfApi(endpoint=endpoint or None, token=token)
        self.token = token
        self.endpoints_api = endpoints_api
        self.retry = retry

    @property
    def url(self) -> str:
        return self.api.endpoint

    @property
    def endpoints_url(self) -> str:
        return self.endpoints_api or constants.INFERENCE_ENDPOINTS_ENDPOINT

    def call(self, what: str, fn: Callable[[], T], *, missing_ok: bool = False) -> T | None:
        """`fn()` through the retry policy; None for a 404 when `missing_ok`."""
        def attempt(_: int) -> T | None:
            if self.endpoints_api:
                constants.INFERENCE_ENDPOINTS_ENDPOINT = self.endpoints_api
            try:
                return fn()
            except HfHubHTTPError as exc:
                if missing_ok and _status(exc) == 404:
                    return None
                raise refusal(exc, what) from None
            except httpx2.TransportError as exc:
                raise RetryLater(f"{what}: {type(exc).__name__}") from None

        return self.retry.call(attempt, f"huggingface: {what}")

    # -- account and repos -----------------------------------------------------------------------
    def user(self) -> str:
        me = self.call("who am I (whoami)", lambda: self.api.whoami())
        return str((me or {}).get("name") or "")

    def ensure_repo(self, repo_id: str, repo_type: str) -> bool:
        """Create the private repo unless it exists; whether this call created it."""
        def create() -> bool:
            try:
                self.api.create_repo(repo_id, repo_type=repo_type, private=True)
                return True
            except HfHubHTTPError as exc:
                if _status(exc) == 409:  # there already (a rerun, or made by hand)
                    return False
                raise

        return bool(self.call(f"create {repo_type} repo {repo_id}", create))

    def remote_files(self, repo_id: str, repo_type: str
                     ) -> dict[str, tuple[str, str | None]] | None:
        """path -> (git blob id, LFS sha256 or None) of every file on the repo's main branch;
        None when there is no such repo."""
        def listing() -> dict[str, tuple[str, str | None]]:
            found = {}
            for entry in self.api.list_repo_tree(repo_id, repo_type=repo_type, recursive=True):
                if hasattr(entry, "blob_id"):
                    found[entry.path] = (entry.blob_id, entry.lfs.sha256 if entry.lfs else None)
            return found

        return self.call(f"list the files of {repo_id}", listing, missing_ok=True)

    @staticmethod
    def missing(files: Sequence[LocalFile], remote: Mapping[str, tuple[str, str | None]]
                ) -> list[LocalFile]:
        """The files whose path is not in `remote` with the same content."""
        def there(f: LocalFile) -> bool:
            blob, lfs = remote.get(f.path_in_repo, ("", None))
            return f.sha256 == lfs if lfs else f.git_oid == blob

        return [f for f in files if not there(f)]

    def commit(self, repo_id: str, repo_type: str, files: Iterable[LocalFile], message: str
               ) -> str:
        """One commit adding `files`; its commit id. A retried attempt builds fresh operations
        (huggingface_hub refuses to reuse committed ones), and a file the Hub already has with
        the same content is left out of the commit by huggingface_hub itself (preupload oid)."""
        batch = list(files)

        def commit() -> str:
            ops = [CommitOperationAdd(f.path_in_repo, str(f.local)) for f in batch]
            info = self.api.create_commit(repo_id, ops, commit_message=message,
                                          repo_type=repo_type)
            return str(info.oid)

        return str(self.call(f"commit {len(batch)} files to {repo_id}", commit))

    def head(self, repo_id: str, repo_type: str) -> str | None:
        """The repo's current commit id (None: no such repo)."""
        info = self.call(f"read {repo_id}", lambda: self.api.repo_info(
            repo_id, repo_type=repo_type), missing_ok=True)
        return None if info is None else info.sha

    def read_json(self, repo_id: str, filename: str) -> Any:
        """A small JSON file of a model repo, parsed (None: no such file or repo)."""
        def fetch() -> Any:
            with tempfile.TemporaryDirectory(prefix="mlbench-hf-") as cache:
                try:
                    path = self.api.hf_hub_download(repo_id, filename, cache_dir=cache)
                except LocalEntryNotFoundError:  # the Hub could not be reached
                    raise httpx2.ConnectError(f"{self.url} not reachable") from None
                try:
                    return json.loads(Path(path).read_text())
                except ValueError:
                    return None

        return self.call(f"read {filename} of {repo_id}", fetch, missing_ok=True)

    # -- Jobs ------------------------------------------------------------------------------------
    def _job(self, info: Any) -> JobState:
        durations = getattr(info, "durations", None)
        return JobState(info.id, str(getattr(info.status.stage, "value", info.status.stage)),
                        info.status.message or "", info.url, info.started_at, info.finished_at,
                        getattr(durations, "running_secs", None))

    def run_job(self, namespace: str, spec: Mapping[str, Any], labels: Mapping[str, str]
                ) -> JobState:
        """Start the Job. A retried attempt first looks for the Job an attempt whose answer was
        lost may have started (by its labels), so a flaky network never starts two."""
        def start() -> JobState:
            return self._job(self.api.run_job(namespace=namespace, labels=dict(labels), **spec))

        first = True

        def once() -> JobState:
            nonlocal first
            if not first:
                found = self.find_job(namespace, labels, retry=False)
                if found is not None:
                    return found
            first = False
            return start()

        return self.call(f"start a Job on {spec.get('flavor')}", once)  # type: ignore[return-value]

    def find_job(self, namespace: str, labels: Mapping[str, str], retry: bool = True
                 ) -> JobState | None:
        """The newest Job with all `labels` that did not fail or get cancelled, or None."""
        def look() -> JobState | None:
            jobs = [self._job(j) for j in self.api.list_jobs(namespace=namespace,
                                                             labels=dict(labels))]
            alive = [j for j in jobs if j.stage not in ("CANCELED", "ERROR", "DELETED")]
            return alive[-1] if alive else None

        return self.call("list Jobs", look) if retry else look()

    def job(self, namespace: str, job_id: str) -> JobState | None:
        return self.call(f"read Job {job_id}", lambda: self._job(self.api.inspect_job(
            job_id=job_id, namespace=namespace)), missing_ok=True)

    def log_tail(self, namespace: str, job_id: str, lines: int = 20) -> list[str]:
        """The Job's last log lines (what a failed Job printed last); [] when none can be read."""
        def read() -> list[str]:
            return list(self.api.fetch_job_logs(job_id=job_id, namespace=namespace, tail=lines))

        try:
            return [line.rstrip() for line in self.call(f"read the logs of Job {job_id}", read)
                    or [] if line.strip()][-lines:]
        except (UserError, ServiceCallError):
            return []

    def cancel_job(self, namespace: str, job_id: str) -> None:
        self.call(f"cancel Job {job_id}", lambda: self.api.cancel_job(
            job_id=job_id, namespace=namespace), missing_ok=True)

    # -- Inference Endpoints ---------------------------------------------------------------------
    @staticmethod
    def _endpoint(ep: Any) -> EndpointState:
        status = ep.raw.get("status") or {}
        return EndpointState(ep.name, str(ep.status), ep.url, ep.health_route or "/health",
                             ep.repository, str(status.get("message") or ""))

    def endpoint(self, namespace: str, name: str) -> EndpointState | None:
        ep = self.call(f"read endpoint {name}", lambda: self.api.get_inference_endpoint(
            name, namespace=namespace), missing_ok=True)
        return None if ep is None else self._endpoint(ep)

    def create_endpoint(self, namespace: str, name: str, spec: Mapping[str, Any]
                        ) -> tuple[EndpointState, bool]:
        """Create the endpoint; (its state, whether this call created it). A name already taken
        (an earlier attempt, or a run that crashed after creating it) is that endpoint."""
        def create() -> tuple[EndpointState, bool]:
            try:
                ep = self.api.create_inference_endpoint(name, namespace=namespace, **spec)
                return self._endpoint(ep), True
            except HfHubHTTPError as exc:
                if _status(exc) != 409:
                    raise
            found = self.api.get_inference_endpoint(name, namespace=namespace)
            return self._endpoint(found), False

        return self.call(f"create endpoint {name}", create)  # type: ignore[return-value]

    def act(self, namespace: str, name: str, action: str) -> EndpointState | None:
        """`pause`, `resume`, `scale_to_zero` or `delete` the endpoint (None: it is gone)."""
        calls = {"pause": self.api.pause_inference_endpoint,
                 "resume": self.api.resume_inference_endpoint,
                 "scale_to_zero": self.api.scale_to_zero_inference_endpoint,
                 "delete": self.api.delete_inference_endpoint}

        def run() -> EndpointState | str:
            answer = calls[action](name, namespace=namespace)
            return "deleted" if answer is None else self._endpoint(answer)

        done = self.call(f"{action.replace('_', ' ')} endpoint {name}", run, missing_ok=True)
        return done if isinstance(done, EndpointState) else None

    def healthy(self, url: str, route: str) -> bool:
        """Whether the endpoint answers its health route (what `InferenceEndpoint.wait` checks
        before it calls an endpoint ready)."""
        try:
            answer = get_session().get(f"{url.rstrip('/')}/{route.lstrip('/')}",
                                       headers={"Authorization": f"Bearer {self.token}"},
                                       timeout=self.retry.timeout)
        except httpx2.TransportError:
            return False
        return answer.status_code == 200

