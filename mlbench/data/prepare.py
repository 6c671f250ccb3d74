"""`prepare` stage: raw data -> `data/<ds>/{train,test}/<class>/<file>` + classes + manifest.

Every image is decoded and normalised in parallel over all cores (`images.process_image`);
unreadable ones are listed with the reason in `rejected.csv` (never a crash, never silently
dropped); a test image whose content also appears in train is removed from test (leakage).
File names are made unique across the whole dataset because services upload into flat folders
(`training_uploads/<file>`), as the seed benchmark did, and short enough for any file system
(`MAX_STEM`). A full disk stops the stage with one line saying how much it needs where, after
removing the partial output (prepare always starts over).
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
from multiprocessing.pool import Pool
from pathlib import Path

from mlbench import paths
from mlbench.console import err, progress
from mlbench.core import ImageRef
from mlbench.data.diskspace import disk_full, is_disk_full
from mlbench.data.images import Outcome, output_suffix, process_image
from mlbench.data.sources import get_source
from mlbench.data.sources.base import check_class_name
from mlbench.errors import UserError
from mlbench.io import CsvDraft, atomic_write_text

MANIFEST_HEADER = ["path", "filename", "class", "split", "sha256", "width", "height"]
REJECTED_HEADER = ["source", "class", "split", "reason"]
#: Longest file stem kept from a source name (ASCII after `safe_stem`): with `_<n>` and the
#: suffix it stays far below the 255 bytes of a file name and the 1,024 of an S3 key.
MAX_STEM = 120


@dataclass(frozen=True)
class PrepareSummary:
    dataset: str
    written: dict[str, int]
    rejected: int
    leaked: int
    classes: int


def safe_stem(name: str) -> str:
    """ASCII file stem safe in a URL, an S3 key and a CSV cell (non-ASCII folded, spaces -> _),
    at most `MAX_STEM` characters."""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^A-Za-z0-9._-]+", "_", folded)[:MAX_STEM].strip("._") or "image"


Planned = tuple[str, str, str, str]  # split, class, raw path, output path (plain strings)


def plan_outputs(ds: str, items: Iterable[ImageRef]) -> list[Planned]:
    """Give each raw image its output path, with a file name unique across the dataset.

    Train images come first, so a test image can be checked for leakage as soon as its own
    result arrives. Plain string tuples keep the plan small (a few hundred bytes an image).
    """
    used: set[str] = set()
    planned = []
    for item in sorted(items, key=lambda i: (i.split != "train", i.class_name, str(i.path))):
        check_class_name(item.class_name, item.path)
        stem, suffix = safe_stem(item.path.stem), output_suffix(item.path)
        name, k = f"{stem}{suffix}", 2
        while name.lower() in used:
            name, k = f"{stem}_{k}{suffix}", k + 1
        used.add(name.lower())
        out = paths.split_dir(ds, item.split) / item.class_name / name
        planned.append((item.split, item.class_name, str(item.path), str(out)))
    return planned


def _work(task: tuple[str, str, int]) -> Outcome:
    return process_image(*task)


def _results(pool: Pool | None, planned: list[Planned], max_side: int,
             workers: int) -> Iterator[Outcome]:
    """Outcomes in plan order, streamed: no image data is held beyond its worker."""
    tasks = ((src, out, max_side) for _, _, src, out in planned)
    if pool is None:
        return map(_work, tasks)
    chunk = max(16, min(256, len(planned) // (workers * 4)))
    return pool.imap(_work, tasks, chunksize=chunk)


def prepare_dataset(ds: str, max_side: int, workers: int | None = None) -> PrepareSummary:
    source = get_source(ds)
    raw = paths.raw_dir(ds)
    if not raw.exists():
        raise UserError(f"{raw}: missing; run `mlbench fetch {ds}` (or `dvc repro`) first")
    workers = workers or os.cpu_count() or 1
    # the pool is forked before the plan exists, so workers do not inherit (and grow with) it
    pool = get_context("fork").Pool(workers) if workers > 1 else None
    try:
        return _prepare(ds, source.images(raw), max_side, pool, workers)
    except BaseException:
        if pool is not None:
            pool.terminate()  # the images still queued would only fail the same way
        raise
    finally:
        if pool is not None:
            pool.close()
            pool.join()


def _prepare(ds: str, items: Iterable[ImageRef], max_side: int, pool: Pool | None,
             workers: int) -> PrepareSummary:
    planned = plan_outputs(ds, items)
    if not planned:
        raise UserError(f"{paths.raw_dir(ds)}: no images found for {ds}; delete the folder and "
                        "fetch again")
    _remove_outputs(ds)
    try:
        return _write_outputs(ds, planned, max_side, pool, workers)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        if pool is not None:  # no worker may write after the removal below
            pool.terminate()
            pool.join()
        _remove_outputs(ds)  # prepare starts over anyway; leave the disk as it was
        sizes = [_size(src) for *_, src, _out in planned]
        raise disk_full(paths.DATA / ds, f"preparing {ds}", sum(sizes),
                        f"rerun `mlbench prepare {ds}`",
                        detail=f"at most the size of its {len(sizes)} source images; the "
                               f"partial output was removed") from None


def _remove_outputs(ds: str) -> None:
    for split in ("train", "test"):
        shutil.rmtree(paths.split_dir(ds, split), ignore_errors=True)


def _size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0


def _write_outputs(ds: str, planned: list[Planned], max_side: int, pool: Pool | None,
                   workers: int) -> PrepareSummary:
    train_hashes: dict[str, str] = {}
    written: Counter[str] = Counter()
    classes: set[str] = set()
    rejected = leaked = 0
    # rows stream to temp files renamed at the end: prepare restarts from scratch anyway
    with CsvDraft(paths.manifest_file(ds), MANIFEST_HEADER) as manifest, \
            CsvDraft(paths.rejected_file(ds), REJECTED_HEADER) as rejects, \
            progress(total=len(planned), desc=f"prepare {ds}", unit="img") as bar:
        for (split, cls, src, out), o in zip(planned, _results(pool, planned, max_side, workers),
                                             strict=True):
            bar.update()
            if not o.ok:
                rejects.write((src, cls, split, o.reason))
                rejected += 1
            elif split == "test" and o.sha256 in train_hashes:
                Path(out).unlink()
                rejects.write((src, cls, "test",
                               f"duplicate of train image {train_hashes[o.sha256]} (leakage)"))
                leaked += 1
            else:
                if split == "train":
                    train_hashes.setdefault(o.sha256, out)
                    classes.add(cls)
                written[split] += 1
                manifest.write((out, Path(out).name, cls, split, o.sha256, o.width, o.height))

    if not classes:
        raise UserError(f"{ds}: no readable training image; see {paths.rejected_file(ds)}")
    atomic_write_text(paths.classes_file(ds), "".join(f"{c}\n" for c in sorted(classes)))
    if rejected + leaked:
        err.print(f"[yellow]{ds}: {rejected + leaked} image(s) rejected, see "
                  f"{paths.rejected_file(ds)}[/yellow]")
    return PrepareSummary(ds, dict(written), rejected, leaked, len(classes))


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
