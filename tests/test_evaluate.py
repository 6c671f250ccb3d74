"""evaluate: timed predictions, appended as they come, resumable after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
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
    deadline = time.monotonic() + 120
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
    assert len(calls) == 450 - len(partial)
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
