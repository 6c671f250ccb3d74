"""Cloud Storage side of the Vertex flow: the bucket, the image uploads, the import file.

Uploads are idempotent and resumable without any local record: the bucket's own listing (name
and MD5 of every object under the target folders) says what is already there, so a rerun after
a crash sends only the missing or changed files, and a second run sends nothing. Every call goes
through the one retry policy (`api.guarded`; re-sending the same bytes is harmless).
`STORAGE_EMULATOR_HOST` (e.g. the gcp-storage-emulator) is honoured by google-cloud-storage
itself; against it no credentials are used.
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import storage

from mlbench.console import err, progress
from mlbench.errors import UserError
from mlbench.retry import RetryPolicy
from mlbench.services.vertex.api import guarded, one_line

EMULATOR_ENV = "STORAGE_EMULATOR_HOST"


class Bucket:
    """One bucket, created in the Vertex region when missing (Vertex reads it from there)."""

    def __init__(self, name: str, project: str, credentials: Any, location: str,
                 retry: RetryPolicy):
        self.retry = retry
        emulated = bool(os.environ.get(EMULATOR_ENV))
        self.client = storage.Client(project=project,
                                     credentials=None if emulated else credentials)
        self.bucket = self._call(f"GCS bucket {name}", lambda: self._ensure(name, location))

    def _call(self, what: str, fn: Any) -> Any:
        return guarded(self.retry, what, fn)

    def _ensure(self, name: str, location: str) -> Any:
        try:
            return self.client.get_bucket(name, retry=None)
        except gexc.NotFound:
            pass
        try:
            bucket = self.client.create_bucket(name, location=location, retry=None)
        except gexc.Conflict:  # made by an attempt whose answer was lost, or someone else's
            try:
                return self.client.get_bucket(name, retry=None)
            except gexc.Forbidden:
                raise UserError(f"GCS bucket name {name!r} is taken by another project; set "
                                "buckets.google in params.yaml to a unique name") from None
        except gexc.BadRequest as exc:
            raise UserError(f"GCS bucket {name!r} could not be created ({one_line(exc)}); "
                            f"create it in {location} or set buckets.google in params.yaml"
                            ) from None
        err.print(f"vertex: created bucket gs://{name} in {location}")
        return bucket

    def md5s(self, prefixes: set[str]) -> dict[str, str]:
        """{object name: base64 MD5} of every object under the given folder prefixes."""
        def listing() -> dict[str, str]:
            return {blob.name: blob.md5_hash or "" for prefix in sorted(prefixes)
                    for blob in self.client.list_blobs(self.bucket, prefix=prefix, retry=None)}

        return self._call(f"list gs://{self.bucket.name}", listing)

    def sync(self, items: Sequence[tuple[Path, str]], concurrency: int, desc: str
             ) -> tuple[int, int]:
        """Upload every (file, object name) whose object is missing or differs (by MD5);
        (sent, skipped)."""
        present = self.md5s({name.rsplit("/", 1)[0] + "/" for _, name in items})
        with ThreadPoolExecutor(max(1, concurrency)) as pool:
            hashes = list(pool.map(lambda item: md5_of(item[0].read_bytes()), items))
        todo = [it for it, md5 in zip(items, hashes, strict=True) if present.get(it[1]) != md5]
        if todo:
            self._widen_pool(concurrency)
            with ThreadPoolExecutor(max(1, concurrency)) as pool, \
                    progress(total=len(todo), desc=desc, unit="img") as bar:
                futures = [pool.submit(self.put_file, path, name) for path, name in todo]
                try:
                    for fut in as_completed(futures):
                        fut.result()
                        bar.update(1)
                except BaseException:
                    for fut in futures:
                        fut.cancel()
                    raise
        return len(todo), len(items) - len(todo)

    def put_file(self, path: Path, name: str) -> None:
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        blob = self.bucket.blob(name)
        self._call(f"upload gs://{self.bucket.name}/{name}", lambda: blob.upload_from_filename(
            str(path), content_type=kind, checksum="md5", retry=None))

    def put_text(self, name: str, text: str) -> str:
        """Write a small text object unless it already holds exactly `text`; its gs:// URI."""
        data = text.encode("utf-8")
        existing = self._call(f"get gs://{self.bucket.name}/{name}",
                              lambda: self.bucket.get_blob(name, retry=None))
        if existing is None or existing.md5_hash != md5_of(data):
            blob = self.bucket.blob(name)
            self._call(f"upload gs://{self.bucket.name}/{name}", lambda: blob.upload_from_string(
                data, content_type="text/csv", checksum="md5", retry=None))
        return f"gs://{self.bucket.name}/{name}"

    def _widen_pool(self, size: int) -> None:
        """Let `size` uploads share the client's HTTP session without queueing on its pool."""
        from requests.adapters import HTTPAdapter

        session = getattr(self.client, "_http", None)
        if session is not None and hasattr(session, "mount"):
            adapter = HTTPAdapter(pool_connections=size, pool_maxsize=size)
            session.mount("https://", adapter)
            session.mount("http://", adapter)


def md5_of(data: bytes) -> str:
    """Base64 MD5, the form GCS reports in `md5Hash`."""
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
