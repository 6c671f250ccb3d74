"""Accuracy, macro-F1, bootstrap intervals and latency percentiles of one run.

Errors (calls that failed after retries) are excluded from accuracy and counted separately:
a service outage is not a wrong answer. An image the service answered without a label counts
as wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

NO_LABEL = ""  # predicted_class of an answer that named no class


def bootstrap_ci(correct: np.ndarray, resamples: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of a 0/1 vector."""
    if len(correct) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(correct), size=(resamples, len(correct)))
    means = correct[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def percentiles_ms(seconds: Sequence[float], qs: Sequence[int] = (50, 95, 99)) -> dict[str, float]:
    arr = np.asarray(seconds, dtype=float)
    if arr.size == 0:
        return {f"p{q}": float("nan") for q in qs}
    return {f"p{q}": float(np.percentile(arr, q) * 1000) for q in qs}


def run_metrics(pred: pd.DataFrame) -> dict[str, float | int | list[float]]:
    """Metrics of a predictions table (columns as written by `evaluate`)."""
    errors = pred["error"].fillna("").astype(str) != ""
    ok = pred[~errors]
    correct = (ok["predicted_class"] == ok["actual_class"]).to_numpy(dtype=float)
    lo, hi = bootstrap_ci(correct)
    lat = percentiles_ms(ok["invoke_time"].astype(float).tolist())
    labels = sorted(set(ok["actual_class"]))
    macro_f1 = (f1_score(ok["actual_class"], ok["predicted_class"], labels=labels,
                         average="macro", zero_division=0) if len(ok) else float("nan"))
    return {
        "images": int(len(pred)),
        "scored": int(len(ok)),
        "errors": int(errors.sum()),
        "no_label": int((ok["predicted_class"] == NO_LABEL).sum()),
        "retried_calls": int((pred["attempts"].astype(int) > 1).sum()),
        "accuracy": float(correct.mean()) if len(correct) else float("nan"),
        "accuracy_ci95": [lo, hi],
        "macro_f1": float(macro_f1),
        "latency_mean_ms": float(ok["invoke_time"].astype(float).mean() * 1000)
        if len(ok) else float("nan"),
        "latency_p50_ms": lat["p50"],
        "latency_p95_ms": lat["p95"],
        "latency_p99_ms": lat["p99"],
    }
