"""The canonical ablation table -> every service's file format; test sets; upload folders.

File names follow the seed benchmark (`<ds>_train_<n>.csv`, `<ds>_train_vertex_<n>.csv`, ...)
so its instructions and scripts keep working. Per size (9 CSV files, as in the seed):
generic train/val, Vertex train/val, Hugging Face train/val, Nyckel (train + val in one file:
Nyckel cross-validates internally), AWS train/val; plus one Ground Truth manifest per AWS split.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from mlbench import paths
from mlbench.data.ablate import load_table
from mlbench.data.labels import vertex_label_map
from mlbench.data.prepare import read_classes
from mlbench.errors import UserError
from mlbench.io import atomic_write_csv, atomic_write_text
from mlbench.services.base import ImageRef

GENERIC = ["filename", "class"]
HF = ["file", "label"]
VERTEX_ML_USE = {"train": "training", "val": "validation", "test": "test"}
VERTEX_FOLDER = {"train": "training_uploads", "val": "val_uploads", "test": "test_uploads"}
TEST_FORMATS = ("local", "nyckel", "hg", "vertex", "aws")


def _pairs(frame: pd.DataFrame) -> list[tuple[str, str]]:
    return list(zip(frame["filename"], frame["class"], strict=True))


def vertex_rows(ds: str, split: str, pairs: Sequence[tuple[str, str]], bucket: str) -> list:
    labels = vertex_label_map(read_classes(ds))
    return [(VERTEX_ML_USE[split], f"gs://{bucket}/{VERTEX_FOLDER[split]}/{f}", labels[c])
            for f, c in pairs]


def ground_truth_lines(pairs: Sequence[tuple[str, str]], classes: Sequence[str], bucket: str,
                       prefix: str, attribute: str = "class") -> str:
    """A SageMaker Ground Truth image-classification manifest, as Rekognition's API needs."""
    index = {c: i for i, c in enumerate(classes)}
    lines = []
    for f, c in pairs:
        lines.append(json.dumps({
            "source-ref": f"s3://{bucket}/{prefix}/{c}/{f}",
            attribute: index[c],
            f"{attribute}-metadata": {
                "confidence": 1,
                "job-name": f"labeling-job/{attribute}",
                "class-name": c,
                "human-annotated": "yes",
                "creation-date": "2023-05-01T00:00:00.000",
                "type": "groundtruth/image-classification",
            },
        }))
    return "".join(line + "\n" for line in lines)


def export_ablations(ds: str, buckets: dict[str, str]) -> int:
    """Write every service format for every size in the canonical table; return files written."""
    table = load_table(ds)
    classes = read_classes(ds)
    gbucket, abucket = buckets.get("google", "mlbench"), buckets.get("aws", "mlbench")
    written = 0
    for n, rows in table.groupby("size"):
        train, val = _pairs(rows[rows["split"] == "train"]), _pairs(rows[rows["split"] == "val"])
        vertex_train = vertex_rows(ds, "train", train, gbucket)
        vertex_val = vertex_rows(ds, "val", val, gbucket)
        files = {
            paths.ablation_csv(ds, "train", n): (GENERIC, train),
            paths.ablation_csv(ds, "val", n): (GENERIC, val),
            paths.ablation_csv(ds, "train", n, "vertex"): (None, vertex_train),
            paths.ablation_csv(ds, "val", n, "vertex"): (None, vertex_val),
            paths.ablation_csv(ds, "train", n, "hg"): (HF, train),
            paths.ablation_csv(ds, "val", n, "hg"): (HF, val),
            paths.ablation_csv(ds, "train", n, "nyckel"): (GENERIC, train + val),
            paths.ablation_csv(ds, "train", n, "aws"): (GENERIC, train),
            paths.ablation_csv(ds, "val", n, "aws"): (GENERIC, val),
        }
        for path, (header, body) in files.items():
            atomic_write_csv(path, header, body)
        for split, pairs in (("train", train), ("val", val)):
            atomic_write_text(paths.aws_manifest(ds, split, n),
                              ground_truth_lines(pairs, classes, abucket, split))
        written += len(files) + 2
    return written


def test_pairs(ds: str, per_class: int | None, seed: int) -> list[tuple[str, str]]:
    """(filename, class) of the test set: all test images, or `per_class` of each, seeded."""
    f = paths.manifest_file(ds)
    if not f.exists():
        raise UserError(f"{f}: missing; run `mlbench prepare {ds}` first")
    manifest = pd.read_csv(f, dtype=str, keep_default_na=False)
    test = manifest[manifest["split"] == "test"]
    if test.empty:
        raise UserError(f"{ds}: the test split is empty; see {paths.rejected_file(ds)}")
    pairs = []
    for cls, group in test.groupby("class", sort=True):
        files = sorted(group["filename"])
        if per_class is not None and len(files) > per_class:
            random.Random(f"{seed}/test/{cls}").shuffle(files)
            files = sorted(files[:per_class])
        pairs += [(f, cls) for f in files]
    return pairs


def export_testsets(ds: str, per_class: int | None, seed: int, buckets: dict[str, str]) -> None:
    pairs = test_pairs(ds, per_class, seed)
    gbucket = buckets.get("google", "mlbench")
    paths.tests_dir(ds).mkdir(parents=True, exist_ok=True)
    for fmt in TEST_FORMATS:
        if fmt == "vertex":
            atomic_write_csv(paths.test_csv(ds, fmt), None, vertex_rows(ds, "test", pairs, gbucket))
        else:
            atomic_write_csv(paths.test_csv(ds, fmt), HF if fmt == "hg" else GENERIC, pairs)


def load_test_images(ds: str) -> list[ImageRef]:
    """The test set every service is evaluated on (`<ds>_test_local.csv`)."""
    f = paths.test_csv(ds, "local")
    if not f.exists():
        raise UserError(f"{f}: missing; run `mlbench testsets {ds}` first")
    frame = pd.read_csv(f, dtype=str, keep_default_na=False)
    return [ImageRef(paths.split_dir(ds, "test") / c / name, name, c)
            for name, c in zip(frame["filename"], frame["class"], strict=True)]


def _link(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def export_folders(ds: str) -> None:
    """Flat upload folders per ablation (as the seed made) + AutoTrain zips (class folders)."""
    table = load_table(ds)
    shutil.rmtree(paths.uploads_dir(ds), ignore_errors=True)
    for n, rows in table.groupby("size"):
        for split in ("train", "val"):
            part = _pairs(rows[rows["split"] == split])
            folder = paths.upload_folder(ds, split, n)
            folder.mkdir(parents=True, exist_ok=True)
            for f, c in part:
                _link(paths.split_dir(ds, "train") / c / f, folder / f)
            zpath = paths.autotrain_zip(ds, split, n)
            with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_STORED) as zf:
                for f, c in part:
                    zf.write(paths.split_dir(ds, "train") / c / f, f"{c}/{f}")
