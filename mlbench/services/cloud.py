"""The lifecycle plumbing every cloud service shares: its state record and its waits.

- `StateStore`: what a run created at the vendor (ids, operation names, timestamps), one JSON
  file in the run's state folder, rewritten atomically on every change, so a crash at any point
  leaves a record a rerun picks up instead of creating the resource again.
- `UploadLog`: an append-only record of uploads the vendor does not let us list cheaply
  (key -> the vendor's id), fsync'd per row, so a killed upload resumes where it stopped.
- `wait_for`: poll until a long operation ends, with one live status line; on timeout one line
  saying what goes on at the vendor and what a rerun does.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from mlbench.core import utc_now
from mlbench.errors import ServiceError
from mlbench.io import CsvAppender, atomic_write_json, read_csv_log, read_json
from mlbench.runlock import pause

T = TypeVar("T")


class StateStore:
    """One run's record of what it created at the vendor.

    `identity` (API base URL, project, region...) is stored with the record; a record made
    against another identity (a fake, another project) is ignored rather than reused.
    """

    def __init__(self, path: Path, identity: Mapping[str, Any] | None = None):
        self.path = path
        self.identity = dict(identity or {})
        self._data: dict[str, Any] | None = None

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            self._data = self._read()
        return self._data

    def _read(self) -> dict[str, Any]:
        try:
            data = read_json(self.path)
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict):
            return {}
        if any(data.get(k) != v for k, v in self.identity.items()):
            return {}
        return {k: v for k, v in data.items() if k not in self.identity}

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def update(self, **changes: Any) -> None:
        """Set keys (a None value removes the key) and save at once."""
        for key, value in changes.items():
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value
        atomic_write_json(self.path, {**self.identity, **self.data})

    def reset(self, **fresh: Any) -> None:
        """Forget everything recorded (the inputs changed) and start from `fresh`."""
        self._data = {}
        self.update(**fresh)


class Deployment(StateStore):
    """A run's deployed resource (an endpoint, a running model): billed from `up` to `down`.

    Services call `up()` when they deploy or start a model and `down()` when they undeploy,
    stop or pause it; `mlbench status` and the cost figures read it. It lives outside DVC's
    outputs (`paths.deployment_file`). `units` is how many billed units run (Vertex nodes,
    Rekognition inference units, Azure ML instances): `prices.<service>.deployed_hour` is the
    price of one unit for one hour."""

    def up(self, resource: str, *, units: int = 1, **details: Any) -> None:
        """Record that `resource` is deployed now on `units` billed units (kept as it is when
        already recorded up)."""
        if not self.get("up") or self.get("resource") != resource:
            self.update(up=True, resource=resource, since=utc_now(), units=units, **details)

    def down(self) -> None:
        """Record the end of the current deployment, adding its time to the run's total."""
        if self.get("up"):
            self.update(up=False, since=None, down_at=utc_now(),
                        deployed_seconds=self.seconds_up(),
                        deployed_unit_seconds=self.unit_seconds())

    @property
    def units(self) -> int:
        return int(self.get("units") or 1)

    def _current(self, now: dt.datetime | None) -> float:
        since = self.get("since")
        if not (self.get("up") and since):
            return 0.0
        now = now or dt.datetime.now(dt.UTC)
        return max(0.0, (now - dt.datetime.fromisoformat(since)).total_seconds())

    def seconds_up(self, now: dt.datetime | None = None) -> float:
        """Seconds deployed in all: past deployments plus the current one, if up."""
        return float(self.get("deployed_seconds") or 0.0) + self._current(now)

    def unit_seconds(self, now: dt.datetime | None = None) -> float:
        """What is billed: seconds deployed times the units each deployment ran on."""
        past = self.get("deployed_unit_seconds")
        if past is None:  # a record from before units were kept: one unit
            past = self.get("deployed_seconds") or 0.0
        return float(past) + self._current(now) * self.units


class UploadLog:
    """What was uploaded where: rows of (scope, key, remote id, outcome), appended as they come.

    `scope` is what the keys belong to (a function, a project); `done(scope)` answers which keys
    already have a remote id there, so a rerun sends only the rest.
    """

    HEADER = ("scope", "key", "remote_id", "outcome")

    def __init__(self, path: Path):
        self.path = path

    def done(self, scope: str) -> dict[str, str]:
        """Only complete rows count: a row torn by a kill never passes for an upload."""
        rows = read_csv_log(self.path, self.HEADER).rows
        return {key: remote_id for row_scope, key, remote_id, _ in rows
                if row_scope == scope and remote_id}

    def writer(self) -> CsvAppender:
        """An appender for new rows (`write([scope, key, remote_id, outcome])`); close it."""
        return CsvAppender(self.path, self.HEADER)


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def wait_for(check: Callable[[], tuple[bool, str, T]], *, what: str, every: float,
             timeout: float, hint: str, sleep: Callable[[float], None] = pause,
             clock: Callable[[], float] = time.monotonic) -> T:
    """Call `check()` every `every` seconds until it reports done; return its payload.

    `check` returns (done, state shown to the user, payload). A live line shows the state and
    the time waited. After `timeout` seconds this raises `ServiceError`: "<what> still <state>
    after <time>; <hint>" (the hint says what goes on at the vendor and what a rerun does).
    """
    from mlbench.console import progress

    start = clock()
    with progress(desc=what, bar_format="{desc} [{elapsed}]", leave=False) as line:
        while True:
            done, state, payload = check()
            line.set_description_str(f"{what}: {state}")
            if done:
                return payload
            waited = clock() - start
            if waited >= timeout:
                raise ServiceError(f"{what} still {state} after {duration(waited)}; {hint}")
            sleep(max(0.0, min(every, timeout - waited)))
