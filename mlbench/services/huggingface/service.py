"""Hugging Face's lifecycle: dataset repo -> training Job -> model repo -> Inference Endpoint.

- upload: the ablation's train and val images into a private dataset repo
  (`<ns>/mlbench-<ds>-<n>-<digest>`, `train/<class>/<file>`, `validation/<class>/<file>`), in
  commits of `upload_batch` files; a file the repo already has (same path, same content) is not
  sent again, so a killed upload resumes.
- submit: one Job on `huggingface.flavor` running the pinned script `job/train.py`, which pushes
  the fine-tuned model (with `id2label`) to a private model repo mlbench created for it. The Job
  id goes into `<state_dir>/huggingface.json` the moment the Job exists; a rerun re-attaches to
  it (or finds it by its labels when the record was lost).
- wait: until the Job ends (`wait_for`); a failed Job is a `ServiceError` carrying its log tail.
  Training seconds come from the Job's own timestamps. Nothing is deployed here.
- connect (evaluate, load, `mlbench huggingface resume`): the model's Inference Endpoint is
  created, or resumed when paused or scaled to zero, waited for, recorded in the run's
  `Deployment` (`results/deployments/`, outside DVC's outputs), then warmed up and called.
- teardown (the pipeline's last stage, `mlbench huggingface pause`): pauses, scales to zero or
  deletes it (`huggingface.teardown`). Only endpoints mlbench made: a hand-given one is never
  touched.

A hand-given endpoint (`huggingface.endpoints.<ds>.<n>`) is adopted instead of all this (`adopt`):
checked to answer, with its model's label map and the training time given in params.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from huggingface_hub import JobHardware

from mlbench import paths
from mlbench.console import err
from mlbench.core import AblationSplit, ModelRef, Prediction
from mlbench.errors import ServiceError, UserError
from mlbench.services.base import Job, ServiceContext
from mlbench.services.cloud import StateStore, wait_for
from mlbench.services.http import HttpRequest, HttpService
from mlbench.services.huggingface import api, export, names, training
from mlbench.services.huggingface.hub import ENDPOINT_BROKEN, Hub, JobState, LocalFile

STATE_FILE = "huggingface.json"
TRAINED_BY = "Hugging Face Job"
#: What `teardown` calls for each `huggingface.teardown` mode, and the states that need no call.
TEARDOWN = {"pause": ("pause", ("paused",)),
            "scale-to-zero": ("scale_to_zero", ("scaledToZero", "paused")),
            "delete": ("delete", ())}


def note(message: str) -> None:
    err.print(f"huggingface: {message}", markup=False)


def made_by_mlbench(model: ModelRef) -> bool:
    """A model mlbench trained (its endpoint is mlbench's to create and tear down); a hand-given
    endpoint is the user's."""
    return "job_id" in model.ids and "endpoint_url" not in model.ids


class HuggingFaceService(HttpService):
    """Hub repos + a Job to train, an Inference Endpoint to serve (or a hand-given one)."""

    name = "huggingface"

    def __init__(self, ctx: ServiceContext):
        super().__init__(ctx)
        self.endpoint: api.Endpoint | None = None
        self._hub: Hub | None = None
        self._namespace = ""
        self._state: StateStore | None = None

    # -- plumbing --------------------------------------------------------------------------------
    @property
    def hub(self) -> Hub:
        """The Hub client; HF_TOKEN is required before anything is sent."""
        if self._hub is None:
            self._hub = Hub(api.read_token(), os.environ.get("HF_ENDPOINT") or None,
                            self.settings.endpoints_api, self.retry)
        return self._hub

    @property
    def namespace(self) -> str:
        """`huggingface.namespace`, else the token's own user (one whoami)."""
        if not self._namespace:
            self._namespace = self.settings.namespace or self.hub.user()
            if not self._namespace:
                raise UserError("params.yaml: huggingface.namespace: set the user or "
                                "organisation that owns the repos, Jobs and endpoints")
        return self._namespace

    @property
    def state(self) -> StateStore:
        """The run's record, ignored when it was made against another Hub or namespace."""
        if self._state is None:
            self._state = StateStore(self.ctx.state_dir / STATE_FILE,
                                     {"hub": self.hub.url, "namespace": self.namespace})
        return self._state

    def model_settings(self) -> dict[str, Any]:
        """The backbone, hyperparameters and training script, plus this ablation's hand-given
        model and training time only (another ablation's entry must not retrain this one)."""
        s, ds, n = self.settings, self.ctx.dataset, self.ctx.ablation
        found = {key: s.of(key, ds, n) if key in s.PER_ABLATION else getattr(s, key)
                 for key in s.MODEL_FIELDS}
        return {**found, "script": training.script_sha()}

    def run_key(self, split: AblationSplit) -> str:
        """The training's identity: the images (names and, through the dataset revision the
        upload ended on, content), the seed, the model settings and the script."""
        return names.run_key(split.digest, {**self.model_settings(), "seed": self.ctx.seed,
                                            "data": self.state.get("dataset_revision")},
                             training.script_sha())

    def hardware(self) -> dict[str, str]:
        s = self.settings
        return {"vendor": s.vendor, "region": s.region, "accelerator": s.accelerator,
                "instance_type": s.instance_type, "instance_size": s.instance_size}

    # -- training --------------------------------------------------------------------------------
    def upload(self, split: AblationSplit) -> None:
        """The ablation's images into its private dataset repo; only what the repo lacks."""
        repo = names.dataset_repo(self.namespace, split.dataset, split.size, split.digest)
        st = self.state
        if st.get("dataset_repo") != repo:  # other images: forget the old dataset and model
            st.reset(dataset_repo=repo)
        remote = self.hub.remote_files(repo, "dataset")
        if remote is None:  # not made yet (or deleted since): a private one
            if self.hub.ensure_repo(repo, "dataset"):
                note(f"created private dataset repo {repo}")
            remote = {}
        files = [LocalFile.of(path, ref.path) for path, ref in export.imagefolder(split)]
        todo = self.hub.missing(files, remote)
        size = self.settings.upload_batch
        for start in range(0, len(todo), size):
            batch = todo[start:start + size]
            self.hub.commit(repo, "dataset", batch, f"mlbench: {split.dataset} {split.size} "
                            f"images per class ({start + len(batch)}/{len(todo)} new)")
        if todo:
            note(f"{repo}: sent {len(todo)} of {len(files)} images")
        revision = self.hub.head(repo, "dataset")
        if not revision:
            raise ServiceError(f"huggingface: dataset repo {repo} is gone after the upload; "
                               "rerun to upload again")
        st.update(dataset_revision=revision)  # new content: a new run key, so a new Job

    def submit(self, split: AblationSplit) -> Job:
        """The ablation's training Job: the recorded one, one a lost record left (found by its
        labels), or a new one, recorded before anything waits on it."""
        st = self.state
        if not st.get("dataset_revision"):
            raise ServiceError("huggingface: nothing uploaded for this ablation; run "
                               f"`mlbench train huggingface {split.dataset}`")
        run = self.run_key(split)
        model_repo = names.model_repo(self.namespace, split.dataset, split.size, split.digest,
                                      run)
        if st.get("run") != run:
            st.update(run=run, model_repo=model_repo, job_id=None, job_url=None)
        labels = names.job_labels(run, split.dataset, split.size)
        if not st.get("job_id"):
            found = self.hub.find_job(self.namespace, labels)
            if found is not None:
                note(f"found Job {found.id} of an earlier run ({found.stage})")
                st.update(job_id=found.id, job_url=found.url)
        if not st.get("job_id"):
            job = self._start_job(split, model_repo, labels)
            st.update(job_id=job.id, job_url=job.url)
            note(f"started Job {job.id} on {self.settings.flavor}: {job.url}")
        return Job(split.dataset, split.size, {
            "job_id": st.get("job_id"), "job_url": st.get("job_url"), "model": model_repo,
            "dataset": st.get("dataset_repo"), "dataset_revision": st.get("dataset_revision"),
            "namespace": self.namespace})

    def _start_job(self, split: AblationSplit, model_repo: str, labels: dict[str, str]
                   ) -> JobState:
        s = self.settings
        known = {h.value for h in JobHardware}
        if s.flavor not in known:
            gpus = ", ".join(sorted(f for f in known if not f.startswith("cpu")))
            raise UserError(f"params.yaml: huggingface.flavor: {s.flavor!r} is not a Jobs "
                            f"hardware flavor; choose one of {gpus} (or cpu-basic, ...)")
        if self.hub.ensure_repo(model_repo, "model"):
            note(f"created private model repo {model_repo}")
        spec = training.job_spec(
            dataset_repo=self.state.get("dataset_repo"),
            revision=self.state.get("dataset_revision"), model_repo=model_repo,
            base_model=s.base_model, epochs=s.epochs, learning_rate=s.learning_rate,
            batch_size=s.batch_size, seed=self.ctx.seed, flavor=s.flavor,
            timeout=s.train_timeout, token=self.hub.token)
        return self.hub.run_job(self.namespace, {"name": f"mlbench-{names.slug(split.dataset)}"
                                                         f"-{split.size}", **spec}, labels)

    def wait(self, job: Job) -> ModelRef:
        """Until the Job ends; its model, with the label map it pushed and its running time."""
        ns, job_id = job.ids["namespace"], job.ids["job_id"]

        def check() -> tuple[bool, str, JobState]:
            state = self.hub.job(ns, job_id)
            if state is None:
                self.state.update(job_id=None)
                raise ServiceError(f"huggingface: Job {job_id} is gone at Hugging Face; rerun "
                                   "to start a new one")
            return state.done, state.stage.lower(), state

        state = wait_for(check, what=f"huggingface: training Job {job_id}",
                         every=self.settings.poll_seconds, timeout=self.settings.train_timeout,
                         hint=f"it goes on at Hugging Face ({job.ids.get('job_url')}); rerun "
                              "`mlbench train huggingface` to re-attach to it")
        if state.stage != "COMPLETED":
            self.state.update(job_id=None)  # the rerun starts a new Job
            tail = self.hub.log_tail(ns, job_id)
            said = f" ({state.message})" if state.message else ""
            logs = " | ".join(line[:200] for line in tail[-8:]) or "no log lines"
            raise ServiceError(f"huggingface: training Job {job_id} ended {state.stage}{said}; "
                               f"rerun to start a new one; log tail: {logs}")
        return self._trained(job, state)

    def _trained(self, job: Job, state: JobState) -> ModelRef:
        repo = job.ids["model"]
        config = self.hub.read_json(repo, "config.json")
        labels = (config or {}).get("id2label") if isinstance(config, dict) else None
        if not isinstance(labels, dict) or not labels:
            self.state.update(job_id=None)
            raise ServiceError(f"huggingface: Job {state.id} completed but {repo} has no "
                               "config.json with id2label; rerun to train again "
                               f"(its logs: {state.url})")
        s = self.settings
        return ModelRef(
            service=self.name, dataset=self.ctx.dataset, ablation=self.ctx.ablation,
            ids={"model": repo, "model_revision": self.hub.head(repo, "model") or "main",
                 "job_id": state.id, "dataset": job.ids["dataset"],
                 "dataset_revision": job.ids["dataset_revision"], "namespace": job.ids[
                     "namespace"]},
            train_seconds=state.seconds,
            details={"id2label": {str(k): str(v) for k, v in labels.items()},
                     "trained_by": TRAINED_BY, "job_url": state.url, "flavor": s.flavor,
                     "base_model": s.base_model, "epochs": s.epochs,
                     "learning_rate": s.learning_rate, "batch_size": s.batch_size,
                     "train_seconds_source": "the Job's started/finished timestamps",
                     "script_sha256": training.script_sha()})

    def adopt(self, given: str) -> ModelRef:
        """The endpoint at `given`: checked to answer, with its model's label map and the
        training time from params (a training made elsewhere is not readable by API)."""
        ds, n = self.ctx.dataset, self.ctx.ablation
        token = api.read_token()
        repo = self.settings.of("models", ds, n)
        id2label = api.load_id2label(repo, token, self.where("models"), self.retry) if repo \
            else {}
        self._open(given, token, id2label)
        seconds = self.settings.of("train_seconds", ds, n)
        return ModelRef(
            service=self.name, dataset=ds, ablation=n,
            ids={"endpoint_url": given, **({"model": repo} if repo else {})},
            train_seconds=seconds,
            details={
                "id2label": id2label,
                "train_seconds_source": "params.yaml" if seconds is not None
                else "unknown: set " + self.where("train_seconds"),
                "trained_by": "by hand (endpoint given in params.yaml)",
            },
        )

    def recorded(self) -> ModelRef | None:
        """model.json; else the endpoint given in params.yaml; else a Job still training (from
        the state record, without calling anyone)."""
        model, given = super().recorded(), self.hand_given()
        if model is not None:
            return model
        if given:
            return ModelRef(self.name, self.ctx.dataset, self.ctx.ablation,
                            ids={"endpoint_url": given})
        record = StateStore(self.ctx.state_dir / STATE_FILE)
        if record.get("job_id"):
            return ModelRef(self.name, self.ctx.dataset, self.ctx.ablation, ids={
                "job_id": record.get("job_id"), "model": record.get("model_repo"),
                "namespace": record.get("namespace")}, details={"training": True})
        return None

    # -- serving ---------------------------------------------------------------------------------
    def endpoint_name(self, model: ModelRef) -> str:
        return names.endpoint_name(model.dataset, model.ablation, model.ids["model"],
                                   self.hardware())

    def connect(self, model: ModelRef) -> None:
        url = model.ids.get("endpoint_url")
        token = api.read_token()
        if not url and not made_by_mlbench(model):
            raise UserError(f"{model.dataset}/{model.ablation}: model.json names no endpoint "
                            "nor training Job; rerun `mlbench train huggingface`")
        if made_by_mlbench(model):
            url = self._deploy(model)
        id2label = dict(model.details.get("id2label") or {})
        if not id2label and model.ids.get("model") and not made_by_mlbench(model):
            id2label = api.load_id2label(model.ids["model"], token, self.where("models"),
                                         self.retry)
        self._open(str(url), token, id2label)

    def _deploy(self, model: ModelRef) -> str:
        """The model's endpoint, running: created, or resumed when paused or scaled to zero;
        recorded as deployed (billed) from then on. Another endpoint this run deployed before
        (other hardware) is torn down first."""
        ns, name, repo = model.ids["namespace"], self.endpoint_name(model), model.ids["model"]
        self._retire_other(ns, name)
        ep = self.hub.endpoint(ns, name)
        if ep is not None and ep.repository != repo:
            raise UserError(f"huggingface: an endpoint named {name} serves {ep.repository}, "
                            f"not {repo}; delete or rename it at {api.ENDPOINTS_UI}")
        if ep is None:
            s = self.settings
            ep, created = self.hub.create_endpoint(ns, name, {
                "repository": repo, "revision": model.ids.get("model_revision"),
                "framework": "pytorch", "task": "image-classification",
                "accelerator": s.accelerator, "instance_type": s.instance_type,
                "instance_size": s.instance_size, "vendor": s.vendor, "region": s.region,
                "type": "authenticated"})
            if created:
                note(f"created Inference Endpoint {name} ({s.vendor} {s.region} "
                     f"{s.instance_type} {s.instance_size}) for {repo}")
        elif ep.state in ("paused", "scaledToZero"):
            note(f"resuming Inference Endpoint {name} ({ep.state})")
            ep = self.hub.act(ns, name, "resume") or ep
        self.deployment.up(name, namespace=ns, model=repo, hardware=self.hardware())
        ready = self._wait_running(ns, name)
        self.deployment.update(url=ready.url)
        return str(ready.url)

    def _wait_running(self, ns: str, name: str) -> Any:
        def check() -> tuple[bool, str, Any]:
            ep = self.hub.endpoint(ns, name)
            if ep is None:
                raise ServiceError(f"huggingface: Inference Endpoint {name} disappeared while "
                                   "starting; rerun to create it again")
            if ep.state in ENDPOINT_BROKEN:
                raise ServiceError(f"huggingface: Inference Endpoint {name} {ep.state}"
                                   f"{': ' + ep.message if ep.message else ''}; see its logs at "
                                   f"{api.ENDPOINTS_UI}")
            ready = ep.state == "running" and bool(ep.url) and \
                self.hub.healthy(str(ep.url), ep.health_route)
            return ready, ep.state, ep

        return wait_for(check, what=f"huggingface: Inference Endpoint {name}",
                        every=self.settings.poll_seconds, timeout=self.settings.deploy_timeout,
                        hint="it goes on starting at Hugging Face (billed meanwhile); rerun to "
                             "keep waiting, or `mlbench huggingface pause` to stop paying")

    def _retire_other(self, ns: str, name: str) -> None:
        other = self.deployment.get("resource")
        if self.deployment.get("up") and other and other != name:
            note(f"tearing down {other}, deployed earlier on other hardware")
            self._tear(ns, str(other))

    def _tear(self, ns: str, name: str) -> str:
        """Apply `huggingface.teardown` to endpoint `name`; one line on what was done."""
        mode = self.settings.teardown
        action, enough = TEARDOWN[mode]
        ep = self.hub.endpoint(ns, name)
        if ep is None:
            self.deployment.down()
            return f"endpoint {name} is not there: nothing billed"
        if ep.state in enough:
            done = f"already {ep.state}"
        else:
            self.hub.act(ns, name, action)
            done = {"pause": "paused", "scale_to_zero": "scaled to zero",
                    "delete": "deleted"}[action]
        self.deployment.down()
        return f"endpoint {name} {done} (huggingface.teardown: {mode})"

    def _open(self, url: str, token: str, id2label: dict[str, str]) -> None:
        self.endpoint = api.Endpoint(url, token, id2label, self.where("models"))
        if self.settings.warmup:
            api.warm_up(self.endpoint, self.retry, timeout=self.settings.warmup_timeout,
                        endpoints_key=self.where())

    def build_request(self, image: bytes) -> HttpRequest:
        if self.endpoint is None:
            raise RuntimeError("HuggingFaceService.connect() must be called before predict()")
        return self.endpoint.request(image)

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> Prediction:
        if self.endpoint is None:
            raise RuntimeError("HuggingFaceService.connect() must be called before predict()")
        return self.endpoint.answer(status, body)

    # -- vendor commands -------------------------------------------------------------------------
    def describe(self, model: ModelRef) -> str:
        """Said without calling the endpoint itself (a call would wake one scaled to zero); the
        control plane's answer for what mlbench made."""
        if model.details.get("training"):
            job = self.hub.job(model.ids["namespace"], model.ids["job_id"])
            stage = job.stage if job else "gone"
            return f"training Job {model.ids['job_id']}: {stage} (model {model.ids.get('model')})"
        if not made_by_mlbench(model):
            checked = paths.model_json(self.name, model.dataset, model.ablation).exists()
            state = "checked by `mlbench train`" if checked else \
                f"given in params.yaml, not checked yet (`mlbench train huggingface " \
                f"{model.dataset}`)"
            labels = model.ids.get("model") or self.settings.of("models", model.dataset,
                                                                 model.ablation)
            return (f"{model.ids.get('endpoint_url')}: {state}; labels from "
                    f"{labels or 'the endpoint'}; made by hand: pause or delete it yourself "
                    f"({api.ENDPOINTS_UI})")
        name = self.deployment.get("resource") or self.endpoint_name(model)
        ep = self.hub.endpoint(model.ids["namespace"], str(name))
        if ep is None:
            return (f"model {model.ids['model']}; endpoint {name} not created "
                    f"(`mlbench huggingface resume {model.dataset} {model.ablation}` creates "
                    "it, billed while running)")
        billed = "billed" if ep.state not in ("paused", "scaledToZero") else "not billed"
        return (f"endpoint {name}: {ep.state} ({billed}){' at ' + ep.url if ep.url else ''}; "
                f"model {model.ids['model']}")

    def deploy(self, model: ModelRef) -> str:
        self.connect(model)
        if made_by_mlbench(model):
            return f"endpoint {self.deployment.get('resource')} running at {self.endpoint.url}" \
                if self.endpoint else "running"
        return f"{model.ids.get('endpoint_url')} answers"

    def cancel(self, model: ModelRef) -> str:
        """Cancel the model's training Job while it runs (`mlbench huggingface cancel`)."""
        if not model.details.get("training"):
            return "no training Job running (trained, or given by hand)"
        ns, job_id = model.ids["namespace"], model.ids["job_id"]
        job = self.hub.job(ns, job_id)
        if job is None or job.done:
            return f"training Job {job_id}: {job.stage if job else 'gone'}, nothing to cancel"
        self.hub.cancel_job(ns, job_id)
        return f"training Job {job_id} cancelled (a rerun starts a new one)"

    def teardown(self, model: ModelRef) -> str:
        """Pause, scale to zero or delete the endpoint mlbench made; never one given by hand."""
        if not made_by_mlbench(model):
            return (f"{model.ids.get('endpoint_url') or 'no endpoint'}: given by hand, left as "
                    f"it is (pause it at {api.ENDPOINTS_UI} when you are done)")
        if model.details.get("training"):
            return f"training Job {model.ids['job_id']}: not deployed yet, nothing to tear down"
        name = self.deployment.get("resource") or self.endpoint_name(model)
        return self._tear(model.ids["namespace"], str(name))


SERVICE = HuggingFaceService
