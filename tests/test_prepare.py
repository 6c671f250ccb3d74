"""The prepare stage on a hand-made raw dataset full of real-world mess."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from mlbench import paths
from mlbench.data import prepare as prepare_mod
from mlbench.data.prepare import plan_outputs, prepare_dataset, safe_stem
from mlbench.data.sources.base import DatasetSource, FetchContext, ImageRef


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
