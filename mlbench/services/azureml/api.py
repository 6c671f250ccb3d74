"""Azure Machine Learning's REST API, called directly: ARM routes of one workspace, the MLflow
run of a job, with `azure-identity` tokens, every call through the one retry policy.

Why not `azure-ai-ml`'s `MLClient`: it can be pointed at a local fake through a custom cloud's
metadata, but its data, model, online-endpoint and deployment operations then refuse to send a
bearer token over plain http (only jobs and datastores pass `enforce_https` on), so it cannot be
tested offline end to end; it also sets `AZUREML_CURRENT_CLOUD` in the process environment,
stamps git details of the working folder into every job, retries on its own and blocks inside
its pollers, and finding the best child of an AutoML job (and the job's own start and end)
still needs MLflow beside it. The documented REST routes are few: `PUT`/`GET` of datastores,
data and model versions, jobs, online endpoints and deployments (api-version `ARM_API`), and
MLflow's `runs/get`. `tests/test_azureml.py` checks the bodies sent here against the ones
`azure-ai-ml` builds for the same resources.

A 429/5xx or a dropped connection is retried (ARM `PUT`s are idempotent: the names are ours);
a 401 renews the token once; 401/403 after that, and quota refusals, are the user's to fix.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

import requests
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import DefaultAzureCredential

from mlbench.errors import ServiceCallError, UserError
from mlbench.redact import remember
from mlbench.retry import RETRY_STATUSES, RetryLater, RetryPolicy, retry_after_seconds
from mlbench.services.http import snippet

ARM_API = "2024-04-01"
PROVIDER = "Microsoft.MachineLearningServices"
#: Error codes that mean a quota or a limit of the subscription: the user asks for more.
QUOTA_CODES = frozenset({"QuotaExceeded", "InsufficientQuota", "OperationNotAllowed",
                         "SubscriptionQuotaExceeded", "ResourceQuotaExceeded"})
#: azure-identity logs every failed credential of its chain as a WARNING: with no handler that
#: is a screenful on stderr before our one line. (A handler the user configures still gets it.)
logging.getLogger("azure").addHandler(logging.NullHandler())
CREDENTIALS_HINT = ("set AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET (a service "
                    "principal) or run `az login`")


class ArmError(ServiceCallError):
    """A call Azure refused for good, with its error code."""

    def __init__(self, message: str, status: int | None, attempts: int, code: str):
        super().__init__(message, status, attempts)
        self.code = code


class Tokens:
    """`DefaultAzureCredential` -> bearer tokens of one scope, renewed 5 minutes early;
    thread-safe (the load test asks from many coroutines' threads)."""

    def __init__(self, scope: str):
        self.scope = scope
        self._credential: DefaultAzureCredential | None = None
        self._token: AccessToken | None = None
        self._lock = threading.Lock()

    @property
    def credential(self) -> DefaultAzureCredential:
        if self._credential is None:
            self._credential = DefaultAzureCredential()
        return self._credential

    def token(self, force: bool = False) -> str:
        with self._lock:
            if force or self._token is None or self._token.expires_on - 300 < time.time():
                try:
                    self._token = self.credential.get_token(self.scope)
                except ClientAuthenticationError as exc:
                    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                    raise UserError(f"Azure credentials: none usable ({first[:160]}); "
                                    f"{CREDENTIALS_HINT}") from None
                remember(self._token.token)
            return self._token.token


def error_of(body: bytes) -> tuple[str, str]:
    """(code, message) of an ARM error body `{"error": {"code", "message"}}`."""
    try:
        error = json.loads(body).get("error") or {}
        return str(error.get("code") or ""), " ".join(str(error.get("message") or "").split())
    except (ValueError, AttributeError):
        return "", snippet(body)


class AzureMLApi:
    """The REST calls on one workspace (`.../workspaces/<name>/<path>`) and its MLflow runs."""

    def __init__(self, arm_endpoint: str, ids: tuple[str, str, str], retry: RetryPolicy):
        subscription, group, workspace = ids
        self.arm = arm_endpoint.rstrip("/")
        self.path = (f"/subscriptions/{subscription}/resourceGroups/{group}/providers/"
                     f"{PROVIDER}/workspaces/{workspace}")
        self.retry = retry
        self.tokens = Tokens(f"{self.arm}/.default")
        self.session = requests.Session()

    def close(self) -> None:
        self.session.close()

    def arm_id(self, path: str) -> str:
        """The ARM id of a workspace resource (what jobs and deployments refer to)."""
        return f"{self.path}/{path}"

    def call(self, method: str, url: str, what: str, *, body: Any = None, missing_ok: bool = False,
             params: Mapping[str, str] | None = None) -> dict[str, Any] | None:
        """One REST call through the retry policy: its JSON answer ({} when empty), or None for a
        404 when `missing_ok`."""
        renewed = [False]

        def attempt(n: int) -> dict[str, Any] | None:
            headers = {"Authorization": f"Bearer {self.tokens.token(force=renewed[0])}"}
            try:
                resp = self.session.request(method, url, params=params, json=body,
                                            headers=headers, timeout=self.retry.timeout)
            except requests.RequestException as exc:
                raise RetryLater(f"{what}: {type(exc).__name__}: {exc}") from None
            if resp.ok:
                try:
                    return resp.json() if resp.content else {}
                except ValueError:
                    raise ArmError(f"{what}: the answer is not JSON: {snippet(resp.content)}",
                                   resp.status_code, n, "") from None
            if resp.status_code == 404 and missing_ok:
                return None
            raise self._verdict(resp, what, n, renewed)

        return self.retry.call(attempt, what)

    def _verdict(self, resp: requests.Response, what: str, attempt: int,
                 renewed: list[bool]) -> Exception:
        status = resp.status_code
        code, message = error_of(resp.content)
        why = f"HTTP {status} {code}: {message}".replace(" :", ":")
        if status == 401 and not renewed[0]:
            renewed[0] = True
            return RetryLater(f"{what}: {why}", status=status, after=0.0)
        if status in (401, 403):
            return UserError(f"Azure refused {what} ({why}); check the credentials "
                             f"(DefaultAzureCredential: {CREDENTIALS_HINT}) and that they hold "
                             "the AzureML Data Scientist role on the workspace")
        if code in QUOTA_CODES or "quota" in message.lower():
            return UserError(f"an Azure quota is used up ({what}: {why}); ask for more in the "
                             "portal (Quotas) or free some")
        if status in RETRY_STATUSES:
            return RetryLater(f"{what}: {why}", status=status,
                              after=retry_after_seconds(resp.headers))
        return ArmError(f"{what}: {why}", status, attempt, code)

    # -- the workspace's resources -----------------------------------------------------------------
    def _url(self, path: str) -> str:
        return f"{self.arm}{self.path}" + (f"/{path}" if path else "")

    def get(self, path: str, what: str = "") -> dict[str, Any] | None:
        """A resource of the workspace (`jobs/<name>`, ...), None when it does not exist."""
        return self.call("GET", self._url(path), what or f"get {path}", missing_ok=True,
                         params={"api-version": ARM_API})

    def put(self, path: str, body: Mapping[str, Any], what: str = "") -> dict[str, Any]:
        return self.call("PUT", self._url(path), what or f"create {path}", body=dict(body),
                         params={"api-version": ARM_API}) or {}

    def post(self, path: str, what: str = "") -> dict[str, Any]:
        return self.call("POST", self._url(path), what or f"post {path}",
                         params={"api-version": ARM_API}) or {}

    def delete(self, path: str, what: str = "") -> None:
        """Start deleting a resource (a 404 means it is gone already)."""
        self.call("DELETE", self._url(path), what or f"delete {path}", missing_ok=True,
                  params={"api-version": ARM_API})

    def workspace(self) -> dict[str, Any]:
        """The workspace (its location, its MLflow tracking URI); one line when it is not
        there."""
        found = self.get("", "get the workspace")
        if found is None:
            raise UserError(f"Azure ML workspace {self.path.rsplit('/', 1)[1]} not found "
                            f"({self.path}); check azureml.subscription_id, resource_group and "
                            "workspace (or their environment variables)")
        return found

    def default_datastore(self) -> dict[str, Any]:
        page = self.call("GET", self._url("datastores"), "list the default datastore",
                         params={"api-version": ARM_API, "isDefault": "true"}) or {}
        found = [d for d in page.get("value") or []
                 if (d.get("properties") or {}).get("isDefault")]
        if not found:
            raise UserError(f"Azure ML workspace {self.path.rsplit('/', 1)[1]} has no default "
                            "datastore; set one in the studio (Data > Datastores)")
        return found[0]

    def mlflow_run(self, tracking: str, run_id: str) -> dict[str, Any]:
        """MLflow's `runs/get` of a job (an Azure ML job is an MLflow run of the same id)."""
        answer = self.call("GET", f"{tracking}/api/2.0/mlflow/runs/get", f"MLflow run {run_id}",
                           params={"run_id": run_id}) or {}
        return answer.get("run") or {}
