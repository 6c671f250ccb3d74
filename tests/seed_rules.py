"""The rules the seed benchmark's own test suite checks on its data files, as this project's
code (`test_data_files.py` in ajtatey/image-classification-services-benchmark reads the files
line by line, as text; so does this). Used on the files of a default run and of the fixtures.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path


def _lines(path: Path) -> list[str]:
    with path.open() as fh:
        return fh.readlines()


def check_seed_files(root: Path, ds: str, sizes: list[int], n_classes: int,
                     google_bucket: str) -> None:
    """Assert every rule of the seed's data-file tests on `root/data/<ds>/`."""
    folder = root / "data" / ds / "ablations"

    def ablation(split: str, n: int, fmt: str = "") -> list[str]:
        return _lines(folder / f"{ds}_{split}{'_' + fmt if fmt else ''}_{n}.csv")

    test = _lines(root / "data" / ds / f"{ds}_test_nyckel.csv")  # where the seed kept it
    for n in sizes:
        train, val = ablation("train", n), ablation("val", n)
        # sizes: 80% of n per class in train, 20% in val
        assert len(train) == n_classes * n * 0.8, (n, len(train))
        assert len(val) == n_classes * n * 0.2, (n, len(val))
        # no split mixing
        assert not set(train) & set(test) and not set(val) & set(test)
        assert not set(train) & set(val)
        # balanced
        counts = Counter(line.split(",")[1].strip() for line in train)
        assert set(counts.values()) == {n * 0.8}, counts
        # the vendor files hold the generic rows
        assert set(ablation("train", n, "nyckel")) <= set(train + val)
        for split, rows in (("train", train), ("val", val)):
            vertex = [line.removeprefix(f"gs://{google_bucket}/training_uploads/")
                      .removeprefix(f"gs://{google_bucket}/val_uploads/")
                      for line in ablation(split, n, "vertex")]
            assert set(vertex) == set(rows), (split, n)
            assert set(ablation(split, n, "hg")[1:]) == set(rows)
            assert set(ablation(split, n, "aws")) == set(rows)
            azure = [line.removeprefix("azureml://training_uploads/")
                     .removeprefix("azureml://val_uploads/")
                     for line in ablation(split, n, "azure")[1:]]
            assert set(azure) == set(rows)
    # cumulative: every image of a smaller ablation is in each larger one
    for small, large in zip(sorted(sizes), sorted(sizes)[1:], strict=False):
        assert set(ablation("train", small)) <= set(ablation("train", large))
