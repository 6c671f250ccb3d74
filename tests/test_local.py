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

    # one call at a time (the seed's way), so the calls the server dies at are exact
    _use_hog(digits_copy, test_per_class=3, evaluate={"concurrency": 1})
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


def test_issue11_calls_in_flight_restart_a_dead_server_once(digits_copy, monkeypatch):
    """`evaluate` scores 8 calls at a time: every call in flight finds the killed server
    dead, yet it is restarted once and each of them is called again; a second death stops the
    run in one line, without an error row, and a rerun scores the rest exactly once."""
    import threading

    import pandas as pd

    from mlbench.bench.evaluate import run_evaluation
    from mlbench.bench.train import run_training
    from mlbench.data.export import write_test_table
    from mlbench.errors import ServiceError
    from mlbench.params import load_params
    from mlbench.services.local.service import LocalService
    from tests.test_evaluate import _use_hog

    _use_hog(digits_copy, test_per_class=3, evaluate={"concurrency": 8})
    write_test_table("digits", 3, 0)
    run_training(load_params(), "local", "digits")
    original, lock, calls, servers = LocalService.predict, threading.Lock(), [], []

    def killing(self, image):
        with lock:
            calls.append(1)
            if len(calls) in (10, 24):  # the server dies, then its restarted successor
                servers.append(self._server.proc.pid)
                os.kill(self._server.proc.pid, signal.SIGKILL)
        return original(self, image)

    monkeypatch.setattr(LocalService, "predict", killing)
    with pytest.raises(ServiceError, match="after 1 restart") as caught:
        run_evaluation(load_params(), "local", "digits")
    assert not isinstance(caught.value, ServiceCallError) and "\n" not in str(caught.value)
    assert len(servers) == 2 and servers[0] != servers[1]  # the second kill hit the restart
    out = paths.predictions_csv("local", "digits", 5)
    table = pd.read_csv(out, keep_default_na=False)
    assert (table["error"] == "").all() and table["image"].is_unique
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


# -- issue 11, item 7: the server at the model's speed, with the same scores --------------------
def _photo_jpegs() -> list[bytes]:
    """Real photographs as JPEGs: 512x512 and 512x384 crops of scikit-learn's two samples, and
    one grayscale."""
    import io

    from PIL import Image
    from sklearn.datasets import load_sample_images

    out = []
    for photo in load_sample_images().images:
        for size, crop in (((512, 512), photo[:427, :427]), ((512, 384), photo[:, :569])):
            buf = io.BytesIO()
            Image.fromarray(crop).resize(size, Image.LANCZOS).save(buf, format="JPEG",
                                                                   quality=85)
            out.append(buf.getvalue())
    buf = io.BytesIO()
    Image.fromarray(photo).convert("L").save(buf, format="JPEG")
    return [*out, buf.getvalue()]


def test_issue11_served_scores_equal_predict_scores_alone_and_in_flight(digits_copy):
    """Alone, a call runs on the session over every core; ten in flight run on the one-thread
    sessions: either way the server answers exactly `LocalModel.predict_scores`."""
    from concurrent.futures import ThreadPoolExecutor

    from mlbench.services.local.model import LocalModel

    split = load_split("digits", 5)
    svc = _service("efficientnet-lite0", 5)
    svc.upload(split)
    model = svc.train(split)
    images = [t.path.read_bytes() for t in load_test_images("digits")[::60]] + _photo_jpegs()
    local = LocalModel.load(Path(model.ids["model_path"]).parent)
    expected = [local.predict_scores(img) for img in images]
    svc.connect(model)
    try:
        alone = [svc.predict(img).scores for img in images]
        with ThreadPoolExecutor(10) as pool:
            in_flight = list(pool.map(lambda img: svc.predict(img).scores, images * 4))
    finally:
        svc.close()
    assert alone == expected
    assert in_flight == expected * 4


def test_issue11_every_session_gives_the_same_features(digits_copy):
    """One-thread, every-core and non-spinning sessions compute the same features bit for bit
    (the server mixes them under load), one image at a time or in a batch."""
    import numpy as np

    from mlbench.services.local.features import make_extractor

    images = [t.path.read_bytes() for t in load_test_images("digits")[::90]] + _photo_jpegs()
    default = make_extractor("efficientnet-lite0")
    batch = default.embed(images)
    for threads, spin in ((1, True), (2, False), (None, True)):
        one = make_extractor("efficientnet-lite0", threads=threads, spin=spin)
        singles = np.concatenate([one.embed([img]) for img in images])
        np.testing.assert_array_equal(singles, batch)


@pytest.mark.parametrize("classes", [2, 3, 10])
def test_issue11_numpy_head_equals_the_pipeline_bit_for_bit(classes):
    import numpy as np

    from mlbench.services.local.head import NumpyHead, fit_head

    rng = np.random.default_rng(classes)
    x = rng.standard_normal((12 * classes, 1280)).astype(np.float32)
    y = np.arange(len(x)) % classes
    fitted = fit_head(x[: 9 * classes], y[: 9 * classes], x[9 * classes:], y[9 * classes:])
    fast = NumpyHead.of(fitted.pipeline)
    assert fast is not None and fast.binary == (classes == 2)
    probe = rng.standard_normal((7, 1280)).astype(np.float32) * 3
    np.testing.assert_array_equal(fast.predict_proba(probe), fitted.pipeline.predict_proba(probe))
    for row in probe:
        np.testing.assert_array_equal(fast.predict_proba(row[None]),
                                      fitted.pipeline.predict_proba(row[None]))


def test_issue11_a_head_of_another_shape_keeps_the_pipeline():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from mlbench.services.local.head import NumpyHead

    assert NumpyHead.of(make_pipeline(LogisticRegression())) is None


def test_issue11_jpegs_decode_at_a_reduced_scale_and_others_in_full():
    import io

    from PIL import Image

    from mlbench.services.local.features import decode_for_resize, decode_rgb

    square, wide, *_, gray = _photo_jpegs()
    assert decode_for_resize(square, 224).size == (256, 256)  # 1/2: the smallest scale >= 224
    assert decode_for_resize(wide, 224).size == (320, 240)  # 5/8 keeps the short side >= 224
    assert decode_for_resize(wide, 224).mode == "RGB"
    assert decode_for_resize(gray, 224).mode == "L"
    assert decode_rgb(wide).size == (512, 384)  # the full image (hog's decode)
    small = io.BytesIO()
    Image.new("RGB", (100, 60), (10, 200, 30)).save(small, format="JPEG")
    assert decode_for_resize(small.getvalue(), 224).size == (100, 60)  # never scaled up
    clean = io.BytesIO()
    Image.new("RGB", (600, 600), (10, 200, 30)).save(clean, format="JPEG")
    sos = clean.getvalue().index(b"\xff\xda")
    repaired = clean.getvalue()[:sos] + b"\0\0" + clean.getvalue()[sos:]  # libjpeg warns
    img = decode_for_resize(repaired, 224)  # the strict decoder refuses: PIL, in full
    assert img.mode == "RGB" and img.size == (600, 600)
    assert img.getpixel((5, 5)) == decode_rgb(clean.getvalue()).getpixel((5, 5))
    with pytest.raises(OSError):  # a truncated JPEG is refused (the server answers 400)
        decode_for_resize(square[: len(square) // 2], 224)


def test_issue11_gray_images_preprocess_as_one_channel_to_the_same_numbers(digits_copy):
    """Gray images (the digits, stored as RGB; a gray JPEG) are resized as one channel: the
    input is exactly that of resizing all three channels, as before."""
    import io

    import numpy as np
    import simplejpeg
    from PIL import Image

    from mlbench.services.local.features import EfficientNetLite0, decode_rgb

    def three_channels(data: bytes) -> np.ndarray:  # RGB all the way, as before issue 11
        rgb = Image.fromarray(simplejpeg.decode_jpeg(data, min_width=224, min_height=224)) \
            if data[:2] == b"\xff\xd8" else decode_rgb(data)  # (JPEGs at the same scale)
        x = np.asarray(rgb.resize((224, 224), Image.BICUBIC), np.float32) / 255.0
        return ((x - 0.5) / 0.5).transpose(2, 0, 1)

    digits = [t.path.read_bytes() for t in load_test_images("digits")[::100]]
    assert Image.open(io.BytesIO(digits[0])).mode == "RGB"
    for data in [*digits, _photo_jpegs()[-1]]:
        np.testing.assert_array_equal(EfficientNetLite0(224).preprocess(data),
                                      three_channels(data))
    pixels = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    pixels[:4] = pixels[:4, :, :1]  # gray first rows: the whole image is compared
    png = io.BytesIO()
    Image.fromarray(pixels).save(png, format="PNG")
    colour = png.getvalue()
    np.testing.assert_array_equal(EfficientNetLite0(224).preprocess(colour),
                                  three_channels(colour))


def test_stages_that_do_not_train_start_without_scikit_learn():
    """Every stage process builds the local service; only training needs scikit-learn and
    scipy (1.3 s to import), so submit, measure, evaluate, load, teardown and status start
    without them (they were 2.7 s a stage, doing nothing, before)."""
    code = ("import sys\n"
            "import mlbench.cli, mlbench.bench.schedule, mlbench.bench.measure\n"
            "import mlbench.bench.teardown, mlbench.bench.evaluate, mlbench.bench.load\n"
            "from mlbench.services.registry import service_class\n"
            "service_class('local')\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'sklearn', 'scipy'}))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_a_built_graph_is_found_without_importing_onnx():
    """Each model server and train stage looks the backbone's graph up; only building it needs
    the `onnx` package (0.7 s to import), and the lookup's name is the same as the builder's."""
    from mlbench.services.local.features import export_onnx

    graph = export_onnx(paths.models_cache())  # built once per session
    code = ("import sys\n"
            "from mlbench import paths\n"
            "from mlbench.services.local.features import export_onnx\n"
            "print(export_onnx(paths.models_cache()), 'onnx' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [str(graph), "False"]
