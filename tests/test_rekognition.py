"""AWS Rekognition Custom Labels service against moto (S3, server mode) and the local fake.

Everything runs on 127.0.0.1 with dummy credentials; the shared credential files and the
instance metadata service are switched off so no test can reach a real AWS account.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
import sys
from pathlib import Path

import boto3
import pytest
import requests
import yaml
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer
from PIL import Image
from typer.testing import CliRunner

from mlbench import paths
from mlbench.core import AblationSplit, ImageRef, ModelRef
from mlbench.errors import MissingExtra, ServiceCallError, ServiceError, UserError
from mlbench.project import parse_checked_params
from mlbench.services.base import ServiceContext
from mlbench.services.registry import open_service, parse_settings, service_class
from mlbench.services.rekognition import export
from mlbench.services.rekognition import service as rek_service
from mlbench.services.rekognition.export import LABEL_ATTRIBUTE, class_folder
from mlbench.services.rekognition.service import MAX_IMAGE_BYTES, RekognitionService, fit_image
from mlbench.services.rekognition.settings import Settings
from tests.fakes.http_base import FakeServer, Fault, Response
from tests.fakes.rekognition import FakeRekognition, RekognitionBackend

BUCKET = "mlbench-test-bucket"
CLASSES = ("Ram C/V Van", "cat")
DS = "digits"


# -- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def moto_url():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Every test in a folder of its own: deployment records (`results/deployments/`) land
    there, never in the checkout."""
    monkeypatch.chdir(tmp_path)


def deployment(ablation: int = 4) -> dict:
    """The run's deployment record (outside the DVC outputs), or {} when nothing was run."""
    path = paths.deployment_file("rekognition", DS, ablation)
    return json.loads(path.read_text()) if path.exists() else {}


def run_until(fake, arn: str, status: str) -> None:
    """Describe the version (through the backend) until it reaches `status`."""
    version = fake.backend.version(arn)
    for _ in range(10):
        if version.state.status == status:
            return
        version.state.tick()
    raise AssertionError(f"{arn} stayed {version.state.status}")


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """Dummy credentials and region; nothing else from the machine's AWS configuration."""
    for var in list(os.environ):
        if var.startswith("AWS_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


@pytest.fixture
def s3(moto_url, aws_env):
    requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
    client = boto3.client("s3", endpoint_url=moto_url)
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def fake(s3):
    with FakeRekognition(RekognitionBackend(s3=s3, steps=2, train_seconds=3725.0)) as fake:
        yield fake


def make_image(path: Path, seed: int, size: int = 16) -> Path:
    rng = random.Random(seed)
    img = Image.new("RGB", (size, size), tuple(rng.randrange(256) for _ in range(3)))
    img.putpixel((0, 0), (seed % 256, 0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="PNG")
    return path


@pytest.fixture
def split(tmp_path) -> AblationSplit:
    """2 classes x (3 train + 1 val): the size-4 ablation of a tiny dataset."""
    train, val = [], []
    for c, cls in enumerate(CLASSES):
        for i in range(4):
            name = f"img_{c}_{i}.png"
            part = "val" if i == 3 else "train"
            path = make_image(tmp_path / "data" / cls.replace("/", "_") / name, 10 * c + i)
            (val if i == 3 else train).append(ImageRef(path, cls, part, name))
    return AblationSplit(DS, 4, tuple(sorted(CLASSES)), tuple(train), tuple(val))


def settings(moto_url: str, fake: FakeRekognition | None, **extra) -> dict:
    block = {"poll_seconds": 0.01, "backoff_seconds": 0.001, "s3_endpoint_url": moto_url}
    if fake is not None:
        block["endpoint_url"] = fake.url
    block.update(extra)
    return block


def project_params(rek: dict, buckets: dict | None = None) -> dict:
    return {"datasets": [DS], "services": ["local", "rekognition"],
            "buckets": {"aws": BUCKET} if buckets is None else buckets, "rekognition": rek}


def make_service(tmp_path, rek: dict, buckets: dict | None = None, state: str = "state",
                 ablation: int = 4) -> RekognitionService:
    """The service as the registry opens it, with its state in `tmp_path / state`."""
    params = parse_checked_params(project_params(rek, buckets))
    ctx = ServiceContext("rekognition", parse_settings("rekognition", params.section(
        "rekognition")), DS, ablation, params.seed, params.buckets, tmp_path / state)
    return service_class("rekognition")(ctx)


def keys_in(s3, bucket: str = BUCKET) -> set[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def count_puts(svc: RekognitionService) -> list[str]:
    puts: list[str] = []
    svc.api.s3_client.meta.events.register("provide-client-params.s3.PutObject",
                                           lambda params, **kw: puts.append(params["Key"]))
    return puts


def trained(tmp_path, moto_url, fake, split, **extra) -> tuple[RekognitionService, ModelRef]:
    svc = make_service(tmp_path, settings(moto_url, fake, **extra))
    svc.upload(split)
    return svc, svc.train(split)


# -- upload -------------------------------------------------------------------------------------
def test_upload_sends_exactly_the_ablation_and_a_rerun_sends_nothing(
        tmp_path, moto_url, s3, fake, split, monkeypatch):
    # endpoints through boto3's own env variables, as a user pointing at local servers would
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_REKOGNITION", fake.url)
    svc = make_service(tmp_path, {"poll_seconds": 0.01})
    svc.upload(split)
    prefix = f"mlbench/{DS}/4"
    expected = {f"{prefix}/train/Ram_C_V_Van/img_0_{i}.png" for i in range(3)}
    expected |= {f"{prefix}/train/cat/img_1_{i}.png" for i in range(3)}
    expected |= {f"{prefix}/val/Ram_C_V_Van/img_0_3.png", f"{prefix}/val/cat/img_1_3.png"}
    expected |= {f"{prefix}/manifests/train.manifest", f"{prefix}/manifests/val.manifest"}
    assert keys_in(s3) == expected
    assert (svc.upload_report.uploaded, svc.upload_report.skipped) == (8, 0)
    body = s3.get_object(Bucket=BUCKET, Key=f"{prefix}/train/cat/img_1_0.png")["Body"].read()
    assert body == split.train[3].path.read_bytes()
    # the upload ends with the project's datasets imported from the manifests
    (project,) = fake.backend.projects.values()
    assert {k: d.state.status for k, d in project.datasets.items()} == \
        {"TRAIN": "CREATE_COMPLETE", "TEST": "CREATE_COMPLETE"}

    again = make_service(tmp_path, {"poll_seconds": 0.01})
    puts = count_puts(again)
    again.upload(split)
    assert puts == []  # neither images nor (unchanged) manifests
    assert (again.upload_report.uploaded, again.upload_report.skipped) == (0, 8)

    make_image(split.train[0].path, 999)  # one image changed on disk: only it is sent again
    third = make_service(tmp_path, {"poll_seconds": 0.01})
    puts = count_puts(third)
    third.upload(split)
    assert puts == [f"{prefix}/train/Ram_C_V_Van/img_0_0.png"]
    ops = fake.operations()
    assert ops.count("CreateProject") == 1 and ops.count("CreateDataset") == 2


def test_manifests_are_valid_ground_truth_classification_lines(tmp_path, moto_url, s3, fake,
                                                               split):
    svc = make_service(tmp_path, settings(moto_url, fake))
    svc.upload(split)
    existing = keys_in(s3)
    for name, refs in (("train", split.train), ("val", split.val)):
        key = f"mlbench/{DS}/4/manifests/{name}.manifest"
        data = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        lines = [json.loads(line) for line in data.decode().splitlines()]
        assert len(lines) == len(refs)
        for line, ref in zip(lines, refs, strict=True):
            assert set(line) == {"source-ref", LABEL_ATTRIBUTE, f"{LABEL_ATTRIBUTE}-metadata"}
            assert line["source-ref"].startswith(f"s3://{BUCKET}/")
            assert line["source-ref"].removeprefix(f"s3://{BUCKET}/") in existing
            assert line["source-ref"].endswith(f"/{name}/{class_folder(ref.class_name)}/"
                                              f"{ref.name}")
            meta = line[f"{LABEL_ATTRIBUTE}-metadata"]
            assert line[LABEL_ATTRIBUTE] == split.classes.index(ref.class_name)
            assert meta["class-name"] == ref.class_name
            assert meta["confidence"] == 1 and meta["human-annotated"] == "yes"
            assert meta["job-name"] == f"labeling-job/{LABEL_ATTRIBUTE}"
            assert meta["type"] == "groundtruth/image-classification"
            assert meta["creation-date"] == export.CREATED  # fixed: a pure function of the split


def test_uploaded_manifests_equal_the_exported_seed_files(digits_copy, moto_url, s3, fake):
    """What Rekognition imports is byte for byte the seed file the `export` stage wrote (the
    session's project exported with `buckets.aws: abucket`)."""
    from mlbench.data.ablate import load_split

    s3.create_bucket(Bucket="abucket")
    svc = make_service(digits_copy, settings(moto_url, fake), buckets={"aws": "abucket"},
                       ablation=5)
    svc.upload(load_split(DS, 5))
    for part in ("train", "val"):
        seed_file = paths.ablations_dir(DS) / f"{DS}_{part}_aws_5.manifest"
        uploaded = s3.get_object(Bucket="abucket",
                                 Key=f"mlbench/{DS}/5/manifests/{part}.manifest")["Body"].read()
        assert uploaded == seed_file.read_bytes()
    assert len(keys_in(s3, "abucket")) == 5 * 10 + 2  # every image once, and the two manifests


# -- lifecycle ----------------------------------------------------------------------------------
def test_train_connect_predict_end_to_end(tmp_path, moto_url, fake, split):
    svc, model = trained(tmp_path, moto_url, fake, split, min_inference_units=2)
    backend = fake.backend
    assert len(backend.projects) == 1
    project = next(iter(backend.projects.values()))
    assert project.name.startswith(f"mlbench-{DS}-4-")
    assert {k: d.stats["ErrorEntries"] for k, d in project.datasets.items()} == \
        {"TRAIN": 0, "TEST": 0}
    assert project.datasets["TRAIN"].stats["TotalEntries"] == 6
    version = next(iter(project.versions.values()))
    assert model.ids["project_version_arn"] == version.arn
    assert model.ids["project_arn"] == project.arn
    assert model.ids["train_dataset_arn"] == project.datasets["TRAIN"].arn
    assert model.ids["test_dataset_arn"] == project.datasets["TEST"].arn
    assert model.train_seconds == pytest.approx(3725.0, abs=0.01)
    # what AWS bills for the training: BillableTrainingTimeInSeconds, not the wall time
    assert model.details["billable_training_hours"] == pytest.approx(3312 / 3600)
    assert model.started_at and model.finished_at
    assert version.output == {"S3Bucket": BUCKET, "S3KeyPrefix": f"mlbench/{DS}/4/output/"}
    assert json.dumps(model.to_json())  # serialisable as model.json
    assert deployment() == {}  # trained: nothing runs, nothing billed by the hour

    svc.connect(model)
    assert version.state.status == "RUNNING" and version.min_units == 2
    record = deployment()
    assert record["up"] is True and record["resource"] == version.arn
    assert record["units"] == 2 and record["since"]
    # accuracy is meaningful: the fake answers each test image with a scripted label
    truth = {}
    for i, cls in enumerate(CLASSES * 3):
        data = (make_image(tmp_path / "test" / f"t{i}.png", 500 + i)).read_bytes()
        fake.backend.answers[hashlib.sha256(data).hexdigest()] = [(cls, 91.0)]
        truth[data] = cls
    assert all(svc.predict(data).label == cls for data, cls in truth.items())
    assert svc.teardown(model) == f"STOPPING  {version.arn}" and version.stops == 1
    assert deployment()["up"] is False and deployment()["deployed_seconds"] > 0
    svc.close()


def test_submit_returns_at_once_with_the_version_recorded(tmp_path, moto_url, fake, split):
    svc = make_service(tmp_path, settings(moto_url, fake))
    svc.upload(split)
    job = svc.submit(split)
    version = fake.backend.version(job.ids["version_arn"])
    assert version.state.status == "TRAINING_IN_PROGRESS"  # nothing waited for
    state = json.loads((tmp_path / "state" / "rekognition.json").read_text())
    assert state["version_arn"] == job.ids["version_arn"]
    assert state["region"] == "us-east-1" and state["endpoint"] == fake.url
    model = svc.wait(job)
    assert version.state.status == "TRAINING_COMPLETED"
    assert model.ids["project_version_arn"] == version.arn


def test_rerun_after_a_crash_reuses_project_datasets_and_version(
        tmp_path, moto_url, fake, split, monkeypatch):
    real_wait = rek_service.wait_for

    def killed_while_training(check, *, what, **kwargs):
        if "training" in what:
            raise KeyboardInterrupt  # the process dies during the hour-long wait
        return real_wait(check, what=what, **kwargs)

    monkeypatch.setattr(rek_service, "wait_for", killed_while_training)
    svc = make_service(tmp_path, settings(moto_url, fake))
    svc.upload(split)
    with pytest.raises(KeyboardInterrupt):
        svc.train(split)
    state = json.loads((tmp_path / "state" / "rekognition.json").read_text())
    assert state["version_arn"]  # recorded before the wait
    (tmp_path / "state" / "rekognition.json").unlink()  # worst case: the state is lost too
    monkeypatch.setattr(rek_service, "wait_for", real_wait)

    model = make_service(tmp_path, settings(moto_url, fake)).train(split)
    ops = fake.operations()
    assert ops.count("CreateProject") == 1
    assert ops.count("CreateDataset") == 2
    assert ops.count("CreateProjectVersion") == 1
    assert model.ids["project_version_arn"] == state["version_arn"]
    assert model.train_seconds == pytest.approx(3725.0, abs=0.01)


def test_training_failure_reports_the_status_message_and_a_rerun_retries(
        tmp_path, moto_url, fake, split):
    fake.backend.fail_training = "The manifest file contains too many invalid data objects."
    svc = make_service(tmp_path, settings(moto_url, fake))
    svc.upload(split)
    with pytest.raises(ServiceError, match="too many invalid data objects") as caught:
        svc.train(split)
    # a failed training is AWS's side failing: a ServiceError (exit 1), never a UserError
    assert not isinstance(caught.value, UserError) and "\n" not in str(caught.value)
    fake.backend.fail_training = None
    model = svc.train(split)  # the rerun trains a new version (v2), once
    project = next(iter(fake.backend.projects.values()))
    assert sorted(project.versions) == ["v1", "v2"]
    assert model.ids["project_version_arn"] == project.versions["v2"].arn


def test_dataset_import_failure_is_reported_with_what_to_do(tmp_path, moto_url, s3, fake,
                                                            split):
    class Unreadable:
        """Rekognition cannot read the bucket (say, a bucket policy keeps it out)."""

        def get_object(self, **kwargs):
            raise PermissionError("AccessDenied")

    fake.backend.s3 = Unreadable()
    svc = make_service(tmp_path, settings(moto_url, fake))
    with pytest.raises(UserError, match=r"TRAIN dataset failed to import .*could not be read.*"
                                        r"delete-dataset --dataset-arn arn:aws:rekognition:"):
        svc.upload(split)
    fake.backend.s3 = s3
    with pytest.raises(UserError, match="failed to import"):
        svc.train(split)  # the failed dataset is found again, not trained on
    assert fake.operations().count("CreateProjectVersion") == 0  # nothing trained on bad data


def test_hand_given_model_is_adopted_without_upload_or_training(tmp_path, moto_url, fake,
                                                                split):
    _, model = trained(tmp_path, moto_url, fake, split)
    arn = model.ids["project_version_arn"]
    before = fake.operations()
    svc = make_service(tmp_path, settings(moto_url, fake, endpoints={DS: {4: arn}}),
                       state="other")
    assert svc.hand_given() == arn
    puts = count_puts(svc)
    given = svc.adopt(arn)
    assert puts == []
    created = [op for op in fake.operations()[len(before):] if op.startswith("Create")]
    assert created == []
    assert given.ids["project_version_arn"] == arn and given.details["given_in_params"]
    assert given.train_seconds == pytest.approx(3725.0, abs=0.01)
    svc.connect(given)  # not running: mlbench starts it, so mlbench stops it
    assert fake.backend.version(arn).state.status == "RUNNING"
    assert deployment()["up"] is True and deployment()["resource"] == arn
    assert svc.teardown(given) == f"STOPPING  {arn}" and deployment()["up"] is False


def test_a_hand_given_model_the_user_started_is_never_stopped(tmp_path, moto_url, fake, split):
    """Scored as it runs; teardown (the stage, `mlbench rekognition stop`) leaves it running:
    the user started it and pays for it knowingly."""
    _, model = trained(tmp_path, moto_url, fake, split)
    arn = model.ids["project_version_arn"]
    fake.backend.start_project_version(arn, 1, None)  # started in the console
    run_until(fake, arn, "RUNNING")
    version = fake.backend.version(arn)
    svc = make_service(tmp_path, settings(moto_url, fake, endpoints={DS: {4: arn}}),
                       state="other")
    given = svc.adopt(arn)
    svc.connect(given)
    assert version.starts == 1 and deployment() == {}  # mlbench started (and bills) nothing
    assert svc.describe(given).endswith("(started by hand: mlbench leaves it running)")
    assert svc.teardown(given) == (f"RUNNING  {arn}  (started by hand: left running; stop it in "
                                   "the console)")
    assert version.stops == 0 and version.state.status == "RUNNING"


def test_control_plane_calls_go_through_the_retry_policy(tmp_path, moto_url, fake, split):
    fake.backend.throttle("DescribeProjects", 2)
    fake.server.inject(Fault(503, count=1))
    svc = make_service(tmp_path, settings(moto_url, fake))
    svc.upload(split)
    assert fake.backend.projects  # throttled twice, failed once, and still done


# -- predict ------------------------------------------------------------------------------------
@pytest.fixture
def connected(tmp_path, moto_url, fake, split):
    svc, model = trained(tmp_path, moto_url, fake, split, max_attempts=3)
    svc.connect(model)
    yield svc, model
    svc.close()


def png_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), (seed % 256, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def test_predict_maps_top_label_and_confidence_to_unit_range(connected, fake):
    svc, _ = connected
    image = png_bytes(1)
    digest = hashlib.sha256(image).hexdigest()
    fake.backend.answers[digest] = [("cat", 12.5), ("Ram C/V Van", 87.5)]
    pred = svc.predict(image)
    assert pred.label == "Ram C/V Van"
    assert pred.confidence == pytest.approx(0.875)
    assert pred.scores == {"Ram C/V Van": pytest.approx(0.875), "cat": pytest.approx(0.125)}
    assert pred.attempts == 1
    sent = json.loads(fake.server.log[-1].body)
    assert sent["MinConfidence"] == 0  # otherwise labels under their threshold are hidden

    fake.backend.answers[digest] = []  # the service answered but named no label
    none = svc.predict(image)
    assert none.label is None and none.confidence == 0.0


def test_throttling_is_retried_and_attempts_are_counted(connected, fake):
    svc, _ = connected

    def detect_calls() -> int:
        return fake.operations().count("DetectCustomLabels")

    fake.backend.throttle("DetectCustomLabels", 2)
    before = detect_calls()
    assert svc.predict(png_bytes(2)).attempts == 3
    assert detect_calls() - before == 3  # botocore retries nothing on its own
    fake.backend.throttle("DetectCustomLabels", 1, code="ProvisionedThroughputExceededException")
    assert svc.predict(png_bytes(2)).attempts == 2
    fake.server.inject(Fault(500, count=1))  # a 5xx is transient too
    assert svc.predict(png_bytes(2)).attempts == 2

    fake.backend.throttle("DetectCustomLabels", 10)
    before = detect_calls()
    with pytest.raises(ServiceCallError, match="ThrottlingException") as caught:
        svc.predict(png_bytes(2))
    assert caught.value.attempts == 3 and detect_calls() - before == 3


def test_non_retryable_errors_raise_service_call_error_at_once(connected, fake):
    svc, model = connected
    assert svc.teardown(model).startswith("STOPPING")
    with pytest.raises(ServiceCallError, match="ResourceNotReadyException") as caught:
        svc.predict(png_bytes(3))
    assert caught.value.attempts == 1 and caught.value.status == 400


def test_images_over_4_mb_are_reencoded_to_fit(connected, fake):
    svc, _ = connected
    rng = random.Random(0)
    noise = Image.frombytes("RGB", (1400, 1400), bytes(rng.randrange(256)
                                                        for _ in range(1400 * 1400 * 3)))
    buf = io.BytesIO()
    noise.save(buf, format="PNG")
    big = buf.getvalue()
    assert len(big) > MAX_IMAGE_BYTES
    assert svc.predict(big).label is not None
    sent = fake.backend.detected[-1]
    assert len(sent) <= MAX_IMAGE_BYTES and sent[:3] == b"\xff\xd8\xff"
    small = png_bytes(4)
    assert fit_image(small) is small  # within the limit: sent unchanged


# -- vendor commands ----------------------------------------------------------------------------
@pytest.fixture
def project_root(tmp_path, moto_url, fake, monkeypatch) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.chdir(root)
    (root / "params.yaml").write_text(yaml.safe_dump(project_params(settings(moto_url, fake))))
    return root


def cli(*args: str):
    from mlbench.cli import app  # mounts every service's commands, as `mlbench` does

    return CliRunner().invoke(app, ["rekognition", *args])


def mlbench_status() -> str:
    """`mlbench status`: what the project knows is deployed (billed by the hour) now."""
    from mlbench.cli import app

    result = CliRunner().invoke(app, ["status"])
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_status_stop_and_start(project_root, moto_url, fake, split):
    svc = open_service(parse_checked_params(project_params(settings(moto_url, fake))),
                       "rekognition", DS, 4)
    svc.upload(split)
    model = svc.train(split)
    svc.connect(model)
    model.save(paths.model_json("rekognition", DS, 4))
    version = fake.backend.version(model.ids["project_version_arn"])

    result = cli("status")
    assert result.exit_code == 0, result.output
    assert f"{DS} 4: RUNNING  {version.arn}  (billed per inference-unit hour since " \
        in result.output
    billed = mlbench_status()
    assert "rekognition" in billed and "nothing deployed" not in billed
    result = cli("stop", DS, "4")
    assert result.exit_code == 0, result.output
    assert f"{DS} 4: STOPPING" in result.output and version.stops == 1
    assert "nothing deployed" in mlbench_status() and deployment()["up"] is False
    for _ in range(3):  # the fake stops over a few Describe calls, as AWS does over minutes
        result = cli("status")
    assert f"{DS} 4: STOPPED" in result.output and version.state.status == "STOPPED"
    result = cli("stop")  # nothing running any more: no second stop call
    assert result.exit_code == 0 and version.stops == 1
    result = cli("start", DS, "4")
    assert result.exit_code == 0, result.output
    assert f"{DS} 4: RUNNING" in result.output
    assert version.state.status == "RUNNING" and version.starts == 2
    result = cli("stop", "pets")
    assert result.exit_code == 2
    assert "no rekognition model recorded for pets" in result.output


def test_cli_stops_a_model_started_by_a_run_that_crashed_before_model_json(
        project_root, moto_url, fake, split):
    svc = open_service(parse_checked_params(project_params(settings(moto_url, fake))),
                       "rekognition", DS, 4)
    svc.upload(split)
    model = svc.wait(svc.submit(split))
    svc.connect(model)  # ... and the process dies: no model.json was written
    assert not paths.model_json("rekognition", DS, 4).exists()
    version = fake.backend.version(model.ids["project_version_arn"])
    result = cli("stop")
    assert result.exit_code == 0, result.output
    assert f"{DS} 4: STOPPING  {version.arn}" in result.output and version.stops == 1


def test_cli_status_of_a_hand_given_model(project_root, moto_url, fake, split, tmp_path):
    _, model = trained(tmp_path, moto_url, fake, split)
    arn = model.ids["project_version_arn"]
    (project_root / "params.yaml").write_text(yaml.safe_dump(project_params(
        settings(moto_url, fake, endpoints={DS: {20: arn}}))))
    result = cli("status")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"{DS} 20: TRAINING_COMPLETED  {arn}"


# -- user mistakes ------------------------------------------------------------------------------
def assert_nothing_created(s3, fake):
    assert keys_in(s3) == set()
    assert [b["Name"] for b in s3.list_buckets()["Buckets"]] == [BUCKET]
    assert fake.server.log == [] and fake.backend.projects == {}


def test_missing_bucket_names_what_to_set_and_creates_nothing(tmp_path, moto_url, s3, fake,
                                                              split):
    svc = make_service(tmp_path, settings(moto_url, fake), buckets={})
    for step in (svc.upload, svc.train):
        with pytest.raises(UserError) as caught:
            step(split)
        message = str(caught.value)
        assert "buckets.aws" in message and "\n" not in message
    assert_nothing_created(s3, fake)


def test_bucket_that_does_not_exist_is_reported(tmp_path, moto_url, s3, fake, split):
    svc = make_service(tmp_path, settings(moto_url, fake), buckets={"aws": "absent-bucket"})
    with pytest.raises(UserError, match="'absent-bucket' does not exist"):
        svc.upload(split)
    assert_nothing_created(s3, fake)


def test_invalid_bucket_name_is_refused_before_any_call(tmp_path, moto_url, s3, fake, split):
    svc = make_service(tmp_path, settings(moto_url, fake), buckets={"aws": "Not_A_Bucket"})
    with pytest.raises(UserError, match="buckets.aws: 'Not_A_Bucket' is not a valid S3 bucket"):
        svc.upload(split)
    assert_nothing_created(s3, fake)


@pytest.mark.parametrize("missing, named", [
    (("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), "AWS_ACCESS_KEY_ID"),
    (("AWS_DEFAULT_REGION",), "AWS_DEFAULT_REGION"),
])
def test_missing_credentials_or_region_name_what_to_set_and_create_nothing(
        tmp_path, moto_url, s3, fake, split, monkeypatch, missing, named):
    for var in missing:
        monkeypatch.delenv(var)
    svc = make_service(tmp_path, settings(moto_url, fake))
    with pytest.raises(UserError, match=named) as caught:
        svc.upload(split)
    assert "\n" not in str(caught.value)
    assert_nothing_created(s3, fake)


def test_refused_credentials_are_a_user_error(tmp_path, moto_url, s3, fake, split):
    fake.backend.throttle("DescribeProjects", 1, code="UnrecognizedClientException", status=400)
    svc = make_service(tmp_path, settings(moto_url, fake))
    with pytest.raises(UserError, match="AWS refused rekognition describe_projects "
                                        r"\(UnrecognizedClientException"):
        svc.upload(split)


def test_bad_settings_name_the_key():
    with pytest.raises(UserError, match="rekognition.min_inference_unit: unknown setting"):
        Settings.parse({"min_inference_unit": 1})
    with pytest.raises(UserError, match="rekognition.min_inference_units"):
        Settings.parse({"min_inference_units": 0})
    with pytest.raises(UserError, match="rekognition.max_inference_units"):
        Settings.parse({"min_inference_units": 2, "max_inference_units": 1})
    with pytest.raises(UserError, match=r"rekognition.endpoints.digits.4: must be a (valid )?"
                                        "project version ARN"):
        Settings.parse({"endpoints": {"digits": {4: "arn:aws:s3:::nope"}}})
    for gone in ("s3_prefix", "models"):  # the layout is fixed; hand-given models: endpoints
        with pytest.raises(UserError, match=f"rekognition.{gone}: unknown setting"):
            Settings.parse({gone: "x"})
    ok = Settings.parse({"endpoints": {"digits": {"20": "arn:aws:rekognition:us-east-1:"
                                                  "123456789012:project/p/version/v1/1"}}})
    assert ok.hand_given("digits", 20)
    assert set(ok.model_settings()) == {"region", "endpoint_url", "s3_endpoint_url",
                                        "project_prefix"}


def test_missing_boto3_names_the_extra(monkeypatch):
    for name in [m for m in sys.modules if m.startswith("mlbench.services.rekognition.")
                 and m.rsplit(".", 1)[1] in ("service", "api", "s3")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(MissingExtra) as caught:
        service_class("rekognition")
    message = str(caught.value)
    assert "pip install 'mlbench[rekognition]'" in message and "\n" not in message


def test_params_commands_and_export_need_no_aws_sdk():
    """Validating params, mounting `mlbench rekognition` and the export hook import no boto3."""
    import subprocess

    code = ("import sys\n"
            "sys.modules['boto3'] = sys.modules['botocore'] = None\n"
            "from mlbench.services.registry import parse_settings\n"
            "from mlbench.services.rekognition import cli, export\n"
            "parse_settings('rekognition', {'min_inference_units': 2})\n"
            "assert cli.cli.registered_commands and export.export\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


# -- the fake itself speaks like the service ------------------------------------------------------
def test_fake_validates_requests_like_the_service(fake, aws_env):
    rek = boto3.client("rekognition", endpoint_url=fake.url)
    with pytest.raises(ClientError) as caught:
        rek.describe_project_versions(ProjectArn="arn:aws:rekognition:us-east-1:1:project/x/1")
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    assert "regular expression" in caught.value.response["Error"]["Message"]
    with pytest.raises(ClientError) as caught:
        rek.describe_project_versions(
            ProjectArn="arn:aws:rekognition:us-east-1:123456789012:project/x/1")
    assert caught.value.response["Error"]["Code"] == "ResourceNotFoundException"
    unsigned = requests.post(fake.url + "/", data=b"{}", timeout=5, headers={
        "X-Amz-Target": "RekognitionService.DescribeProjects",
        "Content-Type": "application/x-amz-json-1.1"})
    assert unsigned.status_code == 403
    assert unsigned.json()["__type"] == "MissingAuthenticationTokenException"


# -- the seed-compatible wrapper ------------------------------------------------------------------
def test_seed_wrapper_uploads_the_ablation(tmp_path, moto_url, s3, fake, monkeypatch):
    import importlib.util

    script = Path(__file__).resolve().parents[1] / "scripts" / "aws_rekognition.py"
    spec = importlib.util.spec_from_file_location("aws_rekognition_script", script)
    wrapper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wrapper)

    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.chdir(root)
    (root / "params.yaml").write_text(yaml.safe_dump({
        "datasets": [DS], "services": ["rekognition"], "buckets": {"aws": "unused-bucket"},
        "rekognition": settings(moto_url, fake)}))
    monkeypatch.setenv("AWS_STORAGE_BUCKET_NAME", BUCKET)  # the seed's variable wins
    rows = []
    for c, cls in enumerate(("cat", "dog")):
        for i, part in enumerate(("train", "val")):
            make_image(paths.split_dir(DS, "train") / cls / f"{cls}{i}.png", 10 * c + i)
            rows.append(f"2,{part},{cls}{i}.png,{cls}")
    paths.classes_file(DS).write_text("cat\ndog\n")
    paths.ablation_table(DS).parent.mkdir(parents=True, exist_ok=True)
    paths.ablation_table(DS).write_text("size,split,filename,class\n" + "\n".join(rows) + "\n")

    assert wrapper.main(["upload", DS, "2"]) == 0
    assert keys_in(s3) == {f"mlbench/{DS}/2/{part}/{cls}/{cls}{i}.png"
                           for cls in ("cat", "dog")
                           for i, part in enumerate(("train", "val"))} | {
        f"mlbench/{DS}/2/manifests/train.manifest", f"mlbench/{DS}/2/manifests/val.manifest"}
    assert wrapper.main(["stop", DS, "2"]) == 2  # nothing trained yet: one-line error, status 2
    assert wrapper.main(["upload", DS, "two"]) == 2


# -- the acceptance run -------------------------------------------------------------------
@pytest.mark.slow
def test_dvc_repro_benchmarks_local_and_rekognition_against_moto_and_the_fake(
        tmp_path, moto_url, s3, fake):
    """Issue 7's "Done when", as a user runs it: `dvc repro` with services [local, rekognition]
    against moto + the fake uploads exactly the ablation, trains and starts one model, puts
    Rekognition in the metrics and the plots; a rerun does (and uploads) nothing. Issue 11: the
    run's teardown stage stops the model (nothing billed is left, `mlbench status` says so), and
    `mlbench rekognition start`/`stop` by hand afterwards leave the pipeline up to date."""
    import csv
    import subprocess

    from tests.conftest import make_project

    proj = make_project(tmp_path / "proj", params={
        "datasets": [DS], "ablations": [5], "ablation": "all", "test_per_class": 5,
        "services": ["local", "rekognition"], "buckets": {"aws": BUCKET},
        "local": {"features": "hog"},
        "load": {"calls": 20, "concurrency": 5, "mode": "batch", "timeout": 30},
        "rekognition": settings(moto_url, fake),
    })
    env = {**os.environ,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def run(*cmd: str) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, cwd=proj, env=env, capture_output=True, text=True,
                              timeout=300)

    first = run("dvc", "repro")
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]

    for svc in ("local", "rekognition"):
        acc = json.loads((proj / "results" / "metrics" / f"{svc}-{DS}.json").read_text())
        assert 0.0 <= acc["acc@0005"] <= 1.0, (svc, acc)
    for plot in ("learning_curve.png", "latency.png"):
        assert (proj / "results" / "plots" / plot).stat().st_size > 0

    (project,) = fake.backend.projects.values()
    (version,) = project.versions.values()
    # started once for evaluate and load, stopped once by the teardown stage
    assert version.starts == 1 and version.stops == 1
    assert version.state.status in ("STOPPING", "STOPPED")
    record = json.loads((proj / "results" / "deployments" / "rekognition" / DS / "5.json")
                        .read_text())
    assert record["up"] is False and record["resource"] == version.arn
    status = run("mlbench", "status")
    assert status.returncode == 0 and "nothing deployed" in status.stdout, status.stdout

    with (proj / "data" / DS / "ablations.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["size"] == "5"]
    assert {r["split"] for r in rows} == {"train", "val"}
    assert len(rows) == 5 * 10  # 5 images per class (train + val), 10 digits
    prefix = f"mlbench/{DS}/5"
    expected = {f"{prefix}/{r['split']}/{class_folder(r['class'])}/{r['filename']}"
                for r in rows}
    expected |= {f"{prefix}/manifests/train.manifest", f"{prefix}/manifests/val.manifest"}

    def objects() -> dict[str, tuple[str, object]]:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        return {o["Key"]: (o["ETag"], o["LastModified"])
                for page in pages for o in page.get("Contents", [])}

    stored = objects()
    assert set(stored) == expected
    for part in ("train", "val"):  # Rekognition imported exactly the seed files of `export`
        seed_file = proj / "data" / DS / "ablations" / f"{DS}_{part}_aws_5.manifest"
        body = s3.get_object(Bucket=BUCKET, Key=f"{prefix}/manifests/{part}.manifest")["Body"]
        assert body.read() == seed_file.read_bytes()
    calls = fake.operations()

    second = run("dvc", "repro")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "Running stage" not in second.stdout + second.stderr
    assert objects() == stored  # nothing uploaded (or rewritten) again
    assert fake.operations() == calls  # and nothing asked of Rekognition

    # Each service's stages depend on its own package and params block only, and no service
    # stage on a bucket name: `dvc status` after an edit lists exactly the stages that rerun.
    def stale_after(path: Path, change) -> set[str]:  # noqa: ANN001 - text -> text
        original = path.read_text()
        path.write_text(change(original))
        try:
            status = run("dvc", "status", "--json")
            assert status.returncode == 0, status.stderr[-3000:]
            return set(json.loads(status.stdout))
        finally:
            path.write_text(original)

    def edit(text: str) -> str:
        return text + "\n# edited\n"

    def rename_bucket(text: str) -> str:
        data = yaml.safe_load(text)
        data["buckets"]["aws"] = "another-bucket"
        return yaml.safe_dump(data, sort_keys=False)

    def stages(svc: str) -> set[str]:
        return {f"{stage}@{svc}-{DS}" for stage in ("train", "evaluate", "load")}

    code = proj / "mlbench" / "services"
    stale = {  # every edit first, then one assertion: a failure shows them all
        "rekognition/api.py": stale_after(code / "rekognition" / "api.py", edit),
        "local/head.py": stale_after(code / "local" / "head.py", edit),
        "vertex/service.py": stale_after(code / "vertex" / "service.py", edit),
        "buckets.aws": stale_after(proj / "params.yaml", rename_bucket)}
    assert stale == {"rekognition/api.py": stages("rekognition"),
                     "local/head.py": stages("local"), "vertex/service.py": set(),
                     "buckets.aws": {"check", f"export@{DS}"}}, stale

    # By hand afterwards: start bills (and `mlbench status` lists it), stop ends it, and neither
    # makes the trained model look changed to DVC.
    for _ in range(3):  # the fake stops over a few Describe calls, as AWS does over minutes
        version.state.tick()
    start = run("mlbench", "rekognition", "start", DS)
    assert start.returncode == 0, start.stdout[-3000:] + start.stderr[-3000:]
    assert version.state.status == "RUNNING" and version.starts == 2
    billed = run("mlbench", "status")
    assert billed.returncode == 0 and "rekognition" in billed.stdout, billed.stdout
    assert "nothing deployed" not in billed.stdout
    assert json.loads(run("dvc", "status", "--json").stdout) == {}
    stop = run("mlbench", "rekognition", "stop")
    assert stop.returncode == 0, stop.stdout[-3000:] + stop.stderr[-3000:]
    assert version.state.status in ("STOPPING", "STOPPED") and version.stops == 2
    assert "nothing deployed" in run("mlbench", "status").stdout
    assert json.loads(run("dvc", "status", "--json").stdout) == {}
    (only,) = project.versions.values()  # still one model: starting and stopping created none
    assert only is version


# -- issue 14, finding 10: every S3 answer is one line -------------------------------------------
@pytest.mark.parametrize(("head", "listing", "error", "says"), [
    (Response(400, b""), None, ServiceError, "S3 bucket 'mlbench-test-bucket': s3 head_bucket: "
                                             "400"),
    (Response(409, b""), None, ServiceError, "check buckets.aws"),
    (Response(301, b"", {"x-amz-bucket-region": "eu-west-1"}), None, UserError,
     "is not in us-east-1"),
    (Response(200, b""), Response(200, b"<ListBucketResult><IsTruncated>true</IsTruncated>"
                                       b"</ListBucketResult>"), ServiceError,
     "no continuation token"),
    (Response(200, b""), Response(400, b"<html>proxy says no</html>"), ServiceError,
     "list_objects_v2"),
    (Response(200, b""), Response(200, b"<ListBucketResult><Contents><Key>k</Key><Size>x"
                                       b"</Size></Contents></ListBucketResult>"), ServiceError,
     "list_objects_v2"),
])
def test_finding10_s3_errors_other_than_403_404_are_one_line(tmp_path, fake, split, head,
                                                             listing, error, says):
    """HeadBucket / ListObjectsV2 answers other than 403/404 (a bad request, a redirect, a
    listing an S3-compatible store got wrong) gave botocore tracebacks."""
    s3_fake = FakeServer()
    s3_fake.route("HEAD", "/.*")(lambda req: head)
    s3_fake.route("GET", "/.*")(lambda req: listing or Response(500, b""))
    with s3_fake:
        svc = make_service(tmp_path, settings(s3_fake.url, fake, max_attempts=2))
        with pytest.raises(error) as caught:
            svc.upload(split)
    message = str(caught.value)
    assert says in message and "\n" not in message
    assert fake.backend.projects == {}  # nothing created after the failed check


def test_finding10_a_botocore_error_without_an_answer_is_one_line():
    from botocore.exceptions import IncompleteReadError, ParamValidationError

    from mlbench.services.rekognition.api import AwsCallError, judge

    error = judge(IncompleteReadError(actual_bytes=3, expected_bytes=9), "s3 get_object", 1)
    assert isinstance(error, AwsCallError) and "IncompleteReadError" in str(error)
    bug = ParamValidationError(report="Bucket: invalid")
    assert judge(bug, "s3 head_bucket", 1) is bug  # a request we built wrong stays a bug


# -- issue 14, finding 11: a key allowed only DetectCustomLabels scores the test set -------------
def test_finding11_a_key_allowed_only_detect_custom_labels_scores_the_test_set(
        digits_copy, moto_url, s3, fake, monkeypatch, capsys):
    """The seed's invoke needed DetectCustomLabels only; `connect` (and `adopt`) also described
    the model, so a least-privilege key got an error instead of scores."""
    import importlib.util

    from mlbench.data.ablate import load_split
    from mlbench.data.export import write_test_table

    write_test_table(DS, 2, 0)
    s3.create_bucket(Bucket="abucket")
    rek = settings(moto_url, fake)
    (digits_copy / "params.yaml").write_text(yaml.safe_dump({
        **project_params(rek, {"aws": "abucket"}), "ablations": [5]}))
    owner = make_service(digits_copy, rek, buckets={"aws": "abucket"}, ablation=5)
    owner.upload(load_split(DS, 5))
    model = owner.train(load_split(DS, 5))
    owner.connect(model)  # the model runs, started by someone allowed to
    owner.close()
    arn = model.ids["project_version_arn"]

    fake.backend.allow_only("DetectCustomLabels")
    before = len(fake.operations())
    spec = importlib.util.spec_from_file_location(
        "aws_rekognition_script", Path(__file__).resolve().parents[1] / "scripts" /
        "aws_rekognition.py")
    wrapper = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wrapper)
    capsys.readouterr()
    assert wrapper.main(["invoke", DS, "5", arn]) == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error:" not in err
    warnings = [line for line in err.splitlines() if "not allowed to check the model" in line]
    assert len(warnings) == 2  # one when recording the model, one when connecting to it
    with paths.predictions_csv("rekognition", DS, 5).open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 20 and not any(r["error"] for r in rows)
    with paths.latency_csv("rekognition", DS, 5).open() as fh:
        timed = list(csv.DictReader(fh))  # the single-stream pass: every test image once more
    assert len(timed) == 20
    ops = fake.operations()[before:]
    assert ops.count("DetectCustomLabels") == len(rows) + len(timed)
    assert set(ops) - {"DetectCustomLabels"} <= {"DescribeProjects", "DescribeProjectVersions"}
    recorded = ModelRef.load(paths.model_json("rekognition", DS, 5))
    assert recorded is not None and recorded.ids["project_version_arn"] == arn
