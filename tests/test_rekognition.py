"""AWS Rekognition Custom Labels adapter against moto (S3, server mode) and the local fake.

Everything runs on 127.0.0.1 with dummy credentials; the shared credential files and the
instance metadata service are switched off so no test can reach a real AWS account.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
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
from mlbench.errors import UserError
from mlbench.io import atomic_write_json
from mlbench.params import parse_params
from mlbench.services.base import AblationSplit, ImageRef, ModelRef, ServiceContext
from mlbench.services.http import ServiceCallError
from mlbench.services.rekognition import MAX_IMAGE_BYTES, RekognitionService, cli, fit_image
from mlbench.services.rekognition import lifecycle as life
from mlbench.services.rekognition.aws import RekognitionSettings
from mlbench.services.rekognition.s3 import LABEL_ATTRIBUTE, class_folder
from tests.fakes.http_base import Fault
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
            ref = ImageRef(make_image(tmp_path / "data" / cls.replace("/", "_") / name,
                                      10 * c + i), name, cls)
            (val if i == 3 else train).append(ref)
    return AblationSplit(DS, 4, tuple(sorted(CLASSES)), tuple(train), tuple(val))


def settings(moto_url: str, fake: FakeRekognition | None, **extra) -> dict:
    block = {"poll_seconds": 0.01, "backoff_seconds": 0.001, "s3_endpoint_url": moto_url}
    if fake is not None:
        block["endpoint_url"] = fake.url
    block.update(extra)
    return block


def make_service(tmp_path, rek: dict, buckets: dict | None = None,
                 state: str = "state") -> RekognitionService:
    params = parse_params({"datasets": [DS], "services": ["local", "rekognition"],
                           "buckets": {"aws": BUCKET} if buckets is None else buckets,
                           "rekognition": rek})
    return RekognitionService(ServiceContext(params, DS, 4, tmp_path / state))


def keys_in(s3) -> set[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def count_puts(svc: RekognitionService) -> list[str]:
    puts: list[str] = []
    svc.aws.s3.meta.events.register("provide-client-params.s3.PutObject",
                                    lambda params, **kw: puts.append(params["Key"]))
    return puts


def trained(tmp_path, moto_url, fake, split, **extra) -> tuple[RekognitionService, ModelRef]:
    svc = make_service(tmp_path, settings(moto_url, fake, **extra))
    svc.upload(split)
    return svc, svc.train(split)


# -- upload -------------------------------------------------------------------------------------
def test_upload_sends_exactly_the_ablation_and_a_rerun_sends_nothing(
        tmp_path, moto_url, s3, split, monkeypatch):
    # endpoints through boto3's own env variables, as a user pointing at local servers would
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_url)
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


def test_manifests_are_valid_ground_truth_classification_lines(tmp_path, moto_url, s3, split):
    svc = make_service(tmp_path, settings(moto_url, None))
    svc.upload(split)
    existing = keys_in(s3)
    for name, refs in (("train", split.train), ("val", split.val)):
        key = f"mlbench/{DS}/4/manifests/{name}.manifest"
        data = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert data == (tmp_path / "state" / f"{name}.manifest").read_bytes()  # local copy
        lines = [json.loads(line) for line in data.decode().splitlines()]
        assert len(lines) == len(refs)
        for line, ref in zip(lines, refs, strict=True):
            assert set(line) == {"source-ref", LABEL_ATTRIBUTE, f"{LABEL_ATTRIBUTE}-metadata"}
            assert line["source-ref"].startswith(f"s3://{BUCKET}/")
            assert line["source-ref"].removeprefix(f"s3://{BUCKET}/") in existing
            assert line["source-ref"].endswith(f"/{name}/{class_folder(ref.class_name)}/"
                                              f"{ref.filename}")
            meta = line[f"{LABEL_ATTRIBUTE}-metadata"]
            assert line[LABEL_ATTRIBUTE] == split.classes.index(ref.class_name)
            assert meta["class-name"] == ref.class_name
            assert meta["confidence"] == 1 and meta["human-annotated"] == "yes"
            assert meta["job-name"] == f"labeling-job/{LABEL_ATTRIBUTE}"
            assert meta["type"] == "groundtruth/image-classification"
            assert meta["creation-date"][:4].isdigit() and "T" in meta["creation-date"]


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
    assert model.train_seconds == pytest.approx(3725.0, abs=0.01)
    assert model.started_at and model.finished_at
    assert version.output == {"S3Bucket": BUCKET, "S3KeyPrefix": f"mlbench/{DS}/4/output/"}
    assert json.dumps(model.to_json())  # serialisable as model.json

    svc.connect(model)
    assert version.state.status == "RUNNING" and version.min_units == 2
    # accuracy is meaningful: the fake answers each test image with a scripted label
    truth = {}
    for i, cls in enumerate(CLASSES * 3):
        data = (make_image(tmp_path / "test" / f"t{i}.png", 500 + i)).read_bytes()
        fake.backend.answers[hashlib.sha256(data).hexdigest()] = [(cls, 91.0)]
        truth[data] = cls
    assert all(svc.predict(data).label == cls for data, cls in truth.items())
    svc.close()


def test_rerun_after_a_crash_reuses_project_datasets_and_version(
        tmp_path, moto_url, fake, split, monkeypatch):
    real_poll = life.poll

    def killed_while_training(describe, done, what, *args, **kwargs):
        if what.startswith("training"):
            raise KeyboardInterrupt  # the process dies during the hour-long wait
        return real_poll(describe, done, what, *args, **kwargs)

    monkeypatch.setattr(life, "poll", killed_while_training)
    svc = make_service(tmp_path, settings(moto_url, fake))
    svc.upload(split)
    with pytest.raises(KeyboardInterrupt):
        svc.train(split)
    state = json.loads((tmp_path / "state" / "rekognition.json").read_text())
    assert state["version_arn"]  # recorded before the wait
    (tmp_path / "state" / "rekognition.json").unlink()  # worst case: the state is lost too
    monkeypatch.setattr(life, "poll", real_poll)

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
    with pytest.raises(life.TrainingFailed, match="too many invalid data objects") as caught:
        svc.train(split)
    assert isinstance(caught.value, UserError) and "\n" not in str(caught.value)
    fake.backend.fail_training = None
    model = svc.train(split)  # the rerun trains a new version (v2), once
    project = next(iter(fake.backend.projects.values()))
    assert sorted(project.versions) == ["v1", "v2"]
    assert model.ids["project_version_arn"] == project.versions["v2"].arn


def test_dataset_import_failure_is_reported_with_what_to_do(tmp_path, moto_url, s3, fake,
                                                            split):
    svc = make_service(tmp_path, settings(moto_url, fake))
    svc.upload(split)
    s3.delete_object(Bucket=BUCKET, Key=f"mlbench/{DS}/4/manifests/val.manifest")
    with pytest.raises(UserError, match=r"TEST dataset failed to import .*could not be read.*"
                                        r"delete-dataset --dataset-arn arn:aws:rekognition:"):
        svc.train(split)
    assert fake.operations().count("CreateProjectVersion") == 0  # nothing trained on bad data


def test_model_arn_from_params_skips_upload_and_training(tmp_path, moto_url, fake, split):
    _, model = trained(tmp_path, moto_url, fake, split)
    arn = model.ids["project_version_arn"]
    before = fake.operations()
    svc = make_service(tmp_path, settings(moto_url, fake, models={DS: {4: arn}}),
                       state="other")
    puts = count_puts(svc)
    svc.upload(split)
    given = svc.train(split)
    assert puts == []
    created = [op for op in fake.operations()[len(before):] if op.startswith("Create")]
    assert created == []
    assert given.ids["project_version_arn"] == arn
    assert given.train_seconds == pytest.approx(3725.0, abs=0.01)
    svc.connect(given)
    assert fake.backend.version(arn).state.status == "RUNNING"


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
    fake.backend.throttle("DetectCustomLabels", 2)
    assert svc.predict(png_bytes(2)).attempts == 3
    fake.backend.throttle("DetectCustomLabels", 1, code="ProvisionedThroughputExceededException")
    assert svc.predict(png_bytes(2)).attempts == 2
    fake.server.inject(Fault(500, count=1))  # a 5xx is transient too
    assert svc.predict(png_bytes(2)).attempts == 2

    fake.backend.throttle("DetectCustomLabels", 10)
    with pytest.raises(ServiceCallError, match="ThrottlingException") as caught:
        svc.predict(png_bytes(2))
    assert caught.value.attempts == 3


def test_non_retryable_errors_raise_service_call_error_at_once(connected, fake):
    svc, model = connected
    life.stop(svc.aws.rek, model.ids["project_arn"], model.ids["project_version_arn"],
              svc.waiting())
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
def test_cli_stop_stops_the_model(tmp_path, moto_url, fake, split, monkeypatch):
    project_root = tmp_path / "project"
    project_root.mkdir()
    monkeypatch.chdir(project_root)
    params = {"datasets": [DS], "services": ["local", "rekognition"],
              "buckets": {"aws": BUCKET}, "rekognition": settings(moto_url, fake)}
    (project_root / "params.yaml").write_text(yaml.safe_dump(params))
    svc = make_service(tmp_path, settings(moto_url, fake))
    svc.upload(split)
    model = svc.train(split)
    svc.connect(model)
    atomic_write_json(paths.model_json("rekognition", DS, 4), model.to_json())
    version = fake.backend.version(model.ids["project_version_arn"])

    runner = CliRunner()
    result = runner.invoke(cli, ["status"])
    assert result.exit_code == 0, result.output
    assert f"{DS} 4: RUNNING" in result.output
    result = runner.invoke(cli, ["stop", DS, "4", "--wait"])
    assert result.exit_code == 0, result.output
    assert version.state.status == "STOPPED" and version.stops == 1
    assert f"{DS} 4: STOPPED" in result.output
    result = runner.invoke(cli, ["stop"])  # nothing running any more: no second stop call
    assert result.exit_code == 0 and version.stops == 1
    result = runner.invoke(cli, ["start", DS, "4"])
    assert result.exit_code == 0, result.output
    assert version.state.status == "RUNNING" and version.starts == 2
    result = runner.invoke(cli, ["stop", "pets"])
    assert result.exit_code == 2
    assert "no Rekognition model recorded for pets" in result.output


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
        assert "AWS_STORAGE_BUCKET_NAME" in message and "buckets.aws" in message
        assert "\n" not in message
    assert_nothing_created(s3, fake)


def test_bucket_that_does_not_exist_is_reported(tmp_path, moto_url, s3, fake, split):
    svc = make_service(tmp_path, settings(moto_url, fake), buckets={"aws": "absent-bucket"})
    with pytest.raises(UserError, match="'absent-bucket' does not exist"):
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


def test_bad_settings_name_the_key(tmp_path, moto_url):
    with pytest.raises(UserError, match="rekognition.min_inference_unit: unknown setting"):
        RekognitionSettings.parse({"min_inference_unit": 1})
    with pytest.raises(UserError, match="rekognition.min_inference_units"):
        RekognitionSettings.parse({"min_inference_units": 0})
    with pytest.raises(UserError, match=r"rekognition.models.digits.4: must be a project version"):
        RekognitionSettings.parse({"models": {"digits": {4: "arn:aws:s3:::nope"}}})
    ok = RekognitionSettings.parse({"models": {"digits": {"20": "arn:aws:rekognition:us-east-1:"
                                                          "123456789012:project/p/version/v1/1"}}})
    assert ok.model_arn("digits", 20)


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
    paths.ablation_table(DS).parent.mkdir(parents=True)
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
    Rekognition in metrics.json and the plots; a rerun does (and uploads) nothing; `mlbench
    rekognition stop` stops the model so the user stops paying."""
    import csv
    import subprocess
    import sys

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

    metrics = json.loads((proj / "results" / "metrics.json").read_text())
    for svc in ("local", "rekognition"):
        assert 0.0 <= metrics[svc][DS]["5"]["accuracy"] <= 1.0, metrics[svc]
    for plot in ("learning_curve.png", "latency.png"):
        assert (proj / "results" / "plots" / plot).stat().st_size > 0

    (project,) = fake.backend.projects.values()
    (version,) = project.versions.values()
    assert version.state.status == "RUNNING" and version.starts == 1

    with (proj / "data" / DS / "ablations" / "ablations.csv").open(newline="") as f:
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
    calls = fake.operations()

    second = run("dvc", "repro")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "Running stage" not in second.stdout + second.stderr
    assert objects() == stored  # nothing uploaded (or rewritten) again
    assert fake.operations() == calls  # and nothing asked of Rekognition

    stop = run("mlbench", "rekognition", "stop")
    assert stop.returncode == 0, stop.stdout[-3000:] + stop.stderr[-3000:]
    assert version.state.status in ("STOPPING", "STOPPED") and version.stops == 1
    (only,) = project.versions.values()  # still one model: stopping created nothing
    assert only is version
