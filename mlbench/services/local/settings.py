"""The `local:` block of params.yaml: which frozen features, at which input size."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from mlbench.params import SettingsBlock
from mlbench.services.base import ServiceSettings

FEATURES = ("efficientnet-lite0", "hog", "auto")


@dataclass(frozen=True)
class Settings(ServiceSettings):
    """`features`: efficientnet-lite0 (ImageNet-pretrained, offline), hog (pixels + HOG +
    colour histograms), or auto (both; keep per ablation the one that cross-validates better).
    `image_size`: input size of the EfficientNet extractor, in pixels."""

    features: str = "efficientnet-lite0"
    image_size: int = 224

    MODEL_FIELDS: ClassVar[tuple[str, ...]] = ("features", "image_size")

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Settings:
        block = SettingsBlock("local", raw, ("features", "image_size"))
        return cls(features=block.choice("features", cls.features, FEATURES),
                   image_size=block.number("image_size", cls.image_size, 32, 512, integer=True))

    def candidates(self) -> list[str]:
        """The extractors to try: both under `auto`, else the one named."""
        return ["efficientnet-lite0", "hog"] if self.features == "auto" else [self.features]
