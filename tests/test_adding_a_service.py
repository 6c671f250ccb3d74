"""docs/adding-a-service.md is true: its code, written out as a package, is a working service.

The guide's code blocks become `mlbench/services/acme/` (found by the registry like any
service: no registry, CLI or params code names it), then train, evaluate and the vendor
commands run against a fake of the guide's Acme API on 127.0.0.1.
"""

from __future__ import annotations

import io
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

import mlbench.services
from mlbench import paths
from mlbench.errors import UserError
from mlbench.io import read_json
from mlbench.project import parse_checked_params
from mlbench.services import registry
from tests.conftest import REPO
from tests.fakes.http_base import BadRequest, FakeServer, Request, Response

GUIDE = REPO / "docs" / "adding-a-service.md"
BLOCK = re.compile(r"```python\n# (mlbench/services/acme/\S+)\n(.*?)```", re.S)
TOKEN = "acme-test-token"


def _mean(data: bytes) -> float:
    with Image.open(io.BytesIO(data)) as img:
        return float(np.asarray(img.convert("L")).mean())


class AcmeFake:
    """The guide's four calls; a model predicts the label of the training image whose mean
    brightness is nearest (crude, but a real answer from the uploaded images)."""

    def __init__(self, polls_to_train: int = 2, predict_delay: float = 0.0,
                 train_time: float = 0.0) -> None:
        self.server = FakeServer()
        self.images: dict[str, dict[str, tuple[str, float]]] = {}
        self.models: dict[str, dict] = {}
        self.polls: dict[str, int] = {}
        self.polls_to_train = polls_to_train
        self.predict_delay = predict_delay
        self.train_time = train_time  # seconds from creation to trained (at the earliest)
        self.ready_when: Callable[[dict], bool] = lambda model: True  # a test's extra condition
        self.last_image_at = 0.0  # time.monotonic() of the last image received
        self.training_at_once = 0  # the most models ever training at the same time
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()
        route = self.server.route
        route("POST", r"/v1/datasets/(?P<ds>[^/]+)/images")(self.add_image)
        route("POST", r"/v1/models")(self.create_model)
        route("GET", r"/v1/models/(?P<id>[^/]+)")(self.get_model)
        route("POST", r"/v1/models/(?P<id>[^/]+)/predict")(self.predict)

    def _auth(self, req: Request) -> None:
        if req.header("Authorization") != f"Bearer {TOKEN}":
            raise BadRequest("bad token", 401)

    def add_image(self, req: Request) -> Response:
        self._auth(req)
        images = self.images.setdefault(req.match["ds"], {})
        name = req.query["name"][0]
        if name in images:
            return Response.json({"error": "exists"}, 409)
        images[name] = (req.query["label"][0], _mean(req.body))
        self.last_image_at = time.monotonic()
        return Response.json({"name": name}, 201)

    def create_model(self, req: Request) -> Response:
        self._auth(req)
        body = req.json()
        if body["dataset"] not in self.images:
            raise BadRequest("no such dataset", 404)
        with self._lock:
            model_id = f"m{len(self.models) + 1}"
            self.models[model_id] = {"id": model_id, "dataset": body["dataset"],
                                     "status": "training", "train_seconds": None,
                                     "_created": time.monotonic()}
            training = sum(m["status"] == "training" for m in self.models.values())
            self.training_at_once = max(self.training_at_once, training)
        return Response.json({"id": model_id, "status": "training"}, 201)

    def get_model(self, req: Request) -> Response:
        self._auth(req)
        with self._lock:
            model = self.models[req.match["id"]]
            self.polls[model["id"]] = self.polls.get(model["id"], 0) + 1
            if self.polls[model["id"]] >= self.polls_to_train and \
                    time.monotonic() - model["_created"] >= self.train_time and \
                    self.ready_when(model):  # trained by then
                model.update(status="ready", train_seconds=12.5)
            return Response.json({k: v for k, v in model.items() if not k.startswith("_")})

    def predict(self, req: Request) -> Response:
        self._auth(req)
        if not req.header("Content-Type", ).startswith("image/"):
            raise BadRequest("send the image with its content type", 415)
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(self.predict_delay)
            images = self.images[self.models[req.match["id"]]["dataset"]].values()
            mean = _mean(req.body)
            label = min(images, key=lambda item: abs(item[1] - mean))[0]
            return Response.json({"label": label, "confidence": 0.5})
        finally:
            with self._lock:
                self.in_flight -= 1


@pytest.fixture
def acme_package(tmp_path, monkeypatch):
    """The guide's blocks as a service package, on the services package's search path."""
    blocks = BLOCK.findall(GUIDE.read_text())
    names = [Path(path).name for path, _code in blocks]
    assert names == ["__init__.py", "settings.py", "api.py", "service.py", "cli.py"]
    root = tmp_path / "plugin"
    for path, code in blocks:
        target = root / Path(path).relative_to("mlbench/services")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code)
    monkeypatch.setattr(mlbench.services, "__path__", [*mlbench.services.__path__, str(root)])
    registry.service_names.cache_clear()
    yield root
    registry.service_names.cache_clear()
    for name in [m for m in sys.modules if m.startswith("mlbench.services.acme")]:
        del sys.modules[name]


@pytest.fixture
def acme(monkeypatch):
    monkeypatch.setenv("ACME_TOKEN", TOKEN)
    fake = AcmeFake()
    with fake.server:
        yield fake


@pytest.fixture
def fake(acme):
    return acme.server


def test_the_guides_service_is_found_validated_trained_scored_and_listed(
        acme_package, fake, digits_copy):
    from mlbench.bench.evaluate import run_evaluation
    from mlbench.bench.train import run_training
    from mlbench.data.export import write_test_table

    assert "acme" in registry.service_names()
    with pytest.raises(UserError, match=r"^params.yaml: acme.epochs: must be an integer"):
        parse_checked_params({"services": ["local", "acme"], "acme": {"epochs": 0}})

    block = {"url": fake.url, "epochs": 3, "poll_seconds": 0.01, "train_timeout": 10}
    data = yaml.safe_load(Path("params.yaml").read_text())
    data.update(services=["local", "acme"], ablation=5, test_per_class=3, acme=block)
    Path("params.yaml").write_text(yaml.safe_dump(data))
    params = parse_checked_params(data)
    write_test_table("digits", 3, 0)

    [model] = run_training(params, "acme", "digits")
    assert model.ids == {"model_id": "m1"} and model.train_seconds == 12.5
    assert read_json(paths.model_json("acme", "digits", 5))["details"]["fingerprint"]
    uploads = [r for r in fake.log if r.path.endswith("/images")]
    assert len(uploads) == 50  # 5 per class: train + val
    run_training(params, "acme", "digits")  # unchanged inputs: reused, nothing sent
    assert len([r for r in fake.log if r.path == "/v1/models"]) == 1

    [metrics] = run_evaluation(params, "acme", "digits")
    assert metrics["images"] == 30 and metrics["errors"] == 0
    table = pd.read_csv(paths.predictions_csv("acme", "digits", 5), keep_default_na=False)
    assert set(table["predicted_class"]) <= set(Path("data/digits/classes.txt").read_text()
                                                .split())
    predicts = [r for r in fake.log if r.path.endswith("/predict")]
    # 30 to score the test set, then the same 30 called one at a time for the latency
    assert len(predicts) == 60 and predicts[0].header("Content-Type") == "image/png"
    assert metrics["latency_source"] == "single-stream pass of 30 images"

    result = CliRunner().invoke(registry.command_apps()["acme"], ["status"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "digits 5: trained"
