"""Azure ML's files: the seed's `_azure_` CSVs, and the MLTables the service uploads.

The seed kept `<ds>_{train,val}_azure_<n>.csv` and `<ds>_test_azure.csv`: a header
`image_url,label`, then `azureml://<seed folder>/<file>,<class>` rows. The service stores each
image at the same seed folder under `mlbench/<ds>/` in the datastore's container, and the JSON
lines of its MLTables name them with the datastore URI AutoML reads
(`azureml://datastores/<datastore>/paths/mlbench/<ds>/<seed folder>/<file>`): both are built
from `object_name`, so what the seed kept and what AutoML trains on cannot drift apart.
No SDK import here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from mlbench import paths
from mlbench.core import ImageRef
from mlbench.data.export import ExportTarget

#: The seed's header of its Azure ML files (AutoML's column names, too).
HEADER = ("image_url", "label")
ROOT = "mlbench"
#: An MLTable that reads `images.jsonl` beside it and streams each `image_url` (as Azure's
#: AutoML image samples write it).
MLTABLE = ("paths:\n"
           "  - file: ./images.jsonl\n"
           "transformations:\n"
           "  - read_json_lines:\n"
           "        encoding: utf8\n"
           "        invalid_lines: error\n"
           "        include_path_column: false\n"
           "  - convert_column_types:\n"
           "      - columns: image_url\n"
           "        column_type: stream_info\n")


def object_name(split: str, ref: ImageRef) -> str:
    """The seed's place of an image: `<seed folder>/<upload name>`."""
    return f"{paths.UPLOAD_FOLDERS[split]}/{ref.name}"


def seed_rows(split: str, refs: Iterable[ImageRef]) -> list[tuple[str, str]]:
    """The seed's rows: `azureml://<seed folder>/<file>`, the class as it is."""
    return [(f"azureml://{object_name(split, r)}", r.class_name) for r in refs]


def blob_name(dataset: str, split: str, ref: ImageRef) -> str:
    """Where the image sits in the container (datasets apart: file names repeat across them)."""
    return f"{ROOT}/{dataset}/{object_name(split, ref)}"


def datastore_uri(datastore: str, path: str) -> str:
    return f"azureml://datastores/{datastore}/paths/{path}"


def jsonl(dataset: str, split: str, refs: Iterable[ImageRef], datastore: str) -> str:
    """The JSON lines of one MLTable (`image_url`, `label`), one image a line, the seed's
    rows in the seed's order."""
    return "".join(json.dumps({HEADER[0]: datastore_uri(datastore, blob_name(dataset, split, r)),
                               HEADER[1]: r.class_name}, ensure_ascii=False) + "\n"
                   for r in refs)


def export(target: ExportTarget) -> int:
    """The seed's Azure ML files of every ablation and its test file; how many were written."""
    ds, written = target.dataset, 0
    for n, split in target.splits.items():
        for name, refs in (("train", split.train), ("val", split.val)):
            written += target.write_csv(paths.ablation_csv(ds, name, n, "azure"), HEADER,
                                        seed_rows(name, refs))
    return written + target.write_csv(paths.test_csv(ds, "azure"), HEADER,
                                      seed_rows("test", target.tests))
