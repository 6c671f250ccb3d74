"""A trained local model on disk: which extractor, which head, which classes.

Shared by training (which writes it) and the HTTP server (which loads it), so both agree on
exactly how an image becomes a prediction. The server runs several extractors of the same
features side by side (one onnxruntime session per core) and passes the one a call should use
to `predict_scores`; whichever it is, the scores are those of `predict_scores(image)`.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
from PIL import Image
from sklearn.pipeline import Pipeline

from mlbench.services.local.features import Extractor, make_extractor
from mlbench.services.local.head import NumpyHead

MODEL_FILE = "head.joblib"


@dataclass
class LocalModel:
    features: str
    image_size: int
    classes: list[str]
    head: Pipeline

    def save(self, model_dir: Path) -> Path:
        model_dir.mkdir(parents=True, exist_ok=True)
        path = model_dir / MODEL_FILE
        tmp = path.with_suffix(".tmp")
        joblib.dump({"features": self.features, "image_size": self.image_size,
                     "classes": self.classes, "head": self.head}, tmp)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, model_dir: Path) -> LocalModel:
        data = joblib.load(model_dir / MODEL_FILE)
        return cls(data["features"], data["image_size"], data["classes"], data["head"])

    @property
    def extractor(self) -> Extractor:
        """The extractor of `predict_scores(image)` (its session on every core)."""
        if not hasattr(self, "_extractor"):
            self._extractor = self.new_extractor()
        return self._extractor

    def new_extractor(self, threads: int | None = None, spin: bool = True) -> Extractor:
        """Another extractor of this model's features, with its own onnxruntime session of
        `threads` threads (see `EfficientNetLite0`): same features, other speed."""
        return make_extractor(self.features, self.image_size, threads, spin)

    @property
    def labels(self) -> list[str]:
        """Class names in the order of the head's probabilities."""
        if not hasattr(self, "_labels"):
            self._labels = [self.classes[int(i)] for i in self.head.classes_]
        return self._labels

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """The head's probabilities for features `x`: computed with numpy (`NumpyHead`, the
        same numbers as the pipeline's `predict_proba`, without its per-call overhead)."""
        if not hasattr(self, "_fast_head"):
            self._fast_head = NumpyHead.of(self.head)
        if self._fast_head is None:
            return self.head.predict_proba(x)
        return self._fast_head.predict_proba(x)

    def predict_scores(self, image: bytes, extractor: Extractor | None = None
                       ) -> dict[str, float]:
        """Class -> probability for one encoded image; `extractor` (one of `new_extractor`'s)
        only chooses which session computes the features."""
        try:
            x = (extractor or self.extractor).embed([image])
        except OSError as exc:  # PIL: not an image / truncated
            raise ValueError(f"cannot decode image: {exc}") from exc
        proba = self.predict_proba(x)[0]
        return {label: float(p) for label, p in zip(self.labels, proba, strict=True)}

    def warm_up(self, extractor: Extractor | None = None) -> None:
        """One prediction, so sessions and imports are loaded before the first real call."""
        self.predict_scores(warm_up_image(), extractor)


def warm_up_image() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (128, 128, 128)).save(buf, format="PNG")
    return buf.getvalue()
