"""`measure` stage: every trained model of the run scored, timed and load-tested side by side.

DVC runs the `evaluate` and `load` stages one after the other; scoring Vertex's 25,000-image
Food-101 test set alone takes an hour at 8 calls in flight, and the seed-scale run has 120
load tests. This stage measures every (service, dataset, ablation) at once where its model is
ready: each run deploys (its `connect`), scores its test set with `evaluate.concurrency` calls
in flight, times its single-stream pass and runs its load test, exactly as its `evaluate` and
`load` stages would (the same code, resumable the same way). A vendor's runs share one rate
limiter, so together they never exceed its documented rate, and a load test runs while its
vendor serves nothing else of ours (`traffic.VendorTraffic`). The `evaluate` and `load` stages
that follow find every run measured and only write its metrics.

With `schedule: parallel`, `submit` has already measured each cloud run the moment its model
was trained (with `measure_run`, below): this stage then finds those runs done (the same
fingerprints the `evaluate` and `load` stages check) and measures what is left: a run whose
measuring failed there, and every run of a service on this machine.

Runs of services that serve on this machine (`local_compute`) are measured after the others,
one at a time, so that no figure of theirs is taken under another run's load.
`schedule: serial` skips this stage: each `evaluate` and `load` stage then does its own runs.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed

from mlbench import paths
from mlbench.bench.board import Board, Key
from mlbench.bench.evaluate import evaluate_model
from mlbench.bench.load import load_model
from mlbench.bench.runs import Connection, trained_models
from mlbench.bench.traffic import VendorTraffic
from mlbench.console import err, show_bars
from mlbench.core import ImageRef, ModelRef
from mlbench.data.export import load_test_images
from mlbench.errors import ServiceError, UserError
from mlbench.io import atomic_write_json
from mlbench.params import Params
from mlbench.runlock import stop_point, writer_lock
from mlbench.services.registry import service_class

#: At most this many runs of one vendor are measured at once (each with `evaluate.concurrency`
#: calls in flight, all within the vendor's one rate limit). Per vendor, so that a vendor whose
#: rate limit makes its runs slow (Nyckel: 25 calls a second for all of them) never holds the
#: places of another vendor's runs.
MAX_MEASURED = 16


def run_measure(params: Params) -> dict[str, object]:
    """Measure every run of the run's services and datasets; `results/measured.json` records
    each run's accuracy and load-test throughput (what the `evaluate` and `load` stages wait
    on), or why it could not be measured."""
    outcomes: dict[str, object] = {}
    if params.schedule == "serial":
        err.print("schedule: serial: each evaluate and load stage measures its own runs, "
                  "one at a time")
    else:
        tests = {ds: load_test_images(ds) for ds in params.datasets}
        runs = [(svc, model) for svc in params.services for ds in params.datasets
                for model in trained_models(params, svc, ds)]
        with contextlib.ExitStack() as locks:
            for svc, ds in sorted({(svc, m.dataset) for svc, m in runs}):
                locks.enter_context(writer_lock(paths.writer_lock(svc, ds),
                                                f"mlbench measure ({svc} {ds})"))
            outcomes = _measure_all(params, runs, tests)
    atomic_write_json(paths.measured_file(), dict(sorted(outcomes.items())))
    failed = {k: v for k, v in outcomes.items() if isinstance(v, str)}
    if failed:
        first = next(iter(failed.items()))
        raise ServiceError(f"{len(failed)} of {len(outcomes)} runs could not be measured (rerun:"
                           f" every row so far is kept); first: {first[0]}: {first[1]}")
    return outcomes


def measure_run(params: Params, service: str, model: ModelRef, tests: list[ImageRef],
                vendor: VendorTraffic, board: Board) -> dict[str, float] | str:
    """Score one run (within its vendor's shared rate), then load-test it while nothing else
    of ours calls the vendor: its accuracy and throughput, or why it could not be measured.
    Shared by this stage and `submit` (which measures each run as soon as it is trained)."""
    key: Key = (service, model.dataset, model.ablation)
    try:
        stop_point()
        board.set(key, "scoring")
        with Connection(params, service, model) as conn:
            metrics = evaluate_model(params, model, tests, service, vendor, conn)
            board.set(key, "waiting to load-test", f"accuracy {metrics['accuracy']:.3f}")
            with vendor.alone():
                board.set(key, "load-testing")
                load = load_model(params, model, tests, service, vendor.rate, conn)
    except (ServiceError, UserError) as exc:
        board.set(key, "failed", str(exc))
        return str(exc)
    board.set(key, "measured", f"accuracy {metrics['accuracy']:.3f}, "
              f"{load['throughput_rps']:.1f} req/s")
    return {"accuracy": round(float(metrics["accuracy"]), 6),
            "throughput_rps": round(float(load["throughput_rps"]), 3)}


def _measure_all(params: Params, runs: list[tuple[str, ModelRef]],
                 tests: dict[str, list[ImageRef]]) -> dict[str, object]:
    traffic = {svc: VendorTraffic(service_class(svc).max_rps) for svc in params.services}
    remote = [r for r in runs if not service_class(r[0]).local_compute]
    here = [r for r in runs if service_class(r[0]).local_compute]
    outcomes: dict[str, object] = {}

    def one(svc: str, model: ModelRef) -> None:
        name = f"{svc}/{model.dataset}/{model.ablation}"
        outcomes[name] = measure_run(params, svc, model, tests[model.dataset], traffic[svc],
                                     board)

    show_bars(False)
    try:
        with Board("measuring", ((svc, m.dataset, m.ablation) for svc, m in runs)) as board, \
                contextlib.ExitStack() as stack:
            per_vendor = Counter(svc for svc, _ in remote)
            pools = {svc: stack.enter_context(ThreadPoolExecutor(min(MAX_MEASURED, k)))
                     for svc, k in per_vendor.items()}
            futures = [pools[svc].submit(one, svc, model)
                       for svc, model in most_work_first(remote, tests)]
            for future in as_completed(futures):
                future.result()
            for run in here:
                one(*run)
    finally:
        show_bars(True)
    return outcomes


def most_work_first(runs: list[tuple[str, ModelRef]],
                    tests: dict[str, list[ImageRef]]) -> list[tuple[str, ModelRef]]:
    """The runs in the order they are measured: the largest test set first (scoring it is the
    longest part of a run), then the largest ablation (the last model trained)."""
    return sorted(runs, key=lambda r: (-len(tests[r[1].dataset]), -r[1].ablation))
