"""Benchmark (issue 2): `prepare` throughput and peak memory against a plain PIL loop.

Generates (once; not timed) a synthetic dataset of photo-like 640x480 JPEGs: a smooth random
colour field plus sensor-like Gaussian noise, about 60 kB each at quality 85, so the JPEG
decode cost is that of a real photo. Then, in the same run, each measurement in a fresh child
process (so one run's memory never inflates another's peak):

- `baseline`: a plain single-process PIL loop over the same files, `Image.open` + `verify()`,
  then reopen + `load()`: the floor any validating prepare has to beat;
- `prepare`: the real `mlbench.data.prepare.prepare_dataset` (all cores) on a temporary
  project whose dataset source lists the synthetic folder, at `max_side` 1024 (no resize at
  640x480: files are validated, hashed and hard-linked) and 320 (every image is resized and
  re-encoded), on the first 5,000 images and on all of them, with each child's peak RSS and
  its largest worker's (`getrusage`, children included): it must stay flat as the set grows.

Target (issue 2): prepare at max_side 1024 >= 1.7x the baseline's images/s on 2 cores.

Run from the project root: `python benchmarks/bench_prepare.py [--images 20000]`.
Writes results/bench/prepare.json and prints a table.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from _common import (
    Stopwatch,
    bench_tmp,
    chdir,
    check_quiet,
    peak_rss_mb,
    print_table,
    say,
    write_result,
)
from PIL import Image

WIDTH, HEIGHT = 640, 480
CLASSES = 20
TEST_EVERY = 4  # every 4th image of a class is in the official test split
TARGET = 1.7
GEN_VERSION = 1  # bump when the generator changes (invalidates the cached image set)
DS = "benchsynth"


# -- the synthetic image set ------------------------------------------------------------------
_BANK: np.ndarray | None = None


def _photo(seed: int) -> bytes:
    """A 640x480 JPEG: bicubic-upsampled random colours + Gaussian noise (sigma 8)."""
    global _BANK
    if _BANK is None:  # one noise bank per worker; each image takes a shifted window of it
        _BANK = np.random.default_rng(12345).normal(0, 8, (HEIGHT + 64, WIDTH + 64, 3))
        _BANK = _BANK.astype(np.float32)
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), "RGB")
    smooth = np.asarray(base.resize((WIDTH, HEIGHT), Image.BICUBIC), np.float32)
    y, x = rng.integers(0, 64, 2)
    pixels = np.clip(smooth + _BANK[y:y + HEIGHT, x:x + WIDTH], 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def _rel(i: int) -> str:
    return f"c{i % CLASSES:02d}/img_{i:06d}.jpg"


def _write(i: int) -> int:
    data = _photo(i)
    (_GEN_DIR / _rel(i)).write_bytes(data)
    return len(data)


_GEN_DIR = Path()


def _init_gen(folder: str) -> None:
    global _GEN_DIR
    _GEN_DIR = Path(folder)


def ensure_images(n: int) -> tuple[Path, float]:
    """The folder holding images 0..n-1 (generated in parallel unless already there)."""
    folder = bench_tmp(f"prepare-v{GEN_VERSION}")
    for done in folder.glob("complete-*.json"):  # a larger set already holds images 0..n-1
        info = json.loads(done.read_text())
        if info["images"] >= n:
            return folder / "images", info["mean_bytes"]
    marker = folder / f"complete-{n}.json"
    images = folder / "images"
    for c in range(CLASSES):
        (images / f"c{c:02d}").mkdir(parents=True, exist_ok=True)
    say(f"generating {n} synthetic {WIDTH}x{HEIGHT} JPEGs in {images} (once; not timed)")
    with get_context("fork").Pool(os.cpu_count(), _init_gen, (str(images),)) as pool:
        sizes = pool.map(_write, range(n), chunksize=256)
    mean = float(np.mean(sizes))
    marker.write_text(json.dumps({"images": n, "mean_bytes": mean}))
    return images, mean


def image_files(images: Path, limit: int) -> list[tuple[Path, str, str]]:
    """(path, class, split) of the first `limit` images, in a fixed order."""
    out = []
    for i in range(limit):
        rel = _rel(i)
        out.append((images / rel, rel.split("/")[0], "test" if i % TEST_EVERY == 0 else "train"))
    return out


# -- children: each measurement in its own process -------------------------------------------
def child_baseline(images: Path, limit: int) -> dict:
    """The plain single-process PIL loop: open + verify, reopen + load."""
    files = [p for p, _, _ in image_files(images, limit)]
    cpu0 = _cpu()
    with Stopwatch() as sw:
        for p in files:
            with Image.open(p) as img:
                img.verify()
            with Image.open(p) as img:
                img.load()
    return {"images": limit, "seconds": sw.seconds, "rss_mb": peak_rss_mb(),
            **_cpu_since(cpu0, limit)}


def _cpu() -> tuple[float, float]:
    """CPU seconds (user + system) of this process and of its reaped children so far."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, kids.ru_utime + kids.ru_stime


def _cpu_since(before: tuple[float, float], images: int) -> dict[str, float]:
    own, kids = _cpu()
    return {"cpu_ms_per_image_main": (own - before[0]) / images * 1000,
            "cpu_ms_per_image_workers": (kids - before[1]) / images * 1000}


def child_prepare(images: Path, limit: int, max_side: int, workers: int | None) -> dict:
    """The real prepare stage on a temporary project whose source lists the synthetic set."""
    import mlbench.data.prepare as prepare
    from mlbench.core import ImageRef
    from mlbench.data.sources.base import DatasetSource, FetchContext

    listed = image_files(images, limit)

    class SyntheticSource(DatasetSource):
        name = DS
        description = "benchmark: synthetic 640x480 JPEGs"
        builtin = True

        def fetch(self, raw: Path, ctx: FetchContext) -> None:  # pragma: no cover - unused
            raise NotImplementedError

        def images(self, raw: Path) -> Iterator[ImageRef]:
            for path, cls, split in listed:
                yield ImageRef(raw / path.relative_to(images), cls, split)  # type: ignore[arg-type]

    source = SyntheticSource()
    # `prepare_dataset` looks the source up by name through this module-level import; patching
    # it is enough and leaves the real registry (a cached, copied dict) untouched.
    prepare.get_source = lambda ds: source  # type: ignore[assignment]

    project = Path(tempfile.mkdtemp(prefix="mlbench-bench-prepare-", dir=images.parent))
    try:
        raw = project / "data" / DS / "raw"
        raw.parent.mkdir(parents=True)
        raw.symlink_to(images, target_is_directory=True)
        cpu0 = _cpu()
        with chdir(project), Stopwatch() as sw:
            summary = prepare.prepare_dataset(DS, max_side, workers=workers)
        cpu = _cpu_since(cpu0, limit)
        written = sum(summary.written.values())
        linked = _count_linked(project / "data" / DS)
    finally:
        shutil.rmtree(project, ignore_errors=True)
    if summary.rejected or written != limit:
        raise SystemExit(f"prepare wrote {written}/{limit} images, rejected {summary.rejected}")
    return {"images": limit, "seconds": sw.seconds, "written": written, "linked": linked,
            "rss_mb": peak_rss_mb(), **cpu}


def _count_linked(root: Path) -> int:
    """Prepared files that are hard links to the raw file (not re-encoded)."""
    return sum(1 for split in ("train", "test") for f in (root / split).rglob("*.jpg")
               if f.stat().st_nlink > 1)


def run_child(*args: str) -> dict:
    """Run this script as `--child ...` and return its JSON answer (stderr shown on failure)."""
    cmd = [sys.executable, __file__, "--child", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- main --------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--small", type=int, default=5_000, help="subset for the memory check")
    parser.add_argument("--workers", type=int, default=0, help="prepare workers (0: all cores)")
    parser.add_argument("--repeat", type=int, default=2,
                        help="alternate baseline / prepare@1024 this many times; keep the best")
    parser.add_argument("--clean", action="store_true",
                        help="delete the generated image set (kept for reruns) and exit")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.clean:
        folder = bench_tmp(f"prepare-v{GEN_VERSION}")
        shutil.rmtree(folder)
        say(f"deleted {folder}")
        return

    if args.child:
        kind, folder, limit, *rest = args.child
        if kind == "baseline":
            out = child_baseline(Path(folder), int(limit))
        else:
            max_side, workers = int(rest[0]), int(rest[1]) or None
            out = child_prepare(Path(folder), int(limit), max_side, workers)
        print(json.dumps(out))
        return

    meta: dict = {}
    check_quiet(meta)
    images, mean_bytes = ensure_images(args.images)
    folder, n, small, w = str(images), str(args.images), str(args.small), str(args.workers)
    # Read every file once so both contenders start from a warm page cache.
    for p, _, _ in image_files(images, args.images):
        p.read_bytes()

    plan = []
    for _ in range(args.repeat):  # interleaved, so a burst of other load hits both alike
        plan += [("baseline", ("baseline", folder, n)),
                 ("prepare@1024", ("prepare", folder, n, "1024", w))]
    plan += [("prepare@1024 small", ("prepare", folder, small, "1024", w)),
             ("prepare@320", ("prepare", folder, n, "320", w)),
             ("prepare@320 small", ("prepare", folder, small, "320", w))]

    runs: dict[str, dict] = {}
    tries: dict[str, list[float]] = {}
    for label, child_args in plan:
        say(f"{label}: {child_args[2]} images ...")
        res = run_child(*child_args)
        res["images_per_s"] = res["images"] / res["seconds"]
        tries.setdefault(label, []).append(round(res["images_per_s"], 1))
        if label not in runs or res["images_per_s"] > runs[label]["images_per_s"]:
            runs[label] = res
        say(f"{label}: {res['images_per_s']:.0f} images/s")

    base = runs["baseline"]["images_per_s"]
    base_cpu = runs["baseline"]["cpu_ms_per_image_main"]
    n_workers = args.workers or os.cpu_count() or 1
    for label, res in runs.items():
        res["speedup_vs_baseline"] = res["images_per_s"] / base
        res["images_per_s_all_tries"] = tries[label]
        # Contention-free estimate: the busier of the main process and the average worker
        # bounds the wall time on idle cores (I/O waits such as fsync are not in it).
        critical = max(res["cpu_ms_per_image_main"],
                       res["cpu_ms_per_image_workers"] / (n_workers if label != "baseline"
                                                          else 1))
        res["projected_speedup_idle_cores"] = base_cpu / critical
    speedup = runs["prepare@1024"]["speedup_vs_baseline"]
    rows = [(label, r["images"], r["seconds"], r["images_per_s"], r["speedup_vs_baseline"],
             r["cpu_ms_per_image_main"], r["cpu_ms_per_image_workers"],
             r["projected_speedup_idle_cores"], r.get("linked", "-"), r["rss_mb"]["self"],
             r["rss_mb"]["largest_child"])
            for label, r in runs.items()]
    print_table(f"prepare throughput, {WIDTH}x{HEIGHT} JPEGs (~{mean_bytes / 1024:.0f} kB), "
                f"{n_workers} workers, best of {args.repeat} for the first two rows",
                ["run", "images", "seconds", "images/s", "x baseline", "CPU ms/img main",
                 "CPU ms/img workers", "x baseline (CPU bound)", "linked", "peak RSS MiB",
                 "largest worker MiB"], rows)
    verdict = "PASS" if speedup >= TARGET else "MISS"
    print(f"\ntarget: prepare@1024 >= {TARGET}x the single-process PIL loop: {speedup:.2f}x "
          f"-> {verdict}")
    for ms in ("1024", "320"):
        a, b = runs[f"prepare@{ms} small"]["rss_mb"], runs[f"prepare@{ms}"]["rss_mb"]
        print(f"memory, max_side {ms}: main {a['self']:.0f} -> {b['self']:.0f} MiB, worker "
              f"{a['largest_child']:.0f} -> {b['largest_child']:.0f} MiB "
              f"({args.small} -> {args.images} images)")
    path = write_result("prepare", {
        **meta, "runs": runs, "speedup_1024": speedup,
        "speedup_320": runs["prepare@320"]["speedup_vs_baseline"], "target": TARGET,
        "verdict": verdict,
    }, params={"images": args.images, "small": args.small, "size": [WIDTH, HEIGHT],
               "mean_jpeg_bytes": mean_bytes, "classes": CLASSES, "repeat": args.repeat,
               "workers": args.workers or os.cpu_count()})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
