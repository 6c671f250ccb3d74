"""The `huggingface:` block of params.yaml: where mlbench trains (a Hub Job) and serves (an
Inference Endpoint) each ablation's model, and what was made by hand instead.

Automatic path: `namespace` (the user or organisation that owns the repos, the Job and the
endpoint), the Job (`flavor`, `base_model`, `epochs`, `learning_rate`, `batch_size`,
`train_timeout`), the endpoint (`vendor`, `region`, `accelerator`, `instance_type`,
`instance_size`, `deploy_timeout`) and what `teardown` does to it. Hand-made path: the one shape
every service uses, `<key>.<dataset>.<ablation>: value` (`endpoints`, `models`,
`train_seconds`). A bad value is one line naming its key. No SDK import here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mlbench.params import SettingsBlock
from mlbench.services.base import ServiceSettings

#: What `teardown` does to an endpoint mlbench made (the pipeline's last stage calls it).
TEARDOWN_MODES = ("pause", "scale-to-zero", "delete")
ACCELERATORS = ("cpu", "gpu")
#: A Hub user/organisation name, a hardware flavor, an instance type or size: lowercase-ish words.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _is_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def _is_seconds(value: float) -> bool:
    return math.isfinite(value) and value >= 0


@dataclass(frozen=True)
class Settings(ServiceSettings):
    """Hand-made: `endpoints` (an Inference Endpoint URL per ablation), `models` (its model's
    Hub repo id or a local config.json / model folder, whose `id2label` names the classes when
    the endpoint answers `LABEL_<i>`), `train_seconds` (how long that training took).

    Automatic: `namespace` ("" = the token's own user), the Job's `flavor` and hyperparameters,
    the endpoint's hardware, `teardown` (pause | scale-to-zero | delete), `endpoints_api` (the
    Inference Endpoints API base; "" = Hugging Face's own), poll interval and timeouts.
    `warmup`/`warmup_timeout`: one untimed call before timed ones, waiting out a cold start."""

    models: Mapping[str, Mapping[int, str]] = field(default_factory=dict)
    train_seconds: Mapping[str, Mapping[int, float]] = field(default_factory=dict)
    namespace: str = ""
    flavor: str = "t4-small"
    base_model: str = "google/vit-base-patch16-224-in21k"
    epochs: int = 10
    learning_rate: float = 5e-5
    batch_size: int = 16
    vendor: str = "aws"
    region: str = "us-east-1"
    accelerator: str = "gpu"
    instance_type: str = "nvidia-t4"
    instance_size: str = "x1"
    teardown: str = "pause"
    endpoints_api: str = ""
    poll_seconds: float = 30.0
    train_timeout: float = 4 * 3600.0
    deploy_timeout: float = 1800.0
    upload_batch: int = 200
    #: Jobs the run keeps in flight at once (read by the scheduler). Hugging Face documents no
    #: limit on concurrent Jobs; 4 keeps a first run's GPU bill (4 x t4-small) in view.
    max_concurrent_trainings: int = 4
    warmup: bool = True
    warmup_timeout: float = 900.0

    #: What decides the trained model: the hyperparameters and backbone (and, per ablation, the
    #: hand-given model's label map and training time). Hardware, timeouts, where it is served
    #: and how it is torn down do not.
    MODEL_FIELDS: ClassVar[tuple[str, ...]] = ("models", "train_seconds", "base_model", "epochs",
                                               "learning_rate", "batch_size")
    #: The per-ablation fields among MODEL_FIELDS (only this ablation's entry counts).
    PER_ABLATION: ClassVar[tuple[str, ...]] = ("models", "train_seconds")

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Settings:
        block = SettingsBlock("huggingface", raw, cls.keys())

        def name(key: str, default: str, allow_empty: bool = False) -> str:
            value = block.text(key, default, allow_empty=allow_empty) or ""
            if value and not _NAME.fullmatch(value):
                raise block.fail(key, "must be a name of letters, digits, '.', '_' or '-'", value)
            return value

        endpoints_api = block.text("endpoints_api", cls.endpoints_api, allow_empty=True) or ""
        if endpoints_api and not _is_url(endpoints_api):
            raise block.fail("endpoints_api", "must be an http(s) URL or empty", endpoints_api)
        return cls(
            endpoints=block.per_ablation("endpoints", "endpoint URL (http or https)", _is_url),
            models=block.per_ablation("models", "Hub repo id or config.json path"),
            train_seconds=block.per_ablation("train_seconds", "number of seconds", _is_seconds,
                                             convert=float),
            namespace=name("namespace", cls.namespace, allow_empty=True),
            flavor=name("flavor", cls.flavor),
            base_model=block.text("base_model", cls.base_model) or cls.base_model,
            epochs=block.number("epochs", cls.epochs, 1, 1000, integer=True),
            learning_rate=block.number("learning_rate", cls.learning_rate, 0, 1, lo_open=True),
            batch_size=block.number("batch_size", cls.batch_size, 1, 4096, integer=True),
            vendor=name("vendor", cls.vendor),
            region=name("region", cls.region),
            accelerator=block.choice("accelerator", cls.accelerator, ACCELERATORS),
            instance_type=name("instance_type", cls.instance_type),
            instance_size=name("instance_size", cls.instance_size),
            teardown=block.choice("teardown", cls.teardown, TEARDOWN_MODES),
            endpoints_api=endpoints_api.rstrip("/"),
            poll_seconds=block.number("poll_seconds", cls.poll_seconds, 0, lo_open=True),
            train_timeout=block.number("train_timeout", cls.train_timeout, 0, lo_open=True),
            deploy_timeout=block.number("deploy_timeout", cls.deploy_timeout, 0, lo_open=True),
            upload_batch=block.number("upload_batch", cls.upload_batch, 1, 10_000, integer=True),
            max_concurrent_trainings=block.number("max_concurrent_trainings",
                                                  cls.max_concurrent_trainings, 1, 1000,
                                                  integer=True),
            warmup=block.boolean("warmup", cls.warmup),
            warmup_timeout=block.number("warmup_timeout", cls.warmup_timeout, 0, lo_open=True),
        )

    def of(self, key: str, dataset: str, ablation: int) -> Any:
        """`<key>.<dataset>.<ablation>` (`models` or `train_seconds`), or None when unset."""
        return getattr(self, key).get(dataset, {}).get(ablation)
