"""The `vertex:` block of params.yaml, validated, and where project, region and API come from.

Every value has a default that reproduces the seed benchmark (budget 8,000 milli node hours,
the minimum; confidence threshold 0.1 and at most 5 predictions per call), so an empty
`vertex: {}` block plus a project is a complete configuration. A bad value raises `UserError`
naming its key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from mlbench.errors import UserError
from mlbench.params import SettingsBlock

PROJECT_ENV = "GOOGLE_CLOUD_PROJECT"
DEFAULT_REGION = "us-central1"
#: Allowed training budgets per AutoML image model type (milli node hours, inclusive), from the
#: AutoMlImageClassificationInputs reference.
BUDGETS = {"CLOUD": (8000, 800000), "MOBILE_TF_LOW_LATENCY_1": (1000, 100000),
           "MOBILE_TF_VERSATILE_1": (1000, 100000), "MOBILE_TF_HIGH_ACCURACY_1": (1000, 100000)}
_REGION = re.compile(r"[a-z]+(-[a-z0-9]+)+")
_ENDPOINT_NAME = re.compile(r"projects/[^/]+/locations/[^/]+/endpoints/[0-9]+")


@dataclass(frozen=True)
class VertexSettings:
    """The validated `vertex:` block (see docs/services/vertex.md for each key)."""

    project: str | None = None
    region: str = DEFAULT_REGION
    api_endpoint: str | None = None
    budget_milli_node_hours: int = 8000
    model_type: str = "CLOUD"
    disable_early_stopping: bool = False
    confidence_threshold: float = 0.1
    max_predictions: int = 5
    endpoints: Mapping[str, Any] = field(default_factory=dict)
    poll_seconds: float = 30.0
    import_timeout: float = 4 * 3600.0
    train_timeout: float = 72 * 3600.0
    deploy_timeout: float = 3 * 3600.0
    request_timeout: float = 60.0
    upload_concurrency: int = 16
    min_replicas: int = 1
    max_replicas: int = 1
    name_prefix: str = "mlbench"

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> VertexSettings:
        block = SettingsBlock("vertex", raw, (f.name for f in fields(cls)))
        d = cls()
        text, number = block.text, block.number

        region = text("region", d.region) or DEFAULT_REGION
        if not _REGION.fullmatch(region):
            raise UserError(f"params.yaml: vertex.region: must be a Vertex AI region such as "
                            f"us-central1, got {region!r}")
        model_type = text("model_type", d.model_type) or "CLOUD"
        if model_type not in BUDGETS:
            raise UserError(f"params.yaml: vertex.model_type: must be one of "
                            f"{', '.join(BUDGETS)}, got {model_type!r}")
        lo, hi = BUDGETS[model_type]
        budget = number("budget_milli_node_hours", d.budget_milli_node_hours, lo, hi,
                        integer=True)
        early = block.boolean("disable_early_stopping", d.disable_early_stopping)
        endpoints = block.mapping("endpoints", "dataset -> ablation -> endpoint id")
        min_replicas = number("min_replicas", d.min_replicas, 1, 100, integer=True)
        max_replicas = number("max_replicas", max(d.max_replicas, min_replicas), min_replicas,
                              100, integer=True)
        prefix = text("name_prefix", d.name_prefix) or d.name_prefix
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", prefix):
            raise UserError("params.yaml: vertex.name_prefix: letters, digits, '-' and '_' "
                            f"only (at most 40), got {prefix!r}")
        return cls(
            project=text("project", None),
            region=region,
            api_endpoint=text("api_endpoint", None),
            budget_milli_node_hours=budget,
            model_type=model_type,
            disable_early_stopping=early,
            confidence_threshold=number("confidence_threshold", d.confidence_threshold, 0, 1),
            max_predictions=number("max_predictions", d.max_predictions, 1, 1000, integer=True),
            endpoints=endpoints,
            poll_seconds=number("poll_seconds", d.poll_seconds, 0, 3600, lo_open=True),
            import_timeout=number("import_timeout", d.import_timeout, 0, 30 * 86400,
                                  lo_open=True),
            train_timeout=number("train_timeout", d.train_timeout, 0, 30 * 86400, lo_open=True),
            deploy_timeout=number("deploy_timeout", d.deploy_timeout, 0, 30 * 86400,
                                  lo_open=True),
            request_timeout=number("request_timeout", d.request_timeout, 0, 3600, lo_open=True),
            upload_concurrency=number("upload_concurrency", d.upload_concurrency, 1, 128,
                                      integer=True),
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            name_prefix=prefix,
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

    def endpoint_for(self, ds: str, n: int, project: str) -> str | None:
        """`vertex.endpoints.<ds>.<n>` as a full resource name (an id or a full name)."""
        per_ds = self.endpoints.get(ds)
        if per_ds is None:
            return None
        key = f"vertex.endpoints.{ds}"
        if not isinstance(per_ds, Mapping):
            raise UserError(f"params.yaml: {key}: must map ablation sizes to endpoint ids, "
                            f"got {per_ds!r}")
        value = per_ds.get(n, per_ds.get(str(n)))
        if value is None:
            return None
        value = str(value).strip()
        if value.isdigit():
            return f"projects/{project}/locations/{self.region}/endpoints/{value}"
        if _ENDPOINT_NAME.fullmatch(value):
            return value
        raise UserError(f"params.yaml: {key}.{n}: must be an endpoint id (digits) or "
                        f"projects/<p>/locations/<region>/endpoints/<id>, got {value!r}")
