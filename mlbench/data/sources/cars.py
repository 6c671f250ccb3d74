"""`cars`: Stanford Cars, 196 make/model/year classes, 8,144 train / 8,041 test images.

The original site (ai.stanford.edu/~jkrause/cars) is gone. Two layouts are understood, found
by file name anywhere under `raw/` (so the Kaggle zip's doubled folders do not matter):

- **devkit** (the default fetch): images in `cars_train/` and `cars_test/` (the Kaggle mirror
  `jessicali9530/stanford-cars-dataset` nests them: `cars_train/cars_train/00001.jpg`; the
  original `cars_train.tgz`/`cars_test.tgz` do not), labels from the devkit
  (`car_devkit.tgz`: `devkit/cars_meta.mat`, `devkit/cars_train_annos.mat`) and the separate
  `cars_test_annos_withlabels.mat`. The Kaggle zip's own `cars_annos.mat` indexes different
  file names (`car_ims/...`) and is not used for it.
- **all-in-one**: `car_ims.tgz` (`car_ims/000001.jpg`) + `cars_annos.mat`
  (`relative_im_path`, `class`, `test`).

Classes in the `.mat` files are 1-based indices into `class_names`. Class names keep their
spaces ("AM General Hummer SUV 2000"); a `/` (as in "Ram C/V Cargo Van Minivan 2012") would
be a folder separator and becomes `-`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mlbench.core import ImageRef
from mlbench.data.extract import find_dirs, find_files, image_files
from mlbench.data.fetch import Remote, fetch_and_extract
from mlbench.data.sources.base import DatasetSource, FetchContext
from mlbench.errors import UserError

KAGGLE = "jessicali9530/stanford-cars-dataset"
REMOTES = [
    Remote(name="stanford-cars-dataset.zip", kaggle=KAGGLE),
    # The devkit as attached by torchvision's maintainers when the Stanford URL died.
    Remote(name="car_devkit.tgz",
           url="https://github.com/pytorch/vision/files/11644847/car_devkit.tgz"),
    # Test labels: the original URL is dead; a mirror or `sources.cars.url` must supply it.
    Remote(name="cars_test_annos_withlabels.mat",
           url="http://ai.stanford.edu/~jkrause/car196/cars_test_annos_withlabels.mat",
           optional=True),
]


class Cars(DatasetSource):
    name = "cars"
    description = "Stanford Cars, 196 classes, 8,144 train / 8,041 test images"

    def fetch(self, raw: Path, ctx: FetchContext) -> None:
        fetch_and_extract(self.name, raw, ctx, REMOTES)
        _layout(raw)  # fail now, in fetch, if a needed file is missing

    def images(self, raw: Path) -> Iterator[ImageRef]:
        yield from _layout(raw)()


def _first(paths: list[Path]) -> Path | None:
    return paths[0] if paths else None


def image_dir(raw: Path, name: str) -> Path | None:
    """The folder called `name` that directly holds images (the Kaggle zip nests it twice)."""
    return next((d for d in find_dirs(raw, name) if image_files(d, raw)), None)


def _layout(raw: Path) -> Callable[[], Iterator[ImageRef]]:
    """Which layout `raw` holds, as a generator of its images; UserError naming what lacks."""
    meta = _first(find_files(raw, "cars_meta.mat"))
    train_annos = _first(find_files(raw, "cars_train_annos.mat"))
    test_annos = _first(find_files(raw, "cars_test_annos_withlabels*.mat"))
    train_dir, test_dir = image_dir(raw, "cars_train"), image_dir(raw, "cars_test")
    if meta and train_annos and test_annos and train_dir and test_dir:
        return lambda: _devkit(meta, train_annos, test_annos, train_dir, test_dir)
    all_in_one = _first(find_files(raw, "cars_annos.mat"))
    car_ims = image_dir(raw, "car_ims")
    if all_in_one and car_ims:
        return lambda: _all_in_one(all_in_one, car_ims.parent)
    needed = {"cars_meta.mat (car_devkit.tgz)": meta,
              "cars_train_annos.mat (car_devkit.tgz)": train_annos,
              "cars_test_annos_withlabels.mat": test_annos,
              "cars_train/ images": train_dir, "cars_test/ images": test_dir}
    missing = ", ".join(k for k, v in needed.items() if v is None)
    if missing == "cars_test_annos_withlabels.mat":
        # Everything else came from live sources: only the test labels' dead URL is left.
        raise UserError(f"cars: the test labels are no longer published at their original URL; "
                        f"place cars_test_annos_withlabels.mat (Stanford's file, 8,041 records) "
                        f"at {raw / 'cars_test_annos_withlabels.mat'} and rerun")
    raise UserError(f"cars: {raw} lacks {missing}; add the missing files to MLBENCH_MIRROR or "
                    f"list every file in sources.cars.url (docs/datasets.md)")


def _load(path: Path) -> dict[str, Any]:
    from scipy.io import loadmat

    try:
        return loadmat(path, squeeze_me=True, struct_as_record=False)
    except Exception as exc:  # noqa: BLE001 - scipy raises many types for a bad file
        raise UserError(f"{path}: unreadable .mat file ({exc}); delete it, fetch again") from None


def class_names(mat: dict[str, Any], path: Path) -> list[str]:
    if "class_names" not in mat:
        raise UserError(f"{path}: no class_names variable")
    return [clean_class_name(str(n)) for n in np.atleast_1d(mat["class_names"])]


def clean_class_name(name: str) -> str:
    """Keep the published name (spaces included) but never a path separator."""
    return " ".join(name.replace("/", "-").replace("\\", "-").split())


def _annotations(mat: dict[str, Any], path: Path) -> list[Any]:
    if "annotations" not in mat:
        raise UserError(f"{path}: no annotations variable")
    return list(np.atleast_1d(mat["annotations"]))


def _class_of(rec: Any, names: list[str], path: Path) -> str:
    index = int(getattr(rec, "class"))
    if not 1 <= index <= len(names):  # 1-based, MATLAB style
        raise UserError(f"{path}: class {index} outside 1..{len(names)}")
    return names[index - 1]


def _devkit(meta: Path, train_annos: Path, test_annos: Path, train_dir: Path,
            test_dir: Path) -> Iterator[ImageRef]:
    names = class_names(_load(meta), meta)
    for split, annos, folder in (("train", train_annos, train_dir),
                                 ("test", test_annos, test_dir)):
        for rec in _annotations(_load(annos), annos):
            yield ImageRef(path=folder / Path(str(rec.fname)).name,
                           class_name=_class_of(rec, names, annos), split=split)


def _all_in_one(annos: Path, base: Path) -> Iterator[ImageRef]:
    mat = _load(annos)
    names = class_names(mat, annos)
    for rec in _annotations(mat, annos):
        rel = Path(*[p for p in str(rec.relative_im_path).split("/") if p not in ("", ".", "..")])
        yield ImageRef(path=base / rel, class_name=_class_of(rec, names, annos),
                       split="test" if int(rec.test) else "train")


SOURCE = Cars()
