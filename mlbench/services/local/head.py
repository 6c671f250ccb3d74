"""The trainable part of the local service: a linear head on frozen features.

Regularisation strength is picked on the ablation's validation split, then the head is refit
on train + val (the model a user would deploy). Without validation images (`val_fraction: 0`,
or a 1-image ablation) C is picked by stratified cross-validation on train where every class
has at least 2 images, else the middle of the grid is used; how it was picked is recorded.
With `features: auto` both extractors are cross-validated on train + val and the better one is
kept, per ablation (the first candidate when cross-validation is impossible).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit
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
    #: How C was chosen: "val", "cv" (no val images) or "default" (too few images for either).
    selected_by: str = "val"


def _folds(y: np.ndarray, seed: int) -> StratifiedKFold | None:
    """Stratified folds over `y` (up to 5), or None when a class has fewer than 2 images."""
    if len(y) == 0 or len(np.unique(y)) < 2:
        return None
    per_class = int(np.bincount(np.unique(y, return_inverse=True)[1]).min())
    folds = min(5, per_class)
    return StratifiedKFold(folds, shuffle=True, random_state=seed) if folds >= 2 else None


def fit_head(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
             y_val: np.ndarray, seed: int = 0) -> FittedHead:
    """Pick C on val (ties -> stronger regularisation), or by cross-validation on train when
    there is no val; refit on train + val."""
    best_c, best_acc, how = C_GRID[len(C_GRID) // 2], None, "default"
    if len(y_val) and len(set(y_train)) > 1:
        how = "val"
        for c in C_GRID:
            acc = float(_head(c).fit(x_train, y_train).score(x_val, y_val))
            if best_acc is None or acc > best_acc + 1e-12:
                best_c, best_acc = c, acc
    elif not len(y_val) and (cv := _folds(y_train, seed)) is not None:
        how = "cv"
        scores = {c: float(cross_val_score(_head(c), x_train, y_train, cv=cv).mean())
                  for c in C_GRID}
        best_c = max(C_GRID, key=lambda c: (scores[c] - 1e-12 * C_GRID.index(c)))
    if len(y_val):
        x_all, y_all = np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])
    else:
        x_all, y_all = x_train, y_train
    return FittedHead(_head(best_c).fit(x_all, y_all), best_c, best_acc, how)


def cv_accuracy(x: np.ndarray, y: np.ndarray, seed: int = 0) -> float | None:
    """Cross-validated accuracy of the default head, for choosing features under `auto`; None
    when a class has fewer than 2 images (no stratified split exists)."""
    cv = _folds(y, seed)
    if cv is None:
        return None
    return float(cross_val_score(_head(1.0), x, y, cv=cv).mean())


@dataclass(frozen=True)
class NumpyHead:
    """A fitted `StandardScaler` + `LogisticRegression` head as plain arrays.

    Why: the model server scores one image per call, and scikit-learn's `predict_proba`
    spends most of such a call validating its input (about 0.1-0.2 ms, as long as the
    arithmetic of a thousand images). This does the same operations in the same order and
    dtypes (scale in the features' float32, the dot product in float64, softmax, or the
    logistic of the one decision for two classes), so its scores equal the pipeline's bit for
    bit (`tests/test_local.py` checks it).
    """

    mean: np.ndarray | None
    scale: np.ndarray | None
    coef: np.ndarray
    intercept: np.ndarray
    binary: bool

    @classmethod
    def of(cls, pipeline: Pipeline) -> NumpyHead | None:
        """The arrays of `pipeline`, or None when it is not exactly scaler + logistic
        regression on dense features (the caller then keeps the pipeline)."""
        steps = [step for _, step in pipeline.steps]
        if len(steps) != 2 or type(steps[0]) is not StandardScaler \
                or type(steps[1]) is not LogisticRegression:
            return None
        scaler, lr = steps
        return cls(scaler.mean_ if scaler.with_mean else None,
                   scaler.scale_ if scaler.with_std and scaler.scale_ is not None else None,
                   lr.coef_, lr.intercept_, len(lr.classes_) <= 2)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(n, classes) probabilities in the order of the pipeline's `classes_`."""
        x = np.array(x, dtype=x.dtype if x.dtype in (np.float32, np.float64) else np.float64)
        if self.mean is not None:
            x -= self.mean.astype(x.dtype)
        if self.scale is not None:
            x /= self.scale.astype(x.dtype)
        decision = x @ self.coef.T + self.intercept
        if self.binary:
            p = expit(decision.reshape(-1))
            return np.stack([1 - p, p], axis=1)
        decision -= decision.max(axis=1).reshape(-1, 1)
        np.exp(decision, out=decision)
        decision /= decision.sum(axis=1).reshape(-1, 1)
        return decision
