"""`ablate` stage: stratified, seeded, nested training subsets of every size in the ladder.

One canonical table (`data/<ds>/ablations.csv`: size, split, filename, class) is the source of
truth the services train from; the seed's file formats are derived from it by `export`.
Sampling is nested by construction: each class gets one seeded permutation of its training
images and size `n` takes its first `n`, so every image of a smaller ablation is in each larger
one, and adding a size never changes the files of the others. Test images are never candidates.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

import pandas as pd

from mlbench import paths
from mlbench.console import warn
from mlbench.core import AblationSplit, ImageRef
from mlbench.data.prepare import read_classes
from mlbench.errors import UserError
from mlbench.io import atomic_write_csv, atomic_write_json, read_json

TABLE_HEADER = ["size", "split", "filename", "class"]


@dataclass(frozen=True)
class Availability:
    available: tuple[int, ...]
    unavailable: dict[int, str]  # size -> why (the smallest class and its count)


def train_pool(ds: str) -> dict[str, list[str]]:
    """Training-split file names per class, from the manifest (test images never enter)."""
    f = paths.manifest_file(ds)
    if not f.exists():
        raise UserError(f"{f}: missing; run `mlbench prepare {ds}` first")
    manifest = pd.read_csv(f, dtype=str, keep_default_na=False)
    pool: dict[str, list[str]] = defaultdict(list)
    train = manifest[manifest["split"] == "train"]
    for cls, filename in zip(train["class"], train["filename"], strict=True):
        pool[cls].append(filename)
    return {c: sorted(pool.get(c, [])) for c in read_classes(ds)}


def class_order(files: list[str], seed: int, class_name: str) -> list[str]:
    """The seeded permutation of one class: prefixes of it are the nested ablations."""
    order = sorted(files)
    random.Random(f"{seed}/{class_name}").shuffle(order)
    return order


def val_count(n: int, val_fraction: float) -> int:
    """Images per class held out for validation: round(n * f), at least 1 and at most n - 1."""
    if val_fraction <= 0 or n < 2:
        return 0
    return min(n - 1, max(1, round(n * val_fraction)))


def role(k: int, val_fraction: float) -> str:
    """`val` or `train` for the k-th image (1-based) of a class's order: val exactly where the
    val count steps up, so every prefix of length n holds `val_count(n)` val images and a
    smaller ablation's train and val images are in a larger one's train and val (the seed's
    `test_ablations_are_cumulative` checks train is nested, not only train + val)."""
    return "val" if val_count(k, val_fraction) > val_count(k - 1, val_fraction) else "train"


def sample(
    pool: dict[str, list[str]], n: int, seed: int, val_fraction: float
) -> list[tuple[str, str, str]]:
    """(split, filename, class) rows of the size-`n` ablation; every class gives exactly n."""
    rows = []
    for cls in sorted(pool):
        chosen = class_order(pool[cls], seed, cls)[:n]
        rows += [(role(k, val_fraction), f, cls) for k, f in enumerate(chosen, 1)]
    return rows


def availability(pool: dict[str, list[str]], sizes: tuple[int, ...]) -> Availability:
    smallest = min(pool, key=lambda c: (len(pool[c]), c))
    count = len(pool[smallest])
    ok = tuple(n for n in sizes if n <= count)
    why = {n: f"class {smallest!r} has only {count} training images" for n in sizes if n > count}
    return Availability(ok, why)


def ablate_dataset(ds: str, sizes: tuple[int, ...], seed: int, val_fraction: float,
                   explicit: int | None = None) -> Availability:
    """Write the canonical table + availability; warn (one line) for each size skipped."""
    pool = train_pool(ds)
    avail = availability(pool, sizes)
    rows = []
    for n in avail.available:
        rows += [(n, *r) for r in sample(pool, n, seed, val_fraction)]
    atomic_write_csv(paths.ablation_table(ds), TABLE_HEADER, rows)
    atomic_write_json(paths.availability_file(ds), {
        "available": list(avail.available),
        "unavailable": {str(n): why for n, why in avail.unavailable.items()},
    })
    for n, why in avail.unavailable.items():
        note = " (the size asked with `ablation`)" if n == explicit else ""
        warn(f"{ds}: skipping ablation {n}{note}: {why}")
    return avail


def read_availability(ds: str) -> Availability:
    f = paths.availability_file(ds)
    if not f.exists():
        raise UserError(f"{f}: missing; run `mlbench ablate {ds}` first")
    data = read_json(f)
    return Availability(tuple(data["available"]),
                        {int(k): v for k, v in data["unavailable"].items()})


def load_table(ds: str) -> pd.DataFrame:
    f = paths.ablation_table(ds)
    if not f.exists():
        raise UserError(f"{f}: missing; run `mlbench ablate {ds}` first")
    return pd.read_csv(f, dtype={"size": int, "split": str, "filename": str, "class": str},
                       keep_default_na=False)


def load_split(ds: str, n: int) -> AblationSplit:
    """The size-`n` ablation as the services see it."""
    table = load_table(ds)
    if not (table["size"] == n).any():
        avail = read_availability(ds)
        why = avail.unavailable.get(n, f"{n} is not in params.yaml ablations")
        raise UserError(f"{ds}: no ablation of {n} images per class ({why})")
    return splits_of(ds, table, tuple(read_classes(ds)))[n]


def splits_of(ds: str, table: pd.DataFrame, classes: tuple[str, ...]) -> dict[int, AblationSplit]:
    """Every ablation of the canonical table, by size."""

    def refs(part: pd.DataFrame) -> tuple[ImageRef, ...]:
        return tuple(ImageRef(paths.split_dir(ds, "train") / c / f, c, s, f)
                     for f, c, s in zip(part["filename"], part["class"], part["split"],
                                        strict=True))

    return {int(n): AblationSplit(ds, int(n), classes, refs(rows[rows["split"] == "train"]),
                                  refs(rows[rows["split"] == "val"]))
            for n, rows in table.groupby("size")}
