"""Finding 1 of issue 14: a stage never outlives the `dvc repro` that started it, and never
writes beside another live writer of the same results (a lock file per service x dataset)."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from mlbench import paths, runlock
from mlbench.bench.evaluate import run_evaluation
from mlbench.bench.train import run_training
from mlbench.errors import UserError
from mlbench.params import load_params
from mlbench.runlock import writer_lock
from tests.test_evaluate import _server_pids, _use_hog

REPO = Path(__file__).resolve().parent.parent
LOCK = "results/locks/local-digits.lock"


def _rows(path: Path) -> int:
    return max(0, len(path.read_bytes().splitlines()) - 1) if path.exists() else 0


def _wait(condition, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _holder(project: Path) -> dict:
    try:
        return json.loads((project / LOCK).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def _gone(pid: int) -> bool:
    return not runlock.is_alive(pid, None)


@pytest.fixture
def trained(digits_copy: Path) -> Path:
    """The digits copy with the local hog model of ablation 5 trained (450 test images)."""
    _use_hog(digits_copy)
    run_training(load_params(), "local", "digits")
    return digits_copy


@pytest.mark.parametrize("shell", ["/bin/bash", "/bin/sh"])
def test_finding1_killing_dvc_repro_ends_its_evaluate_and_a_rerun_is_exact(trained, shell):
    """The campaign's case: `dvc repro` SIGKILLed during evaluate left `mlbench evaluate`
    running as an orphan, and the next run wrote beside it (471 / 901 lines for 450 images).
    DVC runs the stage with $SHELL: bash execs it, dash (/bin/sh here) stays in between."""
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=trained, check=True)
    # `-s` runs the one stage, whose deps must exist: `measure` ahead of it is a no-op here
    # (`schedule: serial`), so the evaluate stage itself scores, and is the one killed
    _use_hog(trained, schedule="serial")
    subprocess.run(["mlbench", "measure"], cwd=trained, check=True, capture_output=True)
    servers_before = _server_pids()
    out = paths.predictions_csv("local", "digits", 5)
    log = trained / "dvc.log"
    with log.open("w") as sink:
        dvc = subprocess.Popen(["dvc", "repro", "-s", "evaluate@local-digits"], cwd=trained,
                               stdout=sink, stderr=subprocess.STDOUT,
                               env={**os.environ, "SHELL": shell})
    try:
        _wait(lambda: _rows(out) > 30 or dvc.poll() is not None, what="the first rows")
        assert dvc.poll() is None, log.read_text()
        holder = _holder(trained)
        stage = holder["pid"]
        assert holder["command"] == "mlbench evaluate local digits"
        assert runlock.is_alive(stage, holder["started"])
        dvc.send_signal(signal.SIGKILL)
        dvc.wait()
        _wait(lambda: _gone(stage), timeout=20, what="the orphaned stage to exit")
    finally:
        if dvc.poll() is None:
            dvc.kill()
    stopped_at = _rows(out)
    assert 30 < stopped_at < 450
    time.sleep(0.5)
    assert _rows(out) == stopped_at  # nobody appends any more
    assert not (trained / LOCK).exists()  # it ended through SIGTERM -> SystemExit: released
    _wait(lambda: not _server_pids() - servers_before, timeout=10, what="its model server")

    run_evaluation(load_params(), "local", "digits")
    final = pd.read_csv(out, keep_default_na=False)
    assert len(final) == 450 and final["image"].is_unique


def test_finding1_a_second_writer_is_refused_in_one_line_while_the_first_runs(trained):
    out = paths.predictions_csv("local", "digits", 5)
    first = subprocess.Popen(["mlbench", "evaluate", "local", "digits"], cwd=trained,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: _rows(out) > 30 or first.poll() is not None, what="the first rows")
        first.send_signal(signal.SIGSTOP)  # still alive, still holding the lock, writing nothing
        second = subprocess.run(["mlbench", "evaluate", "local", "digits"], cwd=trained,
                                capture_output=True, text=True, timeout=120)
        for stage in ("load", "train"):  # the other writers of local/digits wait too
            other = subprocess.run(["mlbench", stage, "local", "digits"], cwd=trained,
                                   capture_output=True, text=True, timeout=120)
            assert other.returncode == 2 and f"pid {first.pid}" in other.stderr
        first.send_signal(signal.SIGCONT)
        assert first.wait(120) == 0
    finally:
        if first.poll() is None:
            first.kill()
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in second.stderr
    assert f"`mlbench evaluate local digits` is writing these results (pid {first.pid}" \
        in lines[0] and LOCK in lines[0]
    final = pd.read_csv(out, keep_default_na=False)
    assert len(final) == 450 and final["image"].is_unique


def _locker(project: Path) -> subprocess.Popen:
    """Another process that takes the local/digits lock and sleeps."""
    code = textwrap.dedent(f"""
        import time
        from mlbench.runlock import writer_lock
        with writer_lock({str(project / LOCK)!r}, "mlbench evaluate local digits"):
            print("locked", flush=True)
            time.sleep(300)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            cwd=project)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_finding1_a_stale_lock_of_a_killed_writer_is_taken_over(trained):
    locker = _locker(trained)
    with pytest.raises(UserError, match=f"pid {locker.pid}"):
        run_evaluation(load_params(), "local", "digits")
    locker.send_signal(signal.SIGKILL)  # dies holding it: the file stays behind
    locker.wait()
    assert _holder(trained)["pid"] == locker.pid
    run_evaluation(load_params(), "local", "digits")
    assert len(pd.read_csv(paths.predictions_csv("local", "digits", 5))) == 450
    assert not (trained / LOCK).exists()


def test_finding1_without_flock_the_recorded_writer_is_checked_for_liveness(tmp_path,
                                                                            monkeypatch):
    """On a file system without flock, the pid + start time in the file decide."""
    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    lock = tmp_path / "results" / "locks" / "local-digits.lock"
    lock.parent.mkdir(parents=True)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        live = {"pid": sleeper.pid, "started": runlock.started_at(sleeper.pid),
                "command": "mlbench load local digits"}
        lock.write_text(json.dumps(live))
        refused = rf"`mlbench load local digits` is writing .*pid {sleeper.pid}"
        with pytest.raises(UserError, match=refused), \
                writer_lock(lock, "mlbench evaluate local digits"):
            pass
        # the same pid, started at another time: a new process got the dead writer's pid
        lock.write_text(json.dumps({**live, "started": "1"}))
        with writer_lock(lock, "mlbench evaluate local digits"):
            assert json.loads(lock.read_text())["pid"] == os.getpid()
        assert not lock.exists()
        sleeper.kill()
        sleeper.wait()
        lock.write_text(json.dumps(live))  # its writer is dead now
        with writer_lock(lock, "mlbench evaluate local digits"):
            assert json.loads(lock.read_text())["pid"] == os.getpid()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_finding1_the_lock_is_reentrant_in_one_process_and_records_the_writer(tmp_path):
    lock = tmp_path / "w.lock"
    with writer_lock(lock, "mlbench train local digits"):
        holder = json.loads(lock.read_text())
        assert holder["pid"] == os.getpid() and holder["command"] == "mlbench train local digits"
        assert holder["started"] == runlock.started_at(os.getpid())
        with writer_lock(lock, "mlbench evaluate local digits"):  # e.g. a seed script's steps
            assert lock.exists()
        assert lock.exists()
    assert not lock.exists()


def _guarded_child(marker: Path) -> str:
    """A process that calls `guard_process`, says "armed", and touches `marker` on its way out
    (from a `finally` block: it must end through SystemExit, not die). "armed" is said inside
    the `try`: said before it, a SIGTERM that came as soon as the parent read it (a loaded
    machine) could raise before the `finally` was in force, and no marker would say why."""
    return textwrap.dedent(f"""
        import time
        from mlbench.runlock import guard_process
        guard_process()
        try:
            print("armed", flush=True)
            time.sleep(60)
        finally:
            open({str(marker)!r}, "w").close()
    """)


def _killed_parent_of(command: list[str], dvc: bool) -> int:
    """Start `command` under a parent (as DVC would: DVC_STAGE set, or not), SIGKILL that
    parent once the child is armed; the child's pid."""
    parent = textwrap.dedent(f"""
        import os, subprocess, sys
        child = subprocess.Popen({command!r}, stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "armed"
        print(child.pid, flush=True)
        child.wait()
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("DVC_STAGE", "DVC_ROOT")}
    if dvc:
        env["DVC_STAGE"] = "evaluate@local-digits"
    proc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True,
                            env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if command[0] == "/bin/sh":  # the child's pid is the python under the shell
        shell = int(line)
        _wait(lambda: bool(_children(shell)), timeout=10, what="the shell's child")
        return _children(shell)[0]
    return int(line)


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.parametrize("shell", [False, True], ids=["direct", "under-dash"])
def test_finding1_a_dvc_stage_exits_when_dvc_is_killed(tmp_path, shell):
    """`guard_process` in isolation: DVC (here a stand-in parent with DVC_STAGE set) is
    SIGKILLed; the stage leaves through SystemExit, also when dash sits in between (dash does
    not exec a lone command, so the stage's parent is the shell, which outlives DVC)."""
    marker = tmp_path / "cleaned-up"
    child = [sys.executable, "-c", _guarded_child(marker)]
    if shell:
        child = ["/bin/sh", "-c", shlex.join(child)]
    pid = _killed_parent_of(child, dvc=True)
    _wait(lambda: _gone(pid), timeout=10, what="the stage to exit")
    _wait(marker.exists, timeout=5, what="its finally block")


def test_finding1_run_by_hand_a_command_outlives_its_parent(tmp_path):
    """Not under DVC (`nohup mlbench evaluate ... &` from a shell that then exits), nothing
    is armed: the run goes on."""
    marker = tmp_path / "cleaned-up"
    pid = _killed_parent_of([sys.executable, "-c", _guarded_child(marker)], dvc=False)
    time.sleep(1.5)
    try:
        assert runlock.is_alive(pid, None) and not marker.exists()
    finally:
        os.kill(pid, signal.SIGTERM)  # and SIGTERM still ends it cleanly
    _wait(marker.exists, timeout=10, what="its finally block")


WORKERS = textwrap.dedent("""
    import sys, time
    from concurrent.futures import ThreadPoolExecutor
    from mlbench import runlock
    from mlbench.services.cloud import wait_for

    runlock.guard_process()
    follow = sys.argv[1] == "follow"

    def work():
        if follow:  # a training followed the way services follow one: never done here
            wait_for(lambda: (False, "RUNNING", None), what="job", every=1.0, timeout=600,
                     hint="")
        else:  # work that never looks at the stop event
            time.sleep(600)

    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(work) for _ in range(2)]
        print("started", flush=True)
        for f in futures:
            f.result()
""")


@pytest.mark.parametrize("kind,within", [("follow", 3.0), ("ignore", runlock.STOP_GRACE + 3.0)])
def test_a_sigtermed_stage_ends_even_while_its_worker_threads_wait(kind, within):
    """`mlbench submit` follows its trainings in worker threads: a SIGTERM (sent by the kernel
    when dvc is killed) must end the process, not leave it polling until the jobs end.
    Waits through `wait_for` stop at once; anything else, after the grace period."""
    proc = subprocess.Popen([sys.executable, "-c", WORKERS, kind], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "started"
        time.sleep(0.3)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=within + 30)
        took = time.monotonic() - start
    finally:
        proc.kill()
    assert took < within, f"{kind}: still running {took:.1f} s after SIGTERM"
    assert code in (128 + signal.SIGTERM, -signal.SIGTERM)
