"""S3 side of the Rekognition service: put an ablation's files, sending only what changed.

The keys and the manifests come from `export` (the one owner of the layout). A rerun lists the
ablation's prefix once and skips every object already there with the same size and MD5 ETag
(what a single-part PUT returns), so it sends nothing, and a changed image is sent again.
Uploads run `rekognition.upload_workers` at a time with a progress bar; each PUT carries its
Content-MD5, so S3 refuses a body corrupted on the way.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from mlbench.console import progress
from mlbench.core import AblationSplit
from mlbench.errors import ServiceError, UserError
from mlbench.services.rekognition import export
from mlbench.services.rekognition.api import Api, AwsCallError

_CONTENT_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png"}
#: key -> (size, ETag without quotes) of the objects already in the bucket.
Listing = dict[str, tuple[int, str]]


@dataclass
class UploadReport:
    """What one upload did: objects sent, and objects skipped because already there."""

    uploaded: int = 0
    skipped: int = 0


def put_ablation(api: Api, bucket: str, split: AblationSplit, workers: int) -> UploadReport:
    """The ablation's images, then its two manifests, at the keys `export` names."""
    check_bucket(api, bucket)
    ds, n = split.dataset, split.size
    parts = {"train": split.train, "val": split.val}
    files = [(export.object_key(ds, n, part, ref), ref.path)
             for part, refs in parts.items() for ref in refs]
    keys = [key for key, _ in files]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise UserError(f"{ds}: two images map to the S3 key {dup!r}; file names must be "
                        "unique across the dataset (rerun `mlbench prepare`)")
    existing = list_existing(api, bucket, export.prefix(ds, n))
    report = upload_files(api, bucket, files, existing, workers)
    for part, refs in parts.items():  # after the images: a manifest names only what is there
        data = export.manifest(ds, n, part, refs, bucket, split.classes)
        put_if_changed(api, bucket, export.manifest_key(ds, n, part), data, existing,
                       "application/x-ndjson")
    return report


def check_bucket(api: Api, bucket: str) -> None:
    """Fail early, with what to do, when the bucket is missing, foreign or in another region;
    any other answer to HeadBucket is one line naming the bucket too."""
    try:
        answer = api.s3("head_bucket", Bucket=bucket)
    except AwsCallError as exc:
        if exc.code in ("404", "NoSuchBucket", "NotFound"):
            raise UserError(f"S3 bucket {bucket!r} does not exist; create it in {api.region} "
                            "or set buckets.aws in params.yaml to yours") from None
        if exc.code in ("403", "AccessDenied", "Forbidden"):
            raise UserError(f"access to S3 bucket {bucket!r} denied; check the AWS credentials "
                            "(AWS_ACCESS_KEY_ID / AWS_PROFILE) and the bucket policy") from None
        if exc.code in ("301", "PermanentRedirect", "307", "TemporaryRedirect"):
            raise UserError(f"S3 bucket {bucket!r} is not in {api.region} (HeadBucket answered "
                            f"{exc.code}); set AWS_DEFAULT_REGION to the bucket's region or use "
                            f"a bucket in {api.region}") from None
        raise ServiceError(f"S3 bucket {bucket!r}: {exc}; check buckets.aws in params.yaml and "
                           "rekognition.s3_endpoint_url, then rerun") from None
    where = answer.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")
    if where and where != api.region:
        raise UserError(f"S3 bucket {bucket!r} is in {where} but Rekognition runs in "
                        f"{api.region}; set AWS_DEFAULT_REGION={where} or use a bucket in "
                        f"{api.region}")


def list_existing(api: Api, bucket: str, prefix: str) -> Listing:
    """Every object under `prefix/` (one LIST call per 1,000 objects)."""
    found: Listing = {}
    token: dict[str, str] = {}
    while True:
        page = api.s3("list_objects_v2", Bucket=bucket, Prefix=prefix + "/", **token)
        for obj in page.get("Contents") or []:
            if not obj.get("Key") or not isinstance(obj.get("Size"), int):
                continue  # not a usable listing entry: its file is simply sent again
            found[obj["Key"]] = (obj["Size"], str(obj.get("ETag", "")).strip('"'))
        if not page.get("IsTruncated"):
            return found
        if not page.get("NextContinuationToken"):
            raise ServiceError(f"s3://{bucket}/{prefix}/: ListObjectsV2 said the listing goes "
                               "on but gave no continuation token; check "
                               "rekognition.s3_endpoint_url (an S3-compatible store?) and rerun")
        token = {"ContinuationToken": page["NextContinuationToken"]}


def is_current(existing: tuple[int, str] | None, data: bytes) -> bool:
    """Whether an object already holds these bytes.

    A single-part upload's ETag is the MD5 of the content; a multipart ETag (`<md5>-<parts>`,
    e.g. from the console or the CLI for big files) is not, so for those the size must do.
    """
    if existing is None or existing[0] != len(data):
        return False
    etag = existing[1]
    return etag == hashlib.md5(data, usedforsecurity=False).hexdigest() or "-" in etag


def put_if_changed(api: Api, bucket: str, key: str, data: bytes, existing: Listing,
                   content_type: str) -> bool:
    """PUT `data` at `key` unless it is already there; whether it was sent."""
    if is_current(existing.get(key), data):
        return False
    digest = base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()
    api.s3("put_object", Bucket=bucket, Key=key, Body=data, ContentMD5=digest,
           ContentType=content_type)
    return True


def upload_files(api: Api, bucket: str, files: Sequence[tuple[str, Path]], existing: Listing,
                 workers: int) -> UploadReport:
    """Send the (key, file) pairs not already in `existing`, `workers` at a time.

    Every file is attempted even if some fail; the failures are reported together at the end
    (a rerun sends just those).
    """
    report, failed = UploadReport(), []

    def one(key: str, path: Path) -> bool:
        ctype = _CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream")
        return put_if_changed(api, bucket, key, path.read_bytes(), existing, ctype)

    with progress(total=len(files), desc=f"s3://{bucket}", unit="img", mininterval=0.5) as bar, \
            ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(one, key, path): key for key, path in files}
        for future in as_completed(futures):
            try:
                sent = future.result()
            except (ServiceError, UserError) as exc:
                failed.append((futures[future], exc))
            else:
                report.uploaded += sent
                report.skipped += not sent
            bar.update(1)
    if failed:
        refused = next((exc for _, exc in failed if isinstance(exc, UserError)), None)
        if refused is not None:
            raise refused
        key, exc = failed[0]
        raise ServiceError(f"{len(failed)} of {len(files)} uploads to s3://{bucket} failed "
                           f"(first: {key}: {exc}); rerun to upload the rest")
    return report
