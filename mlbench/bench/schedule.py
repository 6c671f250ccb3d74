"""`submit` stage: every training the run needs, started before any is waited on.

DVC runs one stage at a time and a cloud training takes hours (Vertex's seed median: 2 hours),
so training service by service, dataset by dataset, would make a run's wall time the sum of its
trainings. This stage starts every (service, dataset, ablation) training that has no up-to-date
model, all at once within each vendor's `max_concurrent_trainings` (the next one starts as soon
as one ends), and follows them together, so the wall time is that of the longest queue.

Each service records its job the moment it exists (a killed run re-attaches and never submits
twice), and the `train` stages that follow find every model trained and write its
`model.json`. The stage's own output, `results/trainings.json`, says how each training of the
run stands ("trained", or why not): the same whatever run trained it, so a rerun that had
nothing to start leaves the `train` stages up to date. Services that train on this machine
(`local_compute`) are left to their `train` stage: starting them early gains nothing.
`schedule: serial` skips this stage: the `train` stages then train one model after the other,
as the seed did.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass

from mlbench import paths
from mlbench.bench.board import Board, Key
from mlbench.bench.runs import selected_sizes
from mlbench.bench.train import split_fingerprint
from mlbench.console import err, show_bars
from mlbench.core import ModelRef
from mlbench.data.ablate import load_split
from mlbench.data.prepare import manifest_hashes
from mlbench.errors import ServiceError, UserError
from mlbench.io import atomic_write_json
from mlbench.params import Params
from mlbench.runlock import stop_point
from mlbench.services.registry import open_service, service_class

#: At most this many trainings are followed at once in one process (threads that mostly wait).
MAX_FOLLOWED = 64


@dataclass(frozen=True)
class Planned:
    service: str
    dataset: str
    ablation: int

    @property
    def key(self) -> Key:
        return self.service, self.dataset, self.ablation


def plan(params: Params) -> tuple[list[Planned], list[Planned]]:
    """The run's trainings on a vendor's machines: those it needs (no model recorded for the
    run's current inputs, not a resource given by hand), and those already done."""
    needed, done = [], []
    for service in params.services:
        if service_class(service).local_compute:
            continue
        for ds in params.datasets:
            sha = manifest_hashes(ds)
            for n in selected_sizes(params, ds, quiet=True):
                with open_service(params, service, ds, n) as svc:
                    given = svc.hand_given()
                    key = split_fingerprint(svc, load_split(ds, n), sha, given)
                model = ModelRef.load(paths.model_json(service, ds, n))
                if given or (model is not None and model.details.get("fingerprint") == key):
                    done.append(Planned(service, ds, n))
                else:
                    needed.append(Planned(service, ds, n))
    return needed, done


def limit_of(params: Params, service: str, wanted: int) -> int:
    """How many of a service's trainings may run at once (its `max_concurrent_trainings`)."""
    from mlbench.services.registry import parse_settings

    limit = getattr(parse_settings(service, params.section(service)),
                    "max_concurrent_trainings", None)
    return max(1, min(wanted, limit)) if limit else max(1, wanted)


def _train(params: Params, run: Planned, slots: threading.Semaphore, board: Board) -> str:
    """Upload, then (holding one of the vendor's slots) submit and wait: the run's outcome."""
    with open_service(params, run.service, run.dataset, run.ablation) as svc:
        split = load_split(run.dataset, run.ablation)
        board.set(run.key, "uploading")
        svc.upload(split)
        board.set(run.key, "waiting for a slot")
        with slots:
            stop_point()  # a killed run starts nothing more; the next run re-attaches
            job = svc.submit(split)
            board.set(run.key, "training")
            model = svc.wait(job)
    seconds = "?" if model.train_seconds is None else f"{model.train_seconds:.0f} s"
    board.set(run.key, "trained", seconds)
    return "trained"


def run_submit(params: Params) -> dict[str, str]:
    """Train everything the run needs at once; `results/trainings.json` says how each of the
    run's trainings stands."""
    outcomes: dict[str, str] = {}
    if params.schedule == "serial":
        err.print("schedule: serial: each train stage trains its models one after the other")
    else:
        runs, done = plan(params)
        outcomes = {"/".join(map(str, run.key)): "trained" for run in done}
        if not runs:
            err.print("every model of the run is trained: nothing to submit")
        else:
            outcomes.update(_run_all(params, runs))
    atomic_write_json(paths.trainings_file(), dict(sorted(outcomes.items())))
    failed = {k: v for k, v in outcomes.items() if v != "trained"}
    if failed:
        first = next(iter(failed.items()))
        raise ServiceError(f"{len(failed)} of {len(outcomes)} trainings failed (rerun to retry "
                           f"them; the others are kept); first: {first[0]}: {first[1]}")
    return outcomes


def _run_all(params: Params, runs: list[Planned]) -> dict[str, str]:
    wanted: dict[str, int] = {}
    for run in runs:
        wanted[run.service] = wanted.get(run.service, 0) + 1
    slots = {svc: threading.Semaphore(limit_of(params, svc, k)) for svc, k in wanted.items()}
    err.print(f"submitting {len(runs)} training(s): " + ", ".join(
        f"{svc} {k} ({limit_of(params, svc, k)} at a time)" for svc, k in wanted.items()))
    outcomes: dict[str, str] = {}
    show_bars(False)
    try:
        with Board("trainings", (r.key for r in runs)) as board, \
                ThreadPoolExecutor(min(len(runs), MAX_FOLLOWED)) as pool:
            futures = {pool.submit(_train, params, run, slots[run.service], board): run
                       for run in runs}
            for future in as_completed(futures):
                run = futures[future]
                name = "/".join(map(str, run.key))
                try:
                    outcomes[name] = future.result()
                except (ServiceError, UserError) as exc:
                    outcomes[name] = f"failed: {exc}"
                    board.set(run.key, "failed", str(exc))
    finally:
        show_bars(True)
    return outcomes
