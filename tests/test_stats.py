"""The run metrics every service is ranked by."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import f1_score

from mlbench.bench.stats import macro_f1

LABELS = st.sampled_from(["cat", "dog", "owl", ""])  # "" is an answer that named no class


@given(st.lists(st.tuples(LABELS.filter(bool), LABELS), min_size=1, max_size=60))
def test_macro_f1_is_scikit_learns_over_the_true_classes(pairs):
    """Same number as `f1_score(average="macro", labels=true classes, zero_division=0)`: a
    class only ever predicted (or no label at all) is not averaged in, a class never predicted
    right scores 0."""
    actual, predicted = [a for a, _ in pairs], [p for _, p in pairs]
    expected = f1_score(actual, predicted, labels=sorted(set(actual)), average="macro",
                        zero_division=0)
    assert math.isclose(macro_f1(actual, predicted), expected, rel_tol=1e-12, abs_tol=1e-12)


def test_macro_f1_of_nothing_scored_is_nan():
    assert math.isnan(macro_f1([], []))
