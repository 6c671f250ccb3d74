"""The prepare stage on a hand-made raw dataset full of real-world mess."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import simplejpeg
import tifffile
from PIL import Image

from mlbench import paths
from mlbench.data import prepare as prepare_mod
from mlbench.data.images import Rejected, output_suffix, process_image, read_image_file
from mlbench.data.prepare import MAX_STEM, plan_outputs, prepare_dataset, safe_stem
from mlbench.data.sources.base import DatasetSource, FetchContext, ImageRef
from mlbench.errors import UserError
from tests.replicas.disk import small_disk


def _save(path: Path, img: Image.Image, fmt: str, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt, **kw)
    return path


class Messy(DatasetSource):
    """A raw layout <split>/<class>/<file> with every kind of image prepare must handle."""

    name = "messy"
    description = "test"

    def fetch(self, raw: Path, ctx: FetchContext) -> None:
        rgb = Image.new("RGB", (40, 30), (200, 10, 10))
        _save(raw / "train/red car/ok.jpg", rgb, "JPEG")
        _save(raw / "train/red car/cmyk.jpg", Image.new("CMYK", (20, 20), (0, 255, 255, 0)),
              "JPEG")
        _save(raw / "train/red car/alpha.png", Image.new("RGBA", (20, 20), (0, 0, 0, 0)), "PNG")
        _save(raw / "train/blue/palette.png", Image.new("P", (20, 20), 3), "PNG")
        _save(raw / "train/blue/gray x-ray.png", Image.new("L", (20, 20), 90), "PNG")
        _save(raw / "train/blue/huge.png", Image.new("RGB", (400, 100), (0, 0, 200)), "PNG")
        _save(raw / "train/blue/Café ñ.jpg", Image.new("RGB", (20, 20), (0, 0, 150)), "JPEG")
        # a truncated JPEG and a file that is no image at all
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, format="JPEG")
        (raw / "train/blue/truncated.jpg").write_bytes(buf.getvalue()[:200])
        # cut mid-scan: only a full decode of every block notices (also at 1/8 DCT scale)
        noisy = io.BytesIO()
        Image.effect_noise((320, 240), 60).convert("RGB").save(noisy, format="JPEG")
        (raw / "train/blue/half.jpg").write_bytes(noisy.getvalue()[: len(noisy.getvalue()) // 2])
        (raw / "train/blue/notes.jpg").write_bytes(b"not an image")
        # test: one clean image, one exact copy of a train image (leakage), one name clash
        _save(raw / "test/blue/t1.png", Image.new("RGB", (20, 20), (5, 5, 250)), "PNG")
        copy = raw / "test/red car/copy.jpg"
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes((raw / "train/red car/ok.jpg").read_bytes())
        _save(raw / "test/red car/ok.jpg", Image.new("RGB", (40, 30), (10, 200, 10)), "JPEG")

    def images(self, raw: Path) -> Iterator[ImageRef]:
        for split in ("train", "test"):
            for p in sorted((raw / split).glob("*/*")):
                yield ImageRef(p, p.parent.name, split)


@pytest.fixture
def messy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    source = Messy()
    monkeypatch.setattr(prepare_mod, "get_source", lambda ds: source)
    source.fetch(paths.raw_dir("messy"), FetchContext())
    return tmp_path


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("workers", [1, 2])
def test_prepare_handles_the_real_world_mess(messy, workers):
    summary = prepare_dataset("messy", max_side=100, workers=workers)
    manifest = {r["filename"]: r for r in _rows(paths.manifest_file("messy"))}
    rejected = _rows(paths.rejected_file("messy"))

    # corrupt files: rejected with a reason, the run succeeds
    bad = {Path(r["source"]).name: r["reason"] for r in rejected}
    assert {"truncated.jpg", "notes.jpg", "half.jpg"} <= set(bad)
    assert all(bad[n] for n in ("truncated.jpg", "notes.jpg", "half.jpg"))
    # leakage: the test copy of a train image is removed from test and listed
    assert "copy.jpg" in bad and "leakage" in bad["copy.jpg"]
    assert summary.leaked == 1 and summary.rejected == 3
    # every kept image is RGB, no larger than max_side, aspect kept
    for row in manifest.values():
        with Image.open(row["path"]) as img:
            assert img.mode == "RGB"
            assert max(img.size) <= 100
            assert (img.width, img.height) == (int(row["width"]), int(row["height"]))
    assert (manifest["huge.png"]["width"], manifest["huge.png"]["height"]) == ("100", "25")
    # alpha is flattened onto white
    with Image.open(paths.split_dir("messy", "train") / "red car" / "alpha.png") as img:
        assert img.getpixel((0, 0)) == (255, 255, 255)
    # unique, safe file names; class names with spaces kept
    assert "Cafe_n.jpg" in manifest and "gray_x-ray.png" in manifest
    assert {"ok.jpg", "ok_2.jpg"} <= set(manifest)
    assert paths.classes_file("messy").read_text() == "blue\nred car\n"
    assert {r["split"] for r in manifest.values()} == {"train", "test"}
    assert summary.written == {"train": 7, "test": 2}


def test_prepare_is_repeatable(messy):
    prepare_dataset("messy", max_side=100, workers=1)
    first = paths.manifest_file("messy").read_text()
    prepare_dataset("messy", max_side=100, workers=2)
    assert paths.manifest_file("messy").read_text() == first


def test_clean_images_are_kept_bit_identical(messy):
    prepare_dataset("messy", max_side=1000, workers=1)
    src = paths.raw_dir("messy") / "train/red car/ok.jpg"
    dst = paths.split_dir("messy", "train") / "red car" / "ok.jpg"
    assert dst.read_bytes() == src.read_bytes()


def test_plan_outputs_gives_unique_names_across_classes():
    items = [ImageRef(Path(f"raw/{c}/img 1.JPG"), c, "train") for c in ("a", "b", "c")]
    names = [Path(out).name for *_, out in plan_outputs("x", items)]
    assert len(set(n.lower() for n in names)) == 3
    assert names[0] == "img_1.jpg"


def test_safe_stem():
    assert safe_stem("Ünïcode name (1)") == "Unicode_name_1"
    assert safe_stem("...") == "image"


# -- issue 14, finding 5: bad images decoded strictly, exotic modes normalised or refused -------
def _jpeg(seed: int = 0, size: tuple[int, int] = (160, 120)) -> bytes:
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), "RGB")
    photo = np.asarray(base.resize(size, Image.BICUBIC), np.float32)
    photo = np.clip(photo + rng.normal(0, 8, photo.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(photo, "RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _bit_flipped_jpeg() -> bytes:
    """The first single-bit flip in the entropy-coded data that PIL decodes without a word
    (garbled pixels) but libjpeg reports as corrupt: the campaign's accepted JPEG."""
    data = _jpeg()
    scan = data.index(b"\xff\xda") + 20
    for pos in range(scan, len(data) - 2):
        flipped = bytearray(data)
        flipped[pos] ^= 0x10
        try:
            with Image.open(io.BytesIO(bytes(flipped))) as img:
                img.load()  # PIL: fine
        except OSError:
            continue
        try:
            simplejpeg.decode_jpeg(bytes(flipped), strict=True)
        except ValueError:
            return bytes(flipped)
    raise AssertionError("no detectable flip found")


def _save_bytes(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _png(img: Image.Image, **kw: object) -> bytes:
    return _save_bytes(img, "PNG", **kw)


def _tiff(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, array)
    return buf.getvalue()


def _flipped_png() -> bytes:
    data = bytearray(_png(Image.fromarray(
        np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8), "RGB")))
    data[data.index(b"IDAT") + 60] ^= 0x01  # inside the compressed pixels
    return bytes(data)


GRADIENT = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)


def _one(tmp_path: Path, name: str, data: bytes, max_side: int = 1000):
    src = tmp_path / name
    src.write_bytes(data)
    return process_image(str(src), str(tmp_path / "out" / f"{src.stem}{output_suffix(src)}"),
                         max_side)


def test_finding5_bit_flipped_jpeg_is_rejected_with_the_decoder_reason(tmp_path):
    outcome = _one(tmp_path, "flipped.jpg", _bit_flipped_jpeg())
    assert not outcome.ok and outcome.reason.startswith("libjpeg: Corrupt JPEG data: ")
    assert not (tmp_path / "out" / "flipped.jpg").exists()
    for max_side in (1000, 50):  # the kept-as-is path and the re-encoding path alike
        assert not _one(tmp_path, "flipped.jpg", _bit_flipped_jpeg(), max_side).ok
    assert _one(tmp_path, "clean.jpg", _jpeg()).ok


def test_finding5_float_tiff_is_scaled_not_black(tmp_path):
    outcome = _one(tmp_path, "float.tif", _tiff(GRADIENT))
    assert outcome.ok
    with Image.open(outcome.out_path) as img:
        pixels = np.asarray(img)
    assert img.mode == "RGB" and pixels.min() == 0 and pixels.max() == 255
    assert abs(int(pixels[32, 0, 0]) - 128) <= 1  # linear: the middle row is mid-grey


@pytest.mark.parametrize("name, data, expect", [
    # (top-left pixel, bottom-right pixel) of the RGB output, or the rejection reason
    ("png16.png", _png(Image.fromarray((GRADIENT * 65535).astype(np.uint16))), (0, 255)),
    ("dark16.png", _png(Image.fromarray(np.full((8, 8), 257 * 10, np.uint16))), (10, 10)),
    ("tiff16.tif", _tiff((GRADIENT * 65535).astype(np.uint16)), (0, 255)),
    ("float255.tif", _tiff(GRADIENT * 255), (0, 255)),
    ("int32.tif", _tiff((GRADIENT * 65535).astype(np.int32)), (0, 255)),
    ("palette.png", _png(Image.new("P", (8, 8), 0), transparency=0), (255, 255)),
    ("gray alpha.png", _png(Image.new("LA", (8, 8), (10, 0))), (255, 255)),
    ("keyed.png", _png(Image.new("RGB", (8, 8), (5, 5, 5)), transparency=(5, 5, 5)), (255, 255)),
    ("cmyk.jpg", _save_bytes(Image.new("CMYK", (8, 8), (0, 0, 0, 255)), "JPEG"), (0, 0)),
    ("nan.tif", _tiff(np.where(GRADIENT > 0.5, np.nan, GRADIENT).astype(np.float32)),
     "32-bit float image with NaN or infinite pixels"),
    ("signed.tif", _tiff(GRADIENT - 0.5),
     "32-bit float pixels from -0.5 to 0.5: neither 0-1 nor 0-255"),
    ("huge int.tif", _tiff((GRADIENT * 1e9).astype(np.int32)),
     "32-bit integer pixels from 0 to 1000000000: no standard range"),
    ("lab.tif", _save_bytes(Image.new("LAB", (8, 8), (50, 0, 0)), "TIFF"),
     "pixel mode LAB is not supported"),
    ("flipped.png", _flipped_png(), "SyntaxError: broken PNG file"),
])
def test_finding5_exotic_modes_are_normalised_or_rejected_with_the_reason(tmp_path, name, data,
                                                                          expect):
    outcome = _one(tmp_path, name, data)
    if isinstance(expect, str):
        assert not outcome.ok and outcome.reason.startswith(expect), outcome.reason
        return
    assert outcome.ok, outcome.reason
    with Image.open(outcome.out_path) as img:
        assert img.mode == "RGB"
        first, last = img.getpixel((0, 0)), img.getpixel((img.width - 1, img.height - 1))
    assert (first[0], last[0]) == expect and first[0] == first[1] == first[2]


def test_finding5_reasons_land_in_rejected_csv(messy):
    raw = paths.raw_dir("messy")
    (raw / "train/blue/flipped.jpg").write_bytes(_bit_flipped_jpeg())
    (raw / "train/blue/float.tif").write_bytes(_tiff(GRADIENT - 0.5))
    prepare_dataset("messy", max_side=100, workers=2)
    reasons = {Path(r["source"]).name: r["reason"] for r in _rows(paths.rejected_file("messy"))}
    assert reasons["flipped.jpg"].startswith("libjpeg: Corrupt JPEG data: ")
    assert reasons["float.tif"].startswith("32-bit float pixels from -0.5 to 0.5")


# -- issue 14, finding 8: prepare never reads a huge member into memory -------------------------
def test_finding8_a_huge_file_is_refused_from_its_size_without_being_read(tmp_path):
    huge = tmp_path / "bomb.jpg"
    with huge.open("wb") as fh:  # 1 GiB, sparse: what a tar bomb leaves behind
        fh.truncate(1 << 30)
    # The peak is read from VmHWM, which starts afresh at exec: ru_maxrss would carry the
    # forking pytest process's own peak (over 1 GiB late in a full run) into the child.
    script = ("import re, sys; from mlbench.data.images import process_image; "
              "o = process_image(sys.argv[1], sys.argv[2], 1024); "
              "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()); "
              "print(o.ok, int(hwm.group(1)) // 1024); "
              "print(o.reason)")
    run = subprocess.run([sys.executable, "-c", script, str(huge), str(tmp_path / "o.jpg")],
                         capture_output=True, text=True, check=True)
    first, reason = run.stdout.splitlines()
    ok, peak_mib = first.split()
    assert ok == "False" and int(peak_mib) < 400  # nowhere near the 1,024 MiB of the file
    assert reason == "file of 1.0 GiB is over the 64.0 MiB limit for one image"


def test_read_image_file_never_reads_past_its_limit(tmp_path):
    src = tmp_path / "a.png"
    src.write_bytes(b"x" * 5000)
    with pytest.raises(Rejected, match="over the 4.9 KiB limit"):
        read_image_file(str(src), limit=4999)
    assert read_image_file(str(src), limit=5000) == b"x" * 5000
    with pytest.raises(Rejected, match="not a regular file"):
        read_image_file(str(tmp_path))


# -- issue 14, findings 9 and 10: names that cannot be folders, a full disk ---------------------
def test_finding10_long_source_names_get_short_unique_output_names():
    stem = "x" * 300
    items = [ImageRef(Path(f"raw/{c}/{stem}.jpg"), c, "train") for c in ("a", "b")]
    names = [Path(out).name for *_, out in plan_outputs("x", items)]
    assert names == [f"{'x' * MAX_STEM}.jpg", f"{'x' * MAX_STEM}_2.jpg"]


@pytest.mark.parametrize("cls", ["..", "a/b", "", "x" * 300])
def test_finding9_a_class_name_that_is_no_folder_name_is_refused(cls):
    with pytest.raises(UserError, match="cannot be a folder name") as info:
        plan_outputs("x", [ImageRef(Path("raw/a.jpg"), cls, "train")])
    assert "\n" not in str(info.value)


def test_finding10_disk_full_while_preparing_says_how_much_where(messy):
    raw = paths.raw_dir("messy")
    rng = np.random.default_rng(7)
    for i in range(12):  # ~3 MiB of noise PNGs, re-encoded below: no hard links to save space
        _save(raw / f"train/noise/n{i}.png",
              Image.fromarray(rng.integers(0, 256, (300, 300, 3), dtype=np.uint8)), "PNG")
    train = paths.split_dir("messy", "train")
    with small_disk(train, "1m"):
        with pytest.raises(UserError) as info:
            prepare_dataset("messy", max_side=299, workers=2)
        message = str(info.value)
        assert message.startswith("disk full while preparing messy in data/messy: it needs ")
        assert "(at most the size of its" in message and "free there" in message
        assert "rerun `mlbench prepare messy`" in message and "\n" not in message
        assert not any(train.iterdir())  # the partial output went
    assert not paths.manifest_file("messy").exists()


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("max_side", [1000, 30])  # rotated in full / decoded scaled down too
def test_exif_orientation_is_applied_on_every_jpeg_path(tmp_path, mode, max_side):
    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)  # the left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: the left half on top
    data = _save_bytes(Image.fromarray(pixels).convert(mode), "JPEG", exif=exif, quality=95)
    outcome = _one(tmp_path, "rotated.jpg", data, max_side)
    with Image.open(outcome.out_path) as img:
        assert img.size == ((20, 40) if max_side == 1000 else (15, 30))
        top, bottom = img.getpixel((img.width // 2, 1)), img.getpixel((img.width // 2,
                                                                         img.height - 2))
    assert top[0] - bottom[0] > 60 and bottom[0] < 10  # red (76 in gray) on top, black below
    assert (top[1] < 50) == (mode == "RGB")
