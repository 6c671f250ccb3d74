"""The metrics files behind `dvc metrics show`: a table that fits a terminal.

`dvc metrics show` prints one row per metrics file and one column per key, keys sorted as
strings. So each (service, dataset) gets its own file, `results/metrics/<svc>-<ds>.json`, whose
keys are the accuracy at each ablation, zero-padded (`acc@0005`, `acc@0020`, ... `acc@1280`) so
that string order is numeric order; and each service gets a headline file,
`results/mean-accuracy/<svc>.json`, with the same keys holding the mean across datasets. Every
file shares the same columns, so 4 services x 6 datasets is still a 28-row table of 5 columns.
A size a dataset cannot give reads `unavailable`; a run not scored yet reads `missing`. The
other numbers of a run (CI, macro-F1, latency, throughput, training time) are in
`results/summary.csv` and `results/report.html`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from mlbench import paths
from mlbench.io import atomic_write_json

UNAVAILABLE = "unavailable"
MISSING = "missing"
#: Digits of the ablation in a key: sizes up to 9,999 images per class sort numerically.
KEY_DIGITS = 4


def accuracy_key(n: int, digits: int = KEY_DIGITS) -> str:
    """`acc@0005`: the key of the accuracy at `n` images per class."""
    return f"acc@{n:0{digits}d}"


def _key_digits(sizes: list[int]) -> int:
    return max([KEY_DIGITS, *(len(str(n)) for n in sizes)])


def _value(row: dict) -> float | str:
    if row["status"] == "ok":
        return round(float(row["accuracy"]), 4)
    return UNAVAILABLE if row["status"] == "unavailable" else MISSING


def per_run_metrics(runs: pd.DataFrame) -> dict[tuple[str, str], dict[str, float | str]]:
    """(service, dataset) -> {acc@<n>: accuracy or status}, keys in numeric order."""
    digits = _key_digits(runs["ablation"].tolist()) if not runs.empty else KEY_DIGITS
    out: dict[tuple[str, str], dict[str, float | str]] = {}
    for r in runs.sort_values("ablation", kind="stable").to_dict("records"):
        out.setdefault((r["service"], r["dataset"]), {})[accuracy_key(
            int(r["ablation"]), digits)] = _value(r)
    return out


def mean_metrics(runs: pd.DataFrame) -> dict[str, dict[str, float | str]]:
    """service -> {acc@<n>: mean accuracy across the datasets that have a result at n}.

    As in the seed's `get_results.py`, a dataset that cannot give a size is left out of that
    size's mean (the seed's nanmean); a size no dataset gives reads `unavailable`.
    """
    digits = _key_digits(runs["ablation"].tolist()) if not runs.empty else KEY_DIGITS
    out: dict[str, dict[str, float | str]] = {}
    for (svc, n), part in runs.groupby(["service", "ablation"], sort=True):
        ok = part[part["status"] == "ok"]
        if not ok.empty:
            value: float | str = round(float(ok["accuracy"].astype(float).mean()), 4)
        else:
            value = UNAVAILABLE if (part["status"] == "unavailable").all() else MISSING
        out.setdefault(str(svc), {})[accuracy_key(int(n), digits)] = value
    return out


def _refill(folder: Path, files: dict[str, dict]) -> list[Path]:
    """Exactly `files` in `folder`: a service or dataset dropped from params leaves no row."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    written = []
    for name, data in files.items():
        atomic_write_json(folder / name, data)
        written.append(folder / name)
    return written


def write_metrics(runs: pd.DataFrame) -> list[Path]:
    """Write both folders of metrics files from `collect_runs`' table."""
    per_run = {f"{svc}-{ds}.json": data for (svc, ds), data in per_run_metrics(runs).items()}
    means = {f"{svc}.json": data for svc, data in mean_metrics(runs).items()}
    return (_refill(paths.mean_accuracy_dir(), means)
            + _refill(paths.metrics_dir(), per_run))
