"""Decode, validate and normalise one image: the unit of work of the `prepare` stage.

Kept free of any stage logic so it can run in worker processes. Every image is fully decoded
(not just `verify()`ed): a truncated JPEG only fails when its pixels are read.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

# Decoding untrusted images: keep PIL's decompression-bomb guard but allow big photos.
Image.MAX_IMAGE_PIXELS = 200_000_000

#: Formats stored as they come (bytes linked or copied) when already RGB and small enough.
_KEEP_FORMATS = {"JPEG": ".jpg", "PNG": ".png"}


@dataclass(frozen=True)
class Outcome:
    """What happened to one image: written (with its facts) or rejected (with the reason)."""

    ok: bool
    out_path: str
    sha256: str = ""
    width: int = 0
    height: int = 0
    reason: str = ""


def output_suffix(src: Path) -> str:
    """The suffix the prepared file will get: JPEG stays .jpg, everything else becomes .png."""
    return ".jpg" if src.suffix.lower() in (".jpg", ".jpeg", ".jpe", ".jfif") else ".png"


def process_image(src: str, dst: str, max_side: int) -> Outcome:
    """Validate `src` and write it to `dst` as an RGB JPEG/PNG no larger than `max_side`.

    Bytes are linked (or copied) unchanged when nothing needs changing, so prepared files of
    clean datasets are bit-identical to the source; otherwise the image is converted to RGB
    (alpha flattened onto white, CMYK/palette/grayscale converted), EXIF orientation applied,
    downscaled keeping its aspect, and re-encoded (JPEG q95 or PNG).

    A JPEG is still decoded in full (every entropy-coded block, so truncation and corruption
    are caught), but with libjpeg's DCT scaling: at 1/8 size when its bytes are kept as they
    are, at no less than `max_side` when it is downscaled anyway. Measured here: 1.0 -> 0.57 ms
    for a 640x480 JPEG.
    """
    try:
        data = Path(src).read_bytes()
        with Image.open(io.BytesIO(data)) as img:
            fmt, (width, height) = img.format, img.size
            needs_change = (
                img.mode != "RGB"
                or fmt not in _KEEP_FORMATS
                or _KEEP_FORMATS[fmt] != Path(dst).suffix
                or max(width, height) > max_side
                or _has_rotation(img)
            )
            if fmt == "JPEG" and not needs_change:
                img.draft(img.mode, (max(1, width // 8), max(1, height // 8)))
            elif fmt == "JPEG" and max(width, height) > max_side:
                img.draft(img.mode, _scaled(width, height, max_side))
            img.load()
            if not needs_change:
                _link_or_copy(src, dst)
                digest = hashlib.sha256(data).hexdigest()
                return Outcome(True, dst, digest, width, height)
            rgb = _to_rgb(ImageOps.exif_transpose(img))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError,
            Image.DecompressionBombError) as exc:
        return Outcome(False, dst, reason=f"{type(exc).__name__}: {exc}".replace("\n", " "))
    if max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.LANCZOS)
    buf = io.BytesIO()
    if dst.endswith(".jpg"):
        rgb.save(buf, format="JPEG", quality=95)
    else:
        rgb.save(buf, format="PNG")
    out = buf.getvalue()
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    Path(dst).write_bytes(out)
    return Outcome(True, dst, hashlib.sha256(out).hexdigest(), rgb.width, rgb.height)


def _scaled(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The size with the longer side at `max_side`, aspect kept."""
    ratio = max_side / max(width, height)
    return max(1, round(width * ratio)), max(1, round(height * ratio))


def _has_rotation(img: Image.Image) -> bool:
    try:
        return img.getexif().get(0x0112, 1) not in (1, None)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not reject a good image
        return False


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGB", rgba.size, (255, 255, 255))
        white.paste(rgba, mask=rgba.getchannel("A"))
        return white
    if img.mode == "I;16" or img.mode == "I":
        img = ImageOps.autocontrast(img.convert("I").point(lambda v: v / 256).convert("L"))
    return img.convert("RGB")


def _link_or_copy(src: str, dst: str) -> None:
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    try:
        if os.path.exists(dst):
            os.unlink(dst)
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
