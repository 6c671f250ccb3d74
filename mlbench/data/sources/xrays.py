"""`xrays`: chest X-rays (Kermany et al.), NORMAL vs PNEUMONIA, 5,216 train / 16 val / 624 test.

From Kaggle `paultimothymooney/chest-xray-pneumonia` (`chest-xray-pneumonia.zip`):
`chest_xray/{train,test,val}/{NORMAL,PNEUMONIA}/*.jpeg`, grayscale. The zip also holds a
second copy of the tree (`chest_xray/chest_xray/...`) and macOS litter (`__MACOSX/`,
`.DS_Store`): only the shallowest tree is read, so no image is counted twice.

The official `val` split has only 16 images (8 a class): too few to validate anything, so
they are folded into `train` (the benchmark holds out its own validation images from each
ablation). `test` stays the test split.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mlbench.core import ImageRef
from mlbench.data.extract import find_dirs, image_files
from mlbench.data.fetch import Remote, fetch_and_extract
from mlbench.data.sources.base import DatasetSource, FetchContext, Split
from mlbench.errors import UserError

KAGGLE = "paultimothymooney/chest-xray-pneumonia"
REMOTES = [Remote(name="chest-xray-pneumonia.zip", kaggle=KAGGLE)]
#: Folder in the archive -> benchmark split (val folded into train, see above).
SPLITS: dict[str, Split] = {"train": "train", "val": "train", "test": "test"}


class Xrays(DatasetSource):
    name = "xrays"
    description = "chest X-rays (Kaggle), NORMAL/PNEUMONIA, 5,216 train + 16 val / 624 test"

    def fetch(self, raw: Path, ctx: FetchContext) -> None:
        fetch_and_extract(self.name, raw, ctx, REMOTES)
        tree_root(raw)

    def images(self, raw: Path) -> Iterator[ImageRef]:
        root = tree_root(raw)
        for folder, split in SPLITS.items():
            split_dir = root / folder
            if not split_dir.is_dir():
                continue
            for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
                if class_dir.name.startswith("."):
                    continue
                for path in image_files(class_dir, raw):
                    yield ImageRef(path=path, class_name=class_dir.name, split=split)


def tree_root(raw: Path) -> Path:
    """The shallowest `chest_xray/` folder holding `train/` and `test/`."""
    for folder in find_dirs(raw, "chest_xray"):
        if (folder / "train").is_dir() and (folder / "test").is_dir():
            return folder
    raise UserError(f"xrays: no chest_xray/train + chest_xray/test under {raw}; delete the "
                    f"folder and fetch again")


SOURCE = Xrays()
