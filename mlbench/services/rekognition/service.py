"""AWS Rekognition Custom Labels behind the service contract: the seed's console steps, by API.

upload   the ablation's images and Ground Truth manifests to S3 (layout and format: `export`),
         then a project with TRAIN/TEST datasets imported from them, waited to CREATE_COMPLETE;
submit   a project version (= a training) on those datasets, returned at once;
wait     until trained; training seconds from the version's own timestamps, the billed hours
         from its BillableTrainingTimeInSeconds;
connect  start the model (MinInferenceUnits) and wait until RUNNING: billed from then on, so
         recorded in the run's deployment record (`Service.deployment`, outside every DVC
         output: starting or stopping never makes the trained model look changed to DVC);
predict  DetectCustomLabels with MinConfidence 0 (else labels under their trained threshold are
         hidden): the top label, its confidence 0-100 scaled to 0-1;
teardown stop the model (`mlbench rekognition stop`, the pipeline's teardown stage).

Who started what: a model mlbench trained is mlbench's to stop; a hand-given one
(`rekognition.endpoints`) is stopped only when mlbench started it (the deployment record says
so), never when the user had it running already.

Every resource is "find, else create", by names chosen deterministically, so a rerun after a
crash (even one that lost `<state_dir>/rekognition.json`) finds what the first run created
instead of paying for it twice:
- project `<project_prefix>-<dataset>-<n>-<digest>`, one per ablation content (a project holds
  one TRAIN and one TEST dataset), found with its datasets by name;
- versions `v1`, `v2`, ...: the newest that did not fail is reused (still training: wait for
  it); only when every version failed is a new one trained, so a rerun after TRAINING_FAILED
  retries once per rerun, never silently in a loop.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import itertools
import re
from collections.abc import Callable
from typing import Any

from mlbench.console import err, warn
from mlbench.core import AblationSplit, ModelRef, Prediction
from mlbench.errors import ServiceCallError, ServiceError, UserError
from mlbench.services.base import Job, Service, ServiceContext
from mlbench.services.cloud import StateStore, wait_for
from mlbench.services.http import best_of
from mlbench.services.rekognition import export
from mlbench.services.rekognition import s3 as s3up
from mlbench.services.rekognition.api import (
    AccessDenied,
    Api,
    AwsCallError,
    project_name,
    version_parts,
)

STATE_FILE = "rekognition.json"
#: DetectCustomLabels takes at most 4 MB of image bytes (Custom Labels quota).
MAX_IMAGE_BYTES = 4 * 1024 * 1024
#: Version states from which the model can be (or already is) started.
TRAINED = frozenset({"TRAINING_COMPLETED", "STARTING", "RUNNING", "STOPPING", "STOPPED",
                     "FAILED"})
#: Version states that will never give a model.
DEAD = frozenset({"TRAINING_FAILED", "DELETING", "COPYING_FAILED", "DEPRECATED", "EXPIRED"})
#: Codes answered when a name is already taken (created meanwhile by a concurrent rerun).
TAKEN = frozenset({"ResourceInUseException", "ResourceAlreadyExistsException"})
#: Which manifest each dataset of a project is imported from.
DATASETS = {"TRAIN": "train", "TEST": "val"}


class RekognitionService(Service):
    name = "rekognition"
    # The DetectCustomLabels quota is per account and region, raised on request: none here.
    max_rps = None

    def __init__(self, ctx: ServiceContext):
        super().__init__(ctx)
        self._api: Api | None = None
        self._store: StateStore | None = None
        self._arn: str | None = None
        self._warned_denied = False
        #: What the last `upload` sent and skipped, for the log line and the tests.
        self.upload_report: s3up.UploadReport | None = None

    @property
    def api(self) -> Api:
        """The clients, made on first use after the credential and region checks."""
        if self._api is None:
            self._api = Api(self.settings, max(10, self.ctx.in_flight,
                                               self.settings.upload_workers))
        return self._api

    @property
    def store(self) -> StateStore:
        if self._store is None:
            self._store = StateStore(self.ctx.state_dir / STATE_FILE, self.api.identity)
        return self._store

    def _bucket(self) -> str:
        """`buckets.aws`, checked before any AWS call: a bad one creates nothing."""
        bucket = self.ctx.bucket("aws")
        if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]", bucket):
            raise UserError(f"params.yaml: buckets.aws: {bucket!r} is not a valid S3 bucket "
                            "name")
        return bucket

    def _given(self, model: ModelRef) -> bool:
        """A model made by hand (`rekognition.endpoints`), not trained by mlbench."""
        arn = model.ids.get("project_version_arn")
        return bool(model.details.get("given_in_params")) or (
            arn is not None and arn == self.hand_given())

    def _started_by_us(self, arn: str) -> bool:
        return bool(self.deployment.get("up")) and self.deployment.get("resource") == arn

    def _billed(self, arn: str) -> None:
        """Record that `arn` runs (billed per inference-unit hour from now)."""
        s = self.settings
        self.deployment.up(arn, units=s.min_inference_units,
                           max_inference_units=s.max_inference_units)

    def _wait(self, check: Callable[[], tuple[bool, str, Any]], what: str, timeout: float,
              hint: str) -> Any:
        return wait_for(check, what=f"rekognition: {what}", every=self.settings.poll_seconds,
                        timeout=timeout, hint=hint)

    # -- upload: S3, then the project's datasets -----------------------------------------------
    def upload(self, split: AblationSplit) -> None:
        """Images and manifests to S3 (only what is missing or changed), then the datasets."""
        bucket = self._bucket()
        self.upload_report = report = s3up.put_ablation(self.api, bucket, split,
                                                        self.settings.upload_workers)
        err.print(f"rekognition: s3://{bucket}/{export.prefix(split.dataset, split.size)}: "
                  f"{report.uploaded} uploaded, {report.skipped} already there")
        digest = content_digest(split)
        if self.store.get("digest") != digest:
            self.store.reset(digest=digest)
        self.store.update(bucket=bucket)
        self._import(split, bucket, f"{self.settings.project_prefix}-{split.dataset}-"
                                    f"{split.size}-{digest}")

    def _import(self, split: AblationSplit, bucket: str, name: str) -> None:
        """The project and its TRAIN/TEST datasets from the manifests, waited to CREATE_COMPLETE."""
        project = self._project(name)
        self.store.update(project_name=name, project_arn=project["ProjectArn"])
        arns = {d["DatasetType"]: d["DatasetArn"] for d in project.get("Datasets", [])}
        for kind, part in DATASETS.items():
            if kind not in arns:
                arns[kind] = self._create_dataset(project["ProjectArn"], kind, bucket,
                                                  export.manifest_key(split.dataset, split.size,
                                                                      part))

        def check() -> tuple[bool, str, dict[str, dict[str, Any]]]:
            found = {kind: self.api.rek("describe_dataset", DatasetArn=arn)["DatasetDescription"]
                     for kind, arn in arns.items()}
            done = all(d.get("Status") not in ("CREATE_IN_PROGRESS", "UPDATE_IN_PROGRESS")
                       for d in found.values())
            return done, ", ".join(f"{k} {d.get('Status')}" for k, d in found.items()), found

        found = self._wait(check, "importing the datasets", self.settings.train_timeout_seconds,
                           "the import goes on at AWS; rerun to keep waiting")
        for kind, desc in found.items():
            if desc.get("Status") not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
                # CLIENT_ERROR: the manifest or the images (ours to fix); else AWS failed
                error = UserError if desc.get("StatusMessageCode") == "CLIENT_ERROR" \
                    else ServiceError
                raise error(f"rekognition: the {kind} dataset failed to import "
                            f"({desc.get('Status')}: {desc.get('StatusMessage', 'no message')});"
                            f" fix the cause, delete it with `aws rekognition delete-dataset "
                            f"--dataset-arn {arns[kind]}` and rerun")
            stats = desc.get("DatasetStats") or {}
            if stats.get("ErrorEntries"):
                err.print(f"[yellow]rekognition: {kind} dataset: {stats['ErrorEntries']} of "
                          f"{stats.get('TotalEntries')} images could not be imported[/yellow]")
        self.store.update(datasets=arns)

    def _project(self, name: str) -> dict[str, Any]:
        """The project called `name`, created when missing (a concurrent creation is fine)."""
        project = self.api.find_project(name)
        if project is None:
            try:
                self.api.rek("create_project", ProjectName=name)
                err.print(f"rekognition: created project {name}")
            except AwsCallError as exc:
                if exc.code not in TAKEN:
                    raise
            project = self.api.find_project(name)
            if project is None:
                raise ServiceError(f"rekognition: project {name} was created but cannot be "
                                   "described; rerun")
        return project

    def _create_dataset(self, project_arn: str, kind: str, bucket: str, key: str) -> str:
        err.print(f"rekognition: creating the {kind} dataset from s3://{bucket}/{key}")
        source = {"GroundTruthManifest": {"S3Object": {"Bucket": bucket, "Name": key}}}
        try:
            return self.api.rek("create_dataset", ProjectArn=project_arn, DatasetType=kind,
                                DatasetSource=source)["DatasetArn"]
        except AwsCallError as exc:
            if exc.code not in TAKEN:
                raise
        again = self.api.find_project(project_name(project_arn)) or {}
        return next(d["DatasetArn"] for d in again.get("Datasets", [])
                    if d["DatasetType"] == kind)

    # -- training --------------------------------------------------------------------------------
    def submit(self, split: AblationSplit) -> Job:
        """The newest usable version of the project, else a new one; recorded at once."""
        if self.store.get("digest") != content_digest(split) or not self.store.get("datasets"):
            self.upload(split)  # another process uploaded, or the import did not finish
        project_arn = self.store.get("project_arn")
        versions = self.api.versions(project_arn)
        usable = [v for v in versions if v["Status"] not in DEAD]
        arn = usable[-1]["ProjectVersionArn"] if usable else self._train(project_arn, versions)
        self.store.update(version_arn=arn)
        return Job(split.dataset, split.size, {"project_arn": project_arn, "version_arn": arn})

    def _train(self, project_arn: str, versions: list[dict[str, Any]]) -> str:
        if versions:
            last = versions[-1]
            err.print(f"rekognition: {last['ProjectVersionArn']} ended {last['Status']} "
                      f"({last.get('StatusMessage', '')}); training a new version")
        names = {version_parts(v["ProjectVersionArn"])[1] for v in versions}
        name = next(f"v{k}" for k in itertools.count(len(versions) + 1) if f"v{k}" not in names)
        output = {"S3Bucket": self.store.get("bucket"),
                  "S3KeyPrefix": f"{export.prefix(self.ctx.dataset, self.ctx.ablation)}/output/"}
        try:
            arn = self.api.rek("create_project_version", ProjectArn=project_arn,
                               VersionName=name, OutputConfig=output)["ProjectVersionArn"]
        except AwsCallError as exc:
            if exc.code not in TAKEN:
                raise
            return next(v["ProjectVersionArn"] for v in self.api.versions(project_arn)
                        if version_parts(v["ProjectVersionArn"])[1] == name)
        err.print(f"rekognition: training {name} of {project_name(project_arn)} (about an hour "
                  "or more)")
        return arn

    def wait(self, job: Job) -> ModelRef:
        project_arn, arn = job.ids["project_arn"], job.ids["version_arn"]
        version = self._wait_version(
            project_arn, arn, "TRAINING_IN_PROGRESS", f"training {version_parts(arn)[1]}",
            self.settings.train_timeout_seconds,
            "it keeps training on AWS; rerun the train stage to keep waiting")
        status, message = version["Status"], version.get("StatusMessage") or "no status message"
        if status == "TRAINING_FAILED":  # AWS's side failed to train on valid datasets
            raise ServiceError(f"rekognition: training of {arn} failed: {message}; a rerun "
                               "trains a new version")
        if status not in TRAINED:
            raise ServiceError(f"rekognition: model {arn} is {status} ({message}); it cannot "
                               "be used")
        model = self._model_ref(project_arn, version)
        datasets, bucket = self.store.get("datasets") or {}, self.store.get("bucket")
        model.ids.update({f"{kind.lower()}_dataset_arn": a for kind, a in datasets.items()})
        model.details.update(project_name=project_name(project_arn), bucket=bucket, manifests={
            part: f"s3://{bucket}/{export.manifest_key(job.dataset, job.ablation, part)}"
            for part in DATASETS.values()})
        return model

    def adopt(self, given: str) -> ModelRef:
        """A model trained elsewhere (the seed's console path): described, nothing created.

        Credentials allowed only DetectCustomLabels (all the seed's invoke needed) cannot
        describe it: the model is then recorded from its ARN alone, with one warning."""
        version_parts(given)  # a malformed ARN is one line before any call
        try:
            project_arn = self.api.project_of(given)
            model = self._model_ref(project_arn, self.api.version(project_arn, given))
        except AccessDenied as denied:
            self._denied(denied, "recording the model without its status or training time")
            model = ModelRef(self.name, self.ctx.dataset, self.ctx.ablation,
                             ids={"project_version_arn": given},
                             details={"status": "unknown (not allowed to describe it)"})
        model.details["given_in_params"] = True
        return model

    def _denied(self, denied: AccessDenied, instead: str) -> None:
        """One warning per service for a status check these credentials may not make."""
        if not self._warned_denied:
            warn(f"rekognition: not allowed to check the model ({denied.operation} denied); "
                 f"{instead}. Allow rekognition:DescribeProjects and "
                 "rekognition:DescribeProjectVersions to check it")
            self._warned_denied = True

    def recorded(self) -> ModelRef | None:
        """The hand-given model, else model.json, else the version a crashed run started (so
        `mlbench rekognition stop` still stops it)."""
        model, given = super().recorded(), self.hand_given()
        if given and (model is None or model.ids.get("project_version_arn") != given):
            return ModelRef(self.name, self.ctx.dataset, self.ctx.ablation,
                            {"project_version_arn": given})
        if model is None and self.store.get("version_arn"):
            model = ModelRef(self.name, self.ctx.dataset, self.ctx.ablation,
                             {"project_arn": self.store.get("project_arn", ""),
                              "project_version_arn": self.store.get("version_arn")})
        return model

    def _model_ref(self, project_arn: str, version: dict[str, Any]) -> ModelRef:
        created, ended = version.get("CreationTimestamp"), version.get("TrainingEndTimestamp")
        evaluation = version.get("EvaluationResult") or {}
        billable = version.get("BillableTrainingTimeInSeconds")
        return ModelRef(
            service=self.name, dataset=self.ctx.dataset, ablation=self.ctx.ablation,
            ids={"project_arn": project_arn, "project_version_arn": version["ProjectVersionArn"]},
            train_seconds=(ended - created).total_seconds() if created and ended else None,
            started_at=_iso(created), finished_at=_iso(ended),
            details={k: v for k, v in {
                "status": version.get("Status"),
                "billable_training_seconds": billable,
                "billable_training_hours": None if billable is None else billable / 3600,
                "f1_score": evaluation.get("F1Score"),
            }.items() if v is not None})

    # -- serving ---------------------------------------------------------------------------------
    def _arns(self, model: ModelRef) -> tuple[str, str]:
        """(project ARN, version ARN) of a recorded model."""
        arn = model.ids.get("project_version_arn")
        if not arn:
            raise UserError(f"rekognition: the model of {model.dataset} {model.ablation} has no "
                            "project_version_arn; rerun the train stage")
        return model.ids.get("project_arn") or self.api.project_of(arn), arn

    def _wait_version(self, project_arn: str, arn: str, during: str, what: str,
                      timeout: float, hint: str) -> dict[str, Any]:
        """Describe the version until its status is no longer `during`."""
        def check() -> tuple[bool, str, dict[str, Any]]:
            version = self.api.version(project_arn, arn)
            return version["Status"] != during, version["Status"], version

        return self._wait(check, what, timeout, hint)

    def connect(self, model: ModelRef) -> None:
        """Start the model unless it runs, and wait until it does (billing starts here).

        With credentials not allowed to describe the model (least privilege: DetectCustomLabels
        only), the status check is skipped with one warning and the model is called as it is."""
        try:
            project_arn, arn = self._arns(model)
            self._stop_superseded(arn)
            status = self.api.version(project_arn, arn)["Status"]
        except AccessDenied as denied:
            self._denied(denied, "calling it as it is (it must be RUNNING: start it in the "
                         "console if it is not)")
            self._arn = model.ids["project_version_arn"]
            return
        timeout, hint = self.settings.start_timeout_seconds, "rerun to keep waiting"
        if status == "TRAINING_IN_PROGRESS":
            raise UserError(f"rekognition: model {arn} is still training; run the train stage "
                            "first")
        if status == "STOPPING":
            status = self._wait_version(project_arn, arn, "STOPPING", "stopping before a "
                                        "restart", timeout, hint)["Status"]
        if status in ("TRAINING_COMPLETED", "STOPPED", "FAILED"):
            units = {"MinInferenceUnits": self.settings.min_inference_units}
            if self.settings.max_inference_units is not None:
                units["MaxInferenceUnits"] = self.settings.max_inference_units
            try:
                self.api.rek("start_project_version", ProjectVersionArn=arn, **units)
                self._billed(arn)
                err.print(f"rekognition: starting {arn} with {units['MinInferenceUnits']} "
                          "inference unit(s)")
            except AwsCallError as exc:
                if exc.code != "ResourceInUseException":  # started meanwhile elsewhere
                    raise
        elif status not in ("STARTING", "RUNNING"):
            raise UserError(f"rekognition: model {arn} is {status} and cannot be started")
        version = self._wait_version(project_arn, arn, "STARTING", "starting the model",
                                     timeout, hint)
        if version["Status"] != "RUNNING":
            if self._started_by_us(arn):
                self.deployment.down()
            raise ServiceError(f"rekognition: model {arn} did not start ({version['Status']}: "
                               f"{version.get('StatusMessage', 'no message')}); rerun")
        if not self._given(model):  # mlbench's model runs: billed, whoever started it
            self._billed(arn)
        if self._started_by_us(arn):
            err.print(f"[yellow]rekognition: {arn} is RUNNING and billed per inference-unit "
                      f"hour until the teardown stage or `mlbench rekognition stop "
                      f"{model.dataset} {model.ablation}`[/yellow]")
        self._arn = arn

    def _stop_superseded(self, arn: str) -> None:
        """A model this run's record says mlbench started, other than `arn` (the inputs
        changed, a new model was trained): stopped first, so nothing is left billing that the
        record (and so `teardown` and `mlbench status`) no longer knows of."""
        old = self.deployment.get("resource")
        if self.deployment.get("up") and old and old != arn:
            err.print(f"rekognition: {old} is superseded by {arn}: stopping it")
            self._stop(self.api.project_of(old), old)

    def predict(self, image: bytes) -> Prediction:
        """One DetectCustomLabels call (retried on throttling / 5xx; the attempts are counted)."""
        if self._arn is None:
            raise RuntimeError("rekognition: connect() must be called before predict()")
        answer, attempts = self.api.counted(
            self.api.rek_client, "detect_custom_labels", ProjectVersionArn=self._arn,
            Image={"Bytes": fit_image(image)}, MinConfidence=self.settings.min_confidence)
        return best_of([(label["Name"], label["Confidence"] / 100.0)
                        for label in answer.get("CustomLabels") or []
                        if isinstance(label.get("Name"), str)
                        and isinstance(label.get("Confidence"), int | float)], attempts)

    def describe(self, model: ModelRef) -> str:
        project_arn, arn = self._arns(model)
        status = self.api.version(project_arn, arn)["Status"]
        if status in ("STARTING", "RUNNING"):
            if self._started_by_us(arn):
                return f"{status}  {arn}  (billed per inference-unit hour since " \
                       f"{self.deployment.get('since')})"
            if self._given(model):
                return f"{status}  {arn}  (started by hand: mlbench leaves it running)"
        return f"{status}  {arn}"

    def deploy(self, model: ModelRef) -> str:
        self.connect(model)
        return f"RUNNING  {self._arn}"

    def teardown(self, model: ModelRef) -> str:
        """Stop the model if it runs (or starts) and mlbench may stop it (see the module's
        docstring); the status it ends in or is heading to."""
        project_arn, arn = self._arns(model)
        self._stop_superseded(arn)
        if self._given(model) and not self._started_by_us(arn):
            status = self.api.version(project_arn, arn)["Status"]
            return f"{status}  {arn}" + ("  (started by hand: left running; stop it in the "
                                         "console)" if status in ("STARTING", "RUNNING") else "")
        return f"{self._stop(project_arn, arn)}  {arn}"

    def _stop(self, project_arn: str, arn: str) -> str:
        """Stop `arn` if it runs (waiting out a start first: a starting model cannot be
        stopped); the status it ends in or is heading to. Its billing ends in the record."""
        status = self.api.version(project_arn, arn)["Status"]
        if status == "STARTING":
            status = self._wait_version(project_arn, arn, "STARTING", "waiting for the start "
                                        "to finish", self.settings.start_timeout_seconds,
                                        "rerun stop")["Status"]
        if status == "RUNNING":
            try:
                status = self.api.rek("stop_project_version",
                                      ProjectVersionArn=arn).get("Status", "STOPPING")
            except AwsCallError as exc:
                if exc.code != "ResourceInUseException":
                    raise
                status = self.api.version(project_arn, arn)["Status"]
        if self.deployment.get("resource") == arn:
            self.deployment.down()
        return status

    def close(self) -> None:
        if self._api is not None:
            self._api.close()
            self._api = None


def content_digest(split: AblationSplit) -> str:
    """8 hex of what the ablation holds (split, class, key): names its project, so another
    training set (another seed, new data) never reuses datasets built from the old one."""
    rows = sorted((export.object_key(split.dataset, split.size, part, ref), part, ref.class_name)
                  for part, refs in (("train", split.train), ("val", split.val)) for ref in refs)
    h = hashlib.sha256()
    for key, part, cls in rows:
        h.update(f"{part}\0{cls}\0{key}\n".encode())
    return h.hexdigest()[:8]


def fit_image(image: bytes, limit: int = MAX_IMAGE_BYTES) -> bytes:
    """The bytes to send: unchanged when a JPEG/PNG within 4 MB, else re-encoded to fit.

    Prepared images are capped by `max_side` and rarely exceed 4 MB, but a bigger (or non
    JPEG/PNG) image would be refused outright; re-encoding it as JPEG (quality 90) and shrinking
    it until it fits keeps the row a prediction, as a user of the API would do.
    """
    if len(image) <= limit and image.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")):
        return image
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(image)) as src:
            rgb = src.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise ServiceCallError(f"image cannot be decoded to send it: {exc}") from None
    scale = 1.0
    while True:
        size = (max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale)))
        buf = io.BytesIO()
        (rgb if scale == 1.0 else rgb.resize(size, Image.LANCZOS)).save(buf, "JPEG", quality=90)
        if buf.tell() <= limit:
            return buf.getvalue()
        scale *= 0.7


def _iso(value: Any) -> str | None:
    return value.astimezone(dt.UTC).isoformat(timespec="seconds") \
        if isinstance(value, dt.datetime) else None


SERVICE = RekognitionService
