"""The contract between the benchmark harness and every system under test.

The harness (train / evaluate / load / report) only ever sees `Service`, `AblationSplit`,
`ModelRef` and `Prediction`; it never knows a vendor. A service module registers itself with
`@register` and is found by name from `params.yaml` `services`.

Lifecycle of one (service, dataset, ablation) run:
    svc = create_service(name, ctx)
    svc.upload(split)            # idempotent, resumable: a rerun sends only what is missing
    model = svc.train(split)     # blocks until trained; returns ids + training seconds
    ...                          # model.json written by the harness
    svc.connect(model)           # later, possibly in another process: get ready to predict
    svc.predict(image_bytes)     # one call = one request, timed by the harness
    svc.close()                  # always; stops anything the service started locally
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from mlbench.errors import UserError
from mlbench.params import Params


@dataclass(frozen=True)
class ImageRef:
    """One prepared image: its file, its upload file name (unique in the dataset), its class."""

    path: Path
    filename: str
    class_name: str


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


@dataclass(frozen=True)
class Prediction:
    """A service's answer for one image.

    `label` is None when the service answered but named no class (e.g. Rekognition below its
    threshold): that counts as wrong, never as an error. `attempts` counts HTTP attempts, so
    retries (429/503) are visible in the results.
    """

    label: str | None
    confidence: float
    scores: dict[str, float] | None = None
    attempts: int = 1

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence}")


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class ModelRef:
    """What `train` produced: enough to call the model later from another process.

    `ids` holds the service's own identifiers (function id, endpoint URL, model ARN, ...);
    `train_seconds` is the service's training time, from its own timestamps where it has them.
    Serialised as `results/<svc>/<ds>/models/<n>/model.json`. Never holds a secret.
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


@dataclass(frozen=True)
class ServiceContext:
    """What a service gets at construction: the params, the dataset, and a folder of its own.

    `state_dir` (`results/<svc>/<ds>/models/<n>/`) is where a service records what it created
    (uploaded keys, dataset ids, job ids) so a rerun continues instead of duplicating.
    """

    params: Params
    dataset: str
    ablation: int
    state_dir: Path


class Service(ABC):
    """A system under test. Subclasses set `name` and implement the five methods."""

    name: ClassVar[str]
    #: Requests per second the vendor allows (None: no documented limit); the load test and
    #: uploads stay under it.
    max_rps: ClassVar[float | None] = None

    def __init__(self, ctx: ServiceContext):
        self.ctx = ctx

    @property
    def settings(self) -> dict[str, Any]:
        """This service's block of `params.yaml` (`local:`, `nyckel:`, `vertex:`, ...)."""
        return self.ctx.params.section(self.name)

    def model_settings(self) -> dict[str, Any]:
        """Everything besides the ablation's images that decides the trained model.

        `train` reuses a recorded model only while this (and the data) is unchanged.
        """
        return self.settings

    @abstractmethod
    def upload(self, split: AblationSplit) -> None:
        """Send the ablation's images to the service. Idempotent and resumable."""

    @abstractmethod
    def train(self, split: AblationSplit) -> ModelRef:
        """Train on the uploaded ablation and wait until the model can predict."""

    @abstractmethod
    def connect(self, model: ModelRef) -> None:
        """Prepare to predict with `model` (start a local server, check an endpoint, ...)."""

    @abstractmethod
    def predict(self, image: bytes) -> Prediction:
        """Classify one image with one request (retries on 429/5xx are allowed and counted)."""

    def close(self) -> None:  # noqa: B027 - optional hook: most services hold nothing
        """Release what the service holds locally (servers, sessions). Always called."""

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_REGISTRY: dict[str, type[Service]] = {}


def register(cls: type[Service]) -> type[Service]:
    """Class decorator: make a service available under `cls.name`."""
    _REGISTRY[cls.name] = cls
    return cls


# Service modules, imported lazily so a missing optional SDK never breaks the others.
_MODULES = {
    "local": "mlbench.services.local",
    "nyckel": "mlbench.services.nyckel",
    "huggingface": "mlbench.services.huggingface",
    "vertex": "mlbench.services.vertex",
    "rekognition": "mlbench.services.rekognition",
}


# Services with commands of their own (`mlbench <service> ...`), and where those live.
CLI_MODULES = {
    "nyckel": "mlbench.services.nyckel",
    "vertex": "mlbench.services.vertex.cli",
    "rekognition": "mlbench.services.rekognition",
}


def service_names() -> list[str]:
    return list(_MODULES)


def service_class(name: str) -> type[Service]:
    if name not in _MODULES:
        raise UserError(f"unknown service {name!r}; choose one of {', '.join(_MODULES)}")
    if name not in _REGISTRY:
        import importlib

        importlib.import_module(_MODULES[name])
    return _REGISTRY[name]


def create_service(name: str, ctx: ServiceContext) -> Service:
    return service_class(name)(ctx)

