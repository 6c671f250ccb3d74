"""The Nyckel adapter against the local Nyckel fake: auth, resumable upload, training, invoke."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from mlbench import paths
from mlbench.core import AblationSplit, ImageRef, ModelRef
from mlbench.errors import MissingExtra, ServiceCallError, ServiceError, UserError
from mlbench.project import parse_checked_params
from mlbench.retry import RetryPolicy
from mlbench.services.nyckel.api import data_uri
from mlbench.services.nyckel.auth import ClientCredentials, TokenProvider
from mlbench.services.nyckel.service import SAMPLES_FILE, STATE_FILE, NyckelService
from mlbench.services.ratelimit import RateLimiter
from mlbench.services.registry import open_service
from tests.fakes.http_base import Fault
from tests.fakes.nyckel import NyckelFake

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
SECRET = "s3cr3t-value-never-logged"
FAST = RetryPolicy(max_attempts=8, base_delay=0.005, max_delay=0.02, timeout=5.0)


def image_bytes(rgb: tuple[int, int, int], seed: int, fmt: str = "JPEG") -> bytes:
    """A small image of one colour with a unique pixel (so no two images are identical)."""
    img = Image.new("RGB", (16, 16), rgb)
    img.putpixel((seed % 16, (seed // 16) % 16), ((seed * 37) % 256, (seed * 91) % 256, 7))
    buf = io.BytesIO()
    img.save(buf, format=fmt, quality=95)
    return buf.getvalue()


def make_split(root: Path, per_class: int = 4, n: int = 5) -> AblationSplit:
    train, val = [], []
    seed = 0
    for cls, rgb in COLOURS.items():
        folder = root / "train" / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            seed += 1
            name = f"{cls}_{i}.jpg"
            (folder / name).write_bytes(image_bytes(rgb, seed))
            part = "val" if i == 0 else "train"
            (val if i == 0 else train).append(ImageRef(folder / name, cls, part, name))
    return AblationSplit("digits", n, tuple(COLOURS), tuple(train), tuple(val))


@pytest.fixture
def real_rate_limit() -> None:
    """Requested by the tests that check the 25 requests/s cap; the others skip the waits."""


@pytest.fixture(autouse=True)
def _fast_rate_limit(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if "real_rate_limit" not in request.fixturenames:
        monkeypatch.setattr(RateLimiter, "acquire", lambda self: None)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):
    with NyckelFake(client_secret=SECRET, train_delay=0.05) as fk:
        monkeypatch.setenv("NYCKEL_API_URL", fk.url)
        monkeypatch.setenv("NYCKEL_CLIENT_ID", "test-client")
        monkeypatch.setenv("NYCKEL_CLIENT_SECRET", SECRET)
        yield fk


@pytest.fixture(autouse=True)
def _in_tmp(request: pytest.FixtureRequest, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> None:
    """Run folders (`results/models/nyckel/...`) land in the test's own folder."""
    if "digits_copy" not in request.fixturenames:
        monkeypatch.chdir(tmp_path)


def service(tmp_path: Path, n: int = 5, **settings: object) -> NyckelService:
    settings = {"poll_interval": 0.02, "train_timeout": 10, **settings}
    params = parse_checked_params({"services": ["local", "nyckel"], "nyckel": settings})
    svc = open_service(params, "nyckel", "digits", n)
    assert isinstance(svc, NyckelService)
    svc.retry = FAST
    return svc


def function_of(svc: NyckelService) -> str:
    return svc.state.get("function_id")


@pytest.fixture
def split(tmp_path: Path) -> AblationSplit:
    return make_split(tmp_path / "data")


def trained(tmp_path: Path, split: AblationSplit) -> tuple[NyckelService, ModelRef]:
    svc = service(tmp_path)
    svc.upload(split)
    model = svc.train(split)
    svc.connect(model)
    return svc, model


def project_params(root: Path, **nyckel: object) -> None:
    """params.yaml of a digits copy: nyckel on ablation 5 (the file is a hard link: replace it)."""
    import yaml

    f = root / "params.yaml"
    data = yaml.safe_load(f.read_text())
    data.update(services=["nyckel"], ablation=5, nyckel={"poll_interval": 0.02, **nyckel})
    f.unlink()
    f.write_text(yaml.safe_dump(data, sort_keys=False))


def mlbench(*args: str):
    from mlbench.cli import app

    return CliRunner().invoke(app, list(args))


# -- auth ------------------------------------------------------------------------------------------
def test_token_is_form_encoded_client_credentials_and_cached(fake, tmp_path, split):
    svc = service(tmp_path)
    svc.upload(split)
    tokens = fake.requests("POST", "/connect/token")
    assert len(tokens) == 1, "one token serves every call until it is due"
    assert tokens[0].header("Content-Type").startswith("application/x-www-form-urlencoded")
    form = dict(p.split("=", 1) for p in tokens[0].body.decode().split("&"))
    assert form["grant_type"] == "client_credentials"
    assert form["client_id"] == "test-client"
    for req in fake.log[1:]:
        assert req.header("Authorization", ).startswith("Bearer tok-")


def test_token_renewed_ten_minutes_before_expiry(fake):
    now = [1000.0]
    tokens = TokenProvider(ClientCredentials("test-client", SECRET), fake.url, clock=lambda: now[0])
    first = tokens.token()
    now[0] += 3600 - 601  # 10 min + 1 s before expiry: still cached
    assert tokens.token() == first and tokens.fetches == 1
    now[0] += 2  # inside the 10-minute margin: renewed
    assert tokens.token() != first and tokens.fetches == 2


def test_expired_token_is_renewed_on_401_for_api_calls_and_predict(fake, tmp_path, split):
    svc, _ = trained(tmp_path, split)
    fake.state.expire_tokens()
    assert svc.predict(image_bytes(COLOURS["red"], 999)).label == "red"
    fake.state.expire_tokens()
    assert svc.api.get_function(function_of(svc)) is not None
    assert len(fake.requests("POST", "/connect/token")) == 3


def test_rejected_credentials_are_one_user_error_without_the_secret(fake, tmp_path, split,
                                                                    monkeypatch):
    monkeypatch.setenv("NYCKEL_CLIENT_SECRET", "wrong")
    with pytest.raises(UserError) as exc:
        service(tmp_path).upload(split)
    assert "NYCKEL_CLIENT_ID" in str(exc.value) and "NYCKEL_CLIENT_SECRET" in str(exc.value)
    assert "wrong" not in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("missing", ["NYCKEL_CLIENT_ID", "NYCKEL_CLIENT_SECRET"])
def test_missing_credentials_name_the_variable_and_send_nothing(fake, tmp_path, split,
                                                                monkeypatch, missing):
    monkeypatch.delenv(missing)
    svc = service(tmp_path)
    with pytest.raises(UserError, match=missing):
        svc.upload(split)
    with pytest.raises(UserError, match=missing):
        svc.connect(ModelRef("nyckel", "digits", 5, ids={"function_id": "function_x"}))
    assert fake.log == []


# -- upload ----------------------------------------------------------------------------------------
def test_upload_creates_function_labels_and_annotated_samples(fake, tmp_path, split):
    svc = service(tmp_path)
    svc.upload(split)
    (fn,) = fake.state.functions.values()
    assert fn.name.startswith("mlbench-digits-5-") and (fn.input, fn.output) == ("Image",
                                                                                "Classification")
    assert sorted(lb.name for lb in fn.labels.values()) == sorted(COLOURS)
    samples = fake.samples(fn.id)
    assert len(samples) == len(split.all)  # train + val: Nyckel cross-validates itself
    by_external = {s.external_id: fn.labels[s.label_id].name for s in samples}
    assert by_external == {img.filename: img.class_name for img in split.all}
    body = json.loads(fake.requests("POST", r"/v1/functions/[^/]+/samples")[0].body)
    assert set(body) == {"data", "externalId", "annotation"}
    assert body["data"].startswith("data:image/jpeg;base64,")
    state = json.loads((svc.ctx.state_dir / STATE_FILE).read_text())
    assert state["function_id"] == fn.id and state["samples"] == len(split.all)

    posts = len(fake.requests("POST", r"/v1/functions/[^/]+/samples"))
    service(tmp_path).upload(split)  # a rerun: nothing left to send
    assert len(fake.requests("POST", r"/v1/functions/[^/]+/samples")) == posts
    assert len(fake.state.functions) == 1


def test_killed_upload_resumes_with_only_the_missing_samples(fake, tmp_path, split, monkeypatch):
    svc = service(tmp_path, upload_concurrency=4)
    real = svc._upload_one
    calls = {"n": 0}

    def dies_after_five(function_id, sample):
        calls["n"] += 1
        if calls["n"] > 5:
            raise KeyboardInterrupt("killed")
        return real(function_id, sample)

    monkeypatch.setattr(svc, "_upload_one", dies_after_five)
    with pytest.raises(KeyboardInterrupt):
        svc.upload(split)
    (fn,) = fake.state.functions.values()
    on_server = len(fake.samples(fn.id))
    assert 0 < on_server < len(split.all)
    with (svc.ctx.state_dir / SAMPLES_FILE).open() as fh:
        recorded = len(list(csv.DictReader(fh)))
    before = len(fake.requests("POST", r"/v1/functions/[^/]+/samples"))

    service(tmp_path).upload(split)
    resent = len(fake.requests("POST", r"/v1/functions/[^/]+/samples")) - before
    assert resent == len(split.all) - recorded  # only what the record lacks
    assert len(fake.samples(fn.id)) == len(split.all)  # exactly the ablation, no duplicate
    assert len(fake.state.functions) == 1


def test_a_failing_sample_is_reported_and_only_it_is_retried(fake, tmp_path, split):
    bad = split.train[0]
    good = bad.path.read_bytes()
    bad.path.write_bytes(b"truncated")
    with pytest.raises(ServiceCallError, match=f"1 of {len(split.all)} samples failed"):
        service(tmp_path).upload(split)
    bad.path.write_bytes(good)
    before = len(fake.requests("POST", r"/v1/functions/[^/]+/samples"))
    svc = service(tmp_path)
    svc.upload(split)
    assert len(fake.requests("POST", r"/v1/functions/[^/]+/samples")) - before == 1
    assert len(fake.samples(function_of(svc))) == len(split.all)


def test_lost_state_recovers_through_function_name_and_409(fake, tmp_path, split):
    service(tmp_path).upload(split)
    (fn,) = fake.state.functions.values()
    for f in paths.model_dir("nyckel", "digits", 5).iterdir():
        f.unlink()
    before = len(fake.requests("POST", r"/v1/functions/[^/]+/samples"))
    svc = service(tmp_path)
    svc.upload(split)
    assert len(fake.state.functions) == 1 and function_of(svc) == fn.id
    assert len(fake.samples(fn.id)) == len(split.all)
    with (svc.ctx.state_dir / SAMPLES_FILE).open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["outcome"] for r in rows} == {"existing"} and len(rows) == len(split.all)
    assert len(fake.requests("POST", r"/v1/functions/[^/]+/samples")) - before == len(split.all)
    model = svc.train(split)  # the upload ended in the lost run: no made-up ~0 s training time
    assert model.train_seconds is None and model.details["train_seconds_note"]


def test_a_changed_ablation_gets_a_new_function_never_a_mixed_one(fake, tmp_path, split):
    service(tmp_path).upload(split)
    reseeded = AblationSplit(split.dataset, split.size, split.classes, split.train[1:],
                             split.val + split.train[:1])  # same files, another train/val cut
    service(tmp_path).upload(reseeded)
    assert len(fake.state.functions) == 1, "a new train/val cut is the same sample set"
    changed = AblationSplit(split.dataset, split.size, split.classes, split.train[:-1], split.val)
    svc = service(tmp_path)
    svc.upload(changed)
    assert len(fake.state.functions) == 2
    assert len(fake.samples(function_of(svc))) == len(changed.all)


def test_labels_are_listed_across_pages_and_never_duplicated(monkeypatch, tmp_path, split):
    with NyckelFake(page_size=2, client_secret=SECRET, train_delay=0.05) as fk:
        monkeypatch.setenv("NYCKEL_API_URL", fk.url)
        monkeypatch.setenv("NYCKEL_CLIENT_ID", "test-client")
        monkeypatch.setenv("NYCKEL_CLIENT_SECRET", SECRET)
        svc = service(tmp_path)
        svc.upload(split)
        svc.api.ensure_labels(function_of(svc), split.classes)  # 409 if it re-created one
        assert len(fk.function(function_of(svc)).labels) == 3


def test_uploads_stay_under_the_rate_limit(fake, tmp_path, split, real_rate_limit):
    svc = service(tmp_path, rps=20, upload_concurrency=8)
    t0 = time.monotonic()
    svc.upload(split)
    elapsed = time.monotonic() - t0
    api_calls = len([r for r in fake.log if r.path != "/connect/token"])
    assert elapsed >= (api_calls - 1) / 20 * 0.95


def test_rate_limiter_spaces_calls(real_rate_limit):
    now, slept = [0.0], []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    limiter = RateLimiter(25, clock=lambda: now[0], sleep=sleep)
    for _ in range(50):
        limiter.acquire()
    assert now[0] == pytest.approx(49 / 25)


def test_upload_retries_429_and_500_then_completes(fake, tmp_path, split):
    fake.server.inject(Fault(429, count=3, headers={"Retry-After": "0"}, path_pattern="samples"))
    fake.server.inject(Fault(500, count=2, path_pattern="samples"))
    svc = service(tmp_path)
    svc.upload(split)
    assert len(fake.samples(function_of(svc))) == len(split.all)


def test_hand_given_function_is_adopted_and_a_bad_one_names_the_key(fake, tmp_path, split):
    fn = fake.state.create_function("mine", "Image", "Classification")
    svc = service(tmp_path, endpoints={"digits": {5: fn.id}})
    model = svc.adopt(svc.hand_given())
    assert model.ids == {"function_id": fn.id} and model.details["function_name"] == "mine"
    assert len(fake.state.functions) == 1 and not fake.samples(fn.id)
    with pytest.raises(UserError, match=r"nyckel\.endpoints\.digits\.5.*no function"):
        service(tmp_path, endpoints={"digits": {"5": "function_nope"}}).adopt("function_nope")
    text = fake.state.create_function("words", "Text", "Classification")
    with pytest.raises(UserError, match=r"nyckel\.endpoints\.digits\.5.*Text/Classification"):
        service(tmp_path, endpoints={"digits": {5: text.id}}).adopt(text.id)


def test_bad_settings_name_their_key(tmp_path):
    with pytest.raises(UserError, match=r"nyckel\.train_timout"):
        service(tmp_path, train_timout=5)
    with pytest.raises(UserError, match=r"nyckel\.rps"):
        service(tmp_path, rps=100)
    with pytest.raises(UserError, match=r"nyckel\.endpoints\.digits\.5"):
        service(tmp_path, endpoints={"digits": {5: "not an id"}})
    with pytest.raises(UserError, match=r"nyckel\.functions"):  # the old key: renamed
        service(tmp_path, functions={"digits": {5: "function_x"}})


def test_concurrent_trainings_default_to_what_the_account_limit_lets_upload_at_once(tmp_path):
    """Nyckel documents no limit on trainings in flight; their uploads share the account's 25
    requests in flight, so the default is as many uploads as fit in them."""
    assert service(tmp_path).settings.max_concurrent_trainings == 3  # 25 // 8
    assert service(tmp_path, upload_concurrency=5).settings.max_concurrent_trainings == 5
    assert service(tmp_path, max_concurrent_trainings=10).settings.max_concurrent_trainings == 10
    with pytest.raises(UserError, match=r"nyckel\.max_concurrent_trainings"):
        service(tmp_path, max_concurrent_trainings=0)


def test_runs_of_one_account_share_its_rate_limit(fake, tmp_path, monkeypatch):
    """`mlbench submit` uploads to several functions at once and `mlbench measure` scores them
    side by side: Nyckel's 25 requests a second are the account's, so every run's calls go
    through one limiter; another account has its own."""
    first, second = service(tmp_path, 5), service(tmp_path, 20)
    assert first.api.limiter is second.api.limiter
    monkeypatch.setenv("NYCKEL_CLIENT_ID", "another-client")
    assert service(tmp_path, 5).api.limiter is not first.api.limiter


# -- train -----------------------------------------------------------------------------------------
def test_train_waits_for_the_status_and_times_it(fake, tmp_path, split):
    fake.state.train_delay = 0.4
    svc = service(tmp_path)
    svc.upload(split)
    model = svc.train(split)
    assert model.ids == {"function_id": function_of(svc)}
    assert 0.25 <= model.train_seconds < 5
    assert fake.requests("GET", r"/v0\.9/functions/[^/]+/metrics"), "official client's status"
    assert model.details["samples"] == len(split.all)


def test_a_rerun_of_train_keeps_the_measured_time(fake, tmp_path, split):
    svc = service(tmp_path)
    svc.upload(split)
    first = svc.train(split)
    time.sleep(0.3)
    again = service(tmp_path)
    again.upload(split)  # nothing new to send
    assert again.train(split).train_seconds == first.train_seconds


def test_train_survives_a_token_expired_server_side(fake, tmp_path, split):
    svc = service(tmp_path)
    svc.upload(split)
    fake.state.expire_tokens()  # the official client's first status read gets a 401
    assert svc.train(split).ids["function_id"] == function_of(svc)


def test_train_timeout_is_a_clear_error(fake, tmp_path, split):
    fake.state.train_delay = float("inf")
    svc = service(tmp_path, train_timeout=0.3)
    svc.upload(split)
    with pytest.raises(ServiceError, match="train_timeout") as exc:
        svc.train(split)
    assert "\n" not in str(exc.value) and "rerun" in str(exc.value)


# -- predict ---------------------------------------------------------------------------------------
def test_predict_maps_label_and_confidence_and_never_captures(fake, tmp_path, split):
    svc, model = trained(tmp_path, split)
    count = len(fake.samples(model.ids["function_id"]))
    for i, (cls, rgb) in enumerate(COLOURS.items()):
        pred = svc.predict(image_bytes(rgb, 500 + i, fmt="PNG"))
        assert pred.label == cls and 0.5 < pred.confidence <= 1 and pred.attempts == 1
    invokes = fake.requests("POST", r"/v1/functions/[^/]+/invoke")
    assert [r.query["capture"] for r in invokes] == [["false"]] * 3
    assert [i.capture for i in fake.state.invocations] == [False] * 3
    assert len(fake.samples(model.ids["function_id"])) == count, "no test image became a sample"
    assert json.loads(invokes[0].body)["data"].startswith("data:image/png;base64,")


def test_the_fake_captures_by_default_as_nyckel_does(fake, tmp_path, split):
    import requests

    svc, model = trained(tmp_path, split)
    fid = model.ids["function_id"]
    before = len(fake.samples(fid))
    resp = requests.post(f"{fake.url}/v1/functions/{fid}/invoke", timeout=5,
                         headers={"Authorization": f"Bearer {svc.api.tokens.token()}"},
                         json={"data": data_uri(image_bytes((1, 2, 3), 1234))})
    assert resp.status_code == 200 and len(fake.samples(fid)) == before + 1


def test_twenty_percent_429_503_every_image_gets_a_prediction(fake, tmp_path, split):
    svc, _ = trained(tmp_path, split)
    fake.server.inject(Fault(429, fraction=0.1, headers={"Retry-After": "0"},
                             path_pattern="invoke"))
    fake.server.inject(Fault(503, fraction=0.1, path_pattern="invoke"))
    preds = [svc.predict(image_bytes(COLOURS["green"], 700 + i)) for i in range(40)]
    assert all(p.label == "green" for p in preds)
    assert sum(p.attempts for p in preds) > 40 and max(p.attempts for p in preds) > 1


def test_async_predictions_for_the_load_test(fake, tmp_path, split):
    import aiohttp

    svc, _ = trained(tmp_path, split)
    fake.server.inject(Fault(429, fraction=0.2, headers={"Retry-After": "0"},
                             path_pattern="invoke"))

    async def run():
        async with aiohttp.ClientSession() as session:
            return await asyncio.gather(*(
                svc.apredict(session, image_bytes(COLOURS["blue"], 800 + i)) for i in range(12)
            ))

    preds = asyncio.run(run())
    assert all(p.label == "blue" for p in preds)
    assert all(i.capture is False for i in fake.state.invocations)


def test_a_slow_answer_times_out_and_is_retried(fake, tmp_path, split):
    svc, _ = trained(tmp_path, split)
    svc.retry = RetryPolicy(max_attempts=3, base_delay=0.005, max_delay=0.02, timeout=0.3)
    fake.server.inject(Fault(200, count=1, delay=1.0, path_pattern="invoke"))
    pred = svc.predict(image_bytes(COLOURS["red"], 77))
    assert pred.label == "red" and pred.attempts == 2


def test_nothing_is_billed_by_the_hour_so_teardown_stops_nothing(fake, tmp_path, split):
    """A function answers invokes without being deployed: teardown (the pipeline's last stage)
    has nothing to stop, records no deployment, and `mlbench status` lists nothing."""
    (tmp_path / "params.yaml").write_text("services: [local, nyckel]\n")
    svc, model = trained(tmp_path, split)
    calls = len(fake.server.log)
    assert svc.teardown(model) == "nothing billed"
    assert len(fake.server.log) == calls  # not one call
    assert not paths.deployment_file("nyckel", "digits", 5).exists()
    result = mlbench("status")
    assert result.exit_code == 0 and "nothing deployed" in result.output, result.output


def test_a_non_image_is_a_call_error_not_a_crash(fake, tmp_path, split):
    svc, _ = trained(tmp_path, split)
    with pytest.raises(ServiceCallError):
        svc.predict(b"definitely not an image")


def test_secrets_and_tokens_never_reach_state_or_model(fake, tmp_path, split):
    svc, model = trained(tmp_path, split)
    svc.predict(image_bytes(COLOURS["red"], 42))
    written = json.dumps(model.to_json()) + "".join(
        p.read_text() for p in svc.ctx.state_dir.rglob("*") if p.is_file()
    )
    assert SECRET not in written
    assert not any(tok in written for tok in fake.state.tokens)
    assert SECRET not in repr(svc.api.tokens._credentials)


def test_status_poll_retries_through_the_shared_policy(fake, tmp_path, split):
    svc = service(tmp_path)
    svc.upload(split)
    fake.server.inject(Fault(500, count=2, path_pattern="v0.9"))
    fake.server.inject(Fault(429, count=2, headers={"Retry-After": "0"}, path_pattern="v0.9"))
    assert svc.train(split).ids["function_id"] == function_of(svc)
    assert len(fake.requests("GET", r"/v0\.9/.*")) >= 4 + 2


def test_status_of_a_deleted_function_is_a_call_error_not_a_crash(fake, tmp_path, split):
    svc = service(tmp_path)
    svc.upload(split)
    with fake.state.lock:
        fake.state.functions.clear()
    with pytest.raises(ServiceCallError, match="no image-classification function") as exc:
        svc.api.is_trained(function_of(svc))
    assert exc.value.status == 404
    svc = service(tmp_path)
    svc.upload(split)
    svc.api.is_trained(function_of(svc))  # the official client's object is made...
    with fake.state.lock:
        fake.state.functions.clear()  # ... then the function goes
    with pytest.raises(ServiceCallError, match="HTTP 404") as exc:
        svc.api.is_trained(function_of(svc))
    assert exc.value.status == 404
    text = fake.state.create_function("words", "Text", "Classification")
    with pytest.raises(ServiceCallError, match="no image-classification function"):
        svc.api.is_trained(text.id)  # never the official client's AssertionError


# -- commands --------------------------------------------------------------------------------------
def test_create_command_prints_and_records_the_id(fake, tmp_path):
    (tmp_path / "params.yaml").write_text("services: [local, nyckel]\n")
    result = mlbench("nyckel", "create", "my-fn", "--dataset", "digits", "--ablation", "5")
    assert result.exit_code == 0, result.output
    function_id = result.output.strip().splitlines()[-1]
    assert fake.function(function_id).name == "my-fn"
    log = json.loads((tmp_path / "results" / "nyckel" / "functions.json").read_text())
    assert log[function_id]["name"] == "my-fn" and log[function_id]["dataset"] == "digits"
    state = json.loads((paths.model_dir("nyckel", "digits", 5) / STATE_FILE).read_text())
    assert state["function_id"] == function_id  # `mlbench train nyckel digits` will use it
    assert state["chosen_by_hand"] is True


def test_status_command_lists_recorded_functions(fake, tmp_path, split):
    (tmp_path / "params.yaml").write_text("services: [local, nyckel]\n")
    svc = service(tmp_path)
    svc.upload(split)
    fid = function_of(svc)
    with fake.state.lock:
        fake.function(fid).trained_at = float("inf")  # still training
    result = mlbench("nyckel", "status")
    assert result.exit_code == 0, result.output
    assert f"digits 5: function {fid}: {len(split.all)} samples recorded, not trained yet" \
        in result.output
    with fake.state.lock:
        fake.function(fid).trained_at = 0.0
    assert "trained" in mlbench("nyckel", "status", "digits", "5").output
    assert mlbench("nyckel", "status", "digits", "20").exit_code == 2  # nothing recorded there


def test_upload_command_then_train_records_the_model_once(fake, digits_copy):
    """`mlbench nyckel upload --wait` waits but writes no model.json; `mlbench train` records
    it, with the training time the upload measured, and sends nothing again."""
    project_params(digits_copy)
    result = mlbench("nyckel", "upload", "digits", "5", "--wait")
    assert result.exit_code == 0, result.output
    assert "trained; training seconds:" in result.output
    assert "mlbench train nyckel digits" in result.output
    assert not paths.model_json("nyckel", "digits", 5).exists()
    state = json.loads((paths.model_dir("nyckel", "digits", 5) / STATE_FILE).read_text())
    posts = len(fake.requests("POST", r"/v1/functions/[^/]+/samples"))

    result = mlbench("train", "nyckel", "digits")
    assert result.exit_code == 0, result.output
    model = ModelRef.load(paths.model_json("nyckel", "digits", 5))
    assert model.ids == {"function_id": state["function_id"]}
    assert model.train_seconds == state["train_seconds"] and model.details["fingerprint"]
    assert len(fake.requests("POST", r"/v1/functions/[^/]+/samples")) == posts
    assert len(fake.state.functions) == 1


def test_upload_command_uses_the_hand_given_function(fake, digits_copy):
    fn = fake.state.create_function("by-hand", "Image", "Classification")
    project_params(digits_copy, endpoints={"digits": {5: fn.id}})
    result = mlbench("nyckel", "upload", "digits", "5")
    assert result.exit_code == 0, result.output
    assert len(fake.samples(fn.id)) == 50 and len(fake.state.functions) == 1
    result = mlbench("train", "nyckel", "digits")  # hand-given: adopted, nothing uploaded
    assert result.exit_code == 0, result.output
    assert ModelRef.load(paths.model_json("nyckel", "digits", 5)).ids == {"function_id": fn.id}


def test_uploaded_samples_equal_the_exported_seed_file(fake, digits_copy):
    from mlbench.data.ablate import load_split

    project_params(digits_copy)
    svc = service(digits_copy)
    svc.upload(load_split("digits", 5))
    fn = fake.function(function_of(svc))
    uploaded = sorted((s.external_id, fn.labels[s.label_id].name) for s in fn.samples.values())
    with paths.ablation_csv("digits", "train", 5, "nyckel").open(newline="") as fh:
        exported = sorted(tuple(row) for row in csv.reader(fh))  # the seed's: no header line
    assert uploaded == exported and len(uploaded) == 50


def test_missing_sdk_is_one_line_naming_the_extra(tmp_path, monkeypatch, split):
    monkeypatch.setenv("NYCKEL_CLIENT_ID", "test-client")
    monkeypatch.setenv("NYCKEL_CLIENT_SECRET", SECRET)
    monkeypatch.setitem(sys.modules, "nyckel", None)
    for module in ("mlbench.services.nyckel.service", "mlbench.services.nyckel.api"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    with pytest.raises(MissingExtra, match=r"pip install 'mlbench\[nyckel\]'"):
        service(tmp_path)
    (tmp_path / "params.yaml").write_text("services: [local, nyckel]\n")
    paths.model_dir("nyckel", "digits", 5).mkdir(parents=True)
    result = mlbench("nyckel", "status")  # the CLI itself starts without the SDK
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert "pip install 'mlbench[nyckel]'" in result.output


def test_seed_script_create_runs_as_a_script(fake, tmp_path):
    """`python scripts/nyckel.py` must not shadow the official `nyckel` package it imports."""
    import os
    import subprocess

    script = Path(__file__).resolve().parents[1] / "scripts" / "nyckel.py"
    (tmp_path / "params.yaml").write_text("services: [local, nyckel]\n")
    run = subprocess.run([sys.executable, str(script), "create", "seed-fn"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert run.returncode == 0, run.stderr
    assert fake.function(run.stdout.strip().splitlines()[-1]).name == "seed-fn"
    # As a script its folder is first on sys.path: the official package must still win.
    probe = (f"import runpy, sys; sys.path.insert(0, {str(script.parent)!r}); "
             f"runpy.run_path({str(script)!r}, run_name='probe'); "
             "import nyckel; print(nyckel.ImageClassificationFunction.__module__)")
    run = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip().startswith("nyckel."), run.stderr


def test_seed_script_upload_then_invoke_scores_the_given_function(fake, digits_copy):
    """The seed's by-hand path: create, upload (waits for training), invoke: the harness
    records the function's model.json (with the upload's training time) and scores it."""
    from scripts.nyckel import main

    project_params(digits_copy, endpoints={})
    fn = fake.state.create_function("seed-fn", "Image", "Classification")
    assert main(["upload", "digits", fn.id, "5"]) == 0
    state = json.loads((paths.model_dir("nyckel", "digits", 5) / STATE_FILE).read_text())
    assert state["function_id"] == fn.id and len(fake.samples(fn.id)) == 50
    assert main(["invoke", "digits", fn.id, "5"]) == 0
    model = ModelRef.load(paths.model_json("nyckel", "digits", 5))
    assert model.ids == {"function_id": fn.id}
    assert model.train_seconds == state["train_seconds"] and model.details["fingerprint"]
    rows = (paths.evals_dir("nyckel", "digits") / "5" / "predictions.csv").read_text()
    assert len(rows.splitlines()) > 1
    assert all(i.capture is False for i in fake.state.invocations)


def test_create_command_without_credentials_is_one_line(fake, tmp_path, monkeypatch):
    monkeypatch.delenv("NYCKEL_CLIENT_SECRET")
    (tmp_path / "params.yaml").write_text("services: [local, nyckel]\n")
    result = mlbench("nyckel", "create", "my-fn")
    assert result.exit_code == 2 and "NYCKEL_CLIENT_SECRET" in result.output
    assert fake.log == []
