"""The seed benchmark's published CSV formats, read and written.

`image-classification-benchmark-data.csv`: `dataset,service,ablation,training times (s),
accuracy (%),latency (s)` (the accuracy column holds fractions despite its name; latency is the
mean seconds per call). `image-classification-throughputs.csv`: `service,throughput` = seconds
for 1,000 calls sent 10 at a time. Our report writes its own runs in the same formats, so a
user's run and the published numbers render side by side.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mlbench.errors import UserError

SEED_COLUMNS = {
    "dataset": "dataset",
    "service": "service",
    "ablation": "ablation",
    "training times (s)": "train_seconds",
    "accuracy (%)": "accuracy",
    "latency (s)": "latency_s",
}


def read_seed_results(path: Path) -> pd.DataFrame:
    """Read a seed-format results CSV into the tidy columns the plots use."""
    if not path.exists():
        raise UserError(f"{path}: not found")
    frame = pd.read_csv(path)
    frame.columns = [c.strip() for c in frame.columns]
    missing = [c for c in SEED_COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}; expected "
                        f"{','.join(SEED_COLUMNS)}")
    frame = frame.rename(columns=SEED_COLUMNS)[list(SEED_COLUMNS.values())]
    for col in ("ablation", "train_seconds", "accuracy", "latency_s"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    bad = frame["accuracy"].dropna()
    if ((bad < 0) | (bad > 1)).any():
        raise UserError(f"{path}: accuracy (%) must hold fractions in [0, 1], as the seed's do")
    return frame


def read_seed_throughputs(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise UserError(f"{path}: not found")
    frame = pd.read_csv(path)
    if list(frame.columns[:2]) != ["service", "throughput"]:
        raise UserError(f"{path}: expected columns service,throughput")
    return frame.rename(columns={"throughput": "seconds_per_1000"})


def to_seed_results(runs: pd.DataFrame) -> pd.DataFrame:
    inverse = {v: k for k, v in SEED_COLUMNS.items()}
    return runs[list(SEED_COLUMNS.values())].rename(columns=inverse)
