"""Shared helpers of the hand-run benchmarks: machine facts, timing, memory, result files.

Every benchmark writes `results/bench/<name>.json` holding the machine it ran on (core count,
CPU model, Python / numpy / Pillow / onnxruntime versions, git commit, UTC date) beside its
numbers, because a throughput figure without the machine that produced it cannot be compared
with anything. Benchmarks run from the project root: `python benchmarks/bench_<name>.py`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

#: The project root (the folder holding params.yaml), whatever the working directory is.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` without an installed package
    sys.path.insert(0, str(ROOT))

from mlbench.io import atomic_write_json  # noqa: E402 - needs ROOT on sys.path first

BENCH_DIR = ROOT / "results" / "bench"


# -- machine facts ----------------------------------------------------------------------------
def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--",
                                "mlbench"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return out.strip() + ("+dirty" if dirty.strip() else "")


def machine_info() -> dict[str, Any]:
    """What the numbers depend on, recorded in every result file."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return {
        "date_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": usable,
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "pillow": _version("pillow"),
        "onnxruntime": _version("onnxruntime"),
        "aiohttp": _version("aiohttp"),
        "mlbench_commit": _git_commit(),
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def check_quiet(results: dict[str, Any]) -> None:
    """Record the load average at the start; warn when other work competes for the cores.

    Throughput on 2 cores halves when another job runs: numbers taken on a busy machine are
    kept but flagged, so nobody compares them with a quiet run unknowingly.
    """
    load = os.getloadavg()[0]
    results["loadavg_at_start"] = round(load, 2)
    cores = os.cpu_count() or 1
    if load > 0.5 * cores:
        say(f"warning: load average {load:.1f} on {cores} cores: other processes compete for "
            "the CPU, so these numbers understate this machine")


# -- result files ------------------------------------------------------------------------------
def write_result(name: str, results: dict[str, Any], params: dict[str, Any] | None = None) -> Path:
    """Write `results/bench/<name>.json` (atomically) with the machine facts; return its path."""
    path = BENCH_DIR / f"{name}.json"
    atomic_write_json(path, {"benchmark": name, "machine": machine_info(),
                             "params": params or {}, "results": results})
    return path


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain aligned text table (floats shown with 3 significant decimals)."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.1f}" if abs(v) >= 100 else f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"
        return str(v)

    body = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h)
              for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in body:
        print("  ".join(c.rjust(w) if i else c.ljust(w)
                        for i, (c, w) in enumerate(zip(r, widths, strict=True))))


def say(message: str) -> None:
    """Progress line on stderr (stdout is kept for the result tables)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- timing and memory -------------------------------------------------------------------------
class Stopwatch:
    """`with Stopwatch() as sw: ...` then `sw.seconds` (monotonic high-resolution clock)."""

    seconds: float = float("nan")

    def __enter__(self) -> Stopwatch:
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0


def repeat(fn: Callable[[], Any], times: int) -> list[float]:
    """Wall seconds of `times` consecutive calls of `fn`."""
    out = []
    for _ in range(times):
        with Stopwatch() as sw:
            fn()
        out.append(sw.seconds)
    return out


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def peak_rss_mb() -> dict[str, float]:
    """Peak resident memory (MiB) of this process and of its largest reaped child process.

    `ru_maxrss` of RUSAGE_CHILDREN is the peak of the single largest descendant that has been
    waited for (pool workers, once the pool is closed), not a sum of all children.
    """
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"self": round(own, 1), "largest_child": round(child, 1)}


def cpu_seconds() -> float:
    """User + system CPU seconds this process has used so far (not its children)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@contextlib.contextmanager
def chdir(path: Path) -> Iterator[Path]:
    """Run a block with `path` as the working directory (mlbench paths are cwd-relative)."""
    before = Path.cwd()
    os.chdir(path)
    try:
        yield path
    finally:
        os.chdir(before)


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages, rounded (recorded beside each round)."""
    return [round(x, 2) for x in os.getloadavg()]


def git_tree(ref: str, dest: Path) -> Path:
    """The files of git `ref` (e.g. `HEAD`: the code before uncommitted changes) in `dest`, to
    run the code before a change beside the code after it, in the same benchmark run."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def bench_tmp(name: str) -> Path:
    """A stable folder under the system temp dir for re-creatable benchmark inputs."""
    path = Path(tempfile.gettempdir()) / f"mlbench-bench-{name}"
    path.mkdir(parents=True, exist_ok=True)
    return path
