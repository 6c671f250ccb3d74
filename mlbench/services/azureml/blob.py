"""The workspace's blob container: found through its datastore, images and MLTables up, each
sent only when missing or changed.

Resumable without a local record: the container's own listing (name and Content-MD5 of every
blob under the dataset's prefix) says what is there, so a rerun after a crash sends only what is
missing and a second run sends nothing. Every blob is written with its Content-MD5 set, so the
listing can always answer. azure-storage-blob's own retries are off: each call goes through the
one retry policy (sending the same bytes again is harmless).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import mimetypes
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import requests
from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import ContainerClient, ContentSettings

from mlbench.console import err, progress
from mlbench.errors import ServiceCallError, UserError
from mlbench.redact import remember
from mlbench.retry import RETRY_STATUSES, RetryLater, RetryPolicy
from mlbench.services.azureml.api import ArmError, AzureMLApi

T = TypeVar("T")


def md5_of(data: bytes) -> str:
    """Base64 MD5, the form Blob storage reports (`Content-MD5`)."""
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


class Container:
    """One container of the workspace's storage account, created when missing."""

    def __init__(self, account_url: str, name: str, credential: Any, retry: RetryPolicy,
                 pool: int):
        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=pool, pool_maxsize=pool)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        self.name, self.retry, self.pool = name, retry, pool
        self.client = ContainerClient(account_url, name, credential=credential, retry_total=0,
                                      transport=RequestsTransport(session=session,
                                                                  session_owner=True),
                                      connection_timeout=retry.timeout,
                                      read_timeout=retry.timeout)
        self._call(f"create container {name}", self._ensure)

    def _ensure(self) -> None:
        """Create the container unless it exists (asked first: a container-scoped SAS may read
        it but not create containers)."""
        try:
            self.client.get_container_properties()
        except ResourceNotFoundError:
            with contextlib.suppress(ResourceExistsError):
                self.client.create_container()

    def close(self) -> None:
        self.client.close()

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        def attempt(n: int) -> T:
            try:
                return fn()
            except (ServiceRequestError, ServiceResponseError) as exc:  # no answer
                raise RetryLater(f"{what}: {type(exc).__name__}: {exc}") from None
            except ClientAuthenticationError as exc:
                raise UserError(f"Azure Blob storage refused {what} ({_line(exc)}); check the "
                                "workspace's datastore credentials, or give these credentials "
                                "the Storage Blob Data Contributor role") from None
            except HttpResponseError as exc:
                status = exc.status_code
                if status in RETRY_STATUSES:
                    raise RetryLater(f"{what}: HTTP {status}: {_line(exc)}", status=status) \
                        from None
                if status == 403:
                    raise UserError(f"Azure Blob storage denied {what} ({_line(exc)}); give "
                                    "these credentials the Storage Blob Data Contributor role"
                                    ) from None
                raise ServiceCallError(f"{what}: HTTP {status}: {_line(exc)}", status, n) \
                    from None
            except AzureError as exc:
                raise ServiceCallError(f"{what}: {type(exc).__name__}: {_line(exc)}", None, n) \
                    from None

        return self.retry.call(attempt, what)

    def md5s(self, prefix: str) -> dict[str, str]:
        """{blob name: base64 MD5} of every blob under `prefix`."""
        def listing() -> dict[str, str]:
            return {b.name: base64.b64encode(bytes(b.content_settings.content_md5)).decode()
                    if b.content_settings.content_md5 else ""
                    for b in self.client.list_blobs(name_starts_with=prefix)}

        return self._call(f"list {self.name}/{prefix}", listing)

    def sync(self, items: Sequence[tuple[Path, str, str]], present: dict[str, str], desc: str
             ) -> tuple[int, int]:
        """Upload every (file, blob name, its MD5) whose blob `present` (a listing) does not
        show with that MD5; (sent, skipped)."""
        todo = [it for it in items if present.get(it[1]) != it[2]]
        pool = ThreadPoolExecutor(self.pool)
        try:  # the first failure (or a Ctrl-C) cancels every upload not yet started
            with progress(total=len(todo), desc=desc, unit="img", disable=not todo) as bar:
                for _ in pool.map(lambda item: self.put_file(item[0], item[1]), todo):
                    bar.update(1)
        finally:
            pool.shutdown(cancel_futures=True)
        return len(todo), len(items) - len(todo)

    def put_file(self, path: Path, name: str) -> None:
        self.put(path.read_bytes(), name, mimetypes.guess_type(name)[0])

    def put(self, data: bytes, name: str, kind: str | None = None) -> None:
        settings = ContentSettings(content_type=kind or "application/octet-stream",
                                   content_md5=bytearray(base64.b64decode(md5_of(data))))
        self._call(f"upload {self.name}/{name}", lambda: self.client.upload_blob(
            name, data, overwrite=True, content_settings=settings))

    def put_text(self, name: str, text: str, present: dict[str, str]) -> None:
        """Write a small text blob unless `present` (a listing) shows it holds `text`."""
        data = text.encode("utf-8")
        if present.get(name) != md5_of(data):
            self.put(data, name, "text/plain; charset=utf-8")


def _line(exc: Exception) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return " ".join(str(text).split())[:300]


def open_container(api: AzureMLApi, container: str | None, storage_endpoint: str | None,
                   retry: RetryPolicy, pool: int) -> tuple[Container, str]:
    """(the container, the datastore naming it): the default datastore's container, or
    `container` on the same storage account, registered once as datastore `mlbench_<name>`
    with the default datastore's kind of credentials (its key, its SAS, or none)."""
    default = api.default_datastore()
    props = default.get("properties") or {}
    secrets = _secrets(api, str(default["name"]))
    datastore = str(default["name"])
    if container:
        datastore = f"mlbench_{container.replace('-', '_')}"
        _ensure_datastore(api, datastore, props, container, secrets)
    url = storage_endpoint or (f"{props.get('protocol') or 'https'}://"
                               f"{props.get('accountName')}.blob."
                               f"{props.get('endpoint') or 'core.windows.net'}")
    credential = secrets.get("key") or secrets.get("sasToken") or api.tokens.credential
    return Container(url, container or str(props.get("containerName")), credential, retry,
                     pool), datastore


def _secrets(api: AzureMLApi, datastore: str) -> dict[str, Any]:
    """The datastore's account key or SAS; {} for an identity-based one (then the user's own
    credentials write the blobs)."""
    try:
        secrets = api.post(f"datastores/{datastore}/listSecrets",
                           f"read the secrets of datastore {datastore}")
    except ArmError:
        return {}
    remember(secrets.get("key"), secrets.get("sasToken"))
    return secrets


def _ensure_datastore(api: AzureMLApi, name: str, default: dict[str, Any], container: str,
                      secrets: dict[str, Any]) -> None:
    found = api.get(f"datastores/{name}", f"get datastore {name}")
    if found is not None:
        if (found.get("properties") or {}).get("containerName") != container:
            raise UserError(f"azureml: datastore {name} exists for another container; rename "
                            "buckets.azure or that datastore")
        return
    kind = {"AccountKey": "key", "Sas": "sasToken"}.get(str(secrets.get("secretsType")))
    credentials: dict[str, Any] = {"credentialsType": "None"}
    if kind:
        credentials = {"credentialsType": secrets["secretsType"], "secrets": {
            "secretsType": secrets["secretsType"], kind: secrets[kind]}}
    api.put(f"datastores/{name}", {"properties": {
        "datastoreType": "AzureBlob", "accountName": default.get("accountName"),
        "containerName": container, "endpoint": default.get("endpoint") or "core.windows.net",
        "protocol": default.get("protocol") or "https", "credentials": credentials,
        "description": "mlbench uploads (buckets.azure)"}}, f"create datastore {name}")
    err.print(f"azureml: registered datastore {name} for container {container}")
