"""The `huggingface:` block of params.yaml: what was made by hand for each ablation (the
endpoint, its model, how long AutoTrain took) and the warm-up before timed calls.

Every per-ablation value is read in the one shape every service uses,
`<key>.<dataset>.<ablation>: value`; a bad value is one line naming its key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mlbench.params import SettingsBlock
from mlbench.services.base import ServiceSettings


def _is_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def _is_seconds(value: float) -> bool:
    return math.isfinite(value) and value >= 0


@dataclass(frozen=True)
class Settings(ServiceSettings):
    """`endpoints`: the Inference Endpoint URL of each ablation's model (made by hand: AutoTrain,
    then Deploy); `models`: that model's Hub repo id or a local config.json / model folder, whose
    `id2label` names the classes when the endpoint answers `LABEL_<i>`; `train_seconds`: the
    training time AutoTrain reported (not readable by API); `warmup`: one untimed call before
    timed ones; `warmup_timeout`: how long that call may wait for a cold endpoint, in seconds."""

    models: Mapping[str, Mapping[int, str]] = field(default_factory=dict)
    train_seconds: Mapping[str, Mapping[int, float]] = field(default_factory=dict)
    warmup: bool = True
    warmup_timeout: float = 900.0

    #: What the recorded model says (its label map and training time); the endpoint itself is
    #: the hand-given resource. The warm-up decides nothing about the model.
    MODEL_FIELDS: ClassVar[tuple[str, ...]] = ("models", "train_seconds")

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Settings:
        block = SettingsBlock("huggingface", raw, cls.keys())
        return cls(
            endpoints=block.per_ablation("endpoints", "endpoint URL (http or https)", _is_url),
            models=block.per_ablation("models", "Hub repo id or config.json path"),
            train_seconds=block.per_ablation("train_seconds", "number of seconds", _is_seconds,
                                             convert=float),
            warmup=block.boolean("warmup", cls.warmup),
            warmup_timeout=block.number("warmup_timeout", cls.warmup_timeout, 0, lo_open=True),
        )

    def of(self, key: str, dataset: str, ablation: int) -> Any:
        """`<key>.<dataset>.<ablation>` (`models` or `train_seconds`), or None when unset."""
        return getattr(self, key).get(dataset, {}).get(ablation)
