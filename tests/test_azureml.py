"""The Azure ML AutoML-for-images service against Azurite and the local Azure ML fake.

Blob storage is Azurite (npm `azurite`, started on a free port of 127.0.0.1 per module, in
memory; the well-known `devstoreaccount1` key). The Azure ML REST API (ARM routes, MLflow's
`runs/get`, the scoring URI) is `tests/fakes/azureml`, reached through `azureml.arm_endpoint`
and `azureml.tracking_endpoint`; tokens come from the real `DefaultAzureCredential`, through
App Service's managed-identity protocol (`IDENTITY_ENDPOINT`/`IDENTITY_HEADER`) served by the
fake. No test needs a credential or touches a remote host.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mlbench import paths
from mlbench.cli import app
from mlbench.core import AblationSplit, ImageRef, ModelRef
from mlbench.data.export import ExportTarget, load_test_images
from mlbench.errors import MissingExtra, ServiceCallError, ServiceError, UserError
from mlbench.io import atomic_write_csv, atomic_write_json
from mlbench.project import parse_checked_params
from mlbench.retry import RetryPolicy
from mlbench.services.azureml import export as azure_export
from mlbench.services.azureml import service as azure_service
from mlbench.services.azureml.service import STATE_FILE, AzureMLService
from mlbench.services.azureml.settings import Settings
from mlbench.services.registry import open_service, service_class
from tests.conftest import REPO
from tests.fakes.azureml import AZURITE_ACCOUNT, AZURITE_KEY, AzureMLFake, AzureMLState, Fault
from tests.images import image_bytes

SUB = "11111111-2222-3333-4444-555555555555"
RG = "mlbench-rg"
WS = "mlbench-ws"
BUCKET = "mlbench-test-images"
DATASTORE = "mlbench_mlbench_test_images"
DS = "digits"
#: Class names as AutoML must give them back: spaces, a slash, capitals, a leading digit.
COLOURS = {"Ram C/V Van": (220, 30, 30), "cat": (30, 200, 40), "2012 Cab": (30, 40, 220)}
FAST = RetryPolicy(max_attempts=6, base_delay=0.005, max_delay=0.02, timeout=5.0)
NOTHING = {"datastores": 0, "data": 0, "jobs": 0, "models": 0, "endpoints": 0,
           "deployments": 0}
UPLOADED = {**NOTHING, "datastores": 1, "data": 2}
TRAINED = {**UPLOADED, "jobs": 1, "models": 1}
ONE_OF_EACH = {**TRAINED, "endpoints": 1, "deployments": 1}


# -- fixtures ------------------------------------------------------------------------------------
def azurite_binary() -> str | None:
    """`azurite-blob`: $AZURITE_BLOB, the project's local npm install (.ci/run), or PATH."""
    local = REPO / ".cache" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
    for candidate in (os.environ.get("AZURITE_BLOB"), str(local), shutil.which("azurite-blob")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="module")
def azurite():
    binary = azurite_binary()
    if binary is None:
        message = ("Azurite is not installed: npm install --prefix .cache/azurite "
                   "azurite@3.35.0 (see .ci/run)")
        if os.environ.get("MLBENCH_REQUIRE_AZURITE"):
            pytest.fail(message)
        pytest.skip(message)
    proc = subprocess.Popen([binary, "--blobHost", "127.0.0.1", "--blobPort", "0",
                             "--inMemoryPersistence", "--skipApiVersionCheck",
                             "--disableTelemetry", "--silent"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = None
    for line in proc.stdout:  # "Azurite Blob service successfully listens on http://..."
        found = re.search(r"listens on (http://\S+)", line)
        if found:
            url = found.group(1)
            break
    if url is None:
        proc.kill()
        pytest.fail("Azurite did not start")
    yield f"{url}/{AZURITE_ACCOUNT}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def blobs(azurite):
    """The Azurite account, emptied."""
    from azure.storage.blob import BlobServiceClient

    client = BlobServiceClient(azurite, credential=AZURITE_KEY)
    for container in client.list_containers():
        client.delete_container(container.name)
    yield client
    client.close()


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Our own project folder; nothing of the machine's Azure configuration."""
    monkeypatch.chdir(tmp_path)
    for var in list(os.environ):
        if var.startswith(("AZURE_", "AZUREML_", "IDENTITY_", "MSI_", "IMDS_")):
            monkeypatch.delenv(var)
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(tmp_path / "no-azure-cli"))


@pytest.fixture
def fake(blobs, monkeypatch: pytest.MonkeyPatch):
    def read(container: str, name: str) -> bytes | None:
        blob = blobs.get_blob_client(container, name)
        return blob.download_blob().readall() if blob.exists() else None

    with AzureMLFake(AzureMLState(SUB, RG, WS, blob_reader=read)) as fk:
        monkeypatch.setenv("IDENTITY_ENDPOINT", f"{fk.url}/msi/token")
        monkeypatch.setenv("IDENTITY_HEADER", fk.state.identity_header)
        yield fk


def make_data(n: int = 5, tests_per_class: int = 3) -> tuple[AblationSplit, list[ImageRef]]:
    """data/<ds>/{train,test}/<class>/..., classes.txt, the manifest, the ablation table and the
    test set, as the stages write them."""
    train, val, tests = [], [], []
    seed = 0
    for k, (cls, rgb) in enumerate(COLOURS.items()):
        for split, count in (("train", n), ("test", tests_per_class)):
            folder = paths.split_dir(DS, split) / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                seed += 1
                name = f"c{k}_{split}_{i}.png"
                (folder / name).write_bytes(image_bytes(rgb, seed))
                part = split if split == "test" else "val" if i == 0 else "train"
                {"test": tests, "val": val, "train": train}[part].append(
                    ImageRef(folder / name, cls, part, name))
    paths.classes_file(DS).write_text("".join(f"{c}\n" for c in sorted(COLOURS)))
    rows = [(r.path, r.name, r.class_name, "test" if r in tests else "train",
             hashlib.sha256(r.path.read_bytes()).hexdigest(), 16, 16)
            for r in (*train, *val, *tests)]
    atomic_write_csv(paths.manifest_file(DS),
                     ["path", "filename", "class", "split", "sha256", "width", "height"], rows)
    atomic_write_csv(paths.ablation_table(DS), ["size", "split", "filename", "class"],
                     [(n, r.split, r.name, r.class_name) for r in (*train, *val)])
    atomic_write_json(paths.availability_file(DS), {"available": [n], "unavailable": {}})
    atomic_write_csv(paths.test_table(DS), ["filename", "class"],
                     [(t.name, t.class_name) for t in tests])
    return AblationSplit(DS, n, tuple(sorted(COLOURS)), tuple(train), tuple(val)), tests


def raw_params(fake: AzureMLFake | None, azurite: str | None, buckets: dict | None = None,
               **azureml: object) -> dict:
    settings = {"poll_seconds": 0.01, "upload_concurrency": 4, **azureml}
    if fake is not None:
        settings = {"subscription_id": SUB, "resource_group": RG, "workspace": WS,
                    "arm_endpoint": fake.url, "tracking_endpoint": fake.url,
                    "storage_endpoint": azurite, **settings}
    return {"datasets": [DS], "services": ["local", "azureml"],
            "buckets": {"azure": BUCKET} if buckets is None else buckets, "azureml": settings}


def service(fake: AzureMLFake | None, azurite: str | None = None, n: int = 5,
            buckets: dict | None = None, **azureml: object) -> AzureMLService:
    params = parse_checked_params(raw_params(fake, azurite, buckets, **azureml))
    svc = open_service(params, "azureml", DS, n)
    svc.retry = FAST
    return svc


def train(fake: AzureMLFake, azurite: str, n: int = 5, **azureml: object) -> ModelRef:
    """upload + train as the `train` stage does, and model.json where the harness writes it."""
    split, _ = make_data(n)
    with service(fake, azurite, n, **azureml) as svc:
        svc.upload(split)
        model = svc.train(split)
    model.save(paths.model_json("azureml", DS, n))
    return model


def served(fake: AzureMLFake, azurite: str, n: int = 5, **azureml: object) -> ModelRef:
    """Trained, then connected once as `evaluate` does (which deploys it)."""
    model = train(fake, azurite, n, **azureml)
    with service(fake, azurite, n, **azureml) as svc:
        svc.connect(model)
    return model


def blob_state(blobs, container: str = BUCKET) -> dict[str, object]:
    """Every blob -> its ETag (changes when it is written again)."""
    return {b.name: b.etag for b in blobs.get_container_client(container).list_blobs()}


def state_file(n: int = 5) -> dict:
    return json.loads((paths.model_dir("azureml", DS, n) / STATE_FILE).read_text())


def scored_images(n: int = 6) -> list[ImageRef]:
    """The first `n` images of the test set (`data/<ds>/test.csv`)."""
    return load_test_images(DS)[:n]


# -- the seed's files and the MLTables -------------------------------------------------------------
def test_export_writes_the_seeds_azure_files_byte_for_byte() -> None:
    """`<ds>_{train,val}_azure_<n>.csv` and `<ds>_test_azure.csv`: the seed's header, then
    `azureml://<seed folder>/<file>,<class>` (a class holding a comma quoted, as csv does)."""
    split, tests = make_data()
    target = ExportTarget(DS, split.classes, {5: split}, tuple(tests), {"azure": BUCKET})
    assert azure_export.export(target) == 3

    def expected(folder: str, refs) -> bytes:
        rows = "".join(f"azureml://{folder}/{r.name},{r.class_name}\n" for r in refs)
        return f"image_url,label\n{rows}".encode()

    assert paths.ablation_csv(DS, "train", 5, "azure").read_bytes() == \
        expected("training_uploads", split.train)
    assert paths.ablation_csv(DS, "val", 5, "azure").read_bytes() == \
        expected("val_uploads", split.val)
    assert paths.test_csv(DS, "azure").read_bytes() == expected("test_uploads", tests)


def test_mltable_lines_name_the_seeds_rows_through_the_datastore() -> None:
    split, _ = make_data()
    lines = [json.loads(x) for x in azure_export.jsonl(DS, "train", split.train,
                                                        DATASTORE).splitlines()]
    seed = azure_export.seed_rows("train", split.train)
    assert [(x["image_url"], x["label"]) for x in lines] == [
        (f"azureml://datastores/{DATASTORE}/paths/mlbench/{DS}/{uri.removeprefix('azureml://')}",
         label) for uri, label in seed]
    assert set(lines[0]) == {"image_url", "label"}


# -- upload ----------------------------------------------------------------------------------------
def test_upload_sends_exactly_the_ablation_and_a_rerun_sends_nothing(fake, azurite, blobs):
    split, _ = make_data()
    with service(fake, azurite) as svc:
        svc.upload(split)
    first = blob_state(blobs)
    images = {f"mlbench/{DS}/training_uploads/{r.name}" for r in split.train} | \
        {f"mlbench/{DS}/val_uploads/{r.name}" for r in split.val}
    tables = {k for k in first if k not in images}
    assert images <= set(first) and len(tables) == 4
    assert {k.rsplit("/", 2)[-2:][0] + "/" + k.rsplit("/", 1)[1] for k in tables} == {
        f"{part}/{f}" for part in ("train", "val") for f in ("MLTable", "images.jsonl")}
    assert fake.state.created == UPLOADED  # the bucket's datastore and two data assets
    assert fake.state.datastores[DATASTORE]["containerName"] == BUCKET
    assert fake.state.datastores[DATASTORE]["credentials"]["secrets"]["key"] == AZURITE_KEY

    with service(fake, azurite) as svc:  # a rerun: nothing is written or created again
        svc.upload(split)
    assert blob_state(blobs) == first and fake.state.created == UPLOADED

    changed = split.train[0]  # one image changes: only it goes up again, as new data assets
    changed.path.write_bytes(image_bytes((1, 2, 3), 999))
    with service(fake, azurite) as svc:
        svc.upload(split)
    after = blob_state(blobs)
    rewritten = {k for k in first if after[k] != first[k]}
    assert rewritten == {f"mlbench/{DS}/training_uploads/{changed.name}"}
    assert len(after) == len(first) + 4 and fake.state.created == {**UPLOADED, "data": 4}


def test_uploaded_mltables_hold_the_exported_seed_rows(fake, azurite, blobs):
    """What AutoML trains on (the MLTables' JSON lines) is the seed's Azure files of the
    ablation, row for row, with each image where its line says."""
    split, tests = make_data()
    with service(fake, azurite) as svc:
        svc.upload(split)
        data_key = state_file()["data"]
    target = ExportTarget(DS, split.classes, {5: split}, tuple(tests), {"azure": BUCKET})
    azure_export.export(target)
    container = blobs.get_container_client(BUCKET)
    for part in ("train", "val"):
        folder = f"mlbench/{DS}/5/{data_key}/{part}"
        mltable = container.download_blob(f"{folder}/MLTable").readall().decode()
        assert mltable == azure_export.MLTABLE
        lines = container.download_blob(f"{folder}/images.jsonl").readall().decode()
        seed = paths.ablation_csv(DS, part, 5, "azure").read_text().splitlines()[1:]
        rows = [json.loads(x) for x in lines.splitlines()]
        assert [f"{r['image_url'].split(f'/paths/mlbench/{DS}/')[1]},{r['label']}"
                for r in rows] == [s.removeprefix("azureml://") for s in seed]
        for row in rows:
            name = row["image_url"].split("/paths/", 1)[1]
            local = paths.split_dir(DS, "train") / row["label"] / name.rsplit("/", 1)[1]
            assert container.download_blob(name).readall() == local.read_bytes()
        asset = fake.state.data[(f"mlbench-{DS}-5-{part}-{data_key}", "1")]
        assert asset == {"dataType": "mltable", "tags": {}, "description": asset["description"],
                         "dataUri": f"azureml://datastores/{DATASTORE}/paths/{folder}/"}


def test_without_a_bucket_the_default_datastore_holds_the_images(fake, azurite, blobs):
    """`buckets.azure` names the container only when set: else the workspace's own."""
    split, _ = make_data()
    with service(fake, azurite, buckets={}) as svc:
        svc.upload(split)
    default = fake.state.datastores["workspaceblobstore"]["containerName"]
    assert f"mlbench/{DS}/training_uploads/{split.train[0].name}" in blob_state(blobs, default)
    assert fake.state.created == {**NOTHING, "data": 2}  # no datastore of ours
    (_, asset), = [(k, v) for k, v in fake.state.data.items() if "-train-" in k[0]]
    assert asset["dataUri"].startswith("azureml://datastores/workspaceblobstore/paths/")


# -- train -----------------------------------------------------------------------------------------
def test_train_registers_the_best_trial_and_takes_training_seconds_from_the_job(fake, azurite):
    model = train(fake, azurite)
    assert fake.state.created == TRAINED  # nothing deployed (billed by the hour) yet
    assert not paths.deployment_file("azureml", DS, 5).exists()
    assert model.train_seconds == pytest.approx(5432.25)  # the fake's simulated run
    assert model.started_at and model.finished_at and model.started_at < model.finished_at
    (job,) = fake.state.jobs.values()
    assert model.ids["job"] == job.name and model.ids["best_trial"] == job.trials[0]
    assert model.ids["model"] == fake.state.arm_id(f"models/{job.name}/versions/1")
    assert fake.state.models[(job.name, "1")]["modelUri"] == \
        f"azureml://jobs/{job.trials[0]}/outputs/artifacts/outputs/mlflow-model/"
    task = job.body["taskDetails"]
    assert job.body["computeId"] == fake.state.arm_id("computes/gpu-cluster")
    assert task["limitSettings"] == {"maxTrials": 1, "maxConcurrentTrials": 1,
                                     "timeout": "PT60M"}
    assert task["trainingData"]["uri"].endswith("/versions/1") and "modelSettings" not in task
    state = state_file()
    assert state["job"] == job.name and state["endpoint"] == model.ids["endpoint"]

    again = train(fake, azurite)  # a second train of the same inputs creates nothing
    assert again.ids == model.ids and fake.state.created == TRAINED


def test_connect_deploys_once_and_records_what_bills(fake, azurite):
    model = served(fake, azurite)
    assert fake.state.created == ONE_OF_EACH
    (endpoint,) = fake.state.endpoints.values()
    assert model.ids["endpoint"] == endpoint.name and set(endpoint.children) == {"mlbench"}
    assert endpoint.body["properties"]["authMode"] == "Key"
    deployment = endpoint.children["mlbench"].body
    assert deployment["properties"]["instanceType"] == "Standard_NC4as_T4_v3"
    assert deployment["properties"]["model"] == model.ids["model"]
    assert deployment["sku"] == {"name": "Default", "capacity": 1}
    record = json.loads(paths.deployment_file("azureml", DS, 5).read_text())
    assert record["up"] and record["resource"] == f"{endpoint.name}/mlbench"
    before = state_file()
    with service(fake, azurite) as svc:  # `load` after `evaluate`: already deployed
        svc.connect(model)
    assert fake.state.created == ONE_OF_EACH
    assert state_file() == before  # serving never touches the train stage's output


def test_a_retrained_model_replaces_the_superseded_deployment(fake, azurite):
    """New settings train a new model on the same data; serving it first deletes the endpoint
    of the model it supersedes, so nothing bills that the deployment record forgot."""
    first = served(fake, azurite)
    second = served(fake, azurite, max_trials=2)
    assert second.ids["endpoint"] != first.ids["endpoint"]
    assert set(fake.state.endpoints) == {second.ids["endpoint"]}
    assert fake.state.created == {**ONE_OF_EACH, "jobs": 2, "models": 2, "endpoints": 2,
                                  "deployments": 2}  # the same data assets
    record = json.loads(paths.deployment_file("azureml", DS, 5).read_text())
    assert record["up"] and record["resource"] == f"{second.ids['endpoint']}/mlbench"


def test_limits_and_model_name_go_to_the_job(fake, azurite):
    served(fake, azurite, max_trials=4, max_concurrent_trials=2, timeout_minutes=90,
          model_name="vitb16r224", instance_type="Standard_NC24ads_A100_v4", instance_count=2)
    (job,) = fake.state.jobs.values()
    task = job.body["taskDetails"]
    assert task["limitSettings"] == {"maxTrials": 4, "maxConcurrentTrials": 2,
                                     "timeout": "PT90M"}
    assert task["modelSettings"] == {"modelName": "vitb16r224"} and len(job.trials) == 4
    (endpoint,) = fake.state.endpoints.values()
    deployment = endpoint.children["mlbench"].body
    assert deployment["properties"]["instanceType"] == "Standard_NC24ads_A100_v4"
    assert deployment["sku"]["capacity"] == 2


def test_submit_returns_at_once_with_the_job_recorded(fake, azurite):
    split, _ = make_data()
    with service(fake, azurite) as svc:
        svc.upload(split)
        job = svc.submit(split)
    found = fake.state.jobs[job.ids["job"]]
    assert found.status == "NotStarted" and found.polls == 0  # not waited on
    assert state_file()["job"] == job.ids["job"] and "endpoint" not in state_file()
    with service(fake, azurite) as svc:  # another process follows the job to a model
        model = svc.wait(job)
    assert model.ids["job"] == job.ids["job"] and fake.state.created == TRAINED


def test_a_kill_during_training_reattaches_to_the_job(fake, azurite, monkeypatch):
    split, _ = make_data()
    real_wait = azure_service.wait_for

    def killed_while_training(check, *, what, **kwargs):
        if "training" in what:
            raise KeyboardInterrupt  # the process dies during the hour-long wait
        return real_wait(check, what=what, **kwargs)

    monkeypatch.setattr(azure_service, "wait_for", killed_while_training)
    with service(fake, azurite) as svc, pytest.raises(KeyboardInterrupt):
        svc.upload(split)
        svc.train(split)
    recorded = state_file()["job"]
    assert recorded in fake.state.jobs  # recorded before the wait
    (paths.model_dir("azureml", DS, 5) / STATE_FILE).unlink()  # worst case: the state is lost
    monkeypatch.setattr(azure_service, "wait_for", real_wait)

    with service(fake, azurite) as svc:
        svc.upload(split)
        model = svc.train(split)
    assert fake.state.created == TRAINED and model.ids["job"] == recorded
    assert model.train_seconds == pytest.approx(5432.25)


def test_a_failed_job_is_one_line_and_the_rerun_submits_the_next_attempt(fake, azurite):
    split, _ = make_data()
    finish = fake.state._finish
    fake.state._finish = lambda job: setattr(job, "status", "Failed")  # type: ignore[method-assign]
    with service(fake, azurite) as svc, pytest.raises(ServiceError) as info:
        svc.upload(split)
        svc.train(split)
    (failed,) = fake.state.jobs
    assert f"AutoML job {failed} ended Failed" in str(info.value)
    assert f"https://ml.azure.com/runs/{failed}" in str(info.value)
    assert "rerun" in str(info.value) and "\n" not in str(info.value)
    fake.state._finish = finish  # type: ignore[method-assign]
    with service(fake, azurite) as svc:
        model = svc.train(split)
    assert model.ids["job"] == f"{failed}-2" and fake.state.created["jobs"] == 2
    # the state lost too: the failed attempt is passed over, the good one found
    (paths.model_dir("azureml", DS, 5) / STATE_FILE).unlink()
    with service(fake, azurite) as svc:
        assert svc.train(split).ids["job"] == f"{failed}-2"
    assert fake.state.created == {**TRAINED, "jobs": 2}


def test_control_plane_calls_retry_429_and_5xx(fake, azurite):
    fake.server.inject(Fault(429, count=2, headers={"Retry-After": "0"},
                             path_pattern=r"/jobs/[^/]+$"))
    fake.server.inject(Fault(503, count=2, path_pattern="/onlineEndpoints/"))
    fake.server.inject(Fault(500, count=1, path_pattern="/api/2.0/mlflow/runs/get"))
    model = served(fake, azurite)
    assert model.train_seconds == pytest.approx(5432.25)
    assert fake.state.created == ONE_OF_EACH
    assert all(f.count == 0 for f in fake.server.faults)  # each was answered, then retried


def test_a_job_put_whose_answer_was_lost_is_read_back_not_sent_twice(fake, azurite):
    """A 500 after the job was made: the retry's PUT is refused (the name exists), the job
    is read back and followed."""
    split, _ = make_data()
    put_job, calls = fake.state.put_job, []

    def made_then_lost(name, props):  # noqa: ANN001, ANN202 - the fake's signature
        calls.append(name)
        job = put_job(name, props)
        if len(calls) == 1:
            from tests.fakes.azureml import ApiFailure
            raise ApiFailure(500, "InternalServerError", "lost")
        return job

    fake.state.put_job = made_then_lost  # type: ignore[method-assign]
    with service(fake, azurite) as svc:
        svc.upload(split)
        model = svc.train(split)
    assert len(calls) == 2 and fake.state.created == TRAINED
    assert model.ids["job"] == calls[0]


# -- predict ---------------------------------------------------------------------------------------
def test_predictions_give_the_class_names_back(fake, azurite):
    model = train(fake, azurite)
    tests = scored_images(9)
    with service(fake, azurite) as svc:
        svc.connect(model)
        preds = [svc.predict(t.path.read_bytes()) for t in tests]
    assert [p.label for p in preds] == [t.class_name for t in tests]
    assert all(0 < p.confidence <= 1 and p.attempts == 1 for p in preds)
    assert set(preds[0].scores or {}) == set(COLOURS)
    call = fake.calls("POST", "/score/")[0]
    assert call.header("azureml-model-deployment") == "mlbench"
    body = json.loads(call.body)
    assert body["input_data"]["columns"] == ["image"] and len(body["input_data"]["data"]) == 1
    key = fake.state.keys[model.ids["endpoint"]][0]
    assert call.header("Authorization") == f"Bearer {key}"


def test_prediction_parsing_edge_cases(fake, azurite):
    svc = service(None, None)
    answer = json.dumps([{"probs": [0.2, 0.7, 0.1], "labels": ["cat", "Ram C/V Van", "x"]}])
    pred = svc.parse_response(200, {}, answer.encode())
    assert (pred.label, pred.confidence) == ("Ram C/V Van", 0.7)
    assert svc.parse_response(200, {}, b'[{"probs": [], "labels": []}]').label is None
    for bad in (b"<html>oops</html>", b"[]", b'{"probs": [1]}', b'[{"probs": [0.5], '
                b'"labels": ["a", "b"]}]', b'[{"probs": ["x"], "labels": ["a"]}]'):
        with pytest.raises(ServiceCallError, match="expected"):
            svc.parse_response(200, {}, bad)


def test_predict_retries_429_and_5xx_and_rereads_regenerated_keys(fake, azurite):
    model = train(fake, azurite)
    image = scored_images(1)[0].path.read_bytes()
    with service(fake, azurite) as svc:
        svc.connect(model)
        fake.server.inject(Fault(429, count=1, headers={"Retry-After": "0"},
                                 path_pattern="/score/"))
        fake.server.inject(Fault(503, count=1, path_pattern="/score/"))
        assert svc.predict(image).attempts == 3

        fake.state.regenerate_keys(model.ids["endpoint"])  # rotated in the studio
        pred = svc.predict(image)
        assert pred.label is not None and pred.attempts == 2
        assert len(fake.calls("POST", "/listKeys")) == 2

        fake.server.inject(Fault(500, count=99, path_pattern="/score/"))
        with pytest.raises(ServiceCallError) as info:
            svc.predict(image)
        assert info.value.attempts == FAST.max_attempts
        fake.server.clear_faults()
        fake.server.inject(Fault(400, count=1, path_pattern="/score/"))
        with pytest.raises(ServiceCallError, match="400"):
            svc.predict(image)  # not retried


def test_async_predict_path_used_by_the_load_test(fake, azurite):
    import aiohttp

    model = train(fake, azurite)
    images = [t.path.read_bytes() for t in scored_images(6)]

    async def run(svc: AzureMLService) -> list:
        async with aiohttp.ClientSession() as session:
            return await asyncio.gather(*(svc.apredict(session, im) for im in images))

    with service(fake, azurite) as svc:
        svc.connect(model)
        fake.server.inject(Fault(429, count=2, headers={"Retry-After": "0"},
                                 path_pattern="/score/"))
        preds = asyncio.run(run(svc))
    assert all(p.label in COLOURS for p in preds)
    assert sum(p.attempts for p in preds) == len(images) + 2


# -- a hand-given endpoint -------------------------------------------------------------------------
def test_an_endpoint_named_in_params_is_used_as_is_and_never_deleted(fake, azurite):
    model = served(fake, azurite)
    endpoint = fake.state.endpoints[model.ids["endpoint"]]
    endpoint.body["properties"]["traffic"] = {"mlbench": 100}  # as set in the studio
    before = dict(fake.state.created)
    with service(fake, azurite, n=20, endpoints={DS: {20: endpoint.name}}) as svc:
        assert svc.hand_given() == endpoint.name
        adopted = svc.adopt(svc.hand_given())
        svc.connect(adopted)
        assert svc.predict(scored_images(1)[0].path.read_bytes()).label in COLOURS
    assert fake.state.created == before
    assert adopted.ids["endpoint"] == endpoint.name and adopted.ids["deployment"] == ""
    assert adopted.train_seconds == pytest.approx(5432.25)  # from the job of its model
    assert adopted.details["source"] == f"azureml.endpoints.{DS}.20"
    assert fake.calls("POST", "/score/")[-1].header("azureml-model-deployment") is None
    with service(fake, azurite, n=20) as svc:  # the teardown stage leaves it as it is
        assert "given by hand: mlbench leaves it" in svc.teardown(adopted)
        assert "given by hand" in svc.describe(adopted)
    assert set(fake.state.endpoints[endpoint.name].children) == {"mlbench"}

    with service(fake, azurite, n=20, endpoints={DS: {20: "no-such-endpoint"}}) as svc, \
            pytest.raises(UserError, match=f"azureml.endpoints.{DS}.20: online endpoint "
                                           "no-such-endpoint does not exist"):
        svc.adopt("no-such-endpoint")
    endpoint.body["properties"]["traffic"] = {}
    with service(fake, azurite, n=20) as svc, pytest.raises(UserError, match="no traffic"):
        svc.adopt(endpoint.name)


# -- vendor commands -------------------------------------------------------------------------------
def cli(*args: str):  # noqa: ANN201 - typer's Result
    return CliRunner().invoke(app, ["azureml", *args])


def test_status_deploy_and_delete_through_the_cli(fake, azurite):
    model = train(fake, azurite)
    paths.PARAMS_FILE.write_text(json.dumps(raw_params(fake, azurite)))  # JSON is YAML
    result = cli("status")
    assert result.exit_code == 0, result.output
    assert f"{DS} 5: endpoint {model.ids['endpoint']} does not exist: nothing billed" in \
        result.output

    saved = paths.model_json("azureml", DS, 5).read_text()
    result = cli("deploy", DS, "5")
    assert result.exit_code == 0, result.output
    assert f"is deployed on {model.ids['endpoint']}" in result.output
    assert fake.state.created == ONE_OF_EACH
    result = cli("status")
    assert (f"{DS} 5: endpoint {model.ids['endpoint']}: mlbench 1 x Standard_NC4as_T4_v3 "
            "(Succeeded) since ") in result.output and "billed per instance hour" in \
        result.output

    result = cli("delete", DS, "5")
    assert result.exit_code == 0, result.output
    assert f"endpoint {model.ids['endpoint']} and its deployment deleted" in result.output
    assert fake.state.endpoints == {}
    record = json.loads(paths.deployment_file("azureml", DS, 5).read_text())
    assert not record["up"] and record["deployed_seconds"] >= 0
    assert "does not exist: nothing billed" in cli("status", DS).output

    with service(fake, azurite) as svc:  # scored again later: deployed again
        svc.connect(ModelRef.load(paths.model_json("azureml", DS, 5)))
        assert svc.predict(scored_images(1)[0].path.read_bytes()).label in COLOURS
    assert fake.state.created["endpoints"] == 2 and fake.state.created["deployments"] == 2
    assert fake.state.created["jobs"] == 1 and fake.state.created["models"] == 1
    assert paths.model_json("azureml", DS, 5).read_text() == saved  # never rewritten


def test_keep_endpoint_deletes_only_the_deployment(fake, azurite):
    model = served(fake, azurite)
    paths.PARAMS_FILE.write_text(json.dumps(raw_params(fake, azurite, keep_endpoint=True)))
    result = cli("delete")
    assert result.exit_code == 0 and "endpoint kept" in result.output, result.output
    assert fake.state.endpoints[model.ids["endpoint"]].children == {}
    assert "no deployment, nothing billed" in cli("status").output


def test_commands_find_a_deployment_a_crash_left_without_model_json(fake, azurite):
    """A run that died after deploying (model.json never written) still shows up in `status`
    and is deleted by `delete`: the state store says what was made."""
    model = served(fake, azurite)
    paths.model_json("azureml", DS, 5).unlink()
    paths.PARAMS_FILE.write_text(json.dumps(raw_params(fake, azurite)))
    result = cli("status")
    assert result.exit_code == 0 and "billed per instance hour" in result.output, result.output
    assert cli("delete").exit_code == 0
    assert model.ids["endpoint"] not in fake.state.endpoints


def test_cli_reports_a_user_error_in_one_line(fake, azurite):
    paths.PARAMS_FILE.write_text(json.dumps(raw_params(fake, azurite)))
    result = cli("deploy", DS, "5")
    assert result.exit_code == 2 and "no azureml model recorded" in result.output
    assert "Traceback" not in result.output


# -- refusals: one line, nothing created -----------------------------------------------------------
@pytest.mark.parametrize("missing", ["subscription_id", "resource_group", "workspace"])
def test_each_missing_workspace_id_is_named_with_its_variable(fake, azurite, blobs, missing):
    split, _ = make_data()
    env = {"subscription_id": "AZURE_SUBSCRIPTION_ID", "resource_group": "AZURE_RESOURCE_GROUP",
           "workspace": "AZUREML_WORKSPACE_NAME"}
    with service(fake, azurite, **{missing: None}) as svc, pytest.raises(UserError) as info:
        svc.upload(split)
    msg = str(info.value)
    assert f"azureml.{missing} in params.yaml or {env[missing]}" in msg and "\n" not in msg
    assert all(f"azureml.{other}" not in msg for other in env if other != missing)
    assert fake.server.log == [] and list(blobs.list_containers()) == []


def test_all_missing_ids_in_one_line_and_ids_from_the_environment(fake, azurite, monkeypatch):
    split, _ = make_data()
    ids = {"subscription_id": None, "resource_group": None, "workspace": None}
    with service(fake, azurite, **ids) as svc, pytest.raises(UserError) as info:
        svc.train(split)
    msg = str(info.value)
    assert msg.count("in params.yaml or") == 3 and "\n" not in msg
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUB)
    monkeypatch.setenv("AZURE_RESOURCE_GROUP", RG)
    monkeypatch.setenv("AZUREML_WORKSPACE_NAME", WS)
    with service(fake, azurite, **ids) as svc:
        assert svc.ids == (SUB, RG, WS)
        svc.upload(split)
    assert fake.state.created == UPLOADED
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", "not-a-guid")
    with service(fake, azurite, **ids) as svc, pytest.raises(UserError,
                                                            match="AZURE_SUBSCRIPTION_ID"):
        svc.upload(split)


def test_missing_credentials_are_one_line_naming_what_to_set(fake, azurite, blobs, monkeypatch,
                                                             capfd):
    split, _ = make_data()
    monkeypatch.delenv("IDENTITY_ENDPOINT")
    monkeypatch.delenv("IDENTITY_HEADER")
    with service(fake, azurite) as svc, pytest.raises(UserError) as info:
        svc.upload(split)
    msg = str(info.value)
    assert "AZURE_CLIENT_SECRET" in msg and "az login" in msg and "\n" not in msg
    assert "Attempted credentials" not in capfd.readouterr().err  # no screenful of azure logs
    assert fake.server.log == [] and list(blobs.list_containers()) == []


def test_refused_permission_is_a_user_error_naming_the_role(fake, azurite):
    split, _ = make_data()
    fake.server.inject(Fault(403, count=1, path_pattern=f"/workspaces/{WS}$"))
    with service(fake, azurite) as svc, pytest.raises(UserError) as info:
        svc.upload(split)
    assert "AzureML Data Scientist" in str(info.value) and "\n" not in str(info.value)
    assert fake.state.created == NOTHING


def test_a_401_asks_for_a_token_again_once_then_is_the_users_to_fix(fake, azurite):
    split, _ = make_data()
    fake.server.inject(Fault(401, count=1, path_pattern=f"/workspaces/{WS}$"))
    with service(fake, azurite) as svc:
        svc.upload(split)  # renewed, then answered
    assert fake.state.created == UPLOADED
    fake.server.inject(Fault(401, count=2, path_pattern=f"/workspaces/{WS}$"))
    with service(fake, azurite) as svc, pytest.raises(UserError, match="Azure refused"):
        svc.upload(split)


def test_a_missing_or_cpu_compute_is_refused_before_anything_is_sent(fake, azurite, blobs):
    split, _ = make_data()
    with service(fake, azurite, compute="no-cluster") as svc, \
            pytest.raises(UserError, match="azureml.compute: no compute 'no-cluster'"):
        svc.upload(split)
    with service(fake, azurite, compute="cpu-cluster") as svc, \
            pytest.raises(UserError, match="GPU"):
        svc.upload(split)
    assert fake.state.created == NOTHING
    assert not any(blob_state(blobs, c.name) for c in blobs.list_containers())


def test_an_endpoint_name_taken_in_the_region_is_a_user_error(fake, azurite):
    split, _ = make_data()
    with service(fake, azurite) as svc:
        svc.upload(split)
        model = svc.wait(svc.submit(split))
    fake.state.taken.add(model.ids["endpoint"])
    with service(fake, azurite) as svc, pytest.raises(UserError, match="taken in this region"):
        svc.connect(model)
    assert fake.state.created["endpoints"] == 0


def test_bad_settings_name_their_key():
    with pytest.raises(UserError, match=r"azureml\.max_trials"):
        Settings.parse({"max_trials": 0})
    with pytest.raises(UserError, match=r"azureml\.max_concurrent_trials"):
        Settings.parse({"max_trials": 2, "max_concurrent_trials": 3})
    with pytest.raises(UserError, match=r"azureml\.subscription_id"):
        Settings.parse({"subscription_id": "mine"})
    with pytest.raises(UserError, match=r"azureml\.instance_type"):
        Settings.parse({"instance_type": "DS3"})
    with pytest.raises(UserError, match=r"azureml\.arm_endpoint"):
        Settings.parse({"arm_endpoint": "management.azure.com"})
    with pytest.raises(UserError, match=r"azureml\.computee"):
        Settings.parse({"computee": "gpu"})
    with pytest.raises(UserError, match=rf"azureml\.endpoints\.{DS}\.5"):
        Settings.parse({"endpoints": {DS: {5: "has spaces"}}})
    given = Settings.parse({"endpoints": {DS: {"5": "my-endpoint"}}})
    assert given.hand_given(DS, 5) == "my-endpoint"
    assert set(given.model_settings()) == {
        "subscription_id", "resource_group", "workspace", "arm_endpoint", "compute",
        "max_trials", "max_concurrent_trials", "timeout_minutes", "model_name"}


def test_a_missing_sdk_names_the_extra_in_one_line(fake, azurite, monkeypatch):
    for name in [m for m in sys.modules if m.startswith("mlbench.services.azureml.")
                 and m.rsplit(".", 1)[1] in ("service", "api", "blob")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "azure.storage.blob", None)
    with pytest.raises(MissingExtra) as caught:
        service_class("azureml")
    message = str(caught.value)
    assert "pip install 'mlbench[azureml]'" in message and "\n" not in message

    paths.PARAMS_FILE.write_text(json.dumps(raw_params(fake, azurite)))
    paths.model_dir("azureml", DS, 5).mkdir(parents=True)
    result = cli("status")
    assert result.exit_code == 2 and "pip install 'mlbench[azureml]'" in result.output


def test_params_commands_and_export_need_no_azure_sdk():
    """Validating params, mounting `mlbench azureml` and the export hook import no Azure SDK."""
    code = ("import sys\n"
            "import mlbench.cli\n"
            "from mlbench.services.registry import parse_settings\n"
            "from mlbench.services.azureml import cli, export\n"
            "parse_settings('azureml', {'max_trials': 3})\n"
            "assert cli.cli.registered_commands and export.export\n"
            "print([m for m in sys.modules if m.startswith('azure')])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


# -- the fake and the service against azure-ai-ml's own requests ----------------------------------
def _leaves(obj: object, prefix: str = "") -> dict[str, object]:
    """{dotted path: value} of a JSON body's leaves (empty mappings and lists left out)."""
    if isinstance(obj, dict):
        return {k: v for key, value in obj.items()
                for k, v in _leaves(value, f"{prefix}{key}.").items()}
    return {prefix.rstrip("."): obj} if obj not in ({}, []) else {}


def _same_body(ours: dict, sdk: dict, ignore: tuple[str, ...] = ()) -> None:
    """Every value we send is the SDK's, and every value the SDK sets (not a default false or
    empty one) we send too."""
    mine = {k: v for k, v in _leaves(ours).items() if not k.startswith(ignore)}
    theirs = {k: v for k, v in _leaves(sdk).items() if not k.startswith(ignore)}
    assert {k: theirs.get(k) for k in mine} == mine
    assert {k: mine.get(k) for k, v in theirs.items() if v} == {k: v for k, v in theirs.items()
                                                                if v}


@pytest.mark.filterwarnings("ignore::marshmallow.warnings.Marshmallow4Warning")
def test_azure_ai_ml_sends_the_same_bodies_and_reads_the_fakes_answers(fake, azurite,
                                                                        monkeypatch):
    """`azure-ai-ml`, pointed at the fake through a custom cloud's metadata, submits the same
    AutoML job as the service (the fake accepts it) and reads the fake's jobs and keys; the
    data asset, model, endpoint and deployment it would send (its own REST objects) hold
    exactly what the service sends."""
    from azure.ai.ml import Input, MLClient, automl
    from azure.ai.ml.constants import AssetTypes
    from azure.ai.ml.entities import (
        Data,
        ManagedOnlineDeployment,
        ManagedOnlineEndpoint,
        Model,
        OnlineRequestSettings,
    )
    from azure.identity import DefaultAzureCredential

    model = served(fake, azurite, max_trials=2, timeout_minutes=90, model_name="seresnext")
    monkeypatch.setenv("AZUREML_CURRENT_CLOUD", "AzureCloud")  # MLClient sets it: restore
    meta = dict.fromkeys(("azure_portal", "resource_manager", "active_directory",
                          "aml_resource_id", "registry_discovery_endpoint"), f"{fake.url}/")
    ml = MLClient(DefaultAzureCredential(), SUB, RG, WS, cloud=f"mlbench-fake-{fake.url}",
                  cloud_metadata={**meta, "storage_endpoint": "core.windows.net"},
                  enable_telemetry=False, show_progress=False)

    def body(method: str, path_end: str) -> dict:
        return json.loads(next(r for r in reversed(fake.calls(method, path_end))
                               if r.path.endswith(path_end)).body)

    ours = body("PUT", f"/jobs/{model.ids['job']}")["properties"]
    data = {part: ours["taskDetails"][key]["uri"].split("/data/")[1].split("/")[0]
            for part, key in (("train", "trainingData"), ("val", "validationData"))}
    job = automl.image_classification(
        compute="gpu-cluster", experiment_name="mlbench", name="sdk-job",
        training_data=Input(type=AssetTypes.MLTABLE, path=f"azureml:{data['train']}:1"),
        validation_data=Input(type=AssetTypes.MLTABLE, path=f"azureml:{data['val']}:1"),
        target_column_name="label", primary_metric="accuracy", tags=ours["tags"])
    job.set_limits(max_trials=2, max_concurrent_trials=1, timeout_minutes=90)
    job.set_training_parameters(model_name="seresnext")
    ml.jobs.create_or_update(job)  # accepted by the fake
    sdk = body("PUT", "/jobs/sdk-job")["properties"]
    for limits in (ours, sdk):  # one duration, two spellings: PT90M, PT1H30M
        limits["taskDetails"]["limitSettings"].pop("timeout")
    _same_body(ours, sdk, ignore=("displayName", "properties.", "isArchived"))
    assert fake.state.created["jobs"] == 2

    read = ml.jobs.get(model.ids["job"])
    assert read.status == "Completed" and read.compute.endswith("/computes/gpu-cluster")
    assert read.limits.max_trials == 2 and read.limits.timeout_minutes == 90
    keys = ml.online_endpoints.get_keys(model.ids["endpoint"])
    assert keys.primary_key == fake.state.keys[model.ids["endpoint"]][0]

    def rest(entity: object) -> dict:
        return json.loads(json.dumps(entity.as_dict()))  # the REST model, as JSON

    sent = body("PUT", f"/data/{data['train']}/versions/1")
    _same_body(sent, rest(Data(name=data["train"], version="1", type=AssetTypes.MLTABLE,
                               path=sent["properties"]["dataUri"])._to_rest_object()),
               ignore=("properties.description",))
    sent = body("PUT", f"/models/{model.ids['job']}/versions/1")
    _same_body(sent, rest(Model(name=model.ids["job"], version="1",
                                type=AssetTypes.MLFLOW_MODEL,
                                path=sent["properties"]["modelUri"])._to_rest_object()),
               ignore=("properties.description",))
    sent = body("PUT", f"/onlineEndpoints/{model.ids['endpoint']}")
    _same_body(sent, rest(ManagedOnlineEndpoint(name=model.ids["endpoint"], auth_mode="key")
                          ._to_rest_online_endpoint(fake.state.location)),
               ignore=("properties.description",))
    sent = body("PUT", "/deployments/mlbench")
    deployment = ManagedOnlineDeployment(
        name="mlbench", endpoint_name=model.ids["endpoint"], model=model.ids["model"],
        instance_type="Standard_NC4as_T4_v3", instance_count=1,
        request_settings=OnlineRequestSettings(request_timeout_ms=90000,
                                               max_concurrent_requests_per_instance=10))
    _same_body(sent, rest(deployment._to_rest_object(fake.state.location)))


# -- the acceptance run --------------------------------------------------------------------
@pytest.mark.slow
def test_dvc_repro_benchmarks_local_and_azureml_against_azurite_and_the_fake(
        fake, azurite, blobs, tmp_path):
    """Issue 15's "Done when": a `mlbench train azureml` killed while its job trains leaves the
    job to re-attach to; `dvc repro` with services [local, azureml] then trains (no second
    job), deploys, scores, load-tests and tears down (its last stage); a second `dvc repro`
    creates nothing; each service's stages depend on its own package only."""
    import signal
    import time

    import yaml

    from tests.conftest import make_project

    n = 5
    proj = make_project(tmp_path / "proj", params={
        **raw_params(fake, azurite), "ablations": [n], "ablation": "all", "test_per_class": 5,
        "local": {"features": "hog", "image_size": 224},
        "load": {"calls": 20, "concurrency": 4, "mode": "batch", "timeout": 30},
    })
    # The fixtures put IDENTITY_ENDPOINT/IDENTITY_HEADER (the fake's managed identity) in
    # os.environ; the stages inherit them.
    env = {**os.environ,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(cmd, cwd=proj, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0 or not check, done.stdout[-3000:] + done.stderr[-3000:]
        return done

    run("dvc", "repro", f"ablate@{DS}", f"testsets@{DS}")
    fake.state.train_polls = 10**6  # the job trains "for hours"...
    log = tmp_path / "train.log"
    with log.open("w") as out:
        train_proc = subprocess.Popen(["mlbench", "train", "azureml", DS], cwd=proj, env=env,
                                      stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not any(j.polls for j in fake.state.jobs.values()) and time.monotonic() < deadline \
            and train_proc.poll() is None:
        time.sleep(0.05)
    assert train_proc.poll() is None, log.read_text()[-3000:]
    assert fake.state.created["jobs"] == 1
    os.kill(train_proc.pid, signal.SIGKILL)  # ...and the process dies while it waits
    train_proc.wait(timeout=30)
    fake.state.train_polls = 3

    first = run("dvc", "repro")
    assert "Running stage" in first.stdout
    assert fake.state.created == ONE_OF_EACH  # re-attached: still one job, one of everything
    assert fake.state.endpoints == {}  # torn down by the last stage
    assert f"azureml/{DS}/{n}: endpoint mlb-{DS}-{n}-" in first.stderr
    assert "and its deployment deleted" in first.stderr
    record = json.loads((proj / "results" / "deployments" / "azureml" / DS / f"{n}.json")
                        .read_text())
    assert not record["up"] and record["deployed_seconds"] > 0
    acc = {svc: json.loads((proj / "results" / "metrics" / f"{svc}-{DS}.json").read_text())[
        f"acc@{n:04d}"] for svc in ("local", "azureml")}
    assert all(0.0 <= a <= 1.0 for a in acc.values()), acc
    assert acc["azureml"] > 0.5  # the fake learned the uploads
    assert fake.state.predictions >= 10 * 5 + 20  # evaluate (50 images) + load (20 calls)
    for plot in ("learning_curve.png", "latency.png"):
        assert (proj / "results" / "plots" / plot).stat().st_size > 0
    with (proj / "data" / DS / "ablations.csv").open() as fh:
        rows = [line.split(",") for line in fh.read().splitlines()[1:]
                if line.startswith(f"{n},")]
    folder = {"train": "training_uploads", "val": "val_uploads"}
    uploaded = blob_state(blobs)
    assert {k for k in uploaded if not k.endswith(("MLTable", "images.jsonl"))} == {
        f"mlbench/{DS}/{folder[split]}/{name}" for _, split, name, _ in rows}
    calls = len(fake.server.log)

    second = run("dvc", "repro")
    assert "Running stage" not in second.stdout, second.stdout[-3000:]
    assert blob_state(blobs) == uploaded and fake.state.created == ONE_OF_EACH
    assert len(fake.server.log) == calls  # nothing asked of Azure ML at all

    def stale_after(path: Path, change) -> set[str]:  # noqa: ANN001 - text -> text
        original = path.read_text()
        path.write_text(change(original))
        try:
            return set(json.loads(run("dvc", "status", "--json").stdout))
        finally:
            path.write_text(original)

    def rename_bucket(text: str) -> str:
        data = yaml.safe_load(text)
        data["buckets"]["azure"] = "another-container"
        return yaml.safe_dump(data, sort_keys=False)

    def own(svc: str) -> set[str]:
        return {f"{stage}@{svc}-{DS}" for stage in ("train", "evaluate", "load")}

    edited = stale_after(proj / "mlbench" / "services" / "azureml" / "api.py",
                         lambda t: t + "\n# edited\n")
    assert own("azureml") <= edited and not edited & own("local")
    renamed = stale_after(proj / "params.yaml", rename_bucket)  # no model depends on a bucket
    assert f"export@{DS}" in renamed and not renamed & (own("azureml") | own("local"))

    status = run("mlbench", "azureml", "status")
    assert "does not exist: nothing billed" in status.stdout, status.stdout + status.stderr
