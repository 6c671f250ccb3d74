"""Nyckel's seed files: per ablation one CSV of train + val (Nyckel cross-validates by itself,
so it gets both as samples), and the test set."""

from __future__ import annotations

from mlbench import paths
from mlbench.data.export import GENERIC, ExportTarget, pairs


def export(target: ExportTarget) -> int:
    ds = target.dataset
    written = sum(target.write_csv(paths.ablation_csv(ds, "train", n, "nyckel"), GENERIC,
                                   pairs(split.all)) for n, split in target.splits.items())
    return written + target.write_csv(paths.test_csv(ds, "nyckel"), GENERIC, pairs(target.tests))
