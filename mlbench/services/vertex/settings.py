"""The `vertex:` block of params.yaml, validated, and where project, region and API come from.

Every value has a default that reproduces the seed benchmark (budget 8,000 milli node hours,
the minimum; confidence threshold 0.1 and at most 5 predictions per call), so an empty
`vertex: {}` block plus a project is a complete configuration. No SDK import here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from mlbench.errors import UserError
from mlbench.params import SettingsBlock
from mlbench.services.base import ServiceSettings

PROJECT_ENV = "GOOGLE_CLOUD_PROJECT"
DEFAULT_REGION = "us-central1"
#: Allowed training budgets per AutoML image model type (milli node hours, inclusive), from the
#: AutoMlImageClassificationInputs reference.
BUDGETS = {"CLOUD": (8000, 800000), "MOBILE_TF_LOW_LATENCY_1": (1000, 100000),
           "MOBILE_TF_VERSATILE_1": (1000, 100000), "MOBILE_TF_HIGH_ACCURACY_1": (1000, 100000)}
_REGION = re.compile(r"[a-z]+(-[a-z0-9]+)+")
_ENDPOINT_NAME = re.compile(r"projects/[^/]+/locations/[^/]+/endpoints/[0-9]+")
_PREFIX = re.compile(r"[A-Za-z0-9_-]{1,40}")
_SECONDS = 30 * 86400
#: AutoML image trainings in flight at once, by default: the documented "concurrent model
#: training requests" quota of AutoML Vision (5 per project), the product Vertex AI AutoML image
#: classification took over; see docs/services/vertex.md.
MAX_CONCURRENT_TRAININGS = 5


def is_endpoint(value: str) -> bool:
    """An endpoint id (digits) or its full resource name."""
    return value.isdigit() or bool(_ENDPOINT_NAME.fullmatch(value))


@dataclass(frozen=True)
class Settings(ServiceSettings):
    """The validated `vertex:` block (see docs/services/vertex.md for each key)."""

    project: str | None = None
    region: str = DEFAULT_REGION
    api_endpoint: str | None = None
    budget_milli_node_hours: int = 8000
    model_type: str = "CLOUD"
    disable_early_stopping: bool = False
    confidence_threshold: float = 0.1
    max_predictions: int = 5
    poll_seconds: float = 30.0
    import_timeout: float = 4 * 3600.0
    train_timeout: float = 72 * 3600.0
    deploy_timeout: float = 3 * 3600.0
    request_timeout: float = 60.0
    upload_concurrency: int = 16
    min_replicas: int = 1
    max_replicas: int = 1
    name_prefix: str = "mlbench"
    #: How many trainings the run keeps in flight at once (read by the scheduler).
    max_concurrent_trainings: int = MAX_CONCURRENT_TRAININGS

    #: Where the model lives and how it is trained; not how it is served or waited on.
    MODEL_FIELDS: ClassVar[tuple[str, ...]] = (
        "project", "region", "api_endpoint", "budget_milli_node_hours", "model_type",
        "disable_early_stopping")

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Settings:
        block = SettingsBlock("vertex", raw, (f.name for f in fields(cls)))
        text, number = block.text, block.number
        region = text("region", cls.region)
        if not _REGION.fullmatch(region):
            raise block.fail("region", "must be a Vertex AI region such as us-central1", region)
        model_type = block.choice("model_type", cls.model_type, BUDGETS)
        lo, hi = BUDGETS[model_type]
        min_replicas = number("min_replicas", cls.min_replicas, 1, 100, integer=True)
        prefix = text("name_prefix", cls.name_prefix)
        if not _PREFIX.fullmatch(prefix):
            raise block.fail("name_prefix", "letters, digits, '-' and '_' only (at most 40)",
                             prefix)

        def seconds(key: str, hi: float = _SECONDS) -> float:
            return number(key, getattr(cls, key), 0, hi, lo_open=True)

        return cls(
            endpoints=block.per_ablation(
                "endpoints", "endpoint id or projects/<p>/locations/<region>/endpoints/<id>",
                is_endpoint),
            project=text("project", None),
            region=region,
            api_endpoint=text("api_endpoint", None),
            budget_milli_node_hours=number("budget_milli_node_hours",
                                           cls.budget_milli_node_hours, lo, hi, integer=True),
            model_type=model_type,
            disable_early_stopping=block.boolean("disable_early_stopping",
                                                 cls.disable_early_stopping),
            confidence_threshold=number("confidence_threshold", cls.confidence_threshold, 0, 1),
            max_predictions=number("max_predictions", cls.max_predictions, 1, 1000,
                                   integer=True),
            poll_seconds=seconds("poll_seconds", 3600),
            import_timeout=seconds("import_timeout"),
            train_timeout=seconds("train_timeout"),
            deploy_timeout=seconds("deploy_timeout"),
            request_timeout=seconds("request_timeout", 3600),
            upload_concurrency=number("upload_concurrency", cls.upload_concurrency, 1, 128,
                                      integer=True),
            min_replicas=min_replicas,
            max_replicas=number("max_replicas", max(cls.max_replicas, min_replicas),
                                min_replicas, 100, integer=True),
            name_prefix=prefix,
            max_concurrent_trainings=number("max_concurrent_trainings",
                                            cls.max_concurrent_trainings, 1, 1000, integer=True),
        )

    # -- derived ---------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        """`https://<region>-aiplatform.googleapis.com`, or `api_endpoint` (a bare host means
        https; `http://127.0.0.1:<port>` reaches a local fake)."""
        if not self.api_endpoint:
            return f"https://{self.region}-aiplatform.googleapis.com"
        url = self.api_endpoint.rstrip("/")
        return url if "://" in url else f"https://{url}"

    def resolve_project(self) -> str:
        """`vertex.project`, else GOOGLE_CLOUD_PROJECT; UserError naming both when neither."""
        project = self.project or os.environ.get(PROJECT_ENV, "").strip()
        if not project:
            raise UserError(f"Vertex AI needs a Google Cloud project: set vertex.project in "
                            f"params.yaml or the {PROJECT_ENV} environment variable")
        return project

    def endpoint_name(self, value: str, project: str) -> str:
        """A hand-given endpoint (an id or a full name) as its full resource name."""
        return f"projects/{project}/locations/{self.region}/endpoints/{value}" \
            if value.isdigit() else value
