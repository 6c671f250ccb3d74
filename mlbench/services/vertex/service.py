"""Google Vertex AI's lifecycle: bucket -> dataset + import -> AutoML pipeline -> model; the
endpoint and its deployment only when the model is scored.

- upload: the ablation's train/val images and the test images to `gs://<buckets.google>/`
  `training_uploads/`, `val_uploads/`, `test_uploads/` (MD5-checked: a rerun sends nothing), the
  import file built by `export.import_file` (the seed's train + val + test rows), then one image
  dataset and its import.
- submit: one AutoML training pipeline (filter split on the file's `ml_use`), returned at once.
- wait: until the pipeline ends; the trained model (nothing deployed, nothing billed by the hour).
- connect: the run's endpoint (recorded, else found by the run's label, else created) with the
  model deployed on it; `teardown` undeploys what mlbench deployed (the empty endpoint is kept:
  it costs nothing).

What training creates is recorded in `<state_dir>/vertex.json` (inside the train stage's DVC
output); what serving creates (endpoint, deployment, since when it is billed) in the run's
deployment record (`Service.deployment`, outside every DVC output), so deploying or tearing
down never makes the trained model look changed to DVC. Each resource name (or its long-running
operation's) is recorded the moment the create call returns, and each resource carries the
run's fingerprint as a label, so a rerun after a crash (even one that lost its record) picks up
the same resources instead of paying for new ones. A step that failed on Vertex's side is
forgotten, so a rerun tries it afresh. Training seconds come from the pipeline's own start and
end times, the billed node hours from its `trainingTaskMetadata.costMilliNodeHours`.

Who deployed what: mlbench undeploys every model of an endpoint it created (labelled with the
run's fingerprint) and, on an endpoint made by hand (`vertex.endpoints`), only the deployment it
made itself; a model the user deployed by hand is never undeployed.

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
    TokenSource,
    VertexApi,
    deployed_models,
    failure,
    model_of,
    pipeline_done,
    pipeline_failed,
    pipeline_succeeded,
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
#: The label every resource mlbench creates carries (the run's fingerprint).
RUN_LABEL = "mlbench_run"


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
        return f'labels.{RUN_LABEL}="{self.key}"'

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
                        {RUN_LABEL: key, "mlbench_data": data_key,
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
        if pipeline is None or pipeline_failed(pipeline.state):
            pipeline = self._earliest("trainingPipelines", names.filter,
                                      lambda p: not pipeline_failed(p.state))
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
        """Until the pipeline succeeded: the trained model (deployed later, by `connect`)."""
        names = self.names(job.ids["run"], job.ids["data"])
        st = self.begin(names)
        pipeline = self._trained(job.ids["pipeline"])
        model = model_of(pipeline)
        st.update(model=model)
        ref = self._model_ref(pipeline, model, job.ids["labels"], job.ids["dataset"])
        ref.details["run"] = names.key
        return ref

    def _trained(self, name: str) -> Any:
        def check() -> tuple[bool, str, Any]:
            p = self.api.get(name)
            if p is None:
                raise ServiceError(f"vertex: training pipeline {name} is gone; rerun to start "
                                   "a new one")
            return pipeline_done(p.state), _state_name(p).removeprefix("PIPELINE_STATE_"), p

        p = wait_for(check, what=f"vertex: training {name.rsplit('/', 1)[-1]}",
                     every=self.settings.poll_seconds, timeout=self.settings.train_timeout,
                     hint="training goes on in Google Cloud; rerun to keep waiting (or raise "
                     "vertex.train_timeout)")
        if not pipeline_succeeded(p.state):
            raise failure(f"training pipeline {p.name} ended {_state_name(p)}",
                          p.error.code, p.error.message,
                          "fix the cause and rerun (a new pipeline will be started)")
        if not model_of(p):
            raise ServiceError(f"vertex: training pipeline {p.name} succeeded without a model; "
                               "look at it in the Cloud console")
        return p

    def _model_ref(self, pipeline: Any, model: str, labels: Mapping[str, str], dataset: str,
                   endpoint: str = "") -> ModelRef:
        """The model.json of a trained model; `endpoint` only for a hand-given one (a trained
        model's endpoint is the deployment record's business)."""
        s, model_id = self.settings, model.rsplit("/", 1)[-1]
        ref = ModelRef(
            service=self.name, dataset=self.ctx.dataset, ablation=self.ctx.ablation,
            ids={"project": self.project, "region": s.region, "model": model, "pipeline": "",
                 "dataset": dataset},
            details={"labels": dict(labels), "model_type": s.model_type,
                     "budget_milli_node_hours": s.budget_milli_node_hours,
                     "console": f"https://console.cloud.google.com/vertex-ai/locations/"
                                f"{s.region}/models/{model_id}?project={self.project}"})
        if endpoint:
            ref.ids.update(endpoint=endpoint, endpoint_id=endpoint.rsplit("/", 1)[1])
        if pipeline is not None:
            started, finished = pipeline.start_time or pipeline.create_time, pipeline.end_time
            ref.ids["pipeline"] = pipeline.name
            ref.started_at = started.isoformat() if started else None
            ref.finished_at = finished.isoformat() if finished else None
            if started and finished:
                ref.train_seconds = (finished - started).total_seconds()
            cost = billed_milli_node_hours(pipeline)
            if cost is not None:
                ref.details["cost_milli_node_hours"] = cost
                ref.details["billable_training_hours"] = cost / 1000
        return ref

    def adopt(self, given: str) -> ModelRef:
        """An endpoint made elsewhere (`vertex.endpoints.<ds>.<n>`); training time from the
        pipeline of its model, when it has one. Its deployments are the user's: never undeployed
        by mlbench."""
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
        ref = self._model_ref(pipeline, model,
                              invert(vertex_label_map(read_classes(self.ctx.dataset))), "",
                              endpoint)
        ref.details["source"] = self.where()
        return ref

    def recorded(self) -> ModelRef | None:
        """model.json; else the model a crash left in the state store (trained, model.json not
        yet written) or in the deployment record; else the hand-given endpoint."""
        model = super().recorded()
        if model is not None:
            return model
        for record in (self.state, self.deployment):
            if record.get("model"):
                return ModelRef(self.name, self.ctx.dataset, self.ctx.ablation, ids={
                    "model": record.get("model"), "pipeline": record.get("pipeline", ""),
                    "dataset": record.get("dataset", "")},
                    details={"run": record.get("run"), "source": str(record.path)})
        given = self.hand_given()
        if given:
            return ModelRef(self.name, self.ctx.dataset, self.ctx.ablation, ids={
                "endpoint": self.settings.endpoint_name(given, self.project)},
                details={"source": self.where()})
        return None

    # -- serving: the endpoint and its deployment (recorded outside the DVC outputs) --------------
    def _run_names(self, model: ModelRef) -> RunNames:
        """The names and labels of the run that trained `model` (a model without a recorded
        run, made elsewhere, gets one from its name)."""
        run = str(model.details.get("run") or _digest([model.ids.get("model", "")]))
        st = self.state
        return self.names(run, str(st.get("data") or "") if st.get("run") == run else "")

    def _endpoint_of(self, model: ModelRef, create: bool) -> str:
        """Where `model` is served: the hand-given endpoint; else the deployment record's (the
        run's, or one still billing for an earlier model); else the run's endpoint found by its
        label; else, with `create`, a new one (its operation recorded before the wait)."""
        if model.ids.get("endpoint"):
            return str(model.ids["endpoint"])
        dep, names = self.deployment, self._run_names(model)
        if not create:
            if dep.get("endpoint") and (dep.get("up") or dep.get("run") == names.key):
                return str(dep.get("endpoint"))
            found = self._earliest("endpoints", names.filter)
            return found.name if found is not None else ""
        if dep.get("run") != names.key:  # the record's endpoint is an earlier model's
            dep.update(run=names.key, endpoint=None, endpoint_op=None)
        return self._created(dep, "endpoint", names,
                             lambda: self.api.create_endpoint(names.display, names.labels),
                             self.settings.deploy_timeout, names.filter)

    def _serving(self, model: ModelRef) -> tuple[str, Any]:
        """Where `model` is served (without creating anything), and that endpoint now (None
        when there is none)."""
        self.check_access()
        endpoint = self._endpoint_of(model, create=False)
        return endpoint, self.api.get(endpoint) if endpoint else None

    def _deployed(self, model: ModelRef) -> str:
        """`model` deployed on its endpoint (deployed once, billed from then on); the endpoint.

        A deployment this record holds of another model (the inputs changed and a new model was
        trained) is undeployed first: the slot serves one model, and nothing is left billing
        unrecorded."""
        s, dep, name = self.settings, self.deployment, model.ids.get("model")
        self.check_access()
        if dep.get("up") and dep.get("model") and dep.get("model") != name:
            note(f"{dep.get('model')} is superseded by {name or 'a model made by hand'}: "
                 "undeploying it")
            self._undeploy_ours(dep.get("endpoint"), self.api.get(dep.get("endpoint")))
        endpoint = self._endpoint_of(model, create=True)
        if model.ids.get("endpoint") and self.api.get(endpoint) is None:
            where = model.details.get("source") or self.where()
            raise UserError(f"vertex: endpoint {endpoint} ({where}) no longer exists; give "
                            "another in params.yaml")
        if not name:  # a hand-given endpoint whose model is unknown: served as it is
            if not deployed_models(self.api.get(endpoint)):
                raise UserError(f"vertex: endpoint {endpoint} ({self.where()}) has no deployed "
                                "model; deploy one in the console")
            return endpoint
        if self._deployed_id(endpoint, name) is None:
            op = dep.get("deploy_op")
            if not op:
                names = self._run_names(model)
                op = self.api.deploy(endpoint, name, names.display,
                                     (s.min_replicas, s.max_replicas))
                dep.update(deploy_op=op, model=name, run=names.key, endpoint=endpoint)
                dep.up(endpoint, units=s.min_replicas, max_nodes=s.max_replicas)
                note(f"deploying {name} to {endpoint} (billed per node hour until `mlbench "
                     f"vertex undeploy {self.ctx.dataset} {self.ctx.ablation}` or the "
                     "pipeline's teardown stage)")
            self._wait_op(op, "deploy model", s.deploy_timeout,
                          lambda: (dep.update(deploy_op=None), dep.down()))
            dep.update(deployed_model_id=self._deployed_id(endpoint, name), deploy_op=None)
        return endpoint

    def _deployed_id(self, endpoint: str, model: str) -> str | None:
        return next((i for i, m in deployed_models(self.api.get(endpoint)).items()
                     if m == model), None)

    def _undeploy_ours(self, endpoint: str, ep: Any) -> tuple[int, int]:
        """Undeploy what mlbench deployed on `endpoint`: every model of an endpoint it created,
        only its own deployment on one made by hand. (undeployed, left deployed by hand)."""
        dep = self.deployment
        if dep.get("deploy_op") and dep.get("endpoint") == endpoint:  # a deployment under way
            self._wait_op(dep.get("deploy_op"), "deploy model (before undeploying it)",
                          self.settings.deploy_timeout, lambda: dep.update(deploy_op=None))
            dep.update(deploy_op=None, deployed_model_id=self._deployed_id(
                endpoint, dep.get("model", "")))
            ep = self.api.get(endpoint)
        deployed = deployed_models(ep)
        ours = set(deployed) if is_ours(ep) else {dep.get("deployed_model_id")} & set(deployed)
        for dm_id in sorted(ours):
            self._wait_op(self.api.undeploy(endpoint, dm_id), f"undeploy {dm_id}",
                          self.settings.deploy_timeout)
        if dep.get("endpoint") == endpoint:
            dep.update(deployed_model_id=None, deploy_op=None)
            dep.down()
        return len(ours), len(deployed) - len(ours)

    def connect(self, model: ModelRef) -> None:
        """Deploy the model unless it is deployed (billed from then on), then serve from it."""
        endpoint = self._deployed(model)
        back = model.details.get("labels")
        if not isinstance(back, dict) or not back:
            back = invert(vertex_label_map(read_classes(self.ctx.dataset)))
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

    # -- vendor commands and the teardown stage ----------------------------------------------------
    def describe(self, model: ModelRef) -> str:
        endpoint, ep = self._serving(model)
        if not endpoint:
            return "trained, not deployed: nothing billed"
        if ep is None:
            return f"endpoint {endpoint} is gone: nothing billed"
        count, dep = len(ep.deployed_models), self.deployment
        if not count:
            return f"endpoint {endpoint}: 0 model(s) deployed, nothing billed"
        who = f" since {dep.get('since')}" if dep.get("up") and dep.get("endpoint") == endpoint \
            else "" if is_ours(ep) else " by hand (mlbench leaves them)"
        return f"endpoint {endpoint}: {count} model(s) deployed{who} (billed per node hour)"

    def teardown(self, model: ModelRef) -> str:
        """Undeploy what mlbench deployed for the model (the endpoint itself costs nothing: kept);
        a model deployed by hand on a hand-given endpoint stays."""
        endpoint, ep = self._serving(model)
        if not endpoint:
            self.deployment.down()
            return "not deployed: nothing billed"
        if ep is None:
            self.deployment.down()
            return f"endpoint {endpoint} does not exist any more: nothing billed"
        undeployed, left = self._undeploy_ours(endpoint, ep)
        line = f"{endpoint}: {undeployed} model(s) undeployed (endpoint kept)"
        return line + (f"; {left} deployed by hand left as they are (still billed: undeploy "
                       "them in the console)" if left else "")

    def deploy(self, model: ModelRef) -> str:
        """Deploy the trained model again (on the run's endpoint, or a new one when that was
        deleted); a hand-given endpoint is checked to serve."""
        if not model.ids.get("model") and not model.ids.get("endpoint"):
            raise UserError(f"vertex: no trained model recorded for {self.ctx.dataset}/"
                            f"{self.ctx.ablation}; run `mlbench train vertex {self.ctx.dataset}`")
        endpoint = self._deployed(model)
        return f"{model.ids.get('model') or 'the model'} is deployed on {endpoint}"


def is_ours(endpoint: Any) -> bool:
    """An endpoint mlbench created (it carries a run's fingerprint label)."""
    return endpoint is not None and RUN_LABEL in dict(endpoint.labels)


def billed_milli_node_hours(pipeline: Any) -> float | None:
    """`trainingTaskMetadata.costMilliNodeHours` of a finished pipeline (what Google bills for
    the training; a number or, as int64 in JSON, a string), or None when it does not say."""
    value = dict(pipeline.training_task_metadata or {}).get("costMilliNodeHours")
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


SERVICE = VertexService
