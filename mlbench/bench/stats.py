"""Accuracy, macro-F1, bootstrap intervals and latency percentiles of one run.

Errors (calls that failed after retries) are excluded from accuracy and counted separately:
a service outage is not a wrong answer. An image the service answered without a label counts
as wrong.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

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


def macro_f1(actual: Sequence[str], predicted: Sequence[str]) -> float:
    """Mean over the true classes of F1 = 2TP / (2TP + FP + FN), 0 for a class never right:
    scikit-learn's `f1_score(average="macro", labels=<the true classes>, zero_division=0)`, in
    numpy, because importing `sklearn.metrics` costs every evaluate stage about a second."""
    actual, predicted = np.asarray(actual, dtype=object), np.asarray(predicted, dtype=object)
    if actual.size == 0:
        return float("nan")
    scores = []
    for label in sorted(set(actual)):
        is_actual, is_predicted = actual == label, predicted == label
        tp = int(np.sum(is_actual & is_predicted))
        wrong = int(np.sum(is_actual != is_predicted))  # FP + FN
        scores.append(2 * tp / (2 * tp + wrong) if tp else 0.0)
    return float(np.mean(scores))


def run_metrics(pred: pd.DataFrame) -> dict[str, float | int | list[float]]:
    """Metrics of a predictions table (columns as written by `evaluate`)."""
    errors = pred["error"].fillna("").astype(str) != ""
    ok = pred[~errors]
    correct = (ok["predicted_class"] == ok["actual_class"]).to_numpy(dtype=float)
    lo, hi = bootstrap_ci(correct)
    lat = percentiles_ms(ok["invoke_time"].astype(float).tolist())
    return {
        "images": int(len(pred)),
        "scored": int(len(ok)),
        "errors": int(errors.sum()),
        "no_label": int((ok["predicted_class"] == NO_LABEL).sum()),
        "retried_calls": int((pred["attempts"].astype(int) > 1).sum()),
        "accuracy": float(correct.mean()) if len(correct) else float("nan"),
        "accuracy_ci95": [lo, hi],
        "macro_f1": macro_f1(ok["actual_class"].tolist(), ok["predicted_class"].tolist()),
        "latency_mean_ms": float(ok["invoke_time"].astype(float).mean() * 1000)
        if len(ok) else float("nan"),
        "latency_p50_ms": lat["p50"],
        "latency_p95_ms": lat["p95"],
        "latency_p99_ms": lat["p99"],
    }
