"""Benchmark (issue 3): the local service's extractors, its HTTP latency, and its accuracy.

Three measurements, each for both extractors (`efficientnet-lite0`, `hog`):

(a) embedding throughput, images/s on all cores: `make_extractor(name).embed(batch)` on 256
    real images (Animal-MNIST PNGs from the project's `data/animals`) and on 256 synthetic
    224x224 photo-like JPEGs (decode cost of a real photo), after a warm-up;
(b) the served model: a `LocalService` trained on Animal-MNIST at 10 images per class, then
    `connect()` (its HTTP server on 127.0.0.1) and p50/p95 latency of sequential calls through
    `predict` (the `evaluate` path) and requests/s + latency at 10 in flight through
    `mlbench.bench.load.drive` (the `load` path), sustained and batch;
(c) Animal-MNIST accuracy at 10 images per class (8 train + 2 val, the default
    `val_fraction`), averaged over 3 seeds: ablation sampled with `mlbench.data.ablate.sample`,
    head trained by `LocalService.train` (C picked on val), scored on the whole test split.
    Target (issue 3): efficientnet-lite0 beats hog by >= 10 accuracy points.

Needs the prepared `animals` dataset in the project (read only):
`mlbench fetch animals && mlbench prepare animals`. Work files (ONNX export, embedding cache,
trained heads) go to a temp folder, never into the project.

Run from the project root: `python benchmarks/bench_local.py [--skip-accuracy]`.
Writes results/bench/local.json and prints tables.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    ROOT,
    Stopwatch,
    bench_tmp,
    chdir,
    check_quiet,
    median,
    print_table,
    repeat,
    say,
    write_result,
)
from PIL import Image

EXTRACTORS = ("efficientnet-lite0", "hog")
DS = "animals"
N_EMBED = 256
PER_CLASS = 10
SEEDS = (0, 1, 2)
TARGET_GAP = 0.10


def _project(data_root: Path) -> Path:
    """A temp project whose `data/animals` is the real prepared dataset (linked, read only)."""
    if not (data_root / DS / "manifest.csv").exists():
        raise SystemExit(f"{data_root / DS}: not prepared; in the project root run "
                         f"`mlbench fetch {DS} && mlbench prepare {DS}`, then rerun")
    project = Path(tempfile.mkdtemp(prefix="mlbench-bench-local-"))
    (project / "data").mkdir()
    (project / "data" / DS).symlink_to(data_root / DS, target_is_directory=True)
    return project


def _synthetic_jpegs(n: int, side: int = 224) -> list[bytes]:
    rng = np.random.default_rng(7)
    out = []
    for _ in range(n):
        base = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), "RGB")
        smooth = np.asarray(base.resize((side, side), Image.BICUBIC), np.float32)
        pixels = np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def _animal_images(n: int, split: str) -> list[bytes]:
    """`n` images of the dataset's `split`, spread over every class (cwd: the project)."""
    import pandas as pd

    from mlbench import paths

    frame = pd.read_csv(paths.manifest_file(DS), dtype=str, keep_default_na=False)
    frame = frame[frame["split"] == split].sort_values(["class", "filename"])
    per_class = -(-n // frame["class"].nunique())
    picked = frame.groupby("class", sort=True).head(per_class).head(n)
    return [Path(p).read_bytes() for p in picked["path"]]


# -- (a) embedding throughput --------------------------------------------------------------------
def bench_embed(sets: dict[str, list[bytes]], repeats: int) -> list[dict[str, Any]]:
    from mlbench.services.local.features import make_extractor

    rows = []
    for name in EXTRACTORS:
        extractor = make_extractor(name)
        for label, images in sets.items():
            extractor.embed(images[:32])  # warm-up: ONNX session, imports, caches
            times = repeat(lambda ex=extractor, im=images: ex.embed(im), repeats)
            rows.append({"extractor": name, "images": label, "n": len(images),
                         "images_per_s_median": len(images) / median(times),
                         "images_per_s_best": len(images) / min(times),
                         "ms_per_image_median": median(times) / len(images) * 1000})
            say(f"embed {name} on {label}: {rows[-1]['images_per_s_median']:.0f} images/s")
    return rows


# -- shared: a LocalService on an ablation sampled the way `ablate` does -------------------------
def _split(seed: int):
    import pandas as pd

    from mlbench.data.ablate import TABLE_HEADER, sample, splits_of, train_pool
    from mlbench.data.prepare import read_classes
    from mlbench.params import Params

    rows = sample(train_pool(DS), PER_CLASS, seed, Params().val_fraction)
    table = pd.DataFrame([(PER_CLASS, *r) for r in rows], columns=TABLE_HEADER)
    return splits_of(DS, table, tuple(read_classes(DS)))[PER_CLASS]


def _service(name: str, seed: int, state: Path):
    from mlbench.services.base import ServiceContext
    from mlbench.services.local.service import LocalService
    from mlbench.services.local.settings import Settings

    return LocalService(ServiceContext("local", Settings(features=name), DS, PER_CLASS, seed, {},
                                       state))


# -- (b) the served model ------------------------------------------------------------------------
def bench_serving(name: str, work: Path, calls: int, sequential: int,
                  rounds: int) -> dict[str, Any]:
    from mlbench.bench.load import drive, summarise
    from mlbench.bench.stats import percentiles_ms
    from mlbench.params import LoadParams

    images = _animal_images(max(calls, sequential), "test")
    svc = _service(name, 0, work / f"serve-{name}")
    split = _split(0)
    try:
        svc.upload(split)
        model = svc.train(split)
        with Stopwatch() as sw:
            svc.connect(model)
        out: dict[str, Any] = {"extractor": name, "server_start_seconds": sw.seconds}
        for img in images[:10]:  # warm-up: connection, first inference
            svc.predict(img)
        lat = []
        for img in images[:sequential]:
            with Stopwatch() as one:
                svc.predict(img)
            lat.append(one.seconds)
        seq = percentiles_ms(lat)
        out["sequential"] = {"calls": sequential, "latency_p50_ms": seq["p50"],
                             "latency_p95_ms": seq["p95"], "throughput_rps": len(lat) / sum(lat)}
        tries: dict[str, list[dict[str, Any]]] = {"sustained": [], "batch": []}
        for _ in range(rounds):  # interleaved rounds: a burst of other load hits both modes
            for mode in tries:
                cfg = LoadParams(calls=calls, concurrency=10, mode=mode)  # type: ignore[arg-type]
                records, client = drive(svc, images, cfg)
                tries[mode].append(summarise(records, cfg, client))
                say(f"serve {name} {mode}: {tries[mode][-1]['throughput_rps']:.1f} req/s, "
                    f"p50 {tries[mode][-1]['latency_p50_ms']:.1f} ms")
        for mode, runs in tries.items():
            ranked = sorted(runs, key=lambda r: r["throughput_rps"])
            out[mode] = {**ranked[(len(ranked) - 1) // 2],
                         "tries_rps": [round(r["throughput_rps"], 1) for r in runs]}
        return out
    finally:
        svc.close()


# -- (c) accuracy ----------------------------------------------------------------------------------
def bench_accuracy(work: Path) -> dict[str, Any]:
    from mlbench import paths
    from mlbench.data.export import test_pairs
    from mlbench.services.local.features import EmbeddingCache, make_extractor
    from mlbench.services.local.model import LocalModel

    per: dict[str, list[float]] = {name: [] for name in EXTRACTORS}
    details: list[dict[str, Any]] = []
    test = test_pairs(DS, None, 0)
    files = [paths.split_dir(DS, "test") / c / f for f, c in test]
    for seed in SEEDS:
        split = _split(seed)
        index = {c: i for i, c in enumerate(split.classes)}
        y = np.array([index[c] for _, c in test])
        for name in EXTRACTORS:
            state = work / f"acc-{name}-{seed}"
            svc = _service(name, seed, state)
            try:
                svc.upload(split)
                model = svc.train(split)
            finally:
                svc.close()
            head = LocalModel.load(state)
            x = EmbeddingCache(make_extractor(name), paths.embeddings_cache()).features(files)
            predicted = head.head.classes_[head.head.predict_proba(x).argmax(axis=1)]
            acc = float(np.mean(predicted == y))
            per[name].append(acc)
            details.append({"seed": seed, "extractor": name, "accuracy": acc,
                            "C": model.details["C"], "val_accuracy": model.details["val_accuracy"],
                            "train_images": len(split.train), "val_images": len(split.val)})
            say(f"accuracy seed {seed} {name}: {acc:.3f}")
    summary = {name: {"mean": statistics.mean(v), "stdev": statistics.stdev(v), "per_seed": v}
               for name, v in per.items()}
    gap = summary["efficientnet-lite0"]["mean"] - summary["hog"]["mean"]
    return {"per_extractor": summary, "runs": details, "test_images": len(test),
            "gap_points": gap * 100, "target_gap_points": TARGET_GAP * 100,
            "verdict": "PASS" if gap >= TARGET_GAP else "MISS"}


# -- main ------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", type=Path, default=ROOT / "data",
                        help="folder holding the prepared animals dataset (read only)")
    parser.add_argument("--calls", type=int, default=500, help="load-test calls per mode")
    parser.add_argument("--sequential", type=int, default=200, help="one-at-a-time calls")
    parser.add_argument("--repeats", type=int, default=3, help="timed embeds per set")
    parser.add_argument("--rounds", type=int, default=3,
                        help="load-test rounds per mode (interleaved; the median is kept)")
    parser.add_argument("--skip-accuracy", action="store_true")
    args = parser.parse_args()

    meta: dict[str, Any] = {}
    check_quiet(meta)
    # Work files (ONNX export, embedding cache) in a temp cache shared by reruns of this script.
    os.environ.setdefault("MLBENCH_CACHE_DIR", str(bench_tmp("cache")))
    project = _project(args.data_root.resolve())
    results: dict[str, Any] = {**meta, "cache_dir": os.environ["MLBENCH_CACHE_DIR"]}
    try:
        with chdir(project):
            sets = {"animals 28x28 PNG": _animal_images(N_EMBED, "train"),
                    "synthetic 224x224 JPEG": _synthetic_jpegs(N_EMBED)}
            results["embed"] = bench_embed(sets, args.repeats)
            results["serving"] = [bench_serving(name, project, args.calls, args.sequential,
                                                args.rounds) for name in EXTRACTORS]
            if not args.skip_accuracy:
                results["accuracy"] = bench_accuracy(project)
    finally:  # the dataset is a symlink in there: rmtree unlinks it, never follows it
        shutil.rmtree(project, ignore_errors=True)

    print_table(f"(a) embedding throughput, {os.cpu_count()} cores, {N_EMBED} images per set",
                ["extractor", "images", "images/s (median)", "images/s (best)", "ms/image"],
                [(r["extractor"], r["images"], r["images_per_s_median"], r["images_per_s_best"],
                  r["ms_per_image_median"]) for r in results["embed"]])
    rows = []
    for s in results["serving"]:
        rows.append((s["extractor"], "sequential (predict)", s["sequential"]["calls"],
                     s["sequential"]["throughput_rps"], s["sequential"]["latency_p50_ms"],
                     s["sequential"]["latency_p95_ms"], 0, "-"))
        for mode in ("sustained", "batch"):
            m = s[mode]
            rows.append((s["extractor"], f"{mode}, 10 in flight", m["calls"], m["throughput_rps"],
                         m["latency_p50_ms"], m["latency_p95_ms"], m["errors"],
                         " ".join(f"{x:.0f}" for x in m["tries_rps"])))
    print_table("(b) local service over loopback (Animal-MNIST model, 10 images per class; "
                f"load rows: median of {args.rounds} rounds)",
                ["extractor", "mode", "calls", "req/s", "p50 ms", "p95 ms", "errors",
                 "req/s per round"], rows)
    if "accuracy" in results:
        acc = results["accuracy"]
        print_table(f"(c) Animal-MNIST accuracy at {PER_CLASS} images per class, seeds "
                    f"{list(SEEDS)}, {acc['test_images']} test images",
                    ["extractor", "mean", "stdev", "per seed"],
                    [(k, v["mean"], v["stdev"], " ".join(f"{a:.3f}" for a in v["per_seed"]))
                     for k, v in acc["per_extractor"].items()])
        print(f"\ntarget: efficientnet-lite0 - hog >= {TARGET_GAP * 100:.0f} points: "
              f"{acc['gap_points']:+.1f} -> {acc['verdict']}")
    path = write_result("local", results, params={
        "dataset": DS, "per_class": PER_CLASS, "seeds": list(SEEDS), "embed_images": N_EMBED,
        "calls": args.calls, "sequential": args.sequential, "concurrency": 10})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
