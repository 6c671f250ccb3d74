"""`food`: Food-101, 101 dishes, 101,000 images (750 train / 250 test per class).

One archive, `food-101.tar.gz` (about 5 GB, MD5 published by ETH Zurich and checked), holding
`food-101/images/<class>/<id>.jpg` and the official split in `food-101/meta/train.txt` and
`meta/test.txt`: lines such as `apple_pie/1005649`, without the `.jpg`. The class is the
folder name (`apple_pie`), as in `meta/classes.txt`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mlbench.core import ImageRef
from mlbench.data.extract import find_files
from mlbench.data.fetch import Remote, fetch_and_extract
from mlbench.data.sources.base import DatasetSource, FetchContext, Split
from mlbench.errors import UserError

REMOTES = [Remote(name="food-101.tar.gz", url="http://data.vision.ee.ethz.ch/cvl/food-101.tar.gz",
                  md5="85eeb15f3717b99a5da872d97d918f87")]


class Food(DatasetSource):
    name = "food"
    description = "Food-101 (ETH Zurich), 101 classes, 75,750 train / 25,250 test images"

    def fetch(self, raw: Path, ctx: FetchContext) -> None:
        fetch_and_extract(self.name, raw, ctx, REMOTES)
        _root(raw)

    def images(self, raw: Path) -> Iterator[ImageRef]:
        root = _root(raw)
        splits: tuple[tuple[Split, str], ...] = (("train", "train.txt"), ("test", "test.txt"))
        for split, listing in splits:
            for line in (root / "meta" / listing).read_text(encoding="utf-8").splitlines():
                entry = line.strip()
                if not entry or entry.startswith("#"):
                    continue
                class_name, _, stem = entry.partition("/")
                if not stem or ".." in entry.split("/"):
                    raise UserError(f"{root / 'meta' / listing}: unexpected line {line!r}")
                yield ImageRef(path=root / "images" / class_name / f"{stem}.jpg",
                               class_name=class_name, split=split)


def _root(raw: Path) -> Path:
    """The folder holding `meta/train.txt` and `images/` (`raw/food-101` in the real archive)."""
    for listing in find_files(raw, "train.txt"):
        root = listing.parent.parent
        if listing.parent.name == "meta" and (root / "meta" / "test.txt").is_file() and (
            root / "images"
        ).is_dir():
            return root
    raise UserError(f"food: no food-101/meta/train.txt + test.txt + images/ under {raw}; delete "
                    f"the folder and fetch again")


SOURCE = Food()
