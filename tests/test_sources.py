"""Each real dataset, end to end on a tiny replica of its archive served from 127.0.0.1:
fetch through the mirror override, the layout's classes and official splits, idempotence,
and the shared `prepare` stage turning the awkward images into the canonical layout."""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from mlbench.core import ImageRef
from mlbench.data import fetch
from mlbench.data.sources import get_source
from mlbench.data.sources.base import FetchContext
from mlbench.errors import UserError
from tests.replicas import BUILDERS, MirrorServer, Replica, build
from tests.replicas.builders import CARS_CLEAN, cars

DATASETS = sorted(BUILDERS)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "BACKOFF_BASE", 0.001)
    monkeypatch.delenv("MLBENCH_MIRROR", raising=False)


def tally(items: list[ImageRef]) -> Counter[tuple[str, str]]:
    return Counter((i.split, i.class_name) for i in items)


def fetch_replica(replica: Replica, raw: Path, server: MirrorServer) -> list[ImageRef]:
    source = get_source(replica.ds)
    source.fetch(raw, FetchContext(settings=replica.settings(), mirror=server.url))
    return list(source.images(raw))


@pytest.mark.parametrize("ds", DATASETS)
def test_mirror_fetch_gives_the_replica_classes_and_splits(ds, tmp_path):
    replica = build(ds)
    raw = tmp_path / "raw"
    with MirrorServer(replica.files) as server:
        items = fetch_replica(replica, raw, server)
        assert tally(items) == replica.counts
        assert all(i.path.is_file() for i in items)
        assert all(not p.startswith(".") for i in items for p in i.path.relative_to(raw).parts)
        assert {r.path.lstrip("/") for r in server.log} == set(replica.files)  # by file name

        # a second fetch is offline and re-extracts nothing
        markers = {p: p.stat().st_mtime_ns for p in raw.glob(".*.json")}
        requests = len(server.log)
        again = fetch_replica(replica, raw, server)
        assert len(server.log) == requests
        assert {p: p.stat().st_mtime_ns for p in raw.glob(".*.json")} == markers
        assert tally(again) == replica.counts


@pytest.mark.parametrize("variant", ["original", "all_in_one"])
def test_cars_other_layouts_through_the_url_setting(variant, tmp_path):
    replica = cars(variant)
    with MirrorServer(replica.files) as server:
        urls = [f"{server.url}/{name}" for name in replica.files]
        source = get_source("cars")
        source.fetch(tmp_path, FetchContext(settings={"url": urls}))
        items = list(source.images(tmp_path))
    assert tally(items) == replica.counts
    assert {i.class_name for i in items} == set(CARS_CLEAN)  # spaces kept, '/' made safe


def test_cars_without_test_labels_says_which_file_to_place_where(tmp_path):
    replica = cars("kaggle")
    labels = replica.files.pop("cars_test_annos_withlabels.mat")
    with MirrorServer(replica.files) as server:
        with pytest.raises(UserError) as info:
            get_source("cars").fetch(tmp_path, FetchContext(mirror=server.url))
        message = str(info.value)
        assert "\n" not in message
        assert "place cars_test_annos_withlabels.mat (" in message
        assert f"at {tmp_path / 'cars_test_annos_withlabels.mat'} and rerun" in message
        # doing what it says is enough: the next fetch keeps the placed file and goes through
        (tmp_path / "cars_test_annos_withlabels.mat").write_bytes(labels)
        source = get_source("cars")
        source.fetch(tmp_path, FetchContext(mirror=server.url))
        items = list(source.images(tmp_path))
    assert tally(items) == replica.counts


def test_food_published_md5_is_enforced_on_a_mirror(tmp_path):
    replica = build("food")  # not the real archive, so the published MD5 cannot match
    with MirrorServer(replica.files) as server, pytest.raises(UserError, match="md5"):
        get_source("food").fetch(tmp_path, FetchContext(mirror=server.url))
    assert not (tmp_path / "food-101.tar.gz").exists()


def test_pets_interrupted_archive_resumes_then_extracts(tmp_path):
    replica = build("pets")
    with MirrorServer(replica.files) as server:
        server.drop_after["images.tar.gz"] = 40_000
        items = fetch_replica(replica, tmp_path, server)
        gets = server.requests_for("images.tar.gz")
    assert [g.range_start for g in gets][0] is None and gets[1].range_start
    assert tally(items) == replica.counts


def test_xrays_val_is_folded_into_train_and_nested_copy_ignored(tmp_path):
    replica = build("xrays")
    with MirrorServer(replica.files) as server:
        items = fetch_replica(replica, tmp_path, server)
    assert {i.split for i in items} == {"train", "test"}
    assert any("/val/" in i.path.as_posix() for i in items if i.split == "train")
    assert not any("chest_xray/chest_xray" in i.path.as_posix() for i in items)


# -- through prepare (the lead's stage) and the CLI ---------------------------------------------
@pytest.mark.parametrize("ds", DATASETS)
def test_prepare_end_to_end(ds, tmp_path, monkeypatch):
    from mlbench import paths
    from mlbench.data.prepare import prepare_dataset

    replica = build(ds)
    monkeypatch.chdir(tmp_path)
    with MirrorServer(replica.files) as server:
        get_source(ds).fetch(paths.raw_dir(ds), FetchContext(settings=replica.settings(),
                                                              mirror=server.url))
    summary = prepare_dataset(ds, max_side=64, workers=1)
    expected = replica.split_counts(prepared=True)
    with paths.manifest_file(ds).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    got: dict[str, dict[str, int]] = {}
    for row in rows:
        got.setdefault(row["split"], {}).setdefault(row["class"], 0)
        got[row["split"]][row["class"]] += 1
    assert got == expected
    assert summary.rejected == sum(replica.rejected.values()) and summary.leaked == 0
    assert paths.classes_file(ds).read_text().splitlines() == replica.classes()
    for row in rows:  # every prepared image is RGB, within max_side, in its class folder
        with Image.open(row["path"]) as img:
            assert img.mode == "RGB" and max(img.size) <= 64
        assert Path(row["path"]).parent.name == row["class"]


def test_prepare_keeps_aspect_of_a_big_photo_and_rejects_pets_corrupt_file(tmp_path,
                                                                           monkeypatch):
    from mlbench import paths
    from mlbench.data.prepare import prepare_dataset

    replica = build("pets")
    monkeypatch.chdir(tmp_path)
    with MirrorServer(replica.files) as server:
        get_source("pets").fetch(paths.raw_dir("pets"), FetchContext(mirror=server.url))
    prepare_dataset("pets", max_side=64, workers=1)
    with Image.open(paths.split_dir("pets", "train") / "Abyssinian" / "Abyssinian_1.jpg") as img:
        assert img.size == (64, 40)  # 320x200 scaled down, aspect kept
    rejected = paths.rejected_file("pets").read_text()
    assert "Egyptian_Mau_4.jpg" in rejected


def test_cli_fetch_and_prepare_with_mlbench_mirror(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from mlbench.cli import app

    replica = build("intel")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("datasets: [intel]\nmax_side: 48\nsources: {}\n")
    with MirrorServer(replica.files) as server:
        monkeypatch.setenv("MLBENCH_MIRROR", server.url)
        result = CliRunner().invoke(app, ["fetch", "intel"])
        assert result.exit_code == 0, result.output
    result = CliRunner().invoke(app, ["prepare", "intel"])
    assert result.exit_code == 0, result.output
    names = os.listdir(tmp_path / "data/intel/train/forest")
    assert len(names) == replica.counts[("train", "forest")]  # incl. the non-ASCII file name


def test_cli_missing_kaggle_credentials_is_one_line_exit_2(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from mlbench.cli import app

    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR",
                "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("datasets: [xrays]\n")
    result = CliRunner().invoke(app, ["fetch", "xrays"])
    assert result.exit_code == 2
    assert "Kaggle credentials missing" in result.output
    assert "Traceback" not in result.output


# -- issue 14 -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".hidden", "x\\y", "", "x" * 300])
def test_finding9_path_like_dataset_name_is_refused_before_any_folder(name, tmp_path,
                                                                     monkeypatch):
    from mlbench.data.prepare import prepare_dataset

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="is not a dataset name") as info:
        get_source(name)
    assert "\n" not in str(info.value) and "digits" in str(info.value)
    with pytest.raises(UserError, match="is not a dataset name"):
        prepare_dataset(name, max_side=64, workers=1)
    assert list(tmp_path.iterdir()) == [] and not (tmp_path.parent / "x").exists()


def test_finding9_unknown_dataset_suggests_the_nearest():
    with pytest.raises(UserError, match="unknown dataset 'digts'; did you mean 'digits'"):
        get_source("digts")


@pytest.mark.parametrize("ds", ["intel", "food"])
def test_finding8_extraction_limits_come_from_the_sources_block(ds, tmp_path):
    """intel has no published checksum: its first download is listed (within the limits)
    before its digest is recorded; food's is pinned, so the limit stops the extraction."""
    replica = build(ds)
    source = get_source(ds)
    raw = tmp_path / "raw"
    with MirrorServer(replica.files) as server:
        tight = FetchContext(settings={**replica.settings(), "extract_max_members": 3},
                             mirror=server.url)
        with pytest.raises(UserError) as info:
            source.fetch(raw, tight)
        message = str(info.value)
        assert "\n" not in message and "the archive has more than 3 members" in message
        assert f"raise sources.{ds}.extract_max_members in params.yaml, now 3" in message
        assert not list(raw.glob("*/")), "nothing extracted"
        items = fetch_replica(replica, raw, server)  # the default limits let it through
    assert tally(items) == replica.counts
