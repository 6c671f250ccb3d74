"""Vertex AI's files: the seed's, and the import file the service uploads.

The seed kept `gs://<bucket>/<folder>/<file>,<class>` rows (its own test suite checks they are
the generic rows with the bucket folder before each file). Vertex's API imports another format,
`ml_use,gs://<bucket>/<folder>/<file>,<label>` with labels made Vertex-safe by
`labels.vertex_label_map`: `import_file` builds it, for the upload and for its exported copy
(`<ds>_vertex_import_<n>.csv`), so what is kept and what Vertex imports cannot drift apart.
Images sit in the bucket under the seed's folders (`training_uploads/`, `val_uploads/`,
`test_uploads/`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from mlbench import paths
from mlbench.core import AblationSplit, ImageRef
from mlbench.data.export import ExportTarget
from mlbench.services.vertex.labels import vertex_label_map

#: The `ml_use` of each split in an import file (the filter split trains on these).
ML_USE = {"train": "training", "val": "validation", "test": "test"}


def object_name(split: str, ref: ImageRef) -> str:
    """Where an image of `split` sits in the bucket: `<seed folder>/<upload name>`."""
    return f"{paths.UPLOAD_FOLDERS[split]}/{ref.name}"


def import_rows(split: str, refs: Iterable[ImageRef], bucket: str,
                labels: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """The import-file rows of the images of one split."""
    return [(ML_USE[split], f"gs://{bucket}/{object_name(split, r)}", labels[r.class_name])
            for r in refs]


def import_file(split: AblationSplit, tests: Sequence[ImageRef], bucket: str,
                labels: Mapping[str, str]) -> str:
    """The import file the service uploads: the rows of the seed's train, val and test files of
    the ablation, in that order, as one CSV text."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")  # as ExportTarget.write_csv writes them
    for name, refs in (("train", split.train), ("val", split.val), ("test", tests)):
        writer.writerows(import_rows(name, refs, bucket, labels))
    return buf.getvalue()


def import_file_path(ds: str, n: int) -> Path:
    """The exported copy of what the service imports for an ablation."""
    return paths.ablations_dir(ds) / f"{ds}_vertex_import_{n}.csv"


def seed_rows(split: str, refs: Iterable[ImageRef], bucket: str) -> list[tuple[str, str]]:
    """The seed's Vertex rows: `gs://<bucket>/<folder>/<file>,<class>` (the generic rows with
    the bucket folder before each file; no `ml_use`, the class names as they are)."""
    return [(f"gs://{bucket}/{object_name(split, r)}", r.class_name) for r in refs]


def export(target: ExportTarget) -> int:
    """The seed's files (`<ds>_{train,val}_vertex_<n>.csv`, `<ds>_test_vertex.csv`) and, under
    a name of its own beside them, the import file Vertex's API takes for each ablation
    (`ml_use` column, Vertex-safe labels): the very text the service uploads."""
    ds, bucket = target.dataset, target.bucket("google")
    labels = vertex_label_map(target.classes)
    written = 0
    for n, split in target.splits.items():
        for name, refs in (("train", split.train), ("val", split.val)):
            written += target.write_csv(paths.ablation_csv(ds, name, n, "vertex"), None,
                                        seed_rows(name, refs, bucket))
        written += target.write_bytes(import_file_path(ds, n),
                                      import_file(split, target.tests, bucket, labels).encode())
    return written + target.write_csv(paths.test_csv(ds, "vertex"), None,
                                      seed_rows("test", target.tests, bucket))
