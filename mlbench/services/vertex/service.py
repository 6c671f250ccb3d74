"""Google Vertex AI: AutoML image classification, from the bucket upload to a deployed endpoint.

- upload: the ablation's train/val images and the test images go to `gs://<buckets.google>/`
  `training_uploads/`, `val_uploads/`, `test_uploads/` (MD5-checked, so a rerun sends nothing),
  and an import CSV (`training|validation|test,gs://...,<label>`) is written beside them.
  Class names are mapped to legal Vertex labels (letters, digits, underscores, starting with a
  letter) by `mlbench.data.labels.vertex_label_map`, the same mapping the data stage uses.
- train: one image dataset, one import, one AutoML training pipeline (filter split on the
  CSV's ml_use), one endpoint, one deployment. Each resource name is written to
  `<state_dir>/vertex.json` the moment it is created, and each resource carries the run's
  fingerprint as a label, so a rerun after a crash (even one that lost the state file) picks
  up the same resources instead of paying for new ones. Training seconds come from the
  pipeline's own `startTime`/`endTime`.
- predict: `POST <api>/v1/<endpoint>:predict` with the AutoML image instance format; the best
  of `displayNames`/`confidences` mapped back to the class name, an empty answer -> no label.
- An endpoint made elsewhere (the seed's console path) is used as-is when set in
  `vertex.endpoints.<dataset>.<ablation>`.

Credentials: GOOGLE_APPLICATION_CREDENTIALS (or application-default credentials); project:
`vertex.project` or GOOGLE_CLOUD_PROJECT. `mlbench vertex undeploy <ds> <n>` stops the billing
of a deployed model. See docs/services/vertex.md.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlbench.console import warn
from mlbench.data.labels import invert, vertex_label_map
from mlbench.errors import UserError
from mlbench.io import atomic_write_json, read_json
from mlbench.services.base import (
    AblationSplit,
    ImageRef,
    ModelRef,
    Prediction,
    ServiceContext,
    register,
)
from mlbench.services.http import HttpRequest, HttpService, RetryPolicy, ServiceCallError
from mlbench.services.vertex.api import TokenSource, VertexApi, parse_time
from mlbench.services.vertex.cli import cli
from mlbench.services.vertex.gcs import FOLDER, ML_USE, UploadItem
from mlbench.services.vertex.lifecycle import (
    Lifecycle,
    RunNames,
    RunState,
    model_of,
    note,
    undeploy_all,
)
from mlbench.services.vertex.settings import VertexSettings

__all__ = ["VertexService", "cli"]

STATE_FILE = "vertex.json"
#: Vertex AutoML image classification wants at least 10 images per label in the dataset; the
#: seed trained its 5-per-class ablations with the test images as TEST split, so all splits count.
MIN_IMAGES_PER_LABEL = 10
MAX_PREDICT_BYTES = 1_500_000


# -- pure helpers (tested directly) ----------------------------------------------------------------
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


def upload_items(split: AblationSplit, tests: Sequence[ImageRef]) -> list[UploadItem]:
    """Every image of the run and its object name (`<folder>/<filename>`)."""
    parts = (("train", split.train), ("val", split.val), ("test", tests))
    items = [UploadItem(r.path, f"{FOLDER[s]}/{r.filename}") for s, refs in parts for r in refs]
    seen = Counter(it.blob for it in items)
    dup = next((name for name, k in seen.items() if k > 1), None)
    if dup:  # one object per file name: two images with one name would overwrite each other
        raise UserError(f"vertex: two images map to gs://.../{dup}; image file names must be "
                        f"unique in {split.dataset} (rerun `mlbench prepare {split.dataset}`)")
    return items


def import_csv(split: AblationSplit, tests: Sequence[ImageRef], bucket: str,
               labels: Mapping[str, str]) -> str:
    """The Vertex import file: `ml_use,gs://bucket/<folder>/<file>,<vertex label>` per image."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    for s, refs in (("train", split.train), ("val", split.val), ("test", tests)):
        for r in refs:
            writer.writerow([ML_USE[s], f"gs://{bucket}/{FOLDER[s]}/{r.filename}",
                             labels[r.class_name]])
    return buf.getvalue()


def label_value(text: str) -> str:
    """A string as a GCP resource-label value (lowercase letters, digits, '_', '-'; 63 max)."""
    out = "".join(c if c.isalnum() or c in "_-" else "-" for c in text.lower())
    return out.encode("ascii", "ignore").decode()[:63]


def best_prediction(body: bytes, back: Mapping[str, str]) -> Prediction:
    """Parse a `:predict` answer; the most confident display name, mapped to its class."""
    try:
        data = json.loads(body)
        preds = data["predictions"]
    except (ValueError, KeyError, TypeError):
        raise ServiceCallError(f"malformed Vertex answer: {body[:200]!r}") from None
    if not isinstance(preds, list):
        raise ServiceCallError(f"malformed Vertex answer: predictions is {type(preds).__name__}")
    if not preds:
        return Prediction(None, 0.0)
    first = preds[0] if isinstance(preds[0], dict) else {}
    names, confs = first.get("displayNames") or [], first.get("confidences") or []
    if len(names) != len(confs):
        raise ServiceCallError(f"malformed Vertex answer: {len(names)} displayNames, "
                               f"{len(confs)} confidences")
    if not names:
        return Prediction(None, 0.0)
    scores: dict[str, float] = {}
    for name, conf in zip(names, confs, strict=True):
        cls = back.get(name, name)
        scores[cls] = max(scores.get(cls, 0.0), min(1.0, max(0.0, float(conf))))
    label = max(scores, key=lambda c: scores[c])
    return Prediction(label, scores[label], scores)


def _digest(parts: object) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


@register
class VertexService(HttpService):
    """Vertex AI AutoML image classification, driven through the v1 REST API."""

    name = "vertex"

    def __init__(self, ctx: ServiceContext):
        super().__init__(ctx)
        self.config = VertexSettings.parse(self.settings)
        self.retry = RetryPolicy(timeout=self.config.request_timeout)
        self._tokens: TokenSource | None = None
        self._api: VertexApi | None = None
        self._predict_url = ""
        self._back: dict[str, str] = {}
        self._params_body: dict[str, Any] = {}
        self._warned = False

    # -- plumbing --------------------------------------------------------------------------------
    @property
    def project(self) -> str:
        return self.config.resolve_project()

    @property
    def tokens(self) -> TokenSource:
        if self._tokens is None:
            self._tokens = TokenSource.from_environment()
        return self._tokens

    @property
    def api(self) -> VertexApi:
        if self._api is None:
            self._api = VertexApi(self.config.base_url, self.project, self.config.region,
                                  self.tokens, self.retry)
        return self._api

    def check_access(self) -> None:
        """Project, credentials and a first token, before anything is created anywhere."""
        _ = self.project
        self.tokens.token()

    def test_images(self) -> list[ImageRef]:
        """The test set (`mlbench testsets`); it is both Vertex's TEST split and what we score."""
        from mlbench.data.export import load_test_images

        return load_test_images(self.ctx.dataset)

    def labels(self, classes: Sequence[str]) -> dict[str, str]:
        return vertex_label_map(classes)

    def data_key(self, split: AblationSplit, tests: Sequence[ImageRef]) -> str:
        """Fingerprint of the imported data (the import CSV: files, splits, labels)."""
        text = import_csv(split, tests, self._bucket_name(), self.labels(split.classes))
        return _digest([split.dataset, split.size, text])

    def run_key(self, split: AblationSplit, tests: Sequence[ImageRef]) -> str:
        """Fingerprint of what the model is trained from and how: labels Vertex resources."""
        c = self.config
        return _digest([self.data_key(split, tests), c.model_type, c.budget_milli_node_hours,
                        c.disable_early_stopping])

    def _bucket_name(self) -> str:
        name = (self.ctx.params.buckets or {}).get("google", "").strip()
        if not name:
            raise UserError("params.yaml: buckets.google: set the Cloud Storage bucket for "
                            "the Vertex uploads")
        return name

    def names(self, key: str, data_key: str) -> RunNames:
        return RunNames(
            key, data_key,
            f"{self.config.name_prefix}-{self.ctx.dataset}-{self.ctx.ablation}-{key[:8]}",
            {"mlbench_run": key, "mlbench_data": data_key,
             "mlbench_dataset": label_value(self.ctx.dataset),
             "mlbench_ablation": str(self.ctx.ablation)})

    # -- state -----------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.ctx.state_dir / STATE_FILE

    def _identity(self) -> dict[str, str]:
        return {"api": self.config.base_url, "project": self.project,
                "region": self.config.region}

    def load_state(self) -> dict[str, Any]:
        """What earlier runs recorded against this API, project and region ({} if none)."""
        try:
            state = read_json(self.state_path)
        except (OSError, ValueError):
            return {}
        if not isinstance(state, dict):
            return {}
        return state if all(state.get(k) == v for k, v in self._identity().items()) else {}

    def run_state(self, key: str | None = None) -> RunState:
        """The record of run `key` (a fresh one when the inputs changed); any run if None."""
        data = self.load_state()
        if key is not None and data.get("run") != key:
            if data.get("endpoint") and not self._warned:
                self._warned = True
                warn(f"vertex: the inputs of {self.ctx.dataset}/{self.ctx.ablation} changed "
                     f"since the last run; training a new model. The old endpoint "
                     f"{data['endpoint']} keeps billing while a model is deployed on it "
                     "(undeploy it in the console)")
            data = {**self._identity(), "run": key}
        return RunState(self.state_path, data)

    # -- upload ----------------------------------------------------------------------------------
    def upload(self, split: AblationSplit) -> None:
        if self.config.endpoint_for(self.ctx.dataset, self.ctx.ablation, self.project):
            note(f"vertex.endpoints.{self.ctx.dataset}.{self.ctx.ablation} is set: using that "
                 "endpoint, nothing to upload")
            return
        self.upload_images(split)

    def upload_images(self, split: AblationSplit) -> str:
        """Upload the images + import CSV (idempotent); return the CSV's gs:// URI."""
        from mlbench.services.vertex.gcs import ensure_bucket, put_text, storage_client, sync_files

        tests = self.test_images()
        check_minimum(split, tests)
        bucket_name = self._bucket_name()
        self.check_access()
        key = self.run_key(split, tests)
        client = storage_client(self.project, self.tokens.credentials)
        bucket = ensure_bucket(client, bucket_name, self.config.region)
        items = upload_items(split, tests)
        result = sync_files(client, bucket, items, self.config.upload_concurrency,
                            f"gcs upload {self.ctx.dataset}/{self.ctx.ablation}")
        note(f"gs://{bucket_name}: {result.sent} images uploaded, {result.skipped} already there")
        text = import_csv(split, tests, bucket_name, self.labels(split.classes))
        csv_name = f"imports/{self.ctx.dataset}_vertex_{self.ctx.ablation}.csv"
        put_text(bucket, csv_name, text)
        uri = f"gs://{bucket_name}/{csv_name}"
        self.run_state(key).save(import_csv=uri, import_rows=len(items),
                                 data=self.data_key(split, tests))
        return uri

    # -- train -----------------------------------------------------------------------------------
    def train(self, split: AblationSplit) -> ModelRef:
        configured = self.config.endpoint_for(self.ctx.dataset, self.ctx.ablation, self.project)
        if configured:
            self.check_access()
            return self.adopt_endpoint(configured, split.classes)
        tests = self.test_images()
        check_minimum(split, tests)
        key = self.run_key(split, tests)
        if not self.run_state(key).get("import_csv"):
            self.upload_images(split)
        self.check_access()
        state = self.run_state(key)
        life = Lifecycle(self.api, self.config, state,
                         self.names(key, self.data_key(split, tests)))
        dataset = life.dataset()
        items = life.import_images(dataset)
        pipeline = life.pipeline(dataset)
        endpoint = life.deployed()
        ref = self._model_ref(pipeline, endpoint, split.classes)
        ref.ids["dataset"] = dataset
        ref.details.update(import_csv=state.get("import_csv"), data_items=items)
        return ref

    def _model_ref(self, pipeline: dict[str, Any], endpoint: str,
                   classes: Sequence[str]) -> ModelRef:
        started = parse_time(pipeline.get("startTime")) or parse_time(pipeline.get("createTime"))
        finished = parse_time(pipeline.get("endTime"))
        seconds = (finished - started).total_seconds() if started and finished else None
        c = self.config
        model = model_of(pipeline, self.api.parent) or ""
        return ModelRef(
            service=self.name, dataset=self.ctx.dataset, ablation=self.ctx.ablation,
            ids={"project": self.project, "region": c.region, "endpoint": endpoint,
                 "endpoint_id": endpoint.rsplit("/", 1)[1], "model": model,
                 "pipeline": pipeline["name"], "dataset": ""},
            train_seconds=seconds,
            started_at=started.isoformat() if started else None,
            finished_at=finished.isoformat() if finished else None,
            details={"labels": invert(self.labels(classes)), "model_type": c.model_type,
                     "budget_milli_node_hours": c.budget_milli_node_hours,
                     "cost_milli_node_hours": (pipeline.get("trainingTaskMetadata") or {}).get(
                         "costMilliNodeHours"),
                     "console": f"https://console.cloud.google.com/vertex-ai/locations/"
                                f"{c.region}/endpoints/{endpoint.rsplit('/', 1)[1]}"
                                f"?project={self.project}"},
        )

    def adopt_endpoint(self, endpoint: str, classes: Sequence[str]) -> ModelRef:
        """A ModelRef for an endpoint made elsewhere; training time from its pipeline if any."""
        api = self.api
        ep = api.get(endpoint)
        key = f"vertex.endpoints.{self.ctx.dataset}.{self.ctx.ablation}"
        if ep is None:
            raise UserError(f"params.yaml: {key}: no endpoint {endpoint} in project "
                            f"{self.project} ({self.config.region})")
        deployed = ep.get("deployedModels") or []
        if not deployed:
            raise UserError(f"params.yaml: {key}: endpoint {endpoint} has no deployed model; "
                            "deploy one in the console first")
        pipeline: dict[str, Any] = {"name": ""}
        model_name = str(deployed[0].get("model", "")).split("@", 1)[0]
        model = api.get(model_name) if model_name else None
        if model and model.get("trainingPipeline"):
            pipeline = api.get(model["trainingPipeline"]) or pipeline
        pipeline.setdefault("modelToUpload", {"name": model_name})
        note(f"using endpoint {endpoint} ({key})")
        ref = self._model_ref(pipeline, endpoint, classes)
        ref.details["source"] = key
        return ref

    # -- predict ---------------------------------------------------------------------------------
    def connect(self, model: ModelRef) -> None:
        endpoint = model.ids.get("endpoint") or ""
        if not endpoint:
            raise UserError(f"{self.ctx.state_dir / 'model.json'}: no Vertex endpoint recorded; "
                            f"run `mlbench train vertex {self.ctx.dataset}`")
        self.check_access()
        ep = self.api.get(endpoint)
        if ep is None:
            raise UserError(f"vertex: endpoint {endpoint} no longer exists; run `mlbench vertex "
                            f"deploy {self.ctx.dataset} {self.ctx.ablation}`")
        if not ep.get("deployedModels"):
            raise UserError(f"vertex: endpoint {endpoint} has no deployed model (undeployed?); "
                            f"run `mlbench vertex deploy {self.ctx.dataset} {self.ctx.ablation}`")
        back = model.details.get("labels")
        if not isinstance(back, dict) or not back:
            from mlbench.data.prepare import read_classes

            back = invert(self.labels(read_classes(self.ctx.dataset)))
        self._back = {str(k): str(v) for k, v in back.items()}
        self._predict_url = f"{self.config.base_url}/v1/{endpoint}:predict"
        self._params_body = {"confidenceThreshold": self.config.confidence_threshold,
                             "maxPredictions": self.config.max_predictions}

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
                "parameters": self._params_body}
        return HttpRequest("POST", self._predict_url,
                           {"Authorization": f"Bearer {token}",
                            "Content-Type": "application/json"},
                           json.dumps(body).encode())

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> Prediction:
        return best_prediction(body, self._back)

    def close(self) -> None:
        super().close()
        if self._api is not None:
            self._api.session.close()
            self._api = None

    def on_unauthorized(self) -> bool:
        try:
            self.tokens.token(force=True)
        except UserError:
            return False
        return True

    # -- lifecycle commands ----------------------------------------------------------------------
    def recorded_endpoint(self) -> str | None:
        """model.json's endpoint, else the state file's, else `vertex.endpoints.<ds>.<n>`."""
        model_file = self.ctx.state_dir / "model.json"
        if model_file.exists():
            endpoint = (read_json(model_file).get("ids") or {}).get("endpoint")
            if endpoint:
                return str(endpoint)
        return self.load_state().get("endpoint") or self.config.endpoint_for(
            self.ctx.dataset, self.ctx.ablation, self.project)

    def undeploy(self, delete_endpoint: bool = False) -> int:
        """Undeploy every model of the recorded endpoint (and delete it); models undeployed."""
        endpoint = self.recorded_endpoint()
        if not endpoint:
            note(f"{self.ctx.dataset}/{self.ctx.ablation}: no endpoint recorded, nothing to do")
            return 0
        self.check_access()
        count = undeploy_all(self.api, self.config, endpoint, delete_endpoint)
        state = self.run_state()
        if state.get("endpoint") == endpoint:
            state.save(deployed_model_id=None, deploy_op=None)
            if delete_endpoint:
                state.save(endpoint=None, endpoint_ready=None)
        return count

    def redeploy(self) -> str:
        """Deploy the trained model again (after `undeploy`); updates model.json if the
        endpoint had to be recreated."""
        state = self.run_state()
        if not state.get("model") or not state.get("run"):
            raise UserError(f"vertex: no trained model recorded in {self.state_path}; run "
                            f"`mlbench train vertex {self.ctx.dataset}` first")
        self.check_access()
        names = self.names(state.get("run"), state.get("data", ""))
        endpoint = Lifecycle(self.api, self.config, state, names).deployed()
        model_file = self.ctx.state_dir / "model.json"
        if model_file.exists():
            ref = ModelRef.from_json(read_json(model_file))
            if ref.ids.get("endpoint") != endpoint:
                ref.ids.update(endpoint=endpoint, endpoint_id=endpoint.rsplit("/", 1)[1])
                atomic_write_json(model_file, ref.to_json())
        note(f"{state.get('model')} is deployed on {endpoint}")
        return endpoint
