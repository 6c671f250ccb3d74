"""Hugging Face's seed files: `file,label` CSVs per ablation and split, the test set, and the
AutoTrain uploads (a zip per split with one folder per class, nothing else inside).

The service's dataset repo holds the same `<class>/<file>` entries under a split folder
(`train/`, `validation/`: the `imagefolder` layout), built by `imagefolder` below from the same
`class_path`, so the repo and the zips cannot disagree on what an ablation holds."""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from pathlib import Path

from mlbench import paths
from mlbench.core import AblationSplit, ImageRef
from mlbench.data.export import ExportTarget, pairs

HEADER = ("file", "label")
#: The seed's Hugging Face test file names its first column differently from its ablations.
TEST_HEADER = ("image_url", "label")
#: The ablation's parts and their split folder in the dataset repo (imagefolder's split names).
IMAGEFOLDER_SPLITS = (("train", "train"), ("val", "validation"))


def class_path(ref: ImageRef) -> str:
    """`<class>/<file>`: an image's place in an AutoTrain zip and in a split folder."""
    return f"{ref.class_name}/{ref.name}"


def imagefolder(split: AblationSplit) -> list[tuple[str, ImageRef]]:
    """(path in the dataset repo, image) of every train and val image of the ablation."""
    parts = {"train": split.train, "val": split.val}
    return [(f"{folder}/{class_path(ref)}", ref) for part, folder in IMAGEFOLDER_SPLITS
            for ref in parts[part]]


def autotrain_zip(ds: str, split: str, n: int) -> Path:
    """AutoTrain's image-classification upload of one ablation split."""
    return paths.ablations_dir(ds) / f"autotrain_{split}_{n}.zip"


def write_autotrain_zip(path: Path, refs: Iterable[ImageRef]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for ref in refs:
            zf.write(ref.path, class_path(ref))
    tmp.replace(path)


def export(target: ExportTarget) -> int:
    ds, written = target.dataset, 0
    for n, split in target.splits.items():
        for name, refs in (("train", split.train), ("val", split.val)):
            written += target.write_csv(paths.ablation_csv(ds, name, n, "hg"), HEADER,
                                        pairs(refs))
            write_autotrain_zip(autotrain_zip(ds, name, n), refs)
            written += 1
    return written + target.write_csv(paths.test_csv(ds, "hg"), TEST_HEADER, pairs(target.tests))
