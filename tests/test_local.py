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


# -- issue 14, finding 3: a dead model server is noticed at once ----------------------------------
class _NoWaits:
    """Records every wait the retry policy would take (none may happen for a dead server)."""

    waits: list[float] = []


def _recording_policy():
    from dataclasses import dataclass

    from mlbench.retry import RetryPolicy

    @dataclass(frozen=True)
    class Recording(RetryPolicy):
        def delay(self, error, attempt):
            _NoWaits.waits.append(super().delay(error, attempt))
            return 0.0

    _NoWaits.waits = []
    return Recording()


def test_finding3_a_dead_server_is_restarted_once_then_one_line(digits_copy):
    from mlbench.errors import ServiceError
    from mlbench.services.http import CallAgain

    split = load_split("digits", 5)
    svc = _service("hog", 5)
    svc.upload(split)
    svc.connect(svc.train(split))
    svc.retry = _recording_policy()
    image = load_test_images("digits")[0].path.read_bytes()
    assert svc.predict(image).label in split.classes
    first = svc._server.proc.pid
    os.kill(first, signal.SIGKILL)
    with pytest.raises(CallAgain):  # restarted: the harness calls again, on a fresh timer
        svc.predict(image)
    assert svc.restarts == 1 and svc._server.proc.pid != first
    assert svc.predict(image).label in split.classes
    os.kill(svc._server.proc.pid, signal.SIGKILL)
    with pytest.raises(ServiceError) as caught:
        svc.predict(image)
    message = str(caught.value)
    assert not isinstance(caught.value, ServiceCallError)  # never an error row
    assert "killed by SIGKILL, after 1 restart(s)" in message and "\n" not in message
    assert "mlbench evaluate local digits" in message
    assert _NoWaits.waits == []  # noticed at the first refused connection: no retry waits
    svc.close()


def test_finding3_a_dead_server_ends_the_load_test_in_one_line(digits_copy):
    from mlbench.bench.load import drive
    from mlbench.errors import ServiceError
    from mlbench.params import LoadParams

    split = load_split("digits", 5)
    svc = _service("hog", 5)
    svc.upload(split)
    svc.connect(svc.train(split))
    svc.retry = _recording_policy()
    image = load_test_images("digits")[0].path.read_bytes()
    os.kill(svc._server.proc.pid, signal.SIGKILL)
    with pytest.raises(ServiceError, match="killed by SIGKILL during the load test") as caught:
        drive(svc, [image], LoadParams(calls=20, concurrency=4, mode="sustained", timeout=5))
    assert not isinstance(caught.value, ServiceCallError) and "\n" not in str(caught.value)
    assert _NoWaits.waits == []
    svc.close()


def test_finding3_evaluate_stops_without_error_rows_and_a_rerun_finishes(digits_copy,
                                                                         monkeypatch):
    import pandas as pd

    from mlbench.bench.evaluate import run_evaluation
    from mlbench.bench.train import run_training
    from mlbench.data.export import write_test_table
    from mlbench.errors import ServiceError
    from mlbench.params import load_params
    from mlbench.services.local.service import LocalService
    from tests.test_evaluate import _use_hog

    _use_hog(digits_copy, test_per_class=3)
    write_test_table("digits", 3, 0)
    run_training(load_params(), "local", "digits")
    original, calls = LocalService.predict, []

    def killing(self, image):
        calls.append(1)
        if len(calls) in (8, 16):  # the server dies, and dies again after its restart
            os.kill(self._server.proc.pid, signal.SIGKILL)
        return original(self, image)

    monkeypatch.setattr(LocalService, "predict", killing)
    with pytest.raises(ServiceError, match="after 1 restart"):
        run_evaluation(load_params(), "local", "digits")
    out = paths.predictions_csv("local", "digits", 5)
    table = pd.read_csv(out, keep_default_na=False)
    # calls 1-7 scored, call 8 found the server dead (restarted: the image called again as
    # call 9), 9-15 scored, 16 found it dead again: stop. Nothing stored for either death.
    assert len(table) == 14 and (table["error"] == "").all()
    monkeypatch.setattr(LocalService, "predict", original)
    run_evaluation(load_params(), "local", "digits")
    final = pd.read_csv(out, keep_default_na=False)
    assert len(final) == 30 and final["image"].is_unique and (final["error"] == "").all()


# -- issue 14, finding 10: the head trains without val images or with one image per class --------
def _accuracy(svc, split, tests) -> float:
    right = sum(svc.predict(t.path.read_bytes()).label == t.class_name for t in tests)
    assert all(svc.predict(t.path.read_bytes()).label in split.classes for t in tests[:3])
    return right / len(tests)


def test_finding10_val_fraction_0_picks_c_by_cross_validation(digits_copy):
    from mlbench.data.ablate import ablate_dataset

    ablate_dataset("digits", (5, 20), seed=0, val_fraction=0.0)
    split = load_split("digits", 20)
    assert not split.val
    svc = _service("hog", 20)
    svc.upload(split)
    model = svc.train(split)
    assert model.details["val_images"] == 0 and model.details["C_selected_by"] == "cv"
    assert model.details["val_accuracy"] is None
    svc.connect(model)
    assert _accuracy(svc, split, load_test_images("digits")[::9]) > 0.6  # chance is 0.1
    svc.close()


@pytest.mark.parametrize("features", ["hog", "auto"])
def test_finding10_one_image_per_class_trains_a_usable_head(digits_copy, features):
    from mlbench.data.ablate import ablate_dataset

    ablate_dataset("digits", (1, 2), seed=0, val_fraction=0.2)
    tests = load_test_images("digits")[::9]
    for n, selected in ((1, "default"), (2, "val")):
        split = load_split("digits", n)
        svc = _service(features, n)
        svc.upload(split)
        model = svc.train(split)
        assert model.details["train_images"] == 10 and model.details["C_selected_by"] == selected
        if features == "auto":  # one image per class cannot be cross-validated: the default
            assert model.details["features"] == "efficientnet-lite0" or n > 1
        svc.connect(model)
        assert _accuracy(svc, split, tests) > 0.2  # one example per class, far above 0.1
        svc.close()
