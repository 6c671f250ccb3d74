"""`evaluate` stage: score every test image, then time single calls apart.

Scoring and latency are measured apart, as MLPerf separates accuracy and performance runs: the
test set is scored with `evaluate.concurrency` calls in flight (never faster than the vendor's
rate limit), which is what a 40,000-image test set needs to finish in hours rather than days;
then `latency.samples` test images (seeded) are called one at a time, and that pass alone gives
the single-stream latency percentiles. `evaluate.concurrency: 1` keeps the seed's way: one call
at a time, whose times are the latency.

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
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mlbench import paths
from mlbench.bench.runs import Connection, connected, fingerprint, trained_models
from mlbench.bench.stats import NO_LABEL, percentiles_ms, run_metrics
from mlbench.bench.traffic import VendorTraffic
from mlbench.console import err, progress
from mlbench.core import ImageRef, ModelRef, Prediction
from mlbench.data.diskspace import disk_full, is_disk_full
from mlbench.data.export import load_test_images
from mlbench.data.prepare import manifest_hashes
from mlbench.errors import ServiceCallError
from mlbench.io import CsvAppender, atomic_write_json, read_csv_log, read_json, rewrite_csv_log
from mlbench.params import Params
from mlbench.redact import scrub
from mlbench.runlock import stop_point, writer_lock
from mlbench.services.base import Service
from mlbench.services.http import CallAgain

HEADER = ["image", "actual_class", "predicted_class", "confidence", "invoke_time", "attempts",
          "error"]
LATENCY_HEADER = ["image", "seconds", "attempts", "error"]
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
    #: The files were written for this model and test set (else they were started afresh).
    same_model: bool = True


def resume(out: Path, meta: Path, key: str, tests: list[ImageRef], retry: bool) -> Resume:
    """Images already scored for this model + test set. The file keeps exactly the rows that
    count (rewritten atomically when any is dropped), so appending after it stays exact."""
    if not (meta.exists() and read_json(meta).get("fingerprint") == key and out.exists()):
        out.unlink(missing_ok=True)
        atomic_write_json(meta, {"fingerprint": key})
        return Resume(set(), same_model=False)
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
                   service: str | None = None, traffic: VendorTraffic | None = None,
                   connection: Connection | None = None) -> dict:
    """Score the test set with `model` (resuming), time the single-stream pass, write metrics.

    `traffic`: the vendor's calls, shared when several of its runs are measured at once (the
    `measure` stage); else the run's own, at the vendor's documented rate. `connection`: the
    run's, when the caller uses it again afterwards (for the load test); else one of its own.
    """
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
    concurrency = params.evaluate.concurrency
    sample = latency_sample(tests, params) if concurrency > 1 else []
    timed = _latency_done(paths.latency_csv(service, ds, n), state.same_model, sample)
    if todo or len(timed) < len(sample):
        with connected(params, service, model, connection) as svc:
            vendor = traffic or VendorTraffic(svc.max_rps)
            if todo:
                _score(svc, todo, out, concurrency, vendor, where)
            if len(timed) < len(sample):
                _time_singles(svc, [t for t in sample if t.name not in timed],
                              paths.latency_csv(service, ds, n), where, vendor)
    table = pd.read_csv(out, dtype={"predicted_class": str, "actual_class": str, "error": str},
                        keep_default_na=False)
    metrics = run_metrics(table)
    metrics.update(service=service, dataset=ds, ablation=n, train_seconds=model.train_seconds,
                   scoring_concurrency=concurrency, **_single_stream(service, ds, n, sample))
    atomic_write_json(paths.run_metrics_json(service, ds, n), metrics)
    err.print(f"{where}: accuracy {metrics['accuracy']:.3f} "
              f"(95% CI {metrics['accuracy_ci95'][0]:.3f}-{metrics['accuracy_ci95'][1]:.3f}), "
              f"p50 {metrics['latency_p50_ms']:.1f} ms, {metrics['errors']} errors")
    return metrics


def _score(svc: Service, todo: list[ImageRef], out: Path, concurrency: int,
           traffic: VendorTraffic, where: str) -> None:
    """Call the service once per image, `concurrency` calls in flight, appending each row as
    its answer comes (one writer: rows are whole lines, under a lock)."""
    lock = threading.Lock()
    right = scored = 0
    with CsvAppender(out, HEADER) as log, \
            progress(total=len(todo), desc=f"evaluate {where}", unit="img") as bar:

        def one(t: ImageRef) -> None:
            nonlocal right, scored
            stop_point()  # queued images of a killed run are left for the next one
            image = t.path.read_bytes()
            with traffic.call():
                pred, elapsed = timed_call(svc, image)
            if isinstance(pred, ServiceCallError):
                row = [t.name, t.class_name, NO_LABEL, "", f"{elapsed:.6f}", pred.attempts,
                       error_text(pred)]
            else:
                row = [t.name, t.class_name, pred.label or NO_LABEL, f"{pred.confidence:.6f}",
                       f"{elapsed:.6f}", pred.attempts, ""]
            with lock:
                log.write(row)
                if not isinstance(pred, ServiceCallError):
                    scored += 1
                    right += pred.label == t.class_name
                    bar.set_postfix(accuracy=f"{right / scored:.3f}", refresh=False)
                bar.update(1)

        if concurrency == 1:
            for t in todo:
                one(t)
            return
        with ThreadPoolExecutor(concurrency) as pool:
            for future in [pool.submit(one, t) for t in todo]:
                future.result()  # the first failure that is not a call's (a dead server) stops


def latency_sample(tests: list[ImageRef], params: Params) -> list[ImageRef]:
    """The test images of the single-stream pass: `latency.samples` of them, seeded."""
    if len(tests) <= params.latency.samples:
        return list(tests)
    return random.Random(f"{params.seed}/latency").sample(tests, params.latency.samples)


def _latency_done(path: Path, same_model: bool, sample: list[ImageRef]) -> set[str]:
    """Images of the pass already timed for this model (none when the model changed: a
    predictions file cut short keeps the timings, which do not depend on it)."""
    if not same_model or not sample:
        path.unlink(missing_ok=True)
        return set()
    wanted = {t.name for t in sample}
    return {row[0] for row in read_csv_log(path, LATENCY_HEADER).rows
            if row[0] in wanted and not row[3]}


def _time_singles(svc: Service, todo: list[ImageRef], path: Path, where: str,
                  traffic: VendorTraffic) -> None:
    """One call at a time, nothing else of this run in flight: each row the time of one call.
    Each call takes a token of the vendor's shared rate first (other runs of the vendor may be
    scoring at once), outside the timed part."""
    with CsvAppender(path, LATENCY_HEADER) as log:
        for t in progress(todo, desc=f"latency {where}", unit="call"):
            stop_point()
            image = t.path.read_bytes()
            traffic.rate.acquire()
            pred, elapsed = timed_call(svc, image)
            failed = isinstance(pred, ServiceCallError)
            log.write([t.name, f"{elapsed:.6f}", pred.attempts,
                       error_text(pred) if failed else ""])


def _single_stream(service: str, ds: str, n: int, sample: list[ImageRef]) -> dict:
    """Latency percentiles of the single-stream pass (the scoring calls' own when there was
    none: one call at a time, as the seed measured)."""
    if not sample:
        return {"latency_source": "scoring, one call at a time"}
    rows = [r for r in read_csv_log(paths.latency_csv(service, ds, n), LATENCY_HEADER).rows
            if not r[3]]
    seconds = [float(r[1]) for r in rows]
    lat = percentiles_ms(seconds, (50, 90, 95, 99))
    return {"latency_source": f"single-stream pass of {len(seconds)} images",
            "latency_calls": len(seconds),
            "latency_p50_ms": lat["p50"], "latency_p90_ms": lat["p90"],
            "latency_p95_ms": lat["p95"], "latency_p99_ms": lat["p99"],
            "latency_mean_ms": 1000 * sum(seconds) / len(seconds) if seconds else float("nan")}


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
