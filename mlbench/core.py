"""The types every layer shares: an image, an ablation, a trained model, a prediction.

They live here, below `data`, `services`, `bench` and `report`, so that each of those imports
them without importing another layer: the data stage builds `AblationSplit`s, a service trains
on one and answers `Prediction`s, the harness records `ModelRef`s, and none of them depends on
the others' modules for it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mlbench.io import atomic_write_json, read_json

#: The splits an image can belong to: a dataset's official train/test split, and within an
#: ablation the train/val parts of its training images.
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class ImageRef:
    """One image: where its file is, its class, and (when known) its split and upload name.

    A dataset source yields them with the official split (`train`/`test`) and no upload name;
    once prepared, `filename` is the name the image is uploaded under, unique in the dataset
    (two classes may hold files of the same original name).
    """

    path: Path
    class_name: str
    split: str = ""
    filename: str = ""

    @property
    def name(self) -> str:
        """The upload name: `filename` when set, else the file's own name."""
        return self.filename or self.path.name


@dataclass(frozen=True)
class AblationSplit:
    """The training data of one ablation: `size` images per class, split into train and val."""

    dataset: str
    size: int
    classes: tuple[str, ...]
    train: tuple[ImageRef, ...]
    val: tuple[ImageRef, ...]

    @property
    def all(self) -> tuple[ImageRef, ...]:
        """Train + val, for services that cross-validate internally (Nyckel)."""
        return self.train + self.val

    @property
    def digest(self) -> str:
        """8 hex digits naming what the ablation holds (which file of which class in which
        split). Cloud resources are named with it, so a changed ablation (another seed, new
        data) gets new ones instead of reusing what was built from the old images."""
        rows = sorted(f"{part}\t{r.class_name}\t{r.name}" for part, refs in
                      (("train", self.train), ("val", self.val)) for r in refs)
        return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:8]


@dataclass(frozen=True)
class Prediction:
    """A service's answer for one image.

    `label` is None when the service answered but named no class (e.g. Rekognition below its
    threshold): that counts as wrong, never as an error. `attempts` counts the calls it took,
    so retries (429/503) are visible in the results.
    """

    label: str | None
    confidence: float
    scores: dict[str, float] | None = None
    attempts: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence}")

    def with_attempts(self, attempts: int) -> Prediction:
        return self if attempts == self.attempts else Prediction(
            self.label, self.confidence, self.scores, attempts)


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class ModelRef:
    """What training produced: enough to call the model later, from another process.

    `ids` holds the service's own identifiers (function id, endpoint URL, model ARN, ...);
    `train_seconds` is the service's training time, from its own timestamps where it has them.
    Serialised as `results/models/<svc>/<ds>/<n>/model.json`, which only the harness
    writes. Never holds a secret.
    """

    service: str
    dataset: str
    ablation: int
    ids: dict[str, str] = field(default_factory=dict)
    train_seconds: float | None = None
    started_at: str | None = None
    finished_at: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelRef:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})

    @classmethod
    def load(cls, path: Path) -> ModelRef | None:
        """The model recorded at `path`, or None when there is none."""
        return cls.from_json(read_json(path)) if path.exists() else None

    def save(self, path: Path) -> None:
        atomic_write_json(path, self.to_json())
