"""Decode, validate and normalise one image: the unit of work of the `prepare` stage.

Kept free of any stage logic so it can run in worker processes. What "valid" means here:

- **Bounded.** A file over `MAX_IMAGE_BYTES` is refused from its size, before a byte of it is
  read (a 1 GiB "image" from a tar bomb is never loaded into memory); PIL's decompression-bomb
  guard refuses more than `Image.MAX_IMAGE_PIXELS` pixels.
- **Decoded in full, strictly.** Every image's pixels are decoded (not just `verify()`ed), and
  what a decoder only warns about is an error: libjpeg's "Corrupt JPEG data" warnings (a JPEG
  whose entropy-coded data lost sync, e.g. after a flipped bit, decodes to garbled pixels
  without any exception in PIL), PNG chunk CRCs, PIL's own warnings (decompression bomb,
  malformed MPO, ...; EXIF metadata warnings excepted: they do not touch pixels), and PIL never
  loads truncated images (`LOAD_TRUNCATED_IMAGES` is forced off). A bit flip that keeps the
  JPEG decoder in sync changes a coefficient the format has no checksum for: no decoder can
  tell it from a real image, and neither can this.
- **Normalised, or refused with the reason.** The output is always 8-bit RGB: alpha and
  transparency (RGBA, LA, PA, P/L/RGB with a transparent colour) are flattened onto white,
  CMYK/palette/grayscale/YCbCr converted, EXIF orientation applied; 16-bit pixels are scaled
  from 0-65535, 32-bit float pixels from 0-1 (or 0-255 when they go above 1). A float image
  with NaN/infinity or another range, 32-bit integers beyond 0-65535, and modes PIL cannot
  turn into RGB (LAB, ...) are refused, never guessed.

JPEGs are decoded by libjpeg-turbo through `simplejpeg` (strict: its warnings raise), once:
one kept as it is at 1/8 scale in grayscale (every entropy-coded block is still decoded, so
corruption is found, for the cost of a 1/8-size image), one re-encoded at the smallest DCT
scale no smaller than `max_side` straight into the pixels that are written (CMYK and other
JPEGs: checked so, then decoded by PIL). Measured with `benchmarks/bench_prepare.py`: the
same CPU per image as PIL's unchecked decode when kept, about 5-10% more when re-encoded.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
import struct
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import simplejpeg
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from mlbench.data.diskspace import human

# Decoding untrusted images: keep PIL's decompression-bomb guard but allow big photos.
Image.MAX_IMAGE_PIXELS = 200_000_000
#: The largest image file `prepare` reads; bigger ones are refused from their size alone.
#: Photos run to tens of MiB at most; a 64 MiB JPEG would be over 100 megapixels.
MAX_IMAGE_BYTES = 64 << 20

#: Formats stored as they come (bytes linked or copied) when already RGB and small enough.
_KEEP_FORMATS = {"JPEG": ".jpg", "PNG": ".png"}
#: JPEG modes whose pixels libjpeg-turbo gives directly: PIL's raw mode of the buffer, and
#: simplejpeg's colour space for it (RGBX is PIL's own layout of RGB: no repacking).
_JPEG_PIXELS = {"RGB": "RGBX", "L": "L"}
_SIMPLEJPEG_SPACE = {"RGB": "RGBX", "L": "GRAY"}
#: Formats whose data is JPEG (an MPO's first frame is a plain JPEG).
_JPEG_FORMATS = frozenset({"JPEG", "MPO"})
#: Modes whose alpha is flattened onto white.
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "PA"})
#: Modes PIL converts to RGB directly and correctly.
_PLAIN_MODES = frozenset({"1", "L", "P", "RGB", "RGBX", "CMYK", "YCbCr", "HSV"})
#: Modes of more than 8 bits per pixel, scaled to 8 bits by `_to_8bit`.
_DEEP_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
#: PIL warnings about metadata only: the pixels are fine, so the image is kept.
_METADATA_WARNINGS = r"(Possibly corrupt EXIF|Corrupt EXIF|Metadata Warning|XMP data)"


#: What PIL and its plugins raise on malformed input (a hostile file reaches odd code paths).
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError, EOFError,
                  IndexError, KeyError, ZeroDivisionError, OverflowError, struct.error,
                  Image.DecompressionBombError, Warning)


@dataclass(frozen=True)
class Outcome:
    """What happened to one image: written (with its facts) or rejected (with the reason)."""

    ok: bool
    out_path: str
    sha256: str = ""
    width: int = 0
    height: int = 0
    reason: str = ""


class Rejected(Exception):
    """An image `prepare` does not use; the message is the reason listed in rejected.csv."""


def output_suffix(src: Path) -> str:
    """The suffix the prepared file will get: JPEG stays .jpg, everything else becomes .png."""
    return ".jpg" if src.suffix.lower() in (".jpg", ".jpeg", ".jpe", ".jfif") else ".png"


def process_image(src: str, dst: str, max_side: int) -> Outcome:
    """Validate `src` and write it to `dst` as an RGB JPEG/PNG no larger than `max_side`.

    Bytes are linked (or copied) unchanged when nothing needs changing, so prepared files of
    clean datasets are bit-identical to the source; otherwise the image is converted to RGB
    (see the module docstring), EXIF orientation applied, downscaled keeping its aspect, and
    re-encoded (JPEG q95 or PNG). A JPEG that is downscaled anyway is decoded at no less than
    `max_side` (libjpeg's DCT scaling). Writing errors (a full disk) propagate: they are no
    fault of the image.
    """
    try:
        data = read_image_file(src)
        rgb, width, height = _decode(data, Path(dst).suffix, max_side)
    except Rejected as exc:
        return Outcome(False, dst, reason=" ".join(str(exc).split()))
    if rgb is None:
        _link_or_copy(src, dst)
        return Outcome(True, dst, hashlib.sha256(data).hexdigest(), width, height)
    if max(rgb.size) > max_side:
        rgb.thumbnail((max_side, max_side), Image.LANCZOS)
    buf = io.BytesIO()
    if dst.endswith(".jpg"):
        rgb.save(buf, format="JPEG", quality=95)
    else:
        rgb.save(buf, format="PNG")
    out = buf.getvalue()
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    Path(dst).unlink(missing_ok=True)  # never write through a hard link to a source file
    Path(dst).write_bytes(out)
    return Outcome(True, dst, hashlib.sha256(out).hexdigest(), rgb.width, rgb.height)


def read_image_file(src: str, limit: int = MAX_IMAGE_BYTES) -> bytes:
    """The bytes of `src`, refused (`Rejected`) when it is no regular file or over `limit`.

    The size is judged before reading, and the read itself never takes more than `limit` + 1
    bytes, so neither a huge file nor one that grows meanwhile can exhaust memory.
    """
    try:
        st = os.stat(src)
        if not stat.S_ISREG(st.st_mode):
            raise Rejected("not a regular file")
        if st.st_size > limit:
            raise Rejected(f"file of {human(st.st_size)} is over the {human(limit)} limit for "
                           f"one image")
        with open(src, "rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise Rejected(f"cannot read the file: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise Rejected(f"file is over the {human(limit)} limit for one image")
    return data


def _decode(data: bytes, suffix: str, max_side: int) -> tuple[Image.Image | None, int, int]:
    """(None, width, height) when the bytes can be kept as they are, else (the RGB image to
    write, its width, height); `Rejected` with the reason for an image that is not valid."""
    try:
        with _strict_decoding(), Image.open(io.BytesIO(data)) as img:
            fmt, (width, height) = img.format, img.size
            needs_change = (
                img.mode != "RGB"
                or fmt not in _KEEP_FORMATS
                or _KEEP_FORMATS[fmt] != suffix
                or max(width, height) > max_side
                or "transparency" in img.info
                or getattr(img, "n_frames", 1) > 1
                or _has_rotation(img)
            )
            if fmt == "JPEG" and needs_change and img.mode in _JPEG_PIXELS:
                pixels = _jpeg_pixels(data, img, max_side)  # decoded (strictly) only once
            else:
                if fmt in _JPEG_FORMATS:
                    _check_jpeg(data)
                elif fmt == "PNG":
                    _check_png(data)
                if not needs_change:
                    if fmt not in _JPEG_FORMATS:  # a JPEG was decoded in full by _check_jpeg
                        img.load()
                    return None, width, height
                if fmt == "JPEG" and max(width, height) > max_side:
                    img.draft(img.mode, _scaled(width, height, max_side))
                img.load()
                pixels = img
            rgb = _to_rgb(ImageOps.exif_transpose(pixels))
            return rgb, rgb.width, rgb.height
    except Rejected:
        raise
    except UnidentifiedImageError:
        raise Rejected("not an image (or a format PIL cannot read)" if data else "empty file") \
            from None
    except _DECODE_ERRORS as exc:
        raise Rejected(f"{type(exc).__name__}: {exc}") from None


@contextmanager
def _strict_decoding() -> Iterator[None]:
    """PIL warnings become errors (but for metadata ones) and truncated images never load."""
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # whatever another library may have set
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=_METADATA_WARNINGS)
        yield


def _check_jpeg(data: bytes) -> None:
    """Decode every entropy-coded block with libjpeg-turbo, its warnings as errors.

    Grayscale output at 1/8 scale: the Huffman decoding of every component (where corruption
    shows) is done in full; only the inverse DCT and colour conversion are spared.
    """
    try:
        simplejpeg.decode_jpeg(data, colorspace="GRAY", min_width=1, min_height=1, strict=True)
    except ValueError as exc:
        raise Rejected(f"libjpeg: {exc}") from None  # "Corrupt JPEG data: ..." and the like


def _jpeg_pixels(data: bytes, header: Image.Image, max_side: int) -> Image.Image:
    """The pixels of a YCbCr or grayscale JPEG that is re-encoded anyway, decoded strictly (as
    `_check_jpeg`) by libjpeg-turbo at the smallest DCT scale no smaller than `max_side` (what
    PIL's `draft` would pick), with the file's EXIF kept for the orientation."""
    width, height = header.size
    least = _scaled(width, height, max_side) if max(width, height) > max_side else (0, 0)
    try:
        array = simplejpeg.decode_jpeg(data, colorspace=_SIMPLEJPEG_SPACE[header.mode],
                                       min_width=least[0], min_height=least[1], strict=True)
    except ValueError as exc:
        raise Rejected(f"libjpeg: {exc}") from None
    rows, cols = array.shape[:2]
    pixels = Image.frombuffer(header.mode, (cols, rows), array, "raw", _JPEG_PIXELS[header.mode],
                              0, 1)
    if "exif" in header.info:
        pixels.info["exif"] = header.info["exif"]
    return pixels


def _check_png(data: bytes) -> None:
    """The CRC of every chunk (PIL's `load` does not check those of the image data)."""
    with Image.open(io.BytesIO(data)) as img:
        img.verify()


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
    """8-bit RGB, alpha and transparent colours flattened onto white (see the module doc)."""
    if img.mode in _DEEP_MODES:
        img = _to_8bit(img)
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGB", rgba.size, (255, 255, 255))
        white.paste(rgba, mask=rgba.getchannel("A"))
        return white
    if img.mode not in _PLAIN_MODES:
        raise Rejected(f"pixel mode {img.mode} is not supported; convert the image to RGB")
    return img if img.mode == "RGB" else img.convert("RGB")  # (exif_transpose made a copy)


def _to_8bit(img: Image.Image) -> Image.Image:
    """A 16-bit, 32-bit integer or 32-bit float grayscale image as 8-bit `L`.

    16-bit: the full 0-65535 range maps linearly onto 0-255 (what a viewer shows; no
    per-image stretch, which would make a dark image look like a normal one). 32-bit integer:
    the same when every pixel lies in 0-65535 (16-bit data PIL reads as `I`), else refused.
    Float: 0-1 maps onto 0-255, or 0-255 is kept when the image goes above 1; NaN, infinity or
    another range is refused (there is no standard meaning to guess).
    """
    pixels = np.asarray(img)
    if img.mode == "F":
        if not np.isfinite(pixels).all():
            raise Rejected("32-bit float image with NaN or infinite pixels")
        lo, hi = float(pixels.min()), float(pixels.max())
        if lo < 0 or hi > 255:
            raise Rejected(f"32-bit float pixels from {lo:g} to {hi:g}: neither 0-1 nor 0-255; "
                           f"convert the image to 8 or 16 bits")
        scale = 255.0 if hi <= 1 else 1.0
        return Image.fromarray(np.rint(pixels * scale).astype(np.uint8), "L")
    lo, hi = int(pixels.min()), int(pixels.max())
    if lo < 0 or hi > 65535:
        raise Rejected(f"32-bit integer pixels from {lo} to {hi}: no standard range; convert "
                       f"the image to 8 or 16 bits")
    wide = pixels.astype(np.uint32)
    return Image.fromarray(((wide * 255 + 32767) // 65535).astype(np.uint8), "L")


def _link_or_copy(src: str, dst: str) -> None:
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    try:
        if os.path.exists(dst):
            os.unlink(dst)
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
