"""The `export` stage: the seed's files in every service's format, as the seed README and the
vendors' docs define them (each vendor's own tests check its format against what it uploads)."""

from __future__ import annotations

import csv
import json
import re
import zipfile
from pathlib import Path

from mlbench import paths
from mlbench.data.ablate import load_split
from mlbench.data.export import export_all, export_folders, load_test_images
from mlbench.services.huggingface.export import autotrain_zip
from mlbench.services.registry import export_hooks
from mlbench.services.vertex.labels import vertex_label_map


def _csv(path: Path) -> list[list[str]]:
    with path.open() as fh:
        return list(csv.reader(fh))


def test_the_seeds_eleven_files_per_size_and_the_api_files_beside_them(in_digits):
    names = {p.name for p in paths.ablations_dir("digits").iterdir()}
    for n in (5, 20, 80):
        expected = {f"digits_{s}_{n}.csv" for s in ("train", "val")}
        expected |= {f"digits_{s}_{f}_{n}.csv" for s in ("train", "val")
                     for f in ("vertex", "hg", "aws", "azure")}
        expected |= {f"digits_train_nyckel_{n}.csv"}
        assert len(expected) == 11 and expected <= names
        assert {f"digits_train_aws_{n}.manifest", f"digits_val_aws_{n}.manifest"} <= names
        assert {f"autotrain_train_{n}.zip", f"autotrain_val_{n}.zip"} <= names
        assert f"digits_vertex_import_{n}.csv" in names
    assert not any("_320" in n for n in names)
    assert len(names) == 3 * 16


def test_a_bucket_rename_changes_only_that_clouds_files(digits_copy):
    """Why renaming `buckets.aws` reruns no service stage: only the exported files name it."""
    def snapshot() -> dict[str, bytes]:
        files = [*paths.ablations_dir("digits").iterdir(),
                 *(paths.test_csv("digits", fmt) for fmt in paths.TEST_FORMATS)]
        return {p.name: p.read_bytes() for p in sorted(files)}

    before = snapshot()
    export_all("digits", {"google": "gbucket", "aws": "renamed-bucket"}, export_hooks())
    after = snapshot()
    assert before.keys() == after.keys()
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {f"digits_{s}_aws_{n}.manifest" for s in ("train", "val")
                       for n in (5, 20, 80)}


def test_generic_hf_nyckel_aws_azure_and_vertex_files_match_the_split(in_digits):
    """The seed's formats, exactly: generic, Nyckel and AWS rows with no header line; Hugging
    Face's and Azure ML's with theirs; Vertex's and Azure's with the bucket folder first."""
    split = load_split("digits", 20)
    train = [[r.name, r.class_name] for r in split.train]
    val = [[r.name, r.class_name] for r in split.val]
    assert _csv(paths.ablation_csv("digits", "train", 20)) == train
    assert _csv(paths.ablation_csv("digits", "val", 20)) == val
    assert _csv(paths.ablation_csv("digits", "train", 20, "hg")) == [["file", "label"], *train]
    assert _csv(paths.ablation_csv("digits", "train", 20, "aws")) == train
    # Nyckel cross-validates itself: one file with train + val
    assert _csv(paths.ablation_csv("digits", "train", 20, "nyckel")) == train + val
    assert _csv(paths.ablation_csv("digits", "val", 20, "vertex")) == [
        [f"gs://gbucket/val_uploads/{f}", c] for f, c in val]
    assert _csv(paths.ablation_csv("digits", "train", 20, "azure")) == [
        ["image_url", "label"], *([f"azureml://training_uploads/{f}", c] for f, c in train)]


def test_vertex_api_import_file(in_digits):
    """What Vertex's API imports (its own name beside the seed's files): ml_use first, labels
    Vertex accepts, train + val + test of the ablation."""
    rows = _csv(paths.ablations_dir("digits") / "digits_vertex_import_5.csv")
    labels = set(vertex_label_map(paths.classes_file("digits").read_text().split()).values())
    assert [r[0] for r in rows] == ["training"] * 40 + ["validation"] * 10 + ["test"] * 450
    for _use, uri, label in rows:
        assert re.fullmatch(r"gs://gbucket/(training|val|test)_uploads/[\w.-]+", uri)
        assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", label) and label in labels


def test_ground_truth_manifest_lines(in_digits):
    path = paths.ablations_dir("digits") / "digits_train_aws_5.manifest"
    lines = path.read_text().splitlines()
    classes = paths.classes_file("digits").read_text().split()
    assert len(lines) == 4 * 10  # 5 per class, 1 held out for val
    for line in lines:
        obj = json.loads(line)
        meta = obj["mlbench-class-metadata"]
        assert obj["source-ref"] == f"s3://abucket/mlbench/digits/5/train/{meta['class-name']}/" \
            + obj["source-ref"].rsplit("/", 1)[1]
        assert classes[obj["mlbench-class"]] == meta["class-name"]
        assert meta["type"] == "groundtruth/image-classification"
        assert meta["human-annotated"] == "yes"
        assert meta["job-name"] == "labeling-job/mlbench-class"


def test_test_sets_cover_the_test_split_for_every_service(in_digits):
    tests = load_test_images("digits")
    assert len(tests) == 450 and all(t.split == "test" and t.path.exists() for t in tests)
    assert _csv(paths.test_table("digits"))[1:] == [[t.name, t.class_name] for t in tests]
    rows = [[t.name, t.class_name] for t in tests]
    assert _csv(paths.test_csv("digits", "nyckel")) == rows  # data/digits/digits_test_nyckel.csv
    assert _csv(paths.test_csv("digits", "aws")) == rows
    assert _csv(paths.test_csv("digits", "hg")) == [["image_url", "label"], *rows]
    assert _csv(paths.test_csv("digits", "vertex")) == [
        [f"gs://gbucket/test_uploads/{f}", c] for f, c in rows]
    assert len(_csv(paths.test_csv("digits", "azure"))) == 451


def test_test_per_class_limits_and_is_seeded(digits_copy):
    from mlbench.data.export import test_pairs

    a = test_pairs("digits", 7, seed=1)
    assert len(a) == 70 and a == test_pairs("digits", 7, seed=1)
    assert a != test_pairs("digits", 7, seed=2)


def test_upload_folders_and_autotrain_zips(digits_copy):
    export_folders("digits")
    split = load_split("digits", 5)
    folder = paths.upload_folder("digits", "train", 5)
    assert sorted(p.name for p in folder.iterdir()) == sorted(r.name for r in split.train)
    with zipfile.ZipFile(autotrain_zip("digits", "train", 5)) as zf:
        names = zf.namelist()
    assert sorted(names) == sorted(f"{r.class_name}/{r.name}" for r in split.train)
    assert all(n.count("/") == 1 for n in names)  # one folder per class, nothing else


def test_a_class_only_in_the_test_split_is_left_out_with_a_warning(digits_copy, capsys):
    """It gave a KeyError in `testsets` (and a half-written tests/ folder): no model can learn a
    class without training images, so every service is scored without it."""
    from mlbench.data.export import write_test_table

    manifest = Path("data/digits/manifest.csv")
    rows = manifest.read_text().splitlines()
    extra = [f"data/digits/test/ghost/g{i}.png,g{i}.png,ghost,test,{i:064x},8,8"
             for i in range(3)]
    manifest.write_text("\n".join([*rows, *extra]) + "\n")
    assert write_test_table("digits", None, 0) == 450
    assert "class 'ghost' has 3 test image(s) but no training image" in capsys.readouterr().err
    export_all("digits", {}, export_hooks())
    assert "ghost" not in paths.test_csv("digits", "vertex").read_text()


def test_the_seed_files_pass_the_seeds_own_rules(in_digits):
    from tests.seed_rules import check_seed_files

    check_seed_files(in_digits, "digits", [5, 20, 80], 10, "gbucket")
