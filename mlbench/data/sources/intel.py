"""`intel`: Intel Image Classification, 6 natural scenes, 14,034 train / 3,000 test images.

From Kaggle `puneet6060/intel-image-classification` (`intel-image-classification.zip`), which
nests every folder twice: `seg_train/seg_train/<class>/<n>.jpg` and
`seg_test/seg_test/<class>/<n>.jpg`. The 7,301 images of `seg_pred/` carry no label and are
not used.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mlbench.core import ImageRef
from mlbench.data.extract import find_dirs, image_files
from mlbench.data.fetch import Remote, fetch_and_extract
from mlbench.data.sources.base import DatasetSource, FetchContext, Split
from mlbench.errors import UserError

KAGGLE = "puneet6060/intel-image-classification"
REMOTES = [Remote(name="intel-image-classification.zip", kaggle=KAGGLE)]
SPLIT_DIRS: tuple[tuple[Split, str], ...] = (("train", "seg_train"), ("test", "seg_test"))


class Intel(DatasetSource):
    name = "intel"
    description = "Intel Image Classification (Kaggle), 6 classes, 14,034 train / 3,000 test"

    def fetch(self, raw: Path, ctx: FetchContext) -> None:
        fetch_and_extract(self.name, raw, ctx, REMOTES)
        for _, folder in SPLIT_DIRS:
            class_root(raw, folder)

    def images(self, raw: Path) -> Iterator[ImageRef]:
        for split, folder in SPLIT_DIRS:
            root = class_root(raw, folder)
            for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
                for path in image_files(class_dir, raw):
                    yield ImageRef(path=path, class_name=class_dir.name, split=split)


def class_root(raw: Path, name: str) -> Path:
    """The `name` folder whose sub-folders hold the images (the inner one of the nested pair)."""
    for folder in find_dirs(raw, name):
        if any(image_files(c, raw) for c in folder.iterdir() if c.is_dir()):
            return folder
    raise UserError(f"intel: no {name}/<class>/ image folders under {raw}; delete the folder "
                    f"and fetch again")


SOURCE = Intel()
