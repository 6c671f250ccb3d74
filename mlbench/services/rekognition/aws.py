"""AWS plumbing of the Rekognition adapter: settings, boto3 clients, preflight checks, polling.

Credentials come only from boto3's standard chain (env vars, shared files, SSO, instance roles);
nothing here reads or stores a secret. Endpoints follow boto3's own rules (`AWS_ENDPOINT_URL`,
`AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL_REKOGNITION`) unless `params.yaml` sets
`rekognition.endpoint_url` / `rekognition.s3_endpoint_url`, which win: that is how the tests
point S3 at moto and Rekognition at the local fake.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlbench.console import err
from mlbench.errors import UserError
from mlbench.params import Params, SettingsBlock

BUCKET_ENV = "AWS_STORAGE_BUCKET_NAME"
VERSION_ARN_RE = re.compile(
    r"^arn:[a-z\d-]+:rekognition:([a-z\d-]+):(\d{12}):project/([a-zA-Z0-9_.\-]{1,255})"
    r"/version/([a-zA-Z0-9_.\-]{1,255})/[0-9]+$"
)
#: Error codes worth another attempt (throttling, transient server trouble).
RETRY_CODES = frozenset({
    "ThrottlingException", "ProvisionedThroughputExceededException", "LimitExceededException",
    "InternalServerError", "ServiceUnavailable", "ServiceUnavailableException",
    "RequestTimeout", "RequestTimeoutException",
})


@dataclass(frozen=True)
class RekognitionSettings:
    """The `rekognition:` block of params.yaml, validated (unknown keys are typos: rejected)."""

    region: str | None = None
    endpoint_url: str | None = None
    s3_endpoint_url: str | None = None
    s3_prefix: str = "mlbench"
    project_prefix: str = "mlbench"
    min_inference_units: int = 1
    max_inference_units: int | None = None
    min_confidence: float = 0.0
    poll_seconds: float = 60.0
    train_timeout_seconds: float = 24 * 3600.0
    start_timeout_seconds: float = 3600.0
    upload_workers: int = 16
    max_attempts: int = 6
    backoff_seconds: float = 0.5
    models: dict[str, dict[int, str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: dict[str, Any]) -> RekognitionSettings:
        block = SettingsBlock("rekognition", raw, cls.__dataclass_fields__)
        values: dict[str, Any] = {}
        for key in ("region", "endpoint_url", "s3_endpoint_url"):
            if raw.get(key) is not None:
                values[key] = block.text(key, None)
        for key in ("s3_prefix", "project_prefix"):
            if key in raw:
                values[key] = block.text(key, "", allow_empty=key == "s3_prefix")
        if not re.fullmatch(r"[a-zA-Z0-9_.\-]+", values.get("project_prefix", "mlbench")):
            raise block.fail("project_prefix", "may hold only letters, digits, '_', '.', '-'",
                             raw.get("project_prefix"))
        for key in ("min_inference_units", "upload_workers", "max_attempts"):
            if key in raw:
                values[key] = block.number(key, None, 1, integer=True)
        if raw.get("max_inference_units") is not None:
            values["max_inference_units"] = block.number("max_inference_units", None, 1,
                                                         integer=True)
        for key in ("poll_seconds", "train_timeout_seconds", "start_timeout_seconds",
                    "backoff_seconds"):
            if key in raw:
                values[key] = block.number(key, None, 0, lo_open=key != "backoff_seconds")
        if "min_confidence" in raw:
            values["min_confidence"] = block.number("min_confidence", None, 0, 100)
        if raw.get("models") is not None:
            values["models"] = _models(raw["models"])
        return cls(**values)

    def model_arn(self, dataset: str, size: int) -> str | None:
        """The ARN given by hand for (dataset, size) in `rekognition.models`, if any."""
        return self.models.get(dataset, {}).get(size)


def _bad(key: str, allowed: str, value: Any) -> UserError:
    return UserError(f"params.yaml: rekognition.{key}: {allowed}, got {value!r}")


def _models(raw: Any) -> dict[str, dict[int, str]]:
    if not isinstance(raw, dict):
        raise _bad("models", "must map dataset -> {ablation: project version ARN}", raw)
    out: dict[str, dict[int, str]] = {}
    for ds, sizes in raw.items():
        if not isinstance(sizes, dict):
            raise _bad(f"models.{ds}", "must map ablation sizes to project version ARNs", sizes)
        for size, arn in sizes.items():
            key = f"models.{ds}.{size}"
            if isinstance(size, str) and size.isdigit():
                size = int(size)
            if isinstance(size, bool) or not isinstance(size, int):
                raise _bad(key, "the ablation must be an integer", size)
            if not isinstance(arn, str) or not VERSION_ARN_RE.match(arn):
                raise _bad(key, "must be a project version ARN "
                           "(arn:aws:rekognition:<region>:<account>:project/<p>/version/<v>/<n>)",
                           arn)
            out.setdefault(str(ds), {})[size] = arn
    return out


def settings_from(params: Params) -> RekognitionSettings:
    return RekognitionSettings.parse(params.section("rekognition"))


def resolve_bucket(params: Params) -> str:
    """The bucket: env `AWS_STORAGE_BUCKET_NAME` (the seed's variable) or `buckets.aws`."""
    bucket = os.environ.get(BUCKET_ENV) or params.buckets.get("aws") or ""
    if not bucket.strip():
        raise UserError(f"no S3 bucket for Rekognition; set {BUCKET_ENV} or buckets.aws in "
                        "params.yaml")
    bucket = bucket.strip()
    if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", bucket):
        raise UserError(f"S3 bucket name {bucket!r} is not valid; fix {BUCKET_ENV} or buckets.aws")
    return bucket


class Aws:
    """A boto3 session checked for credentials and region, and the clients the adapter uses."""

    def __init__(self, settings: RekognitionSettings, pool_size: int = 10):
        import boto3
        from botocore.config import Config

        self.settings = settings
        self.session = boto3.session.Session(region_name=settings.region)
        if self.session.get_credentials() is None:
            raise UserError("no AWS credentials found; set AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)")
        if not self.session.region_name:
            raise UserError("no AWS region set; set AWS_DEFAULT_REGION (or rekognition.region "
                            "in params.yaml) to a region with Rekognition Custom Labels")
        self.region: str = self.session.region_name
        control = Config(retries={"mode": "standard", "max_attempts": 8},
                         max_pool_connections=pool_size)
        self.s3 = self.session.client("s3", endpoint_url=settings.s3_endpoint_url, config=control)
        self.rek = self.session.client("rekognition", endpoint_url=settings.endpoint_url,
                                       config=control)
        # The data plane retries in our own loop (attempts are counted and reported).
        data = Config(retries={"mode": "standard", "total_max_attempts": 1},
                      max_pool_connections=pool_size, connect_timeout=10, read_timeout=30)
        self.detect = self.session.client("rekognition", endpoint_url=settings.endpoint_url,
                                          config=data)

    def check_bucket(self, bucket: str) -> None:
        """Fail early, with what to do, when the bucket is missing, foreign or in another region."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = self.s3.head_bucket(Bucket=bucket)
        except ClientError as exc:
            code = error_code(exc)
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise UserError(f"S3 bucket {bucket!r} does not exist; create it in {self.region} "
                                f"or set {BUCKET_ENV} / buckets.aws to yours") from None
            if code in ("403", "AccessDenied", "Forbidden"):
                raise UserError(f"access to S3 bucket {bucket!r} denied; check the AWS "
                                "credentials (AWS_ACCESS_KEY_ID / AWS_PROFILE) and the bucket "
                                "policy") from None
            raise
        except BotoCoreError as exc:
            raise UserError(f"cannot reach S3 ({exc}); check AWS_ENDPOINT_URL / "
                            "rekognition.s3_endpoint_url and the network") from None
        where = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("x-amz-bucket-region")
        if where and where != self.region:
            raise UserError(f"S3 bucket {bucket!r} is in {where} but Rekognition runs in "
                            f"{self.region}; set AWS_DEFAULT_REGION={where} or use a bucket in "
                            f"{self.region}")


def error_code(exc: Exception) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def error_message(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Message", "")) or str(exc)


def http_status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None) or {}
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def is_retryable(exc: Exception) -> bool:
    """Throttling, 5xx and connection trouble: worth another attempt after a pause."""
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError

    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return True
    status = http_status(exc)
    return error_code(exc) in RETRY_CODES or (status is not None and status >= 500)


def poll(
    describe: Callable[[], dict[str, Any]],
    done: Callable[[dict[str, Any]], bool],
    what: str,
    interval: float,
    timeout: float,
    on_timeout: str,
) -> dict[str, Any]:
    """Call `describe` every `interval` s until `done(answer)`; one line per status change.

    boto3's waiters have fixed delays (120 s for training) and no progress output; this loop is
    configurable (`rekognition.poll_seconds`) and says how long it has waited.
    """
    start = time.monotonic()
    last_status = None
    last_note = start
    while True:
        answer = describe()
        if done(answer):
            return answer
        now = time.monotonic()
        status = answer.get("Status")
        if status != last_status or now - last_note >= 300:
            err.print(f"rekognition: {what}: {status} ({_minutes(now - start)})")
            last_status, last_note = status, now
        if now - start >= timeout:
            raise UserError(f"rekognition: {what} still {status} after {_minutes(now - start)}; "
                            f"{on_timeout}")
        time.sleep(interval)


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
