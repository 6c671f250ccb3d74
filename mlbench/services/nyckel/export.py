"""Nyckel's seed files: per ablation one CSV of what becomes the function's samples (train +
val: Nyckel cross-validates by itself), and the test set; `file,class` rows, no header line.

`samples` is what the service uploads, so the exported file and the upload cannot disagree.
"""

from __future__ import annotations

from mlbench import paths
from mlbench.core import AblationSplit, ImageRef
from mlbench.data.export import ExportTarget, pairs


def samples(split: AblationSplit) -> list[tuple[ImageRef, tuple[str, str]]]:
    """Each image Nyckel gets, with its (externalId, labelName): the rows of the seed's CSV."""
    refs = split.all
    return list(zip(refs, pairs(refs), strict=True))


def export(target: ExportTarget) -> int:
    ds = target.dataset
    written = sum(target.write_csv(paths.ablation_csv(ds, "train", n, "nyckel"), None,
                                   [row for _, row in samples(split)])
                  for n, split in target.splits.items())
    return written + target.write_csv(paths.test_csv(ds, "nyckel"), None, pairs(target.tests))
