"""Cloud Storage side of the Vertex flow: the bucket, the image uploads, the import CSV.

Uploads are idempotent and resumable without any local record: the bucket's own listing (name
and MD5 of every object under the target folders) says what is already there, so a rerun after
a crash sends only the missing or changed files, and a second run sends nothing. Files go up
concurrently with a progress bar. `STORAGE_EMULATOR_HOST` (e.g. the gcp-storage-emulator) is
honoured by google-cloud-storage itself; against it no credentials are used.
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mlbench.console import err
from mlbench.errors import UserError

#: Vertex import-CSV `ml_use` per split, and the bucket folder each split's images go to
#: (the folder names of the seed project and of mlbench.data.export).
ML_USE = {"train": "training", "val": "validation", "test": "test"}
FOLDER = {"train": "training_uploads", "val": "val_uploads", "test": "test_uploads"}
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"


@dataclass(frozen=True)
class UploadItem:
    """One local file and the object name it must have in the bucket."""

    path: Path
    blob: str


@dataclass(frozen=True)
class SyncResult:
    sent: int
    skipped: int


def storage_client(project: str, credentials: Any | None) -> Any:
    """A google-cloud-storage client; anonymous against STORAGE_EMULATOR_HOST."""
    from google.cloud import storage

    if os.environ.get(EMULATOR_ENV):
        return storage.Client(project=project)
    return storage.Client(project=project, credentials=credentials)


def _widen_pool(client: Any, size: int) -> None:
    """Let `size` uploads share the client's HTTP session without queueing on its pool."""
    from requests.adapters import HTTPAdapter

    session = getattr(client, "_http", None)
    if session is not None and hasattr(session, "mount"):
        adapter = HTTPAdapter(pool_connections=size, pool_maxsize=size)
        session.mount("https://", adapter)
        session.mount("http://", adapter)


def ensure_bucket(client: Any, name: str, location: str) -> Any:
    """The bucket, created in `location` when missing (Vertex reads it from the same region)."""
    from google.api_core import exceptions as gexc

    try:
        return client.get_bucket(name)
    except gexc.NotFound:
        pass
    except gexc.Forbidden as exc:
        raise UserError(f"GCS bucket {name!r}: access denied ({_msg(exc)}); set buckets.google "
                        "in params.yaml to a bucket these credentials can write") from None
    try:
        bucket = client.create_bucket(name, location=location)
    except gexc.Conflict:
        raise UserError(f"GCS bucket name {name!r} is taken by another project; set "
                        "buckets.google in params.yaml to a unique name") from None
    except gexc.GoogleAPICallError as exc:
        raise UserError(f"GCS bucket {name!r} could not be created ({_msg(exc)}); create it in "
                        f"{location} or set buckets.google in params.yaml") from None
    err.print(f"vertex: created bucket gs://{name} in {location}")
    return bucket


def local_md5(path: Path) -> str:
    """Base64 MD5 of a file, the form GCS reports in `md5Hash`."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return base64.b64encode(digest.digest()).decode()


def remote_md5s(client: Any, bucket: str, prefixes: Iterable[str]) -> dict[str, str]:
    """{object name: md5} of every object under the given folder prefixes."""
    found: dict[str, str] = {}
    for prefix in sorted(set(prefixes)):
        for blob in client.list_blobs(bucket, prefix=prefix):
            found[blob.name] = blob.md5_hash or ""
    return found


def sync_files(client: Any, bucket: Any, items: Sequence[UploadItem], concurrency: int,
               desc: str) -> SyncResult:
    """Upload every item whose object is missing or differs (by MD5); skip the rest."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    prefixes = {item.blob.rsplit("/", 1)[0] + "/" for item in items}
    present = remote_md5s(client, bucket.name, prefixes)
    with ThreadPoolExecutor(max(1, concurrency)) as pool:
        hashes = list(pool.map(lambda it: local_md5(it.path), items))
    todo = [it for it, md5 in zip(items, hashes, strict=True) if present.get(it.blob) != md5]
    if not todo:
        return SyncResult(0, len(items))
    _widen_pool(client, concurrency)

    def send(item: UploadItem) -> None:
        blob = bucket.blob(item.blob)
        kind = mimetypes.guess_type(item.path.name)[0] or "application/octet-stream"
        # Re-sending the same bytes is harmless, so retry even without a generation precondition.
        blob.upload_from_filename(str(item.path), content_type=kind, checksum="md5",
                                  retry=DEFAULT_RETRY)

    with ThreadPoolExecutor(max(1, concurrency)) as pool, \
            tqdm(total=len(todo), desc=desc, unit="img") as bar:
        futures = [pool.submit(send, it) for it in todo]
        try:
            for fut in as_completed(futures):
                fut.result()
                bar.update(1)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return SyncResult(len(todo), len(items) - len(todo))


def put_text(bucket: Any, name: str, text: str, content_type: str = "text/csv") -> bool:
    """Write a small text object unless it already holds exactly `text`; True if written."""
    data = text.encode("utf-8")
    md5 = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
    existing = bucket.get_blob(name)
    if existing is not None and existing.md5_hash == md5:
        return False
    bucket.blob(name).upload_from_string(data, content_type=content_type, checksum="md5")
    return True


def _msg(exc: Exception) -> str:
    return " ".join(str(getattr(exc, "message", exc)).split())[:200]
