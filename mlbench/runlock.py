"""A stage process that never outlives what started it, and one writer per set of outputs.

Killing `dvc repro` must not leave `mlbench evaluate` running on its own, still appending: the
next `dvc repro` would start a second writer beside it, and the predictions would be counted
twice. Two guards, each enough on its own for that case:

- `guard_process()` (called once by every `mlbench` process and seed script at start): SIGTERM
  ends the process through `SystemExit`, so `finally` blocks and context managers run (the
  model server is stopped, the lock released). Under DVC, on Linux, the kernel sends that
  SIGTERM when the parent dies (`PR_SET_PDEATHSIG`, which holds even when the parent is
  SIGKILLed). DVC starts a stage as `$SHELL -c '<cmd>'`: bash execs a lone command (the parent
  is DVC), dash stays in between (the parent is the shell, which outlives a killed DVC), so
  then DVC itself is watched as well.
- `writer_lock(...)`: a lock file per (service, dataset) around `train`, `evaluate` and `load`.
  The lock is a `flock` on the file, which the kernel drops when its holder dies however it
  dies, so a SIGKILLed writer never blocks the next run; the file holds the writer's pid, start
  time and command, for the one-line refusal. Where `flock` is not available (some network
  file systems) the holder recorded in the file is checked for liveness instead: a pid that is
  gone, or that now belongs to a process started at another time, does not hold it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlbench.errors import UserError

_PR_SET_PDEATHSIG = 1
#: Locks this process holds: path -> (file descriptor or None, nesting depth).
_held: dict[Path, list[Any]] = {}


# -- dying with the parent ---------------------------------------------------------------------
def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Linux: ask the kernel to send `sig` to this process when its parent dies (even when the
    parent is SIGKILLed). False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


#: Set when SIGTERM arrives. The main thread unwinds through `SystemExit`, but worker threads
#: (trainings followed, images scored) would keep the process alive until their work ends:
#: they look at this between steps and stop (`stop_point`), and `STOP_GRACE` seconds after the
#: signal the process ends regardless. Nothing is lost by that: every result is appended
#: (fsync'd) or written atomically as it comes, exactly as under SIGKILL.
stopping = threading.Event()
STOP_GRACE = 5.0


class Stopped(Exception):
    """Raised in a worker thread at a stop point once the process is ending."""


def stop_point() -> None:
    """Between two steps of long work in a worker thread: end it if the process is ending."""
    if stopping.is_set():
        raise Stopped("the process is ending (SIGTERM)")


def pause(seconds: float) -> None:
    """`time.sleep` for waits in worker threads, cut short (with `Stopped`) by SIGTERM."""
    if stopping.wait(seconds):
        raise Stopped("the process is ending (SIGTERM)")


def _exit_on_sigterm(signum: int, frame: object) -> None:
    if not stopping.is_set():
        stopping.set()
        backstop = threading.Timer(STOP_GRACE, os._exit, args=(128 + signum,))
        backstop.daemon = True
        backstop.start()
    raise SystemExit(128 + signum)


#: Shells DVC may run a stage command with (`$SHELL -c '<cmd>'`); dash keeps itself between.
SHELLS = frozenset({"sh", "dash", "bash", "zsh", "fish", "ksh", "mksh", "busybox"})
#: Seconds between two looks at the process that started the shell (see `guard_process`).
WATCH_EVERY = 0.5


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (state, ppid, ...), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _terminate_main_thread() -> None:
    """SIGTERM to the main thread itself, so a blocking call there is interrupted at once."""
    signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)


def _watch(pid: int, start: str | None) -> None:
    """End this process (SIGTERM) once process `pid` (which started at `start`) is gone."""
    def loop() -> None:
        while is_alive(pid, start):
            time.sleep(WATCH_EVERY)
        _terminate_main_thread()

    threading.Thread(target=loop, name="mlbench-dvc-watch", daemon=True).start()


def started_by_dvc() -> bool:
    """Whether this process is a DVC stage command (DVC sets these for every stage)."""
    return bool(os.environ.get("DVC_STAGE") or os.environ.get("DVC_ROOT"))


def guard_process() -> None:
    """For a process that writes results: end cleanly on SIGTERM (`SystemExit`, so `finally`
    blocks run and the lock is released) and, when DVC started it, end with DVC.

    Call once, at the very start of the process, from its main thread. A DVC stage gets SIGTERM
    when its parent dies (`PR_SET_PDEATHSIG`); when that parent is the shell DVC ran the command
    with (dash does not exec a lone command, bash does), the process that started the shell is
    watched too. Run by hand (`nohup mlbench evaluate ... &`, say) nothing is armed: a user's
    shell exiting must not end a run that was meant to outlive it.
    """
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    if not started_by_dvc():
        return
    parent = os.getppid()
    die_with_parent(signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the signal was armed
        raise SystemExit(128 + signal.SIGTERM)
    fields = _stat(parent)
    if _comm(parent) in SHELLS and fields is not None:
        grandparent = int(fields[1])
        if grandparent > 1:
            _watch(grandparent, started_at(grandparent))


# -- one writer at a time ----------------------------------------------------------------------
def started_at(pid: int) -> str | None:
    """When process `pid` started (Linux: its start time in clock ticks since boot, which tells
    a process apart from a later one given the same pid); None when unknown or gone."""
    fields = _stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None  # stat(5) field 22


def is_alive(pid: int, start: str | None) -> bool:
    """Whether `pid` runs (not a zombie) and is the process that started at `start` (when
    that is known)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    fields = _stat(pid)
    if fields is None:
        return not Path("/proc").is_dir()  # no /proc: trust kill(0)
    return fields[0] != "Z" and (start is None or fields[19] == start)


def _me(what: str) -> dict[str, Any]:
    pid = os.getpid()
    return {"pid": pid, "started": started_at(pid), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": what}


def _read_holder(path: Path) -> dict[str, Any]:
    try:
        holder = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _refusal(path: Path, what: str, holder: dict[str, Any]) -> UserError:
    pid = holder.get("pid", "?")
    since = f" since {holder['since']}" if holder.get("since") else ""
    running = holder.get("command") or "another mlbench stage"
    return UserError(f"{path}: `{running}` is writing these results (pid {pid}{since}); wait "
                     f"for it to finish or stop it (kill {pid}), then rerun `{what}`")


def _flock(path: Path, what: str) -> int | None:
    """Take the lock with flock: its fd, or None when this file system has no flock."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _refusal(path, what, _read_holder(path)) from None
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                return None
            raise
        try:  # the holder before us may have removed the file between our open and flock
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)


def _pid_lock(path: Path, what: str) -> None:
    """Take the lock by creating the file; a holder that is no longer alive is replaced."""
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            holder = _read_holder(path)
            if is_alive(int(holder.get("pid") or 0), holder.get("started")):
                raise _refusal(path, what, holder) from None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # a stale lock: its writer is gone
            continue
        os.close(fd)
        return
    raise _refusal(path, what, _read_holder(path))


@contextlib.contextmanager
def writer_lock(path: Path, what: str) -> Iterator[None]:
    """Hold the lock at `path` while the block writes; refuse with one line (`UserError`)
    while another live process holds it. `what` names this run (`mlbench evaluate local
    digits`) in the lock file and in the refusal. Re-entrant within one process."""
    path = Path(os.path.abspath(path))
    if path in _held:
        _held[path][1] += 1
        try:
            yield
        finally:
            _held[path][1] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _flock(path, what)
    if fd is None:
        _pid_lock(path, what)
    data = json.dumps(_me(what)).encode()
    if fd is not None:
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    else:
        path.write_bytes(data)
    _held[path] = [fd, 1]
    try:
        yield
    finally:
        del _held[path]
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # before the flock goes: nobody can lock a file we still remove
        if fd is not None:
            os.close(fd)
