"""`evaluate` stage: call the service once per test image, timing each request.

Rows are appended and flushed to `predictions.csv` as they come, so a killed run loses nothing:
a rerun scores only the images not yet in the file. The file is started afresh only when the
model or the test set changed (recorded in `run.json` beside it).
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from mlbench import paths
from mlbench.bench.runs import fingerprint, trained_models
from mlbench.bench.stats import NO_LABEL, run_metrics
from mlbench.console import err
from mlbench.core import ImageRef, ModelRef
from mlbench.data.export import load_test_images
from mlbench.data.prepare import manifest_hashes
from mlbench.errors import ServiceCallError
from mlbench.io import CsvAppender, atomic_write_json, read_json
from mlbench.params import Params
from mlbench.services.registry import open_service

HEADER = ["image", "actual_class", "predicted_class", "confidence", "invoke_time", "attempts",
          "error"]


def _resume_state(out: Path, meta: Path, key: str) -> set[str]:
    """Names of images already scored for this model + test set (clears a stale file)."""
    if meta.exists() and read_json(meta).get("fingerprint") == key and out.exists():
        done = pd.read_csv(out, dtype=str, keep_default_na=False, on_bad_lines="skip")
        return set(done["image"])
    out.unlink(missing_ok=True)
    atomic_write_json(meta, {"fingerprint": key})
    return set()


def evaluate_model(params: Params, model: ModelRef, tests: list[ImageRef],
                   service: str | None = None) -> dict:
    service = service or model.service
    ds, n = model.dataset, model.ablation
    out, meta = paths.predictions_csv(service, ds, n), paths.eval_dir(service, ds, n) / "run.json"
    sha = manifest_hashes(ds)
    key = fingerprint(model.to_json(), [(t.name, t.class_name, sha.get(t.name))
                                        for t in tests])
    done = _resume_state(out, meta, key)
    todo = [t for t in tests if t.name not in done]
    if done:
        err.print(f"{service}/{ds}/{n}: resuming, {len(done)} scored, {len(todo)} to go")
    if todo:
        with open_service(params, service, ds, n) as svc, CsvAppender(out, HEADER) as log:
            svc.connect(model)
            right = scored = 0
            bar = tqdm(todo, desc=f"evaluate {service}/{ds}/{n}", unit="img")
            for t in bar:
                image = t.path.read_bytes()
                start = time.perf_counter()
                try:
                    pred = svc.predict(image)
                except ServiceCallError as exc:
                    elapsed = time.perf_counter() - start
                    log.write([t.name, t.class_name, NO_LABEL, "", f"{elapsed:.6f}",
                               exc.attempts, str(exc)[:300]])
                    continue
                elapsed = time.perf_counter() - start
                log.write([t.name, t.class_name, pred.label or NO_LABEL,
                           f"{pred.confidence:.6f}", f"{elapsed:.6f}", pred.attempts, ""])
                scored += 1
                right += pred.label == t.class_name
                bar.set_postfix(accuracy=f"{right / scored:.3f}", refresh=False)
    table = pd.read_csv(out, dtype={"predicted_class": str, "actual_class": str, "error": str},
                        keep_default_na=False)
    metrics = run_metrics(table)
    metrics.update(service=service, dataset=ds, ablation=n,
                   train_seconds=model.train_seconds)
    atomic_write_json(paths.run_metrics_json(service, ds, n), metrics)
    err.print(f"{service}/{ds}/{n}: accuracy {metrics['accuracy']:.3f} "
              f"(95% CI {metrics['accuracy_ci95'][0]:.3f}-{metrics['accuracy_ci95'][1]:.3f}), "
              f"p50 {metrics['latency_p50_ms']:.1f} ms, {metrics['errors']} errors")
    return metrics


def run_evaluation(params: Params, service: str, ds: str,
                   sizes: list[int] | None = None) -> list[dict]:
    tests = load_test_images(ds)
    return [evaluate_model(params, model, tests, service)
            for model in trained_models(params, service, ds, sizes)]
