"""One progress display for many runs at once (the `submit` and `score` stages).

Dozens of runs move through a few states each (queued, uploading, training, trained...); a bar
per run would write over each other. The board prints one line when a run changes state and,
every `every` seconds, one summary line (how many runs in each state, time elapsed), which
reads the same in a terminal and in DVC's logs.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable

from mlbench.console import err
from mlbench.services.cloud import duration

Key = tuple[str, str, int]


class Board:
    def __init__(self, what: str, keys: Iterable[Key], every: float = 60.0):
        self.what = what
        self.states: dict[Key, str] = {k: "queued" for k in keys}
        self.every = every
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def set(self, key: Key, state: str, note: str = "") -> None:
        with self._lock:
            if self.states.get(key) == state and not note:
                return
            self.states[key] = state
        service, ds, n = key
        err.print(f"{service}/{ds}/{n}: {state}{f' ({note})' if note else ''}", markup=False)

    def summary(self) -> str:
        with self._lock:
            counts = Counter(self.states.values())
        parts = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        return f"{self.what}: {parts} [{duration(time.monotonic() - self._start)}]"

    def __enter__(self) -> Board:
        def tick() -> None:
            while not self._stop.wait(self.every):
                err.print(self.summary(), markup=False)

        self._ticker = threading.Thread(target=tick, daemon=True)
        self._ticker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        err.print(self.summary(), markup=False)
