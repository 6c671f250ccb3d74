"""Tiny replicas of the six real dataset archives: same names, folders, annotation files.

Each builder returns a `Replica`: the files a mirror would serve (by their original file
names), the images per split and class that the source's `images()` must yield, and how many
of those `prepare` must reject (the corrupt ones). The awkward cases of the real data are
planted where they occur for real (Pets: PNG data and a broken file behind `.jpg` names,
X-rays: grayscale and a duplicated nested tree with macOS litter, Cars: class names with
spaces and a `/`, Kaggle's doubled folders) plus a CMYK JPEG, a palette image and a non-ASCII
file name with spaces.

By default a replica is tiny (a few images per class). Given a `Size`, every class is topped
up with plain seeded JPEGs to at least `Size.train` training and `Size.test` test images (the
planted awkward ones count, a rejected one too), in the same archive layout: enough for a
ladder of ablations and a test set of a chosen size (the seed-scale benchmark). Without a size
the output is byte-for-byte what it always was.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tests.replicas import images as im
from tests.replicas.archives import tar_bytes, zip_bytes

Entries = list[tuple[str, bytes | None]]


@dataclass(frozen=True)
class Size:
    """At least this many images per class in the training (`train`, a source's validation
    images included) and `test` splits of a replica."""

    train: int = 0
    test: int = 0

    def extra(self, split: str, have: int) -> int:
        """How many plain images to add to a class of `split` that holds `have`."""
        return max(0, (self.train if split == "train" else self.test) - have)


#: Where each builder's extra images take their seeds: far from its planted ones and from one
#: another, so no two images of a dataset are alike (prepare drops duplicated test images).
EXTRA_SEED = {"beans": 1_000_000, "cars": 2_000_000, "food": 3_000_000, "intel": 4_000_000,
              "pets": 5_000_000, "xrays": 6_000_000}


@dataclass
class Replica:
    ds: str
    #: Mirror file name -> bytes (what `MLBENCH_MIRROR` serves as `<base>/<name>`).
    files: dict[str, bytes]
    #: (split, class) -> images `images()` must yield.
    counts: Counter[tuple[str, str]]
    #: (split, class) -> of those, how many `prepare` must reject.
    rejected: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: Checksums to pin when a source publishes one the replica cannot match (Food-101's MD5).
    pins: dict[str, str] = field(default_factory=dict)
    #: Hugging Face repo file path -> bytes (for a fake of the Hub's download endpoint).
    hf: dict[str, bytes] = field(default_factory=dict)

    def settings(self) -> dict[str, Any]:
        """The `sources.<ds>` params a mirror of this replica needs."""
        return {"sha256": dict(self.pins)} if self.pins else {}

    def split_counts(self, prepared: bool = False) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for (split, cls), n in sorted(self.counts.items()):
            n -= self.rejected[(split, cls)] if prepared else 0
            out.setdefault(split, {})[cls] = n
        return out

    def classes(self) -> list[str]:
        return sorted({c for (s, c) in self.counts if s == "train"})


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- beans: Hugging Face parquet ----------------------------------------------------------------
BEANS_LABELS = ["angular_leaf_spot", "bean_rust", "healthy"]


def beans(size: Size | None = None) -> Replica:
    import pyarrow as pa
    import pyarrow.parquet as pq

    counts: Counter[tuple[str, str]] = Counter()
    rejected: Counter[tuple[str, str]] = Counter()
    files: dict[str, bytes] = {}
    features = {"image_file_path": {"dtype": "string", "_type": "Value"},
                "image": {"_type": "Image"},
                "labels": {"names": BEANS_LABELS, "_type": "ClassLabel"}}
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    seed = 1000
    for hf_split, short, per_class, split in (("train", "train", 2, "train"),
                                              ("validation", "val", 1, "train"),
                                              ("test", "test", 1, "test")):
        rows = []
        for label, cls in enumerate(BEANS_LABELS):
            for i in range(per_class):
                name = f"{cls}_{short}.{i}.jpg"
                rows.append((f"/home/u/.cache/extracted/{short}/{cls}/{name}",
                             {"bytes": im.jpeg(seed), "path": name}, label))
                seed += 1
                counts[(split, cls)] += 1
            # the validation parquet's images count as training images too
            have = 3 if split == "train" else per_class
            if size is not None and hf_split != "validation":
                for i in range(size.extra(split, have)):
                    name = f"{cls}_{short}.x{i}.jpg"
                    data = im.jpeg(EXTRA_SEED["beans"] + 10_000 * label + 5_000 * (split == "test")
                                   + i)
                    rows.append((f"/home/u/.cache/extracted/{short}/{cls}/{name}",
                                 {"bytes": data, "path": name}, label))
                    counts[(split, cls)] += 1
        if hf_split == "train":  # one undecodable row
            rows.append(("/x/train/healthy/healthy_train.99.jpg",
                         {"bytes": b"not an image", "path": "healthy_train.99.jpg"}, 2))
            counts[("train", "healthy")] += 1
            rejected[("train", "healthy")] += 1
        schema = pa.schema([("image_file_path", pa.string()),
                            ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                            ("labels", pa.int64())], metadata=meta)
        table = pa.table({"image_file_path": [r[0] for r in rows], "image": [r[1] for r in rows],
                          "labels": [r[2] for r in rows]}, schema=schema)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        files[f"{hf_split}-00000-of-00001.parquet"] = buf.getvalue()
    hf = {f"data/{name}": data for name, data in files.items()}
    return Replica("beans", files, counts, rejected, hf=hf)


# -- cars: Stanford Cars (Kaggle mirror + devkit, original tarballs, all-in-one) ----------------
CARS_CLASSES = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012",
                "Ram C/V Cargo Van Minivan 2012"]
CARS_CLEAN = [c.replace("/", "-") for c in CARS_CLASSES]


def _mat(variables: dict[str, Any]) -> bytes:
    from scipy.io import savemat

    buf = io.BytesIO()
    savemat(buf, variables)
    return buf.getvalue()


def _class_names() -> np.ndarray:
    names = np.empty((1, len(CARS_CLASSES)), dtype=object)
    names[0, :] = CARS_CLASSES
    return names


def _annos(rows: list[dict[str, Any]]) -> np.ndarray:
    """A MATLAB struct array (1 x n) like the devkit's `annotations`."""
    keys = list(rows[0])
    arr = np.zeros((1, len(rows)), dtype=[(k, "O") for k in keys])
    for i, row in enumerate(rows):
        arr[0, i] = tuple(np.array([[row[k]]]) if not isinstance(row[k], str) else row[k]
                          for k in keys)
    return arr


def cars(variant: str = "kaggle", size: Size | None = None) -> Replica:
    """`kaggle` (default fetch), `original` (the four original files) or `all_in_one`."""
    counts: Counter[tuple[str, str]] = Counter()
    # class index (1-based) per image, classes interleaved as in the real annotation order
    plan = {"train": [1, 2, 3, 1, 3, 2, 3], "test": [2, 1, 3, 3, 1]}
    images: dict[str, list[tuple[str, bytes, int]]] = {}
    seed = 2000
    for split, classes in plan.items():
        images[split] = []
        for n, cls in enumerate(classes, start=1):
            data = im.jpeg(seed, (300, 200)) if n == 1 else im.jpeg(seed)  # one wide photo
            images[split].append((f"{n:05d}.jpg", data, cls))
            counts[(split, CARS_CLEAN[cls - 1])] += 1
            seed += 1
        if size is not None:  # more of each class, numbered on after the planted ones
            extra = EXTRA_SEED["cars"] + 500_000 * (split == "test")
            for cls in range(1, len(CARS_CLASSES) + 1):
                for _ in range(size.extra(split, classes.count(cls))):
                    n = len(images[split]) + 1
                    images[split].append((f"{n:05d}.jpg", im.jpeg(extra + n), cls))
                    counts[(split, CARS_CLEAN[cls - 1])] += 1

    def bbox(row: dict[str, Any]) -> dict[str, Any]:
        return {"bbox_x1": 1, "bbox_y1": 1, "bbox_x2": 10, "bbox_y2": 10, **row}

    train_annos = _mat({"annotations": _annos(
        [bbox({"class": c, "fname": f}) for f, _, c in images["train"]])})
    test_nolabel = _mat({"annotations": _annos([bbox({"fname": f}) for f, _, _ in images["test"]])})
    test_annos = _mat({"annotations": _annos(
        [bbox({"class": c, "fname": f}) for f, _, c in images["test"]])})
    meta = _mat({"class_names": _class_names()})
    devkit = tar_bytes([("devkit", None), ("devkit/cars_meta.mat", meta),
                        ("devkit/cars_train_annos.mat", train_annos),
                        ("devkit/cars_test_annos.mat", test_nolabel),
                        ("devkit/README.txt", b"Stanford Cars devkit\n"),
                        ("devkit/eval_train.m", b"% eval\n"),
                        ("devkit/train_perfect_preds.txt", b"1\n")], "gz")
    # all-in-one numbering: train images first, then test
    car_ims: Entries = [("car_ims", None)]
    rows = []
    k = 1
    for split in ("train", "test"):
        for _, data, cls in images[split]:
            car_ims.append((f"car_ims/{k:06d}.jpg", data))
            rows.append(bbox({"relative_im_path": f"car_ims/{k:06d}.jpg", "class": cls,
                              "test": int(split == "test")}))
            k += 1
    cars_annos = _mat({"annotations": _annos(rows), "class_names": _class_names()})

    if variant == "kaggle":
        entries: Entries = [("cars_annos.mat", cars_annos)]
        for split in ("train", "test"):
            entries.append((f"cars_{split}/cars_{split}/", None))
            entries += [(f"cars_{split}/cars_{split}/{f}", d) for f, d, _ in images[split]]
        files = {"stanford-cars-dataset.zip": zip_bytes(entries), "car_devkit.tgz": devkit,
                 "cars_test_annos_withlabels.mat": test_annos}
    elif variant == "original":
        files = {f"cars_{split}.tgz": tar_bytes(
            [(f"cars_{split}", None)] + [(f"cars_{split}/{f}", d) for f, d, _ in images[split]],
            "gz") for split in ("train", "test")}
        files |= {"car_devkit.tgz": devkit, "cars_test_annos_withlabels.mat": test_annos}
    elif variant == "all_in_one":
        files = {"car_ims.tgz": tar_bytes(car_ims, "gz"), "cars_annos.mat": cars_annos}
    else:
        raise ValueError(variant)
    return Replica("cars", files, counts)


# -- food: Food-101 -----------------------------------------------------------------------------
FOOD_CLASSES = ["apple_pie", "baby_back_ribs", "chicken_curry"]


def food(size: Size | None = None) -> Replica:
    counts: Counter[tuple[str, str]] = Counter()
    entries: Entries = [("food-101", None), ("food-101/images", None), ("food-101/meta", None)]
    listing: dict[str, list[str]] = {"train": [], "test": []}
    seed = 3000
    for c, cls in enumerate(FOOD_CLASSES):
        entries.append((f"food-101/images/{cls}", None))
        for n in range(5):
            split = "train" if n < 3 else "test"
            image_id = 1000000 + seed
            data = im.cmyk_jpeg(seed) if (cls, n) == ("baby_back_ribs", 0) else im.jpeg(seed)
            entries.append((f"food-101/images/{cls}/{image_id}.jpg", data))
            listing[split].append(f"{cls}/{image_id}")
            counts[(split, cls)] += 1
            seed += 1
        for split, have in (("train", 3), ("test", 2)):
            for i in range(size.extra(split, have) if size is not None else 0):
                image_id = EXTRA_SEED["food"] + 100_000 * c + 50_000 * (split == "test") + i
                entries.append((f"food-101/images/{cls}/{image_id}.jpg", im.jpeg(image_id)))
                listing[split].append(f"{cls}/{image_id}")
                counts[(split, cls)] += 1
    labels = "".join(c.replace("_", " ").capitalize() + "\n" for c in FOOD_CLASSES)
    entries += [
        ("food-101/meta/classes.txt", "".join(f"{c}\n" for c in FOOD_CLASSES).encode()),
        ("food-101/meta/labels.txt", labels.encode()),
        ("food-101/meta/train.txt", "\n".join(listing["train"]).encode() + b"\n"),
        ("food-101/meta/test.txt", "\n".join(listing["test"]).encode()),  # no final newline
        ("food-101/meta/train.json", json.dumps(listing["train"]).encode()),
        ("food-101/meta/test.json", json.dumps(listing["test"]).encode()),
        ("food-101/README.txt", b"Food-101 replica\n"),
        ("food-101/license_agreement.txt", b"research only\n"),
    ]
    archive = tar_bytes(entries, "gz")
    return Replica("food", {"food-101.tar.gz": archive}, counts,
                   pins={"food-101.tar.gz": sha256(archive)})


# -- intel: Kaggle intel-image-classification ---------------------------------------------------
INTEL_CLASSES = ["buildings", "forest", "glacier", "mountain", "sea", "street"]


def intel(size: Size | None = None) -> Replica:
    counts: Counter[tuple[str, str]] = Counter()
    entries: Entries = []
    seed = 4000
    for split, folder, per_class in (("train", "seg_train", 2), ("test", "seg_test", 1)):
        for c, cls in enumerate(INTEL_CLASSES):
            entries.append((f"{folder}/{folder}/{cls}/", None))
            for _ in range(per_class):
                entries.append((f"{folder}/{folder}/{cls}/{seed}.jpg", im.jpeg(seed, (30, 30))))
                counts[(split, cls)] += 1
                seed += 1
            have = per_class + (cls in ("forest", "sea") and split == "train")  # + planted
            for i in range(size.extra(split, have) if size is not None else 0):
                extra = EXTRA_SEED["intel"] + 100_000 * c + 50_000 * (split == "test") + i
                entries.append((f"{folder}/{folder}/{cls}/{extra}.jpg", im.jpeg(extra, (30, 30))))
                counts[(split, cls)] += 1
    entries.append(("seg_train/seg_train/forest/forêt vue n°1.jpg", im.jpeg(seed)))
    counts[("train", "forest")] += 1
    entries.append(("seg_train/seg_train/sea/palette 7.gif", im.palette_gif(seed + 1)))
    counts[("train", "sea")] += 1
    entries += [(f"seg_pred/seg_pred/{n}.jpg", im.jpeg(9000 + n)) for n in range(3)]
    return Replica("intel", {"intel-image-classification.zip": zip_bytes(entries)}, counts)


# -- pets: Oxford-IIIT Pets ---------------------------------------------------------------------
#: (breed as in file names, CLASS-ID, SPECIES 1 cat / 2 dog, BREED-ID)
PETS_BREEDS = [("Abyssinian", 1, 1, 1), ("american_bulldog", 2, 2, 1), ("Egyptian_Mau", 12, 1, 6)]


def pets(size: Size | None = None) -> Replica:
    counts: Counter[tuple[str, str]] = Counter()
    rejected: Counter[tuple[str, str]] = Counter()
    image_entries: Entries = [("images", None)]
    lines: dict[str, list[str]] = {"train": [], "test": []}
    seed = 5000
    for b, (breed, class_id, species, breed_id) in enumerate(PETS_BREEDS):
        for n in range(1, 6):
            split = "train" if n <= 3 else "test"
            name = f"{breed}_{n}"
            if name == "Abyssinian_1":
                data = im.jpeg(seed, (320, 200))  # larger than the test's max_side
            elif name == "Abyssinian_5":
                data = im.png_alpha(seed)  # PNG data behind a .jpg name, as in the real set
            elif name == "american_bulldog_2":
                data = im.palette_gif(seed)
            elif name == "Egyptian_Mau_4":
                data = im.truncated_jpeg(seed)
                rejected[(split, breed)] += 1
            else:
                data = im.jpeg(seed)
            image_entries.append((f"images/{name}.jpg", data))
            lines[split].append(f"{name} {class_id} {species} {breed_id}")
            counts[(split, breed)] += 1
            seed += 1
        n = 5
        for split, have in (("train", 3), ("test", 2)):
            for _ in range(size.extra(split, have) if size is not None else 0):
                n += 1
                image_entries.append((f"images/{breed}_{n}.jpg",
                                      im.jpeg(EXTRA_SEED["pets"] + 100_000 * b + n)))
                lines[split].append(f"{breed}_{n} {class_id} {species} {breed_id}")
                counts[(split, breed)] += 1
    image_entries.append(("images/Abyssinian_100.mat", b"MATLAB 5.0 MAT-file junk"))
    header = ("#Image CLASS-ID SPECIES BREED ID\n#ID: 1:37 Class ids\n#SPECIES: 1:Cat 2:Dog\n"
              "#BREED ID: 1-25:Cat 1:12:Dog\n#All images with 1st letter as captial are cat "
              "images\n#images with small first letter are dog images\n")
    everything = sorted(lines["train"] + lines["test"])
    annotation_entries: Entries = [
        ("annotations", None),
        ("annotations/README", b"Oxford-IIIT Pet replica\n"),
        ("annotations/list.txt", (header + "\n".join(everything) + "\n").encode()),
        ("annotations/trainval.txt", ("\n".join(lines["train"]) + "\n").encode()),
        ("annotations/test.txt", ("\n".join(lines["test"]) + "\n").encode()),
        ("annotations/trimaps", None),
        ("annotations/trimaps/Abyssinian_1.png", im.png_alpha(1)),
        ("annotations/trimaps/._Abyssinian_1.png", b"\x00\x05\x16\x07AppleDouble"),
        ("annotations/xmls", None),
        ("annotations/xmls/Abyssinian_1.xml", b"<annotation/>"),
    ]
    # Both are plain tar despite the .tar.gz names, exactly like the real downloads.
    files = {"images.tar.gz": tar_bytes(image_entries),
             "annotations.tar.gz": tar_bytes(annotation_entries)}
    return Replica("pets", files, counts, rejected)


# -- xrays: Kaggle chest-xray-pneumonia ---------------------------------------------------------
def xrays(size: Size | None = None) -> Replica:
    counts: Counter[tuple[str, str]] = Counter()
    tree: Entries = []
    seed = 6000
    for folder, split, per_class in (("train", "train", 3), ("val", "train", 1),
                                     ("test", "test", 2)):
        for c, cls in enumerate(("NORMAL", "PNEUMONIA")):
            if size is not None and folder != "val":  # the val folder's image counts as train
                have = 4 if split == "train" else per_class
                for i in range(size.extra(split, have)):
                    extra = EXTRA_SEED["xrays"] + 100_000 * c + 50_000 * (split == "test") + i
                    name = f"IM-{extra}-0001.jpeg" if cls == "NORMAL" \
                        else f"person{extra}_bacteria_{i}.jpeg"
                    tree.append((f"{folder}/{cls}/{name}", im.grayscale_jpeg(extra)))
                    counts[(split, cls)] += 1
            for n in range(per_class):
                if cls == "NORMAL":
                    name = f"IM-{seed:04d}-0001.jpeg" if n else f"NORMAL2-IM-{seed:04d}-0001.jpeg"
                else:
                    name = f"person{seed}_{'bacteria' if n % 2 else 'virus'}_{n}.jpeg"
                data = im.jpeg(seed) if (folder, cls, n) == ("train", "PNEUMONIA", 0) \
                    else im.grayscale_jpeg(seed)
                tree.append((f"{folder}/{cls}/{name}", data))
                counts[(split, cls)] += 1
                seed += 1
    entries: Entries = [("chest_xray/", None)]
    entries += [(f"chest_xray/{n}", d) for n, d in tree]
    entries += [(f"chest_xray/chest_xray/{n}", d) for n, d in tree]  # the duplicated copy
    ds_store = b"\x00\x00\x00\x01Bud1" + b"\x00" * 32
    entries += [("chest_xray/.DS_Store", ds_store), ("chest_xray/train/.DS_Store", ds_store),
                ("chest_xray/train/NORMAL/.DS_Store", ds_store),
                ("chest_xray/__MACOSX/chest_xray/train/._NORMAL", b"\x00\x05\x16\x07"),
                ("chest_xray/__MACOSX/chest_xray/train/NORMAL/._IM-0001-0001.jpeg",
                 b"\x00\x05\x16\x07")]
    return Replica("xrays", {"chest-xray-pneumonia.zip": zip_bytes(entries)}, counts)


BUILDERS = {"beans": beans, "cars": cars, "food": food, "intel": intel, "pets": pets,
            "xrays": xrays}


def build(ds: str, size: Size | None = None) -> Replica:
    return BUILDERS[ds](size=size) if size is not None else BUILDERS[ds]()


def mirror_files(sizes: Mapping[str, Size] | None = None
                 ) -> tuple[dict[str, bytes], dict[str, dict[str, Any]]]:
    """Every replica's files in one flat mirror, and the `sources:` params it needs; `sizes`:
    a `Size` per dataset to top its classes up to (the others stay tiny)."""
    files: dict[str, bytes] = {}
    sources: dict[str, dict[str, Any]] = {}
    for ds in BUILDERS:
        rep = build(ds, (sizes or {}).get(ds))
        clash = set(files) & set(rep.files)
        assert not clash, f"mirror file names clash: {clash}"
        files |= rep.files
        if rep.settings():
            sources[ds] = rep.settings()
    return files, sources
