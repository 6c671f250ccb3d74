"""State of the Azure ML fake: managed-identity tokens, one workspace, its datastores, data
assets, computes, AutoML jobs and their MLflow runs, models, online endpoints and deployments.

Kept apart from the wire format (responses.py), moto-style. Long work advances with polling,
not wall time: a job goes NotStarted -> Queued -> Running -> Completed over `train_polls` GETs
and its MLflow run's start and end are `train_seconds` apart on a simulated clock (a client
timing training with its own clock would get a visibly different number); an endpoint or a
deployment is `Creating` for `op_polls` GETs, a deleted one `Deleting` for as many.

The model a job trains is a nearest-centroid classifier over 8x8 thumbnails of the images its
MLTables name, read back from Blob storage (Azurite) through the datastores, so a test can tell
an upload, an MLTable or a label that went wrong.
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import math
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from tests.fakes.vertex.models import thumbnail

#: Azurite's well-known development account and key (public, documented by Microsoft).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
               "K1SZFPTOtr/KBHBeksoGMGw==")
PROVIDER = "Microsoft.MachineLearningServices"
DATASTORE_URI = re.compile(r"azureml://datastores/(?P<store>[a-z0-9_]+)/paths/(?P<path>.+)")
MODEL_URI = re.compile(r"azureml://jobs/(?P<run>[^/]+)/outputs/artifacts/outputs/mlflow-model/?")
ENDPOINT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]")
DURATION = re.compile(r"PT(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?")
JOB_STEPS = ("NotStarted", "Queued", "Running")


class ApiFailure(Exception):
    """An error the real API would answer with: HTTP status, ARM error code, message."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Job:
    name: str
    body: dict[str, Any]
    created: float
    status: str = "NotStarted"
    polls: int = 0
    start_ms: int | None = None
    end_ms: int | None = None
    trials: list[str] = field(default_factory=list)


@dataclass
class Resource:
    """An online endpoint or deployment: its body, provisioning state and polls left."""

    name: str
    body: dict[str, Any]
    state: str = "Creating"
    polls_left: int = 0
    children: dict[str, Resource] = field(default_factory=dict)


class AzureMLState:
    """Everything the fake workspace holds; thread-safe (the server is threaded)."""

    def __init__(self, subscription: str, resource_group: str, workspace: str,
                 blob_reader: Callable[[str, str], bytes | None], location: str = "eastus",
                 default_container: str = "azureml-blobstore-0001", train_polls: int = 3,
                 op_polls: int = 2, train_seconds: float = 5432.25,
                 identity_header: str = "fake-identity-header"):
        self.subscription, self.resource_group, self.workspace = (subscription, resource_group,
                                                                  workspace)
        self.location, self.blob_reader = location, blob_reader
        self.train_polls, self.op_polls, self.train_seconds = train_polls, op_polls, train_seconds
        self.identity_header = identity_header
        self.lock = threading.RLock()
        self.tokens: dict[str, float] = {}
        self.computes = {"gpu-cluster": "Standard_NC4as_T4_v3", "cpu-cluster": "Standard_DS3_v2"}
        self.datastores: dict[str, dict[str, Any]] = {"workspaceblobstore": {
            "datastoreType": "AzureBlob", "accountName": AZURITE_ACCOUNT,
            "containerName": default_container, "endpoint": "core.windows.net",
            "protocol": "https", "isDefault": True, "credentials": {
                "credentialsType": "AccountKey",
                "secrets": {"secretsType": "AccountKey", "key": AZURITE_KEY}}}}
        self.data: dict[tuple[str, str], dict[str, Any]] = {}
        self.jobs: dict[str, Job] = {}
        #: MLflow runs by id (a job and each of its trials): info + tags.
        self.runs: dict[str, dict[str, Any]] = {}
        #: trial run id -> the model it trained: label -> centroid thumbnail
        self.trained: dict[str, dict[str, tuple[float, ...]]] = {}
        self.models: dict[tuple[str, str], dict[str, Any]] = {}
        self.endpoints: dict[str, Resource] = {}
        #: Endpoint names taken in the region by someone else (a PUT of one is refused).
        self.taken: set[str] = set()
        self.keys: dict[str, tuple[str, str]] = {}
        #: How many of each resource were created (what "no duplicates" tests assert on).
        self.created = {"datastores": 0, "data": 0, "jobs": 0, "models": 0, "endpoints": 0,
                        "deployments": 0}
        self.predictions = 0
        self._ids = itertools.count(1)

    # -- identity --------------------------------------------------------------------------------
    @property
    def path(self) -> str:
        return (f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}/"
                f"providers/{PROVIDER}/workspaces/{self.workspace}")

    def issue_token(self, lifetime: float = 3600) -> str:
        with self.lock:
            token = f"fake-arm-{secrets.token_urlsafe(16)}"
            self.tokens[token] = time.time() + lifetime
            return token

    def token_valid(self, token: str) -> bool:
        with self.lock:
            return self.tokens.get(token, 0.0) > time.time()

    def check_scope(self, subscription: str, group: str, workspace: str) -> None:
        if subscription != self.subscription:
            raise ApiFailure(403, "AuthorizationFailed", "The client does not have "
                             f"authorization over scope '/subscriptions/{subscription}'.")
        if (group, workspace) != (self.resource_group, self.workspace):
            raise ApiFailure(404, "ResourceNotFound", f"Workspace {group}/{workspace} was not "
                             "found.")

    def arm_id(self, path: str) -> str:
        return f"{self.path}/{path}"

    def _relative(self, arm_id: str, kind: str) -> str:
        prefix = f"{self.path}/{kind}/"
        if not str(arm_id).startswith(prefix):
            raise ApiFailure(400, "UserError", f"{arm_id!r} is not a {kind} of this workspace.")
        return arm_id[len(prefix):]

    # -- datastores ------------------------------------------------------------------------------
    def datastore(self, name: str) -> dict[str, Any]:
        found = self.datastores.get(name)
        if found is None:
            raise ApiFailure(404, "UserError", f"Datastore {name} not found.")
        return found

    def put_datastore(self, name: str, props: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            if not re.fullmatch(r"[a-z0-9_]{1,255}", name):
                raise ApiFailure(400, "UserError", "Datastore names hold lowercase letters, "
                                 "digits and underscores.")
            if props.get("datastoreType") != "AzureBlob" or not props.get("accountName") or \
                    not props.get("containerName"):
                raise ApiFailure(400, "UserError", "An AzureBlob datastore needs accountName "
                                 "and containerName.")
            creds = props.get("credentials") or {}
            kind = creds.get("credentialsType")
            need = {"AccountKey": "key", "Sas": "sasToken", "None": None}
            if kind not in need or (need[kind] and not (creds.get("secrets") or {}).get(
                    need[kind])):
                raise ApiFailure(400, "UserError", f"Invalid datastore credentials {kind!r}.")
            if name not in self.datastores:
                self.created["datastores"] += 1
            self.datastores[name] = {**props, "isDefault": False}
            return self.datastores[name]

    def secrets(self, name: str) -> dict[str, Any]:
        creds = self.datastore(name).get("credentials") or {}
        if creds.get("credentialsType") == "None":
            raise ApiFailure(400, "UserError", f"Datastore {name} has no secrets.")
        return dict(creds.get("secrets") or {})

    def read(self, uri: str) -> bytes | None:
        """The bytes an `azureml://datastores/<name>/paths/<path>` URI names, or None."""
        match = DATASTORE_URI.fullmatch(uri)
        if match is None or match["store"] not in self.datastores:
            return None
        return self.blob_reader(self.datastores[match["store"]]["containerName"], match["path"])

    # -- data assets -----------------------------------------------------------------------------
    def put_data(self, name: str, version: str, props: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            if props.get("dataType") not in ("uri_file", "uri_folder", "mltable"):
                raise ApiFailure(400, "UserError", f"Unknown dataType {props.get('dataType')!r}.")
            if not DATASTORE_URI.fullmatch(str(props.get("dataUri"))):
                raise ApiFailure(400, "UserError", "dataUri must be an azureml://datastores/ URI.")
            old = self.data.get((name, version))
            if old is not None:
                if old["dataUri"] != props["dataUri"]:
                    raise ApiFailure(409, "UserError", "A data asset version is immutable.")
                return old
            self.data[(name, version)] = props
            self.created["data"] += 1
            return props

    def _mltable(self, arm_id: str) -> list[dict[str, Any]]:
        """The rows of the MLTable data asset `arm_id` names (its JSON lines)."""
        name, _, version = self._relative(arm_id, "data").partition("/versions/")
        asset = self.data.get((name, version))
        if asset is None or asset["dataType"] != "mltable":
            raise ApiFailure(400, "UserError", f"{arm_id} is not an MLTable data asset.")
        folder = asset["dataUri"].rstrip("/")
        spec = self.read(f"{folder}/MLTable")
        files = re.findall(r"-\s*file:\s*\./(\S+)", (spec or b"").decode())
        if not files:
            raise ApiFailure(400, "UserError", f"{folder}/MLTable is missing or names no file.")
        rows = []
        for line in (self.read(f"{folder}/{files[0]}") or b"").decode().splitlines():
            rows.append(json.loads(line))
        return rows

    # -- computes and jobs -----------------------------------------------------------------------
    def compute(self, name: str) -> dict[str, Any]:
        if name not in self.computes:
            raise ApiFailure(404, "UserError", f"Compute {name} not found.")
        return {"vmSize": self.computes[name], "scaleSettings": {"minNodeCount": 0}}

    def put_job(self, name: str, props: dict[str, Any]) -> Job:
        with self.lock:
            if name in self.jobs:
                raise ApiFailure(409, "UserError", f"A job with name {name} already exists.")
            task = props.get("taskDetails") or {}
            if props.get("jobType") != "AutoML" or task.get("taskType") != "ImageClassification":
                raise ApiFailure(400, "UserError", "this fake runs AutoML ImageClassification "
                                 "jobs only.")
            self.compute(self._relative(props.get("computeId", ""), "computes"))
            if task.get("targetColumnName") != "label" or task.get("primaryMetric") not in (
                    "Accuracy", "AUCWeighted", "PrecisionScoreWeighted"):
                raise ApiFailure(400, "UserError", "targetColumnName and primaryMetric are "
                                 "required.")
            for key in ("trainingData", "validationData"):
                data = task.get(key) or {}
                if data.get("jobInputType") != "mltable":
                    raise ApiFailure(400, "UserError", f"{key} must be an mltable input.")
                self._mltable(data.get("uri", ""))  # exists, reads
            limits = task.get("limitSettings") or {}
            if not DURATION.fullmatch(str(limits.get("timeout", "PT1H"))) or not 1 <= int(
                    limits.get("maxTrials", 1)) <= 1000:
                raise ApiFailure(400, "UserError", "invalid limitSettings.")
            job = Job(name, props, time.time())
            self.jobs[name] = job
            self.created["jobs"] += 1
            return job

    def job(self, name: str, advance: bool = True) -> Job:
        with self.lock:
            job = self.jobs.get(name)
            if job is None:
                raise ApiFailure(404, "UserError", f"Job {name} not found.")
            if advance and job.status in JOB_STEPS:
                job.polls += 1
                if job.polls >= self.train_polls:
                    self._finish(job)
                else:
                    job.status = JOB_STEPS[min(job.polls, len(JOB_STEPS) - 1)]
                    if job.status == "Running" and job.start_ms is None:
                        job.start_ms = int((job.created + 61.5) * 1000)
            return job

    def _finish(self, job: Job) -> None:
        """Train: centroids of the train + val images; the job fails like AutoML when an image
        is missing or a class has none."""
        job.start_ms = job.start_ms or int((job.created + 61.5) * 1000)
        job.end_ms = job.start_ms + int(self.train_seconds * 1000)
        task = job.body["taskDetails"]
        points: dict[str, list[tuple[float, ...]]] = {}
        for key in ("trainingData", "validationData"):
            for row in self._mltable(task[key]["uri"]):
                image = self.read(str(row.get("image_url")))
                if image is None or not isinstance(row.get("label"), str):
                    job.status = "Failed"
                    return
                points.setdefault(row["label"], []).append(thumbnail(image))
        if len(points) < 2:
            job.status = "Failed"
            return
        trials = int(task.get("limitSettings", {}).get("maxTrials", 1))
        job.trials = [f"{job.name}_HD_{i}" for i in range(trials)]
        centroids = {label: tuple(sum(c) / len(ps) for c in zip(*ps, strict=True))
                     for label, ps in points.items()}
        for trial in job.trials:
            self.trained[trial] = centroids
            self.runs[trial] = {"start": job.start_ms, "end": job.end_ms, "tags": {
                "mlflow.parentRunId": f"{job.name}_HD"}}
        job.status = "Completed"

    def mlflow_run(self, run_id: str) -> dict[str, Any]:
        with self.lock:
            if run_id in self.jobs:
                job = self.jobs[run_id]
                tags = {"mlflow.runName": run_id, **job.body.get("tags", {})}
                if job.status == "Completed":
                    tags["automl_best_child_run_id"] = job.trials[0]
                run = {"start": job.start_ms, "end": job.end_ms, "tags": tags,
                       "status": {"Completed": "FINISHED", "Failed": "FAILED"}.get(
                           job.status, "RUNNING")}
            elif run_id in self.runs:
                run = {**self.runs[run_id], "status": "FINISHED"}
            else:
                raise ApiFailure(404, "RESOURCE_DOES_NOT_EXIST", f"Run '{run_id}' not found.")
        info = {"run_id": run_id, "run_uuid": run_id, "experiment_id": "1",
                "status": run["status"], "lifecycle_stage": "active"}
        info.update({k: run[k2] for k, k2 in (("start_time", "start"), ("end_time", "end"))
                     if run[k2] is not None})
        return {"info": info, "data": {"metrics": [], "params": [], "tags": [
            {"key": k, "value": str(v)} for k, v in run["tags"].items()]}}

    # -- models ----------------------------------------------------------------------------------
    def put_model(self, name: str, version: str, props: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            match = MODEL_URI.fullmatch(str(props.get("modelUri")))
            if props.get("modelType") != "mlflow_model" or match is None:
                raise ApiFailure(400, "UserError", "an mlflow_model from a job's "
                                 "outputs/artifacts/outputs/mlflow-model/ expected.")
            if match["run"] not in self.trained:
                raise ApiFailure(400, "UserError", f"Run {match['run']} has no MLflow model.")
            if (name, version) not in self.models:
                self.created["models"] += 1
                self.models[(name, version)] = {**props, "jobName": match["run"]}
            return self.models[(name, version)]

    def model(self, arm_id: str) -> dict[str, Any]:
        name, _, version = self._relative(arm_id, "models").partition("/versions/")
        found = self.models.get((name, version))
        if found is None:
            raise ApiFailure(404, "UserError", f"Model {name}:{version} not found.")
        return found

    # -- online endpoints and deployments ----------------------------------------------------------
    def _advance(self, res: Resource) -> Resource:
        if res.state in ("Creating", "Updating", "Deleting"):
            res.polls_left -= 1
            if res.polls_left <= 0:
                res.state = "Deleted" if res.state == "Deleting" else "Succeeded"
        return res

    def endpoint(self, name: str, advance: bool = True) -> Resource:
        with self.lock:
            ep = self.endpoints.get(name)
            if ep is not None and advance:
                self._advance(ep)
                for dep in list(ep.children.values()):
                    if self._advance(dep).state == "Deleted":
                        del ep.children[dep.name]
                if ep.state == "Deleted":
                    del self.endpoints[name]
                    ep = None
            if ep is None:
                raise ApiFailure(404, "UserError", f"Endpoint {name} not found.")
            return ep

    def put_endpoint(self, name: str, body: dict[str, Any]) -> Resource:
        with self.lock:
            props = body.get("properties") or {}
            if not ENDPOINT_NAME.fullmatch(name) or name in self.taken:
                raise ApiFailure(409 if name in self.taken else 400, "UserError",
                                 f"Endpoint name {name} is invalid or taken in this region.")
            if body.get("location") != self.location or props.get("authMode") not in (
                    "Key", "AMLToken", "AADToken"):
                raise ApiFailure(400, "UserError", "location (the workspace's) and "
                                 "properties.authMode are required.")
            ep = self.endpoints.get(name)
            if ep is None:
                ep = self.endpoints[name] = Resource(name, body, polls_left=self.op_polls)
                self.created["endpoints"] += 1
                self.keys[name] = (secrets.token_urlsafe(24), secrets.token_urlsafe(24))
            else:
                ep.body, ep.state, ep.polls_left = body, "Updating", self.op_polls
            return ep

    def put_deployment(self, endpoint: str, name: str, body: dict[str, Any]) -> Resource:
        with self.lock:
            ep = self.endpoint(endpoint, advance=False)
            props, sku = body.get("properties") or {}, body.get("sku") or {}
            if ep.state != "Succeeded":
                raise ApiFailure(409, "UserError", f"Endpoint {endpoint} is {ep.state}.")
            if props.get("endpointComputeType") != "Managed" or not props.get("instanceType") \
                    or int(sku.get("capacity") or 0) < 1 or body.get("location") != self.location:
                raise ApiFailure(400, "UserError", "a Managed deployment needs location, "
                                 "instanceType and sku.capacity.")
            self.model(props.get("model", ""))
            dep = ep.children.get(name)
            if dep is None:
                dep = ep.children[name] = Resource(name, body, polls_left=self.op_polls)
                self.created["deployments"] += 1
            else:
                dep.body, dep.state, dep.polls_left = body, "Updating", self.op_polls
            return dep

    def delete(self, endpoint: str, deployment: str | None = None) -> None:
        with self.lock:
            ep = self.endpoint(endpoint, advance=False)
            target = ep if deployment is None else ep.children.get(deployment)
            if target is None:
                raise ApiFailure(404, "UserError", f"Deployment {deployment} not found.")
            for res in [target, *(ep.children.values() if deployment is None else ())]:
                res.state, res.polls_left = "Deleting", self.op_polls

    def regenerate_keys(self, endpoint: str) -> None:
        self.keys[endpoint] = (secrets.token_urlsafe(24), secrets.token_urlsafe(24))

    def score(self, endpoint: str, key: str, deployment: str | None,
              body: Any) -> list[dict[str, Any]]:
        """AutoML's image classification answer for one image (the MLflow model's format)."""
        with self.lock:
            ep = self.endpoint(endpoint, advance=False)
            if key not in self.keys.get(endpoint, ()):
                raise ApiFailure(401, "Unauthorized", "Invalid key.")
            serving = [d for d, w in ((ep.body.get("properties") or {}).get("traffic")
                                      or {}).items() if w]
            name = deployment or (serving[0] if serving else None)
            dep = ep.children.get(name or "")
            if dep is None or dep.state != "Succeeded":
                raise ApiFailure(404, "NotFound", "No valid deployments to route to. Please "
                                 "check that the endpoint has at least one deployment with "
                                 "positive weight values or use a deployment specific header "
                                 "to route.")
            model = self.model(dep.body["properties"]["model"])
            centroids = self.trained[model["jobName"]]
            self.predictions += 1
        data = (body or {}).get("input_data") or {}
        if data.get("columns") != ["image"] or not isinstance(data.get("data"), list) \
                or len(data["data"]) != 1:
            raise ApiFailure(400, "BadRequest", 'expected {"input_data": {"columns": '
                             '["image"], "data": ["<base64 image>"]}}')
        try:
            with Image.open(io.BytesIO(base64.b64decode(data["data"][0]))) as img:
                img.load()
            image = base64.b64decode(data["data"][0])
        except Exception:  # noqa: BLE001 - any decoder error means "not an image"
            raise ApiFailure(400, "BadRequest", "data[0] is not a base64 image.") from None
        x = thumbnail(image)
        labels = sorted(centroids)
        dists = [math.dist(x, centroids[lb]) for lb in labels]
        scale = sum(dists) / len(dists) / 4 + 1e-9
        weights = [math.exp(-(d - min(dists)) / scale) for d in dists]
        return [{"probs": [w / sum(weights) for w in weights], "labels": labels}]
