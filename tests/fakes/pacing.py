"""Opt-in wall-clock pacing of the cloud fakes: how long their work takes, how fast they answer.

Off by default: a fake without a `Pacing` answers at once and moves its trainings and
deployments on by polls, as the tests want. With one, a fake behaves like the vendor at a
chosen speed, on the wall clock:

- `train`: seconds from the start of a training (a Nyckel function's last sample, a Hugging
  Face Job, a Vertex training pipeline, a Rekognition model version) to its model;
- `deploy`: seconds from a deployment (a Vertex DeployModel, a Rekognition StartProjectVersion,
  an Inference Endpoint created or resumed) to serving;
- `latency`: seconds each prediction call takes at the vendor;
- `rate`: prediction calls a second the vendor admits (a token bucket holding `burst` calls,
  one second's worth by default); a call beyond it is answered the vendor's way (429 with its
  error body and `Retry-After`; Rekognition's `ThrottlingException`) without being served.

Each duration is a number, or a function of the resource's name (what the client named it:
the function, the Job's model repo, the pipeline or endpoint display name, the Rekognition
project and version), so one `Pacing` can replay per-run durations, e.g. a published table
whose rows are found by the dataset and ablation in the names mlbench gives its resources.

A `Pacing` also keeps what it paced (`events`: kind, name, wall time it started, seconds) and
how many calls it admitted and throttled, for a benchmark to read back.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

Seconds = float | Callable[[str], float]


@dataclass(frozen=True)
class Paced:
    """One paced piece of work: `kind` (train, deploy), the resource's name, when it started
    (wall clock, `time.time()`) and how many seconds it takes."""

    kind: str
    name: str
    started: float
    seconds: float

    @property
    def ends(self) -> float:
        return self.started + self.seconds


class RateGate:
    """A token bucket: `rate` calls a second, at most `burst` at once. Thread-safe."""

    def __init__(self, rate: float, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()
        self._lock = threading.Lock()

    def admit(self) -> float | None:
        """None when a call may go on now (a token is taken); else the seconds until one may."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return None
            return (1.0 - self._tokens) / self.rate


@dataclass
class Pacing:
    """How long a fake's work takes and how fast it answers (see the module docstring)."""

    train: Seconds = 0.0
    deploy: Seconds = 0.0
    latency: Seconds = 0.0
    rate: float | None = None
    burst: float | None = None
    events: list[Paced] = field(default_factory=list, repr=False)
    admitted: int = 0
    throttled: int = 0

    def __post_init__(self) -> None:
        self._gate = RateGate(self.rate, self.burst) if self.rate else None
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str], int] = {}  # (kind, name) -> its latest event

    @staticmethod
    def _of(value: Seconds, name: str) -> float:
        seconds = float(value(name) if callable(value) else value)
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"pacing for {name!r}: {seconds} is not a duration in seconds")
        return seconds

    def _start(self, kind: str, value: Seconds, name: str) -> float:
        """Record a paced piece of work starting now; the wall time it is done. Work of the same
        kind and name still under way starts over (Nyckel retrains on every new sample)."""
        event = Paced(kind, name, time.time(), self._of(value, name))
        with self._lock:
            at = self._open.get((kind, name))
            if at is not None and self.events[at].ends > event.started:
                self.events[at] = event
            else:
                self._open[(kind, name)] = len(self.events)
                self.events.append(event)
        return event.ends

    def training_done_at(self, name: str) -> float:
        """A training named `name` starts now: the wall time (`time.time()`) its model is ready."""
        return self._start("train", self.train, name)

    def deployment_done_at(self, name: str) -> float:
        """A deployment of `name` starts now: the wall time it serves."""
        return self._start("deploy", self.deploy, name)

    def admit(self) -> float | None:
        """A prediction call arrives: None when the vendor's rate admits it, else the seconds
        after which it would (what a 429's `Retry-After` says)."""
        wait = self._gate.admit() if self._gate is not None else None
        with self._lock:
            if wait is None:
                self.admitted += 1
            else:
                self.throttled += 1
        return wait

    def serve(self, name: str) -> None:
        """The vendor's time to answer one prediction of `name` (the caller waits it)."""
        seconds = self._of(self.latency, name)
        if seconds:
            time.sleep(seconds)

    def in_flight(self, kind: str, now: float | None = None) -> list[Paced]:
        """The paced work of `kind` started and not yet done."""
        now = time.time() if now is None else now
        with self._lock:
            return [e for e in self.events if e.kind == kind and e.started <= now < e.ends]


def retry_after(wait: float) -> str:
    """A `Retry-After` header value (whole seconds, at least 1) for a wait in seconds."""
    return str(max(1, math.ceil(wait)))
