"""State of the Vertex AI fake: tokens, datasets, operations, training pipelines, models, endpoints.

Kept apart from the wire format (responses.py), moto-style. Long-running work advances with
polling, not wall time, so a test controls it exactly: an operation is `done` after
`op_polls` GETs, a training pipeline goes PENDING -> RUNNING -> SUCCEEDED over `train_polls`
GETs, and its `startTime`/`endTime` are `train_seconds` apart on a simulated clock (a client
that timed training with its own wall clock would get a visibly different number).

The "model" a pipeline trains is a real nearest-centroid classifier over 8x8 RGB thumbnails of
the training and validation images it reads back from Cloud Storage (through `gcs_reader`, e.g. the
storage emulator), so a test can tell a correct label mapping from a wrong one.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import math
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from tests.fakes.pacing import Pacing

LABEL_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
ML_USES = {"training", "validation", "test"}
MIN_PER_LABEL = 10
IMAGE_METADATA_SCHEMA = "gs://google-cloud-aiplatform/schema/dataset/metadata/image_1.0.0.yaml"
SINGLE_LABEL_IO = ("gs://google-cloud-aiplatform/schema/dataset/ioformat/"
                   "image_classification_single_label_io_format_1.0.0.yaml")
AUTOML_IMAGE_CLASSIFICATION = ("gs://google-cloud-aiplatform/schema/trainingjob/definition/"
                               "automl_image_classification_1.0.0.yaml")
ML_USE_FILTER = "labels.aiplatform.googleapis.com/ml_use={}"
BUDGETS = {"CLOUD": (8000, 800000), "MOBILE_TF_LOW_LATENCY_1": (1000, 100000),
           "MOBILE_TF_VERSATILE_1": (1000, 100000), "MOBILE_TF_HIGH_ACCURACY_1": (1000, 100000)}
TYPE = "type.googleapis.com/google.cloud.aiplatform.v1."


def rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def thumbnail(image: bytes) -> tuple[float, ...]:
    """The image as an 8x8 RGB thumbnail vector (enough to tell colours, even small digits)."""
    with Image.open(io.BytesIO(image)) as img:
        return tuple(float(b) for b in img.convert("RGB").resize((8, 8)).tobytes())


class ApiFailure(Exception):
    """An error the real API would answer with: HTTP status, gRPC status name, message."""

    def __init__(self, code: int, status: str, message: str):
        super().__init__(message)
        self.code, self.status, self.message = code, status, message


@dataclass
class Operation:
    name: str
    metadata: dict[str, Any]
    polls_left: int
    finish: Callable[[], dict[str, Any]]
    done: bool = False
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    #: Paced: done at this wall time (whatever the polls), instead of after `polls_left`.
    ready_at: float | None = None


@dataclass
class DataItem:
    uri: str
    ml_use: str
    label: str


@dataclass
class Dataset:
    id: str
    name: str
    display_name: str
    labels: dict[str, str]
    create_time: float
    items: dict[str, DataItem] = field(default_factory=dict)
    import_files: list[str] = field(default_factory=list)


@dataclass
class Pipeline:
    id: str
    name: str
    body: dict[str, Any]
    create_time: float
    state: str = "PIPELINE_STATE_PENDING"
    polls: int = 0
    start_time: float | None = None
    end_time: float | None = None
    model_name: str | None = None
    error: dict[str, Any] | None = None
    #: Paced: trained at this wall time, instead of after `train_polls` polls.
    ready_at: float | None = None


@dataclass
class Model:
    id: str
    name: str
    display_name: str
    labels: dict[str, str]
    pipeline: str
    create_time: float
    #: label -> (annotation spec id, centroid thumbnail)
    specs: dict[str, tuple[str, tuple[float, ...]]] = field(default_factory=dict)


@dataclass
class DeployedModel:
    id: str
    model: str
    display_name: str
    create_time: float
    resources: dict[str, Any]


@dataclass
class Endpoint:
    id: str
    name: str
    display_name: str
    labels: dict[str, str]
    create_time: float
    deployed: dict[str, DeployedModel] = field(default_factory=dict)
    traffic: dict[str, int] = field(default_factory=dict)


class VertexState:
    """Everything the fake project holds; thread-safe (the server is threaded)."""

    def __init__(self, project: str = "mlbench-test", location: str = "us-central1",
                 gcs_reader: Callable[[str], bytes | None] | None = None, op_polls: int = 2,
                 train_polls: int = 3, train_seconds: float = 7203.5,
                 cost_milli_node_hours: int = 7346, expires_in: int = 3600,
                 pacing: Pacing | None = None):
        self.project = project
        self.location = location
        self.gcs_reader = gcs_reader
        self.op_polls = op_polls
        self.train_polls = train_polls
        self.train_seconds = train_seconds
        #: What a finished pipeline reports it billed (`trainingTaskMetadata`), deliberately
        #: neither the budget nor the wall time, so a client reading the wrong one shows.
        self.cost_milli_node_hours = cost_milli_node_hours
        self.expires_in = expires_in
        self.lock = threading.RLock()
        self.tokens: dict[str, float] = {}
        self.token_requests = 0
        #: Public keys of the service accounts whose key files were written for this fake (key
        #: id -> key): what a self-signed JWT's signature is checked against, as Google does.
        self.public_keys: dict[str, Any] = {}
        self.operations: dict[str, Operation] = {}
        self.datasets: dict[str, Dataset] = {}
        self.pipelines: dict[str, Pipeline] = {}
        self.models: dict[str, Model] = {}
        self.endpoints: dict[str, Endpoint] = {}
        #: How many of each resource were created (what "no duplicates" tests assert on).
        self.created = {"datasets": 0, "imports": 0, "pipelines": 0, "endpoints": 0,
                        "deployments": 0}
        self.predictions = 0
        #: Wall-clock pacing (`tests/fakes/pacing.py`): a pipeline's training by its display
        #: name and a DeployModel by its endpoint's (instead of poll counts), the predict
        #: latency and rate limit. The reported startTime/endTime stay `train_seconds` apart.
        self.pacing = pacing
        self._ids = itertools.count(1000000000000000001)

    # -- auth ------------------------------------------------------------------------------------
    def issue_token(self) -> str:
        with self.lock:
            token = f"ya29.fake-{secrets.token_urlsafe(12)}"
            self.tokens[token] = time.time() + self.expires_in
            self.token_requests += 1
            return token

    def token_valid(self, token: str) -> bool:
        with self.lock:
            return self.tokens.get(token, 0.0) > time.time()

    def expire_tokens(self) -> None:
        """Every issued token stops working now (the next call gets a 401)."""
        with self.lock:
            self.tokens = dict.fromkeys(self.tokens, 0.0)

    # -- helpers ---------------------------------------------------------------------------------
    def parent(self, project: str, location: str) -> str:
        if project != self.project:
            raise ApiFailure(403, "PERMISSION_DENIED",
                             f"Permission denied on resource project {project}.")
        if location != self.location:
            raise ApiFailure(400, "INVALID_ARGUMENT", f"Location {location} does not match the "
                             f"regional endpoint of this fake ({self.location}).")
        return f"projects/{project}/locations/{location}"

    def _new_id(self) -> str:
        return str(next(self._ids))

    def _operation(self, resource: str, kind: str, finish: Callable[[], dict[str, Any]]
                   ) -> Operation:
        now = rfc3339(time.time())
        op = Operation(f"{resource}/operations/{self._new_id()}",
                       {"@type": f"{TYPE}{kind}OperationMetadata",
                        "genericMetadata": {"createTime": now, "updateTime": now}},
                       self.op_polls, finish)
        self.operations[op.name] = op
        return op

    def poll_operation(self, name: str) -> Operation:
        with self.lock:
            op = self.operations.get(name)
            if op is None:
                raise ApiFailure(404, "NOT_FOUND", f"Operation {name} not found.")
            if not op.done:
                op.polls_left -= 1
                due = op.polls_left <= 0 if op.ready_at is None else time.time() >= op.ready_at
                if due:
                    op.done = True
                    try:
                        op.response = op.finish()
                    except ApiFailure as exc:
                        op.error = {"code": _GRPC_CODES.get(exc.status, 2),
                                    "message": exc.message}
                    op.metadata["genericMetadata"]["updateTime"] = rfc3339(time.time())
            return op

    # -- datasets --------------------------------------------------------------------------------
    def create_dataset(self, parent: str, body: dict[str, Any]) -> Operation:
        with self.lock:
            if not body.get("displayName"):
                raise ApiFailure(400, "INVALID_ARGUMENT", "Dataset.display_name is required.")
            if body.get("metadataSchemaUri") != IMAGE_METADATA_SCHEMA:
                raise ApiFailure(400, "INVALID_ARGUMENT", "Unsupported metadataSchemaUri "
                                 f"{body.get('metadataSchemaUri')!r} for this fake.")
            ds_id = self._new_id()
            ds = Dataset(ds_id, f"{parent}/datasets/{ds_id}", body["displayName"],
                         _labels(body), time.time())
            self.datasets[ds.name] = ds
            self.created["datasets"] += 1
            return self._operation(ds.name, "CreateDataset", lambda: self.dataset_json(ds, True))

    def dataset(self, name: str) -> Dataset:
        ds = self.datasets.get(name)
        if ds is None:
            raise ApiFailure(404, "NOT_FOUND", f"Dataset {name} not found.")
        return ds

    def dataset_json(self, ds: Dataset, typed: bool = False) -> dict[str, Any]:
        out = {"name": ds.name, "displayName": ds.display_name,
               "metadataSchemaUri": IMAGE_METADATA_SCHEMA, "labels": ds.labels,
               "createTime": rfc3339(ds.create_time), "updateTime": rfc3339(ds.create_time),
               "dataItemCount": str(len(ds.items)), "etag": f"e{len(ds.items)}",
               "metadata": {"dataItemSchemaUri": "gs://google-cloud-aiplatform/schema/dataset/"
                                                  "dataitem/image_1.0.0.yaml"}}
        return {"@type": f"{TYPE}Dataset", **out} if typed else out

    def import_data(self, name: str, body: dict[str, Any]) -> Operation:
        with self.lock:
            ds = self.dataset(name)
            configs = body.get("importConfigs")
            if not isinstance(configs, list) or not configs:
                raise ApiFailure(400, "INVALID_ARGUMENT", "import_configs is required.")
            uris: list[str] = []
            for cfg in configs:
                if cfg.get("importSchemaUri") != SINGLE_LABEL_IO:
                    raise ApiFailure(400, "INVALID_ARGUMENT", "Unsupported importSchemaUri "
                                     f"{cfg.get('importSchemaUri')!r} for an image dataset.")
                uris += (cfg.get("gcsSource") or {}).get("uris") or []
            if not uris:
                raise ApiFailure(400, "INVALID_ARGUMENT", "gcs_source.uris is required.")
            self.created["imports"] += 1
            return self._operation(ds.name, "ImportData", lambda: self._finish_import(ds, uris))

    def _finish_import(self, ds: Dataset, uris: list[str]) -> dict[str, Any]:
        rows: list[DataItem] = []
        for uri in uris:
            text = self._read(uri)
            for i, row in enumerate(csv.reader(io.StringIO(text.decode("utf-8"))), 1):
                if not row:
                    continue
                if len(row) != 3 or row[0].lower() not in ML_USES:
                    raise ApiFailure(400, "INVALID_ARGUMENT", f"{uri} line {i}: expected "
                                     "ml_use,gs://uri,label with ml_use training/validation/test")
                ml_use, image_uri, label = row[0].lower(), row[1], row[2]
                if not LABEL_RE.fullmatch(label):
                    raise ApiFailure(400, "INVALID_ARGUMENT", f"{uri} line {i}: label {label!r}"
                                     " must start with a letter and hold only letters, digits "
                                     "and underscores")
                if self._read(image_uri, required=False) is None:
                    raise ApiFailure(400, "INVALID_ARGUMENT", f"{uri} line {i}: {image_uri} "
                                     "does not exist")
                rows.append(DataItem(image_uri, ml_use, label))
        for item in rows:  # same URI imported again: one data item (Vertex dedups)
            ds.items[item.uri] = item
        ds.import_files += uris
        return {"@type": f"{TYPE}ImportDataResponse"}

    def _read(self, uri: str, required: bool = True) -> bytes | None:
        data = self.gcs_reader(uri) if self.gcs_reader else None
        if data is None and required:
            raise ApiFailure(400, "INVALID_ARGUMENT", f"Cannot read {uri}.")
        return data

    # -- training pipelines ----------------------------------------------------------------------
    def create_pipeline(self, parent: str, body: dict[str, Any]) -> Pipeline:
        with self.lock:
            if body.get("trainingTaskDefinition") != AUTOML_IMAGE_CLASSIFICATION:
                raise ApiFailure(400, "INVALID_ARGUMENT", "Unsupported trainingTaskDefinition.")
            inputs = body.get("trainingTaskInputs") or {}
            model_type = inputs.get("modelType", "CLOUD")
            if model_type not in BUDGETS:
                raise ApiFailure(400, "INVALID_ARGUMENT", f"Unknown modelType {model_type!r}.")
            lo, hi = BUDGETS[model_type]
            budget = int(inputs.get("budgetMilliNodeHours", 0))
            if not lo <= budget <= hi:
                raise ApiFailure(400, "INVALID_ARGUMENT", f"budgetMilliNodeHours must be in "
                                 f"[{lo}, {hi}] for {model_type}, got {budget}.")
            data = body.get("inputDataConfig") or {}
            ds_name = f"{parent}/datasets/{data.get('datasetId')}"
            self.dataset(ds_name)
            split = data.get("filterSplit") or {}
            want = {k: ML_USE_FILTER.format(v) for k, v in (("trainingFilter", "training"),
                    ("validationFilter", "validation"), ("testFilter", "test"))}
            if split != want:
                raise ApiFailure(400, "INVALID_ARGUMENT", f"this fake expects filterSplit "
                                 f"{want}, got {split}")
            if not (body.get("modelToUpload") or {}).get("displayName"):
                raise ApiFailure(400, "INVALID_ARGUMENT", "model_to_upload.display_name is "
                                 "required.")
            pid = self._new_id()
            p = Pipeline(pid, f"{parent}/trainingPipelines/{pid}", body, time.time())
            if self.pacing is not None:
                p.ready_at = self.pacing.training_done_at(body.get("displayName", p.name))
            self.pipelines[p.name] = p
            self.created["pipelines"] += 1
            return p

    def pipeline(self, name: str, advance: bool = True) -> Pipeline:
        with self.lock:
            p = self.pipelines.get(name)
            if p is None:
                raise ApiFailure(404, "NOT_FOUND", f"TrainingPipeline {name} not found.")
            if advance and p.state in ("PIPELINE_STATE_PENDING", "PIPELINE_STATE_RUNNING"):
                p.polls += 1
                if p.state == "PIPELINE_STATE_PENDING":
                    p.state = "PIPELINE_STATE_RUNNING"
                    p.start_time = p.create_time + 12.25
                elif (p.polls >= self.train_polls if p.ready_at is None
                      else time.time() >= p.ready_at):
                    self._finish_training(p)
            return p

    def _finish_training(self, p: Pipeline) -> None:
        assert p.start_time is not None
        p.end_time = p.start_time + self.train_seconds
        parent = p.name.split("/trainingPipelines/")[0]
        ds = self.dataset(f"{parent}/datasets/{p.body['inputDataConfig']['datasetId']}")
        per_label: dict[str, list[tuple[float, ...]]] = {}
        counts: dict[str, int] = {}
        for item in ds.items.values():
            counts[item.label] = counts.get(item.label, 0) + 1
            if item.ml_use in ("training", "validation"):
                per_label.setdefault(item.label, []).append(thumbnail(self._read(item.uri) or b""))
        short = sorted(lb for lb, c in counts.items() if c < MIN_PER_LABEL)
        uses = {item.ml_use for item in ds.items.values()}
        if short or uses != ML_USES:
            p.state = "PIPELINE_STATE_FAILED"
            p.error = {"code": 9, "message": f"Dataset needs at least {MIN_PER_LABEL} images "
                       f"per label and items in every split; short labels: {short}, splits: "
                       f"{sorted(uses)}"}
            return
        mid = self._new_id()
        upload = p.body["modelToUpload"]
        model = Model(mid, f"{parent}/models/{mid}", upload["displayName"],
                      dict(upload.get("labels") or {}), p.name, p.end_time)
        for label, points in sorted(per_label.items()):
            centroid = tuple(sum(col) / len(points) for col in zip(*points, strict=True))
            model.specs[label] = (self._new_id(), centroid)
        self.models[model.name] = model
        p.model_name = model.name
        p.state = "PIPELINE_STATE_SUCCEEDED"

    def pipeline_json(self, p: Pipeline) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": p.name, "displayName": p.body.get("displayName", ""),
            "inputDataConfig": p.body.get("inputDataConfig"),
            "trainingTaskDefinition": p.body["trainingTaskDefinition"],
            "trainingTaskInputs": p.body.get("trainingTaskInputs"),
            "modelToUpload": dict(p.body.get("modelToUpload") or {}),
            "state": p.state, "labels": _labels(p.body),
            "createTime": rfc3339(p.create_time), "updateTime": rfc3339(time.time()),
        }
        if p.start_time is not None:
            out["startTime"] = rfc3339(p.start_time)
        if p.end_time is not None:
            out["endTime"] = rfc3339(p.end_time)
            # int64 in the JSON mapping: a string, as Vertex sends it
            out["trainingTaskMetadata"] = {"costMilliNodeHours": str(self.cost_milli_node_hours),
                                           "successfulStopReason": "MODEL_CONVERGED"}
        if p.model_name:
            out["modelToUpload"]["name"] = p.model_name
            out["modelToUpload"]["versionId"] = "1"
            out["modelId"] = p.model_name.rsplit("/", 1)[1]
        if p.error:
            out["error"] = p.error
        return out

    # -- models ----------------------------------------------------------------------------------
    def model(self, name: str) -> Model:
        m = self.models.get(name)
        if m is None:
            raise ApiFailure(404, "NOT_FOUND", f"Model {name} not found.")
        return m

    def model_json(self, m: Model) -> dict[str, Any]:
        return {"name": m.name, "displayName": m.display_name, "labels": m.labels,
                "trainingPipeline": m.pipeline, "versionId": "1",
                "createTime": rfc3339(m.create_time), "updateTime": rfc3339(m.create_time),
                "supportedDeploymentResourcesTypes": ["AUTOMATIC_RESOURCES"],
                "metadataSchemaUri": "gs://google-cloud-aiplatform/schema/model/metadata/"
                                     "automl_image_classification_1.0.0.yaml"}

    # -- endpoints -------------------------------------------------------------------------------
    def create_endpoint(self, parent: str, body: dict[str, Any]) -> Operation:
        with self.lock:
            if not body.get("displayName"):
                raise ApiFailure(400, "INVALID_ARGUMENT", "Endpoint.display_name is required.")
            eid = self._new_id()
            ep = Endpoint(eid, f"{parent}/endpoints/{eid}", body["displayName"], _labels(body),
                          time.time())
            self.endpoints[ep.name] = ep
            self.created["endpoints"] += 1
            return self._operation(ep.name, "CreateEndpoint",
                                   lambda: self.endpoint_json(ep, True))

    def endpoint(self, name: str) -> Endpoint:
        ep = self.endpoints.get(name)
        if ep is None:
            raise ApiFailure(404, "NOT_FOUND", f"Endpoint {name} not found.")
        return ep

    def endpoint_json(self, ep: Endpoint, typed: bool = False) -> dict[str, Any]:
        out = {"name": ep.name, "displayName": ep.display_name, "labels": ep.labels,
               "createTime": rfc3339(ep.create_time), "updateTime": rfc3339(time.time()),
               "deployedModels": [_deployed_json(d) for d in ep.deployed.values()],
               "trafficSplit": dict(ep.traffic)}
        return {"@type": f"{TYPE}Endpoint", **out} if typed else out

    def deploy(self, name: str, body: dict[str, Any]) -> Operation:
        with self.lock:
            ep = self.endpoint(name)
            spec = body.get("deployedModel") or {}
            model = self.model(spec.get("model", ""))
            resources = spec.get("automaticResources")
            if not isinstance(resources, dict) or spec.get("dedicatedResources"):
                raise ApiFailure(400, "INVALID_ARGUMENT", "AutoML image models take "
                                 "automaticResources only.")
            self.created["deployments"] += 1
            dm_id = self._new_id()

            def finish() -> dict[str, Any]:
                dm = DeployedModel(dm_id, model.name, spec.get("displayName", ""), time.time(),
                                   resources)
                ep.deployed[dm_id] = dm
                split = body.get("trafficSplit") or {"0": 100}
                ep.traffic = {(dm_id if k == "0" else k): v for k, v in split.items()}
                return {"@type": f"{TYPE}DeployModelResponse", "deployedModel": _deployed_json(dm)}

            op = self._operation(ep.name, "DeployModel", finish)
            if self.pacing is not None:
                op.ready_at = self.pacing.deployment_done_at(ep.display_name)
            return op

    def undeploy(self, name: str, body: dict[str, Any]) -> Operation:
        with self.lock:
            ep = self.endpoint(name)
            dm_id = body.get("deployedModelId")
            if dm_id not in ep.deployed:
                raise ApiFailure(404, "NOT_FOUND", f"Deployed model {dm_id} not found on {name}.")

            def finish() -> dict[str, Any]:
                ep.deployed.pop(dm_id, None)
                ep.traffic.pop(dm_id, None)
                return {"@type": f"{TYPE}UndeployModelResponse"}

            return self._operation(ep.name, "UndeployModel", finish)

    def delete_endpoint(self, name: str) -> Operation:
        with self.lock:
            ep = self.endpoint(name)
            if ep.deployed:
                raise ApiFailure(400, "FAILED_PRECONDITION", f"Endpoint {name} has deployed "
                                 "models; undeploy them first.")

            def finish() -> dict[str, Any]:
                self.endpoints.pop(name, None)
                return {"@type": "type.googleapis.com/google.protobuf.Empty"}

            return self._operation(ep.name, "Delete", finish)

    def predict(self, name: str, image: bytes, threshold: float, limit: int
                ) -> tuple[DeployedModel, Model, list[tuple[str, str, float]]]:
        """(deployed model, model, [(spec id, label, confidence)] best first, filtered)."""
        with self.lock:
            ep = self.endpoint(name)
            if not ep.deployed:
                raise ApiFailure(400, "FAILED_PRECONDITION",
                                 f"Endpoint {name} does not have any deployed model.")
            dm = next(iter(ep.deployed.values()))
            model = self.model(dm.model)
            self.predictions += 1
        x = thumbnail(image)
        dists = {lb: math.dist(x, c) for lb, (_, c) in model.specs.items()}
        # Softmax over negative distances, the temperature scaled to the distances, so the
        # confidences are graded (never a flat 1.0) whatever the images look like.
        tau = 0.25 * sum(dists.values()) / max(1, len(dists)) + 1e-9
        weights = {lb: math.exp(-(d - min(dists.values())) / tau) for lb, d in dists.items()}
        total = sum(weights.values()) or 1.0
        ranked = sorted(((model.specs[lb][0], lb, w / total) for lb, w in weights.items()),
                        key=lambda t: -t[2])
        return dm, model, [r for r in ranked if r[2] >= threshold][:limit]

    # -- listing ---------------------------------------------------------------------------------
    def list(self, kind: str, parent: str, filter_: str) -> list[dict[str, Any]]:
        with self.lock:
            match = _filter(filter_)
            if kind == "datasets":
                return [self.dataset_json(d) for d in self.datasets.values()
                        if d.name.startswith(parent + "/") and match(d.display_name, d.labels)]
            if kind == "trainingPipelines":
                return [self.pipeline_json(p) for p in self.pipelines.values()
                        if p.name.startswith(parent + "/")
                        and match(p.body.get("displayName", ""), _labels(p.body))]
            if kind == "endpoints":
                return [self.endpoint_json(e) for e in self.endpoints.values()
                        if e.name.startswith(parent + "/") and match(e.display_name, e.labels)]
            if kind == "models":
                return [self.model_json(m) for m in self.models.values()
                        if m.name.startswith(parent + "/") and match(m.display_name, m.labels)]
        raise ApiFailure(404, "NOT_FOUND", f"unknown collection {kind}")


_GRPC_CODES = {"INVALID_ARGUMENT": 3, "NOT_FOUND": 5, "PERMISSION_DENIED": 7,
               "FAILED_PRECONDITION": 9, "INTERNAL": 13}
_CLAUSE = re.compile(r'\s*(labels\.([a-z][a-z0-9_-]*)|display_name)\s*=\s*"([^"]*)"\s*')


def _labels(body: dict[str, Any]) -> dict[str, str]:
    labels = body.get("labels") or {}
    for k, v in labels.items():
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", k) or not re.fullmatch(r"[a-z0-9_-]{0,63}",
                                                                              str(v)):
            raise ApiFailure(400, "INVALID_ARGUMENT", f"Invalid label {k}={v}: keys and values "
                             "hold lowercase letters, digits, '_' and '-' (keys start with a "
                             "letter), at most 63 characters.")
    return dict(labels)


def _filter(expr: str) -> Callable[[str, dict[str, str]], bool]:
    """The subset of the list filter grammar the fake understands: `a="x" AND b="y"` over
    `display_name` and `labels.<key>`. Anything else is a 400, as an unparsable filter is."""
    clauses: list[tuple[str | None, str]] = []
    if expr.strip():
        for part in re.split(r"\s+AND\s+", expr.strip()):
            m = _CLAUSE.fullmatch(part)
            if m is None:
                raise ApiFailure(400, "INVALID_ARGUMENT", f"Unsupported filter: {expr}")
            clauses.append((m[2], m[3]))

    def match(display_name: str, labels: dict[str, str]) -> bool:
        return all((labels.get(key) == value) if key else display_name == value
                   for key, value in clauses)

    return match


def _deployed_json(d: DeployedModel) -> dict[str, Any]:
    return {"id": d.id, "model": d.model, "displayName": d.display_name,
            "createTime": rfc3339(d.create_time), "automaticResources": d.resources,
            "modelVersionId": "1"}
