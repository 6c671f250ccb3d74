"""The canonical tables -> the seed benchmark's files; the test set; the upload folders.

File names follow the seed benchmark (`<ds>_train_<n>.csv`, `<ds>_train_vertex_<n>.csv`, ...)
and sit where it put them (`data/<ds>/ablations/`), so its instructions and scripts keep
working. This module writes the generic files; each service that has a format of its own writes
it from its `export.py` hook, given an `ExportTarget` (the generic parts stay here, the vendor
parts in the vendor's package: one owner per format). The `export` command runs them all.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mlbench import paths
from mlbench.console import warn
from mlbench.core import AblationSplit, ImageRef
from mlbench.data.ablate import load_table, splits_of
from mlbench.data.prepare import read_classes
from mlbench.errors import UserError
from mlbench.io import atomic_write_bytes, atomic_write_csv

GENERIC = ("filename", "class")
TEST_HEADER = GENERIC
#: The bucket named in exported files when params.yaml names none (its default).
DEFAULT_BUCKET = "mlbench-images"


@dataclass(frozen=True)
class ExportTarget:
    """What a format writer gets: the dataset's ablations and test set, and the buckets."""

    dataset: str
    classes: tuple[str, ...]
    splits: Mapping[int, AblationSplit]
    tests: tuple[ImageRef, ...]
    buckets: Mapping[str, str]

    def bucket(self, cloud: str) -> str:
        """`buckets.<cloud>` from params.yaml (the default bucket name when unset)."""
        return (self.buckets.get(cloud) or "").strip() or DEFAULT_BUCKET

    def write_csv(self, path: Path, header: Sequence[str] | None,
                  rows: Iterable[Sequence[str]]) -> int:
        """Write one file atomically; returns 1 (files written), for the stage's count."""
        atomic_write_csv(path, header, rows)
        return 1

    def write_bytes(self, path: Path, data: bytes) -> int:
        atomic_write_bytes(path, data)
        return 1


def pairs(refs: Iterable[ImageRef]) -> list[tuple[str, str]]:
    """(upload name, class) of each image: the rows of the seed's generic CSVs."""
    return [(r.name, r.class_name) for r in refs]


def export_target(ds: str, buckets: Mapping[str, str]) -> ExportTarget:
    classes = tuple(read_classes(ds))
    return ExportTarget(ds, classes, splits_of(ds, load_table(ds), classes),
                        tuple(load_test_images(ds)), dict(buckets))


def export_generic(target: ExportTarget) -> int:
    """The seed's generic train/val files per size (`file,class` rows, no header line)."""
    ds, written = target.dataset, 0
    for n, split in target.splits.items():
        for name, refs in (("train", split.train), ("val", split.val)):
            written += target.write_csv(paths.ablation_csv(ds, name, n), None, pairs(refs))
    return written


def export_all(ds: str, buckets: Mapping[str, str],
               hooks: Mapping[str, Callable[[ExportTarget], int]]) -> int:
    """Every seed-format file of the dataset afresh: the generic ones, then each service's
    (`hooks`: service name -> its export function); returns the number of files written."""
    target = export_target(ds, buckets)
    shutil.rmtree(paths.ablations_dir(ds), ignore_errors=True)
    for fmt in paths.TEST_FORMATS:
        paths.test_csv(ds, fmt).unlink(missing_ok=True)
    return export_generic(target) + sum(hook(target) for hook in hooks.values())


def test_pairs(ds: str, per_class: int | None, seed: int) -> list[tuple[str, str]]:
    """(filename, class) of the test set: all test images, or `per_class` of each, seeded.

    A class with test images but no training image (so no model can learn it) is left out,
    with a warning: every service is scored on the same classes it could have learnt.
    """
    f = paths.manifest_file(ds)
    if not f.exists():
        raise UserError(f"{f}: missing; run `mlbench prepare {ds}` first")
    manifest = pd.read_csv(f, dtype=str, keep_default_na=False)
    test = manifest[manifest["split"] == "test"]
    learnt = set(read_classes(ds))
    for cls, count in test[~test["class"].isin(learnt)]["class"].value_counts().sort_index()\
            .items():
        warn(f"{ds}: class {cls!r} has {count} test image(s) but no training image: left out "
             "of the test set")
    test = test[test["class"].isin(learnt)]
    if test.empty:
        raise UserError(f"{ds}: the test split is empty; see {paths.rejected_file(ds)}")
    chosen = []
    for cls, group in test.groupby("class", sort=True):
        files = sorted(group["filename"])
        if per_class is not None and len(files) > per_class:
            random.Random(f"{seed}/test/{cls}").shuffle(files)
            files = sorted(files[:per_class])
        chosen += [(f, cls) for f in files]
    return chosen


def write_test_table(ds: str, per_class: int | None, seed: int) -> int:
    """The canonical test set every service is scored on; returns its size."""
    chosen = test_pairs(ds, per_class, seed)
    atomic_write_csv(paths.test_table(ds), TEST_HEADER, chosen)
    return len(chosen)


def load_test_images(ds: str) -> list[ImageRef]:
    """The test set every service is evaluated on (`data/<ds>/test.csv`)."""
    f = paths.test_table(ds)
    if not f.exists():
        raise UserError(f"{f}: missing; run `mlbench testsets {ds}` first")
    frame = pd.read_csv(f, dtype=str, keep_default_na=False)
    return [ImageRef(paths.split_dir(ds, "test") / c / name, c, "test", name)
            for name, c in zip(frame["filename"], frame["class"], strict=True)]


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def export_folders(ds: str) -> None:
    """Flat upload folders per ablation and split, as the seed made them (hard links)."""
    classes = tuple(read_classes(ds))
    shutil.rmtree(paths.uploads_dir(ds), ignore_errors=True)
    for n, split in splits_of(ds, load_table(ds), classes).items():
        for name, refs in (("train", split.train), ("val", split.val)):
            folder = paths.upload_folder(ds, name, n)
            folder.mkdir(parents=True, exist_ok=True)
            for ref in refs:
                _link(ref.path, folder / ref.name)
