"""State of the Hugging Face fake: Hub repos (files, commits), Jobs, and Inference Endpoints
(their control-plane record and the image classifier each one serves).

An endpoint holds a real (tiny) model: nearest colour centroid per class, softmax over negative
distances, so answers are right or wrong for a reason. It can speak in class names or, as many
AutoTrain deployments do, in `LABEL_<i>` ids that only the repo's `config.json` `id2label` maps
back. A Job "trains" for real in the same sense: when it completes, the class centroids are the
mean colours of the dataset repo's `train/<class>/` images, and the model repo gets a
`config.json` whose `id2label` names the classes (what `job/train.py` pushes).

Everything mlbench creates is counted in `created` (dataset/model repos, Jobs, endpoints), and
every file a commit carries in `files_received`, so tests can assert that a rerun sends and
creates nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.pacing import Pacing
from tests.images import mean_rgb

#: The Jobs hardware flavors the fake accepts (a subset of what the Hub offers).
FLAVORS = {"cpu-basic", "cpu-upgrade", "t4-small", "t4-medium", "l4x1", "a10g-small",
           "a10g-large", "a100-large"}
JOB_DONE = {"COMPLETED", "CANCELED", "ERROR", "DELETED"}


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return dt.datetime.fromtimestamp(moment, dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Endpoint:
    """One deployed image-classification endpoint (`/endpoints/<name>` on the fake)."""

    name: str
    centroids: dict[str, tuple[float, float, float]]
    #: "names": answer class names; "ids": answer LABEL_<i> (i = position in sorted classes).
    label_style: str = "names"
    #: The next N calls answer 503 "currently loading" with `estimated_time`.
    cold_requests: int = 0
    estimated_time: float = 0.05
    calls: int = 0

    @property
    def classes(self) -> list[str]:
        return sorted(self.centroids)

    def id2label(self) -> dict[str, str]:
        return {str(i): c for i, c in enumerate(self.classes)}

    def classify(self, image: bytes, top_k: int = 5) -> list[dict[str, Any]]:
        rgb = mean_rgb(image)
        weights = {c: math.exp(-math.dist(rgb, centroid) / 10.0)
                   for c, centroid in self.centroids.items()}
        total = sum(weights.values()) or 1.0
        ranked = sorted(weights.items(), key=lambda cw: -cw[1])[:top_k]
        index = {c: i for i, c in enumerate(self.classes)}
        return [{"label": c if self.label_style == "names" else f"LABEL_{index[c]}",
                 "score": w / total} for c, w in ranked]


@dataclass
class Repo:
    """A Hub repo: files by path, its commits (newest last), optionally private."""

    repo_id: str
    files: dict[str, bytes] = field(default_factory=dict)
    private: bool = False
    commit: str = "0" * 40
    repo_type: str = "model"
    commits: list[str] = field(default_factory=list)
    #: What a Job trained into this (model) repo: the endpoint's classifier.
    centroids: dict[str, tuple[float, float, float]] = field(default_factory=dict)

    @classmethod
    def autotrain_model(cls, repo_id: str, classes: list[str], private: bool = True) -> Repo:
        """A repo shaped like an AutoTrain image-classification model's."""
        commit = hashlib.sha1(repo_id.encode()).hexdigest()
        return cls(repo_id, {"config.json": model_config(classes)}, private, commit)

    def apply(self, added: dict[str, bytes], deleted: list[str], summary: str) -> str:
        self.files.update(added)
        for path in deleted:
            self.files.pop(path, None)
        self.commit = hashlib.sha1(f"{self.repo_id}{len(self.commits)}{summary}".encode()
                                   ).hexdigest()
        self.commits.append(self.commit)
        return self.commit


def model_config(classes: list[str]) -> bytes:
    return json.dumps({
        "architectures": ["ViTForImageClassification"],
        "id2label": {str(i): c for i, c in enumerate(classes)},
        "label2id": {c: str(i) for i, c in enumerate(classes)},
        "problem_type": "single_label_classification",
    }).encode()


@dataclass
class HubJob:
    """A Job: its spec as posted, its stage, and its own timestamps and log lines."""

    id: str
    namespace: str
    spec: dict[str, Any]
    created_at: float
    stage: str = "SCHEDULING"
    message: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    logs: list[tuple[float, str]] = field(default_factory=list)
    #: How long this Job runs (set by pacing); None: the state's `job_seconds`.
    run_seconds: float | None = None

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.spec.get("labels") or {})

    @property
    def model_repo(self) -> str:
        """The model repo the Job trains into (its `--model-repo` argument), or its id."""
        args = self.spec.get("command") or []
        return next((b for a, b in zip(args, args[1:], strict=False) if a == "--model-repo"),
                    self.id)

    def log(self, line: str, at: float | None = None) -> None:
        self.logs.append((at or time.time(), line))


@dataclass
class ManagedEndpoint:
    """An Inference Endpoint's control-plane record (created through the API)."""

    name: str
    namespace: str
    payload: dict[str, Any]
    url: str
    state: str = "pending"
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    ready_at: float = 0.0
    message: str = ""
    pauses: int = 0
    resumes: int = 0

    @property
    def repository(self) -> str:
        return self.payload["model"]["repository"]


class HfState:
    """Repos, Jobs, endpoints and the one valid token; thread-safe."""

    def __init__(self, token: str = "hf_test_token", user: str = "mlbench-user"):
        self.token = token
        self.user = user
        self.lock = threading.RLock()
        self.endpoints: dict[str, Endpoint] = {}
        self.repos: dict[str, Repo] = {}
        self.jobs: dict[str, HubJob] = {}
        self.managed: dict[str, ManagedEndpoint] = {}
        self.created: Counter[str] = Counter()
        self.files_received = 0
        #: How long a Job schedules, then runs; while `hold_jobs` is set a running Job never ends.
        self.schedule_seconds = 0.05
        self.job_seconds = 0.3
        self.hold_jobs = False
        #: "ok", or "error": the Job exits 1 with a Python traceback in its logs.
        self.job_outcome = "ok"
        #: False: the account has no credit; Jobs are refused with 402.
        self.credit = True
        #: How long a created or resumed endpoint initialises before it runs.
        self.init_seconds = 0.2
        self.tree_page = 1000
        self.public_url = ""
        #: Wall-clock pacing (`tests/fakes/pacing.py`): a Job's running time by its model repo
        #: (replacing `job_seconds`), an endpoint's start by its name (replacing
        #: `init_seconds`), the endpoints' latency and rate limit.
        self.pacing: Pacing | None = None

    # -- repos -----------------------------------------------------------------------------------
    def add_repo(self, repo: Repo) -> Repo:
        with self.lock:
            self.repos[self.key(repo.repo_type, repo.repo_id)] = repo
        return repo

    @staticmethod
    def key(repo_type: str, repo_id: str) -> str:
        return repo_id if repo_type == "model" else f"{repo_type}s/{repo_id}"

    def repo(self, repo_type: str, repo_id: str) -> Repo | None:
        return self.repos.get(self.key(repo_type, repo_id))

    def readable(self, repo: Repo | None, auth: str) -> bool:
        return repo is not None and (not repo.private or auth == f"Bearer {self.token}")

    # -- inference endpoints (the serving side) --------------------------------------------------
    def add_endpoint(self, endpoint: Endpoint) -> Endpoint:
        with self.lock:
            self.endpoints[endpoint.name] = endpoint
        return endpoint

    def take_cold(self, endpoint: Endpoint) -> bool:
        """Whether this call meets a cold (loading) endpoint."""
        with self.lock:
            endpoint.calls += 1
            if endpoint.cold_requests > 0:
                endpoint.cold_requests -= 1
                return True
            return False

    def managed_cold(self, name: str) -> ManagedEndpoint | None:
        """The managed endpoint `name` when it cannot answer yet (a call wakes one scaled to
        zero); None when it runs, or is not a managed one."""
        with self.lock:
            managed = self.managed.get(name)
            if managed is None:
                return None
            self.advance_endpoint(managed)
            if managed.state == "scaledToZero":
                managed.state, managed.ready_at = "initializing", self.ready_time(name)
            return None if managed.state == "running" else managed

    def ready_time(self, name: str) -> float:
        """When endpoint `name`, starting now, will run (wall clock)."""
        if self.pacing is not None:
            return self.pacing.deployment_done_at(name)
        return time.time() + self.init_seconds

    # -- Jobs ------------------------------------------------------------------------------------
    def pace_job(self, job: HubJob) -> None:
        """A new Job's running time, when the fake is paced."""
        if self.pacing is not None:
            job.run_seconds = self.pacing.training_done_at(job.model_repo) - time.time()

    def advance_job(self, job: HubJob) -> None:
        """Move a Job on by the clock: scheduling -> running -> completed (or error)."""
        with self.lock:
            now = time.time()
            if job.stage == "SCHEDULING" and now - job.created_at >= self.schedule_seconds:
                job.stage, job.started_at = "RUNNING", job.created_at + self.schedule_seconds
                job.log("Downloading torch, transformers, huggingface-hub (pinned)", now)
            runs = self.job_seconds if job.run_seconds is None else job.run_seconds
            if job.stage == "RUNNING" and not self.hold_jobs and \
                    now - (job.started_at or now) >= runs:
                self.finish_job(job, now)

    def finish_job(self, job: HubJob, now: float) -> None:
        args = job.spec["command"][4:]
        opts = dict(zip(args[::2], args[1::2], strict=False))
        job.finished_at = now
        failure = self._job_failure(job, opts) or (
            "RuntimeError: CUDA error: out of memory (injected)"
            if self.job_outcome == "error" else None)
        if failure:
            for line in ("Traceback (most recent call last):",
                         '  File "/tmp/train.py", line 170, in train', failure):
                job.log(line, now)
            job.stage, job.message = "ERROR", "Job failed with exit code: 1"
            return
        data = self.repo("dataset", opts["--dataset"])
        centroids: dict[str, list[tuple[float, float, float]]] = {}
        for path, body in sorted(data.files.items()):
            part, cls, _ = (path.split("/") + ["", ""])[:3]
            if part == "train":
                centroids.setdefault(cls, []).append(mean_rgb(body))
        classes = sorted(centroids)
        model = self.repo("model", opts["--model-repo"])
        if model is None:  # the script creates it (private) when mlbench did not
            model = self.add_repo(Repo(opts["--model-repo"], private=True))
            self.created["model_repo"] += 1
        model.centroids = {c: tuple(sum(v[i] for v in vs) / len(vs) for i in range(3))
                           for c, vs in centroids.items()}
        model.apply({"config.json": model_config(classes),
                     "preprocessor_config.json": b'{"image_processor_type": "ViTImageProcessor"}',
                     "model.safetensors": b"fake weights",
                     "mlbench_train.json": json.dumps({"classes": classes}).encode()}, [],
                    "mlbench: fine-tuned image classifier")
        for epoch in range(1, int(opts["--epochs"]) + 1):
            job.log(f"epoch {epoch}/{opts['--epochs']}: train loss 0.1, validation accuracy 1",
                    now)
        job.log(f"pushed {opts['--model-repo']} at {model.commit}", now)
        job.stage = "COMPLETED"

    def _job_failure(self, job: HubJob, opts: dict[str, str]) -> str | None:
        """What the real script would die of, given what the Job was sent."""
        env, secrets = job.spec.get("environment") or {}, job.spec.get("secrets") or {}
        if "# /// script" not in str(env.get("MLBENCH_TRAIN_PY", "")):
            return "FileNotFoundError: /tmp/train.py is not a uv script (no MLBENCH_TRAIN_PY)"
        if secrets.get("HF_TOKEN") != self.token:
            return "huggingface_hub.errors.HfHubHTTPError: 401 Unauthorized (HF_TOKEN secret)"
        missing = [k for k in ("--dataset", "--revision", "--model-repo", "--base-model",
                               "--epochs", "--learning-rate", "--batch-size") if k not in opts]
        if missing:
            return f"train.py: error: the following arguments are required: {missing[0]}"
        data = self.repo("dataset", opts["--dataset"])
        if data is None or opts["--revision"] not in data.commits:
            return f"RevisionNotFoundError: {opts['--dataset']}@{opts['--revision']}"
        return None

    # -- endpoints (the control plane) -----------------------------------------------------------
    def advance_endpoint(self, ep: ManagedEndpoint) -> None:
        with self.lock:
            if ep.state in ("pending", "initializing") and time.time() >= ep.ready_at:
                model = self.repo("model", ep.repository)
                if model is None or "config.json" not in model.files:
                    ep.state, ep.message = "failed", f"{ep.repository}: no config.json"
                    return
                ep.state, ep.updated_at = "running", time.time()
                self.endpoints[ep.name] = Endpoint(ep.name, dict(model.centroids))

    def endpoint_raw(self, ep: ManagedEndpoint) -> dict[str, Any]:
        """The endpoint as the API returns it (what `InferenceEndpoint.from_raw` reads)."""
        self.advance_endpoint(ep)
        status: dict[str, Any] = {"state": ep.state, "createdAt": iso(ep.created_at),
                                  "updatedAt": iso(ep.updated_at), "message": ep.message,
                                  "readyReplica": int(ep.state == "running"),
                                  "targetReplica": int(ep.state not in ("paused",
                                                                        "scaledToZero"))}
        if ep.state == "running":
            status["url"] = ep.url
        model = dict(ep.payload["model"])
        model.setdefault("task", None)
        return {**ep.payload, "model": model, "status": status, "healthRoute": "/health"}
