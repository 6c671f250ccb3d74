"""Tiny generated images, including the awkward kinds real datasets contain.

Every image is seeded noise, so no two are alike (prepare drops test images that duplicate a
train image, which would skew the expected counts) and every run builds the same bytes.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def _pixels(seed: int, size: tuple[int, int], channels: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w, h = size
    shape = (h, w, channels) if channels > 1 else (h, w)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def _save(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def jpeg(seed: int, size: tuple[int, int] = (24, 18)) -> bytes:
    return _save(Image.fromarray(_pixels(seed, size, 3), "RGB"), "JPEG", quality=90)


def grayscale_jpeg(seed: int, size: tuple[int, int] = (24, 24)) -> bytes:
    """Like the chest X-rays: single-channel JPEG."""
    return _save(Image.fromarray(_pixels(seed, size, 1), "L"), "JPEG", quality=90)


def cmyk_jpeg(seed: int, size: tuple[int, int] = (20, 20)) -> bytes:
    return _save(Image.fromarray(_pixels(seed, size, 4), "CMYK"), "JPEG", quality=90)


def png_alpha(seed: int, size: tuple[int, int] = (20, 16)) -> bytes:
    """RGBA PNG with a real transparency gradient (Pets has PNG data behind `.jpg` names)."""
    arr = _pixels(seed, size, 4)
    arr[..., 3] = np.linspace(0, 255, size[0], dtype=np.uint8)[None, :]
    return _save(Image.fromarray(arr, "RGBA"), "PNG")


def palette_gif(seed: int, size: tuple[int, int] = (20, 16)) -> bytes:
    img = Image.fromarray(_pixels(seed, size, 3), "RGB").convert("P", palette=Image.ADAPTIVE)
    return _save(img, "GIF")


def truncated_jpeg(seed: int) -> bytes:
    """A JPEG cut short: opens fine, fails when its pixels are decoded."""
    data = jpeg(seed, (64, 48))
    return data[: len(data) // 2]
