"""`beans`: bean-leaf disease photos from Makerere University AI Lab (3 classes, 1,295 images).

Published on Hugging Face as `AI-Lab-Makerere/beans`: three parquet files
(`data/{train,validation,test}-00000-of-00001.parquet`, 1,034/133/128 rows) with columns
`image_file_path`, `image` ({bytes, path}) and `labels` (0..2). The old Google Storage zips
answer 403. `fetch` downloads the parquet files and writes each row's bytes, untouched, to
`raw/images/<hf split>/<class>/<file>` so `prepare` sees ordinary image files (a row with
broken bytes is written too, and `prepare` rejects it with the reason).

Splits: `test` is the test split; `validation` is folded into `train` (the benchmark draws its
own validation images from each ablation, so the extra 133 images are more training data).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from mlbench.core import ImageRef
from mlbench.data.diskspace import disk_full, is_disk_full
from mlbench.data.extract import image_files
from mlbench.data.fetch import Remote, fetch_files
from mlbench.data.sources.base import DatasetSource, FetchContext, Split, check_class_name
from mlbench.errors import UserError, needs_extra
from mlbench.io import atomic_write_json

REPO = "AI-Lab-Makerere/beans"
#: Hugging Face split -> benchmark split.
SPLITS: dict[str, Split] = {"train": "train", "validation": "train", "test": "test"}
#: The ClassLabel names, used when a parquet file lacks the `huggingface` schema metadata.
LABELS = ["angular_leaf_spot", "bean_rust", "healthy"]


def parquet_name(hf_split: str) -> str:
    return f"{hf_split}-00000-of-00001.parquet"


REMOTES = [Remote(name=parquet_name(s), hf_repo=REPO, hf_path=f"data/{parquet_name(s)}")
           for s in SPLITS]


class Beans(DatasetSource):
    name = "beans"
    description = "bean leaf diseases (Makerere AI Lab, Hugging Face), 3 classes, 1,295 images"

    def fetch(self, raw: Path, ctx: FetchContext) -> None:
        files = fetch_files(self.name, raw, ctx, REMOTES)
        for path in files:
            split = _hf_split_of(path.name)
            if split is None:
                raise UserError(f"beans: cannot tell the split of {path.name}; name the parquet "
                                f"files like {parquet_name('train')}")
            unpack_parquet(path, raw / "images" / split)

    def images(self, raw: Path) -> Iterator[ImageRef]:
        root = raw / "images"
        for hf_split, split in SPLITS.items():
            folder = root / hf_split
            if not folder.is_dir():
                continue
            for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
                for path in image_files(class_dir, raw):
                    yield ImageRef(path=path, class_name=class_dir.name, split=split)


def _hf_split_of(name: str) -> str | None:
    return next((s for s in SPLITS if name.startswith(f"{s}-") or name == f"{s}.parquet"), None)


def label_names(schema_metadata: dict[bytes, bytes] | None) -> list[str]:
    """ClassLabel names from the `huggingface` parquet metadata, else the known ones."""
    try:
        info = json.loads((schema_metadata or {})[b"huggingface"])
        names = info["info"]["features"]["labels"]["names"]
        if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
            return names
    except (KeyError, TypeError, ValueError):
        pass
    return list(LABELS)


def unpack_parquet(parquet: Path, out: Path) -> None:
    """Write the image bytes of every row to `out/<class>/<file>` (once per parquet version)."""
    with needs_extra("reading the beans parquet files", "datasets"):
        import pyarrow.parquet as pq

    st = parquet.stat()
    stamp = {"parquet": parquet.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    marker = out.parent / f".{out.name}.unpacked.json"
    try:
        if json.loads(marker.read_text()) == stamp and out.is_dir():
            return
    except (OSError, ValueError):
        pass
    staging = out.parent / f".{out.name}.unpacking"
    shutil.rmtree(staging, ignore_errors=True)
    pf = pq.ParquetFile(parquet)
    names = label_names(pf.schema_arrow.metadata)
    columns = [c for c in ("image", "labels", "image_file_path") if c in pf.schema_arrow.names]
    if "image" not in columns or "labels" not in columns:
        raise UserError(f"{parquet}: expected columns image and labels, found "
                        f"{', '.join(pf.schema_arrow.names)}")
    try:
        _write_rows(pf, columns, names, parquet, staging)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        shutil.rmtree(staging, ignore_errors=True)
        raise disk_full(out.parent, f"unpacking {parquet.name}", parquet.stat().st_size,
                        "rerun the fetch", detail="about the parquet file's size") from None
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    if staging.exists():
        staging.replace(out)
    else:
        out.mkdir()
    atomic_write_json(marker, stamp)


def _write_rows(pf: Any, columns: list[str], names: list[str], parquet: Path,
               staging: Path) -> None:
    """Each row's image bytes to `staging/<class>/<file>`, untouched."""
    used: set[str] = set()
    row = 0
    for batch in pf.iter_batches(batch_size=64, columns=columns):  # flat memory
        for rec in batch.to_pylist():
            label = rec["labels"]
            if not isinstance(label, int) or not 0 <= label < len(names):
                raise UserError(f"{parquet}: row {row} has label {label!r}, expected 0.."
                                f"{len(names) - 1}")
            image = rec["image"] or {}
            name = _file_name(image, rec.get("image_file_path"), row, used)
            dest = staging / check_class_name(names[label], parquet) / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(image.get("bytes") or b"")  # empty bytes: prepare rejects it
            row += 1


def _file_name(image: dict[str, Any], file_path: str | None, row: int, used: set[str]) -> str:
    """The row's original base name (never a path), unique within its split."""
    name = ""
    for candidate in (image.get("path"), file_path):
        if candidate:
            name = PureWindowsPath(PurePosixPath(candidate).name).name.strip()
            if name and not name.startswith("."):
                break
            name = ""
    base = PurePosixPath(name or f"row_{row:05d}")
    # a file name must fit the file system (255 bytes): long ones are cut, kept unique below
    stem, suffix = _cut(base.stem, 150), _cut(base.suffix, 16) or ".jpg"
    candidate, k = f"{stem}{suffix}", 2
    while candidate.lower() in used:
        candidate, k = f"{stem}_{k}{suffix}", k + 1
    used.add(candidate.lower())
    return candidate



def _cut(text: str, limit: int) -> str:
    """`text` cut to at most `limit` UTF-8 bytes (never inside a character)."""
    return text.encode("utf-8", "surrogateescape")[:limit].decode("utf-8", "ignore")


SOURCE = Beans()
