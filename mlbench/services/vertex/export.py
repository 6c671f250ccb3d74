"""Vertex AI's files: the import CSV rows (`ml_use,gs://<bucket>/<folder>/<file>,<label>`).

One function builds the rows, for the seed-named files of every ablation (`export`) and for the
import file the service uploads beside the images: what the seed kept and what Vertex imports
cannot drift apart. Images sit in the bucket under the seed's folders (`training_uploads/`,
`val_uploads/`, `test_uploads/`); labels are made Vertex-safe by `labels.vertex_label_map`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence

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


def export(target: ExportTarget) -> int:
    ds, bucket = target.dataset, target.bucket("google")
    labels = vertex_label_map(target.classes)
    written = 0
    for n, split in target.splits.items():
        for name, refs in (("train", split.train), ("val", split.val)):
            written += target.write_csv(paths.ablation_csv(ds, name, n, "vertex"), None,
                                        import_rows(name, refs, bucket, labels))
    return written + target.write_csv(paths.test_csv(ds, "vertex"), None,
                                      import_rows("test", target.tests, bucket, labels))
