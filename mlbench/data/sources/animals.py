"""`animals`: Animal-MNIST, 10 classes x 1,000 real 28x28 animal silhouettes (MIT licence).

Built in the sense that it needs no dataset host: the data ships inside the PyPI wheel
`animal-mnist==0.4`, fetched with `pip download --no-deps` (its metadata wrongly requires
TensorFlow, and its module imports it, so the package is never installed or imported) and
checked against a pinned sha256. A mirror (`sources.animals.url` or `MLBENCH_MIRROR`) serves the
same wheel file for air-gapped machines and tests.

The wheel stores two gzipped pickles of numpy arrays. Pickles can run code, so they are read
with an unpickler that only admits the numpy array constructors. The set has no official
split: `ArraySource` makes a seeded stratified one (20% test).
"""

from __future__ import annotations

import gzip
import io
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from mlbench.data.fetch import Remote, fetch_files, file_digests
from mlbench.data.sources._arrays import ArraySource
from mlbench.data.sources.base import FetchContext
from mlbench.errors import UserError

WHEEL = "animal_mnist-0.4-py3-none-any.whl"
WHEEL_SHA256 = "aeebf3d9de4552d6fd2d5701424e1a5b9020f8e5115d68df9db252f2f53ce2ce"
DATA = "animal_mnist/data/Animal_MNIST/animal_data_version_3.gz"
LABELS = "animal_mnist/data/Animal_MNIST/animal_label_version_3.gz"
#: Label order of the dataset (checked by eye against the images: 0 is a bear, 9 a zebra).
CLASS_NAMES = ["bear", "bird", "cat", "cow", "dog", "elephant", "giraffe", "horse", "sheep",
               "zebra"]

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle protocol
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from the wheel")
        module = module.replace("numpy.core.", "numpy._core.")
        return super().find_class(module, name)


def load_array(blob: bytes) -> np.ndarray:
    """A numpy array from a gzipped pickle, admitting nothing but numpy array constructors."""
    array = _NumpyOnlyUnpickler(io.BytesIO(gzip.decompress(blob))).load()
    if not isinstance(array, np.ndarray):
        raise pickle.UnpicklingError(f"expected a numpy array, got {type(array).__name__}")
    return array


def read_wheel(wheel: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with zipfile.ZipFile(wheel) as zf:
            images, labels = load_array(zf.read(DATA)), load_array(zf.read(LABELS))
    except (zipfile.BadZipFile, KeyError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise UserError(f"{wheel}: not a usable Animal-MNIST wheel ({exc}); delete it and "
                        "fetch again") from exc
    if images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise UserError(f"{wheel}: unexpected Animal-MNIST arrays {images.shape}/{labels.shape}")
    return images, labels


def pip_download(raw: Path) -> None:
    """Take the wheel from the package index with pip (no install, no dependencies)."""
    with tempfile.TemporaryDirectory(dir=raw) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "--quiet", "--dest", tmp, "animal-mnist==0.4"]
        result = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / WHEEL
        if result.returncode != 0 or not got.exists():
            last = (result.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise UserError(f"animals: `pip download animal-mnist==0.4` failed ({last}); set "
                            "MLBENCH_MIRROR or sources.animals.url to a copy of " + WHEEL)
        if file_digests(got)[0] != WHEEL_SHA256:
            raise UserError(f"animals: {WHEEL} from the index does not match its pinned sha256")
        got.replace(raw / WHEEL)


class Animals(ArraySource):
    name = "animals"
    description = "Animal-MNIST silhouettes, 10 classes, 10,000 28x28 images (from a PyPI wheel)"
    raw_version = 2
    test_fraction = 0.2
    file_prefix = "animal"
    class_names = CLASS_NAMES

    def arrays(self, raw: Path, ctx: FetchContext) -> tuple[np.ndarray, np.ndarray]:
        if ctx.settings.get("url") or ctx.mirror:
            fetch_files(self.name, raw, ctx, [Remote(name=WHEEL, sha256=WHEEL_SHA256)])
        elif not (raw / WHEEL).exists():
            pip_download(raw)
        return read_wheel(raw / WHEEL)

    def to_image(self, array: np.ndarray) -> Image.Image:
        return Image.fromarray(array, mode="L").convert("RGB")


SOURCE = Animals()
