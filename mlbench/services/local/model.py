"""A trained local model on disk: which extractor, which head, which classes.

Shared by training (which writes it) and the HTTP server (which loads it), so both agree on
exactly how an image becomes a prediction.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import joblib
from PIL import Image
from sklearn.pipeline import Pipeline

from mlbench.services.local.features import Extractor, make_extractor

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
        if not hasattr(self, "_extractor"):
            self._extractor = make_extractor(self.features, self.image_size)
        return self._extractor

    def predict_scores(self, image: bytes) -> dict[str, float]:
        try:
            x = self.extractor.embed([image])
        except OSError as exc:  # PIL: not an image / truncated
            raise ValueError(f"cannot decode image: {exc}") from exc
        proba = self.head.predict_proba(x)[0]
        labels = [self.classes[int(i)] for i in self.head.classes_]
        return {label: float(p) for label, p in zip(labels, proba, strict=True)}

    def warm_up(self) -> None:
        buf = io.BytesIO()
        Image.new("RGB", (32, 32), (128, 128, 128)).save(buf, format="PNG")
        self.predict_scores(buf.getvalue())
