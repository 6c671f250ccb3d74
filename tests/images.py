"""Test images the vendor tests upload and their fakes learn from."""

from __future__ import annotations

import io

from PIL import Image, ImageStat


def image_bytes(rgb: tuple[int, int, int], seed: int) -> bytes:
    """A small PNG of one colour with a unique pixel (no two images are identical)."""
    img = Image.new("RGB", (16, 16), rgb)
    img.putpixel((seed % 16, (seed // 16) % 16), ((seed * 37) % 256, (seed * 91) % 256, 7))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def mean_rgb(image: bytes) -> tuple[float, float, float]:
    """An image's mean colour: what the Nyckel and Hugging Face fakes' models learn from."""
    with Image.open(io.BytesIO(image)) as img:
        r, g, b = ImageStat.Stat(img.convert("RGB")).mean
    return r, g, b
