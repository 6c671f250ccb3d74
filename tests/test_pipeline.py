"""End to end, as a new user runs it: `dvc repro` offline on the built-in dataset."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, make_project
from tests.seed_rules import check_seed_files

GIT = ["git", "-c", "user.name=mlbench test", "-c", "user.email=test@mlbench.local"]

#: The module's first test also sets up `repro`: the whole default pipeline (EfficientNet-Lite0's
#: graph built, both built-in datasets embedded), about 4 minutes on 2 idle cores and twice that
#: on a loaded one, past the suite's 300 s default.
pytestmark = pytest.mark.timeout(1200)


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def repro(tmp_path_factory) -> Path:
    """A fresh project after one full `dvc repro`: default params, a lighter test, latency
    pass and load."""
    root = make_project(tmp_path_factory.mktemp("e2e"), params={
        "test_per_class": 30, "latency": {"samples": 50},
        "load": {"calls": 100, "concurrency": 10, "mode": "batch", "timeout": 30}})
    run(["dvc", "repro"], root)
    return root


@pytest.mark.slow
def test_repro_produces_the_data_the_results_and_the_plots(repro):
    data = repro / "data" / "digits"
    assert (data / "classes.txt").read_text().split() == sorted(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    assert (data / "manifest.csv").exists() and (data / "rejected.csv").exists()
    assert len((data / "ablations.csv").read_text().splitlines()) == 1 + 10 * (5 + 20 + 80)
    csvs = [p.name for p in (data / "ablations").glob("*.csv")]
    assert len(csvs) == 3 * 12  # the seed's 11 formats + Vertex's import file x (5, 20, 80)
    tests = list(data.glob("digits_test_*.csv"))
    assert len(tests) == 5
    assert len((data / "test.csv").read_text().splitlines()) == 301
    assert len((data / "digits_test_nyckel.csv").read_text().splitlines()) == 300
    check_seed_files(repro, "digits", [5, 20, 80], 10, "mlbench-images")
    assert (data / "uploads" / "training_uploads_80").is_dir()

    import pandas as pd

    acc = json.loads((repro / "results" / "metrics" / "local-digits.json").read_text())
    assert acc["acc@0320"] == acc["acc@1280"] == "unavailable"
    assert acc["acc@0005"] < acc["acc@0020"] < acc["acc@0080"]
    assert acc["acc@0080"] >= 0.90
    summary = pd.read_csv(repro / "results" / "summary.csv")
    at80 = summary[(summary["dataset"] == "digits") & (summary["ablation"] == 80)].iloc[0]
    assert at80["load_throughput_rps"] > 0 and at80["latency_p50_ms"] > 0
    for name in ("learning_curve.png", "latency.png", "confusion_local_digits_80.png"):
        assert (repro / "results" / "plots" / name).stat().st_size > 5000
    shown = run(["dvc", "metrics", "show", "--json"], repro).stdout
    assert '"acc@0080"' in shown
    # the default pipeline's second built-in dataset gives every size up to 320 (800 a class)
    animals = json.loads((repro / "results" / "metrics" / "local-animals.json").read_text())
    assert animals["acc@1280"] == "unavailable"
    assert 0.5 < animals["acc@0005"] < animals["acc@0320"] <= 1


@pytest.mark.slow
def test_second_repro_runs_nothing(repro):
    """Nothing stale after a full run: no stage runs (how long the check takes is a machine's
    load, not a behaviour: no timing assert here)."""
    out = run(["dvc", "repro"], repro).stdout
    assert "Running stage" not in out


@pytest.mark.slow
def test_changing_the_seed_reruns_ablate_and_later_only(repro):
    params = repro / "params.yaml"
    original = params.read_text()
    data = yaml.safe_load(original)
    data["seed"] = 1
    params.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        status = json.loads(run(["dvc", "status", "--json"], repro).stdout)
    finally:
        params.write_text(original)
    assert "ablate@digits" in status and "testsets@digits" in status
    assert "train@local-digits" in status
    assert "fetch@digits" not in status and "prepare@digits" not in status


def _status_after(repro: Path, edit: Path, change) -> dict:
    """`dvc status` with `edit` changed by `change(text)`, the file restored afterwards."""
    original = edit.read_text()
    edit.write_text(change(original))
    try:
        return json.loads(run(["dvc", "status", "--json"], repro).stdout)
    finally:
        edit.write_text(original)


@pytest.mark.slow
def test_renaming_the_aws_bucket_reruns_no_stage_of_the_local_service(repro):
    def rename(text: str) -> str:
        data = yaml.safe_load(text)
        data["buckets"]["aws"] = "another-bucket"
        return yaml.safe_dump(data, sort_keys=False)

    status = _status_after(repro, repro / "params.yaml", rename)
    # `check` validates every params change; then only the files that name the bucket
    assert set(status) == {"check", "export@digits", "export@animals"}


@pytest.mark.slow
def test_editing_one_service_reruns_only_that_services_stages(repro):
    comment = lambda text: text + "\n# edited\n"  # noqa: E731
    status = _status_after(repro, repro / "mlbench/services/vertex/service.py", comment)
    assert status == {}  # vertex is not in `services:`: nothing of the local run depends on it
    status = _status_after(repro, repro / "mlbench/services/local/head.py", comment)
    assert set(status) == {f"{stage}@local-{ds}" for stage in ("train", "evaluate", "load")
                           for ds in ("digits", "animals")}
    status = _status_after(repro, repro / "mlbench/services/vertex/export.py", comment)
    # the seed files in Vertex's format, no service stage
    assert set(status) == {"export@digits", "export@animals"}


@pytest.mark.slow
def test_a_mistyped_key_fails_the_run_instead_of_being_ignored(repro):
    def typo(text: str) -> str:
        return text + "ablaton: 500\n"

    params = repro / "params.yaml"
    original = params.read_text()
    params.write_text(typo(original))
    try:
        proc = run(["dvc", "repro"], repro, check=False)
    finally:
        params.write_text(original)
    assert proc.returncode != 0
    assert "params.yaml: ablaton: unknown key; did you mean 'ablation'?" in proc.stderr
    assert "Running stage 'check'" in proc.stdout


@pytest.mark.slow
def test_the_headline_experiment_at_500_images_per_class(repro):
    """`dvc exp run -S ablation=500`, the README's own example, failed on the default pipeline
    (digits' smallest class has 131 training images): now the dataset that can give 500 trains
    and is scored at 500, the one that cannot says so, and the run exits 0."""
    run(["dvc", "repro"], repro)
    run([*GIT, "add", "-A"], repro)
    run([*GIT, "commit", "-qm", "baseline"], repro)
    proc = run(["dvc", "exp", "run", "-S", "ablation=500", "-n", "five-hundred"], repro)
    assert "digits: ablation 500 unavailable" in proc.stdout + proc.stderr
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repro).stdout)
    text = json.dumps(shown)
    assert '"five-hundred"' in text and '"ablation": 500' in text and '"acc@0500"' in text
    animals = json.loads((repro / "results" / "metrics" / "local-animals.json").read_text())
    digits = json.loads((repro / "results" / "metrics" / "local-digits.json").read_text())
    assert list(animals) == ["acc@0500"] and animals["acc@0500"] > 0.9
    assert digits == {"acc@0500": "unavailable"}


def test_a_corrupt_raw_image_is_rejected_and_the_run_succeeds(digits_copy):
    bad = Path("data/digits/raw/train/zero/digit_9999.png")
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    proc = run(["mlbench", "prepare", "digits"], digits_copy)
    assert "1 rejected" in proc.stderr
    rejected = Path("data/digits/rejected.csv").read_text()
    assert "digit_9999.png" in rejected
    assert "digit_9999" not in Path("data/digits/manifest.csv").read_text()


def test_asking_a_size_no_dataset_can_give_fails_with_the_reason(digits_copy):
    params = Path("params.yaml")
    data = yaml.safe_load(params.read_text())
    data["ablation"] = 500
    data["datasets"] = ["digits"]
    params.write_text(yaml.safe_dump(data))
    run(["mlbench", "ablate", "digits"], digits_copy)
    proc = run(["mlbench", "train", "local", "digits"], digits_copy, check=False)
    assert proc.returncode == 2
    assert "ablation=500: no dataset can give 500 images per class" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_seed_data_scripts_run_the_stages_they_stand_for(digits_copy):
    """`create_ablations.py` was the seed's sampling *and* every format: ablate, then export."""
    shutil.rmtree("data/digits/ablations")
    Path("data/digits/ablations.csv").unlink()
    proc = run([sys.executable, str(REPO / "scripts" / "create_ablations.py"), "digits"],
               digits_copy)
    assert "ablations [5, 20, 80]" in proc.stderr and "files in the seed's formats" in \
        proc.stderr
    assert Path("data/digits/ablations.csv").exists()
    assert Path("data/digits/ablations/digits_train_vertex_5.csv").exists()
    failed = run([sys.executable, str(REPO / "scripts" / "create_tests.py"), "nope"],
                 digits_copy, check=False)
    assert failed.returncode == 2 and "unknown dataset 'nope'" in failed.stderr
    assert "Traceback" not in failed.stderr
