"""The `rekognition:` block of params.yaml. No AWS SDK here: validating params needs none.

Credentials, region and endpoints come from boto3's standard chain (`AWS_PROFILE`,
`AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL_S3`, ...) unless this block sets them; the bucket is
`buckets.aws`. A model made by hand is given as
`rekognition.endpoints.<dataset>.<ablation>: <project version ARN>`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from mlbench.params import SettingsBlock
from mlbench.services.base import ServiceSettings

#: `arn:aws:rekognition:<region>:<account>:project/<project>/version/<version>/<n>`; the
#: groups are region, account, project name and version name.
VERSION_ARN_RE = re.compile(
    r"^arn:[a-z\d-]+:rekognition:([a-z\d-]+):(\d{12}):project/([a-zA-Z0-9_.\-]{1,255})"
    r"/version/([a-zA-Z0-9_.\-]{1,255})/[0-9]+$")
#: Trainings in flight at once, by default. AWS counts them in the Service Quotas quota
#: "Concurrent Custom Labels training jobs" (L-F1558568, per account and region, adjustable);
#: 2 matches the smallest limit the Custom Labels guide has documented for the account (running
#: models); read yours with `aws service-quotas get-service-quota --service-code rekognition
#: --quota-code L-F1558568` and set `rekognition.max_concurrent_trainings`.
MAX_CONCURRENT_TRAININGS = 2


@dataclass(frozen=True)
class Settings(ServiceSettings):
    """See docs/services/rekognition.md for each key."""

    region: str | None = None
    endpoint_url: str | None = None
    s3_endpoint_url: str | None = None
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
    #: How many trainings the run keeps in flight at once (read by the scheduler).
    max_concurrent_trainings: int = MAX_CONCURRENT_TRAININGS

    #: Where the model lives and what its project is called: another value trains anew
    #: (serving, waiting and retry settings do not).
    MODEL_FIELDS: ClassVar[tuple[str, ...]] = ("region", "endpoint_url", "s3_endpoint_url",
                                               "project_prefix")

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Settings:
        block = SettingsBlock("rekognition", raw, cls.keys())
        prefix = block.text("project_prefix", cls.project_prefix)
        if not re.fullmatch(r"[a-zA-Z0-9_.\-]+", prefix):
            raise block.fail("project_prefix", "may hold only letters, digits, '_', '.', '-'",
                             prefix)
        min_units = block.number("min_inference_units", cls.min_inference_units, 1, integer=True)
        max_units = (block.number("max_inference_units", None, min_units, integer=True)
                     if raw.get("max_inference_units") is not None else None)
        return cls(
            endpoints=block.per_ablation("endpoints", "project version ARN",
                                         lambda arn: bool(VERSION_ARN_RE.match(arn))),
            region=block.text("region", None),
            endpoint_url=block.text("endpoint_url", None),
            s3_endpoint_url=block.text("s3_endpoint_url", None),
            project_prefix=prefix,
            min_inference_units=min_units,
            max_inference_units=max_units,
            min_confidence=block.number("min_confidence", cls.min_confidence, 0, 100),
            poll_seconds=block.number("poll_seconds", cls.poll_seconds, 0, lo_open=True),
            train_timeout_seconds=block.number("train_timeout_seconds",
                                               cls.train_timeout_seconds, 0, lo_open=True),
            start_timeout_seconds=block.number("start_timeout_seconds",
                                               cls.start_timeout_seconds, 0, lo_open=True),
            upload_workers=block.number("upload_workers", cls.upload_workers, 1, integer=True),
            max_attempts=block.number("max_attempts", cls.max_attempts, 1, integer=True),
            backoff_seconds=block.number("backoff_seconds", cls.backoff_seconds, 0),
            max_concurrent_trainings=block.number("max_concurrent_trainings",
                                                  cls.max_concurrent_trainings, 1, 1000,
                                                  integer=True),
        )
