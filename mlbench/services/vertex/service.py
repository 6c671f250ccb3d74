"""Google Vertex AI's lifecycle: bucket -> dataset + import -> AutoML pipeline -> endpoint.

- upload: the ablation's train/val images and the test images to `gs://<buckets.google>/`
  `training_uploads/`, `val_uploads/`, `test_uploads/` (MD5-checked: a rerun sends nothing), the
  import file built by `export.import_file` (the seed's train + val + test rows), then one image
  dataset and its import.
- submit: one AutoML training pipeline (filter split on the file's `ml_use`), returned at once.
- wait: until the pipeline ends, then one endpoint and one deployment.

Each resource name (or its long-running operation's) is recorded in `<state_dir>/vertex.json`
the moment the create call returns, and each resource carries the run's fingerprint as a label,
so a rerun after a crash (even one that lost the state file) picks up the same resources instead
of paying for new ones. A step that failed on Vertex's side is forgotten, so a rerun tries it
afresh. Training seconds come from the pipeline's own start and end times.

Predictions are `POST <api>/v1/<endpoint>:predict` on the shared HTTP path (sync and async).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mlbench.console import err, warn
from mlbench.core import AblationSplit, ImageRef, ModelRef, Prediction
from mlbench.data.export import load_test_images
from mlbench.data.prepare import read_classes
from mlbench.errors import ServiceCallError, ServiceError, UserError
from mlbench.retry import RetryPolicy
from mlbench.services.base import Job, ServiceContext
from mlbench.services.cloud import StateStore, wait_for
from mlbench.services.http import HttpRequest, HttpService, best_of
from mlbench.services.vertex.api import (
    DONE,
    FAILED,
    State,
    TokenSource,
    VertexApi,
    deployed_models,
    failure,
    model_of,
    resource_of,
)
from mlbench.services.vertex.export import import_file, object_name
from mlbench.services.vertex.gcs import Bucket
from mlbench.services.vertex.labels import invert, vertex_label_map

STATE_FILE = "vertex.json"
#: Vertex AutoML image classification wants at least 10 images per label in the dataset; the
#: seed trained its 5-per-class ablations with the test images as TEST split, so all splits count.
MIN_IMAGES_PER_LABEL = 10
MAX_PREDICT_BYTES = 1_500_000
#: What a recorded resource's loss voids: its import, or its deployment.
_DEPENDENTS = {"dataset": ("imported", "import_op"), "endpoint": ("deploy_op", "deployed_model_id")}


def check_minimum(split: AblationSplit, tests: Sequence[ImageRef]) -> None:
    """Refuse an ablation that leaves a label under Vertex's minimum, naming the worst class."""
    counts = Counter(r.class_name for r in (*split.train, *split.val, *tests))
    short = sorted((counts.get(c, 0), c) for c in split.classes
                   if counts.get(c, 0) < MIN_IMAGES_PER_LABEL)
    if short:
        k, cls = short[0]
        raise UserError(f"vertex: {split.dataset} ablation {split.size} gives class {cls!r} only "
                        f"{k} images (train + val + test; {len(short)} classes are short); "
                        f"Vertex AutoML needs at least {MIN_IMAGES_PER_LABEL} per label: choose "
                        "a larger `ablation` or more `test_per_class` in params.yaml")


def best_prediction(body: bytes, back: Mapping[str, str]) -> Prediction:
    """A `:predict` answer's most confident display name, mapped back to its class."""
    try:
        preds = json.loads(body)["predictions"]
        first = (preds[0] if preds else None) or {}
        names, confs = first.get("displayNames") or [], first.get("confidences") or []
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        raise ServiceCallError(f"malformed Vertex answer: {body[:200]!r}") from None
    if len(names) != len(confs):
        raise ServiceCallError(f"malformed Vertex answer: {len(names)} displayNames, "
                               f"{len(confs)} confidences")
    return best_of([(back.get(n, n), float(c)) for n, c in zip(names, confs, strict=True)])


def label_value(text: str) -> str:
    """A string as a GCP resource-label value (lowercase letters, digits, '_', '-'; 63 max)."""
    out = "".join(c if c.isalnum() or c in "_-" else "-" for c in text.lower())
    return out.encode("ascii", "ignore").decode()[:63]


def _digest(parts: object) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def _state_name(pipeline: Any) -> str:
    return getattr(pipeline.state, "name", str(pipeline.state))


def note(message: str) -> None:
    err.print(f"vertex: {message}")


@dataclass(frozen=True)
class RunNames:
    """How a run's resources are named and labelled. `key` fingerprints what the model depends
    on (import file, budget, model type); `data_key` the import file alone, so a new budget
    trains on the same dataset."""

    key: str
    data_key: str
    display: str
    labels: dict[str, str]

    @property
    def filter(self) -> str:
        return f'labels.mlbench_run="{self.key}"'

    @property
    def data_filter(self) -> str:
        return f'labels.mlbench_data="{self.data_key}"'


class VertexService(HttpService):
    """Vertex AI AutoML image classification: GAPIC clients for the control plane, raw REST for
    the predictions."""

    name = "vertex"

    def __init__(self, ctx: ServiceContext):
        super().__init__(ctx)
        self.retry = RetryPolicy(timeout=self.settings.request_timeout)
        self._tokens: TokenSource | None = None
        self._api: VertexApi | None = None
        self._store: StateStore | None = None
        self._predict_url = ""
        self._back: dict[str, str] = {}
        self._params: dict[str, Any] = {}

    # -- plumbing --------------------------------------------------------------------------------
    @property
    def project(self) -> str:
        return self.settings.resolve_project()

    @property
    def tokens(self) -> TokenSource:
        if self._tokens is None:
            self._tokens = TokenSource.from_environment()
        return self._tokens

    @property
    def api(self) -> VertexApi:
        if self._api is None:
            self._api = VertexApi(self.settings.base_url, self.project, self.settings.region,
                                  self.tokens.credentials, self.retry)
        return self._api

    @property
    def state(self) -> StateStore:
        """The run's record, ignored when made against another API, project or region."""
        if self._store is None:
            self._store = StateStore(self.ctx.state_dir / STATE_FILE, {
                "api": self.settings.base_url, "project": self.project,
                "region": self.settings.region})
        return self._store

    def check_access(self) -> None:
        """Project, credentials and a first token, before anything is created anywhere."""
        _ = self.project
        self.tokens.token()

    def names(self, key: str, data_key: str = "") -> RunNames:
        ds, n = self.ctx.dataset, self.ctx.ablation
        return RunNames(key, data_key, f"{self.settings.name_prefix}-{ds}-{n}-{key[:8]}",
                        {"mlbench_run": key, "mlbench_data": data_key,
                         "mlbench_dataset": label_value(ds), "mlbench_ablation": str(n)})

    def plan(self, split: AblationSplit) -> tuple[list[ImageRef], str, RunNames]:
        """The test images, the import file and the run's names; refuses a too small ablation
        before anything is sent."""
        tests = load_test_images(self.ctx.dataset)
        check_minimum(split, tests)
        text = import_file(split, tests, self.ctx.bucket("google"),
                           vertex_label_map(split.classes))
        data_key = _digest([split.dataset, split.size, text])
        s = self.settings
        key = _digest([data_key, s.model_type, s.budget_milli_node_hours,
                       s.disable_early_stopping])
        return tests, text, self.names(key, data_key)

    def begin(self, names: RunNames) -> StateStore:
        """The state of run `names.key`: a fresh one when the inputs changed."""
        self.check_access()
        st = self.state
        if st.get("run") != names.key:
            if st.get("endpoint"):
                warn(f"vertex: the inputs of {self.ctx.dataset}/{self.ctx.ablation} changed "
                     f"since the last run; training a new model. The old endpoint "
                     f"{st.get('endpoint')} keeps billing while a model is deployed on it "
                     "(undeploy it in the console)")
            st.reset(run=names.key, data=names.data_key)
        return st

    def _wait_op(self, name: str, what: str, timeout: float,
                 forget: Callable[[], None] = lambda: None) -> None:
        """Wait for a long-running operation; a failed one is forgotten and raised."""
        def check() -> tuple[bool, str, Any]:
            op = self.api.operation(name)
            return op.done, "done" if op.done else "running", op

        op = wait_for(check, what=f"vertex: {what}", every=self.settings.poll_seconds,
                      timeout=timeout, hint="it goes on in Google Cloud; rerun to keep waiting "
                      "(or raise the vertex timeout in params.yaml)")
        if op.HasField("error"):
            forget()
            raise failure(f"{what} failed", op.error.code, op.error.message,
                          f"operation {name}; rerun to try again")

    def _earliest(self, kind: str, filter_: str,
                  keep: Callable[[Any], bool] = lambda _: True) -> Any:
        """The oldest resource of a run a crash left behind (found by its label), or None."""
        found = [r for r in self.api.find(kind, filter_) if keep(r)]
        if not found:
            return None
        first = min(found, key=lambda r: r.create_time)
        note(f"found {first.name} of an earlier run")
        return first

    def _created(self, st: StateStore, key: str, names: RunNames, create: Callable[[], str],
                 timeout: float, filter_: str) -> str:
        """The run's dataset or endpoint: recorded, else found by label, else created (its
        operation recorded before the wait)."""
        name = st.get(key)
        if name and self.api.get(name) is None:
            warn(f"vertex: recorded {key} {name} is gone; making a new one")
            st.update(**dict.fromkeys((key, f"{key}_op", *_DEPENDENTS[key])))
            name = None
        if not name:
            found = self._earliest(f"{key}s", filter_)
            name = found.name if found is not None else None
            st.update(**{key: name})
        if not name:
            op = create()
            name = resource_of(op)
            st.update(**{key: name, f"{key}_op": op})
            note(f"created {key} {name}")
        if st.get(f"{key}_op"):
            self._wait_op(st.get(f"{key}_op"), f"create {key}", timeout,
                          lambda: st.update(**{key: None, f"{key}_op": None}))
            st.update(**{f"{key}_op": None})
        return name

    # -- upload: images, import file, dataset, import ----------------------------------------------
    def upload(self, split: AblationSplit) -> None:
        tests, text, names = self.plan(split)
        st = self.begin(names)
        s, ds, n = self.settings, self.ctx.dataset, self.ctx.ablation
        bucket = Bucket(self.ctx.bucket("google"), self.project, self.tokens.credentials,
                        s.region, self.retry)
        items = [(r.path, object_name(part, r)) for part, refs in
                 (("train", split.train), ("val", split.val), ("test", tests)) for r in refs]
        sent, skipped = bucket.sync(items, s.upload_concurrency, f"gcs upload {ds}/{n}")
        note(f"gs://{bucket.bucket.name}: {sent} images uploaded, {skipped} already there")
        st.update(import_csv=bucket.put_text(f"imports/{ds}_vertex_{n}.csv", text),
                  import_rows=len(items))
        dataset = self._created(st, "dataset", names,
                                lambda: self.api.create_dataset(names.display, names.labels),
                                s.import_timeout, names.data_filter)
        self._import(st, dataset)

    def _import(self, st: StateStore, dataset: str) -> None:
        """Import the run's file once (a dataset that already holds it is not imported again)."""
        if st.get("imported"):
            return
        expected, op = int(st.get("import_rows") or 0), st.get("import_op")
        if not op:
            count = int(getattr(self.api.get(dataset), "data_item_count", 0))
            if expected and count >= expected:  # imported by a run that lost its record
                st.update(imported=True, data_items=count)
                return
            op = self.api.import_data(dataset, st.get("import_csv"))
            st.update(import_op=op)
            note(f"importing {st.get('import_csv')} into {dataset}")
        self._wait_op(op, "import images", self.settings.import_timeout,
                      lambda: st.update(import_op=None))
        count = int(getattr(self.api.get(dataset), "data_item_count", 0))
        if count < expected:
            warn(f"vertex: the dataset holds {count} of {expected} images (Vertex merges "
                 "identical images); training on what it kept")
        st.update(imported=True, data_items=count, import_op=None)

    # -- training --------------------------------------------------------------------------------
    def submit(self, split: AblationSplit) -> Job:
        """Start the run's training pipeline (or find the one a crash left); returns at once."""
        _, _, names = self.plan(split)
        st = self.begin(names)
        if not st.get("imported"):
            self.upload(split)
        dataset, s = st.get("dataset"), self.settings
        name = st.get("pipeline")
        pipeline = self.api.get(name) if name else None
        if pipeline is None or pipeline.state in FAILED:
            pipeline = self._earliest("trainingPipelines", names.filter,
                                      lambda p: p.state not in FAILED)
        if pipeline is None:
            pipeline = self.api.create_pipeline(names.display, names.labels, dataset, {
                "modelType": s.model_type, "multiLabel": False,
                "budgetMilliNodeHours": s.budget_milli_node_hours,
                "disableEarlyStopping": s.disable_early_stopping})
            note(f"started training {pipeline.name} ({s.model_type}, budget "
                 f"{s.budget_milli_node_hours} milli node hours)")
        st.update(pipeline=pipeline.name)
        return Job(split.dataset, split.size, {
            "pipeline": pipeline.name, "run": names.key, "data": names.data_key,
            "dataset": dataset, "labels": invert(vertex_label_map(split.classes))})

    def wait(self, job: Job) -> ModelRef:
        """Until the pipeline succeeded, then the model deployed on the run's endpoint."""
        names = self.names(job.ids["run"], job.ids["data"])
        st = self.begin(names)
        pipeline = self._trained(job.ids["pipeline"])
        model = model_of(pipeline)
        st.update(model=model)
        endpoint = self._deployed(st, names, model)
        ref = self._model_ref(pipeline, endpoint, model, job.ids["labels"], job.ids["dataset"])
        ref.details["run"] = names.key
        return ref

    def _trained(self, name: str) -> Any:
        def check() -> tuple[bool, str, Any]:
            p = self.api.get(name)
            if p is None:
                raise ServiceError(f"vertex: training pipeline {name} is gone; rerun to start "
                                   "a new one")
            return p.state in DONE, _state_name(p).removeprefix("PIPELINE_STATE_"), p

        p = wait_for(check, what=f"vertex: training {name.rsplit('/', 1)[-1]}",
                     every=self.settings.poll_seconds, timeout=self.settings.train_timeout,
                     hint="training goes on in Google Cloud; rerun to keep waiting (or raise "
                     "vertex.train_timeout)")
        if p.state != State.PIPELINE_STATE_SUCCEEDED:
            raise failure(f"training pipeline {p.name} ended {_state_name(p)}",
                          p.error.code, p.error.message,
                          "fix the cause and rerun (a new pipeline will be started)")
        if not model_of(p):
            raise ServiceError(f"vertex: training pipeline {p.name} succeeded without a model; "
                               "look at it in the Cloud console")
        return p

    def _deployed(self, st: StateStore, names: RunNames, model: str) -> str:
        """The run's endpoint with `model` deployed on it (deployed once)."""
        s = self.settings
        endpoint = self._created(st, "endpoint", names,
                                 lambda: self.api.create_endpoint(names.display, names.labels),
                                 s.deploy_timeout, names.filter)
        deployed = self._deployed_id(endpoint, model)
        if deployed is None:
            op = st.get("deploy_op")
            if not op:
                op = self.api.deploy(endpoint, model, names.display,
                                     (s.min_replicas, s.max_replicas))
                st.update(deploy_op=op)
                note(f"deploying {model} to {endpoint} (billed per node hour until undeployed)")
            self._wait_op(op, "deploy model", s.deploy_timeout, lambda: st.update(deploy_op=None))
            deployed = self._deployed_id(endpoint, model)
        st.update(deployed_model_id=deployed, deploy_op=None)
        return endpoint

    def _deployed_id(self, endpoint: str, model: str) -> str | None:
        return next((i for i, m in deployed_models(self.api.get(endpoint)).items()
                     if m == model), None)

    def _model_ref(self, pipeline: Any, endpoint: str, model: str, labels: Mapping[str, str],
                   dataset: str) -> ModelRef:
        s, endpoint_id = self.settings, endpoint.rsplit("/", 1)[1]
        ref = ModelRef(
            service=self.name, dataset=self.ctx.dataset, ablation=self.ctx.ablation,
            ids={"project": self.project, "region": s.region, "endpoint": endpoint,
                 "endpoint_id": endpoint_id, "model": model, "pipeline": "", "dataset": dataset},
            details={"labels": dict(labels), "model_type": s.model_type,
                     "budget_milli_node_hours": s.budget_milli_node_hours,
                     "console": f"https://console.cloud.google.com/vertex-ai/locations/"
                                f"{s.region}/endpoints/{endpoint_id}?project={self.project}"})
        if pipeline is not None:
            started, finished = pipeline.start_time or pipeline.create_time, pipeline.end_time
            ref.ids["pipeline"] = pipeline.name
            ref.started_at = started.isoformat() if started else None
            ref.finished_at = finished.isoformat() if finished else None
            if started and finished:
                ref.train_seconds = (finished - started).total_seconds()
            ref.details["cost_milli_node_hours"] = dict(
                pipeline.training_task_metadata or {}).get("costMilliNodeHours")
        return ref

    def adopt(self, given: str) -> ModelRef:
        """An endpoint made elsewhere (`vertex.endpoints.<ds>.<n>`); training time from the
        pipeline of its model, when it has one."""
        self.check_access()
        endpoint = self.settings.endpoint_name(given, self.project)
        ep = self.api.get(endpoint)
        if ep is None:
            raise UserError(f"params.yaml: {self.where()}: no endpoint {endpoint} in project "
                            f"{self.project} ({self.settings.region})")
        deployed = deployed_models(ep)
        if not deployed:
            raise UserError(f"params.yaml: {self.where()}: endpoint {endpoint} has no deployed "
                            "model; deploy one in the console first")
        model = next(iter(deployed.values()))
        trained = self.api.get(model)
        pipeline = self.api.get(trained.training_pipeline) \
            if trained is not None and trained.training_pipeline else None
        note(f"using endpoint {endpoint} ({self.where()})")
        ref = self._model_ref(pipeline, endpoint, model,
                              invert(vertex_label_map(read_classes(self.ctx.dataset))), "")
        ref.details["source"] = self.where()
        return ref

    def recorded(self) -> ModelRef | None:
        """model.json; else what the state store holds (a crash after the endpoint was made);
        else the hand-given endpoint."""
        model = super().recorded()
        if model is not None:
            return model
        st, given = self.state, self.hand_given()
        if st.get("endpoint"):
            return ModelRef(self.name, self.ctx.dataset, self.ctx.ablation, ids={
                "endpoint": st.get("endpoint"), "model": st.get("model", ""),
                "pipeline": st.get("pipeline", ""), "dataset": st.get("dataset", "")},
                details={"run": st.get("run"), "source": str(st.path)})
        if given:
            return ModelRef(self.name, self.ctx.dataset, self.ctx.ablation, ids={
                "endpoint": self.settings.endpoint_name(given, self.project)},
                details={"source": self.where()})
        return None

    # -- serving ---------------------------------------------------------------------------------
    def endpoint_of(self, model: ModelRef) -> str:
        """Where `model` is served: the state store's endpoint once `deploy` had to make a new
        one for it (model.json is never rewritten), else model.json's."""
        st = self.state
        if model.ids.get("model") and st.get("model") == model.ids["model"] \
                and st.get("endpoint"):
            return st.get("endpoint")
        return model.ids.get("endpoint") or ""

    def connect(self, model: ModelRef) -> None:
        endpoint, ep = self._serving(model)
        ds, n = self.ctx.dataset, self.ctx.ablation
        if not endpoint:
            raise UserError(f"{self.ctx.state_dir / 'model.json'}: no Vertex endpoint recorded; "
                            f"run `mlbench train vertex {ds}`")
        if ep is None or not ep.deployed_models:
            why = "no longer exists" if ep is None else "has no deployed model (undeployed?)"
            raise UserError(f"vertex: endpoint {endpoint} {why}; run `mlbench vertex deploy "
                            f"{ds} {n}`")
        back = model.details.get("labels")
        if not isinstance(back, dict) or not back:
            back = invert(vertex_label_map(read_classes(ds)))
        self._back = {str(k): str(v) for k, v in back.items()}
        self._predict_url = f"{self.settings.base_url}/v1/{endpoint}:predict"
        self._params = {"confidenceThreshold": self.settings.confidence_threshold,
                        "maxPredictions": self.settings.max_predictions}

    def build_request(self, image: bytes) -> HttpRequest:
        if not self._predict_url:
            raise ServiceCallError("vertex: connect() was not called")
        if len(image) > MAX_PREDICT_BYTES:
            raise ServiceCallError(f"image is {len(image) / 1e6:.2f} MB; Vertex AI predicts on "
                                   "at most 1.5 MB (lower max_side in params.yaml)")
        try:
            token = self.tokens.token()
        except UserError as exc:
            raise ServiceCallError(str(exc)) from None
        body = {"instances": [{"content": base64.b64encode(image).decode("ascii")}],
                "parameters": self._params}
        return HttpRequest("POST", self._predict_url, {"Authorization": f"Bearer {token}",
                                                       "Content-Type": "application/json"},
                           json.dumps(body).encode())

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> Prediction:
        return best_prediction(body, self._back)

    def on_unauthorized(self) -> bool:
        try:
            self.tokens.token(force=True)
        except UserError:
            return False
        return True

    def close(self) -> None:
        super().close()
        if self._api is not None:
            self._api.close()
            self._api = None

    # -- vendor commands -------------------------------------------------------------------------
    def _serving(self, model: ModelRef) -> tuple[str, Any]:
        """Where `model` is served, and that endpoint now (None when there is none)."""
        endpoint = self.endpoint_of(model)
        self.check_access()
        return endpoint, self.api.get(endpoint) if endpoint else None

    def describe(self, model: ModelRef) -> str:
        endpoint, ep = self._serving(model)
        if ep is None:
            return f"endpoint {endpoint or '-'} is gone: nothing billed"
        count = len(ep.deployed_models)
        return f"endpoint {endpoint}: {count} model(s) deployed" + (
            " (billed per node hour)" if count else ", nothing billed")

    def teardown(self, model: ModelRef) -> str:
        """Undeploy every model of the endpoint (the endpoint itself costs nothing; kept)."""
        endpoint, ep = self._serving(model)
        if ep is None:
            return f"endpoint {endpoint or '-'} does not exist any more: nothing billed"
        deployed = deployed_models(ep)
        for dm_id in deployed:
            self._wait_op(self.api.undeploy(endpoint, dm_id), f"undeploy {dm_id}",
                          self.settings.deploy_timeout)
        if self.state.get("endpoint") == endpoint:
            self.state.update(deployed_model_id=None, deploy_op=None)
        return f"{endpoint}: {len(deployed)} model(s) undeployed (endpoint kept)"

    def deploy(self, model: ModelRef) -> str:
        """Deploy the trained model again, on its endpoint, or on a new one recorded in the
        state store when that was deleted."""
        name = model.ids.get("model")
        if not name:
            raise UserError(f"vertex: no trained model recorded for {self.ctx.dataset}/"
                            f"{self.ctx.ablation}; run `mlbench train vertex {self.ctx.dataset}`")
        self.check_access()
        st = self.state
        if st.get("model") != name:  # a model this record does not describe (hand-given, lost)
            st.reset(run=model.details.get("run") or _digest([name]), model=name,
                     endpoint=model.ids.get("endpoint"))
        names = self.names(st.get("run") or _digest([name]), st.get("data", ""))
        return f"{name} is deployed on {self._deployed(st, names, name)}"


SERVICE = VertexService
