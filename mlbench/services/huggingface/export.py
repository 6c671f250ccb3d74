"""Hugging Face's seed files: `file,label` CSVs per ablation and split, the test set, and the
AutoTrain uploads (a zip per split with one folder per class, nothing else inside)."""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from pathlib import Path

from mlbench import paths
from mlbench.core import ImageRef
from mlbench.data.export import ExportTarget, pairs

HEADER = ("file", "label")
#: The seed's Hugging Face test file names its first column differently from its ablations.
TEST_HEADER = ("image_url", "label")


def autotrain_zip(ds: str, split: str, n: int) -> Path:
    """AutoTrain's image-classification upload of one ablation split."""
    return paths.ablations_dir(ds) / f"autotrain_{split}_{n}.zip"


def write_autotrain_zip(path: Path, refs: Iterable[ImageRef]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
        for ref in refs:
            zf.write(ref.path, f"{ref.class_name}/{ref.name}")
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
