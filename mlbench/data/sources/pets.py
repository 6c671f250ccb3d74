"""`pets`: Oxford-IIIT Pets, 37 cat and dog breeds, 3,680 trainval / 3,669 test images.

Two files from the VGG site, `images.tar.gz` (`images/<Breed>_<n>.jpg`, plus a few `.mat`
files) and `annotations.tar.gz` (`annotations/trainval.txt`, `test.txt`, `list.txt`). Despite
the name both are plain, uncompressed tar (extraction opens them with `r:*`). List lines are
`Image CLASS-ID SPECIES BREED-ID` (`list.txt` starts with `#` comments). The class is the
breed, the file name without its `_<n>` suffix, with its capitalisation: cat breeds are
capitalised (`Egyptian_Mau`), dog breeds lower-case (`american_bulldog`). The official
`trainval` list is the train split. About a dozen files are corrupt or not really JPEG;
`prepare` converts what it can and rejects the rest with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from mlbench.core import ImageRef
from mlbench.data.extract import find_dirs, find_files
from mlbench.data.fetch import Remote, fetch_and_extract
from mlbench.data.sources.base import DatasetSource, FetchContext, Split
from mlbench.errors import UserError

BASE = "https://thor.robots.ox.ac.uk/~vgg/data/pets"
REMOTES = [Remote(name="images.tar.gz", url=f"{BASE}/images.tar.gz"),
           Remote(name="annotations.tar.gz", url=f"{BASE}/annotations.tar.gz")]
LISTS: tuple[tuple[Split, str], ...] = (("train", "trainval.txt"), ("test", "test.txt"))


class Pets(DatasetSource):
    name = "pets"
    description = "Oxford-IIIT Pets, 37 breeds, 3,680 trainval / 3,669 test images"

    def fetch(self, raw: Path, ctx: FetchContext) -> None:
        fetch_and_extract(self.name, raw, ctx, REMOTES)
        _folders(raw)

    def images(self, raw: Path) -> Iterator[ImageRef]:
        annotations, images = _folders(raw)
        for split, listing in LISTS:
            for line in (annotations / listing).read_text(encoding="utf-8").splitlines():
                fields = line.split()
                if not fields or fields[0].startswith("#"):
                    continue
                name = fields[0]
                breed, sep, number = name.rpartition("_")
                if not sep or not breed or "/" in name or "\\" in name:
                    raise UserError(f"{annotations / listing}: unexpected line {line!r}")
                yield ImageRef(path=images / f"{name}.jpg", class_name=breed, split=split)


def _folders(raw: Path) -> tuple[Path, Path]:
    """(the folder holding trainval.txt + test.txt, the `images/` folder)."""
    annotations = next((f.parent for f in find_files(raw, "trainval.txt")
                        if (f.parent / "test.txt").is_file()), None)
    images = next((d for d in find_dirs(raw, "images") if any(d.glob("*.jpg"))), None)
    if annotations is None or images is None:
        what = "annotations/trainval.txt + test.txt" if annotations is None else "images/*.jpg"
        raise UserError(f"pets: no {what} under {raw}; fetch needs both images.tar.gz and "
                        f"annotations.tar.gz")
    return annotations, images


SOURCE = Pets()
