"""`digits`: scikit-learn's bundled handwritten digits (1,797 real 8x8 images, 10 classes).

Built in, so `dvc repro` works with no network. The images are written as RGB PNGs upscaled to
32x32 with bilinear interpolation, light ink on dark as scikit-learn stores them (measured here:
blocky nearest-neighbour upscaling cost pretrained features 10-17 accuracy points). 25% of each
class is held out as the test split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from mlbench.data.sources._arrays import ArraySource
from mlbench.data.sources.base import FetchContext

SIZE = 32


class Digits(ArraySource):
    name = "digits"
    description = "scikit-learn handwritten digits, 10 classes, 1,797 8x8 images (built in)"
    builtin = True
    raw_version = 2
    test_fraction = 0.25
    file_prefix = "digit"
    class_names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

    def arrays(self, raw: Path, ctx: FetchContext) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target

    def to_image(self, array: np.ndarray) -> Image.Image:
        gray = (array * (255 / 16)).round().astype(np.uint8)  # 0..16 -> 0..255
        return Image.fromarray(gray, mode="L").resize((SIZE, SIZE), Image.BILINEAR).convert("RGB")


SOURCE = Digits()
