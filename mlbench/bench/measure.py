"""`score` stage: every trained model of the run scored side by side.

DVC runs the `evaluate` stages one after the other; scoring Vertex's 25,000-image Food-101 test
set alone takes an hour at 8 calls in flight. This stage scores every (service, dataset,
ablation) at once where its model is ready: each run deploys (its `connect`), scores its test set
with `evaluate.concurrency` calls in flight and times its single-stream pass, exactly as its
`evaluate` stage would (the same code, resumable the same way); a vendor's runs share one rate
limiter, so together they never exceed its documented rate. The `evaluate` stages that follow
find every run scored and only write its metrics.

Runs of services that serve on this machine (`local_compute`) are scored after the others, one
at a time, so that no latency of theirs is measured under another run's load.
`schedule: serial` skips this stage: each `evaluate` stage then scores its own runs.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor, as_completed

from mlbench import paths
from mlbench.bench.board import Board, Key
from mlbench.bench.evaluate import evaluate_model
from mlbench.bench.runs import trained_models
from mlbench.console import err, show_bars
from mlbench.core import ImageRef, ModelRef
from mlbench.data.export import load_test_images
from mlbench.errors import ServiceError, UserError
from mlbench.io import atomic_write_json
from mlbench.params import Params
from mlbench.runlock import writer_lock
from mlbench.services.ratelimit import RateLimiter
from mlbench.services.registry import service_class

#: At most this many runs are scored at once (each with `evaluate.concurrency` calls in flight).
MAX_SCORED = 16


def run_score(params: Params) -> dict[str, object]:
    """Score every run of the run's services and datasets; `results/scoring.json` records the
    accuracy each reached (what the `evaluate` stages wait on)."""
    outcomes: dict[str, object] = {}
    if params.schedule == "serial":
        err.print("schedule: serial: each evaluate stage scores its own runs, one at a time")
    else:
        tests = {ds: load_test_images(ds) for ds in params.datasets}
        runs = [(svc, model) for svc in params.services for ds in params.datasets
                for model in trained_models(params, svc, ds)]
        with contextlib.ExitStack() as locks:
            for svc, ds in sorted({(svc, m.dataset) for svc, m in runs}):
                locks.enter_context(writer_lock(paths.writer_lock(svc, ds),
                                                f"mlbench score ({svc} {ds})"))
            outcomes = _score_all(params, runs, tests)
    atomic_write_json(paths.scoring_file(), dict(sorted(outcomes.items())))
    failed = {k: v for k, v in outcomes.items() if isinstance(v, str)}
    if failed:
        first = next(iter(failed.items()))
        raise ServiceError(f"{len(failed)} of {len(outcomes)} runs could not be scored (rerun: "
                           f"every row so far is kept); first: {first[0]}: {first[1]}")
    return outcomes


def _score_all(params: Params, runs: list[tuple[str, ModelRef]],
               tests: dict[str, list[ImageRef]]) -> dict[str, object]:
    def key(svc: str, model: ModelRef) -> Key:
        return svc, model.dataset, model.ablation

    limiters = {svc: RateLimiter(service_class(svc).max_rps) for svc in params.services}
    remote = [r for r in runs if not service_class(r[0]).local_compute]
    here = [r for r in runs if service_class(r[0]).local_compute]
    outcomes: dict[str, object] = {}

    def one(svc: str, model: ModelRef) -> None:
        name = "/".join(map(str, key(svc, model)))
        board.set(key(svc, model), "scoring")
        try:
            metrics = evaluate_model(params, model, tests[model.dataset], svc, limiters[svc])
        except (ServiceError, UserError) as exc:
            outcomes[name] = str(exc)
            board.set(key(svc, model), "failed", str(exc))
            return
        outcomes[name] = round(float(metrics["accuracy"]), 6)
        board.set(key(svc, model), "scored", f"accuracy {metrics['accuracy']:.3f}")

    show_bars(False)
    try:
        with Board("scoring", (key(*r) for r in runs)) as board:
            if remote:
                with ThreadPoolExecutor(min(len(remote), MAX_SCORED)) as pool:
                    for future in as_completed([pool.submit(one, *r) for r in remote]):
                        future.result()
            for run in here:
                one(*run)
    finally:
        show_bars(True)
    return outcomes
