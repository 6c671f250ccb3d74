"""Rekognition's files: where each image goes in S3, and the Ground Truth manifests naming them.

The API labels images only through a manifest (folder-name labelling is a console feature), one
JSON line per image. One module owns the key layout and the manifest format, for the seed-named
files of every ablation (`export`) and for what the service uploads: the manifests the seed
kept are byte for byte the ones Rekognition imports. Layout in the bucket, one prefix per
dataset and ablation so ablations never mix:

    mlbench/<dataset>/<n>/train/<class folder>/<file>
    mlbench/<dataset>/<n>/val/<class folder>/<file>
    mlbench/<dataset>/<n>/manifests/{train,val}.manifest
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

from mlbench import paths
from mlbench.core import ImageRef
from mlbench.data.export import ExportTarget, pairs

ROOT = "mlbench"
#: Ground Truth label attribute of our manifests (any name not ending in -ref/-metadata works).
LABEL_ATTRIBUTE = "mlbench-class"
#: `creation-date` of every line: fixed, so a manifest is a pure function of the ablation.
CREATED = "2023-05-01T00:00:00.000"


def prefix(dataset: str, n: int) -> str:
    return f"{ROOT}/{dataset}/{n}"


def class_folder(name: str) -> str:
    """A key-safe folder for a class name (`Ram C/V Cargo Van` -> `Ram_C_V_Cargo_Van`).

    Not necessarily injective: labels come from the manifest, and file names are unique across
    the dataset, so two classes folding to the same folder cannot collide on a key.
    """
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9._-]+", "_", folded).strip("._") or "class"


def object_key(dataset: str, n: int, split: str, ref: ImageRef) -> str:
    return f"{prefix(dataset, n)}/{split}/{class_folder(ref.class_name)}/{ref.name}"


def manifest_key(dataset: str, n: int, split: str) -> str:
    return f"{prefix(dataset, n)}/manifests/{split}.manifest"


def manifest_file(dataset: str, split: str, n: int) -> Path:
    """The seed-named local copy of a manifest."""
    return paths.ablations_dir(dataset) / f"{dataset}_{split}_aws_{n}.manifest"


def manifest(dataset: str, n: int, split: str, refs: Iterable[ImageRef], bucket: str,
             classes: Sequence[str]) -> bytes:
    """The Ground Truth image-classification manifest of one split (JSON lines)."""
    index = {c: i for i, c in enumerate(classes)}
    lines = []
    for ref in refs:
        lines.append(json.dumps({
            "source-ref": f"s3://{bucket}/{object_key(dataset, n, split, ref)}",
            LABEL_ATTRIBUTE: index[ref.class_name],
            f"{LABEL_ATTRIBUTE}-metadata": {
                "confidence": 1,
                "job-name": f"labeling-job/{LABEL_ATTRIBUTE}",
                "class-name": ref.class_name,
                "human-annotated": "yes",
                "creation-date": CREATED,
                "type": "groundtruth/image-classification",
            },
        }, ensure_ascii=False) + "\n")
    return "".join(lines).encode("utf-8")


def export(target: ExportTarget) -> int:
    ds, bucket = target.dataset, target.bucket("aws")
    written = 0
    for n, split in target.splits.items():
        for name, refs in (("train", split.train), ("val", split.val)):
            written += target.write_csv(paths.ablation_csv(ds, name, n, "aws"), None,
                                        pairs(refs))
            data = manifest(ds, n, name, refs, bucket, target.classes)
            written += target.write_bytes(manifest_file(ds, name, n), data)
    return written + target.write_csv(paths.test_csv(ds, "aws"), None, pairs(target.tests))
