"""S3 side of the Rekognition adapter: upload an ablation and write its Ground Truth manifests.

Layout in the bucket (one prefix per dataset and ablation, so ablations never mix and a user can
still point the console's "label from folder names" at a `train/` folder, as the seed did):

    <s3_prefix>/<dataset>/<n>/train/<class folder>/<filename>
    <s3_prefix>/<dataset>/<n>/val/<class folder>/<filename>
    <s3_prefix>/<dataset>/<n>/manifests/train.manifest   (Ground Truth, TRAIN dataset)
    <s3_prefix>/<dataset>/<n>/manifests/val.manifest     (Ground Truth, TEST dataset)

Labels come from the manifests, never from folder names (the API has no folder labelling), so the
class folder is only a readable, key-safe form of the class name. Uploads are concurrent, skip a
key already present with the same size and MD5 ETag (what a single-part PUT returns), and are
resumable: a rerun lists the prefix once and sends only what is missing or changed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import unicodedata
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mlbench.errors import UserError
from mlbench.services.base import AblationSplit

#: Ground Truth label attribute of our manifests (any name not ending in -ref/-metadata works).
LABEL_ATTRIBUTE = "mlbench-class"
SPLITS = ("train", "val")
_CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}


@dataclass(frozen=True)
class UploadItem:
    """One image of the ablation and the S3 key it goes to."""

    key: str
    path: Path
    class_name: str
    split: str  # "train" | "val"


@dataclass
class UploadReport:
    """What one `upload_items` call did: sent, skipped (already there), and total."""

    uploaded: int = 0
    skipped: int = 0
    bytes_sent: int = 0

    @property
    def total(self) -> int:
        return self.uploaded + self.skipped


def ablation_prefix(base: str, dataset: str, size: int) -> str:
    """`<base>/<dataset>/<size>` (no trailing slash; `base` may be empty)."""
    parts = [p for p in (base.strip("/"), dataset, str(size)) if p]
    return "/".join(parts)


def class_folder(name: str) -> str:
    """A key-safe folder for a class name (`Ram C/V Cargo Van` -> `Ram_C_V_Cargo_Van`).

    Not necessarily injective: labels come from the manifest, and file names are unique across
    the dataset, so two classes folding to the same folder cannot collide on a key.
    """
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9._-]+", "_", folded).strip("._") or "class"


def manifest_key(prefix: str, split: str) -> str:
    return f"{prefix}/manifests/{split}.manifest"


def plan(split: AblationSplit, prefix: str) -> list[UploadItem]:
    """Every image of the ablation with its key, train first, in a stable order."""
    items = []
    for name, refs in (("train", split.train), ("val", split.val)):
        for ref in refs:
            key = f"{prefix}/{name}/{class_folder(ref.class_name)}/{ref.filename}"
            items.append(UploadItem(key, Path(ref.path), ref.class_name, name))
    keys = [i.key for i in items]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise UserError(f"{split.dataset}: two images map to the S3 key {dup!r}; "
                        "file names must be unique across the dataset (rerun `mlbench prepare`)")
    return items


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def list_existing(s3: Any, bucket: str, prefix: str) -> dict[str, tuple[int, str]]:
    """key -> (size, ETag without quotes) for every object under `prefix/` (one LIST per 1000)."""
    found: dict[str, tuple[int, str]] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for obj in page.get("Contents", []):
            found[obj["Key"]] = (int(obj["Size"]), str(obj.get("ETag", "")).strip('"'))
    return found


def is_current(existing: tuple[int, str] | None, size: int, md5: str) -> bool:
    """Whether an object already holds these bytes.

    A single-part upload's ETag is the MD5 of the content; a multipart ETag (`<md5>-<parts>`,
    e.g. from the console or the CLI for big files) is not, so for those the size must do.
    """
    if existing is None or existing[0] != size:
        return False
    etag = existing[1]
    return etag == md5 or "-" in etag


def put_bytes(s3: Any, bucket: str, key: str, data: bytes, content_type: str) -> None:
    """PUT with Content-MD5, so S3 rejects a body corrupted on the way."""
    digest = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
    s3.put_object(Bucket=bucket, Key=key, Body=data, ContentMD5=digest, ContentType=content_type)


def upload_items(
    s3: Any,
    bucket: str,
    items: Sequence[UploadItem],
    existing: dict[str, tuple[int, str]],
    workers: int = 16,
    desc: str = "upload",
) -> UploadReport:
    """Send the items not already in `existing`, `workers` at a time, with a progress bar.

    Every item is attempted even if some fail; failures are reported together at the end as one
    `UserError` (a rerun resumes with just those).
    """
    report = UploadReport()
    lock = threading.Lock()
    errors: list[str] = []

    def one(item: UploadItem) -> bool:
        data = item.path.read_bytes()
        if is_current(existing.get(item.key), len(data), md5_hex(data)):
            return False
        ctype = _CONTENT_TYPES.get(item.path.suffix.lower(), "application/octet-stream")
        put_bytes(s3, bucket, item.key, data, ctype)
        with lock:
            report.bytes_sent += len(data)
        return True

    with tqdm(total=len(items), desc=desc, unit="img", mininterval=0.5) as bar, \
            ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = {pool.submit(one, item): item for item in items}
        for fut in as_completed(futures):
            try:
                sent = fut.result()
            except Exception as exc:  # noqa: BLE001 - collected and reported below
                errors.append(f"{futures[fut].key}: {type(exc).__name__}: {exc}")
                sent = None
            if sent is True:
                report.uploaded += 1
            elif sent is False:
                report.skipped += 1
            bar.update(1)
            bar.set_postfix(sent=report.uploaded, skipped=report.skipped, refresh=False)
    if errors:
        raise UserError(f"{len(errors)} of {len(items)} uploads to s3://{bucket} failed "
                        f"(first: {errors[0]}); rerun to upload the rest")
    return report


def manifest_line(item: UploadItem, bucket: str, classes: Sequence[str], created: str) -> str:
    """One Ground Truth image-classification JSON line (the format Rekognition imports)."""
    return json.dumps({
        "source-ref": f"s3://{bucket}/{item.key}",
        LABEL_ATTRIBUTE: classes.index(item.class_name),
        f"{LABEL_ATTRIBUTE}-metadata": {
            "confidence": 1,
            "job-name": f"labeling-job/{LABEL_ATTRIBUTE}",
            "class-name": item.class_name,
            "human-annotated": "yes",
            "creation-date": created,
            "type": "groundtruth/image-classification",
        },
    }, ensure_ascii=False)


def build_manifests(
    items: Sequence[UploadItem], bucket: str, classes: Sequence[str], created: str
) -> dict[str, bytes]:
    """split -> manifest bytes (JSON lines, one per image, newline-terminated)."""
    missing = sorted({i.class_name for i in items} - set(classes))
    if missing:
        raise UserError(f"class {missing[0]!r} is not in classes.txt; rerun `mlbench prepare`")
    return {
        split: "".join(manifest_line(i, bucket, classes, created) + "\n"
                       for i in items if i.split == split).encode("utf-8")
        for split in SPLITS
    }


def put_manifests(
    s3: Any,
    bucket: str,
    prefix: str,
    manifests: dict[str, bytes],
    existing: dict[str, tuple[int, str]],
) -> dict[str, str]:
    """Write the manifests that changed; return split -> S3 key."""
    keys = {}
    for split, data in manifests.items():
        key = manifest_key(prefix, split)
        if not is_current(existing.get(key), len(data), md5_hex(data)):
            put_bytes(s3, bucket, key, data, "application/x-ndjson")
        keys[split] = key
    return keys


def content_digest(items: Sequence[UploadItem]) -> str:
    """Short hash of what the ablation holds (split, class, file) — names the Rekognition project.

    Changes when the ablation changes (another seed, new data), so a different training set never
    reuses a project whose datasets were built from the old one.
    """
    h = hashlib.sha256()
    for item in sorted(items, key=lambda i: i.key):
        h.update(f"{item.split}\0{item.class_name}\0{item.key}\n".encode())
    return h.hexdigest()[:8]
