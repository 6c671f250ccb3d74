"""The local baseline's lifecycle. Needs no credentials and no network.

It does what the AutoML services do (Nyckel documents its recipe as frozen pretrained features +
a light classifier): `upload` embeds the ablation's images with a frozen extractor (cached by
content hash), `submit` fits a linear head (C picked on val) at once, and `connect` starts the
model's own HTTP server on 127.0.0.1, so `predict` goes through the same HTTP client path as a
cloud endpoint.

The server is a child process that can die (killed, out of memory). A call that cannot reach
it checks the process at once instead of waiting out every retry: a server that exited is
restarted once per run (the harness then calls again, timed afresh: `CallAgain`), and dies
again -> one line (`ServiceError`), so no image is stored as an error row for a server that
was simply gone. `evaluate` calls from several threads at once: every call knows which server
it was sent to, so however many calls find one dead server, it is restarted once and each of
them is called again.
"""

from __future__ import annotations

import contextlib
import contextvars
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import requests
from rich.markup import escape

from mlbench import paths
from mlbench.console import warn
from mlbench.core import AblationSplit, ModelRef, Prediction, utc_now
from mlbench.errors import ServiceError, UserError
from mlbench.services.base import Job, ServiceContext
from mlbench.services.http import CallAgain, HttpRequest, HttpService, parse_label_scores
from mlbench.services.local import server
from mlbench.services.local.features import EmbeddingCache, make_extractor
from mlbench.services.local.server import READY_PREFIX

# `head` and `model` (scikit-learn, scipy: 1.3 s to import) are imported by the methods that
# train or load a model: every other stage that builds this service (submit, measure, load,
# teardown, status) starts without them.

STARTUP_TIMEOUT = 120.0
#: Restarts of a model server that died, per connected service (then the run stops).
MAX_RESTARTS = 1
#: How long a call that could not reach the server waits for its process to be seen exiting
#: (a killed server drops its connections a moment before it can be reaped).
EXIT_GRACE = 0.5


class ServerGone(ServiceError):
    """The model server's process exited while the service was connected."""

    def __init__(self, message: str, server: ServerProcess):
        super().__init__(message)
        self.server = server


class LocalService(HttpService):
    name = "local"
    local_compute = True  # trains and serves on this machine

    def __init__(self, ctx: ServiceContext):
        super().__init__(ctx)
        self._server: ServerProcess | None = None
        self._model_dir: Path | None = None
        self.restarts = 0
        self.url: str | None = None
        #: The server the current call (thread or asyncio task) was sent to.
        self._sent_to: contextvars.ContextVar[ServerProcess | None] = \
            contextvars.ContextVar(f"local-server-{id(self)}", default=None)
        self._restart_lock = threading.Lock()

    # -- training --------------------------------------------------------------------------------
    def _candidates(self) -> list[str]:
        return self.settings.candidates()

    def _features(self, name: str, files: list[Path]) -> np.ndarray:
        extractor = make_extractor(name, self.settings.image_size)
        return EmbeddingCache(extractor, paths.embeddings_cache()).features(files)

    def model_settings(self) -> dict[str, Any]:
        from mlbench.services.local.head import HEAD_VERSION

        return {**self.settings.model_settings(), "seed": self.ctx.seed,
                "extractors": [make_extractor(n, self.settings.image_size).key
                               for n in self._candidates()],
                "head": HEAD_VERSION}

    def upload(self, split: AblationSplit) -> None:
        """'Uploading' to the local service is embedding: every later step reads the cache."""
        files = [r.path for r in split.all]
        for name in self._candidates():
            self._features(name, files)

    def submit(self, split: AblationSplit) -> Job:
        """Training the head takes seconds: it is done here, and the job holds the model."""
        return Job(split.dataset, split.size, {"model": self._fit(split).to_json()})

    def wait(self, job: Job) -> ModelRef:
        return ModelRef.from_json(job.ids["model"])

    def _fit(self, split: AblationSplit) -> ModelRef:
        from mlbench.services.local.head import cv_accuracy, fit_head
        from mlbench.services.local.model import MODEL_FILE, LocalModel

        started, t0 = utc_now(), time.perf_counter()
        classes = list(split.classes)
        index = {c: i for i, c in enumerate(classes)}
        y_tr = np.array([index[r.class_name] for r in split.train], dtype=int)
        y_va = np.array([index[r.class_name] for r in split.val], dtype=int)
        scores: dict[str, float | None] = {}
        feats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name in self._candidates():
            x_tr = self._features(name, [r.path for r in split.train])
            # no val images (val_fraction 0, a 1-image ablation): an empty block of x_tr's width
            x_va = self._features(name, [r.path for r in split.val]) if split.val \
                else np.zeros((0, x_tr.shape[1]), x_tr.dtype)
            feats[name] = (x_tr, x_va)
            if len(self._candidates()) > 1:
                scores[name] = cv_accuracy(np.concatenate([x_tr, x_va]),
                                           np.concatenate([y_tr, y_va]), self.ctx.seed)
        known = {k: v for k, v in scores.items() if v is not None}
        # too few images per class to cross-validate: the first candidate (the better default)
        chosen = max(known, key=lambda k: known[k]) if known and len(known) == len(scores) \
            else self._candidates()[0]
        x_tr, x_va = feats[chosen]
        fitted = fit_head(x_tr, y_tr, x_va, y_va, self.ctx.seed)
        model = LocalModel(chosen, self.settings.image_size, classes, fitted.pipeline)
        model.save(self.ctx.state_dir)
        return ModelRef(
            service=self.name, dataset=split.dataset, ablation=split.size,
            ids={"model_path": str(self.ctx.state_dir / MODEL_FILE)},
            train_seconds=round(time.perf_counter() - t0, 3),
            started_at=started, finished_at=utc_now(),
            details={"features": chosen, "C": fitted.c, "C_selected_by": fitted.selected_by,
                     "val_accuracy": fitted.val_accuracy,
                     "cv_accuracy": scores or None, "train_images": len(split.train),
                     "val_images": len(split.val)},
        )

    # -- serving ---------------------------------------------------------------------------------
    def connect(self, model: ModelRef) -> None:
        from mlbench.services.local.model import MODEL_FILE

        model_dir = Path(model.ids["model_path"]).parent
        if not (model_dir / MODEL_FILE).exists():
            raise UserError(f"{model_dir / MODEL_FILE}: missing; run `mlbench train local "
                            f"{model.dataset}` first")
        self.close()
        self._model_dir, self.restarts = model_dir, 0
        self._start()

    def _start(self) -> None:
        assert self._model_dir is not None
        server = ServerProcess(self._model_dir)
        self._server, self.url = server, server.url  # never None between two servers

    def on_unreachable(self) -> None:
        """A call could not reach the server: if its process exited, say so at once."""
        server = self._sent_to.get() or self._server
        if server is not None and server.exited(EXIT_GRACE):
            raise ServerGone(f"the local model server (pid {server.proc.pid}) "
                             f"{server.exit_reason()}", server)

    def predict(self, image: bytes) -> Prediction:
        """One call. A server found dead is restarted (`MAX_RESTARTS` per run) and `CallAgain`
        raised, so the harness repeats the call on a fresh timer; past that, one line."""
        try:
            return super().predict(image)
        except ServerGone as gone:
            self._recover(gone)
            raise CallAgain(str(gone)) from None

    def _recover(self, gone: ServerGone) -> None:
        """Restart the server `gone` found dead, unless another call already did (then this
        call is just made again), or stop in one line past `MAX_RESTARTS`."""
        with self._restart_lock:
            if gone.server is not self._server:
                return  # restarted since this call was sent
            if self.restarts >= MAX_RESTARTS:
                raise ServiceError(
                    f"{gone}, after {self.restarts} restart(s); stopped (every row so far is "
                    f"kept): rerun `mlbench evaluate local {self.ctx.dataset}` to score the "
                    "rest") from None
            self.restarts += 1
            warn(escape(f"{gone}; restarting it"))
            gone.server.stop()
            self._start()

    def build_request(self, image: bytes) -> HttpRequest:
        server = self._server
        if server is None:
            raise RuntimeError("connect() first")
        self._sent_to.set(server)
        return HttpRequest("POST", server.url, {"Content-Type": "application/octet-stream"},
                           image)

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> Prediction:
        return parse_label_scores(body, status, who="local model server")

    async def apredict(self, session, image: bytes) -> Prediction:
        """The load test's call: a server that died ends the test (no restart mid-measurement:
        its latencies would mix two servers)."""
        try:
            return await super().apredict(session, image)
        except ServerGone as gone:
            raise ServiceError(f"{gone} during the load test; rerun `mlbench load local "
                               f"{self.ctx.dataset}`") from None

    def close(self) -> None:
        super().close()
        self._stop_server()

    def _stop_server(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server, self.url = None, None


class ServerProcess:
    """The model server child process; `stop()` always reaps it."""

    def __init__(self, model_dir: Path):
        # the server's stderr, read back only to explain a failed start; closed by stop()
        self._log = tempfile.TemporaryFile("w+")  # noqa: SIM115
        self._log_lock = threading.Lock()
        self.proc = subprocess.Popen(
            # run by file path, not `-m`: `-m` would put the cwd first on sys.path, and a
            # project folder holding a copy of `mlbench/` would shadow the installed package
            [sys.executable, server.__file__, str(model_dir), "--die-with-parent"],
            stdout=subprocess.PIPE, stderr=self._log, text=True,
        )
        self.url = self._wait_ready()

    def _wait_ready(self) -> str:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(STARTUP_TIMEOUT)
        first = line[0] if line else ""
        if not first.startswith(READY_PREFIX):
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)
            why = self._stderr_tail() or first or f"exit status {self.proc.returncode}"
            self.stop()
            raise ServiceError(f"local model server did not start: {why}")
        base = first[len(READY_PREFIX):].strip()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            try:
                if requests.get(base + "health", timeout=5).ok:
                    return base
            except requests.RequestException:
                time.sleep(0.05)
        self.stop()
        raise ServiceError(f"local model server did not answer /health within "
                           f"{STARTUP_TIMEOUT:g} s")

    def exited(self, grace: float = 0.0) -> bool:
        """Whether the server process has exited (waiting up to `grace` seconds to see it)."""
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            return False
        return True

    def exit_reason(self) -> str:
        """How the exited server ended, with its last stderr line when it wrote one."""
        code = self.proc.returncode
        how = f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0 \
            else f"exited with status {code}"
        tail = self._stderr_tail()
        return how + (f" ({tail})" if tail else "")

    def _stderr_tail(self) -> str:
        """The server's last stderr line (a one-line JSON error when startup fails)."""
        with self._log_lock:  # calls in flight read it at once, and `stop` closes it
            if self._log.closed:
                return ""
            self._log.seek(0)
            lines = self._log.read().strip().splitlines()
        return lines[-1] if lines else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        with self._log_lock:
            self._log.close()


SERVICE = LocalService
