"""The local service: real features, a real head, a real HTTP server that never outlives us."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from mlbench import paths
from mlbench.data.ablate import load_split
from mlbench.data.export import load_test_images
from mlbench.errors import ServiceCallError
from mlbench.project import parse_checked_params
from mlbench.services.registry import open_service


def _service(features: str, n: int):
    return open_service(parse_checked_params({"local": {"features": features}}), "local",
                        "digits", n)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0): look at its state
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def test_train_serve_predict_and_stop(digits_copy):
    split = load_split("digits", 20)
    svc = _service("hog", 20)
    svc.upload(split)
    model = svc.train(split)
    assert model.train_seconds is not None and model.train_seconds >= 0
    assert model.details["features"] == "hog" and model.details["C"] > 0
    assert Path(model.ids["model_path"]).exists()
    assert "secret" not in str(model.to_json()).lower()

    svc.connect(model)
    server = svc._server
    assert server is not None and svc.url.startswith("http://127.0.0.1:")
    tests = load_test_images("digits")[::45]
    right = 0
    for t in tests:
        pred = svc.predict(t.path.read_bytes())
        assert pred.label in split.classes and 0 <= pred.confidence <= 1
        assert pred.scores is not None and abs(sum(pred.scores.values()) - 1) < 1e-6
        assert pred.confidence == max(pred.scores.values())
        right += pred.label == t.class_name
    assert right >= len(tests) // 2  # hog on digits at 20/class is far above chance
    raw = requests.post(svc.url, data=tests[0].path.read_bytes(), timeout=10).json()
    assert [r["score"] for r in raw] == sorted((r["score"] for r in raw), reverse=True)
    with pytest.raises(ServiceCallError, match="HTTP 400"):
        svc.predict(b"this is not an image")
    svc.close()
    assert server.proc.poll() is not None


def test_auto_keeps_the_features_with_better_cross_validation(digits_copy):
    split = load_split("digits", 5)
    svc = _service("auto", 5)
    svc.upload(split)
    model = svc.train(split)
    cv = model.details["cv_accuracy"]
    assert set(cv) == {"efficientnet-lite0", "hog"}
    assert model.details["features"] == max(cv, key=cv.get)


def test_embeddings_are_cached_by_content(digits_copy, shared_cache):
    split = load_split("digits", 5)
    svc = _service("efficientnet-lite0", 5)
    svc.upload(split)
    cache = paths.embeddings_cache()
    files = sorted(cache.rglob("*.npy"))
    before = {f: f.stat().st_mtime_ns for f in files}
    svc.upload(split)
    model = svc.train(split)
    assert model.details["features"] == "efficientnet-lite0"
    assert {f: f.stat().st_mtime_ns for f in sorted(cache.rglob("*.npy"))} == before


def test_model_server_dies_with_a_killed_parent(digits_copy):
    split = load_split("digits", 5)
    svc = _service("hog", 5)
    svc.upload(split)
    model = svc.train(split)
    script = (
        "import sys, time\n"
        "from mlbench.services.base import ModelRef\n"
        "from tests.test_local import _service\n"
        f"svc = _service('hog', 5)\nsvc.connect(ModelRef.from_json({model.to_json()!r}))\n"
        "print(svc._server.proc.pid, flush=True)\ntime.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              cwd=digits_copy, env={**os.environ, "PYTHONPATH": str(
                                  Path(__file__).resolve().parent.parent)})
    server_pid = int(parent.stdout.readline())
    assert _pid_alive(server_pid)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while _pid_alive(server_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _pid_alive(server_pid)
