"""The Vertex AI adapter against the GCS emulator and the local Vertex fake.

The storage emulator (gcp-storage-emulator) runs in-process on 127.0.0.1; the Vertex fake is
reached through `vertex.api_endpoint` by the generated `aiplatform_v1` REST clients (the
control plane) and the shared HTTP path (predictions). google-auth works from a real
service-account key file whose `token_uri` points at the fake: the predict path gets its access
token there, the generated clients sign their own JWT with the key (the fake checks both). No
test needs a credential or touches a remote host (the metadata server is a closed local port).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from mlbench import paths
from mlbench.cli import app
from mlbench.core import AblationSplit, ImageRef, ModelRef
from mlbench.data.export import ExportTarget
from mlbench.errors import MissingExtra, ServiceCallError, ServiceError, UserError
from mlbench.io import atomic_write_csv, atomic_write_json
from mlbench.project import parse_checked_params
from mlbench.retry import RetryPolicy
from mlbench.services.registry import open_service, service_class
from mlbench.services.vertex import export as vertex_export
from mlbench.services.vertex.export import import_file
from mlbench.services.vertex.labels import invert, vertex_label_map
from mlbench.services.vertex.service import (
    STATE_FILE,
    VertexService,
    best_prediction,
    check_minimum,
)
from mlbench.services.vertex.settings import Settings
from tests.fakes.vertex import Fault, VertexFake, VertexState, write_service_account_key
from tests.images import image_bytes

PROJECT = "mlbench-test"
BUCKET = "mlbench-test-images"
DS = "digits"
#: Class names that Vertex would reject as labels: spaces, hyphens, a leading digit, capitals,
#: and two names that fold to the same label.
COLOURS = {
    "Sports car": (220, 30, 30),
    "sports-car": (30, 200, 40),
    "2012 Cab": (30, 40, 220),
    "Egyptian Mau": (230, 220, 30),
    "Egyptian_Mau": (200, 40, 210),
}
FAST = RetryPolicy(max_attempts=6, base_delay=0.005, max_delay=0.02, timeout=5.0)
LABEL = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def emulator():
    from gcp_storage_emulator.server import create_server

    server = create_server("127.0.0.1", 0, in_memory=True)
    server.start()
    host, port = server._api._httpd.server_address[:2]
    yield server, f"http://{host}:{port}"
    server.stop()


def _gcs_client(url: str):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project=PROJECT, credentials=AnonymousCredentials(),
                          client_options={"api_endpoint": url})


@pytest.fixture
def gcs(emulator, monkeypatch: pytest.MonkeyPatch):
    server, url = emulator
    server.wipe()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
    return _gcs_client(url)


@pytest.fixture
def fake(gcs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    def read(uri: str) -> bytes | None:
        bucket, _, name = uri.removeprefix("gs://").partition("/")
        blob = gcs.bucket(bucket).get_blob(name)
        return None if blob is None else blob.download_as_bytes()

    with VertexFake(VertexState(project=PROJECT, gcs_reader=read)) as fk:
        key = write_service_account_key(tmp_path / "sa-key.json", fk.token_uri, state=fk.state)
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
        yield fk


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in a project folder of our own; no gcloud config, no metadata server, no project."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")
    monkeypatch.setenv("GCE_METADATA_IP", "127.0.0.1:9")
    monkeypatch.setenv("GCE_METADATA_DETECT_RETRIES", "1")
    monkeypatch.setenv("GCE_METADATA_TIMEOUT", "0.2")
    for var in ("GOOGLE_CLOUD_PROJECT", "GOOGLE_APPLICATION_CREDENTIALS", "GCLOUD_PROJECT",
                "CLOUDSDK_CORE_PROJECT"):
        monkeypatch.delenv(var, raising=False)


def make_data(n: int = 5, tests_per_class: int = 5) -> tuple[AblationSplit, list[ImageRef]]:
    """data/<ds>/{train,test}/<class>/..., classes.txt, the manifest, the ablation table and the
    test set, as the stages write them."""
    train, val, tests = [], [], []
    seed = 0
    for k, (cls, rgb) in enumerate(COLOURS.items()):
        slug = f"c{k}"
        for split, count in (("train", n), ("test", tests_per_class)):
            folder = paths.split_dir(DS, split) / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                seed += 1
                name = f"{slug}_{split}_{i}.png"
                (folder / name).write_bytes(image_bytes(rgb, seed))
                part = split if split == "test" else "val" if i == 0 else "train"
                ref = ImageRef(folder / name, cls, part, name)
                {"test": tests, "val": val, "train": train}[part].append(ref)
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
    split = AblationSplit(DS, n, tuple(sorted(COLOURS)), tuple(train), tuple(val))
    return split, tests


def raw_params(fake: VertexFake | None, **vertex: object) -> dict:
    # The emulator serves one connection at a time with a listen backlog of 5: more uploads in
    # flight than that overflow it and stall on SYN retransmits (1 s each).
    settings = {"poll_seconds": 0.01, "upload_concurrency": 4, **vertex}
    if fake is not None:
        settings.setdefault("project", PROJECT)
        settings.setdefault("api_endpoint", fake.url)
    return {"datasets": [DS], "services": ["local", "vertex"], "buckets": {"google": BUCKET},
            "vertex": settings}


def service(fake: VertexFake | None, n: int = 5, **vertex: object) -> VertexService:
    svc = open_service(parse_checked_params(raw_params(fake, **vertex)), "vertex", DS, n)
    svc.retry = FAST
    return svc


def objects(gcs) -> dict[str, int]:
    """Every object in the bucket -> its generation (changes when it is written again)."""
    return {b.name: b.generation for b in gcs.list_blobs(BUCKET)}


def train(fake: VertexFake, n: int = 5, **vertex: object) -> ModelRef:
    """upload + train as the `train` stage does (the data is rewritten byte-identical), and
    model.json written where the harness writes it."""
    split, _ = make_data(n)
    with service(fake, n, **vertex) as svc:
        svc.upload(split)
        model = svc.train(split)
    model.save(paths.model_json("vertex", DS, n))
    return model


def deployed(fake: VertexFake, model: ModelRef, n: int = 5, **vertex: object) -> str:
    """`connect` as `evaluate` does (it deploys the model); the endpoint it serves from."""
    with service(fake, n, **vertex) as svc:
        svc.connect(model)
        return svc._predict_url.split("/v1/", 1)[1].removesuffix(":predict")


def deployment(n: int = 5) -> dict:
    """The run's deployment record (outside the DVC outputs)."""
    return json.loads(paths.deployment_file("vertex", DS, n).read_text())


def train_output(n: int = 5) -> dict[str, bytes]:
    """Every file of the train stage's DVC output for the run, with its bytes."""
    root = paths.model_dir("vertex", DS, n)
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*"))
            if f.is_file()}


# -- labels and the import file -----------------------------------------------------------------
def test_label_mapping_is_legal_injective_and_round_trips() -> None:
    names = [*COLOURS, "AM General Hummer SUV 2000", "american_bulldog", "9 lives", "Ünïcode"]
    mapping = vertex_label_map(names)
    assert all(LABEL.fullmatch(label) for label in mapping.values()), mapping
    assert len(set(mapping.values())) == len(names)
    assert invert(mapping)[mapping["Egyptian Mau"]] == "Egyptian Mau"
    assert {invert(mapping)[v] for v in mapping.values()} == set(names)
    assert mapping == vertex_label_map(list(reversed(names)))  # order-independent
    assert mapping["2012 Cab"].startswith("c_")


@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=30, unique=True))
def test_label_mapping_is_safe_injective_and_reversible_for_any_names(classes) -> None:
    mapping = vertex_label_map(classes)
    assert set(mapping) == set(classes)
    assert all(LABEL.fullmatch(v) for v in mapping.values())
    assert invert(mapping) == {v: k for k, v in mapping.items()}
    assert len(set(mapping.values())) == len(classes)
    assert vertex_label_map(list(reversed(classes))) == mapping


def test_label_mapping_examples() -> None:
    m = vertex_label_map(["AM General Hummer SUV 2000", "1 bus", "a-b", "a_b", "Abyssinian"])
    assert m["AM General Hummer SUV 2000"] == "AM_General_Hummer_SUV_2000"
    assert m["1 bus"] == "c_1_bus"
    assert {m["a-b"], m["a_b"]} == {"a_b", "a_b_2"}
    assert m["Abyssinian"] == "Abyssinian"


def test_import_file_rows_use_legal_labels_and_the_seed_folders() -> None:
    split, tests = make_data()
    rows = [line.split(",") for line in import_file(split, tests, BUCKET,
                                                     vertex_label_map(split.classes)).splitlines()]
    assert len(rows) == len(split.train) + len(split.val) + len(tests)
    uses = {r[0] for r in rows}
    assert uses == {"training", "validation", "test"}
    for use, uri, label in rows:
        folder = {"training": "training_uploads", "validation": "val_uploads",
                  "test": "test_uploads"}[use]
        assert uri.startswith(f"gs://{BUCKET}/{folder}/")
        assert LABEL.fullmatch(label)


# -- upload ----------------------------------------------------------------------------------------
NOTHING = {"datasets": 0, "imports": 0, "pipelines": 0, "endpoints": 0, "deployments": 0}
#: What training creates: no endpoint, nothing billed by the hour.
TRAINED = {**NOTHING, "datasets": 1, "imports": 1, "pipelines": 1}
#: What training then serving (one deployment) creates.
ONE_OF_EACH = {"datasets": 1, "imports": 1, "pipelines": 1, "endpoints": 1, "deployments": 1}


def test_upload_sends_exactly_the_ablation_and_test_images_and_a_rerun_sends_nothing(
        fake: VertexFake, gcs) -> None:
    split, tests = make_data()
    with service(fake) as svc:
        svc.upload(split)
    first = objects(gcs)
    expected = ({f"training_uploads/{r.name}" for r in split.train}
                | {f"val_uploads/{r.name}" for r in split.val}
                | {f"test_uploads/{r.name}" for r in tests}
                | {f"imports/{DS}_vertex_5.csv"})
    assert set(first) == expected
    csv_text = gcs.bucket(BUCKET).blob(f"imports/{DS}_vertex_5.csv").download_as_text()
    assert csv_text == import_file(split, tests, BUCKET, vertex_label_map(split.classes))
    # upload = the data: images, import file, the dataset and its import; no training yet
    uploaded = {**NOTHING, "datasets": 1, "imports": 1}
    assert fake.state.created == uploaded
    assert len(next(iter(fake.state.datasets.values())).items) == len(expected) - 1

    with service(fake) as svc:  # a rerun: nothing is written or created again
        svc.upload(split)
    assert objects(gcs) == first
    assert fake.state.created == uploaded

    changed = split.train[0]  # one image changes: only it goes up again
    changed.path.write_bytes(image_bytes((1, 2, 3), 999))
    with service(fake) as svc:
        svc.upload(split)
    after = objects(gcs)
    assert {k for k in after if after[k] != first[k]} == {f"training_uploads/{changed.name}"}
    assert fake.state.created == uploaded


def test_uploaded_import_file_equals_the_exported_files(fake: VertexFake, gcs) -> None:
    """The file Vertex imports is exported beside the seed's files, byte for byte, and holds
    the same images as the seed's train + val + test files of the ablation."""
    split, tests = make_data()
    with service(fake) as svc:
        svc.upload(split)
    target = ExportTarget(DS, split.classes, {5: split}, tuple(tests), {"google": BUCKET})
    assert vertex_export.export(target) == 4
    uploaded = gcs.bucket(BUCKET).blob(f"imports/{DS}_vertex_5.csv").download_as_text()
    assert uploaded == vertex_export.import_file_path(DS, 5).read_text()
    seed = "".join(p.read_text() for p in (
        paths.ablation_csv(DS, "train", 5, "vertex"), paths.ablation_csv(DS, "val", 5, "vertex"),
        paths.test_csv(DS, "vertex")))
    assert [row.split(",")[1] for row in uploaded.splitlines()] == \
        [row.split(",")[0] for row in seed.splitlines()]
    assert uploaded.count("\n") == len(split.all) + len(tests)


def test_a_crash_while_creating_the_dataset_resumes_its_recorded_operation(
        fake: VertexFake) -> None:
    split, _ = make_data()
    fake.state.op_polls = 10_000  # the create-dataset operation never ends...
    with service(fake, import_timeout=0.05) as svc, pytest.raises(ServiceError, match="still"):
        svc.upload(split)  # ...so the run stops on its timeout
    state = json.loads((paths.model_dir("vertex", DS, 5) / STATE_FILE).read_text())
    assert state["dataset_op"] in fake.state.operations  # recorded before the wait
    assert state["dataset"] == state["dataset_op"].split("/operations/")[0]
    fake.state.op_polls = 2
    fake.state.operations[state["dataset_op"]].polls_left = 1
    with service(fake) as svc:
        svc.upload(split)
    assert fake.state.created == {**NOTHING, "datasets": 1, "imports": 1}


# -- train ---------------------------------------------------------------------------------------
def test_train_stops_at_the_model_and_records_training_seconds_and_billed_hours(
        fake: VertexFake) -> None:
    model = train(fake)
    assert fake.state.created == TRAINED  # no endpoint, no deployment: nothing billed hourly
    assert model.train_seconds == pytest.approx(7203.5)  # the fake's simulated job duration
    assert model.started_at and model.finished_at and model.started_at < model.finished_at
    # what Google billed for the training: the pipeline's costMilliNodeHours, not the budget
    assert model.details["billable_training_hours"] == pytest.approx(7.346)
    assert model.ids["project"] == PROJECT and model.ids["model"] in fake.state.models
    assert "endpoint" not in model.ids
    body = json.loads(fake.calls("POST", "/trainingPipelines")[0].body)
    assert body["trainingTaskInputs"]["budgetMilliNodeHours"] == 8000
    assert body["trainingTaskInputs"]["modelType"] == "CLOUD"
    assert body["inputDataConfig"]["filterSplit"]["testFilter"].endswith("ml_use=test")
    state = json.loads((paths.model_dir("vertex", DS, 5) / STATE_FILE).read_text())
    assert state["model"] == model.ids["model"] and "endpoint" not in state
    assert not paths.deployment_file("vertex", DS, 5).exists()

    again = train(fake)  # a second train of the same inputs creates nothing
    assert again.ids == model.ids
    assert fake.state.created == TRAINED


def test_deploy_and_teardown_never_write_in_the_train_stages_output(fake: VertexFake) -> None:
    """The deployment lives in its own record, outside `results/runs/.../models/<n>/`: a
    deploy or teardown there would make DVC see the trained model changed, rerun train and
    evaluate, and evaluate would deploy (and bill) again."""
    model = train(fake)
    before = train_output()
    endpoint = deployed(fake, model)
    assert fake.state.created == ONE_OF_EACH
    record = deployment()
    assert record["up"] is True and record["resource"] == endpoint and record["since"]
    assert record["model"] == model.ids["model"] and record["units"] == 1
    assert len(fake.state.endpoints[endpoint].deployed) == 1
    assert deployed(fake, model) == endpoint  # connected again: nothing deployed again
    assert fake.state.created == ONE_OF_EACH
    with service(fake) as svc:
        assert svc.teardown(model) == f"{endpoint}: 1 model(s) undeployed (endpoint kept)"
    assert fake.state.endpoints[endpoint].deployed == {}
    record = deployment()
    assert record["up"] is False and record["deployed_seconds"] > 0
    assert train_output() == before  # not one byte of the train output changed


def test_control_plane_is_the_generated_rest_client_asking_for_integer_enums(
        fake: VertexFake) -> None:
    """Every control-plane call is what `aiplatform_v1`'s REST transport sends: /v1/ resources
    with `$alt=json;enum-encoding=int` (so the pipeline state comes back as a number), and the
    operations polled at the first binding it knows, `/ui/<operation name>`."""
    train(fake)
    api = [r for r in fake.server.log if r.path != "/token" and ":predict" not in r.path]
    ops = [r for r in api if "/operations/" in r.path]
    resources = [r for r in api if r not in ops]
    assert ops and all(r.method == "GET" and r.path.startswith("/ui/projects/") for r in ops)
    assert resources and all(r.path.startswith("/v1/projects/") for r in resources)
    assert all(r.query.get("$alt") == ["json;enum-encoding=int"] for r in resources)


def test_submit_returns_at_once_with_the_pipeline_recorded(fake: VertexFake) -> None:
    split, _ = make_data()
    with service(fake) as svc:
        svc.upload(split)
        job = svc.submit(split)
    pipeline = fake.state.pipelines[job.ids["pipeline"]]
    assert pipeline.state == "PIPELINE_STATE_PENDING" and pipeline.polls == 0  # not waited on
    state = json.loads((paths.model_dir("vertex", DS, 5) / STATE_FILE).read_text())
    assert state["pipeline"] == job.ids["pipeline"] and "endpoint" not in state
    with service(fake) as svc:  # another process follows the job to a model
        model = svc.wait(job)
    assert model.ids["pipeline"] == job.ids["pipeline"] and fake.state.created == TRAINED


def test_rerun_after_a_crash_continues_instead_of_duplicating(fake: VertexFake) -> None:
    split, _ = make_data()
    fake.state.train_polls = 10_000  # training never ends...
    with service(fake, train_timeout=0.05) as svc, pytest.raises(ServiceError, match="still"):
        svc.upload(split)
        svc.train(split)  # ...so the run "crashes" on its timeout, mid-training
    assert fake.state.created["pipelines"] == 1

    fake.state.train_polls = 3
    for p in fake.state.pipelines.values():
        p.polls = 0
    with service(fake) as svc:  # resumes from the state file
        model = svc.train(split)
    assert fake.state.created == TRAINED
    endpoint = deployed(fake, model)

    # Even with both records lost, the run's labels find every resource again.
    (paths.model_dir("vertex", DS, 5) / STATE_FILE).unlink()
    paths.deployment_file("vertex", DS, 5).unlink()
    with service(fake) as svc:
        svc.upload(split)
        again = svc.train(split)
    assert again.ids["model"] == model.ids["model"]
    assert deployed(fake, again) == endpoint
    assert fake.state.created == ONE_OF_EACH


def test_management_calls_retry_on_429_and_5xx(fake: VertexFake) -> None:
    fake.server.inject(Fault(429, count=2, headers={"Retry-After": "0"},
                             path_pattern="/trainingPipelines$"))
    fake.server.inject(Fault(503, count=2, path_pattern="/operations/"))
    fake.server.inject(Fault(500, count=1, path_pattern="/endpoints/[0-9]+$"))
    model = train(fake)
    deployed(fake, model)  # the endpoint's GET is where the 500 waits
    assert model.train_seconds == pytest.approx(7203.5)
    assert fake.state.created["pipelines"] == 1
    assert all(f.count == 0 for f in fake.server.faults)  # each was answered, then retried
    assert len([r for r in fake.server.log if r.path.endswith("/trainingPipelines")]) == 2 + 2


def test_a_create_that_may_have_happened_is_not_blindly_repeated(fake: VertexFake) -> None:
    """A 500 on a create call might hide a created resource: no retry, a clear error, and the
    rerun (which looks the run's resources up by label first) finishes with one of each."""
    split, _ = make_data()
    from tests.fakes.vertex.models import ApiFailure

    create, calls = fake.state.create_endpoint, []

    def fail_once(*args: object):  # noqa: ANN202 - the fake's own signature
        calls.append(args)
        if len(calls) == 1:
            raise ApiFailure(500, "INTERNAL", "Internal error encountered.")
        return create(*args)

    fake.state.create_endpoint = fail_once  # type: ignore[method-assign]
    with service(fake) as svc:
        svc.upload(split)
        model = svc.train(split)
    with service(fake) as svc, pytest.raises(ServiceCallError, match="rerun to continue") as info:
        svc.connect(model)  # evaluate deploys: the endpoint's create fails
    assert info.value.status == 500 and len(calls) == 1
    deployed(fake, model)
    assert fake.state.created == ONE_OF_EACH


def test_a_new_budget_trains_a_new_model_on_the_same_dataset(fake: VertexFake) -> None:
    first = train(fake)
    second = train(fake, budget_milli_node_hours=9000)
    assert fake.state.created == {**TRAINED, "pipelines": 2}
    assert second.ids["dataset"] == first.ids["dataset"]
    assert second.ids["model"] != first.ids["model"]
    body = json.loads(fake.calls("POST", "/trainingPipelines")[-1].body)
    assert body["trainingTaskInputs"]["budgetMilliNodeHours"] == 9000


def test_a_new_model_of_the_same_ablation_undeploys_the_superseded_one(fake: VertexFake) -> None:
    """One deployment record per (dataset, ablation): deploying a retrained model first
    undeploys the old one, so nothing is left billing that the record (and so `teardown` and
    `mlbench status`) no longer knows of."""
    first = train(fake)
    old = deployed(fake, first)
    second = train(fake, budget_milli_node_hours=9000)
    new = deployed(fake, second, budget_milli_node_hours=9000)
    assert new != old and fake.state.created["endpoints"] == 2
    assert fake.state.endpoints[old].deployed == {}
    assert [d.model for d in fake.state.endpoints[new].deployed.values()] == [second.ids["model"]]
    assert deployment()["resource"] == new and deployment()["model"] == second.ids["model"]


@pytest.mark.parametrize("code, message, error", [
    (8, "Quota exceeded for aiplatform training", UserError),  # the user's to fix
    (13, "Internal error in the training backend", ServiceError),  # Vertex's
])
def test_failed_training_is_a_clear_error_and_a_rerun_starts_anew(
        fake: VertexFake, code: int, message: str, error: type[Exception]) -> None:
    split, _ = make_data()
    orig = fake.state._finish_training

    def fail(p) -> None:
        p.state, p.end_time = "PIPELINE_STATE_FAILED", p.start_time
        p.error = {"code": code, "message": message}

    fake.state._finish_training = fail  # type: ignore[method-assign]
    with service(fake) as svc, pytest.raises(error, match=message):
        svc.upload(split)
        svc.train(split)
    fake.state._finish_training = orig  # type: ignore[method-assign]
    with service(fake) as svc:
        svc.train(split)
    assert fake.state.created["pipelines"] == 2 and fake.state.created["datasets"] == 1


def test_existing_endpoint_from_params_is_used_as_is(fake: VertexFake) -> None:
    model = train(fake)
    endpoint = deployed(fake, model)
    before = dict(fake.state.created)
    endpoint_id = endpoint.rsplit("/", 1)[1]
    with service(fake, endpoints={DS: {20: endpoint_id}}, n=20) as svc:
        assert svc.hand_given() == endpoint_id
        adopted = svc.adopt(svc.hand_given())
    assert fake.state.created == before
    assert adopted.ids["endpoint"] == endpoint and adopted.ids["model"] == model.ids["model"]
    assert adopted.train_seconds == pytest.approx(7203.5)  # from the endpoint's pipeline
    assert adopted.details["billable_training_hours"] == pytest.approx(7.346)
    assert adopted.details["source"] == f"vertex.endpoints.{DS}.20"
    with service(fake, endpoints={DS: {20: "12345"}}, n=20) as svc, \
            pytest.raises(UserError, match=f"vertex.endpoints.{DS}.20: no endpoint"):
        svc.adopt("12345")


def finish(fake: VertexFake, op) -> None:  # noqa: ANN001 - the fake's Operation
    while not fake.state.poll_operation(op.name).done:
        pass


def hand_deployed(fake: VertexFake, model: str) -> str:
    """An endpoint made and deployed in the console (so without mlbench's run label)."""
    op = fake.state.create_endpoint(f"projects/{PROJECT}/locations/us-central1",
                                    {"displayName": "made-by-hand"})
    finish(fake, op)
    endpoint = op.name.split("/operations/")[0]
    finish(fake, fake.state.deploy(endpoint, {"deployedModel": {
        "model": model, "displayName": "by-hand", "automaticResources": {}}}))
    return endpoint


def test_a_model_deployed_by_hand_is_never_undeployed(fake: VertexFake) -> None:
    """A hand-given endpoint serving a model the user deployed: scored as it is, and teardown
    leaves that deployment alone (the user pays for it knowingly); a deployment mlbench made
    there itself is mlbench's to undeploy."""
    model = train(fake)
    endpoint = hand_deployed(fake, model.ids["model"])
    given = endpoint.rsplit("/", 1)[1]
    before = dict(fake.state.created)
    with service(fake, endpoints={DS: {5: given}}) as svc:
        adopted = svc.adopt(given)
        svc.connect(adopted)
        assert fake.state.created == before  # served as it is: nothing deployed
        assert svc.describe(adopted).endswith("deployed by hand (mlbench leaves them) (billed "
                                              "per node hour)")
        line = svc.teardown(adopted)
    assert line.startswith(f"{endpoint}: 0 model(s) undeployed")
    assert "1 deployed by hand left as they are" in line
    assert len(fake.state.endpoints[endpoint].deployed) == 1
    assert not paths.deployment_file("vertex", DS, 5).exists()  # mlbench deployed nothing

    (dm_id,) = fake.state.endpoints[endpoint].deployed  # the user undeploys it...
    finish(fake, fake.state.undeploy(endpoint, {"deployedModelId": dm_id}))
    with service(fake, endpoints={DS: {5: given}}) as svc:
        svc.connect(adopted)  # ...so evaluate deploys the model there: mlbench's deployment
        assert deployment()["up"] is True and deployment()["resource"] == endpoint
        assert svc.teardown(adopted) == f"{endpoint}: 1 model(s) undeployed (endpoint kept)"
    assert fake.state.endpoints[endpoint].deployed == {}
    assert deployment()["up"] is False


# -- refusals: nothing is created ------------------------------------------------------------------
def test_ablation_under_the_vertex_minimum_is_refused(fake: VertexFake, gcs) -> None:
    split, _ = make_data(n=3, tests_per_class=5)
    with service(fake, n=3) as svc, pytest.raises(UserError) as info:
        svc.upload(split)
    msg = str(info.value)
    assert "at least 10" in msg and "ablation" in msg and "\n" not in msg
    assert not any(gcs.list_buckets()) and fake.server.log == []
    with pytest.raises(UserError, match="at least 10"):
        check_minimum(split, [])


def test_missing_project_is_one_line_naming_what_to_set_and_creates_nothing(
        fake: VertexFake, gcs) -> None:
    split, _ = make_data()
    with service(fake, project=None) as svc:
        with pytest.raises(UserError) as info:
            svc.upload(split)
        with pytest.raises(UserError):
            svc.train(split)
    msg = str(info.value)
    assert "vertex.project" in msg and "GOOGLE_CLOUD_PROJECT" in msg and "\n" not in msg
    assert not any(gcs.list_buckets()) and fake.server.log == []


def test_missing_bucket_is_one_line_naming_what_to_set(fake: VertexFake, gcs) -> None:
    split, _ = make_data()
    params = raw_params(fake)
    del params["buckets"]
    with open_service(parse_checked_params(params), "vertex", DS, 5) as svc, \
            pytest.raises(UserError, match=r"buckets\.google"):
        svc.upload(split)
    assert not any(gcs.list_buckets()) and fake.server.log == []


def test_project_from_the_environment(fake: VertexFake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", PROJECT)
    settings = Settings.parse({"api_endpoint": fake.url})
    assert settings.resolve_project() == PROJECT


def test_missing_credentials_is_one_line_naming_what_to_set_and_creates_nothing(
        fake: VertexFake, gcs, monkeypatch: pytest.MonkeyPatch) -> None:
    split, _ = make_data()
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS")
    with service(fake) as svc, pytest.raises(UserError) as info:
        svc.upload(split)
    msg = str(info.value)
    assert "GOOGLE_APPLICATION_CREDENTIALS" in msg and "\n" not in msg
    assert not any(gcs.list_buckets()) and fake.server.log == []

    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json")
    with service(fake) as svc, pytest.raises(UserError, match="GOOGLE_APPLICATION_CREDENTIALS"):
        svc.train(split)
    assert not any(gcs.list_buckets()) and fake.server.log == []


def test_refused_permission_is_a_user_error_naming_what_to_check(fake: VertexFake) -> None:
    split, _ = make_data()
    fake.server.inject(Fault(403, count=1, path_pattern="/datasets$"))
    with service(fake) as svc, pytest.raises(UserError, match="Vertex AI User role") as info:
        svc.upload(split)
    assert "\n" not in str(info.value) and fake.state.created == NOTHING


def test_bad_settings_name_their_key() -> None:
    with pytest.raises(UserError, match=r"vertex\.budget_milli_node_hours"):
        Settings.parse({"budget_milli_node_hours": 500})
    with pytest.raises(UserError, match=r"vertex\.confidence_threshold"):
        Settings.parse({"confidence_threshold": 1.5})
    with pytest.raises(UserError, match=r"vertex\.budgets"):
        Settings.parse({"budgets": 1})
    with pytest.raises(UserError, match=r"vertex\.region"):
        Settings.parse({"region": "Mars 1"})
    with pytest.raises(UserError, match=rf"vertex\.endpoints\.{DS}\.5"):
        Settings.parse({"endpoints": {DS: {5: "my-endpoint"}}})
    assert Settings.parse({"model_type": "MOBILE_TF_LOW_LATENCY_1",
                           "budget_milli_node_hours": 1000}).budget_milli_node_hours == 1000
    assert Settings.parse({}).base_url == "https://us-central1-aiplatform.googleapis.com"
    assert Settings.parse({"api_endpoint": "eu.example"}).base_url == "https://eu.example"
    given = Settings.parse({"endpoints": {DS: {"5": "123", 20: "projects/p/locations/l/"
                                                              "endpoints/9"}}})
    assert given.hand_given(DS, 5) == "123" and given.hand_given(DS, 20).endswith("/9")
    assert set(given.model_settings()) == {"project", "region", "api_endpoint", "model_type",
                                           "budget_milli_node_hours", "disable_early_stopping"}


# -- predict ---------------------------------------------------------------------------------------
def test_predictions_map_back_to_class_names(fake: VertexFake) -> None:
    model = train(fake)
    tests = [ImageRef(p, p.parent.name, "test", p.name)
             for p in sorted(paths.split_dir(DS, "test").rglob("*.png"))]
    with service(fake) as svc:
        svc.connect(model)
        preds = [svc.predict(t.path.read_bytes()) for t in tests]
    assert [p.label for p in preds] == [t.class_name for t in tests]
    assert all(0 < p.confidence <= 1 and p.attempts == 1 for p in preds)
    assert set(preds[0].scores or {}) <= set(COLOURS)
    body = json.loads(fake.calls("POST", ":predict")[0].body)
    assert body["parameters"] == {"confidenceThreshold": 0.1, "maxPredictions": 5}


def test_prediction_parsing_edge_cases() -> None:
    back = {"Sports_car": "Sports car", "c_2012_Cab": "2012 Cab"}

    def answer(names: list[str], confs: list[float]) -> bytes:
        return json.dumps({"predictions": [{"ids": ["1"] * len(names), "displayNames": names,
                                            "confidences": confs}],
                           "deployedModelId": "9"}).encode()

    pred = best_prediction(answer(["c_2012_Cab", "Sports_car"], [0.3, 0.6]), back)
    assert (pred.label, pred.confidence) == ("Sports car", 0.6)
    assert pred.scores == {"2012 Cab": 0.3, "Sports car": 0.6}
    assert best_prediction(answer([], []), back).label is None
    assert best_prediction(json.dumps({"predictions": []}).encode(), back).label is None
    assert best_prediction(answer(["unmapped"], [0.9]), back).label == "unmapped"
    with pytest.raises(ServiceCallError):
        best_prediction(b"<html>oops</html>", back)
    with pytest.raises(ServiceCallError):
        best_prediction(answer(["a", "b"], [0.5]), back)


def test_threshold_above_every_confidence_gives_no_label(fake: VertexFake) -> None:
    model = train(fake)
    with service(fake, confidence_threshold=1.0) as svc:
        svc.connect(model)
        pred = svc.predict(image_bytes((0, 0, 0), 5))
    assert pred.label is None and pred.confidence == 0.0


def test_predict_retries_429_and_5xx_and_renews_an_expired_token(fake: VertexFake) -> None:
    model = train(fake)
    image = next(paths.split_dir(DS, "test").rglob("*.png")).read_bytes()
    with service(fake) as svc:
        svc.connect(model)
        fake.server.inject(Fault(429, count=1, headers={"Retry-After": "0"},
                                 path_pattern=":predict"))
        fake.server.inject(Fault(503, count=1, path_pattern=":predict"))
        assert svc.predict(image).attempts == 3

        tokens = fake.state.token_requests
        fake.state.expire_tokens()
        assert svc.predict(image).label is not None
        assert fake.state.token_requests == tokens + 1

        fake.server.inject(Fault(500, count=99, path_pattern=":predict"))
        with pytest.raises(ServiceCallError) as info:
            svc.predict(image)
        assert info.value.attempts == FAST.max_attempts
        fake.server.clear_faults()

        fake.server.inject(Fault(400, count=1, path_pattern=":predict"))
        with pytest.raises(ServiceCallError, match="400"):
            svc.predict(image)  # not retried


def test_async_predict_path_used_by_the_load_test(fake: VertexFake) -> None:
    import aiohttp

    model = train(fake)
    images = [p.read_bytes() for p in sorted(paths.split_dir(DS, "test").rglob("*.png"))[:6]]

    async def run(svc: VertexService) -> list:
        async with aiohttp.ClientSession() as session:
            return await asyncio.gather(*(svc.apredict(session, im) for im in images))

    with service(fake) as svc:
        svc.connect(model)
        fake.server.inject(Fault(429, count=2, headers={"Retry-After": "0"},
                                 path_pattern=":predict"))
        preds = asyncio.run(run(svc))
    assert all(p.label in COLOURS for p in preds)
    assert sum(p.attempts for p in preds) == len(images) + 2


def test_oversized_image_is_an_error_row_not_a_call(fake: VertexFake) -> None:
    model = train(fake)
    calls = len(fake.calls("POST", ":predict"))
    with service(fake) as svc:
        svc.connect(model)
        with pytest.raises(ServiceCallError, match="1.5 MB"):
            svc.predict(b"\xff" * 1_600_000)
    assert len(fake.calls("POST", ":predict")) == calls


# -- vendor commands -------------------------------------------------------------------------------
def cli(*args: str):  # noqa: ANN201 - typer's Result
    return CliRunner().invoke(app, ["vertex", *args])


def test_status_undeploy_then_deploy_through_the_cli(fake: VertexFake) -> None:
    model = train(fake)
    paths.PARAMS_FILE.write_text(json.dumps(raw_params(fake)))  # JSON is YAML
    result = cli("status")
    assert result.exit_code == 0, result.output
    assert f"{DS} 5: trained, not deployed: nothing billed" in result.output

    result = cli("deploy", DS, "5")
    assert result.exit_code == 0, result.output
    assert fake.state.created == ONE_OF_EACH
    first = deployment()["endpoint"]
    endpoint = fake.state.endpoints[first]
    assert f"{DS} 5: {model.ids['model']} is deployed on {first}" in result.output
    result = cli("status")
    assert f"{DS} 5: endpoint {first}: 1 model(s) deployed since " in result.output

    result = cli("undeploy", DS, "5")
    assert result.exit_code == 0, result.output
    assert endpoint.deployed == {} and "1 model(s) undeployed" in result.output
    assert deployment()["up"] is False and "deployed_model_id" not in deployment()
    assert "0 model(s) deployed, nothing billed" in cli("status", DS).output

    with service(fake) as svc:  # evaluate after a teardown deploys again, on the same endpoint
        svc.connect(model)
    assert len(endpoint.deployed) == 1 and fake.state.created["endpoints"] == 1

    result = cli("undeploy", DS, "all")
    assert result.exit_code == 0, result.output
    del fake.state.endpoints[first]  # the endpoint deleted in the console

    saved = paths.model_json("vertex", DS, 5).read_text()
    result = cli("deploy", DS, "5")  # a fresh endpoint, recorded in the deployment record
    assert result.exit_code == 0, result.output
    assert fake.state.created["endpoints"] == 2
    fresh = deployment()["endpoint"]
    assert fresh in fake.state.endpoints and fresh != first
    assert paths.model_json("vertex", DS, 5).read_text() == saved  # never rewritten
    image = next(paths.split_dir(DS, "test").rglob("*.png")).read_bytes()
    with service(fake) as svc:  # connect serves the model from where it now is
        svc.connect(ModelRef.load(paths.model_json("vertex", DS, 5)))
        assert svc.predict(image).label in COLOURS
    assert fake.calls("POST", ":predict")[-1].path.endswith(f"{fresh}:predict")
    assert f"endpoint {fresh}: 1 model(s) deployed" in cli("status").output


def test_commands_find_a_deployment_a_crash_left_without_model_json(fake: VertexFake) -> None:
    """A deployment whose model.json is gone (a crash before it was written, or deleted) still
    shows up in `status` and is stopped by `undeploy`: the records say what was made."""
    model = train(fake)
    endpoint = deployed(fake, model)
    paths.model_json("vertex", DS, 5).unlink()
    paths.PARAMS_FILE.write_text(json.dumps(raw_params(fake)))
    result = cli("status")
    assert result.exit_code == 0 and "1 model(s) deployed" in result.output, result.output
    assert cli("undeploy").exit_code == 0
    assert fake.state.endpoints[endpoint].deployed == {}


def test_cli_reports_a_user_error_in_one_line(fake: VertexFake) -> None:
    paths.PARAMS_FILE.write_text(json.dumps(raw_params(fake)))
    result = cli("deploy", DS, "5")
    assert result.exit_code == 2
    assert "no vertex model recorded" in result.output
    assert "Traceback" not in result.output


def test_a_missing_sdk_names_the_extra_in_one_line(
        fake: VertexFake, monkeypatch: pytest.MonkeyPatch) -> None:
    import google.cloud

    for name in [m for m in sys.modules if m.startswith("mlbench.services.vertex.")
                 and m.rsplit(".", 1)[1] in ("service", "api", "gcs")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.delattr(google.cloud, "aiplatform_v1", raising=False)
    monkeypatch.setitem(sys.modules, "google.cloud.aiplatform_v1", None)
    with pytest.raises(MissingExtra) as caught:
        service_class("vertex")
    message = str(caught.value)
    assert "pip install 'mlbench[vertex]'" in message and "\n" not in message

    paths.PARAMS_FILE.write_text(json.dumps(raw_params(fake)))
    paths.model_dir("vertex", DS, 5).mkdir(parents=True)
    result = cli("status")
    assert result.exit_code == 2 and "pip install 'mlbench[vertex]'" in result.output


def test_params_commands_and_export_need_no_google_sdk() -> None:
    """Validating params, mounting `mlbench vertex` and the export hook import no Google SDK."""
    import subprocess

    code = ("import sys\n"
            "import mlbench.cli\n"
            "from mlbench.services.registry import parse_settings\n"
            "from mlbench.services.vertex import export\n"
            "parse_settings('vertex', {'budget_milli_node_hours': 9000})\n"
            "assert export.export\n"
            "print([m for m in sys.modules if m.startswith(('google.cloud.', 'google.api_core',"
            " 'google.auth', 'grpc'))])\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


# -- the fake follows the official client's wire format --------------------------------------------
def test_official_gapic_rest_clients_parse_the_fakes_answers(fake: VertexFake) -> None:
    """google-cloud-aiplatform's own REST transport reads the fake's resources and predictions,
    so the fake (and hence our client) speaks the documented JSON shapes."""
    from google.api_core.client_options import ClientOptions
    from google.cloud import aiplatform_v1
    from google.oauth2.credentials import Credentials
    from google.protobuf import json_format, struct_pb2

    model = train(fake)
    endpoint = deployed(fake, model)
    creds = Credentials(token=fake.state.issue_token())
    options = ClientOptions(api_endpoint=fake.url)
    endpoints = aiplatform_v1.EndpointServiceClient(transport="rest", credentials=creds,
                                                    client_options=options)
    ep = endpoints.get_endpoint(name=endpoint)
    assert ep.deployed_models[0].model == model.ids["model"]
    pipelines = aiplatform_v1.PipelineServiceClient(transport="rest", credentials=creds,
                                                    client_options=options)
    p = pipelines.get_training_pipeline(name=model.ids["pipeline"])
    assert p.state == aiplatform_v1.PipelineState.PIPELINE_STATE_SUCCEEDED
    assert (p.end_time - p.start_time).total_seconds() == pytest.approx(7203.5)
    datasets = aiplatform_v1.DatasetServiceClient(transport="rest", credentials=creds,
                                                  client_options=options)
    assert datasets.get_dataset(name=model.ids["dataset"]).data_item_count == 50

    import base64

    image = next(paths.split_dir(DS, "test").rglob("*.png")).read_bytes()
    instance = json_format.ParseDict({"content": base64.b64encode(image).decode()},
                                     struct_pb2.Value())
    params = json_format.ParseDict({"confidenceThreshold": 0.0, "maxPredictions": 2},
                                   struct_pb2.Value())
    predictor = aiplatform_v1.PredictionServiceClient(transport="rest", credentials=creds,
                                                      client_options=options)
    answer = predictor.predict(endpoint=endpoint, instances=[instance],
                               parameters=params)
    first = json_format.MessageToDict(answer._pb)["predictions"][0]
    assert len(first["displayNames"]) == 2 and first["confidences"][0] >= first["confidences"][1]


# -- the seed-compatible script ----------------------------------------------------------------
def test_seed_script_invokes_an_endpoint_given_on_the_command_line(fake: VertexFake) -> None:
    """`python scripts/vertex.py invoke <ds> <n> <project_id> <endpoint_id>` (the seed's manual
    path) scores the test set on that endpoint, with the labels mapped back."""
    import csv
    import importlib.util

    model = train(fake)
    endpoint = deployed(fake, model)
    paths.model_json("vertex", DS, 5).unlink()  # as if trained in the console
    raw = raw_params(fake)
    del raw["vertex"]["project"]
    paths.PARAMS_FILE.write_text(json.dumps(raw))
    spec = importlib.util.spec_from_file_location(
        "vertex_script", Path(__file__).parents[1] / "scripts" / "vertex.py")
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    assert script.main(["invoke", DS, "5", PROJECT, endpoint.rsplit("/", 1)[1]]) == 0
    with paths.predictions_csv("vertex", DS, 5).open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 5 * len(COLOURS)
    assert all(r["predicted_class"] == r["actual_class"] for r in rows)
    assert fake.state.created["endpoints"] == 1
    assert script.main(["invoke", DS, "5", PROJECT]) == 2  # project without endpoint


# -- end to end ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_dvc_repro_benchmarks_local_and_vertex_against_the_emulator_and_fake(
        fake: VertexFake, gcs, tmp_path: Path) -> None:
    """Issue 6's acceptance run, as a new user would do it: `dvc repro` with services
    [local, vertex] uploads exactly the ablation and test images, creates one dataset, one
    training job and one endpoint, and puts Vertex in the metrics and the plots; a second
    `dvc repro` runs no stage and uploads nothing. Issue 11: after the run nothing is left
    deployed (the teardown stage), `mlbench status` says so, and deploying and undeploying by
    hand afterwards leaves the pipeline up to date."""
    import csv
    import os
    import subprocess
    import sys

    from tests.conftest import make_project

    n = 20  # Vertex wants >= 10 images per label: the 5-per-class rung would be refused
    proj = make_project(tmp_path / "proj", params={
        **raw_params(fake), "ablations": [n], "ablation": "all", "test_per_class": 5,
        "local": {"features": "hog", "image_size": 224},
        "load": {"calls": 20, "concurrency": 4, "mode": "batch", "timeout": 30},
    })
    # The fixtures put STORAGE_EMULATOR_HOST and GOOGLE_APPLICATION_CREDENTIALS (the fake's key)
    # and the closed metadata server in os.environ; the stages inherit them.
    env = {**os.environ,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def run(*cmd: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(cmd, cwd=proj, env=env, capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done

    def repro() -> subprocess.CompletedProcess[str]:
        return run("dvc", "repro")

    def up_to_date() -> bool:
        return json.loads(run("dvc", "status", "--json").stdout) == {}

    first_run = repro()
    assert "Running stage" in first_run.stdout

    acc = {svc: json.loads((proj / "results" / "metrics" / f"{svc}-{DS}.json").read_text())[
        f"acc@{n:04d}"] for svc in ("local", "vertex")}
    assert all(0.0 <= a <= 1.0 for a in acc.values()), acc
    assert acc["vertex"] > 0.5  # the fake learned the uploads
    for plot in ("learning_curve.png", "latency.png"):
        assert (proj / "results" / "plots" / plot).stat().st_size > 0

    assert fake.state.created["datasets"] == 1 and len(fake.state.datasets) == 1
    assert fake.state.created["pipelines"] == 1 and len(fake.state.pipelines) == 1
    assert fake.state.created["endpoints"] == 1 and len(fake.state.endpoints) == 1

    data = proj / "data" / DS
    with (data / "ablations.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["size"]) == n]
    with (data / "test.csv").open(newline="") as f:
        tests = [r["filename"] for r in csv.DictReader(f)]
    assert len(rows) == n * 10 and len(tests) == 5 * 10
    folder = {"train": "training_uploads", "val": "val_uploads"}
    expected = ({f"{folder[r['split']]}/{r['filename']}" for r in rows}
                | {f"test_uploads/{name}" for name in tests}
                | {f"imports/{DS}_vertex_{n}.csv"})
    uploaded = objects(gcs)
    assert set(uploaded) == expected
    # what Vertex imported is the import file `export` wrote beside the seed's files
    imported = gcs.bucket(BUCKET).blob(f"imports/{DS}_vertex_{n}.csv").download_as_text()
    assert imported == (data / "ablations" / f"{DS}_vertex_import_{n}.csv").read_text()

    # evaluate and load deployed the model once; the teardown stage undeployed it
    (endpoint,) = fake.state.endpoints.values()
    assert fake.state.created["deployments"] == 1 and endpoint.deployed == {}
    record = json.loads((proj / "results" / "deployments" / "vertex" / DS / f"{n}.json")
                        .read_text())
    assert record["up"] is False and record["deployed_seconds"] > 0
    assert "nothing deployed" in run("mlbench", "status").stdout

    second_run = repro()
    assert "Running stage" not in second_run.stdout, second_run.stdout[-3000:]
    assert objects(gcs) == uploaded  # same objects, same generations: nothing uploaded again
    assert fake.state.created == {"datasets": 1, "imports": 1, "pipelines": 1, "endpoints": 1,
                                  "deployments": 1}

    # By hand afterwards: deploy bills (and `mlbench status` lists it), undeploy stops it, and
    # neither makes the trained model look changed to DVC.
    assert f"is deployed on {endpoint.name}" in run("mlbench", "vertex", "deploy", DS).stdout
    assert len(endpoint.deployed) == 1 and fake.state.created["deployments"] == 2
    status = run("mlbench", "status").stdout
    assert re.search(rf"vertex\s+│\s+{DS}\s+│\s+{n}\s+│\s+projects/", status), status
    assert up_to_date()
    assert "1 model(s) undeployed" in run("mlbench", "vertex", "undeploy").stdout
    assert endpoint.deployed == {} and "nothing deployed" in run("mlbench", "status").stdout
    assert up_to_date()
    assert fake.state.created["endpoints"] == 1
