"""evaluate: timed predictions, appended as they come, resumable after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mlbench import paths
from mlbench.bench.evaluate import run_evaluation
from mlbench.bench.train import run_training
from mlbench.errors import ServiceCallError
from mlbench.io import read_json
from mlbench.params import load_params
from mlbench.services.local.service import LocalService


def _use_hog(project: Path, **extra) -> None:
    f = project / "params.yaml"
    data = yaml.safe_load(f.read_text())
    data["local"] = {"features": "hog"}
    data["ablation"] = 5
    data.update(extra)
    f.write_text(yaml.safe_dump(data))


def _server_pids() -> set[int]:
    out = subprocess.run(["pgrep", "-f", "mlbench/services/local/server.py"], capture_output=True,
                         text=True).stdout
    return {int(p) for p in out.split()}


def test_killed_evaluate_resumes_without_losing_or_doubling_rows(digits_copy):
    _use_hog(digits_copy)
    servers_before = _server_pids()
    run_training(load_params(), "local", "digits")
    out = paths.predictions_csv("local", "digits", 5)
    proc = subprocess.Popen(["mlbench", "evaluate", "local", "digits"], cwd=digits_copy,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300  # a loaded 2-core machine starts the server slowly
    while time.monotonic() < deadline:
        if out.exists() and len(out.read_text().splitlines()) > 120:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = pd.read_csv(out, keep_default_na=False)
    assert 100 < len(partial) < 450

    # no model server outlives the killed stage
    deadline = time.monotonic() + 10
    while _server_pids() - servers_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _server_pids() - servers_before

    calls = []
    original = LocalService.predict

    def counting(self, image):
        calls.append(1)
        return original(self, image)

    LocalService.predict = counting
    try:
        run_evaluation(load_params(), "local", "digits")
    finally:
        LocalService.predict = original
    final = pd.read_csv(out, keep_default_na=False)
    assert len(final) == 450 and final["image"].is_unique
    # every image not yet scored, once, then the single-stream pass (killed before it began)
    timed = pd.read_csv(paths.latency_csv("local", "digits", 5), keep_default_na=False)
    assert len(timed) == 200 and timed["image"].is_unique
    assert len(calls) == 450 - len(partial) + 200
    assert final.head(len(partial)).equals(partial)
    metrics = read_json(paths.run_metrics_json("local", "digits", 5))
    assert metrics["images"] == 450 and metrics["errors"] == 0
    assert 0.3 < metrics["accuracy"] <= 1
    lo, hi = metrics["accuracy_ci95"]
    assert lo <= metrics["accuracy"] <= hi


def test_a_torn_last_row_is_dropped_and_rescored(digits_copy):
    _use_hog(digits_copy, test_per_class=3)
    from mlbench.data.export import write_test_table

    write_test_table("digits", 3, 0)
    run_training(load_params(), "local", "digits")
    run_evaluation(load_params(), "local", "digits")
    out = paths.predictions_csv("local", "digits", 5)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:-2]) + lines[-2][:10])  # kill mid-write
    run_evaluation(load_params(), "local", "digits")
    final = pd.read_csv(out, keep_default_na=False)
    assert len(final) == 30 and final["image"].is_unique


def test_failed_calls_are_error_rows_not_wrong_answers(digits_copy, monkeypatch):
    _use_hog(digits_copy, test_per_class=4)
    from mlbench.data.export import write_test_table

    write_test_table("digits", 4, 0)
    run_training(load_params(), "local", "digits")
    original = LocalService.predict
    seen = []

    def flaky(self, image):
        seen.append(1)
        if len(seen) % 4 == 0:
            raise ServiceCallError("gave up after 6 attempts: HTTP 503", 503, 6)
        return original(self, image)

    monkeypatch.setattr(LocalService, "predict", flaky)
    run_evaluation(load_params(), "local", "digits")
    table = pd.read_csv(paths.predictions_csv("local", "digits", 5), keep_default_na=False)
    errors = table[table["error"] != ""]
    assert len(errors) == 10 and set(errors["predicted_class"]) == {""}
    assert set(errors["attempts"]) == {6}
    metrics = read_json(paths.run_metrics_json("local", "digits", 5))
    assert metrics["errors"] == 10 and metrics["scored"] == 30
    ok = table[table["error"] == ""]
    assert metrics["accuracy"] == (ok["predicted_class"] == ok["actual_class"]).mean()


def test_a_new_model_starts_predictions_afresh(digits_copy):
    _use_hog(digits_copy, test_per_class=2)
    from mlbench.data.export import write_test_table

    write_test_table("digits", 2, 0)
    run_training(load_params(), "local", "digits")
    run_evaluation(load_params(), "local", "digits")
    _use_hog(digits_copy, test_per_class=2, seed=5)  # different ablation sample -> new model
    os.environ.pop("MLBENCH_NOOP", None)
    run_training(load_params(), "local", "digits")
    run_evaluation(load_params(), "local", "digits")
    table = pd.read_csv(paths.predictions_csv("local", "digits", 5), keep_default_na=False)
    assert len(table) == 20 and table["image"].is_unique


# -- issue 14, finding 2: a torn row is never counted as scored; error rows are retried -----------
def _small(project: Path, per_class: int = 3, **extra) -> None:
    from mlbench.data.export import write_test_table

    _use_hog(project, test_per_class=per_class, **extra)
    write_test_table("digits", per_class, 0)
    run_training(load_params(), "local", "digits")


def _counting_predict(monkeypatch) -> list[str]:
    """Count LocalService.predict calls (the image bytes' hash of each)."""
    import hashlib

    calls: list[str] = []
    original = LocalService.predict

    def counting(self, image):
        calls.append(hashlib.sha256(image).hexdigest())
        return original(self, image)

    monkeypatch.setattr(LocalService, "predict", counting)
    return calls


@pytest.mark.parametrize("cut", ["after_image", "mid_number", "empty_last_field",
                                 "before_newline"])
def test_finding2_a_torn_last_row_is_never_counted_as_scored(digits_copy, monkeypatch, capsys,
                                                             cut):
    """The campaign cut the last row of predictions.csv (a kill, a full disk) at various bytes:
    it was read as scored, then cut by the appender, so that image was never scored (449/450);
    cut elsewhere the rerun died on a pandas ValueError."""
    _small(digits_copy)
    run_evaluation(load_params(), "local", "digits")
    out = paths.predictions_csv("local", "digits", 5)
    data = out.read_bytes()
    body, last = data[:-1].rsplit(b"\n", 1)
    fields = last.split(b",")
    kept = {"after_image": fields[0] + b",",
            "mid_number": b",".join(fields[:4])[:-2],
            "empty_last_field": last.rsplit(b",", 1)[0],  # six of the seven fields
            "before_newline": last}[cut]  # every field, the newline missing
    out.write_bytes(body + b"\n" + kept)
    torn_image = fields[0].decode()
    calls = _counting_predict(monkeypatch)
    run_evaluation(load_params(), "local", "digits")
    final = pd.read_csv(out, keep_default_na=False)
    assert len(final) == 30 and final["image"].is_unique and torn_image in set(final["image"])
    assert len(calls) == 1  # only the torn row's image was scored again
    assert (final["error"] == "").all() and read_json(
        paths.run_metrics_json("local", "digits", 5))["images"] == 30
    assert "dropped 1 incomplete or repeated row(s)" in capsys.readouterr().err


def test_finding2_garbled_and_repeated_rows_are_dropped_and_rescored_once(digits_copy,
                                                                          monkeypatch):
    """A garbled line in the middle (disk trouble) and a row written twice (two writers): each
    image ends with exactly one row, and only the garbled one is called again."""
    _small(digits_copy)
    run_evaluation(load_params(), "local", "digits")
    out = paths.predictions_csv("local", "digits", 5)
    lines = out.read_bytes().splitlines(keepends=True)
    garbled = lines[5].split(b",")[0]
    lines[5] = lines[5][:12] + b"\x00\x00\"," + b"\n"
    lines.insert(9, lines[8])
    out.write_bytes(b"".join(lines))
    calls = _counting_predict(monkeypatch)
    run_evaluation(load_params(), "local", "digits")
    final = pd.read_csv(out, keep_default_na=False)
    assert len(final) == 30 and final["image"].is_unique
    assert garbled.decode() in set(final["image"]) and len(calls) == 1


def _with_retry_errors(flag: bool):
    """params.yaml with `evaluate: {retry_errors: <flag>}`, loaded."""
    f = Path("params.yaml")
    data = yaml.safe_load(f.read_text())
    data["evaluate"] = {"retry_errors": flag, "concurrency": 1}  # scoring only: no timing pass
    f.write_text(yaml.safe_dump(data))
    return load_params()


def test_finding2_error_rows_are_retried_on_rerun_and_counted(digits_copy, monkeypatch, capsys):
    _small(digits_copy, evaluate={"concurrency": 1})
    original = LocalService.predict
    seen = []

    def flaky(self, image):
        seen.append(1)
        if len(seen) % 5 == 0:
            raise ServiceCallError("gave up after 6 attempts: HTTP 503", 503, 6)
        return original(self, image)

    monkeypatch.setattr(LocalService, "predict", flaky)
    run_evaluation(load_params(), "local", "digits")
    out = paths.predictions_csv("local", "digits", 5)
    assert (pd.read_csv(out, keep_default_na=False)["error"] != "").sum() == 6
    monkeypatch.setattr(LocalService, "predict", original)

    calls = _counting_predict(monkeypatch)
    run_evaluation(_with_retry_errors(False), "local", "digits")  # kept as they are
    assert calls == [] and read_json(paths.run_metrics_json("local", "digits", 5))["errors"] == 6

    capsys.readouterr()
    run_evaluation(_with_retry_errors(True), "local", "digits")  # the default: retried
    assert "retrying 6 error row(s)" in capsys.readouterr().err
    assert len(calls) == 6
    final = pd.read_csv(out, keep_default_na=False)
    assert len(final) == 30 and final["image"].is_unique and (final["error"] == "").all()
    assert read_json(paths.run_metrics_json("local", "digits", 5))["errors"] == 0


class _Scripted:
    """A stand-in service for the property test: deterministic answers, chosen failures."""

    def __init__(self, fail: set[str], calls: list[str]):
        self.fail, self.calls = fail, calls

    def close(self):
        pass

    max_rps = None  # no rate limit

    def connect(self, model):
        pass

    def predict(self, image: bytes):
        import hashlib

        from mlbench.core import Prediction

        key = hashlib.sha256(image).hexdigest()
        self.calls.append(key)
        if key in self.fail:
            raise ServiceCallError("HTTP 503: down,\n\"quoted\" and cut", 503, 3)
        return Prediction(key[:4], 0.5, None, 1)


def test_the_single_stream_pass_takes_the_vendors_shared_rate_too(digits_copy, monkeypatch):
    """Runs of one vendor measured at once share its rate limit: the single calls of one run's
    latency pass must take their tokens as its scoring calls do, or together they exceed it."""
    from mlbench.bench import evaluate as ev
    from mlbench.bench import runs
    from mlbench.bench.traffic import VendorTraffic
    from mlbench.core import ModelRef
    from mlbench.data.export import load_test_images, write_test_table

    _use_hog(digits_copy, test_per_class=2)
    write_test_table("digits", 2, 0)
    tests = load_test_images("digits")
    calls: list[str] = []
    monkeypatch.setattr(runs, "open_service", lambda *a, **k: _Scripted(set(), calls))
    traffic = VendorTraffic(1000.0)
    tokens: list[int] = []
    real_acquire = traffic.rate.acquire
    monkeypatch.setattr(traffic.rate, "acquire", lambda: (tokens.append(1), real_acquire())[1])
    model = ModelRef(service="local", dataset="digits", ablation=5, ids={"model": "scripted"})
    metrics = ev.evaluate_model(load_params(), model, tests, traffic=traffic)
    assert metrics["latency_calls"] == len(tests)  # 20 test images, all in the pass
    assert len(calls) == 2 * len(tests) and len(tokens) == len(calls)


def test_finding2_any_cut_and_rerun_scores_every_image_exactly_once(digits_copy, monkeypatch):
    """Property: cut predictions.csv at any byte, rerun: every test image has exactly one row,
    and no image whose complete prediction row survived the cut is called again."""
    import hashlib

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from mlbench.bench import evaluate as ev
    from mlbench.bench import runs
    from mlbench.core import ModelRef
    from mlbench.data.export import load_test_images, write_test_table

    _use_hog(digits_copy, test_per_class=2)
    write_test_table("digits", 2, 0)
    tests = load_test_images("digits")
    digest = {t.name: hashlib.sha256(t.path.read_bytes()).hexdigest() for t in tests}
    model = ModelRef(service="local", dataset="digits", ablation=5, ids={"model": "scripted"})
    params = load_params()
    out = paths.predictions_csv("local", "digits", 5)
    calls: list[str] = []
    fail: set[str] = set()
    monkeypatch.setattr(runs, "open_service", lambda *a, **k: _Scripted(fail, calls))
    fail.update(digest[t.name] for t in tests[::3])  # some rows are errors
    ev.evaluate_model(params, model, tests)
    full = out.read_bytes()
    fail.clear()
    ev.evaluate_model(params, model, tests)  # times again the single calls that failed:
    out.write_bytes(full)  # from here on every call counted below is a scoring call

    @settings(max_examples=120, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.integers(0, len(full)))
    def rerun_after_cut(cut: int) -> None:
        out.write_bytes(full[:cut])
        survived = {line.split(b",")[0].decode() for line in full[:cut].split(b"\n")[1:-1]
                    if line.count(b",") == 6 and line.endswith(b",")}  # a prediction
        calls.clear()
        ev.evaluate_model(params, model, tests)
        final = pd.read_csv(out, keep_default_na=False, dtype=str)
        assert sorted(final["image"]) == sorted(t.name for t in tests)
        assert (final["error"] == "").all()
        assert not {digest[name] for name in survived} & set(calls)
        assert len(calls) == len(tests) - len(survived)

    rerun_after_cut()


# -- issue 14, finding 6: unknown names are errors before anything runs ---------------------------
@pytest.mark.parametrize("args", [["evaluate", "nope", "digits"], ["load", "nope", "digits"],
                                  ["evaluate", "local", "nope"], ["train", "nope", "digits"]])
def test_finding6_unknown_service_or_dataset_exits_2_in_one_line(digits_copy, args):
    from typer.testing import CliRunner

    from mlbench.cli import app

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown ")
    assert not paths.RUNS.exists() and not Path("results/locks").exists()


def test_finding2_a_full_disk_mid_evaluate_is_one_line_and_a_rerun_is_exact(digits_copy,
                                                                            monkeypatch):
    import errno

    from typer.testing import CliRunner

    from mlbench import io as mio
    from mlbench.cli import app

    _small(digits_copy)
    real_fsync, synced = os.fsync, []

    def fsync(fd):
        synced.append(fd)
        if len(synced) == 12:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(mio.os, "fsync", fsync)
    result = CliRunner().invoke(app, ["evaluate", "local", "digits"])
    monkeypatch.setattr(mio.os, "fsync", real_fsync)
    assert result.exit_code == 2, result.output
    error = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "Traceback" not in result.output
    assert "disk full while writing predictions in results/runs/local/digits/eval" in error[0]
    assert "free there" in error[0] and "rerun `mlbench evaluate local digits`" in error[0]
    run_evaluation(load_params(), "local", "digits")
    final = pd.read_csv(paths.predictions_csv("local", "digits", 5), keep_default_na=False)
    assert len(final) == 30 and final["image"].is_unique
