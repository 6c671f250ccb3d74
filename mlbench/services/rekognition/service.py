"""AWS Rekognition Custom Labels: the seed's console steps, driven by the API.

upload   the ablation to S3 (`rekognition.s3`) and the Ground Truth manifests next to it;
train    project + TRAIN/TEST datasets from those manifests + a project version, waited for;
connect  start the model (MinInferenceUnits from params) and wait until RUNNING;
predict  DetectCustomLabels with MinConfidence 0 (otherwise labels under their trained
         threshold are hidden), top label, confidence 0-100 scaled to 0-1.

A running model is billed per inference-unit hour until stopped: `mlbench rekognition stop`.
A model trained elsewhere can be benchmarked by giving its ARN in params.yaml
(`rekognition.models.<dataset>.<ablation>`): nothing is uploaded or trained then.

What a run created is recorded in `<state_dir>/rekognition.json`; the names it creates are
deterministic as well (see `rekognition.lifecycle`), so a rerun continues and never duplicates.
"""

from __future__ import annotations

import datetime as dt
import io
import time
from pathlib import Path
from typing import Any

import typer

from mlbench import paths
from mlbench.cli_util import user_errors
from mlbench.console import err
from mlbench.errors import UserError
from mlbench.io import atomic_write_bytes, atomic_write_json, read_json
from mlbench.services.base import (
    AblationSplit,
    ModelRef,
    Prediction,
    Service,
    ServiceContext,
    register,
)
from mlbench.services.http import RetryPolicy, ServiceCallError
from mlbench.services.rekognition import lifecycle as life
from mlbench.services.rekognition import s3 as s3up
from mlbench.services.rekognition.aws import (
    Aws,
    RekognitionSettings,
    error_code,
    error_message,
    http_status,
    is_retryable,
    resolve_bucket,
    settings_from,
)

STATE_FILE = "rekognition.json"
#: DetectCustomLabels takes at most 4 MB of image bytes (Custom Labels quota).
MAX_IMAGE_BYTES = 4 * 1024 * 1024


@register
class RekognitionService(Service):
    """AWS Rekognition Custom Labels behind the `Service` contract (boto3, not plain HTTP)."""

    name = "rekognition"
    # Default DetectCustomLabels quota is per account and region; it is raised on request.
    max_rps = None

    def __init__(self, ctx: ServiceContext):
        super().__init__(ctx)
        self.cfg: RekognitionSettings = settings_from(ctx.params)
        self._aws: Aws | None = None
        self._uploaded: tuple[str, int] | None = None
        self._model_arn: str | None = None
        self._retry = RetryPolicy(max_attempts=self.cfg.max_attempts,
                                  base_delay=self.cfg.backoff_seconds)
        #: What the last `upload` did (sent / skipped), for logs and tests.
        self.upload_report: s3up.UploadReport | None = None

    # -- plumbing ----------------------------------------------------------------------------------
    @property
    def aws(self) -> Aws:
        """Clients, created on first use after the credential/region checks."""
        if self._aws is None:
            pool = max(10, self.ctx.params.load.concurrency, self.cfg.upload_workers)
            self._aws = Aws(self.cfg, pool_size=pool)
        return self._aws

    @property
    def state_path(self) -> Path:
        return self.ctx.state_dir / STATE_FILE

    def _state(self) -> dict[str, Any]:
        return read_json(self.state_path) if self.state_path.exists() else {}

    def _save(self, state: dict[str, Any]) -> None:
        atomic_write_json(self.state_path, state)

    def waiting(self) -> life.Waiting:
        return life.Waiting(self.cfg.poll_seconds, self.cfg.train_timeout_seconds,
                            self.cfg.start_timeout_seconds)

    # -- upload ------------------------------------------------------------------------------------
    def upload(self, split: AblationSplit) -> None:
        """Send the ablation's images and manifests to S3 (only what is missing or changed)."""
        if self.cfg.model_arn(split.dataset, split.size):
            err.print(f"rekognition: {split.dataset}/{split.size}: model given in params.yaml "
                      "(rekognition.models); nothing to upload")
            return
        bucket = resolve_bucket(self.ctx.params)  # before any AWS call: fail fast, create nothing
        aws = self.aws
        aws.check_bucket(bucket)
        prefix = s3up.ablation_prefix(self.cfg.s3_prefix, split.dataset, split.size)
        items = s3up.plan(split, prefix)
        existing = s3up.list_existing(aws.s3, bucket, prefix)
        report = s3up.upload_items(aws.s3, bucket, items, existing, self.cfg.upload_workers,
                                   desc=f"s3://{bucket}/{prefix}")
        state = self._state()
        created = state.get("manifest_created") or _ground_truth_now()
        manifests = s3up.build_manifests(items, bucket, split.classes, created)
        keys = s3up.put_manifests(aws.s3, bucket, prefix, manifests, existing)
        for name, data in manifests.items():  # local copies, to inspect what Rekognition got
            atomic_write_bytes(self.ctx.state_dir / f"{name}.manifest", data)
        state.update(bucket=bucket, prefix=prefix, manifest_created=created,
                     manifests=keys, digest=s3up.content_digest(items), images=len(items))
        self._save(state)
        self.upload_report = report
        self._uploaded = (split.dataset, split.size)
        err.print(f"rekognition: s3://{bucket}/{prefix}: {report.uploaded} uploaded, "
                  f"{report.skipped} already there")

    # -- train -------------------------------------------------------------------------------------
    def train(self, split: AblationSplit) -> ModelRef:
        """Project + datasets + version, created or found again, and wait for training."""
        given = self.cfg.model_arn(split.dataset, split.size)
        if given:
            return self.model_from_arn(given, split.dataset, split.size)
        if self._uploaded != (split.dataset, split.size):
            self.upload(split)
        state = self._state()
        bucket, prefix = state["bucket"], state["prefix"]
        rek = self.aws.rek
        name = f"{self.cfg.project_prefix}-{split.dataset}-{split.size}-{state['digest']}"
        project = life.ensure_project(rek, name)
        state.update(project_name=name, project_arn=project["ProjectArn"])
        self._save(state)
        manifests = {"TRAIN": (bucket, state["manifests"]["train"]),
                     "TEST": (bucket, state["manifests"]["val"])}
        datasets = life.ensure_datasets(rek, project, manifests, self.waiting())
        state.update(datasets=datasets)
        self._save(state)

        def record(arn: str) -> None:
            state.update(version_arn=arn)
            self._save(state)

        output = {"S3Bucket": bucket, "S3KeyPrefix": f"{prefix}/output/"}
        version = life.ensure_trained(rek, project["ProjectArn"], output, self.waiting(), record)
        model = self._model_ref(split.dataset, split.size, project["ProjectArn"], version)
        model.ids.update(train_dataset_arn=datasets["TRAIN"], test_dataset_arn=datasets["TEST"])
        model.details.update(project_name=name, bucket=bucket,
                             manifests={k: f"s3://{bucket}/{v}"
                                        for k, v in state["manifests"].items()})
        state.update(train_seconds=model.train_seconds, status=version["Status"])
        self._save(state)
        return model

    def model_from_arn(self, arn: str, dataset: str, size: int) -> ModelRef:
        """A ModelRef for a model trained elsewhere (the seed's manual path): describe, no train."""
        rek = self.aws.rek
        project_arn = life.project_arn_of(rek, arn)
        version = life.describe_version(rek, project_arn, arn)
        model = self._model_ref(dataset, size, project_arn, version)
        model.details["given_in_params"] = True
        return model

    def _model_ref(self, dataset: str, size: int, project_arn: str,
                   version: dict[str, Any]) -> ModelRef:
        created, ended = version.get("CreationTimestamp"), version.get("TrainingEndTimestamp")
        seconds = (ended - created).total_seconds() if created and ended else None
        evaluation = version.get("EvaluationResult") or {}
        return ModelRef(
            service=self.name, dataset=dataset, ablation=size,
            ids={"project_arn": project_arn,
                 "project_version_arn": version["ProjectVersionArn"]},
            train_seconds=seconds,
            started_at=_iso(created), finished_at=_iso(ended),
            details={k: v for k, v in {
                "status": version.get("Status"),
                "billable_training_seconds": version.get("BillableTrainingTimeInSeconds"),
                "f1_score": evaluation.get("F1Score"),
                "min_inference_units": self.cfg.min_inference_units,
            }.items() if v is not None},
        )

    # -- predict -----------------------------------------------------------------------------------
    def connect(self, model: ModelRef) -> None:
        """Start the model if it is not running and wait until it is (billing starts here)."""
        arn = model.ids.get("project_version_arn")
        if not arn:
            raise UserError(f"{paths.model_json(self.name, model.dataset, model.ablation)}: no "
                            "project_version_arn; rerun the train stage")
        rek = self.aws.rek
        project_arn = model.ids.get("project_arn") or life.project_arn_of(rek, arn)
        life.ensure_running(rek, project_arn, arn, self.cfg.min_inference_units,
                            self.cfg.max_inference_units, self.waiting())
        err.print(f"[yellow]rekognition: {arn} is RUNNING and billed per inference-unit hour "
                  f"until `mlbench rekognition stop {model.dataset} {model.ablation}`[/yellow]")
        self._model_arn = arn

    def predict(self, image: bytes) -> Prediction:
        """One DetectCustomLabels call (retried on throttling / 5xx; attempts are counted)."""
        from botocore.exceptions import BotoCoreError, ClientError

        if self._model_arn is None:
            raise RuntimeError("rekognition: connect() must be called before predict()")
        data = fit_image(image)
        client = self.aws.detect
        last, status = "", None
        for attempt in range(1, self._retry.max_attempts + 1):
            try:
                answer = client.detect_custom_labels(
                    ProjectVersionArn=self._model_arn, Image={"Bytes": data},
                    MinConfidence=self.cfg.min_confidence)
            except (ClientError, BotoCoreError) as exc:
                last = f"{error_code(exc) or type(exc).__name__}: {error_message(exc)}"
                status = http_status(exc)
                if not is_retryable(exc):
                    raise ServiceCallError(last, status, attempt) from None
                if attempt < self._retry.max_attempts:
                    time.sleep(self._retry.backoff(attempt))
                continue
            return parse_labels(answer, attempt)
        raise ServiceCallError(f"gave up after {self._retry.max_attempts} attempts: {last}",
                               status, self._retry.max_attempts)

    def close(self) -> None:
        if self._aws is not None:
            for client in (self._aws.s3, self._aws.rek, self._aws.detect):
                client.close()
            self._aws = None


def parse_labels(answer: dict[str, Any], attempts: int = 1) -> Prediction:
    """Top CustomLabel as the prediction; every label's confidence (0-100 -> 0-1) as scores."""
    labels = answer.get("CustomLabels") or []
    scores: dict[str, float] = {}
    for label in labels:
        name, conf = label.get("Name"), label.get("Confidence")
        if isinstance(name, str) and isinstance(conf, int | float):
            scores[name] = max(scores.get(name, 0.0), min(1.0, max(0.0, conf / 100.0)))
    if not scores:
        return Prediction(None, 0.0, {}, attempts)
    best = max(scores, key=lambda n: (scores[n], n))
    return Prediction(best, scores[best], scores, attempts)


def fit_image(image: bytes, limit: int = MAX_IMAGE_BYTES) -> bytes:
    """The bytes to send: unchanged when a JPEG/PNG within 4 MB, else re-encoded to fit.

    Prepared images are capped by `max_side` and rarely exceed 4 MB, but a bigger (or non
    JPEG/PNG) image would be refused outright; re-encoding it as JPEG (quality 90) and halving
    its area until it fits keeps the row a prediction, as a user of the API would do.
    """
    is_jpeg, is_png = image[:3] == b"\xff\xd8\xff", image[:8] == b"\x89PNG\r\n\x1a\n"
    if len(image) <= limit and (is_jpeg or is_png):
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
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat(timespec="seconds")
    return None


def _ground_truth_now() -> str:
    """Ground Truth's `creation-date` style: ISO 8601 UTC with microseconds, no zone suffix."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


# -- vendor commands: `mlbench rekognition ...` ----------------------------------------------
cli = typer.Typer(help="AWS Rekognition Custom Labels models: status, start, stop (a running "
                  "model is billed per inference-unit hour until stopped).",
                  no_args_is_help=True)


def recorded_models(dataset: str | None, ablation: int | None) -> list[ModelRef]:
    """Models this project knows: `rekognition.models` in params.yaml and every model.json /
    state file of the train stage (`paths.models_dir`), filtered by dataset and ablation."""
    from mlbench.params import load_params

    params = load_params()
    cfg = settings_from(params)
    found: dict[tuple[str, int], ModelRef] = {}
    for ds, sizes in cfg.models.items():
        for n, arn in sizes.items():
            found[(ds, n)] = ModelRef("rekognition", ds, n, {"project_version_arn": arn})
    models_dir = paths.models_dir("rekognition", "_")  # <root>/rekognition/<ds>/models
    root, sub = models_dir.parent.parent, models_dir.name
    files = sorted(root.glob(f"*/{sub}/*/model.json")) + sorted(root.glob(f"*/{sub}/*/"
                                                                          f"{STATE_FILE}"))
    for f in files:
        ds, n = f.parts[-4], int(f.parts[-2]) if f.parts[-2].isdigit() else -1
        if n < 0 or (ds, n) in found:
            continue
        data = read_json(f)
        if f.name == STATE_FILE:
            if not data.get("version_arn"):
                continue
            data = {"service": "rekognition", "dataset": ds, "ablation": n,
                    "ids": {"project_arn": data.get("project_arn", ""),
                            "project_version_arn": data["version_arn"]}}
        found[(ds, n)] = ModelRef.from_json(data)
    models = [m for (ds, n), m in sorted(found.items())
              if (dataset is None or ds == dataset) and (ablation is None or n == ablation)]
    if not models:
        what = " ".join(str(x) for x in (dataset, ablation) if x is not None) or "any dataset"
        raise UserError(f"no Rekognition model recorded for {what}; train one (`mlbench train "
                        "rekognition <dataset>`) or set rekognition.models in params.yaml")
    return models


def _service_for(model: ModelRef) -> RekognitionService:
    from mlbench.params import load_params

    ctx = ServiceContext(load_params(), model.dataset, model.ablation,
                         paths.model_dir("rekognition", model.dataset, model.ablation))
    return RekognitionService(ctx)


def _project_arn(svc: RekognitionService, model: ModelRef) -> str:
    arn = model.ids["project_version_arn"]
    return model.ids.get("project_arn") or life.project_arn_of(svc.aws.rek, arn)


def stop_models(dataset: str | None, ablation: int | None, wait: bool = False) -> None:
    """Stop every recorded model matching dataset/ablation that runs; print where each ends."""
    for model in recorded_models(dataset, ablation):
        with _service_for(model) as svc:
            arn = model.ids["project_version_arn"]
            status = life.stop(svc.aws.rek, _project_arn(svc, model), arn, svc.waiting(),
                               until_stopped=wait)
            typer.echo(f"{model.dataset} {model.ablation}: {status}  {arn}")


@cli.command()
@user_errors
def stop(
    dataset: str | None = typer.Argument(None, help="Dataset (default: every recorded model)."),
    ablation: int | None = typer.Argument(None, help="Ablation (default: all of the dataset)."),
    wait: bool = typer.Option(False, "--wait", help="Wait until the model is STOPPED."),
) -> None:
    """Stop running models so they stop being billed."""
    stop_models(dataset, ablation, wait)


@cli.command()
@user_errors
def start(
    dataset: str = typer.Argument(..., help="Dataset."),
    ablation: int = typer.Argument(..., help="Ablation size."),
) -> None:
    """Start a trained model and wait until it is RUNNING (billed until stopped)."""
    for model in recorded_models(dataset, ablation):
        with _service_for(model) as svc:
            svc.connect(model)
            typer.echo(f"{model.dataset} {model.ablation}: RUNNING  "
                       f"{model.ids['project_version_arn']}")


@cli.command()
@user_errors
def status(
    dataset: str | None = typer.Argument(None, help="Dataset (default: every recorded model)."),
    ablation: int | None = typer.Argument(None, help="Ablation size."),
) -> None:
    """Show each recorded model's status (RUNNING ones are being billed)."""
    for model in recorded_models(dataset, ablation):
        with _service_for(model) as svc:
            arn = model.ids["project_version_arn"]
            desc = life.describe_version(svc.aws.rek, _project_arn(svc, model), arn)
            typer.echo(f"{model.dataset} {model.ablation}: {desc['Status']}  {arn}")
