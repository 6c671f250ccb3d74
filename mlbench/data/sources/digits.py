"""`digits`: scikit-learn's bundled handwritten digits (1,797 real 8x8 images, 10 classes).

Built in, so `dvc repro` works with no network. The images are written as RGB PNGs upscaled to
32x32 with bilinear interpolation, light ink on dark as scikit-learn stores them (measured here:
blocky nearest-neighbour upscaling cost pretrained features 10-17 accuracy points). The set has no official split, so a
stratified split with a fixed seed makes one; it does not follow `params.yaml` `seed`, because the
test set must stay the same when only the ablation sampling seed changes.
"""

from __future__ import annotations

from collections.abc import Iterator
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from mlbench.data.sources.base import DatasetSource, FetchContext, RawImage
from mlbench.io import atomic_write_text

SPLIT_SEED = 20230501
#: Bumped when the written images change, so a persisted raw folder is rebuilt.
RAW_VERSION = 2
TEST_FRACTION = 0.25
SIZE = 32
CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


class Digits(DatasetSource):
    name = "digits"
    description = "scikit-learn handwritten digits, 10 classes, 1,797 8x8 images (built in)"
    builtin = True

    def fetch(self, raw: Path, ctx: FetchContext) -> None:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        done = raw / ".complete"
        if done.exists() and done.read_text().startswith(f"v{RAW_VERSION} "):
            return
        for split in ("train", "test"):
            shutil.rmtree(raw / split, ignore_errors=True)
        bunch = load_digits()
        images, targets = bunch.images, bunch.target
        index = np.arange(len(targets))
        train_idx, test_idx = train_test_split(
            index, test_size=TEST_FRACTION, stratify=targets, random_state=SPLIT_SEED
        )
        for split, chosen in (("train", train_idx), ("test", test_idx)):
            for i in sorted(chosen):
                label = CLASS_NAMES[targets[i]]
                out = raw / split / label / f"digit_{i:04d}.png"
                out.parent.mkdir(parents=True, exist_ok=True)
                gray = (images[i] * (255 / 16)).round().astype(np.uint8)  # 0..16 -> 0..255
                img = Image.fromarray(gray, mode="L").resize((SIZE, SIZE), Image.BILINEAR)
                img.convert("RGB").save(out, format="PNG")
        atomic_write_text(done, f"v{RAW_VERSION} {len(targets)} images\n")

    def images(self, raw: Path) -> Iterator[RawImage]:
        for split in ("train", "test"):
            for path in sorted((raw / split).glob("*/*.png")):
                yield RawImage(path=path, class_name=path.parent.name, split=split)


SOURCE = Digits()
