"""Azure ML AutoML for images: blob datastore -> MLTables -> AutoML job -> model; the
managed online endpoint and its deployment only when the model is scored.

- upload: the ablation's train/val images to `mlbench/<ds>/<seed folder>/` in the container of
  the workspace's default blob datastore (or `buckets.azure`, registered as a datastore of that
  storage account), MD5-checked; two MLTables (`export.jsonl`) and their data assets.
- submit: one `automl.image_classification` job on `azureml.compute`, returned at once.
- wait: until the job ends; its best trial registered as a model (nothing billed by the hour).
- connect: the run's endpoint and deployment on `azureml.instance_type`, each made unless it
  exists and waited for; `teardown` deletes them (the teardown stage, `mlbench azureml delete`).

Every name is deterministic (the run's key: images, their MD5s, the settings that decide the
model), and every create is preceded by a look-up, so a rerun after a crash (even one that
lost its record) re-attaches instead of paying twice. What training makes is recorded in
`<state_dir>/azureml.json` (the job's name before it is sent); what serving makes only in the
run's deployment record (`Service.deployment`, outside every DVC output), so deploying or
tearing down never makes the trained model look changed to DVC. A job that failed on Azure's
side is forgotten: the rerun submits the next attempt. Training seconds come from the job's own
start and end (its MLflow run), as does its best trial. An endpoint given by hand is used
through its traffic rules and never deployed to or deleted.

Predictions: `POST <scoring URI>` with the endpoint key, AutoML's image request
`{"input_data": {"columns": ["image"], "data": [<base64>]}}` -> `[{"probs", "labels"}]`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlbench.console import err
from mlbench.core import AblationSplit, ModelRef, Prediction
from mlbench.errors import ServiceCallError, ServiceError, UserError
from mlbench.redact import remember
from mlbench.retry import RetryPolicy
from mlbench.services.azureml.api import ArmError, AzureMLApi
from mlbench.services.azureml.blob import Container, md5_of, open_container
from mlbench.services.azureml.export import MLTABLE, ROOT, blob_name, datastore_uri, jsonl
from mlbench.services.base import Job, ServiceContext
from mlbench.services.cloud import StateStore, wait_for
from mlbench.services.http import HttpRequest, HttpService, best_of, snippet

STATE_FILE = "azureml.json"
DEPLOYMENT = "mlbench"
FAILED = frozenset({"Failed", "Canceled"})
DONE = FAILED | {"Completed"}
#: The tag AutoML sets on the job's MLflow run: the trial whose model won.
BEST_TRIAL = "automl_best_child_run_id"
#: Where AutoML leaves a trial's MLflow model (Azure's AutoML image samples register it so).
MODEL_URI = "azureml://jobs/{}/outputs/artifacts/outputs/mlflow-model/"
#: GPU VM families (N-series): AutoML for images trains on nothing else.
_GPU = re.compile(r"standard_n", re.I)
_CONTAINER = re.compile(r"(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")


def note(message: str) -> None:
    err.print(f"azureml: {message}")


def _digest(parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:12]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _state(resource: Mapping[str, Any] | None, key: str = "provisioningState") -> str:
    return str(((resource or {}).get("properties") or {}).get(key) or "")


def _iso(ms: Any) -> str | None:
    return dt.datetime.fromtimestamp(int(ms) / 1000, dt.UTC).isoformat() if ms else None


@dataclass(frozen=True)
class Plan:
    """What one ablation uploads and trains: (file, blob, MD5) per image, the MLTables' JSON
    lines per split, and the keys naming its data (`data_key`) and its model (`run_key`)."""

    items: list[tuple[Path, str, str]]
    tables: dict[str, str]
    data_key: str
    run_key: str


class AzureMLService(HttpService):
    """REST control plane (`api.py`), Blob storage (`blob.py`), predictions on the shared path."""

    name = "azureml"

    def __init__(self, ctx: ServiceContext):
        super().__init__(ctx)
        self.retry = RetryPolicy(timeout=self.settings.request_timeout)
        self._api: AzureMLApi | None = None
        self._store: StateStore | None = None
        self._container: Container | None = None
        self._datastore = ""
        self._workspace: dict[str, Any] | None = None
        self._checked = False
        self._plan: tuple[AblationSplit, Plan] | None = None
        self._scoring, self._key, self._endpoint, self._route = "", "", "", ""

    # -- plumbing --------------------------------------------------------------------------------
    @property
    def ids(self) -> tuple[str, str, str]:
        return self.settings.workspace_ids()

    @property
    def api(self) -> AzureMLApi:
        if self._api is None:
            self._api = AzureMLApi(self.settings.arm_endpoint, self.ids, self.retry)
        return self._api

    @property
    def state(self) -> StateStore:
        """The run's record, ignored when made against another workspace or API."""
        if self._store is None:
            sub, group, ws = self.ids
            self._store = StateStore(self.ctx.state_dir / STATE_FILE, {
                "arm": self.settings.arm_endpoint, "subscription": sub, "resource_group": group,
                "workspace": ws})
        return self._store

    def model_settings(self) -> dict[str, Any]:
        """The settings, and the workspace wherever it was named (params or environment)."""
        return {**super().model_settings(), "workspace_ids": list(self.ids)}

    @property
    def workspace(self) -> dict[str, Any]:
        """The workspace, read once: the first call, so missing ids or refused credentials stop
        the run before anything is sent."""
        if self._workspace is None:
            self._workspace = self.api.workspace()
        return self._workspace

    @property
    def tracking(self) -> str:
        """MLflow's base URL: the workspace's `azureml://<host>/<path>` tracking URI over https
        (or over `azureml.tracking_endpoint`)."""
        uri = str((self.workspace.get("properties") or {}).get("mlFlowTrackingUri") or "")
        host, _, path = uri.partition("://")[2].partition("/")
        if not host:
            raise ServiceError(f"azureml: the workspace gave no MLflow tracking URI ({uri!r})")
        return f"{self.settings.tracking_endpoint or 'https://' + host}/{path}"

    def check_access(self) -> None:
        """Workspace, credentials and compute, before anything is made anywhere (once)."""
        if not self._checked:
            _ = self.workspace
            self.check_compute()
            self._checked = True

    def check_compute(self) -> None:
        """The cluster named in params exists and has GPUs (AutoML for images needs them)."""
        name = self.settings.compute
        compute = self.api.get(f"computes/{name}", f"get compute {name}")
        if compute is None:
            raise UserError(f"params.yaml: azureml.compute: no compute {name!r} in workspace "
                            f"{self.ids[2]}; create a GPU cluster (e.g. Standard_NC4as_T4_v3, "
                            "0 minimum nodes) in the studio, or name yours")
        size = str(((compute.get("properties") or {}).get("properties") or {}).get("vmSize", ""))
        if size and not _GPU.match(size):
            raise UserError(f"params.yaml: azureml.compute: {name} is a {size} cluster; AutoML "
                            "for images trains on GPU (N-series) clusters only")

    def container(self) -> Container:
        """The container images go to: `buckets.azure` when set (as a datastore of the default
        datastore's account), else the default datastore's own; `_datastore` names it."""
        if self._container is None:
            chosen = (self.ctx.buckets.get("azure") or "").strip()
            if chosen and not _CONTAINER.fullmatch(chosen):
                raise UserError(f"params.yaml: buckets.azure: must be a blob container name "
                                f"(3-63 lowercase letters, digits, single '-'), got {chosen!r}")
            self._container, self._datastore = open_container(
                self.api, self.ctx.bucket("azure") if chosen else None,
                self.settings.storage_endpoint, self.retry, self.settings.upload_concurrency)
        return self._container

    def plan(self, split: AblationSplit) -> Plan:
        """The ablation's blobs, MD5s, MLTables and keys (hashed once per service: `upload`
        and `submit` of one run ask for the same)."""
        if self._plan is not None and self._plan[0] == split:
            return self._plan[1]
        ds, n, s = split.dataset, split.size, self.settings
        self.check_access()
        container = self.container()
        parts = (("train", split.train), ("val", split.val))
        refs = [(part, r) for part, rs in parts for r in rs]
        with ThreadPoolExecutor(s.upload_concurrency) as pool:
            md5s = list(pool.map(lambda ref: md5_of(ref[1].path.read_bytes()), refs))
        items = [(r.path, blob_name(ds, part, r), md5)
                 for (part, r), md5 in zip(refs, md5s, strict=True)]
        tables = {part: jsonl(ds, part, rs, self._datastore) for part, rs in parts}
        data_key = _digest([ds, n, container.name, tables, [i[1:] for i in items]])
        plan = Plan(items, tables, data_key, _digest([data_key, s.compute, s.max_trials,
                                                      s.max_concurrent_trials,
                                                      s.timeout_minutes, s.model_name]))
        self._plan = (split, plan)
        return plan

    def begin(self, plan: Plan) -> StateStore:
        """The state of run `plan.run_key`: a fresh one when the inputs changed."""
        st = self.state
        if st.get("run") != plan.run_key:
            st.reset(run=plan.run_key, data=plan.data_key)
        return st

    # -- upload ----------------------------------------------------------------------------------
    def upload(self, split: AblationSplit) -> None:
        plan = self.plan(split)
        st = self.begin(plan)
        ds, n, container = split.dataset, split.size, self.container()
        present = container.md5s(f"{ROOT}/{ds}/")
        sent, skipped = container.sync(plan.items, present, f"azure upload {ds}/{n}")
        note(f"{container.name}: {sent} images uploaded, {skipped} already there")
        for part, table in plan.tables.items():
            folder = f"{ROOT}/{ds}/{n}/{plan.data_key}/{part}"
            container.put_text(f"{folder}/MLTable", MLTABLE, present)
            container.put_text(f"{folder}/images.jsonl", table, present)
            asset = f"mlbench-{slug(ds)}-{n}-{part}-{plan.data_key}"
            st.update(**{f"{part}_data": self._data_asset(
                asset, datastore_uri(self._datastore, f"{folder}/"))})
        st.update(data_ready=True)

    def _data_asset(self, name: str, uri: str) -> str:
        """Version 1 of an MLTable data asset (registered once; the name holds the key)."""
        path = f"data/{name}/versions/1"
        if self.api.get(path, f"get data asset {name}") is None:
            self.api.put(path, {"properties": {
                "dataType": "mltable", "dataUri": uri, "tags": {},
                "description": "mlbench ablation (image_url, label)"}},
                f"create data asset {name}")
            note(f"registered data asset {name}:1")
        return self.api.arm_id(path)

    # -- training --------------------------------------------------------------------------------
    def submit(self, split: AblationSplit) -> Job:
        """Submit the run's AutoML job, or re-attach to the one a crash left; returns at once."""
        plan = self.plan(split)
        st = self.begin(plan)
        if not st.get("data_ready"):
            self.upload(split)
        base = f"mlbench-{slug(split.dataset)}-{split.size}-{plan.run_key}"
        attempt = int(st.get("attempt") or 1)
        for _ in range(100):
            name = base if attempt == 1 else f"{base}-{attempt}"
            st.update(job=name, attempt=attempt)  # recorded before it is sent
            job = self.api.get(f"jobs/{name}", f"get job {name}")
            if job is not None and _state(job, "status") in FAILED:
                attempt += 1  # a failed attempt of a run that lost its record: the next one
                continue
            if job is not None:
                note(f"re-attached to AutoML job {name} ({_state(job, 'status')})")
                break
            try:
                self.api.put(f"jobs/{name}", self._job_body(name, st, plan.run_key),
                             f"submit AutoML job {name}")
            except ArmError:
                if self.api.get(f"jobs/{name}", f"get job {name}") is not None:
                    continue  # sent by an attempt whose answer was lost: read it again
                raise
            s = self.settings
            note(f"submitted AutoML job {name} on {s.compute} (at most {s.max_trials} "
                 f"trial(s), {s.timeout_minutes} min)")
            break
        else:
            raise ServiceError(f"azureml: job {base}: 100 attempts found failed; look at them "
                               "in the studio")
        return Job(split.dataset, split.size, {"job": name, "run": plan.run_key})

    def _job_body(self, name: str, st: StateStore, key: str) -> dict[str, Any]:
        """An `automl.image_classification` job, as azure-ai-ml sends it."""
        s = self.settings
        task: dict[str, Any] = {
            "taskType": "ImageClassification", "targetColumnName": "label",
            "primaryMetric": "Accuracy", "logVerbosity": "Info",
            "trainingData": {"jobInputType": "mltable", "uri": st.get("train_data")},
            "validationData": {"jobInputType": "mltable", "uri": st.get("val_data")},
            "limitSettings": {"maxTrials": s.max_trials,
                              "maxConcurrentTrials": s.max_concurrent_trials,
                              "timeout": f"PT{s.timeout_minutes}M"}}
        if s.model_name:
            task["modelSettings"] = {"modelName": s.model_name}
        return {"properties": {
            "jobType": "AutoML", "displayName": name, "experimentName": s.experiment,
            "computeId": self.api.arm_id(f"computes/{s.compute}"), "taskDetails": task,
            "tags": {"mlbench_run": key, "mlbench_dataset": self.ctx.dataset,
                     "mlbench_ablation": str(self.ctx.ablation)}}}

    def wait(self, job: Job) -> ModelRef:
        """Until the job ended; then its best trial registered as a model (deployed later, by
        `connect`: nothing is billed by the hour before the model is scored)."""
        name, st = job.ids["job"], self.state
        self._trained(name, st)
        run = self.api.mlflow_run(self.tracking, name)
        trial = next((t.get("value") for t in (run.get("data") or {}).get("tags") or []
                      if t.get("key") == BEST_TRIAL), None)
        if not trial:
            raise ServiceError(f"azureml: job {name} completed without a best trial "
                               f"({BEST_TRIAL}); look at it in the studio")
        key = _digest([*self.ids, job.ids["run"]])[:8]
        endpoint = f"mlb-{slug(self.ctx.dataset)[:10]}-{self.ctx.ablation}-{key}"
        model = self._registered(name, str(trial))
        st.update(model=model, endpoint=endpoint)
        ref = self._model_ref(endpoint, DEPLOYMENT, model, run)
        ref.ids.update(job=name, best_trial=str(trial))
        return ref

    def _trained(self, name: str, st: StateStore) -> dict[str, Any]:
        def check() -> tuple[bool, str, dict[str, Any]]:
            found = self.api.get(f"jobs/{name}", f"get job {name}")
            if found is None:
                raise ServiceError(f"azureml: job {name} is gone; look for it in the studio")
            return _state(found, "status") in DONE, _state(found, "status"), found

        s = self.settings
        job = wait_for(check, what=f"azureml: training {name}", every=s.poll_seconds,
                       timeout=s.train_timeout, hint="the job goes on in Azure ML; rerun to "
                       "keep waiting (or raise azureml.train_timeout)")
        if _state(job, "status") != "Completed":
            st.update(job=None, attempt=int(st.get("attempt") or 1) + 1)
            studio = (((job.get("properties") or {}).get("services") or {}).get("Studio")
                      or {}).get("endpoint") or "the studio"
            raise ServiceError(f"azureml: AutoML job {name} ended {_state(job, 'status')}; see "
                               f"{studio}; rerun to submit it again")
        return job

    def _registered(self, job: str, trial: str) -> str:
        """The best trial's MLflow model as model `<job>` version 1 (registered once)."""
        path = f"models/{job}/versions/1"
        if self.api.get(path, f"get model {job}") is None:
            self.api.put(path, {"properties": {
                "modelType": "mlflow_model", "modelUri": MODEL_URI.format(trial), "tags": {},
                "description": f"the best trial of AutoML job {job}"}}, f"register model {job}")
            note(f"registered model {job}:1 (trial {trial})")
        return self.api.arm_id(path)

    # -- serving ---------------------------------------------------------------------------------
    def _provisioned(self, path: str, what: str) -> dict[str, Any]:
        def check() -> tuple[bool, str, dict[str, Any]]:
            found = self.api.get(path, f"get {what}")
            if found is None:
                raise ServiceError(f"azureml: {what} is gone; rerun to create it again")
            state = _state(found) or "Creating"
            return state in ("Succeeded", *FAILED), state, found

        found = wait_for(check, what=f"azureml: {what}", every=self.settings.poll_seconds,
                         timeout=self.settings.deploy_timeout, hint="it goes on in Azure ML; "
                         "rerun to keep waiting (or raise azureml.deploy_timeout)")
        if _state(found) != "Succeeded":
            raise ServiceError(f"azureml: {what} ended {_state(found)}; see its logs in the "
                               "studio; rerun to try again")
        return found

    def _serve(self, model: ModelRef) -> dict[str, Any]:
        """The model's endpoint with the registered model deployed on it (each made unless it
        exists, and waited for; billed per instance hour from then on); the endpoint."""
        endpoint, registered = model.ids.get("endpoint"), model.ids.get("model")
        if not endpoint or not registered:
            raise UserError(f"azureml: no trained model recorded for {self.ctx.dataset}/"
                            f"{self.ctx.ablation}; run `mlbench train azureml "
                            f"{self.ctx.dataset}`")
        s, location = self.settings, self.workspace["location"]
        record = self.deployment
        if record.get("up") and record.get("resource") != f"{endpoint}/{DEPLOYMENT}":
            old = str(record.get("resource")).split("/")[0]  # a superseded model's: not billed
            note(f"{self._delete(old)} (superseded by {endpoint})")  # for nothing any more
        path = f"onlineEndpoints/{endpoint}"
        found = self.api.get(path, f"get endpoint {endpoint}")
        if found is None or _state(found) in FAILED:
            try:
                self.api.put(path, {"location": location, "identity": {"type": "SystemAssigned"},
                                    "tags": {}, "properties": {"authMode": "Key",
                                                               "description": "mlbench"}},
                             f"create endpoint {endpoint}")
            except ArmError as exc:
                if exc.status == 409:
                    raise UserError(f"azureml: endpoint name {endpoint} is taken in this "
                                    f"region ({exc}); delete that endpoint or use another "
                                    "workspace") from None
                raise
            note(f"creating endpoint {endpoint}")
        found = self._provisioned(path, f"endpoint {endpoint}")
        dep_path = f"{path}/deployments/{DEPLOYMENT}"
        dep = self.api.get(dep_path, f"get deployment {DEPLOYMENT} of {endpoint}")
        if dep is None or _state(dep) in FAILED or _state(dep, "model") != registered:
            self.api.put(dep_path, {
                "location": location, "tags": {},
                "sku": {"name": "Default", "capacity": s.instance_count},
                "properties": {"endpointComputeType": "Managed", "model": registered,
                               "instanceType": s.instance_type, "appInsightsEnabled": False,
                               "requestSettings": {"requestTimeout": "PT1M30S",
                                                   "maxConcurrentRequestsPerInstance":
                                                       max(1, self.ctx.in_flight)}}},
                f"deploy to endpoint {endpoint}")
            note(f"deploying {registered.rsplit('/models/', 1)[-1]} to {endpoint} on "
                 f"{s.instance_count} x {s.instance_type} (billed per instance hour until "
                 "`mlbench azureml delete` or the teardown stage)")
        self._provisioned(dep_path, f"deployment {DEPLOYMENT} of {endpoint}")
        self.deployment.up(f"{endpoint}/{DEPLOYMENT}", units=s.instance_count,
                           instance_type=s.instance_type)
        return found

    def _model_ref(self, endpoint: str, deployment: str, model: str,
                   run: Mapping[str, Any]) -> ModelRef:
        s, (sub, group, ws) = self.settings, self.ids
        info = run.get("info") or {}
        start, end = info.get("start_time"), info.get("end_time")
        return ModelRef(
            service=self.name, dataset=self.ctx.dataset, ablation=self.ctx.ablation,
            ids={"subscription": sub, "resource_group": group, "workspace": ws,
                 "endpoint": endpoint, "deployment": deployment, "model": model},
            train_seconds=(int(end) - int(start)) / 1000 if start and end else None,
            started_at=_iso(start), finished_at=_iso(end),
            details={"compute": s.compute, "max_trials": s.max_trials,
                     "instance_type": s.instance_type, "instance_count": s.instance_count})

    def _given(self, endpoint: str, where: str) -> dict[str, Any]:
        """A hand-made endpoint that serves: it exists, succeeded, and routes traffic."""
        found = self.api.get(f"onlineEndpoints/{endpoint}", f"get endpoint {endpoint}")
        if found is None or _state(found) != "Succeeded":
            why = "does not exist" if found is None else f"is {_state(found) or 'not ready'}"
            raise UserError(f"{where}: online endpoint {endpoint} {why} in workspace "
                            f"{self.ids[2]}")
        if not any((found.get("properties") or {}).get("traffic", {}).values()):
            raise UserError(f"{where}: endpoint {endpoint} sends no traffic to a deployment; "
                            "set its traffic in the studio")
        return found

    def adopt(self, given: str) -> ModelRef:
        """An endpoint made by hand (`azureml.endpoints.<ds>.<n>`), called through its traffic
        rules; training time from the job of the model it serves, when it has one."""
        found = self._given(given, f"params.yaml: {self.where()}")
        serving = [d for d, w in found["properties"]["traffic"].items() if w]
        dep = self.api.get(f"onlineEndpoints/{given}/deployments/{serving[0]}") or {}
        model = _state(dep, "model")
        prefix = self.api.path + "/"
        trained = self.api.get(model.removeprefix(prefix)) if model.startswith(prefix) else None
        job = _state(trained, "jobName")
        note(f"using endpoint {given} ({self.where()})")
        ref = self._model_ref(given, "", model, self.api.mlflow_run(self.tracking, job)
                              if job else {})
        ref.details.update(source=self.where(), deployments=serving)
        return ref

    def recorded(self) -> ModelRef | None:
        """model.json; else what the state store holds (a crash before model.json was
        written); else the hand-given endpoint."""
        model = super().recorded()
        if model is not None:
            return model
        st, given = self.state, self.hand_given()
        ds, n = self.ctx.dataset, self.ctx.ablation
        if st.get("endpoint"):
            return ModelRef(self.name, ds, n, ids={
                "endpoint": st.get("endpoint"), "deployment": DEPLOYMENT,
                "model": st.get("model", ""), "job": st.get("job", "")},
                details={"source": str(st.path)})
        if given:
            return ModelRef(self.name, ds, n, ids={"endpoint": given, "deployment": ""},
                            details={"source": self.where()})
        return None

    @staticmethod
    def _by_hand(model: ModelRef) -> bool:
        return not model.ids.get("deployment")

    def connect(self, model: ModelRef) -> None:
        """Deploy the model unless it is deployed (billed from then on), then serve from it; an
        endpoint given by hand is only checked to serve."""
        endpoint = str(model.ids.get("endpoint") or "")
        found = self._given(endpoint, f"params.yaml: {self.where()}") \
            if self._by_hand(model) else self._serve(model)
        self._scoring = str(found["properties"]["scoringUri"])
        self._endpoint, self._route = endpoint, str(model.ids.get("deployment") or "")
        self._key = self._endpoint_key(endpoint)

    def _endpoint_key(self, endpoint: str) -> str:
        keys = self.api.post(f"onlineEndpoints/{endpoint}/listKeys",
                             f"read the keys of endpoint {endpoint}")
        remember(keys.get("primaryKey"), keys.get("secondaryKey"))
        return str(keys.get("primaryKey") or "")

    def build_request(self, image: bytes) -> HttpRequest:
        if not self._scoring:
            raise ServiceCallError("azureml: connect() was not called")
        headers = {"Authorization": f"Bearer {self._key}", "Content-Type": "application/json"}
        if self._route:
            headers["azureml-model-deployment"] = self._route
        body = {"input_data": {"columns": ["image"],
                               "data": [base64.b64encode(image).decode("ascii")]}}
        return HttpRequest("POST", self._scoring, headers, json.dumps(body).encode())

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> Prediction:
        try:
            first = json.loads(body)[0]
            labels, probs = first["labels"], first["probs"]
            if len(labels) != len(probs):
                raise ValueError("labels and probs differ in length")
            return best_of([(str(label), float(p)) for label, p in zip(labels, probs,
                                                                       strict=True)])
        except (ValueError, KeyError, TypeError, IndexError):
            raise ServiceCallError(f"azureml: expected [{{probs, labels}}], got "
                                   f"{snippet(body)}", status) from None

    def on_unauthorized(self) -> bool:
        """A 401 from the scoring URI: the keys were regenerated; read them again, once."""
        try:
            key = self._endpoint_key(self._endpoint) if self._endpoint else ""
        except (UserError, ServiceError):
            return False
        self._key, renewed = key or self._key, bool(key) and key != self._key
        return renewed

    # -- vendor commands and the teardown stage ----------------------------------------------------
    def describe(self, model: ModelRef) -> str:
        endpoint = model.ids.get("endpoint", "")
        if self.api.get(f"onlineEndpoints/{endpoint}", f"get endpoint {endpoint}") is None:
            return f"endpoint {endpoint or '-'} does not exist: nothing billed"
        page = self.api.get(f"onlineEndpoints/{endpoint}/deployments",
                            f"list the deployments of {endpoint}") or {}
        deps = [f"{d.get('name')} {(d.get('sku') or {}).get('capacity', 1)} x "
                f"{_state(d, 'instanceType')} ({_state(d) or '?'})"
                for d in page.get("value") or []]
        who = " (given by hand: mlbench leaves it)" if self._by_hand(model) else \
            f" since {self.deployment.get('since')}" if self.deployment.get("up") else ""
        return f"endpoint {endpoint}: " + (f"{', '.join(deps)}{who}, billed per instance hour"
                                          if deps else "no deployment, nothing billed")

    def _gone(self, path: str, what: str) -> None:
        self.api.delete(path, f"delete {what}")

        def check() -> tuple[bool, str, None]:
            found = self.api.get(path, f"get {what}")
            return found is None, _state(found) or "gone", None

        wait_for(check, what=f"azureml: deleting {what}", every=self.settings.poll_seconds,
                 timeout=self.settings.deploy_timeout, hint="it goes on in Azure ML; rerun to "
                 "check")

    def teardown(self, model: ModelRef) -> str:
        """Delete the endpoint mlbench made (its deployment with it), or only the deployment
        with `azureml.keep_endpoint`; an endpoint given by hand is left as it is."""
        endpoint = str(model.ids.get("endpoint") or "")
        if self._by_hand(model):
            return f"endpoint {endpoint} was given by hand: mlbench leaves it (still billed)"
        return self._delete(endpoint)

    def _delete(self, endpoint: str) -> str:
        """Delete an endpoint mlbench made (or only its deployment, with keep_endpoint)."""
        path = f"onlineEndpoints/{endpoint}"
        if self.api.get(path, f"get endpoint {endpoint}") is None:
            line = f"endpoint {endpoint} does not exist: nothing billed"
        elif self.settings.keep_endpoint:
            self._gone(f"{path}/deployments/{DEPLOYMENT}", f"deployment {DEPLOYMENT}")
            line = f"endpoint {endpoint}: deployment {DEPLOYMENT} deleted (endpoint kept)"
        else:
            self._gone(path, f"endpoint {endpoint}")
            line = f"endpoint {endpoint} and its deployment deleted"
        self.deployment.down()
        return line

    def deploy(self, model: ModelRef) -> str:
        """Deploy the registered model again (its endpoint made again when deleted)."""
        if self._by_hand(model):
            self._given(str(model.ids.get("endpoint")), self.where())
            return f"endpoint {model.ids.get('endpoint')} (given by hand) serves"
        self._serve(model)
        return (f"{str(model.ids['model']).rsplit('/models/', 1)[-1]} is deployed on "
                f"{model.ids['endpoint']}")

    def close(self) -> None:
        super().close()
        if self._container is not None:
            self._container.close()
            self._container = None
        if self._api is not None:
            self._api.close()
            self._api = None


SERVICE = AzureMLService
