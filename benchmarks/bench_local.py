"""Benchmark (issues 3 and 11): the local service's extractors, its serving speed against the
raw model's, and its accuracy.

(a) embedding throughput, images/s on all cores: `make_extractor(name).embed(batch)` on 256
    real images (Animal-MNIST PNGs from the project's `data/animals`), 256 synthetic 224x224
    photo-like JPEGs and 256 512-pixel photos (below), after a warm-up;
(b) the served model against the raw model, in the same run, in interleaved rounds (the
    machine is shared: every round records the load average, and each ratio compares numbers
    of one round):
    - raw: onnxruntime's `session.run` on preprocessed 224x224 tensors (no decode, no HTTP, no
      head) over a grid of configurations: one session on every core; one one-thread session
      per core, each driven by its own thread; batches of 1, 2, 4 and 8. The best of the grid
      is "raw", the model's speed on this machine;
    - served: a `LocalService` trained on Animal-MNIST at 10 images per class, `connect()`ed
      (its HTTP server on 127.0.0.1), called with two image sets: Animal-MNIST's 28x28 PNGs
      (the test split) and 512-pixel JPEG photos (crops of scikit-learn's two sample
      photographs, half 512x512, half 512x384, quality 85). Per set: single-call latency
      (p50/p95 of sequential `predict` calls, the `evaluate` path) and req/s + latency at 10
      in flight through `mlbench.bench.load.drive` (the `load` path), sustained and batch; the
      CPU the server process and the client (this process) spend per call say where the
      cores go. hog is served too (it has no ONNX model to compare with);
    - with `--before-ref REF`: the same calls to the server of git REF's tree (the code
      before a change: `HEAD` while it is uncommitted) serving the same trained model.
    Target (issue 11): sustained req/s at 10 in flight >= 0.9 x raw on both image sets.
(c) Animal-MNIST accuracy at 10 images per class (8 train + 2 val, the default
    `val_fraction`), averaged over 3 seeds: ablation sampled with `mlbench.data.ablate.sample`,
    head trained by `LocalService.train` (C picked on val), scored on the whole test split.
    Target (issue 3): efficientnet-lite0 beats hog by >= 10 accuracy points.

Needs the prepared `animals` dataset in the project (read only):
`mlbench fetch animals && mlbench prepare animals`. Work files (ONNX export, embedding cache,
trained heads) go to a temp folder, never into the project.

Run from the project root: `python benchmarks/bench_local.py [--skip-accuracy]
[--before-ref HEAD]`. Writes results/bench/local.json and prints tables.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    ROOT,
    Stopwatch,
    bench_tmp,
    chdir,
    check_quiet,
    git_tree,
    loadavg,
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
#: Issue 11: the served model at 10 in flight against the raw model's images/s.
TARGET_RATIO = 0.9
ANIMALS = "animals 28x28 PNG"
PHOTOS = "photos 512 px JPEG"
#: The raw grid: (sessions, intra-op threads per session, batch); 0 = as many as cores.
RAW_GRID = ((1, 0, 1), (0, 1, 1), (0, 1, 2), (0, 1, 4), (0, 1, 8), (1, 0, 8))
MODES = ("sustained", "batch")


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


def _photo_jpegs(n: int, side: int = 512, quality: int = 85) -> list[bytes]:
    """`n` JPEG photos of longest side `side`, cut at seeded places from scikit-learn's two
    sample photographs (640x427): half square (crops of 400-427 px, scaled up at most 1.28x),
    half 4:3 (crops 520-569 px wide, scaled down), LANCZOS, quality 85 (a web photo's)."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(11)
    photos = load_sample_images().images
    out = []
    for i in range(n):
        photo = photos[i % len(photos)]
        rows, cols = photo.shape[:2]
        aspect = 1.0 if i % 4 < 2 else 0.75
        width = int(rng.integers(400, 428)) if aspect == 1.0 else int(rng.integers(520, 570))
        height = round(width * aspect)
        top = int(rng.integers(0, rows - height + 1))
        left = int(rng.integers(0, cols - width + 1))
        crop = Image.fromarray(photo[top:top + height, left:left + width])
        buf = io.BytesIO()
        crop.resize((side, round(side * aspect)), Image.LANCZOS).save(buf, format="JPEG",
                                                                       quality=quality)
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


# -- (b) the served model against the raw model ---------------------------------------------------
def _cores() -> int:
    from mlbench.services.local.server import usable_cores

    return usable_cores()


def raw_images_per_s(tensors: np.ndarray, sessions: int, threads: int, batch: int,
                     seconds: float) -> dict[str, Any]:
    """onnxruntime alone: `sessions` sessions of `threads` intra-op threads each, every one
    run back to back by its own thread on batches of `batch` preprocessed images."""
    from mlbench.services.local.features import EfficientNetLite0

    extractors = [EfficientNetLite0(224, threads) for _ in range(sessions)]
    for ex in extractors:  # load and warm each session (not timed)
        ex.session.run(None, {"images": tensors[:batch]})
    done = [0] * sessions
    start_gate = threading.Barrier(sessions + 1)

    def work(i: int, stop_at: list[float]) -> None:
        session, k = extractors[i].session, i * batch
        start_gate.wait()
        while time.perf_counter() < stop_at[0]:
            lo = k % (len(tensors) - batch + 1)
            session.run(None, {"images": tensors[lo:lo + batch]})
            done[i] += batch
            k += batch * sessions

    stop_at = [float("inf")]
    threads_ = [threading.Thread(target=work, args=(i, stop_at)) for i in range(sessions)]
    for t in threads_:
        t.start()
    cpu0, t0 = time.process_time(), time.perf_counter()
    stop_at[0] = t0 + seconds
    start_gate.wait()
    for t in threads_:
        t.join()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    n = sum(done)
    return {"sessions": sessions, "threads": threads, "batch": batch, "images": n,
            "images_per_s": n / wall, "cpu_ms_per_image": cpu / n * 1000}


def _server_cpu(svc) -> float:
    import psutil

    times = psutil.Process(svc._server.proc.pid).cpu_times()
    return times.user + times.system


def _client_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure_served(svc, images: list[bytes], calls: int, sequential: int,
                   raw: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Single-call latency, then 10 in flight (sustained, batch), each load bracketed by two
    runs of `raw` (the round's best raw configuration), so the ratio compares numbers taken
    within seconds of each other on a machine whose load drifts; with the CPU per call."""
    from mlbench.bench.load import drive, summarise
    from mlbench.bench.stats import percentiles_ms
    from mlbench.params import LoadParams

    for img in images[:10]:  # warm-up: connection, first calls
        svc.predict(img)
    lat = []
    for img in images[:sequential]:
        with Stopwatch() as one:
            svc.predict(img)
        lat.append(one.seconds)
    seq = percentiles_ms(lat)
    out: dict[str, Any] = {"sequential": {"calls": len(lat), "latency_p50_ms": seq["p50"],
                                          "latency_p95_ms": seq["p95"]}}
    for mode in MODES:
        cfg = LoadParams(calls=calls, concurrency=10, mode=mode)  # type: ignore[arg-type]
        before = raw()
        server0, client0 = _server_cpu(svc), _client_cpu()
        records, client = drive(svc, images, cfg)
        server1, client1 = _server_cpu(svc), _client_cpu()
        after = raw()
        summary = summarise(records, cfg, client)
        raw_rate = (before["images_per_s"] + after["images_per_s"]) / 2
        raw_cpu = (before["cpu_ms_per_image"] + after["cpu_ms_per_image"]) / 2
        summary["server_cpu_ms_per_call"] = (server1 - server0) / calls * 1000
        summary["client_cpu_ms_per_call"] = (client1 - client0) / calls * 1000
        summary["raw_images_per_s"] = raw_rate
        summary["raw_cpu_ms_per_image"] = raw_cpu
        summary["ratio_to_raw"] = summary["throughput_rps"] / raw_rate
        # what the ratio would be on idle cores: inference CPU / all the CPU a call costs
        summary["cpu_ratio"] = raw_cpu / (summary["server_cpu_ms_per_call"]
                                          + summary["client_cpu_ms_per_call"])
        out[mode] = summary
    return out


class _TreeServers:
    """Model servers run from another source tree (`--before-ref`), same protocol."""

    def __init__(self, tree: Path):
        self.tree = tree

    def service(self, name: str, state: Path):
        from mlbench.services.local.service import LocalService, ServerProcess

        tree = self.tree

        class TreeServer(ServerProcess):
            def __init__(self, model_dir: Path):  # the parent's, with the tree's server.py
                self._log = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed by stop()
                self._log_lock = threading.Lock()
                self.proc = subprocess.Popen(
                    [sys.executable, str(tree / "mlbench/services/local/server.py"),
                     str(model_dir), "--die-with-parent"],
                    env={**os.environ, "PYTHONPATH": str(tree)},
                    stdout=subprocess.PIPE, stderr=self._log, text=True)
                self.url = self._wait_ready()

        class TreeService(LocalService):
            def _start(self) -> None:
                assert self._model_dir is not None
                self._server = TreeServer(self._model_dir)
                self.url = self._server.url

        return TreeService(_service(name, 0, state).ctx)


def bench_serving(work: Path, calls: int, sequential: int, rounds: int, raw_seconds: float,
                  before_ref: str | None) -> dict[str, Any]:
    """(b): raw grid and served calls in interleaved rounds; medians over the rounds."""
    from mlbench.services.local.features import EfficientNetLite0

    cores = _cores()
    sets = {ANIMALS: _animal_images(max(calls, sequential), "test"),
            PHOTOS: _photo_jpegs(256)}
    prep = EfficientNetLite0(224)
    tensors = np.stack([prep.preprocess(b) for b in sets[ANIMALS][:64] + sets[PHOTOS][:64]])
    split = _split(0)
    servers: dict[str, Any] = {}
    try:
        for name in EXTRACTORS:  # train (embeddings cached), then start each server
            svc = _service(name, 0, work / f"serve-{name}")
            svc.upload(split)
            model = svc.train(split)
            with Stopwatch() as sw:
                svc.connect(model)
            servers[name] = (svc, sw.seconds)
            if before_ref and name == EXTRACTORS[0]:
                old = _TreeServers(git_tree(before_ref, work / "before")).service(
                    name, work / f"serve-{name}")
                with Stopwatch() as sw:
                    old.connect(model)
                servers[f"{name} @{before_ref}"] = (old, sw.seconds)
        runs: list[dict[str, Any]] = []
        for r in range(rounds):
            one: dict[str, Any] = {"round": r, "loadavg_before": loadavg(), "raw": [],
                                   "served": {}}
            for sessions, threads, batch in RAW_GRID:
                row = raw_images_per_s(tensors, sessions or cores, threads or cores, batch,
                                       raw_seconds)
                one["raw"].append(row)
                say(f"round {r} raw {row['sessions']} x {row['threads']} thread(s), batch "
                    f"{batch}: {row['images_per_s']:.1f} images/s")
            best = max(one["raw"], key=lambda x: x["images_per_s"])
            one["raw_best"] = {k: best[k] for k in ("sessions", "threads", "batch")}

            def probe(best: dict[str, Any] = best) -> dict[str, Any]:
                return raw_images_per_s(tensors, best["sessions"], best["threads"],
                                        best["batch"], raw_seconds)

            for label, (svc, _) in servers.items():
                for set_label, images in sets.items():
                    m = measure_served(svc, images, calls, sequential, probe)
                    one["served"][f"{label} | {set_label}"] = m
                    say(f"round {r} {label} on {set_label}: single call p50 "
                        f"{m['sequential']['latency_p50_ms']:.1f} ms; sustained "
                        f"{m['sustained']['throughput_rps']:.1f} req/s = "
                        f"{m['sustained']['ratio_to_raw']:.2f} x raw "
                        f"({m['sustained']['raw_images_per_s']:.1f}), CPU ratio "
                        f"{m['sustained']['cpu_ratio']:.2f}; batch "
                        f"{m['batch']['throughput_rps']:.1f} req/s "
                        f"({m['batch']['ratio_to_raw']:.2f} x raw); load {loadavg()[0]}")
            one["loadavg_after"] = loadavg()
            runs.append(one)
    finally:
        for svc, _ in servers.values():
            svc.close()
    return {"cores": cores, "rounds": runs, "summary": _summarise_serving(runs),
            "server_start_seconds": {k: v for k, (_, v) in servers.items()},
            "photo_mean_kb": sum(map(len, sets[PHOTOS])) / len(sets[PHOTOS]) / 1024,
            "raw_grid": [{**{k: cfg[k] for k in ("sessions", "threads", "batch")},
                          "images_per_s_median": median([run["raw"][i]["images_per_s"]
                                                         for run in runs]),
                          "cpu_ms_per_image_median": median([run["raw"][i]["cpu_ms_per_image"]
                                                             for run in runs]),
                          "per_round": [round(run["raw"][i]["images_per_s"], 1)
                                        for run in runs]}
                         for i, cfg in enumerate(runs[0]["raw"])] if runs else []}


def _summarise_serving(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per server x image set: medians over rounds (ratio: median of the per-round ratios)."""
    out: dict[str, Any] = {}
    for key in runs[0]["served"] if runs else []:
        per = [run["served"][key] for run in runs]
        row: dict[str, Any] = {
            "single_call_p50_ms": median([p["sequential"]["latency_p50_ms"] for p in per]),
            "single_call_p95_ms": median([p["sequential"]["latency_p95_ms"] for p in per])}
        for mode in MODES:
            row[mode] = {f: median([p[mode][f] for p in per])
                         for f in ("throughput_rps", "raw_images_per_s", "ratio_to_raw",
                                   "cpu_ratio", "latency_p50_ms", "latency_p95_ms",
                                   "server_cpu_ms_per_call", "client_cpu_ms_per_call",
                                   "raw_cpu_ms_per_image")}
            row[mode]["errors"] = sum(p[mode]["errors"] for p in per)
            row[mode]["ratio_per_round"] = [round(p[mode]["ratio_to_raw"], 3) for p in per]
        out[key] = row
    return out


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
                        help="rounds of raw grid + served calls (interleaved; medians kept)")
    parser.add_argument("--raw-seconds", type=float, default=2.0,
                        help="seconds per raw configuration per round")
    parser.add_argument("--before-ref", help="also serve the model with this git ref's server "
                                             "(e.g. HEAD: the code before uncommitted changes)")
    parser.add_argument("--skip-embed", action="store_true")
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
            if not args.skip_embed:
                sets = {ANIMALS: _animal_images(N_EMBED, "train"),
                        "synthetic 224x224 JPEG": _synthetic_jpegs(N_EMBED),
                        PHOTOS: _photo_jpegs(N_EMBED)}
                results["embed"] = bench_embed(sets, args.repeats)
            results["serving"] = bench_serving(project, args.calls, args.sequential,
                                               args.rounds, args.raw_seconds, args.before_ref)
            if not args.skip_accuracy:
                results["accuracy"] = bench_accuracy(project)
    finally:  # the dataset is a symlink in there: rmtree unlinks it, never follows it
        shutil.rmtree(project, ignore_errors=True)

    if "embed" in results:
        print_table(f"(a) embedding throughput, {os.cpu_count()} cores, {N_EMBED} images per "
                    "set", ["extractor", "images", "images/s (median)", "images/s (best)",
                            "ms/image"],
                    [(r["extractor"], r["images"], r["images_per_s_median"],
                      r["images_per_s_best"], r["ms_per_image_median"])
                     for r in results["embed"]])
    serving = results["serving"]
    print_table(f"(b1) raw onnxruntime, 224x224 tensors, no HTTP ({serving['cores']} cores; "
                f"median of {args.rounds} rounds of {args.raw_seconds:g} s)",
                ["sessions", "threads each", "batch", "images/s", "CPU ms/image",
                 "images/s per round"],
                [(g["sessions"], g["threads"], g["batch"], g["images_per_s_median"],
                  g["cpu_ms_per_image_median"], " ".join(f"{x:.0f}" for x in g["per_round"]))
                 for g in serving["raw_grid"]])
    rows = []
    for key, row in serving["summary"].items():
        server, images = key.split(" | ")
        rows.append((server, images, "single call", "-", "-", "-", "-",
                     row["single_call_p50_ms"], row["single_call_p95_ms"], "-", "-", "-"))
        for mode in MODES:
            m = row[mode]
            rows.append((server, images, f"{mode}, 10 in flight", m["throughput_rps"],
                         m["raw_images_per_s"], m["ratio_to_raw"], m["cpu_ratio"],
                         m["latency_p50_ms"], m["latency_p95_ms"], m["server_cpu_ms_per_call"],
                         m["client_cpu_ms_per_call"],
                         " ".join(f"{x:.2f}" for x in m["ratio_per_round"])))
    print_table(f"(b2) served over loopback (Animal-MNIST model, 10 images per class; medians "
                f"of {args.rounds} rounds; raw = the round's best raw configuration, run just "
                "before and after each load; CPU ratio = raw CPU ms/image / (server + client "
                "CPU ms/call))",
                ["server", "images", "calls", "req/s", "raw img/s", "x raw", "CPU ratio",
                 "p50 ms", "p95 ms", "server CPU ms/call", "client CPU ms/call",
                 "x raw per round"], rows)
    print("load average per round (before -> after): " + "; ".join(
        f"{run['loadavg_before'][0]} -> {run['loadavg_after'][0]}"
        for run in serving["rounds"]))
    verdicts = {}
    for images in (ANIMALS, PHOTOS):
        ratio = serving["summary"][f"{EXTRACTORS[0]} | {images}"]["sustained"]["ratio_to_raw"]
        verdicts[images] = "PASS" if ratio >= TARGET_RATIO else "MISS"
        print(f"target: served sustained >= {TARGET_RATIO} x raw on {images}: {ratio:.2f} -> "
              f"{verdicts[images]}")
    serving["verdict"] = verdicts
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
        "calls": args.calls, "sequential": args.sequential, "concurrency": 10,
        "rounds": args.rounds, "raw_seconds": args.raw_seconds, "raw_grid": RAW_GRID,
        "before_ref": args.before_ref})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
