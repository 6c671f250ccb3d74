"""The trainable part of the local service: a linear head on frozen features.

Regularisation strength is picked on the ablation's validation split, then the head is refit
on train + val (the model a user would deploy). With `features: auto` both extractors are
cross-validated on train + val and the better one is kept, per ablation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

C_GRID = (0.01, 0.1, 1.0, 10.0)
#: Bumped when the head's recipe changes, so recorded models are retrained.
HEAD_VERSION = 1


def _head(c: float) -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))


@dataclass
class FittedHead:
    pipeline: Pipeline
    c: float
    val_accuracy: float | None


def fit_head(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
             y_val: np.ndarray) -> FittedHead:
    """Pick C on val (ties -> stronger regularisation), refit on train + val."""
    best_c, best_acc = C_GRID[len(C_GRID) // 2], None
    if len(y_val) and len(set(y_train)) > 1:
        for c in C_GRID:
            acc = float(_head(c).fit(x_train, y_train).score(x_val, y_val))
            if best_acc is None or acc > best_acc + 1e-12:
                best_c, best_acc = c, acc
    x_all, y_all = np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])
    return FittedHead(_head(best_c).fit(x_all, y_all), best_c, best_acc)


def cv_accuracy(x: np.ndarray, y: np.ndarray, seed: int = 0) -> float:
    """Cross-validated accuracy of the default head, for choosing features under `auto`."""
    per_class = np.bincount(np.unique(y, return_inverse=True)[1]).min()
    folds = int(min(5, per_class))
    if folds < 2:
        return float("nan")
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return float(cross_val_score(_head(1.0), x, y, cv=cv).mean())
