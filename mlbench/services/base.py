"""The contract between the benchmark harness and every system under test.

The harness (train / evaluate / load) only ever sees `Service`, `ServiceContext`, `Job` and the
core types; it never knows a vendor. A service is one package under `mlbench/services/`, found
by name like a dataset (see `registry`), and gets a narrow context: its own validated settings,
the seed, the bucket names, the dataset, the ablation and a state folder of its own.

Lifecycle of one (service, dataset, ablation) run:

    svc.upload(split)            # idempotent, resumable: a rerun sends only what is missing
    job = svc.submit(split)      # returns at once with what identifies the training
    model = svc.wait(job)        # until trained (and deployed, where the vendor deploys)
    ...                          # model.json written by the harness, never by a service
    svc.connect(model)           # later, possibly in another process: get ready to predict
    svc.predict(image_bytes)     # one call = one request, timed by the harness
    svc.teardown(model)          # stop what is billed while deployed
    svc.close()                  # always; releases what the service holds locally

A resource made by hand (the seed's console path) is named in the service's params block as
`<service>.endpoints.<dataset>.<ablation>`; the harness then calls `adopt(value)` instead of
upload/submit/wait.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from mlbench import paths
from mlbench.core import AblationSplit, ModelRef, Prediction, utc_now
from mlbench.errors import UserError
from mlbench.services.cloud import Deployment


@dataclass(frozen=True)
class ServiceSettings:
    """Base of every service's validated params block (`settings.py` defines `Settings`).

    `endpoints` holds the resources made by hand, `dataset -> ablation -> id or URL`, in the one
    shape every service reads them in. `MODEL_FIELDS` names the settings that decide the trained
    model: changing one of them trains anew, changing any other (a timeout, a poll interval)
    does not.
    """

    endpoints: Mapping[str, Mapping[int, str]] = field(default_factory=dict)

    MODEL_FIELDS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> ServiceSettings:
        """Validate the block; a bad value raises a one-line `UserError` naming its key."""
        raise NotImplementedError(f"{cls.__name__}.parse")

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def hand_given(self, dataset: str, ablation: int) -> str | None:
        """`<service>.endpoints.<dataset>.<ablation>`, when the user made that resource."""
        return self.endpoints.get(dataset, {}).get(ablation)

    def model_settings(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.MODEL_FIELDS}


@dataclass(frozen=True)
class ServiceContext:
    """What a service gets: its settings, the run it serves, and a folder of its own.

    `state_dir` (`results/models/<svc>/<ds>/<n>/`) is where a service records what it
    created (uploads, dataset ids, job ids) so a rerun continues instead of duplicating.
    `in_flight` is the most calls the harness will have in flight at once (to size pools).
    """

    service: str
    settings: Any
    dataset: str
    ablation: int
    seed: int
    buckets: Mapping[str, str]
    state_dir: Path
    in_flight: int = 10

    def bucket(self, cloud: str) -> str:
        """`buckets.<cloud>` from params.yaml, or a one-line error saying to set it."""
        name = (self.buckets.get(cloud) or "").strip()
        if not name:
            raise UserError(f"params.yaml: buckets.{cloud}: set the bucket the {self.service} "
                            "service uploads to")
        return name


@dataclass
class Job:
    """A training handed to a service: what `wait` needs to follow it to a model."""

    dataset: str
    ablation: int
    ids: dict[str, Any] = field(default_factory=dict)
    submitted_at: str = field(default_factory=utc_now)


class Service(ABC):
    """A system under test. A subclass sets `name` and implements submit/wait/connect/predict."""

    name: ClassVar[str]
    #: Requests per second the vendor allows (None: no documented limit); the load test and
    #: uploads stay under it.
    max_rps: ClassVar[float | None] = None
    #: Trains and serves on this machine (the local baseline): nothing is gained by starting
    #: its trainings early, and its runs are scored one at a time, so that none is measured
    #: under another's load.
    local_compute: ClassVar[bool] = False

    def __init__(self, ctx: ServiceContext):
        self.ctx = ctx
        self._deployment: Deployment | None = None

    @property
    def settings(self) -> Any:
        return self.ctx.settings

    @property
    def deployment(self) -> Deployment:
        """What this run has deployed, for `mlbench status` and the costs: a service that
        deploys (or starts) a billed resource records it with `up()`, and `down()` when it
        tears it down."""
        if self._deployment is None:
            self._deployment = Deployment(paths.deployment_file(
                self.name, self.ctx.dataset, self.ctx.ablation))
        return self._deployment

    def model_settings(self) -> dict[str, Any]:
        """Everything besides the ablation's images that decides the trained model.

        `train` reuses a recorded model only while this (and the data) is unchanged.
        """
        return self.settings.model_settings()

    def hand_given(self) -> str | None:
        return self.settings.hand_given(self.ctx.dataset, self.ctx.ablation)

    def where(self, key: str = "endpoints") -> str:
        """The params key of this run's hand-given value, for messages."""
        return f"{self.name}.{key}.{self.ctx.dataset}.{self.ctx.ablation}"

    # -- training --------------------------------------------------------------------------------
    def upload(self, split: AblationSplit) -> None:  # noqa: B027 - optional: local needs none
        """Send the ablation's images to the service. Idempotent and resumable."""

    @abstractmethod
    def submit(self, split: AblationSplit) -> Job:
        """Start training on the uploaded ablation (or find the training a crash left); return
        at once, with the job recorded in the service's state."""

    @abstractmethod
    def wait(self, job: Job) -> ModelRef:
        """Follow `job` until its model can predict; the model's ids and training time."""

    def train(self, split: AblationSplit) -> ModelRef:
        """Submit, then wait: one ablation, start to finish."""
        return self.wait(self.submit(split))

    def adopt(self, given: str) -> ModelRef:
        """A model made by hand (`<service>.endpoints.<ds>.<n>`), described and checked."""
        raise UserError(f"params.yaml: {self.where()}: the {self.name} service takes no "
                        "hand-given resources")

    def recorded(self) -> ModelRef | None:
        """The model this run recorded (model.json), for the vendor commands."""
        return ModelRef.load(paths.model_json(self.name, self.ctx.dataset, self.ctx.ablation))

    # -- serving ---------------------------------------------------------------------------------
    @abstractmethod
    def connect(self, model: ModelRef) -> None:
        """Prepare to predict with `model` (start a local server, check an endpoint, ...)."""

    @abstractmethod
    def predict(self, image: bytes) -> Prediction:
        """Classify one image with one request (retries on 429/5xx are allowed and counted)."""

    def describe(self, model: ModelRef) -> str:
        """One line on the model's state at the vendor (`mlbench <service> status`)."""
        return "trained"

    def deploy(self, model: ModelRef) -> str:
        """Make a torn-down model callable again; one line on where it is."""
        self.connect(model)
        return "ready"

    def teardown(self, model: ModelRef) -> str:
        """Stop whatever bills while the model is deployed; one line on what was done."""
        return "nothing billed"

    def close(self) -> None:  # noqa: B027 - optional hook: most services hold nothing
        """Release what the service holds locally (servers, sessions). Always called."""

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
