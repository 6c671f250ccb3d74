"""`prepare` stage: raw data -> `data/<ds>/{train,test}/<class>/<file>` + classes + manifest.

Every image is decoded and normalised in parallel over all cores (`images.process_image`);
unreadable ones are listed with the reason in `rejected.csv` (never a crash, never silently
dropped); a test image whose content also appears in train is removed from test (leakage).
File names are made unique across the whole dataset because services upload into flat folders
(`training_uploads/<file>`), as the seed benchmark did.
"""

from __future__ import annotations

import os
import re
import shutil
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

from tqdm import tqdm

from mlbench import paths
from mlbench.console import err
from mlbench.data.images import Outcome, output_suffix, process_image
from mlbench.data.sources import get_source
from mlbench.data.sources.base import RawImage
from mlbench.errors import UserError
from mlbench.io import atomic_write_csv, atomic_write_text

MANIFEST_HEADER = ["path", "filename", "class", "split", "sha256", "width", "height"]
REJECTED_HEADER = ["source", "class", "split", "reason"]


@dataclass(frozen=True)
class PrepareSummary:
    dataset: str
    written: dict[str, int]
    rejected: int
    leaked: int
    classes: int


def safe_stem(name: str) -> str:
    """ASCII file stem safe in a URL, an S3 key and a CSV cell (non-ASCII folded, spaces -> _)."""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9._-]+", "_", folded).strip("._") or "image"


def plan_outputs(ds: str, items: list[RawImage]) -> list[tuple[RawImage, Path]]:
    """Give each raw image its output path, with a file name unique across the dataset."""
    used: set[str] = set()
    planned = []
    for item in sorted(items, key=lambda i: (i.split != "train", i.class_name, str(i.path))):
        stem, suffix = safe_stem(item.path.stem), output_suffix(item.path)
        name, k = f"{stem}{suffix}", 2
        while name.lower() in used:
            name, k = f"{stem}_{k}{suffix}", k + 1
        used.add(name.lower())
        planned.append((item, paths.split_dir(ds, item.split) / item.class_name / name))
    return planned


def _work(task: tuple[str, str, int]) -> Outcome:
    return process_image(*task)


def _outcomes(tasks: Iterable[tuple[str, str, int]], count: int,
              workers: int) -> Iterator[Outcome]:
    """Results in task order, streamed (no image data is held beyond its worker)."""
    if workers <= 1 or count < 64:
        yield from map(_work, tasks)
        return
    chunk = max(16, min(256, count // (workers * 4)))
    with get_context("fork").Pool(workers) as pool:
        yield from pool.imap(_work, tasks, chunksize=chunk)


def prepare_dataset(ds: str, max_side: int, workers: int | None = None) -> PrepareSummary:
    source = get_source(ds)
    raw = paths.raw_dir(ds)
    if not raw.exists():
        raise UserError(f"{raw}: missing; run `mlbench fetch {ds}` (or `dvc repro`) first")
    items = list(source.images(raw))
    if not items:
        raise UserError(f"{raw}: no images found for {ds}; delete the folder and fetch again")

    for split in ("train", "test"):
        shutil.rmtree(paths.split_dir(ds, split), ignore_errors=True)
    for f in (paths.manifest_file(ds), paths.rejected_file(ds)):
        f.unlink(missing_ok=True)

    planned = plan_outputs(ds, items)
    del items
    tasks = ((str(item.path), str(out), max_side) for item, out in planned)
    workers = workers or os.cpu_count() or 1
    # small tuples only: memory grows by a few hundred bytes an image, never by pixels
    kept: list[tuple[str, str, str, str, str, int, int]] = []  # split class src out sha w h
    rejected: list[tuple[str, str, str, str]] = []
    with tqdm(total=len(planned), desc=f"prepare {ds}", unit="img") as bar:
        for (item, _), o in zip(planned, _outcomes(tasks, len(planned), workers), strict=True):
            bar.update()
            if o.ok:
                kept.append((item.split, item.class_name, str(item.path), o.out_path, o.sha256,
                             o.width, o.height))
            else:
                rejected.append((str(item.path), item.class_name, item.split, o.reason))

    train_hashes = {sha: out for split, _, _, out, sha, _, _ in kept if split == "train"}
    leaked = 0
    written: Counter[str] = Counter()
    manifest = []
    for split, cls, src, out, sha, width, height in kept:
        if split == "test" and sha in train_hashes:
            Path(out).unlink()
            rejected.append((src, cls, "test",
                             f"duplicate of train image {train_hashes[sha]} (leakage)"))
            leaked += 1
            continue
        written[split] += 1
        manifest.append((out, Path(out).name, cls, split, sha, width, height))
    # written once at the end: prepare starts from scratch anyway, so nothing to resume
    atomic_write_csv(paths.manifest_file(ds), MANIFEST_HEADER, manifest)
    atomic_write_csv(paths.rejected_file(ds), REJECTED_HEADER, rejected)

    classes = sorted({cls for split, cls, *_ in kept if split == "train"})
    if not classes:
        raise UserError(f"{ds}: no readable training image; see {paths.rejected_file(ds)}")
    atomic_write_text(paths.classes_file(ds), "".join(f"{c}\n" for c in classes))
    n_rejected = len(rejected)
    if n_rejected:
        err.print(f"[yellow]{ds}: {n_rejected} image(s) rejected, see "
                  f"{paths.rejected_file(ds)}[/yellow]")
    return PrepareSummary(ds, dict(written), n_rejected - leaked, leaked, len(classes))


def read_classes(ds: str) -> list[str]:
    f = paths.classes_file(ds)
    if not f.exists():
        raise UserError(f"{f}: missing; run `mlbench prepare {ds}` first")
    return [line for line in f.read_text().splitlines() if line]


def manifest_hashes(ds: str) -> dict[str, str]:
    """filename -> sha256 of every prepared image: what reruns compare to detect new content."""
    import pandas as pd

    f = paths.manifest_file(ds)
    if not f.exists():
        raise UserError(f"{f}: missing; run `mlbench prepare {ds}` first")
    frame = pd.read_csv(f, dtype=str, keep_default_na=False, usecols=["filename", "sha256"])
    return dict(zip(frame["filename"], frame["sha256"], strict=True))
