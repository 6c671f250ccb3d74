"""Datasets that arrive as numpy arrays (digits, animals): written once as PNG files.

The arrays have no official split, so a stratified split with a fixed seed makes one; it does
not follow `params.yaml` `seed`, because the test set must not move when only the ablation
sampling seed changes. A marker records the format version, so a persisted `raw/` folder is
rebuilt when the way images are written changes.
"""

from __future__ import annotations

import shutil
from abc import abstractmethod
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from mlbench.core import ImageRef
from mlbench.data.diskspace import disk_full, is_disk_full
from mlbench.data.sources.base import DatasetSource, FetchContext
from mlbench.io import atomic_write_text

SPLIT_SEED = 20230501


class ArraySource(DatasetSource):
    """Subclasses give the arrays and how one becomes an image; this writes the files."""

    #: Bumped when the written images change.
    raw_version: int
    test_fraction: float
    file_prefix: str
    class_names: list[str]

    @abstractmethod
    def arrays(self, raw: Path, ctx: FetchContext) -> tuple[np.ndarray, np.ndarray]:
        """(images, integer labels indexing `class_names`)."""

    @abstractmethod
    def to_image(self, array: np.ndarray) -> Image.Image:
        """One array as an RGB image."""

    def fetch(self, raw: Path, ctx: FetchContext) -> None:
        from sklearn.model_selection import train_test_split

        done = raw / ".complete"
        if done.exists() and done.read_text().startswith(f"v{self.raw_version} "):
            return
        for split in ("train", "test"):
            shutil.rmtree(raw / split, ignore_errors=True)
        images, labels = self.arrays(raw, ctx)
        index = np.arange(len(labels))
        train_idx, test_idx = train_test_split(index, test_size=self.test_fraction,
                                               stratify=labels, random_state=SPLIT_SEED)
        try:
            for split, chosen in (("train", train_idx), ("test", test_idx)):
                for i in sorted(chosen):
                    out = raw / split / self.class_names[int(labels[i])] / \
                        f"{self.file_prefix}_{i:05d}.png"
                    out.parent.mkdir(parents=True, exist_ok=True)
                    self.to_image(images[i]).save(out, format="PNG")
            atomic_write_text(done, f"v{self.raw_version} {len(labels)} images\n")
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            for split in ("train", "test"):
                shutil.rmtree(raw / split, ignore_errors=True)
            raise disk_full(raw, f"writing the {len(labels):,} {self.name} images", None,
                            "rerun the fetch") from None

    def images(self, raw: Path) -> Iterator[ImageRef]:
        for split in ("train", "test"):
            for path in sorted((raw / split).glob("*/*.png")):
                yield ImageRef(path=path, class_name=path.parent.name, split=split)
