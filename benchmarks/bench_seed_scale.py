"""Benchmark (issue 11, item 6): the seed-scale run simulated through `dvc repro` on paced fakes.

6 datasets x 5 ablations x 4 cloud services, against fakes that take the seed's published
times, compressed; wall time against the critical path, for the new design and the seed's
serial one, in one run.

What runs: a temporary project (the repo's dvc.yaml, params.yaml and mlbench code, `git init`,
`dvc init`, as the end-to-end tests make one) whose six datasets are the test replicas of the
real archives (`tests/replicas`, fetched from a `MirrorServer` on 127.0.0.1 through the real
fetch and prepare code), topped up per class to the ablation ladder and to test sets scaled
from the real ones. The data stages run first and are not timed. Then, per arm, a copy of that
project, the four cloud fakes started in this process with pacing (`tests/fakes/stack.py`,
`tests/fakes/pacing.py`: Nyckel, Hugging Face Hub + Jobs + Inference Endpoints, Vertex AI with
the Cloud Storage emulator, Rekognition Custom Labels with moto S3), `services: [nyckel,
huggingface, vertex, rekognition]`, and one timed `dvc repro` of the whole pipeline:

- **new**: `schedule: parallel`, `evaluate.concurrency: 8`, compression C;
- **serial**: `schedule: serial`, `evaluate.concurrency: 1` (the seed's design), compression
  C_serial = `--serial-factor` x C (at C it would take hours: its wall time is the sum of every
  training and scoring);
- **overhead**: the new arm with every duration ~0 (no training, deployment or call time): what
  the harness itself costs (DVC, processes, uploads, the fakes' work, polls, Nyckel's 25/s);
- **kill**: a short run (2 datasets x 2 ablations x 4 services, every training 30 s): `dvc
  repro` SIGKILLed while trainings are in flight (during `submit`), then `dvc repro` again; the
  fakes count what was created (no dataset, Job, model, pipeline or endpoint twice) and what is
  still deployed afterwards (nothing), and `mlbench status` must say nothing is billed.

Durations (vendor seconds, compressed by the arm's C; S is the test-set scale):
    training     T / C          T: the seed's published training time of that dataset, service
                                and ablation rung (`--times table`); a rung the seed did not
                                publish takes the dataset's largest published rung below it;
                                `--times median`: every run of a service its median (the issue's
                                "3 hours" critical path)
    deployment   D / C          Vertex DeployModel 900 s, Rekognition StartProjectVersion 600 s,
                                an Inference Endpoint 300 s, Nyckel 0 (serves once trained):
                                assumptions, neither the seed nor VENDOR-NOTES gives one
    one call     L / (C * S)    L: the seed's mean latency of that run (same lookup as T)
    test set     N * S          per dataset, N the real test set (beans 128, cars 8,041, food
                                25,250, intel 3,000, pets 3,669, xrays 624), split evenly over
                                the replica's classes, at least 5 a class (Vertex needs 10
                                images a label counting the test images, and ablation 5 gives 5)
    rate limit   R * C * S      Nyckel 25 req/s (documented); none documented for the others
    load.calls   1000 * S       (rounded to whole batches of load.concurrency, at least one)
    latency.samples  200 * S    (at least 1)
    polls        default / C    (at least `--min-poll` wall seconds)
so a simulated duration is the real one / C (scoring: N*S calls of L/(C*S) = N*L/C). The new
arm takes S = 1/C: a call then lasts its real latency and a rate limit its real value, which
the harness needs, because it paces Nyckel at 25 req/s in wall time (a constant, not a
setting): only with C*S = 1 is that pace the simulated vendor's. Training quotas are raised to
the runs per vendor (`max_concurrent_trainings`: 30), as the issue's critical path assumes;
the default quotas' lower bound is computed beside it. The ablation ladder is `--ladder`
(5,10,15,20,25 images per class), rung i standing for the seed's rung i (5, 20, 80, 320, 1280):
uploads are not paced and not on the critical path, so they are kept small.

Critical path (the issue's definition), per arm, from the same simulated durations: the longest
chain training -> deployment -> scoring that run's test set at the arm's concurrency k within
the rate limit: max over runs of T/C + D/C + N*S / min(k / (L/(C*S)), R*C*S). The single-stream
latency pass and the load test are not in it (the issue's definition); they are in the wall.
Reported: wall / critical path per arm (target for the new arm <= 1.3), C, S, the overhead arm,
per-stage wall times (from `dvc repro`'s "Running stage" lines), when the trainings and
deployments started and ended at the fakes, and the load average.

Needs the test extra (moto, gcp-storage-emulator, the cloud SDKs: `pip install -e '.[all,test]'`).
Work files under $TMPDIR/mlbench-bench-seed-scale/ (logs kept there). Run from the project root:
`python benchmarks/bench_seed_scale.py [--compress 120] [--arms overhead,new,serial,kill]`.
Writes results/bench/seed_scale.json.
"""

from __future__ import annotations

import argparse
import compileall
import functools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from _common import ROOT, bench_tmp, check_quiet, loadavg, print_table, say, write_result

from mlbench.report.seed_format import PUBLISHED_RESULTS, read_seed_results
from mlbench.services.registry import parse_settings
from tests.fakes.pacing import Pacing
from tests.fakes.stack import BUCKET, CloudFakes
from tests.replicas import BUILDERS, MirrorServer, Size, mirror_files

DATASETS = ("beans", "cars", "food", "intel", "pets", "xrays")
SERVICES = ("nyckel", "huggingface", "vertex", "rekognition")
SEED_LADDER = (5, 20, 80, 320, 1280)
#: The real test sets (images), as the seed scored them.
REAL_TEST = {"beans": 128, "cars": 8041, "food": 25250, "intel": 3000, "pets": 3669,
             "xrays": 624}
#: Deployment / model start, vendor seconds (assumptions: see the module docstring).
DEPLOY = {"nyckel": 0.0, "huggingface": 300.0, "vertex": 900.0, "rekognition": 600.0}
#: Documented prediction rate limits, requests per second (None: none documented).
RATE = {"nyckel": 25.0, "huggingface": None, "vertex": None, "rekognition": None}
#: Each service's poll setting (its default is read from its Settings).
POLL_KEY = {"nyckel": "poll_interval", "huggingface": "poll_seconds", "vertex": "poll_seconds",
            "rekognition": "poll_seconds"}
MIN_TEST_PER_CLASS = 5
EVAL_NEW, EVAL_SERIAL, LOAD_CONCURRENCY = 8, 1, 10
TARGET = 1.3
NAME = re.compile(r"-(" + "|".join(DATASETS) + r")-(\d+)-")


# -- the seed's numbers -------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """One (service, dataset, ablation) of the simulation and its real (vendor) durations."""

    service: str
    dataset: str
    ablation: int  # images per class in the simulation
    seed_ablation: int  # the seed's rung it stands for
    train_s: float
    latency_s: float
    source: str  # where T and L come from


def seed_runs(datasets: tuple[str, ...], ladder: tuple[int, ...], times: str) -> list[Run]:
    """Every run of the matrix with the seed's published training time and latency."""
    table = read_seed_results(PUBLISHED_RESULTS)
    runs = []
    for svc in SERVICES:
        mine = table[table["service"] == svc]
        medians = (float(mine["train_seconds"].median()), float(mine["latency_s"].median()))
        for ds in datasets:
            rows = mine[mine["dataset"] == ds].set_index("ablation")
            for n, rung in zip(ladder, SEED_LADDER, strict=True):
                if times == "median":
                    runs.append(Run(svc, ds, n, rung, *medians, "median of the service"))
                    continue
                below = [int(a) for a in rows.index if int(a) <= rung]
                if not below:
                    raise SystemExit(f"the published table has no {svc} {ds} row at or below "
                                     f"{rung}")
                used = max(below)
                row = rows.loc[used]
                runs.append(Run(svc, ds, n, rung, float(row["train_seconds"]),
                                float(row["latency_s"]),
                                "published" if used == rung else f"published at {used}"))
    return runs


@functools.cache
def classes_of(ds: str) -> int:
    """How many classes the dataset's replica has."""
    return len(BUILDERS[ds]().classes())


def test_sizes(datasets: tuple[str, ...], scale: float) -> dict[str, int]:
    """Test images per class of each replica: N * S split over its classes, at least 5."""
    return {ds: max(MIN_TEST_PER_CLASS, math.ceil(REAL_TEST[ds] * scale / classes_of(ds)))
            for ds in datasets}


# -- an arm -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Arm:
    name: str
    schedule: str  # parallel | serial
    concurrency: int  # evaluate.concurrency
    compress: float  # C: vendor seconds per wall second
    zero: bool = False  # every duration ~0: the harness's own overhead

    def pacing(self, svc: str, runs: dict[tuple[str, str, int], Run], scale: float) -> Pacing:
        """The fake of `svc` replaying the runs' durations at this arm's speed."""
        if self.zero:
            return Pacing()
        c = self.compress

        def run_of(name: str) -> Run:
            m = NAME.search(name)
            if m is None or (svc, m[1], int(m[2])) not in runs:
                raise ValueError(f"{svc}: no run of the matrix is named in {name!r}")
            return runs[(svc, m[1], int(m[2]))]

        rate = RATE[svc] * c * scale if RATE[svc] else None
        return Pacing(train=lambda name: run_of(name).train_s / c, deploy=DEPLOY[svc] / c,
                      latency=lambda name: run_of(name).latency_s / (c * scale), rate=rate)


def critical_path(runs: list[Run], tests: dict[str, int], arm: Arm, scale: float
                  ) -> dict[str, Any]:
    """The issue's critical path of `arm` in wall seconds: max over runs of training +
    deployment + scoring the run's test set at the arm's concurrency within the rate limit."""
    def chain(r: Run) -> tuple[float, float, float]:
        c = arm.compress
        per_call = r.latency_s / (c * scale)
        rate = arm.concurrency / per_call
        if RATE[r.service]:
            rate = min(rate, RATE[r.service] * c * scale)
        images = tests[r.dataset] * classes_of(r.dataset)
        return r.train_s / c, DEPLOY[r.service] / c, images / rate

    longest = max(runs, key=lambda r: sum(chain(r)))
    train, deploy, score = chain(longest)
    return {"seconds": train + deploy + score, "train_s": train, "deploy_s": deploy,
            "score_s": score, "vendor_hours": (train + deploy + score) * arm.compress / 3600,
            "run": f"{longest.service}/{longest.dataset}/{longest.ablation} (seed rung "
                   f"{longest.seed_ablation})"}


def design_bounds(runs: list[Run], tests: dict[str, int], arm: Arm, scale: float,
                  calls: dict[str, int]) -> dict[str, float]:
    """What a design allows at best, in wall seconds. Parallel: `barrier_bound_s` is the bound
    of a design where every training ends before any scoring starts (the `measure` stage
    alone, before `submit` measured each run as it was trained): the last training, then the
    slowest of one run's deployment + scoring and one vendor's scoring calls at its rate
    limit; scoring each run when trained removes that barrier, leaving the critical path.
    Serial: the sum."""
    c = arm.compress
    classes = {ds: classes_of(ds) for ds in tests}

    def score(r: Run, k: int) -> float:
        rate = k / (r.latency_s / (c * scale))
        if RATE[r.service]:
            rate = min(rate, RATE[r.service] * c * scale)
        return tests[r.dataset] * classes[r.dataset] / rate

    if arm.schedule == "serial":
        total = sum(r.train_s / c + DEPLOY[r.service] / c + score(r, 1) for r in runs)
        return {"serial_sum_s": total}
    per_vendor = {}
    for svc, limit in RATE.items():
        if limit:
            mine = [r for r in runs if r.service == svc]
            per_vendor[svc] = (sum(tests[r.dataset] * classes[r.dataset] for r in mine)
                               + calls["per_run"] * len(mine)) / (limit * c * scale)
    last_training = max(r.train_s for r in runs) / c
    one_run = max(DEPLOY[r.service] / c + score(r, arm.concurrency) for r in runs)
    return {"last_training_s": last_training, "slowest_run_after_it_s": one_run,
            **{f"{svc}_all_calls_at_rate_limit_s": s for svc, s in per_vendor.items()},
            "barrier_bound_s": last_training + max([one_run, *per_vendor.values()])}


def default_quota_bound(runs: list[Run]) -> dict[str, Any]:
    """With each vendor's default `max_concurrent_trainings`, its trainings alone take at
    least max(longest, sum / quota) (vendor hours)."""
    out = {}
    for svc in SERVICES:
        quota = parse_settings(svc, {}).max_concurrent_trainings
        mine = [r.train_s for r in runs if r.service == svc]
        out[svc] = {"quota": quota, "trainings": len(mine),
                    "hours_at_least": max(max(mine), sum(mine) / quota) / 3600}
    return out


# -- the project ----------------------------------------------------------------------------------
PROJECT_FILES = ("dvc.yaml", "params.yaml", ".dvcignore", "pyproject.toml")
DATA_STAGES = ("fetch", "prepare", "ablate", "testsets", "export", "folders")


def base_params(datasets: tuple[str, ...], ladder: tuple[int, ...], sources: dict[str, Any],
                buckets: dict[str, str]) -> dict[str, Any]:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params.update(datasets=list(datasets), ablations=list(ladder), ablation="all",
                  test_per_class="all", services=list(SERVICES), sources=sources,
                  buckets=buckets)
    return params


def environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, **(extra or {})}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def make_data_project(dest: Path, params: dict[str, Any], mirror: str) -> float:
    """The project with every data stage done (not timed by the arms); their seconds."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in PROJECT_FILES:
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(ROOT / "mlbench", dest / "mlbench",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = environment({"MLBENCH_MIRROR": mirror})
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=dest, check=True, env=env)
    start = time.monotonic()
    done = subprocess.run(["dvc", "repro", *DATA_STAGES], cwd=dest, env=env,
                          capture_output=True, text=True)
    (dest.parent / "data-stages.log").write_text(done.stdout + done.stderr)
    if done.returncode:
        raise SystemExit(f"the data stages failed (see {dest.parent / 'data-stages.log'}):\n"
                         + (done.stdout + done.stderr)[-3000:])
    return time.monotonic() - start


def clone(src: Path, dest: Path) -> Path:
    """A copy of the data project: data and DVC's cache hard-linked (never edited in place:
    DVC replaces what it rewrites), the rest copied."""
    if dest.exists():
        shutil.rmtree(dest)

    def link_or_copy(s: str, d: str) -> None:
        rel = Path(s).relative_to(src).parts
        if rel[0] == "data" or rel[:2] == (".dvc", "cache"):
            os.link(s, d)
        else:
            shutil.copy2(s, d)

    shutil.copytree(src, dest, copy_function=link_or_copy, symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    return dest


# -- one `dvc repro` ----------------------------------------------------------------------------
@dataclass
class Repro:
    returncode: int
    wall_s: float
    started: float  # time.time() at start
    lines: list[tuple[float, str]] = field(repr=False)
    killed_at_s: float | None = None

    def stages(self) -> list[tuple[str, float, float]]:
        """(stage, start, seconds) of every stage `dvc repro` ran, in order."""
        starts = [(t, m[1]) for t, line in self.lines
                  if (m := re.search(r"Running stage '([^']+)'", line))]
        ends = [t for t, _ in starts[1:]] + [self.killed_at_s or self.wall_s] * bool(starts)
        return [(name, t, end - t) for (t, name), end in zip(starts, ends, strict=True)]

    def by_kind(self) -> dict[str, dict[str, float]]:
        """Wall seconds per kind of stage (`train@nyckel-beans` -> train), with counts."""
        kinds: dict[str, dict[str, float]] = {}
        for name, start, seconds in self.stages():
            kind = name.split("@")[0]
            entry = kinds.setdefault(kind, {"stages": 0, "seconds": 0.0, "first_start_s": start})
            entry["stages"] += 1
            entry["seconds"] += seconds
        return kinds

    def tail(self, n: int = 40) -> str:
        return "".join(line for _, line in self.lines[-n:])


def repro(project: Path, env: dict[str, str], log: Path,
          kill_when: Callable[[], bool] | None = None, timeout: float = 6 * 3600) -> Repro:
    """One `dvc repro`, its output time-stamped line by line (and kept in `log`); with
    `kill_when`, SIGKILLed the moment that turns true."""
    started, t0 = time.time(), time.monotonic()
    lines: list[tuple[float, str]] = []
    proc = subprocess.Popen(["dvc", "repro"], cwd=project, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1)

    def read() -> None:
        assert proc.stdout is not None
        with log.open("w") as out:
            for line in proc.stdout:
                stamp = time.monotonic() - t0
                lines.append((stamp, line))
                out.write(f"{stamp:9.2f} {line}")
                out.flush()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    killed = None
    try:
        while proc.poll() is None:
            if kill_when is not None and killed is None and kill_when():
                proc.send_signal(signal.SIGKILL)
                killed = time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                proc.kill()
                raise SystemExit(f"dvc repro in {project} took over {timeout:.0f} s")
            time.sleep(0.1)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        reader.join(timeout=10)
    return Repro(proc.returncode, time.monotonic() - t0, started, lines, killed)


def stage_processes(project: Path) -> list[int]:
    """The `mlbench` processes working in `project` (stages a `dvc repro` there started)."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            if (entry / "cwd").resolve() == project.resolve() and any(
                    part.endswith(b"/mlbench") or part == b"mlbench" for part in cmd):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def mlbench_status(project: Path, env: dict[str, str]) -> str:
    done = subprocess.run(["mlbench", "status"], cwd=project, env=env, capture_output=True,
                          text=True, timeout=300)
    return (done.stdout + done.stderr).strip()


# -- reading an arm back ------------------------------------------------------------------------
def paced_timeline(fakes: CloudFakes, started: float, critical: str) -> dict[str, Any]:
    """When each vendor's trainings and deployments started and ended (seconds after the
    start of `dvc repro`), from the fakes' own records; and those of the critical run."""
    out: dict[str, Any] = {}
    svc, ds, n = critical.split(" ")[0].split("/")
    for event in fakes.pacing[svc].events:
        m = NAME.search(event.name)
        if m and (m[1], m[2]) == (ds, n):
            out[f"critical_run_{event.kind}"] = {"start_s": round(event.started - started, 2),
                                                 "end_s": round(event.ends - started, 2)}
    for svc, pacing in fakes.pacing.items():
        for kind in ("train", "deploy"):
            events = [e for e in pacing.events if e.kind == kind]
            if events:
                out[f"{svc}_{kind}"] = {
                    "count": len(events),
                    "first_start_s": round(min(e.started for e in events) - started, 2),
                    "last_start_s": round(max(e.started for e in events) - started, 2),
                    "last_end_s": round(max(e.ends for e in events) - started, 2)}
    return out


def measured_runs(project: Path) -> dict[str, Any]:
    """What `measure` (or the serial stages) recorded: runs measured, failures, rows."""
    import pandas as pd

    summary = project / "results" / "summary.csv"
    rows = pd.read_csv(summary) if summary.exists() else pd.DataFrame()
    measured = project / "results" / "measured.json"
    failed = {}
    if measured.exists():
        failed = {k: v for k, v in json.loads(measured.read_text()).items()
                  if isinstance(v, str)}
    errors = int(rows["errors"].sum()) if "errors" in rows else None
    return {"summary_rows": len(rows), "failed": failed, "error_rows": errors}


def run_arm(arm: Arm, data: Path, work: Path, runs: list[Run], tests: dict[str, int],
            scale: float, params: dict[str, Any], min_poll: float, quotas: str,
            calls: dict[str, int]) -> dict[str, Any]:
    """One arm: a fresh copy of the project, fresh fakes, one timed `dvc repro`."""
    by_key = {(r.service, r.dataset, r.ablation): r for r in runs}
    project = clone(data, work / arm.name)
    pacing = {svc: arm.pacing(svc, by_key, scale) for svc in SERVICES}
    cp = critical_path(runs, tests, arm, scale)
    say(f"arm {arm.name}: C={arm.compress:g}, {arm.schedule}, evaluate.concurrency "
        f"{arm.concurrency}; critical path {cp['seconds']:.0f} s ({cp['run']})")
    with CloudFakes(work / f"{arm.name}-fakes", pacing) as fakes:
        arm_params = arm_settings(params, fakes, arm, arm_polls(arm, min_poll), quotas,
                                  len(params["datasets"]) * len(params["ablations"]), calls)
        (project / "params.yaml").write_text(yaml.safe_dump(arm_params, sort_keys=False))
        env = environment(fakes.stage_env())
        load = loadavg()
        result = repro(project, env, work / f"{arm.name}.log")
        status = mlbench_status(project, env)
        out = {
            "arm": asdict(arm), "returncode": result.returncode, "wall_s": result.wall_s,
            "critical_path": cp, "ratio": result.wall_s / cp["seconds"],
            "design_bounds": design_bounds(runs, tests, arm, scale, calls),
            "vendor_hours": result.wall_s * arm.compress / 3600,
            "stages": result.by_kind(),
            "paced": paced_timeline(fakes, result.started, cp["run"]),
            "created": fakes.created(), "deployed_after": fakes.deployed(),
            "throttled": fakes.throttled(), "status_after": status,
            "nothing_billed": "nothing deployed" in status,
            "measured": measured_runs(project), "loadavg_before": load,
            "loadavg_after": loadavg(), "log": str(work / f"{arm.name}.log"),
            "polls": {svc: arm_params[svc][POLL_KEY[svc]] for svc in SERVICES}}
    if result.returncode:
        out["tail"] = result.tail()
        say(f"arm {arm.name}: dvc repro FAILED ({result.returncode}); see {out['log']}")
    say(f"arm {arm.name}: {result.wall_s:.0f} s wall, {out['ratio']:.2f}x its critical path")
    return out


def arm_polls(arm: Arm, min_poll: float) -> dict[str, float]:
    """Each service's poll interval: its default / C, at least `min_poll` (the overhead arm:
    `min_poll`)."""
    return {svc: round(min_poll if arm.zero else max(
        min_poll, getattr(parse_settings(svc, {}), POLL_KEY[svc]) / arm.compress), 3)
        for svc in SERVICES}


def arm_settings(params: dict[str, Any], fakes: CloudFakes, arm: Arm, polls: dict[str, float],
                 quotas: str, per_vendor: int, calls: dict[str, int]) -> dict[str, Any]:
    """params.yaml of an arm: the schedule, the scaled counts and polls, raised quotas."""
    out = {**params, "schedule": arm.schedule, "keep_deployed": False,
           "evaluate": {**params["evaluate"], "concurrency": arm.concurrency},
           "latency": {"samples": calls["latency_samples"]},
           "load": {**params["load"], "calls": calls["load_calls"],
                    "concurrency": LOAD_CONCURRENCY, "mode": "batch"}}
    for svc, block in fakes.params().items():
        if svc == "buckets":
            continue
        out[svc] = {**block, POLL_KEY[svc]: polls[svc]}
        if quotas == "raised":
            out[svc]["max_concurrent_trainings"] = per_vendor
    return out


# -- the kill arm -------------------------------------------------------------------------------
#: The kill arm's datasets: the two smallest test sets.
KILL_DATASETS = ["beans", "xrays"]


def run_kill_arm(data: Path, work: Path, params: dict[str, Any], min_poll: float,
                 train_s: float, calls: dict[str, int]) -> dict[str, Any]:
    """SIGKILL `dvc repro` while every vendor has a training in flight, then `dvc repro`
    again: what the fakes were asked to create, against one of each per run."""
    project = clone(data, work / "kill")
    ladder = params["ablations"][:2]
    datasets = [ds for ds in KILL_DATASETS if ds in params["datasets"]] or params["datasets"][:2]
    kill_params = {**params, "datasets": datasets, "ablations": ladder}
    runs = len(datasets) * len(ladder)
    pacing = {svc: Pacing(train=train_s, deploy=1.0, latency=0.02) for svc in SERVICES}
    arm = Arm("kill", "parallel", EVAL_NEW, 1.0)
    say(f"arm kill: {runs} runs per vendor, every training {train_s:.0f} s; SIGKILL while "
        "every vendor trains")
    with CloudFakes(work / "kill-fakes", pacing) as fakes:
        arm_params = arm_settings(kill_params, fakes, arm, dict.fromkeys(SERVICES, min_poll),
                                  "raised", runs, calls)
        (project / "params.yaml").write_text(yaml.safe_dump(arm_params, sort_keys=False))
        env = environment(fakes.stage_env())

        def every_vendor_trains() -> bool:
            return all(n > 0 for n in fakes.trainings_in_flight().values())

        first = repro(project, env, work / "kill-first.log", kill_when=every_vendor_trains)
        in_flight = fakes.trainings_in_flight()
        deadline = time.monotonic() + 30
        while (alive := stage_processes(project)) and time.monotonic() < deadline:
            time.sleep(0.2)
        outlived = [" ".join(Path(f"/proc/{pid}/cmdline").read_text().split("\0")).strip()
                    for pid in alive]
        for pid in stage_processes(project):  # started by this benchmark's dvc: ours to end
            os.kill(pid, signal.SIGKILL)
        at_kill = fakes.created()
        second = repro(project, env, work / "kill-second.log")
        after = fakes.created()
        status = mlbench_status(project, env)
        third = repro(project, env, work / "kill-third.log")
        expected = expected_creations(datasets, ladder)
        out = {"runs_per_vendor": runs, "train_s": train_s,
               "killed": first.killed_at_s is not None, "killed_at_s": first.killed_at_s,
               "trainings_in_flight_at_kill": in_flight,
               "stages_outlived_the_kill": outlived,
               "created_at_kill": at_kill, "created_after_rerun": after,
               "created_after_third_repro": fakes.created(),
               "expected_one_per_run": expected,
               "second_creations": second_creations(after, expected),
               "rerun_returncode": second.returncode, "rerun_wall_s": second.wall_s,
               "third_repro_ran_stages": [s for s, _, _ in third.stages()],
               "deployed_after": fakes.deployed(), "status_after": status,
               "nothing_billed": "nothing deployed" in status,
               "measured": measured_runs(project),
               "logs": [str(work / f"kill-{n}.log") for n in ("first", "second", "third")]}
        if second.returncode:
            out["tail"] = second.tail()
    say(f"arm kill: killed at {first.killed_at_s or 0:.1f} s, rerun {second.returncode}, "
        f"second creations {out['second_creations'] or 'none'}")
    return out


def expected_creations(datasets: list[str], ladder: list[int]) -> dict[str, dict[str, int]]:
    """One of each resource per run (Rekognition: two datasets, TRAIN and TEST; Nyckel: a
    label per class and a sample per image of the run)."""
    runs = len(datasets) * len(ladder)
    classes = sum(classes_of(ds) for ds in datasets) * len(ladder)
    images = sum(classes_of(ds) for ds in datasets) * sum(ladder)
    return {"nyckel": {"functions": runs, "labels": classes, "samples": images},
            "huggingface": {"dataset_repo": runs, "model_repo": runs, "job": runs,
                            "endpoint": runs},
            "vertex": {"datasets": runs, "imports": runs, "pipelines": runs, "endpoints": runs,
                       "deployments": runs},
            "rekognition": {"projects": runs, "datasets": 2 * runs, "versions": runs,
                            "starts": runs}}


def second_creations(created: dict[str, dict[str, int]], expected: dict[str, dict[str, int]]
                     ) -> dict[str, dict[str, int]]:
    """Resources created more often than once per run."""
    over: dict[str, dict[str, int]] = {}
    for svc, wanted in expected.items():
        for what, n in wanted.items():
            got = created.get(svc, {}).get(what, 0)
            if got != n:
                over.setdefault(svc, {})[what] = got
    return over


# -- main -----------------------------------------------------------------------------------------
def scaled_calls(scale: float) -> dict[str, int]:
    load_calls = max(LOAD_CONCURRENCY, round(1000 * scale / LOAD_CONCURRENCY) * LOAD_CONCURRENCY)
    samples = max(1, round(200 * scale))
    return {"load_calls": load_calls, "latency_samples": samples,
            "per_run": load_calls + samples + 1}  # + the warm-up call


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.split("\n")[2:]))
    parser.add_argument("--compress", type=float, default=120.0,
                        help="C of the new arm: vendor seconds per wall second (default 120)")
    parser.add_argument("--serial-factor", type=float, default=8.0,
                        help="C of the serial arm = this x C (default 8: Nyckel's fastest "
                             "single calls stay under its 25 req/s)")
    parser.add_argument("--times", choices=("table", "median"), default="table",
                        help="per-run published times (default) or each service's median")
    parser.add_argument("--ladder", default="5,10,15,20,25",
                        help="images per class of the 5 simulated ablations")
    parser.add_argument("--arms", default="overhead,new,serial,kill",
                        help="which arms to run, in order (comma-separated)")
    parser.add_argument("--min-poll", type=float, default=0.5,
                        help="shortest poll interval, wall seconds (default 0.5)")
    parser.add_argument("--quotas", choices=("raised", "default"), default="raised",
                        help="max_concurrent_trainings: the runs per vendor, or the defaults")
    parser.add_argument("--kill-train", type=float, default=30.0,
                        help="wall seconds of every training in the kill arm")
    parser.add_argument("--datasets", default=",".join(DATASETS),
                        help="a part of the matrix only, for a quick look (default: all six)")
    parser.add_argument("--keep", action="store_true", help="keep the projects afterwards")
    args = parser.parse_args()
    datasets = tuple(d.strip() for d in args.datasets.split(",") if d.strip())
    if not datasets or set(datasets) - set(DATASETS):
        raise SystemExit(f"--datasets: some of {', '.join(DATASETS)}")
    ladder = tuple(int(x) for x in args.ladder.split(","))
    if len(ladder) != len(SEED_LADDER) or sorted(ladder) != list(ladder) or ladder[0] < 5:
        raise SystemExit("--ladder: 5 increasing sizes, the smallest at least 5")
    arms_wanted = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = set(arms_wanted) - {"overhead", "new", "serial", "kill"}
    if unknown:
        raise SystemExit(f"--arms: unknown {sorted(unknown)}")

    meta: dict[str, Any] = {}
    check_quiet(meta)
    c = args.compress
    scale = 1.0 / c
    tests = test_sizes(datasets, scale)
    calls = scaled_calls(scale)
    runs = seed_runs(datasets, ladder, args.times)
    arms = {"overhead": Arm("overhead", "parallel", EVAL_NEW, c, zero=True),
            "new": Arm("new", "parallel", EVAL_NEW, c),
            "serial": Arm("serial", "serial", EVAL_SERIAL, c * args.serial_factor)}
    setup = {"compress_new": c, "compress_serial": c * args.serial_factor, "scale": scale,
             "times": args.times, "ladder": ladder, "seed_ladder": SEED_LADDER,
             "test_per_class": tests,
             "datasets": datasets,
             "test_images": {ds: tests[ds] * classes_of(ds) for ds in datasets},
             "real_test_images": REAL_TEST, "deploy_vendor_s": DEPLOY, "rate_limits": RATE,
             **calls, "quotas": args.quotas,
             "runs_filled": sorted(f"{r.service}/{r.dataset}/{r.seed_ablation}: {r.source}"
                                   for r in runs if r.source != "published"
                                   and args.times == "table"),
             "default_quota_bound": default_quota_bound(runs),
             "critical_path_vendor_hours": {
                 name: critical_path(runs, tests, arm, scale)["vendor_hours"]
                 for name, arm in arms.items() if not arm.zero}}
    results: dict[str, Any] = {**meta, "setup": setup, "arms": {}}

    work = bench_tmp("seed-scale")
    say(f"work files in {work}; test images per class {tests}; {calls}")
    files, sources = mirror_files({ds: Size(train=max(ladder), test=tests[ds])
                                   for ds in datasets})
    params = base_params(datasets, ladder, sources,
                         {"google": BUCKET, "aws": BUCKET, "azure": BUCKET})
    # every stage is a process running the installed mlbench: a user's Python caches its
    # bytecode, but this machine may say not to (PYTHONDONTWRITEBYTECODE), and recompiling the
    # package costs each of the ~80 stage processes about 0.2 s: compiled once here
    compileall.compile_dir(ROOT / "mlbench", quiet=1)
    with MirrorServer(files) as mirror:
        say("data stages (not timed): fetch, prepare, ablate, testsets, export, folders")
        results["data_stages_s"] = make_data_project(work / "data", params, mirror.url)
    data = work / "data"
    try:
        for name in arms_wanted:
            if name == "kill":
                results["arms"]["kill"] = run_kill_arm(data, work, params, args.min_poll,
                                                       args.kill_train, calls)
            else:
                results["arms"][name] = run_arm(arms[name], data, work, runs, tests, scale,
                                                params, args.min_poll, args.quotas, calls)
            write_result("seed_scale", {**results, "partial": True}, vars(args))
    finally:
        if not args.keep:
            for name in ("overhead", "new", "serial", "kill"):
                shutil.rmtree(work / name, ignore_errors=True)
    report(results)
    path = write_result("seed_scale", results, vars(args))
    say(f"wrote {path}")


def report(results: dict[str, Any]) -> None:
    setup, arms = results["setup"], results["arms"]
    rows = []
    for name, arm in arms.items():
        if name == "kill":
            continue
        cp = arm["critical_path"]
        rows.append((name, arm["arm"]["compress"], arm["arm"]["schedule"],
                     arm["arm"]["concurrency"], arm["wall_s"], cp["seconds"], arm["ratio"],
                     arm["vendor_hours"], cp["vendor_hours"], arm["returncode"]))
    if rows:
        print_table(f"seed-scale simulation ({setup['times']} times; S = 1/"
                    f"{1 / setup['scale']:g}; test images {sum(setup['test_images'].values())})",
                    ["arm", "C", "schedule", "eval conc", "wall s", "critical path s", "ratio",
                     "vendor h (wall x C)", "critical path vendor h", "rc"], rows)
    for name, arm in arms.items():
        if name == "kill":
            continue
        stages = [(kind, int(v["stages"]), v["first_start_s"], v["seconds"])
                  for kind, v in sorted(arm["stages"].items(), key=lambda kv: kv[1][
                      "first_start_s"])]
        print_table(f"{name}: wall seconds per stage kind", ["stage", "count", "starts at s",
                                                            "seconds"], stages)
    if "new" in arms and "overhead" in arms:
        new, over = arms["new"], arms["overhead"]
        net = (new["wall_s"] - over["wall_s"]) / new["critical_path"]["seconds"]
        print(f"\nnew arm: {new['ratio']:.2f}x its critical path (target <= {TARGET}); "
              f"the overhead arm alone takes {over['wall_s']:.0f} s "
              f"({over['wall_s'] / new['critical_path']['seconds']:.2f} of the critical path); "
              f"(wall - overhead) / critical path = {net:.2f}")
    if "serial" in arms:
        print(f"serial arm: {arms['serial']['ratio']:.2f}x its critical path at C = "
              f"{arms['serial']['arm']['compress']:g}")
    if "kill" in arms:
        k = arms["kill"]
        print(f"kill and rerun: killed at {k['killed_at_s'] or 0:.1f} s with trainings in flight "
              f"{k['trainings_in_flight_at_kill']}; second creations: "
              f"{k['second_creations'] or 'none'}; nothing billed after: {k['nothing_billed']}")
    bound = setup["default_quota_bound"]
    print("default quotas, trainings alone at least: " + ", ".join(
        f"{svc} {b['hours_at_least']:.1f} h ({b['trainings']} at {b['quota']})"
        for svc, b in bound.items()))


if __name__ == "__main__":
    main()
