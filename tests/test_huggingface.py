"""The Hugging Face service against the local fake of the Hub (repos, commits, Jobs), the
Inference Endpoints API and the endpoints themselves."""

from __future__ import annotations

import asyncio
import base64
import importlib
import io
import json
import sys
import time
import zipfile
from pathlib import Path

import pytest
import requests
import yaml
from PIL import Image
from typer.testing import CliRunner

from mlbench import paths
from mlbench.core import AblationSplit, ImageRef, ModelRef
from mlbench.errors import MissingExtra, ServiceCallError, ServiceError, UserError
from mlbench.project import parse_checked_params
from mlbench.retry import RetryPolicy
from mlbench.services.huggingface.service import HuggingFaceService
from mlbench.services.registry import open_service
from tests.fakes.http_base import Fault
from tests.fakes.huggingface import HuggingFaceFake, Repo

COLOURS = {"blue": (30, 40, 220), "green": (30, 200, 40), "red": (220, 30, 30)}
TOKEN = "hf_secret_token_never_logged"
FAST = RetryPolicy(max_attempts=8, base_delay=0.005, max_delay=0.02, timeout=5.0)
SPLIT = AblationSplit("digits", 5, tuple(COLOURS), (), ())


def image_bytes(rgb: tuple[int, int, int], seed: int, fmt: str = "JPEG") -> bytes:
    img = Image.new("RGB", (16, 16), rgb)
    img.putpixel((seed % 16, (seed // 16) % 16), ((seed * 37) % 256, 9, 7))
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.chdir(tmp_path)  # model.json and the vendor commands read results/ from here
    with HuggingFaceFake(token=TOKEN) as fk:
        fk.add_endpoint("digits-5", COLOURS)
        fk.add_endpoint("digits-ids", COLOURS, label_style="ids")
        fk.state.add_repo(Repo.autotrain_model("me/digits-5", sorted(COLOURS)))
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.setenv("HF_ENDPOINT", fk.url)
        yield fk


def block(**settings: object) -> dict:
    return {"services": ["local", "huggingface"], "huggingface": {"warmup_timeout": 5,
                                                                  **settings}}


def service(n: int = 5, **settings: object) -> HuggingFaceService:
    svc = open_service(parse_checked_params(block(**settings)), "huggingface", "digits", n)
    assert isinstance(svc, HuggingFaceService)
    svc.retry = FAST
    return svc


def configured(fake: HuggingFaceFake, endpoint: str = "digits-5",
               **settings: object) -> HuggingFaceService:
    return service(endpoints={"digits": {5: fake.endpoint_url(endpoint)}}, **settings)


def adopted(svc: HuggingFaceService) -> ModelRef:
    """What the harness does for a hand-given endpoint."""
    given = svc.hand_given()
    assert given is not None
    return svc.adopt(given)


def predict_calls(fake: HuggingFaceFake) -> list:
    return fake.requests("POST", r"/endpoints/.+")


# -- a hand-given endpoint, adopted ---------------------------------------------------------------
def test_missing_token_names_hf_token_and_sends_nothing(fake, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    svc = configured(fake)
    with pytest.raises(UserError, match="HF_TOKEN"):
        adopted(svc)
    with pytest.raises(UserError, match="HF_TOKEN"):
        svc.connect(ModelRef("huggingface", "digits", 5,
                             ids={"endpoint_url": fake.endpoint_url("digits-5")}))
    assert fake.log == []


def test_adopt_records_endpoint_label_map_and_given_training_time(fake):
    svc = configured(fake, "digits-ids", models={"digits": {5: "me/digits-5"}},
                     train_seconds={"digits": {5: 181}})
    model = adopted(svc)
    assert model.ids == {"endpoint_url": fake.endpoint_url("digits-ids"), "model": "me/digits-5"}
    assert model.details["id2label"] == {"0": "blue", "1": "green", "2": "red"}
    assert model.train_seconds == 181.0
    hub = fake.requests("GET", r"/me/digits-5/resolve/main/config\.json")
    assert hub and hub[0].header("Authorization") == f"Bearer {TOKEN}"  # private repo
    assert TOKEN not in json.dumps(model.to_json())


def test_a_fractional_training_time_is_kept(fake):
    svc = configured(fake, train_seconds={"digits": {5: 184.5}})
    assert adopted(svc).train_seconds == 184.5


def test_endpoint_label_ids_without_a_model_key_name_that_key(fake):
    with pytest.raises(UserError, match=r"huggingface\.models\.digits\.5"):
        adopted(configured(fake, "digits-ids"))


def test_local_config_path_maps_labels_without_the_hub(fake, tmp_path):
    config = tmp_path / "model" / "config.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"id2label": {"0": "blue", "1": "green", "2": "red"}}))
    svc = configured(fake, "digits-ids", models={"digits": {5: str(config.parent)}})
    model = adopted(svc)
    assert svc.predict(image_bytes(COLOURS["green"], 3)).label == "green"
    assert not fake.requests("GET", r".*/resolve/.*") and model.details["id2label"]["2"] == "red"


def test_unknown_hub_repo_names_the_key(fake):
    svc = configured(fake, "digits-ids", models={"digits": {5: "me/nope"}})
    with pytest.raises(UserError, match=r"huggingface\.models\.digits\.5"):
        adopted(svc)


def test_a_failing_hub_is_a_service_error_after_retries(fake, monkeypatch):
    """A Hub 5xx is the vendor's failure, never the user's: retried, then a ServiceError."""
    import huggingface_hub.utils._http as hub_http

    monkeypatch.setattr(hub_http.time, "sleep", lambda _s: None)  # huggingface_hub's own backoff
    fake.server.inject(Fault(500, fraction=1.0, path_pattern="resolve"))
    svc = configured(fake, "digits-ids", models={"digits": {5: "me/digits-5"}})
    svc.retry = RetryPolicy(max_attempts=2, base_delay=0.005, max_delay=0.01, timeout=5.0)
    with pytest.raises(ServiceError) as exc:
        adopted(svc)
    assert not isinstance(exc.value, UserError) and "gave up after 2 attempts" in str(exc.value)
    assert not predict_calls(fake)


def test_one_url_per_dataset_is_refused_naming_the_key(fake):
    """One shape for every per-ablation value: a dataset-wide shorthand is a params error."""
    with pytest.raises(UserError, match=r"^params.yaml: huggingface\.endpoints\.digits: .*one "
                                        r"per ablation"):
        service(n=20, endpoints={"digits": fake.endpoint_url("digits-5")})
    with pytest.raises(UserError, match=r"^params.yaml: huggingface\.models\.digits:"):
        service(models={"digits": "me/digits-5"})
    assert fake.log == []


def test_a_refused_token_is_a_user_error_at_adopt(fake, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(UserError, match="HF_TOKEN") as exc:
        adopted(configured(fake))
    assert "hf_wrong" not in str(exc.value)


def test_another_ablations_entries_do_not_change_this_models_settings(fake):
    base = configured(fake, models={"digits": {5: "me/digits-5"}})
    other = configured(fake, models={"digits": {5: "me/digits-5", 20: "me/digits-20"}},
                       train_seconds={"digits": {20: 300}})
    changed = configured(fake, models={"digits": {5: "me/digits-5b"}})
    assert base.model_settings() == other.model_settings() != changed.model_settings()


# -- the warm-up: one shared retry policy, one line for whatever it ends on ------------------------
def test_warm_up_waits_out_a_cold_start(fake):
    fake.state.endpoints["digits-5"].cold_requests = 3
    svc = configured(fake)
    svc.connect(adopted(svc))
    assert svc.predict(image_bytes(COLOURS["red"], 1)).attempts == 1
    # 3 loading, then one warm-up in adopt and one in connect, then the prediction
    assert fake.state.endpoints["digits-5"].calls == 6


def test_warm_up_gives_up_at_its_timeout_in_one_line(fake):
    fake.state.endpoints["digits-5"].cold_requests = 10_000
    fake.state.endpoints["digits-5"].estimated_time = 60.0  # more than the timeout left
    svc = configured(fake, warmup_timeout=0.5)
    started = time.monotonic()
    with pytest.raises(ServiceError) as exc:
        adopted(svc)
    assert time.monotonic() - started < 3  # never sleeps the 60 s asked, past the deadline
    message = str(exc.value)
    assert "huggingface.warmup_timeout" in message and "\n" not in message
    assert not isinstance(exc.value, UserError)


@pytest.mark.parametrize(("status", "error", "names"), [
    (401, UserError, "HF_TOKEN"), (403, UserError, "HF_TOKEN"),
    (404, UserError, "huggingface.endpoints.digits.5"),
    (405, UserError, "huggingface.endpoints.digits.5"),
    (400, ServiceCallError, "HTTP 400"), (422, ServiceCallError, "HTTP 422"),
])
def test_warm_up_refusals_are_one_line_errors(fake, status, error, names):
    fake.server.inject(Fault(status, count=1, path_pattern="endpoints"))
    with pytest.raises(error) as exc:
        adopted(configured(fake))
    assert names in str(exc.value) and "\n" not in str(exc.value)
    assert len(predict_calls(fake)) == 1  # a refusal is not retried


def test_warm_up_retries_server_errors_through_the_retry_policy(fake):
    fake.server.inject(Fault(500, count=2, path_pattern="endpoints"))
    fake.server.inject(Fault(429, count=1, headers={"Retry-After": "0"}, path_pattern="endpoints"))
    assert adopted(configured(fake)).ids["endpoint_url"] == fake.endpoint_url("digits-5")
    assert len(predict_calls(fake)) == 4


def test_an_unknown_endpoint_names_the_key(fake):
    svc = service(endpoints={"digits": {5: fake.endpoint_url("nope")}})
    with pytest.raises(UserError, match=r"HTTP 404: check huggingface\.endpoints\.digits\.5"):
        adopted(svc)


# -- predict ---------------------------------------------------------------------------------------
def test_predict_posts_raw_bytes_with_content_type_and_maps_the_answer(fake):
    svc = configured(fake, warmup=False)
    svc.connect(adopted(svc))
    for i, (cls, rgb) in enumerate(COLOURS.items()):
        fmt = "PNG" if i % 2 else "JPEG"
        image = image_bytes(rgb, i, fmt)
        pred = svc.predict(image)
        assert pred.label == cls and 0.5 < pred.confidence <= 1 and pred.attempts == 1
        assert set(pred.scores) == set(COLOURS)
        req = predict_calls(fake)[-1]
        assert req.body == image
        assert req.header("Content-Type") == f"image/{fmt.lower()}"
        assert req.header("Authorization") == f"Bearer {TOKEN}"


def test_label_ids_are_mapped_to_class_names(fake):
    svc = configured(fake, "digits-ids", models={"digits": {5: "me/digits-5"}})
    model = adopted(svc)
    again = configured(fake, "digits-ids")  # a later process: the map is in model.json
    again.connect(model)
    assert [again.predict(image_bytes(rgb, 9)).label for rgb in COLOURS.values()] == list(COLOURS)


def test_a_cold_start_during_predict_is_retried_after_estimated_time(fake):
    svc = configured(fake, warmup=False)
    svc.connect(adopted(svc))
    fake.state.endpoints["digits-5"].cold_requests = 2
    pred = svc.predict(image_bytes(COLOURS["blue"], 1))
    assert pred.label == "blue" and pred.attempts == 3


def test_twenty_percent_429_503_every_image_gets_a_prediction(fake):
    svc = configured(fake)
    svc.connect(adopted(svc))
    fake.server.inject(Fault(429, fraction=0.1, headers={"Retry-After": "0"},
                             path_pattern="endpoints"))
    fake.server.inject(Fault(503, fraction=0.1, body={"error": "Model is currently loading",
                                                      "estimated_time": 0.01},
                             path_pattern="endpoints"))
    preds = [svc.predict(image_bytes(COLOURS["red"], i)) for i in range(40)]
    assert all(p.label == "red" for p in preds)
    assert max(p.attempts for p in preds) > 1


def test_async_predictions_for_the_load_test(fake):
    import aiohttp

    svc = configured(fake)
    svc.connect(adopted(svc))
    fake.server.inject(Fault(500, fraction=0.2, path_pattern="endpoints"))

    async def run():
        async with aiohttp.ClientSession() as session:
            return await asyncio.gather(*(
                svc.apredict(session, image_bytes(COLOURS["green"], i)) for i in range(12)
            ))

    assert all(p.label == "green" for p in asyncio.run(run()))


def test_a_slow_answer_times_out_and_is_retried(fake):
    svc = configured(fake)
    svc.connect(adopted(svc))
    svc.retry = RetryPolicy(max_attempts=3, base_delay=0.005, max_delay=0.02, timeout=0.3)
    fake.server.inject(Fault(200, count=1, delay=1.0, path_pattern="endpoints"))
    pred = svc.predict(image_bytes(COLOURS["red"], 5))
    assert pred.label == "red" and pred.attempts == 2


def test_a_non_image_is_a_call_error(fake):
    svc = configured(fake)
    svc.connect(adopted(svc))
    with pytest.raises(ServiceCallError):
        svc.predict(b"<html>not an image</html>")


def test_bad_settings_name_their_key(fake):
    for settings, key in (({"endpoint": {"digits": {5: "x"}}}, r"huggingface\.endpoint\b"),
                          ({"warmup_timeout": -1}, r"huggingface\.warmup_timeout"),
                          ({"endpoints": {"digits": {5: "ftp://x"}}},
                           r"huggingface\.endpoints\.digits\.5: must be a valid endpoint URL"),
                          ({"train_seconds": {"digits": {5: -3}}},
                           r"huggingface\.train_seconds\.digits\.5"),
                          ({"train_seconds": {"digits": {5: "soon"}}},
                           r"huggingface\.train_seconds\.digits\.5"),
                          ({"max_concurrent_trainings": 0},
                           r"huggingface\.max_concurrent_trainings")):
        with pytest.raises(UserError, match=f"^params.yaml: {key}"):
            service(**settings)
    assert service().settings.max_concurrent_trainings == 4  # Jobs `mlbench submit` runs at once


# -- the automatic path: dataset repo, training Job, model repo ----------------------------------
FAST_POLL = {"poll_seconds": 0.02, "warmup_timeout": 5, "upload_batch": 4}


def auto(fake: HuggingFaceFake, n: int = 5, **settings: object) -> HuggingFaceService:
    """A service on the automatic path against the fake (no hand-given endpoint)."""
    return service(n, endpoints_api=fake.endpoints_api, **{**FAST_POLL, **settings})


def make_split(root: Path, n: int = 3, val: int = 1) -> AblationSplit:
    """3 colour classes x (n train + val val) PNGs: an ablation the fake's Job can learn."""
    train, valid = [], []
    for c, (cls, rgb) in enumerate(sorted(COLOURS.items())):
        for i in range(n + val):
            name = f"{cls}_{i}.png"
            path = root / "imgs" / cls / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(image_bytes(rgb, 10 * c + i, "PNG"))
            (valid if i >= n else train).append(ImageRef(path, cls, "val" if i >= n else "train",
                                                         name))
    return AblationSplit("digits", 5, tuple(sorted(COLOURS)), tuple(train), tuple(valid))


@pytest.fixture
def split(tmp_path: Path) -> AblationSplit:
    return make_split(tmp_path)


def dataset_of(fake: HuggingFaceFake):
    (repo,) = [r for r in fake.state.repos.values() if r.repo_type == "dataset"]
    return repo


def state_files(svc: HuggingFaceService) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(svc.ctx.state_dir.rglob("*")) if p.is_file()}


def test_upload_fills_a_private_imagefolder_repo_and_resends_nothing(fake, split):
    svc = auto(fake)
    svc.upload(split)
    repo = dataset_of(fake)
    assert repo.private and repo.repo_id == f"mlbench-user/mlbench-digits-5-{split.digest}"
    expected = {f"{'train' if r.split == 'train' else 'validation'}/{r.class_name}/{r.name}":
                r.path.read_bytes() for r in split.all}
    assert repo.files == expected
    assert fake.state.created == {"dataset_repo": 1}
    assert len(fake.requests("POST", r"/api/datasets/.+/commit/main")) == 3  # 12 files, 4 a commit
    received = fake.state.files_received
    asked = len(fake.requests("POST", r"/api/datasets/.+/preupload/main"))

    auto(fake).upload(split)  # a rerun (another process): lists the repo, sends nothing
    assert fake.state.files_received == received == len(split.all)
    assert len(fake.requests("POST", r"/api/datasets/.+/commit/main")) == 3
    assert len(fake.requests("POST", r"/api/datasets/.+/preupload/main")) == asked  # not even
    assert fake.requests("GET", r"/api/datasets/.+/tree/main")  # asked about: the listing did
    assert fake.state.created == {"dataset_repo": 1}


def test_an_interrupted_upload_resumes_with_what_is_missing(fake, split, monkeypatch):
    """A commit that fails for good leaves the earlier batches in the repo; the rerun sends
    only the rest, and later only what changed (same path, same content is never sent twice)."""
    svc = auto(fake)
    real, calls = svc.hub.commit, []

    def second_fails(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        if len(calls) == 2:
            fake.server.inject(Fault(400, count=1, path_pattern=r"/commit/"))
        return real(*args, **kwargs)

    monkeypatch.setattr(svc.hub, "commit", second_fails)
    with pytest.raises(ServiceCallError):
        svc.upload(split)
    assert fake.state.files_received == 4 and len(dataset_of(fake).files) == 4
    asked = len(fake.requests("POST", r"/api/datasets/.+/preupload/main"))
    auto(fake).upload(split)
    assert fake.state.files_received == 12 and len(dataset_of(fake).files) == 12
    rerun = fake.requests("POST", r"/api/datasets/.+/preupload/main")[asked:]
    assert sum(len(r.json()["files"]) for r in rerun) == 8  # only the missing were offered
    changed = split.train[0]
    changed.path.write_bytes(image_bytes((1, 2, 3), 99, "PNG"))  # one image re-prepared
    dataset_of(fake).files.pop(f"validation/{split.val[0].class_name}/{split.val[0].name}")
    auto(fake).upload(split)
    assert fake.state.files_received == 14  # the changed image and the lost one, nothing else
    assert dataset_of(fake).files[f"train/{changed.class_name}/{changed.name}"] == \
        changed.path.read_bytes()


def test_submit_records_the_job_at_once_and_a_rerun_reattaches(fake, split):
    fake.state.hold_jobs = True
    svc = auto(fake)
    svc.upload(split)
    job = svc.submit(split)
    record = json.loads((svc.ctx.state_dir / "huggingface.json").read_text())
    assert record["job_id"] == job.ids["job_id"] and fake.state.created["job"] == 1
    again = auto(fake)  # a rerun after a crash: same record, no second Job
    again.upload(split)
    assert again.submit(split).ids["job_id"] == job.ids["job_id"]
    assert fake.state.created == {"dataset_repo": 1, "model_repo": 1, "job": 1}
    fake.state.hold_jobs = False
    model = again.wait(job)
    assert model.ids["job_id"] == job.ids["job_id"] and fake.state.created["job"] == 1
    assert model.details["id2label"] == {"0": "blue", "1": "green", "2": "red"}
    repo = fake.state.repo("model", model.ids["model"])
    assert repo is not None and repo.private and model.ids["model_revision"] == repo.commit


def test_a_lost_record_finds_the_running_job_by_its_labels(fake, split):
    fake.state.hold_jobs = True
    svc = auto(fake)
    svc.upload(split)
    first = svc.submit(split).ids["job_id"]
    (svc.ctx.state_dir / "huggingface.json").unlink()
    svc = auto(fake)
    svc.upload(split)
    assert svc.submit(split).ids["job_id"] == first
    assert fake.state.created["job"] == 1


def test_the_job_runs_the_pinned_script_on_the_flavor_with_the_token_as_a_secret(fake, split):
    from mlbench.services.huggingface import training

    svc = auto(fake, flavor="a10g-small", epochs=3, learning_rate=1e-4, batch_size=8,
               train_timeout=1800)
    svc.upload(split)
    svc.submit(split)
    (job,) = fake.state.jobs.values()
    spec = job.spec
    assert spec["dockerImage"] == training.IMAGE and spec["flavor"] == "a10g-small"
    assert spec["timeoutSeconds"] == 1800
    assert spec["command"][:2] == ["bash", "-c"] and "uv run /tmp/train.py" in spec["command"][2]
    assert spec["environment"]["MLBENCH_TRAIN_PY"] == training.SCRIPT.read_text()
    assert spec["secrets"] == {"HF_TOKEN": TOKEN}
    assert TOKEN not in json.dumps({k: v for k, v in spec.items() if k != "secrets"})
    args = spec["command"][4:]
    opts = dict(zip(args[::2], args[1::2], strict=True))
    record = json.loads((svc.ctx.state_dir / "huggingface.json").read_text())
    assert opts == {"--dataset": record["dataset_repo"], "--revision": dataset_of(fake).commit,
                    "--base-model": "google/vit-base-patch16-224-in21k",
                    "--model-repo": record["model_repo"], "--epochs": "3",
                    "--learning-rate": "0.0001", "--batch-size": "8", "--seed": "0"}
    assert job.labels["mlbench-run"] == record["run"] and job.labels["mlbench-ablation"] == "5"


def test_training_seconds_come_from_the_jobs_own_timestamps(fake, split):
    fake.state.job_seconds = 0.4
    svc = auto(fake)
    svc.upload(split)
    model = svc.train(split)
    (job,) = fake.state.jobs.values()
    assert model.train_seconds == pytest.approx(job.finished_at - job.started_at, abs=1e-3)
    assert model.train_seconds >= 0.4
    assert model.details["trained_by"] == "Hugging Face Job"


def test_a_failed_job_is_one_service_error_line_with_its_log_tail(fake, split):
    fake.state.job_outcome = "error"
    svc = auto(fake)
    svc.upload(split)
    with pytest.raises(ServiceError) as exc:
        svc.train(split)
    message = str(exc.value)
    assert not isinstance(exc.value, UserError) and "\n" not in message
    assert "ended ERROR" in message and "CUDA error: out of memory" in message
    assert "Traceback" in message and "Job started" not in message
    assert fake.requests("GET", r"/api/jobs/mlbench-user/[^/]+/logs")
    fake.state.job_outcome = "ok"
    model = auto(fake).train(split)  # the rerun starts a new Job
    assert fake.state.created["job"] == 2 and model.details["id2label"]


def test_a_job_without_credit_is_one_line_saying_what_is_missing(fake, split):
    fake.state.credit = False
    svc = auto(fake)
    svc.upload(split)
    with pytest.raises(UserError) as exc:
        svc.submit(split)
    message = str(exc.value)
    assert "\n" not in message and "HTTP 402" in message and "pre-paid credits" in message
    assert "huggingface.endpoints.<dataset>.<ablation>" in message
    assert len(fake.requests("POST", r"/api/jobs/mlbench-user")) == 1  # refused, not retried
    assert fake.state.jobs == {}


def test_a_missing_token_stops_before_anything_is_sent(fake, split, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    for step in (lambda s: s.upload(split), lambda s: s.submit(split)):
        with pytest.raises(UserError, match="HF_TOKEN") as exc:
            step(auto(fake))
        assert "\n" not in str(exc.value)
    assert fake.log == []


def test_a_refused_token_is_one_line_naming_hf_token(fake, split, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(UserError, match="HF_TOKEN") as exc:
        auto(fake).upload(split)
    assert "hf_wrong" not in str(exc.value) and "\n" not in str(exc.value)


def test_an_unknown_flavor_is_refused_before_a_job_starts(fake, split):
    svc = auto(fake, flavor="gpu-galore")
    svc.upload(split)
    with pytest.raises(UserError, match=r"huggingface\.flavor: 'gpu-galore'.*t4-small"):
        svc.submit(split)
    assert fake.state.jobs == {} and "model_repo" not in fake.state.created


def test_changed_hyperparameters_train_a_new_model_on_the_same_dataset(fake, split):
    svc = auto(fake)
    svc.upload(split)
    first = svc.train(split)
    other = auto(fake, epochs=3)
    other.upload(split)
    second = other.train(split)
    assert first.ids["model"] != second.ids["model"]
    assert first.ids["dataset"] == second.ids["dataset"]
    assert fake.state.created == {"dataset_repo": 1, "model_repo": 2, "job": 2}


def test_re_prepared_images_under_the_same_names_train_a_new_model(fake, split):
    """The repo name follows the ablation's names (digest); its content is in the dataset
    revision, which is part of the run: the old Job is not re-attached to new images."""
    svc = auto(fake)
    svc.upload(split)
    first = svc.train(split)
    split.train[0].path.write_bytes(image_bytes((1, 2, 3), 7, "PNG"))
    again = auto(fake)
    again.upload(split)
    second = again.train(split)
    assert second.ids["dataset"] == first.ids["dataset"]
    assert second.ids["dataset_revision"] != first.ids["dataset_revision"]
    assert second.ids["job_id"] != first.ids["job_id"] and fake.state.created["job"] == 2
    assert second.ids["model"] != first.ids["model"]


# -- deploy (connect) and teardown ---------------------------------------------------------------
@pytest.fixture
def trained(fake, split) -> ModelRef:
    svc = auto(fake)
    svc.upload(split)
    return svc.train(split)


def test_connect_deploys_waits_and_records_outside_the_train_output(fake, split, trained):
    svc = auto(fake)
    before = state_files(svc)
    svc.connect(trained)
    assert state_files(svc) == before  # nothing in the train stage's DVC output changes
    (ep,) = fake.state.managed.values()
    assert ep.repository == trained.ids["model"] and ep.state == "running"
    body = ep.payload
    assert body["model"]["task"] == "image-classification"
    assert body["model"]["revision"] == trained.ids["model_revision"]
    assert body["compute"] == {"accelerator": "gpu", "instanceSize": "x1",
                               "instanceType": "nvidia-t4",
                               "scaling": {"maxReplica": 1, "minReplica": 1,
                                           "scaleToZeroTimeout": None}}
    assert body["provider"] == {"region": "us-east-1", "vendor": "aws"}
    record = json.loads(paths.deployment_file("huggingface", "digits", 5).read_text())
    assert record["up"] is True and record["resource"] == ep.name
    assert fake.requests("GET", rf"/endpoints/{ep.name}/health")  # waited as .wait() does
    for cls, rgb in COLOURS.items():
        assert svc.predict(image_bytes(rgb, 3)).label == cls
    auto(fake).connect(trained)  # `load` after `evaluate`: the same endpoint, nothing created
    assert fake.state.created["endpoint"] == 1


@pytest.mark.parametrize("mode", ["pause", "scale-to-zero"])
def test_a_torn_down_endpoint_is_resumed_by_connect(fake, trained, mode):
    svc = auto(fake, teardown=mode)
    svc.connect(trained)
    assert ("paused" if mode == "pause" else "scaled to zero") in svc.teardown(trained)
    assert not svc.deployment.get("up")
    again = auto(fake, teardown=mode)
    again.connect(trained)
    (ep,) = fake.state.managed.values()
    assert ep.state == "running" and ep.resumes == 1 and fake.state.created["endpoint"] == 1
    assert again.deployment.get("up") and again.predict(image_bytes(COLOURS["red"], 1)).label \
        == "red"


@pytest.mark.parametrize(("mode", "state", "said"), [
    ("pause", "paused", "paused"), ("scale-to-zero", "scaledToZero", "scaled to zero"),
    ("delete", None, "deleted")])
def test_teardown_follows_the_setting_and_ends_the_deployment(fake, trained, mode, state, said):
    svc = auto(fake, teardown=mode)
    svc.connect(trained)
    line = svc.teardown(trained)
    assert said in line and f"huggingface.teardown: {mode}" in line
    eps = list(fake.state.managed.values())
    assert [e.state for e in eps] == ([state] if state else [])
    record = svc.deployment
    assert record.get("up") is False and record.seconds_up() > 0
    again = auto(fake, teardown=mode).teardown(trained)  # a second teardown changes nothing
    assert ("nothing billed" if state is None else f"already {state}") in again


def test_other_hardware_makes_a_new_endpoint_and_tears_the_old_one_down(fake, trained):
    auto(fake).connect(trained)
    svc = auto(fake, accelerator="cpu", instance_type="intel-spr", instance_size="x2")
    svc.connect(trained)
    old, new = sorted(fake.state.managed.values(), key=lambda e: e.created_at)
    assert old.state == "paused" and new.state == "running"
    assert new.payload["compute"]["instanceType"] == "intel-spr"
    assert svc.deployment.get("resource") == new.name and svc.deployment.get("up")
    assert new.name in svc.teardown(trained) and new.state == "paused"


def test_teardown_never_touches_an_endpoint_given_by_hand(fake, trained):
    svc = configured(fake)
    model = adopted(svc)
    line = svc.teardown(model)
    assert "given by hand, left as it is" in line
    assert not fake.requests("POST", r"/v2/.*") and not fake.requests("DELETE", r"/v2/.*")
    assert not paths.deployment_file("huggingface", "digits", 5).exists()


def test_an_endpoint_that_fails_to_start_is_one_service_error_line(fake, trained):
    repo = fake.state.repo("model", trained.ids["model"])
    repo.files.pop("config.json")  # the endpoint cannot load the model
    with pytest.raises(ServiceError) as exc:
        auto(fake).connect(trained)
    assert "failed" in str(exc.value) and "\n" not in str(exc.value)


def test_endpoints_refused_for_lack_of_a_payment_method_are_one_line(fake, trained):
    fake.server.inject(Fault(402, count=1, path_pattern=r"^/v2/endpoint/[^/]+$",
                             body={"error": "Payment method required"}))
    with pytest.raises(UserError) as exc:
        auto(fake).connect(trained)
    assert "HTTP 402: Payment method required" in str(exc.value)
    assert "\n" not in str(exc.value) and fake.state.managed == {}


def test_vendor_commands_status_pause_and_resume(fake, trained):
    from mlbench.cli import app

    trained.save(paths.model_json("huggingface", "digits", 5))
    Path("params.yaml").write_text(yaml.safe_dump(block(endpoints_api=fake.endpoints_api,
                                                        **FAST_POLL)))
    runner = CliRunner()
    status = runner.invoke(app, ["huggingface", "status"])
    assert status.exit_code == 0, status.output
    assert "not created" in status.output and fake.state.managed == {}  # status creates nothing
    resumed = runner.invoke(app, ["huggingface", "resume", "digits", "5"])
    assert resumed.exit_code == 0, resumed.output
    assert "running at" in resumed.output and fake.state.created["endpoint"] == 1
    assert "running (billed)" in runner.invoke(app, ["huggingface", "status"]).output
    paused = runner.invoke(app, ["huggingface", "pause"])
    assert paused.exit_code == 0, paused.output
    (ep,) = fake.state.managed.values()
    assert ep.state == "paused" and "paused (huggingface.teardown: pause)" in paused.output
    assert "paused (not billed)" in runner.invoke(app, ["huggingface", "status"]).output


def test_status_shows_a_job_still_training_from_the_record(fake, split):
    from mlbench.cli import app

    fake.state.hold_jobs, fake.state.schedule_seconds = True, 0.0
    svc = auto(fake)
    svc.upload(split)
    job = svc.submit(split)
    Path("params.yaml").write_text(yaml.safe_dump(block(endpoints_api=fake.endpoints_api)))
    result = CliRunner().invoke(app, ["huggingface", "status"])
    assert result.exit_code == 0, result.output
    assert f"training Job {job.ids['job_id']}: RUNNING" in result.output
    paused = CliRunner().invoke(app, ["huggingface", "pause"])
    assert "not deployed yet" in paused.output and fake.state.managed == {}
    cancelled = CliRunner().invoke(app, ["huggingface", "cancel", "digits"])
    assert cancelled.exit_code == 0, cancelled.output
    assert f"training Job {job.ids['job_id']} cancelled" in cancelled.output
    assert fake.state.jobs[job.ids["job_id"]].stage == "CANCELED"
    with pytest.raises(ServiceError, match="ended CANCELED"):
        svc.wait(job)  # the run that waited on it stops in one line; a rerun starts anew


# -- the package's other faces: vendor commands, export, missing extra, the harness ---------------
def write_params(fake: HuggingFaceFake, **settings: object) -> None:
    data = block(endpoints={"digits": {5: fake.endpoint_url("digits-5")}}, **settings)
    Path("params.yaml").write_text(yaml.safe_dump(data))


def test_status_lists_given_and_recorded_endpoints_without_calling_them(fake):
    from mlbench.cli import app

    write_params(fake)
    result = CliRunner().invoke(app, ["huggingface", "status"])
    assert result.exit_code == 0, result.output
    assert f"digits 5: {fake.endpoint_url('digits-5')}: given in params.yaml, not checked" \
        in result.output
    model = adopted(configured(fake, models={"digits": {5: "me/digits-5"}}))
    model.save(paths.model_json("huggingface", "digits", 5))
    calls = len(fake.log)
    result = CliRunner().invoke(app, ["huggingface", "status", "digits"])
    assert result.exit_code == 0, result.output
    assert "checked by `mlbench train`" in result.output and "me/digits-5" in result.output
    assert len(fake.log) == calls  # status wakes no endpoint (a call would bill one at zero)


def test_status_without_any_endpoint_is_one_line(fake):
    from mlbench.cli import app

    Path("params.yaml").write_text(yaml.safe_dump(block()))
    result = CliRunner().invoke(app, ["huggingface", "status"])
    assert result.exit_code == 2
    assert "huggingface.endpoints.<dataset>.<ablation>" in result.output
    assert "Traceback" not in result.output


def test_the_vendor_commands_are_status_resume_and_pause():
    from mlbench.services.huggingface.cli import cli

    assert [c.name for c in cli.registered_commands] == ["status", "resume", "pause", "cancel"]


def test_a_missing_extra_is_one_line_naming_it(monkeypatch):
    import mlbench.services.huggingface as package

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    for name in ("service", "api"):  # imported afresh, as in a process without the extra
        monkeypatch.delitem(sys.modules, f"{package.__name__}.{name}", raising=False)
        monkeypatch.delattr(package, name, raising=False)
    importlib.import_module("mlbench.services.huggingface.settings")  # no SDK needed
    importlib.import_module("mlbench.services.huggingface.cli")
    with pytest.raises(MissingExtra) as exc:
        open_service(parse_checked_params(block()), "huggingface", "digits", 5)
    assert "pip install 'mlbench[huggingface]'" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_the_harness_adopts_a_given_endpoint_and_trains_the_rest(digits_copy, capsys,
                                                                 monkeypatch):
    """`mlbench train`: ablation 5's hand-given endpoint is adopted as before; ablation 20 has
    none, so it is trained by a Job, and its dataset repo holds exactly the AutoTrain zips that
    `export` wrote for it, under the split folders."""
    from mlbench.bench.train import run_training
    from mlbench.data.ablate import load_split
    from mlbench.services.huggingface import export

    with HuggingFaceFake(token=TOKEN) as fk:
        fk.add_endpoint("digits-5", {c: (0.0, 0.0, 0.0) for c in load_split("digits", 5).classes})
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        monkeypatch.setenv("HF_ENDPOINT", fk.url)
        params = parse_checked_params({**block(
            endpoints={"digits": {5: fk.endpoint_url("digits-5")}},
            train_seconds={"digits": {5: 42}}, endpoints_api=fk.endpoints_api,
            **{**FAST_POLL, "upload_batch": 100}),
            "datasets": ["digits"], "ablations": [5, 20]})
        run_training(params, "huggingface", "digits")
        split = load_split("digits", 20)
        (repo,) = [r for r in fk.state.repos.values() if r.repo_type == "dataset"]
        assert fk.state.created == {"dataset_repo": 1, "model_repo": 1, "job": 1}
    given = ModelRef.load(paths.model_json("huggingface", "digits", 5))
    assert given is not None and given.train_seconds == 42 and given.details["fingerprint"]
    model = ModelRef.load(paths.model_json("huggingface", "digits", 20))
    assert model is not None and model.ids["dataset"] == repo.repo_id
    assert sorted(model.details["id2label"].values()) == sorted(split.classes)
    for part, folder in export.IMAGEFOLDER_SPLITS:
        with zipfile.ZipFile(export.autotrain_zip("digits", part, 20)) as zf:
            seeded = {f"{folder}/{name}": zf.read(name) for name in zf.namelist()}
        assert seeded == {p: b for p, b in repo.files.items() if p.startswith(folder + "/")}
    assert len(repo.files) == len(split.all)
    assert "Inference Endpoint" not in capsys.readouterr().err  # nothing deployed by train


def test_seed_script_scores_the_endpoint_given_on_the_command_line(digits_copy, monkeypatch):
    """`python scripts/huggingface.py invoke <ds> <url>`: the ablation is found from params.yaml,
    the endpoint adopted and recorded as `train` would, and the test set scored on it."""
    import csv
    import importlib.util

    from mlbench.data.export import write_test_table
    from mlbench.data.sources.digits import Digits

    write_test_table("digits", 2, 0)
    with HuggingFaceFake(token=TOKEN) as fk:
        fk.add_endpoint("digits-5", {c: (0.0, 0.0, 0.0) for c in Digits.class_names})
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        url = fk.endpoint_url("digits-5")
        Path("params.yaml").write_text(yaml.safe_dump({
            **block(endpoints={"digits": {5: url}}), "ablations": [5]}))
        spec = importlib.util.spec_from_file_location(
            "huggingface_script", Path(__file__).parents[1] / "scripts" / "huggingface.py")
        assert spec and spec.loader
        script = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(script)
        assert script.main(["invoke", "digits", url]) == 0
        assert script.main(["invoke", "digits", fk.endpoint_url("other")]) == 2  # which size?
    model = ModelRef.load(paths.model_json("huggingface", "digits", 5))
    assert model is not None and model.ids["endpoint_url"] == url
    assert model.details["fingerprint"]
    with paths.predictions_csv("huggingface", "digits", 5).open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * len(Digits.class_names) and not any(r["error"] for r in rows)


# -- the fake speaks the real wire format ----------------------------------------------------------
def test_fake_answers_the_official_inference_client(fake, tmp_path):
    from huggingface_hub import InferenceClient

    path = tmp_path / "img.png"
    path.write_bytes(image_bytes(COLOURS["red"], 1, "PNG"))
    client = InferenceClient(model=fake.endpoint_url("digits-5"), token=TOKEN)
    assert client.image_classification(str(path))[0].label == "red"  # raw bytes + image/png
    top = client.image_classification(path.read_bytes(), top_k=1)  # JSON {"inputs": base64}
    assert [e.label for e in top] == ["red"]
    assert json.loads(predict_calls(fake)[-1].body)["parameters"] == {"top_k": 1}


def test_fake_rejects_malformed_requests_loudly(fake):
    url = fake.endpoint_url("digits-5")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    image = image_bytes(COLOURS["red"], 1)
    no_type = requests.post(url, data=image, headers=auth, timeout=5)
    assert no_type.status_code == 400 and "Content-Type" in no_type.json()["error"]
    bad_json = requests.post(url, json={"image": base64.b64encode(image).decode()},
                             headers=auth, timeout=5)
    assert bad_json.status_code == 400 and "inputs" in bad_json.json()["error"]
    junk = requests.post(url, data=b"junk", headers={**auth, "Content-Type": "image/jpeg"},
                         timeout=5)
    assert junk.status_code == 400
    assert requests.post(url, data=image, headers={"Content-Type": "image/jpeg"},
                         timeout=5).status_code == 401


def test_fake_answers_huggingface_hub_for_repos_commits_jobs_and_endpoints(fake, tmp_path,
                                                                         monkeypatch):
    """The fake against huggingface_hub's own calls, beyond the ones the service makes:
    upload_folder, list_repo_tree (paged), run_uv_job, list_jobs, fetch_job_logs, cancel_job,
    and InferenceEndpoint's wait/pause/resume/scale_to_zero/delete."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub import InferenceEndpoint as HubEndpoint

    monkeypatch.setattr(constants, "INFERENCE_ENDPOINTS_ENDPOINT", fake.endpoints_api)
    hub = HfApi(endpoint=fake.url, token=TOKEN)
    assert hub.whoami()["name"] == "mlbench-user"
    folder = tmp_path / "folder"
    for cls, rgb in COLOURS.items():
        (folder / "train" / cls).mkdir(parents=True)
        (folder / "train" / cls / "a.png").write_bytes(image_bytes(rgb, 1, "PNG"))
    url = hub.create_repo("mlbench-user/colours", repo_type="dataset", private=True)
    assert url.repo_id == "mlbench-user/colours" and url.repo_type == "dataset"
    hub.create_repo("mlbench-user/colours", repo_type="dataset", private=True, exist_ok=True)
    info = hub.upload_folder(repo_id="mlbench-user/colours", repo_type="dataset",
                             folder_path=folder)
    again = hub.upload_folder(repo_id="mlbench-user/colours", repo_type="dataset",
                              folder_path=folder)  # nothing changed: no commit sent
    assert again.oid == info.oid and fake.state.files_received == 3
    fake.state.tree_page = 2
    files = sorted(f.path for f in hub.list_repo_tree("mlbench-user/colours", repo_type="dataset",
                                                      recursive=True) if hasattr(f, "blob_id"))
    assert files == [f"train/{c}/a.png" for c in sorted(COLOURS)]
    assert hub.dataset_info("mlbench-user/colours").sha == info.oid

    hub.create_repo("mlbench-user/colours-model", private=True)
    fake.state.hold_jobs = True
    job = hub.run_uv_job("python", script_args=["-c", "print(1)"], flavor="t4-small",
                         namespace="mlbench-user", labels={"k": "v"})
    assert job.status.stage == "SCHEDULING" and job.owner.name == "mlbench-user"
    assert [j.id for j in hub.list_jobs(namespace="mlbench-user", labels={"k": "v"})] == [job.id]
    assert list(hub.list_jobs(namespace="mlbench-user", labels={"k": "w"})) == []
    hub.cancel_job(job_id=job.id, namespace="mlbench-user")
    assert hub.inspect_job(job_id=job.id, namespace="mlbench-user").status.stage == "CANCELED"
    assert list(hub.fetch_job_logs(job_id=job.id, namespace="mlbench-user")) == []  # no output
    fake.state.jobs[job.id].log("hello from the job")
    assert list(hub.fetch_job_logs(job_id=job.id, namespace="mlbench-user", tail=1)) == \
        ["hello from the job"]

    model = fake.state.repo("model", "mlbench-user/colours-model")
    model.apply({"config.json": b'{"id2label": {"0": "blue"}}'}, [], "model")
    model.centroids = {"blue": COLOURS["blue"]}
    ep = hub.create_inference_endpoint(
        "colours", repository="mlbench-user/colours-model", framework="pytorch",
        accelerator="cpu", instance_size="x2", instance_type="intel-spr", region="us-east-1",
        vendor="aws", task="image-classification", namespace="mlbench-user")
    assert isinstance(ep, HubEndpoint) and ep.status == "initializing" and ep.url is None
    ep._api = hub  # the object's own client would use the default Hub; the fake has the user
    ep.wait(timeout=10, refresh_every=1)
    assert ep.status == "running" and ep.url == fake.endpoint_url("colours")
    assert ep.pause().status == "paused"
    assert ep.resume().status == "initializing"
    ep.wait(timeout=10, refresh_every=1)
    assert ep.resume(running_ok=True).status == "running"  # 400 "already running" tolerated
    assert ep.scale_to_zero().status == "scaledToZero"
    ep.delete()
    assert fake.state.managed == {}
    assert fake.state.created == {"dataset_repo": 1, "model_repo": 1, "job": 1, "endpoint": 1}


# -- the training script kept in the project -----------------------------------------------------
def test_training_script_is_pinned_exactly_and_shipped_with_the_package():
    from mlbench.services.huggingface import training

    pins = training.pins()
    names_ = {p.split("==")[0] for p in pins}
    assert {"torch", "transformers", "huggingface-hub", "pillow"} <= names_
    assert all("==" in p for p in pins)
    meta = training.script_metadata()
    assert meta["requires-python"].startswith(">=")
    with pytest.raises(ValueError, match="not pinned"):
        training.pins("# /// script\n# dependencies = ['torch>=2']\n# ///\n")
    with pytest.raises(ValueError, match="no `# /// script`"):
        training.script_metadata("print('hi')\n")
    assert training.SCRIPT.is_file() and "mlbench" in training.SCRIPT.parts


def _load_train_script():
    import importlib.util

    from mlbench.services.huggingface import training

    spec = importlib.util.spec_from_file_location("mlbench_hf_train", training.SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # only the standard library at import
    return module


def test_training_script_parses_its_arguments_and_reads_an_imagefolder(tmp_path, split):
    script = _load_train_script()
    args = script.parse_args(["--dataset", "me/ds", "--revision", "abc", "--base-model", "m",
                              "--model-repo", "me/model", "--epochs", "3",
                              "--learning-rate", "0.0001", "--batch-size", "8"])
    assert (args.dataset, args.epochs, args.learning_rate, args.batch_size) == ("me/ds", 3,
                                                                                1e-4, 8)
    for bad in (["--base-model", "m", "--model-repo", "x"],  # no data source
                ["--dataset", "d", "--base-model", "m"],  # nowhere to push
                ["--dataset", "d", "--base-model", "m", "--no-push", "--epochs", "0"]):
        with pytest.raises(SystemExit):
            script.parse_args(bad)
    root = tmp_path / "folder"
    for path, ref in __import__("mlbench.services.huggingface.export",
                                fromlist=["imagefolder"]).imagefolder(split):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(ref.path.read_bytes())
    classes, splits = script.read_imagefolder(root)
    assert classes == sorted(COLOURS) and len(splits["train"]) == 9
    assert len(splits["validation"]) == 3
    assert {classes[label] for _, label in splits["validation"]} == set(COLOURS)


def test_training_script_fine_tunes_offline_and_saves_id2label(tmp_path, split):
    """The script's training path on CPU, without the Hub: a tiny randomly initialised ViT (no
    download) fine-tuned on the imagefolder, saved with its processor and id2label. Needs
    transformers (the `hf-job-check` extra); the GPU run at Hugging Face cannot run here."""
    pytest.importorskip("transformers")
    from transformers import (
        AutoModelForImageClassification,
        ViTConfig,
        ViTForImageClassification,
        ViTImageProcessorPil,
    )

    script = _load_train_script()
    base = tmp_path / "base"
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=2, intermediate_size=64)
    ViTForImageClassification(config).save_pretrained(base)
    ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(base)
    root = tmp_path / "folder"
    from mlbench.services.huggingface.export import imagefolder

    for path, ref in imagefolder(split):
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(ref.path.read_bytes())
    out = tmp_path / "out"
    assert script.main(["--data-dir", str(root), "--base-model", str(base), "--output-dir",
                        str(out), "--no-push", "--epochs", "8", "--learning-rate", "0.003",
                        "--batch-size", "4"]) == 0
    report = json.loads((out / "mlbench_train.json").read_text())
    assert report["classes"] == sorted(COLOURS) and report["validation_accuracy"] == 1.0
    model = AutoModelForImageClassification.from_pretrained(out)
    assert model.config.id2label == {0: "blue", 1: "green", 2: "red"}
    assert (out / "preprocessor_config.json").is_file()


# -- end to end: `dvc repro` with both cloud services of this slice against their fakes -----------
@pytest.mark.slow
def test_dvc_repro_benchmarks_nyckel_and_huggingface_against_fakes(tmp_path):
    """The issue's acceptance run for this slice: services [nyckel, huggingface] through
    `dvc repro`, with 20% of the prediction calls answered 429/503; both reach the metrics and
    the plots, every image gets a prediction, retries are reported, no secret is written.
    (`local` is left out only to keep this test short: its stages are the lead's tests.)"""
    import os
    import shutil
    import subprocess

    from mlbench.data.sources.digits import Digits
    from tests.fakes.nyckel import NyckelFake

    root = Path(__file__).resolve().parents[1]
    proj = tmp_path / "proj"
    shutil.copytree(root / "mlbench", proj / "mlbench",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "pyproject.toml"):
        shutil.copy(root / name, proj / name)
    (proj / ".dvc").mkdir()
    (proj / ".dvc" / "config").write_text("[core]\n    autostage = false\n")
    subprocess.run(["git", "init", "-q"], cwd=proj, check=True)

    ny_secret, hf_token = "nyckel-e2e-secret", "hf_e2e_token"
    with NyckelFake(client_secret=ny_secret, train_delay=0.5) as ny, \
            HuggingFaceFake(token=hf_token) as hf:
        centroids = {c: (i * 25.0, 255 - i * 25.0, 128.0) for i, c in enumerate(Digits.class_names)}
        hf.add_endpoint("digits-5", centroids, label_style="ids", cold_requests=2)
        hf.state.add_repo(Repo.autotrain_model("me/digits-5", sorted(Digits.class_names)))
        for server, pattern in ((ny.server, "invoke"), (hf.server, "endpoints")):
            server.inject(Fault(429, fraction=0.1, headers={"Retry-After": "0"},
                                path_pattern=pattern))
            server.inject(Fault(503, fraction=0.1, path_pattern=pattern))

        params = yaml.safe_load((root / "params.yaml").read_text())
        params.update(
            datasets=["digits"], ablations=[5], ablation="all", test_per_class=3,
            services=["nyckel", "huggingface"],
            load={"calls": 30, "concurrency": 10, "mode": "batch", "timeout": 30},
            nyckel={"poll_interval": 0.2, "train_timeout": 60},
            huggingface={"endpoints": {"digits": {5: hf.endpoint_url("digits-5")}},
                         "models": {"digits": {5: "me/digits-5"}},
                         "train_seconds": {"digits": {5: 180}}, "warmup_timeout": 30},
        )
        (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        env = {**os.environ, "NYCKEL_API_URL": ny.url, "NYCKEL_CLIENT_ID": "test-client",
               "NYCKEL_CLIENT_SECRET": ny_secret, "HF_TOKEN": hf_token, "HF_ENDPOINT": hf.url,
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        run = subprocess.run(["dvc", "repro"], cwd=proj, env=env, capture_output=True,
                             text=True, timeout=600)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        (function,) = ny.state.functions.values()
        assert len(function.samples) == 50  # digits, 5 per class x 10 classes: train + val
        assert ny.state.invocations and not any(i.capture for i in ny.state.invocations)

    import pandas as pd

    table = pd.read_csv(proj / "results" / "summary.csv").set_index(
        ["service", "dataset", "ablation"])
    runs = proj / "results" / "runs"
    for svc in ("nyckel", "huggingface"):
        m = table.loc[(svc, "digits", 5)]
        assert m["errors"] == 0 and m["load_throughput_rps"] > 0
        assert (proj / "results" / "metrics" / f"{svc}-digits.json").exists()
        rows = (runs / svc / "digits" / "eval" / "5" / "predictions.csv").read_text().splitlines()
        assert len(rows) == 1 + 30 and all(row.endswith(",") for row in rows[1:])  # no error
        summary = json.loads((runs / svc / "digits" / "load" / "5" / "summary.json").read_text())
        assert summary["errors"] == 0 and summary["retries"] > 0
    assert table.loc[("huggingface", "digits", 5), "train_seconds"] == 180
    assert (proj / "results" / "plots" / "learning_curve.png").exists()
    written = "".join(p.read_text(errors="replace") for p in (proj / "results").rglob("*")
                      if p.is_file() and p.suffix in (".json", ".csv"))
    assert ny_secret not in written and hf_token not in written


# -- end to end: `dvc repro` with the automatic path -----------------------------------------------
def _stage_pids(proj: Path) -> list[int]:
    """The `mlbench` processes working in `proj` (what a `dvc repro` there started)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            if (entry / "cwd").resolve() == proj.resolve() and any(
                    part.endswith(b"/mlbench") for part in cmd):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _outlived(proj: Path, timeout: float = 30.0) -> list[int]:
    """The stages of a killed `dvc repro` still alive after `timeout` s (none, as they end with
    it: `runlock.guard_process`)."""
    deadline = time.monotonic() + timeout
    while (alive := _stage_pids(proj)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


@pytest.mark.slow
def test_dvc_repro_trains_deploys_scores_and_pauses_on_the_hub_fake(tmp_path):
    """The issue's acceptance run: `dvc repro` with services [local, huggingface] and no endpoint
    given creates per ablation one dataset repo, one Job, one model repo and one endpoint,
    scores the test set, and leaves the endpoints paused. `dvc repro` SIGKILLed while the Job
    runs, then run again, re-attaches to it; a further `dvc repro` creates nothing."""
    import os
    import signal
    import subprocess

    from tests.conftest import make_project

    with HuggingFaceFake(token=TOKEN) as hf:
        proj = make_project(tmp_path / "proj", params={
            "datasets": ["digits"], "ablations": [5, 20], "ablation": "all",
            "test_per_class": 3, "services": ["local", "huggingface"],
            "local": {"features": "hog"},
            "load": {"calls": 20, "concurrency": 5, "mode": "batch", "timeout": 30},
            "huggingface": {"endpoints_api": hf.endpoints_api, "poll_seconds": 0.1,
                            "warmup_timeout": 30, "upload_batch": 100},
        })
        env = {**os.environ, "HF_TOKEN": TOKEN, "HF_ENDPOINT": hf.url,
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

        def run() -> subprocess.CompletedProcess:
            return subprocess.run(["dvc", "repro"], cwd=proj, env=env, capture_output=True,
                                  text=True, timeout=600)

        hf.state.hold_jobs = True  # the first Job runs until released
        log = (tmp_path / "first.log").open("w")
        first = subprocess.Popen(["dvc", "repro"], cwd=proj, env=env, stdout=log,
                                 stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while not any(j.stage == "RUNNING" for j in hf.state.jobs.values()):
                assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "no Job started"
                for job in list(hf.state.jobs.values()):
                    hf.state.advance_job(job)
                time.sleep(0.1)
            first.send_signal(signal.SIGKILL)
            first.wait()
            orphans = [" ".join(Path(f"/proc/{pid}/cmdline").read_text().split("\0")).strip()
                       for pid in _outlived(proj)]
            for pid in _stage_pids(proj):  # ours to end: the rest of the test needs them gone
                os.kill(pid, signal.SIGKILL)
        finally:
            if first.poll() is None:
                first.kill()
            log.close()
        assert 1 <= hf.state.created["job"] <= 2  # one per ablation at most, still running
        assert not any(j.stage in ("COMPLETED", "CANCELED") for j in hf.state.jobs.values())
        hf.state.hold_jobs = False

        second = run()
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        assert hf.state.created == {"dataset_repo": 2, "model_repo": 2, "job": 2,
                                    "endpoint": 2}  # one each per ablation: re-attached
        assert sorted(ep.state for ep in hf.state.managed.values()) == ["paused", "paused"]
        for n in (5, 20):
            model = ModelRef.load(proj / paths.model_json("huggingface", "digits", n))
            assert model is not None and model.details["trained_by"] == "Hugging Face Job"
            rows = (proj / paths.predictions_csv("huggingface", "digits", n)).read_text(
            ).splitlines()
            assert len(rows) == 1 + 30 and all(r.endswith(",") for r in rows[1:])  # no error
            record = json.loads((proj / paths.deployment_file("huggingface", "digits", n))
                                .read_text())
            assert record["up"] is False and record["deployed_seconds"] > 0
        received = hf.state.files_received

        third = run()
        assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
        assert "Running stage" not in third.stdout + third.stderr
        assert hf.state.created == {"dataset_repo": 2, "model_repo": 2, "job": 2, "endpoint": 2}
        assert hf.state.files_received == received
        assert sorted(ep.state for ep in hf.state.managed.values()) == ["paused", "paused"]

    import pandas as pd

    assert not orphans, f"stages outlived the SIGKILLed dvc repro, polling the Job: {orphans}"
    table = pd.read_csv(proj / "results" / "summary.csv").set_index(
        ["service", "dataset", "ablation"])
    for n in (5, 20):
        row = table.loc[("huggingface", "digits", n)]
        assert row["errors"] == 0 and row["train_seconds"] > 0
    written = "".join(p.read_text(errors="replace") for p in (proj / "results").rglob("*")
                      if p.is_file() and p.suffix in (".json", ".csv"))
    assert TOKEN not in written


# -- issue 14: secrets, unexpected answers, warm-up refusals ---------------------------------------
def _digits_endpoint(fk: HuggingFaceFake, url: str, monkeypatch, **settings: object) -> None:
    """params.yaml naming `url` as the digits/5 endpoint, a 20-image test set, the token set."""
    from mlbench.data.export import write_test_table

    write_test_table("digits", 2, 0)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    Path("params.yaml").write_text(yaml.safe_dump({
        **block(endpoints={"digits": {5: url}}, **settings), "datasets": ["digits"],
        "ablations": [5]}))


def _load_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "huggingface_script", Path(__file__).parents[1] / "scripts" / "huggingface.py")
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_finding12_an_endpoint_echoing_authorization_leaks_no_token(digits_copy, monkeypatch,
                                                                    capsys):
    """The campaign's endpoint echoed the request headers in its 400 body: the token went into
    predictions.csv (450 times) and into the error printed on the console."""
    from mlbench.bench.evaluate import run_evaluation
    from mlbench.bench.train import run_training
    from mlbench.cli import app
    from mlbench.project import load_checked_params
    from tests.fakes.http_base import Response

    with HuggingFaceFake(token=TOKEN) as fk:
        @fk.server.route("POST", r"/echo/?")
        def echo(req):
            return Response.json({"error": "bad request with Authorization: "
                                  f"{req.header('Authorization')}", "headers": req.headers},
                                 400)

        _digits_endpoint(fk, fk.url + "/echo", monkeypatch, warmup=False)
        run_training(load_checked_params(), "huggingface", "digits")
        run_evaluation(load_checked_params(), "huggingface", "digits")
        assert fk.server.log[-1].header("Authorization") == f"Bearer {TOKEN}"  # it was sent
        written = paths.predictions_csv("huggingface", "digits", 5).read_text()
        assert written.count("HTTP 400") == 20 and "[REDACTED]" in written
        assert TOKEN not in written and TOKEN not in capsys.readouterr().err

        _digits_endpoint(fk, fk.url + "/echo", monkeypatch, warmup=True)  # fails at connect
        result = CliRunner().invoke(app, ["evaluate", "huggingface", "digits"])
    assert result.exit_code == 1 and "HTTP 400" in result.output and TOKEN not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Authorization: [REDACTED]" in errors[0]


def test_finding10_a_200_with_unexpected_json_is_an_error_row_then_retried(digits_copy,
                                                                          monkeypatch):
    from mlbench.bench.evaluate import run_evaluation
    from mlbench.bench.train import run_training
    from mlbench.cli import app
    from mlbench.data.sources.digits import Digits
    from mlbench.project import load_checked_params

    with HuggingFaceFake(token=TOKEN) as fk:
        fk.add_endpoint("digits-5", {c: (0.0, 0.0, 0.0) for c in Digits.class_names})
        url = fk.endpoint_url("digits-5")
        _digits_endpoint(fk, url, monkeypatch, warmup=False)
        run_training(load_checked_params(), "huggingface", "digits")
        for body in (b'{"label": "3", "score": 0.9}', b"[" * 50_000 + b"]" * 50_000,
                     b'[{"label": "3", "score": ' + b"9" * 400 + b"}]"):
            fk.server.inject(Fault(200, count=2, body=body, path_pattern="endpoints"))
        run_evaluation(load_checked_params(), "huggingface", "digits")
        out = paths.predictions_csv("huggingface", "digits", 5)
        errors = [e for e in pd_errors(out) if e]
        assert len(errors) == 6 and all("expected [{label, score}]" in e for e in errors)
        run_evaluation(load_checked_params(), "huggingface", "digits")  # error rows retried
        assert len(pd_errors(out)) == 20 and not any(pd_errors(out))

        _digits_endpoint(fk, url, monkeypatch, warmup=True)  # the warm-up gets one: one line
        fk.server.inject(Fault(200, count=1, body=b"{}", path_pattern="endpoints"))
        result = CliRunner().invoke(app, ["load", "huggingface", "digits"])
    assert result.exit_code == 1 and "expected [{label, score}]" in result.output
    assert len(result.output.strip().splitlines()) == 1


def pd_errors(path: Path) -> list[str]:
    import csv

    with path.open() as fh:
        return [row["error"] for row in csv.DictReader(fh)]


def test_finding10_a_warm_up_answered_400_is_one_line_from_the_seed_script(digits_copy,
                                                                          monkeypatch, capsys):
    from mlbench.data.sources.digits import Digits

    with HuggingFaceFake(token=TOKEN) as fk:
        fk.add_endpoint("digits-5", {c: (0.0, 0.0, 0.0) for c in Digits.class_names})
        url = fk.endpoint_url("digits-5")
        _digits_endpoint(fk, url, monkeypatch)
        fk.server.inject(Fault(400, count=1, path_pattern="endpoints"))
        assert _load_script().main(["invoke", "digits", url]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: ") and "HTTP 400" in last and url in last
