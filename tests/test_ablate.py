"""Ablation sampling properties: nested, stratified, disjoint, deterministic."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlbench.data.ablate import availability, load_split, read_availability, sample, val_count

pools = st.dictionaries(
    keys=st.text("abcdefgh", min_size=1, max_size=4),
    values=st.integers(min_value=1, max_value=60),
    min_size=1, max_size=6,
).map(lambda counts: {c: [f"{c}_{i}.png" for i in range(n)] for c, n in counts.items()})


def _by_size(pool, sizes, seed, vf):
    return {n: sample(pool, n, seed, vf) for n in sizes}


@settings(max_examples=60, deadline=None)
@given(pool=pools, seed=st.integers(0, 10_000),
       vf=st.sampled_from([0.0, 0.1, 0.2, 1 / 3, 0.5, 0.75]))
def test_ablations_are_nested_stratified_and_disjoint(pool, seed, vf):
    smallest = min(len(v) for v in pool.values())
    sizes = sorted({s for s in (1, 2, 3, 5, 7, 10, 20, 40) if s <= smallest})
    rows = _by_size(pool, sizes, seed, vf)
    previous: set[str] = set()
    previous_train: set[str] = set()
    previous_val: set[str] = set()
    for n in sizes:
        files = [f for _, f, _ in rows[n]]
        assert len(files) == len(set(files))
        # stratified: exactly n per class, each file from its own class
        for cls in pool:
            assert sum(1 for _, f, c in rows[n] if c == cls) == n
        assert all(f in pool[c] for _, f, c in rows[n])
        # train/val disjoint, val count as documented
        train = {f for s, f, _ in rows[n] if s == "train"}
        val = {f for s, f, _ in rows[n] if s == "val"}
        assert not train & val
        assert len(val) == len(pool) * val_count(n, vf)
        # nested: every image of a smaller ablation is in the larger one, in the same part (the
        # seed's own tests check that train is nested, not only train + val)
        assert previous <= set(files)
        assert previous_train <= train and previous_val <= val
        previous, previous_train, previous_val = set(files), train, val


@settings(max_examples=30, deadline=None)
@given(pool=pools, seed=st.integers(0, 10_000))
def test_sampling_is_deterministic_and_seed_dependent(pool, seed):
    n = min(len(v) for v in pool.values())
    assert sample(pool, n, seed, 0.2) == sample(pool, n, seed, 0.2)
    big = {c: [f"{c}_{i}.png" for i in range(50)] for c in "abc"}
    assert sample(big, 10, seed, 0.2) != sample(big, 10, seed + 1, 0.2)


def test_adding_a_size_never_changes_the_others():
    pool = {c: [f"{c}{i}" for i in range(100)] for c in "xyz"}
    assert sample(pool, 20, 7, 0.2) == _by_size(pool, [5, 20, 50], 7, 0.2)[20]


def test_availability_names_the_smallest_class():
    pool = {"big": ["a"] * 50, "small": ["b"] * 12}
    avail = availability(pool, (5, 20, 80))
    assert avail.available == (5,)
    assert avail.unavailable[20] == "class 'small' has only 12 training images"


def test_digits_ablations_never_touch_test_and_skip_sizes_it_cannot_give(in_digits):
    import pandas as pd

    manifest = pd.read_csv("data/digits/manifest.csv")
    test_files = set(manifest[manifest["split"] == "test"]["filename"])
    avail = read_availability("digits")
    assert avail.available == (5, 20, 80)
    assert "320" in str(avail.unavailable) or 320 in avail.unavailable
    for n in avail.available:
        split = load_split("digits", n)
        names = {r.filename for r in split.all}
        assert not names & test_files
        assert len(split.all) == 10 * n
        assert all(r.path.exists() for r in split.all)


def test_load_split_of_an_unavailable_size_says_why(in_digits):
    from mlbench.errors import UserError

    with pytest.raises(UserError, match="class .* has only"):
        load_split("digits", 320)
