"""`submit` stage: every training the run needs, started before any is waited on.

DVC runs one stage at a time and a cloud training takes hours (Vertex's seed median: 2 hours),
so training service by service, dataset by dataset, would make a run's wall time the sum of its
trainings. This stage starts every (service, dataset, ablation) training that has no up-to-date
model, all at once within each vendor's `max_concurrent_trainings` (the next one starts as soon
as one ends), and follows them together, so the wall time is that of the longest queue.

Each service records its job the moment it exists (a killed run re-attaches and never submits
twice), and each model's `model.json` is written as soon as it is trained, so the `train`
stages that follow find every model up to date without a call to the vendor. Trainings start
longest first (the largest ablations, services in turn; a vendor's free upload or training slot
goes to the longest waiting run), so the longest training, which sets the wall time, never
queues behind short ones.

Each run is then measured the moment its model is trained (`measure.measure_run`: scored, timed,
load-tested, exactly as the `measure` stage would) and its deployment torn down (unless
`keep_deployed`): the scoring of early models overlaps the longest training instead of waiting
for it behind a stage barrier, and no endpoint bills for hours while other models train. The
`measure` stage still checks every run and does whatever is not done (a run that failed here,
services on this machine).

The stage's own output, `results/trainings.json`, says how each training of the run stands
("trained", or why not): the same whatever run trained it, so a rerun that had nothing to start
leaves the `train` stages up to date. Services that train on this machine (`local_compute`) are
left to their `train` stage: starting them early gains nothing. `schedule: serial` skips this
stage: the `train` stages then train one model after the other, as the seed did.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass

from mlbench import paths
from mlbench.bench.board import Board, Key
from mlbench.bench.measure import measure_run
from mlbench.bench.runs import selected_sizes
from mlbench.bench.teardown import tear_down
from mlbench.bench.traffic import VendorTraffic
from mlbench.bench.train import record_model, split_fingerprint
from mlbench.console import err, show_bars
from mlbench.core import AblationSplit, ImageRef, ModelRef
from mlbench.data.ablate import load_split
from mlbench.data.export import load_test_images
from mlbench.data.prepare import manifest_hashes
from mlbench.errors import ServiceError, UserError
from mlbench.io import atomic_write_json
from mlbench.params import Params
from mlbench.runlock import stop_point
from mlbench.services.registry import open_service, service_class

#: Runs of one vendor uploading at once (each sends its images over the service's own
#: connections): the longest trainings upload first instead of sharing the link with all.
UPLOADS_AT_ONCE = 4

#: At most this many trainings are followed at once in one process (threads that mostly wait:
#: one per training, so that none waits behind another's hours for a thread; the seed-scale
#: matrix is 120).
MAX_FOLLOWED = 256


@dataclass(frozen=True)
class Planned:
    service: str
    dataset: str
    ablation: int
    #: The fingerprint of the model's inputs, as `plan` found it (what `model.json` records).
    fingerprint: str

    @property
    def key(self) -> Key:
        return self.service, self.dataset, self.ablation


#: Each (dataset, ablation)'s split, read once per `submit` (70-90 ms each from its CSV).
Splits = dict[tuple[str, int], AblationSplit]


def plan(params: Params, splits: Splits) -> tuple[list[Planned], list[Planned]]:
    """The run's trainings on a vendor's machines: those it needs (no model recorded for the
    run's current inputs, not a resource given by hand), and those already done. Each
    dataset's manifest and each ablation's split are read once, for every service; the splits
    are kept in `splits` for the trainings."""
    needed: list[Planned] = []
    done: list[Planned] = []
    cloud = [s for s in params.services if not service_class(s).local_compute]
    if not cloud:
        return needed, done
    for ds in params.datasets:
        sha = manifest_hashes(ds)  # once per dataset, for every service
        for n in selected_sizes(params, ds, quiet=True):
            splits[ds, n] = split = load_split(ds, n)
            for service in cloud:
                with open_service(params, service, ds, n) as svc:
                    given = svc.hand_given()
                    key = split_fingerprint(svc, split, sha, given)
                model = ModelRef.load(paths.model_json(service, ds, n))
                run = Planned(service, ds, n, key)
                if given or (model is not None and model.details.get("fingerprint") == key):
                    done.append(run)
                else:
                    needed.append(run)
    return needed, done


def limit_of(params: Params, service: str, wanted: int) -> int:
    """How many of a service's trainings may run at once (its `max_concurrent_trainings`)."""
    from mlbench.services.registry import parse_settings

    limit = getattr(parse_settings(service, params.section(service)),
                    "max_concurrent_trainings", None)
    return max(1, min(wanted, limit)) if limit else max(1, wanted)


class Slots:
    """A vendor's slots (its `max_concurrent_trainings`, or its uploads at once), each given to
    the waiting run that comes first in `longest_first` order, not to whichever got there first
    (small ablations upload fastest and would take every training slot ahead of the long
    trainings)."""

    def __init__(self, limit: int):
        self._free = limit
        self._waiting: list[int] = []  # ranks, a heap
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, rank: int) -> Iterator[None]:
        with self._cond:
            heapq.heappush(self._waiting, rank)
            while not (self._free and self._waiting[0] == rank):
                self._cond.wait()
            heapq.heappop(self._waiting)
            self._free -= 1
            self._cond.notify_all()  # the next in line may take another free slot
        try:
            yield
        finally:
            with self._cond:
                self._free += 1
                self._cond.notify_all()


@dataclass
class Shared:
    """What every run's thread of one `submit` shares: each vendor's training and upload
    slots and its calls (one rate for all its runs being measured), the test sets, the splits,
    the board."""

    params: Params
    trainings: dict[str, Slots]
    uploads: dict[str, Slots]
    traffic: dict[str, VendorTraffic]
    tests: dict[str, list[ImageRef]]
    splits: Splits
    board: Board


def _train(run: Planned, rank: int, shared: Shared) -> str:
    """Upload (holding one of the vendor's upload slots), then (holding one of its training
    slots) submit and wait, then record the model (so its `train` stage has nothing to ask the
    vendor), measure it and tear its deployment down: the training's outcome."""
    params, board = shared.params, shared.board
    with open_service(params, run.service, run.dataset, run.ablation) as svc:
        split = shared.splits[run.dataset, run.ablation]
        board.set(run.key, "waiting to upload")
        with shared.uploads[run.service].hold(rank):
            board.set(run.key, "uploading")
            svc.upload(split)
        board.set(run.key, "waiting for a slot")
        with shared.trainings[run.service].hold(rank):
            stop_point()  # a killed run starts nothing more; the next run re-attaches
            job = svc.submit(split)
            board.set(run.key, "training")
            model = svc.wait(job)
        record_model(model, run.fingerprint)
    seconds = "?" if model.train_seconds is None else f"{model.train_seconds:.0f} s"
    board.set(run.key, "trained", seconds)
    _measure_now(run, model, shared)
    return "trained"


def _measure_now(run: Planned, model: ModelRef, shared: Shared) -> None:
    """The `measure` stage's work for one run, done the moment its model is trained: scoring
    then does not wait for the run's longest training (Nyckel's rate-limited calls alone take
    hours at the seed's scale), and the deployment bills only while it is measured, since it is
    torn down right after (unless `keep_deployed`). A failure here is left to `measure`, which
    checks every run and tries again what is not done."""
    outcome = measure_run(shared.params, run.service, model, shared.tests[run.dataset],
                          shared.traffic[run.service], shared.board)
    if isinstance(outcome, str) or shared.params.keep_deployed:
        return
    line, ok = tear_down(shared.params, run.service, model)
    shared.board.set(run.key, "measured, torn down" if ok else "measured", line)


def run_submit(params: Params) -> dict[str, str]:
    """Train everything the run needs at once; `results/trainings.json` says how each of the
    run's trainings stands."""
    outcomes: dict[str, str] = {}
    if params.schedule == "serial":
        err.print("schedule: serial: each train stage trains its models one after the other")
    else:
        splits: Splits = {}
        runs, done = plan(params, splits)
        outcomes = {"/".join(map(str, run.key)): "trained" for run in done}
        if not runs:
            err.print("every model of the run is trained: nothing to submit")
        else:
            outcomes.update(_run_all(params, runs, splits))
    atomic_write_json(paths.trainings_file(), dict(sorted(outcomes.items())))
    failed = {k: v for k, v in outcomes.items() if v != "trained"}
    if failed:
        first = next(iter(failed.items()))
        raise ServiceError(f"{len(failed)} of {len(outcomes)} trainings failed (rerun to retry "
                           f"them; the others are kept); first: {first[0]}: {first[1]}")
    return outcomes


def longest_first(runs: list[Planned]) -> list[Planned]:
    """The order trainings start in: the largest ablation first (training time grows with the
    images), taking services in turn, so the run's longest training, which sets its wall time,
    neither uploads behind nor waits for a slot behind shorter ones."""
    by_service: dict[str, list[Planned]] = {}
    for run in sorted(runs, key=lambda r: -r.ablation):
        by_service.setdefault(run.service, []).append(run)
    queues = list(by_service.values())
    return [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]


def _run_all(params: Params, runs: list[Planned], splits: Splits) -> dict[str, str]:
    runs = longest_first(runs)
    wanted: dict[str, int] = {}
    for run in runs:
        wanted[run.service] = wanted.get(run.service, 0) + 1
    err.print(f"submitting {len(runs)} training(s): " + ", ".join(
        f"{svc} {k} ({limit_of(params, svc, k)} at a time)" for svc, k in wanted.items()))
    outcomes: dict[str, str] = {}
    show_bars(False)
    try:
        with Board("trainings", (r.key for r in runs)) as board, \
                ThreadPoolExecutor(min(len(runs), MAX_FOLLOWED)) as pool:
            shared = Shared(
                params,
                trainings={svc: Slots(limit_of(params, svc, k)) for svc, k in wanted.items()},
                uploads={svc: Slots(UPLOADS_AT_ONCE) for svc in wanted},
                traffic={svc: VendorTraffic(service_class(svc).max_rps) for svc in wanted},
                tests={ds: load_test_images(ds) for ds in {r.dataset for r in runs}},
                splits=splits, board=board)
            futures = {pool.submit(_train, run, rank, shared): run
                       for rank, run in enumerate(runs)}
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
