"""`evaluate` stage: call the service once per test image, timing each request.

Rows are appended and flushed to `predictions.csv` as they come, so a killed run loses nothing:
a rerun scores only the images not yet in the file. Only complete, well-formed rows count as
scored: a row cut by a kill or a full disk is dropped and its image scored again, and a row
repeated by an earlier double writer is kept once. Error rows (calls that failed after every
retry) are scored again on a rerun unless `evaluate.retry_errors` is false. The file is started
afresh only when the model or the test set changed (recorded in `run.json` beside it).

One writer at a time: the stage holds the (service, dataset) writer lock while it runs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mlbench import paths
from mlbench.bench.runs import fingerprint, trained_models
from mlbench.bench.stats import NO_LABEL, run_metrics
from mlbench.console import err, progress
from mlbench.core import ImageRef, ModelRef, Prediction
from mlbench.data.diskspace import disk_full, is_disk_full
from mlbench.data.export import load_test_images
from mlbench.data.prepare import manifest_hashes
from mlbench.errors import ServiceCallError
from mlbench.io import CsvAppender, atomic_write_json, read_csv_log, read_json, rewrite_csv_log
from mlbench.params import Params
from mlbench.redact import scrub
from mlbench.runlock import writer_lock
from mlbench.services.base import Service
from mlbench.services.http import CallAgain
from mlbench.services.registry import open_service

HEADER = ["image", "actual_class", "predicted_class", "confidence", "invoke_time", "attempts",
          "error"]
#: How much of an error's text an error row keeps.
ERROR_CHARS = 300


def error_text(exc: BaseException) -> str:
    """What an error row keeps of a failed call: scrubbed of credentials, then cut."""
    return scrub(str(exc))[:ERROR_CHARS]


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def well_formed(row: list[str], classes: dict[str, str]) -> bool:
    """Whether a predictions row is one `evaluate` wrote in full for an image of this test set:
    a prediction with its confidence, or an error without one; a time and an attempt count."""
    image, actual, predicted, confidence, seconds, attempts, error = row
    if classes.get(image) != actual or not attempts.isdigit():
        return False
    elapsed = _number(seconds)
    if elapsed is None or elapsed < 0:
        return False
    if error:
        return predicted == NO_LABEL and confidence == ""
    try:
        float(confidence)  # a service's own number: any float it gave is kept as it is
    except ValueError:
        return False
    return True


def timed_call(svc: Service, image: bytes) -> tuple[Prediction | ServiceCallError, float]:
    """One prediction (or the call's final failure) and its wall time in seconds. When the
    service asks for the call again (it restarted its server), the new call is timed afresh."""
    while True:
        start = time.perf_counter()
        try:
            pred: Prediction | ServiceCallError = svc.predict(image)
        except CallAgain:
            continue
        except ServiceCallError as exc:
            pred = exc
        return pred, time.perf_counter() - start


@dataclass
class Resume:
    """What a rerun keeps of `predictions.csv`, and what it scores again."""

    done: set[str]
    retried: int = 0  # error rows dropped, to be scored again
    dropped: int = 0  # torn, malformed or repeated rows dropped


def resume(out: Path, meta: Path, key: str, tests: list[ImageRef], retry: bool) -> Resume:
    """Images already scored for this model + test set. The file keeps exactly the rows that
    count (rewritten atomically when any is dropped), so appending after it stays exact."""
    if not (meta.exists() and read_json(meta).get("fingerprint") == key and out.exists()):
        out.unlink(missing_ok=True)
        atomic_write_json(meta, {"fingerprint": key})
        return Resume(set())
    log = read_csv_log(out, HEADER)
    classes = {t.name: t.class_name for t in tests}
    kept: dict[str, int] = {}  # image -> index of its row in `log`
    state = Resume(set(), dropped=log.bad)
    for i, row in enumerate(log.rows):
        if not well_formed(row, classes):
            state.dropped += 1
            continue
        image, failed = row[0], row[6] != ""
        if image in kept:
            state.dropped += 1
            if not failed and log.rows[kept[image]][6] != "":
                kept[image] = i  # a prediction beats an error row for the same image
            continue
        kept[image] = i
    errors = {image for image, i in kept.items() if log.rows[i][6] != ""}
    if retry and errors:
        state.retried = len(errors)
        kept = {image: i for image, i in kept.items() if image not in errors}
    if state.dropped or state.retried or not log.header_ok:
        rewrite_csv_log(out, HEADER, [log.lines[i] for i in sorted(kept.values())])
    state.done = set(kept)
    return state


def evaluate_model(params: Params, model: ModelRef, tests: list[ImageRef],
                   service: str | None = None) -> dict:
    service = service or model.service
    ds, n = model.dataset, model.ablation
    out, meta = paths.predictions_csv(service, ds, n), paths.eval_dir(service, ds, n) / "run.json"
    sha = manifest_hashes(ds)
    key = fingerprint(model.to_json(), [(t.name, t.class_name, sha.get(t.name))
                                        for t in tests])
    state = resume(out, meta, key, tests, params.evaluate.retry_errors)
    todo = [t for t in tests if t.name not in state.done]
    where = f"{service}/{ds}/{n}"
    if state.dropped:
        err.print(f"{where}: dropped {state.dropped} incomplete or repeated row(s) of {out}; "
                  "their images are scored again")
    if state.retried:
        err.print(f"{where}: retrying {state.retried} error row(s) "
                  "(evaluate.retry_errors: false keeps them)")
    if state.done:
        err.print(f"{where}: resuming, {len(state.done)} scored, {len(todo)} to go")
    if todo:
        with open_service(params, service, ds, n) as svc, CsvAppender(out, HEADER) as log:
            svc.connect(model)
            right = scored = 0
            bar = progress(todo, desc=f"evaluate {where}", unit="img")
            for t in bar:
                pred, elapsed = timed_call(svc, t.path.read_bytes())
                if isinstance(pred, ServiceCallError):
                    log.write([t.name, t.class_name, NO_LABEL, "", f"{elapsed:.6f}",
                               pred.attempts, error_text(pred)])
                    continue
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
    err.print(f"{where}: accuracy {metrics['accuracy']:.3f} "
              f"(95% CI {metrics['accuracy_ci95'][0]:.3f}-{metrics['accuracy_ci95'][1]:.3f}), "
              f"p50 {metrics['latency_p50_ms']:.1f} ms, {metrics['errors']} errors")
    return metrics


def run_evaluation(params: Params, service: str, ds: str,
                   sizes: list[int] | None = None) -> list[dict]:
    with writer_lock(paths.writer_lock(service, ds), f"mlbench evaluate {service} {ds}"):
        tests = load_test_images(ds)
        try:
            return [evaluate_model(params, model, tests, service)
                    for model in trained_models(params, service, ds, sizes)]
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            raise disk_full(paths.evals_dir(service, ds), "writing predictions", None,
                            f"rerun `mlbench evaluate {service} {ds}`: every complete row so "
                            "far is kept") from None
