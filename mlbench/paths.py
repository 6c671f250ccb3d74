"""Every path convention of the project in one place.

Stages, services and tests all locate files through these helpers, so the layout in
`docs/architecture.md` is defined exactly once. All paths are relative to the project root
(the folder holding `params.yaml`), which is the working directory of every DVC stage.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA = Path("data")
RESULTS = Path("results")
#: What `train` makes: `<svc>/<ds>/<n>/model.json` (+ the service's state files). Apart from
#: what is measured of the models, so the `measure` stage can depend on every model at once
#: and still be ahead of the `evaluate` and `load` stages whose folders it fills.
MODELS = RESULTS / "models"
#: What `evaluate` and `load` measure of each model; the report (which depends on this whole
#: folder) writes beside it, since DVC forbids a stage depending on its own outputs.
RUNS = RESULTS / "runs"
PARAMS_FILE = Path("params.yaml")


def raw_dir(ds: str) -> Path:
    """Output of `fetch`: the dataset as its source publishes it (archives and/or files)."""
    return DATA / ds / "raw"


def split_dir(ds: str, split: str) -> Path:
    """`data/<ds>/train` or `data/<ds>/test`, holding one folder per class."""
    return DATA / ds / split


def classes_file(ds: str) -> Path:
    return DATA / ds / "classes.txt"


def manifest_file(ds: str) -> Path:
    return DATA / ds / "manifest.csv"


def rejected_file(ds: str) -> Path:
    return DATA / ds / "rejected.csv"


def ablation_table(ds: str) -> Path:
    """Output of `ablate`: the canonical table of every ablation (size, split, filename,
    class), which the services train from."""
    return DATA / ds / "ablations.csv"


def availability_file(ds: str) -> Path:
    """Which ablation sizes the dataset can give, and why not the others."""
    return DATA / ds / "availability.json"


def test_table(ds: str) -> Path:
    """Output of `testsets`: the canonical test set (filename, class) every service is scored
    on."""
    return DATA / ds / "test.csv"


def ablations_dir(ds: str) -> Path:
    """Output of `export`: the seed benchmark's files for every ablation, in every format."""
    return DATA / ds / "ablations"


def ablation_csv(ds: str, split: str, n: int, fmt: str = "") -> Path:
    """Seed-compatible names: `<ds>_train_<n>.csv`, `<ds>_train_vertex_<n>.csv`, ..."""
    infix = f"_{fmt}" if fmt else ""
    return ablations_dir(ds) / f"{ds}_{split}{infix}_{n}.csv"


def test_csv(ds: str, fmt: str) -> Path:
    """Output of `export`: the test set in one service's format, where the seed kept it
    (`data/<ds>/<ds>_test_nyckel.csv`, ...)."""
    return DATA / ds / f"{ds}_test_{fmt}.csv"


#: The formats of the seed's test files (`test_csv`), each an output of `export` in dvc.yaml.
TEST_FORMATS = ("nyckel", "hg", "vertex", "aws", "azure")


def uploads_dir(ds: str) -> Path:
    return DATA / ds / "uploads"


#: The seed's upload folder of each split (also the bucket folders Vertex imports from).
UPLOAD_FOLDERS = {"train": "training_uploads", "val": "val_uploads", "test": "test_uploads"}


def upload_folder(ds: str, split: str, n: int) -> Path:
    """`training_uploads_<n>` / `val_uploads_<n>`: flat folders of the ablation's images."""
    return uploads_dir(ds) / f"{UPLOAD_FOLDERS[split]}_{n}"


def models_dir(svc: str, ds: str) -> Path:
    """Output of `train`: `<n>/model.json` (+ whatever the service keeps there)."""
    return MODELS / svc / ds


def model_dir(svc: str, ds: str, n: int) -> Path:
    return models_dir(svc, ds) / str(n)


def model_runs(svc: str) -> list[tuple[str, int]]:
    """(dataset, ablation) of every run folder `train` made for a service, sorted."""
    found = [(d.parent.name, int(d.name))
             for d in (MODELS / svc).glob("*/*") if d.is_dir() and d.name.isdigit()]
    return sorted(found)


def model_json(svc: str, ds: str, n: int) -> Path:
    return model_dir(svc, ds, n) / "model.json"


def evals_dir(svc: str, ds: str) -> Path:
    """Output of `evaluate`: `eval/<n>/predictions.csv` and `eval/<n>/metrics.json`."""
    return RUNS / svc / ds / "eval"


def eval_dir(svc: str, ds: str, n: int) -> Path:
    return evals_dir(svc, ds) / str(n)


def predictions_csv(svc: str, ds: str, n: int) -> Path:
    return eval_dir(svc, ds, n) / "predictions.csv"


def run_metrics_json(svc: str, ds: str, n: int) -> Path:
    return eval_dir(svc, ds, n) / "metrics.json"


def latency_csv(svc: str, ds: str, n: int) -> Path:
    """The single-stream latency pass: test images called one at a time, after scoring."""
    return eval_dir(svc, ds, n) / "latency.csv"


def loads_dir(svc: str, ds: str) -> Path:
    """Output of `load`: `load/<n>/throughput.csv` and `load/<n>/summary.json`."""
    return RUNS / svc / ds / "load"


def throughput_csv(svc: str, ds: str, n: int) -> Path:
    return loads_dir(svc, ds) / str(n) / "throughput.csv"


def throughput_summary(svc: str, ds: str, n: int) -> Path:
    return loads_dir(svc, ds) / str(n) / "summary.json"


def service_settings_file() -> Path:
    """Output of `check`: the params blocks of the selected services only. `submit` and
    `measure` depend on it rather than on every block, so editing a service the run does not
    use leaves them up to date."""
    return RESULTS / "service-settings.json"


def trainings_file() -> Path:
    """Output of `submit`: how each training it started ended (what `train` stages wait on)."""
    return RESULTS / "trainings.json"


def measured_file() -> Path:
    """Output of `measure`: what each run measured (what `evaluate` and `load` stages wait on)."""
    return RESULTS / "measured.json"


def teardown_file() -> Path:
    """Output of `teardown`: what it stopped (the report, which counts deployed hours, waits
    on it)."""
    return RESULTS / "teardown.json"


def deployment_file(svc: str, ds: str, n: int) -> Path:
    """What a run has deployed (billed while it is up), and for how long it has been up.

    Outside `results/models/`: deploying or tearing down never makes the trained model look
    changed to DVC (which would rerun its stages and deploy it again)."""
    return RESULTS / "deployments" / svc / ds / f"{n}.json"


def deployment_files() -> list[Path]:
    return sorted((RESULTS / "deployments").glob("*/*/*.json"))


def writer_lock(svc: str, ds: str) -> Path:
    """The lock held while `train`, `evaluate` or `load` writes a service x dataset's results.
    Outside `results/models/` and `results/runs/` (no DVC output nor dependency holds it),
    inside `results/` (ignored by git)."""
    return RESULTS / "locks" / f"{svc}-{ds}.lock"


def metrics_dir() -> Path:
    """`dvc metrics show` rows: `<svc>-<ds>.json`, the accuracy at each ablation."""
    return RESULTS / "metrics"


def mean_accuracy_dir() -> Path:
    """`dvc metrics show` headline rows: `<svc>.json`, mean accuracy across datasets."""
    return RESULTS / "mean-accuracy"


def benchmark_data_csv() -> Path:
    """This run in the seed's published table format (one row per run)."""
    return RESULTS / "benchmark-data.csv"


def throughputs_csv() -> Path:
    """This run in the seed's throughputs format (seconds for 1,000 calls, per service)."""
    return RESULTS / "throughputs.csv"


def seed_results_dir() -> Path:
    """Per-image results under the seed's names: `<ds>-<seed svc>-results-<n>.csv`."""
    return RESULTS / "seed"


def report_html() -> Path:
    """The self-contained page of the whole run (figures embedded)."""
    return RESULTS / "report.html"


def summary_csv() -> Path:
    return RESULTS / "summary.csv"


def plots_dir() -> Path:
    return RESULTS / "plots"


def learning_curve_csv() -> Path:
    """DVC plot data: one row per service x dataset x ablation."""
    return RESULTS / "learning_curve.csv"


def cache_dir() -> Path:
    """Derived, re-creatable files outside DVC (exported ONNX model, embeddings).

    `.cache/` in the project, or `MLBENCH_CACHE_DIR` to share one cache between checkouts.
    """
    return Path(os.environ.get("MLBENCH_CACHE_DIR") or ".cache")


def embeddings_cache() -> Path:
    """Content-hash keyed feature cache of the local service (shared by all ablations)."""
    return cache_dir() / "embeddings"


def models_cache() -> Path:
    return cache_dir() / "models"
