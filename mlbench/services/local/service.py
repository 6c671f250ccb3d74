"""The local baseline's lifecycle. Needs no credentials and no network.

It does what the AutoML services do (Nyckel documents its recipe as frozen pretrained features +
a light classifier): `upload` embeds the ablation's images with a frozen extractor (cached by
content hash), `submit` fits a linear head (C picked on val) at once, and `connect` starts the
model's own HTTP server on 127.0.0.1, so `predict` goes through the same HTTP client path as a
cloud endpoint.
"""

from __future__ import annotations

import contextlib
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

from mlbench import paths
from mlbench.core import AblationSplit, ModelRef, Prediction, utc_now
from mlbench.errors import UserError
from mlbench.services.base import Job, ServiceContext
from mlbench.services.http import HttpRequest, HttpService, parse_label_scores
from mlbench.services.local import server
from mlbench.services.local.features import EmbeddingCache, make_extractor
from mlbench.services.local.head import HEAD_VERSION, cv_accuracy, fit_head
from mlbench.services.local.model import MODEL_FILE, LocalModel
from mlbench.services.local.server import READY_PREFIX

STARTUP_TIMEOUT = 120.0


class LocalService(HttpService):
    name = "local"

    def __init__(self, ctx: ServiceContext):
        super().__init__(ctx)
        self._server: ServerProcess | None = None
        self.url: str | None = None

    # -- training --------------------------------------------------------------------------------
    def _candidates(self) -> list[str]:
        return self.settings.candidates()

    def _features(self, name: str, files: list[Path]) -> np.ndarray:
        extractor = make_extractor(name, self.settings.image_size)
        return EmbeddingCache(extractor, paths.embeddings_cache()).features(files)

    def model_settings(self) -> dict[str, Any]:
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
        started, t0 = utc_now(), time.perf_counter()
        classes = list(split.classes)
        index = {c: i for i, c in enumerate(classes)}
        y_tr = np.array([index[r.class_name] for r in split.train])
        y_va = np.array([index[r.class_name] for r in split.val])
        scores: dict[str, float] = {}
        feats: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name in self._candidates():
            x_tr = self._features(name, [r.path for r in split.train])
            x_va = self._features(name, [r.path for r in split.val])
            feats[name] = (x_tr, x_va)
            if len(self._candidates()) > 1:
                scores[name] = cv_accuracy(np.concatenate([x_tr, x_va]),
                                           np.concatenate([y_tr, y_va]), self.ctx.seed)
        chosen = max(scores, key=lambda k: scores[k]) if scores else self._candidates()[0]
        x_tr, x_va = feats[chosen]
        fitted = fit_head(x_tr, y_tr, x_va, y_va)
        model = LocalModel(chosen, self.settings.image_size, classes, fitted.pipeline)
        model.save(self.ctx.state_dir)
        return ModelRef(
            service=self.name, dataset=split.dataset, ablation=split.size,
            ids={"model_path": str(self.ctx.state_dir / MODEL_FILE)},
            train_seconds=round(time.perf_counter() - t0, 3),
            started_at=started, finished_at=utc_now(),
            details={"features": chosen, "C": fitted.c, "val_accuracy": fitted.val_accuracy,
                     "cv_accuracy": scores or None, "train_images": len(split.train),
                     "val_images": len(split.val)},
        )

    # -- serving ---------------------------------------------------------------------------------
    def connect(self, model: ModelRef) -> None:
        model_dir = Path(model.ids["model_path"]).parent
        if not (model_dir / MODEL_FILE).exists():
            raise UserError(f"{model_dir / MODEL_FILE}: missing; run `mlbench train local "
                            f"{model.dataset}` first")
        self.close()
        self._server = ServerProcess(model_dir)
        self.url = self._server.url

    def build_request(self, image: bytes) -> HttpRequest:
        if self.url is None:
            raise RuntimeError("connect() first")
        return HttpRequest("POST", self.url, {"Content-Type": "application/octet-stream"}, image)

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> Prediction:
        return parse_label_scores(body, status, who="local model server")

    def close(self) -> None:
        super().close()
        if self._server is not None:
            self._server.stop()
            self._server, self.url = None, None


class ServerProcess:
    """The model server child process; `stop()` always reaps it."""

    def __init__(self, model_dir: Path):
        # the server's stderr, read back only to explain a failed start; closed by stop()
        self._log = tempfile.TemporaryFile("w+")  # noqa: SIM115
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
            raise RuntimeError(f"local model server did not start: {why}")
        base = first[len(READY_PREFIX):].strip()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            try:
                if requests.get(base + "health", timeout=5).ok:
                    return base
            except requests.RequestException:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("local model server did not become healthy")

    def _stderr_tail(self) -> str:
        """The server's last stderr line (a one-line JSON error when startup fails)."""
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
        self._log.close()


SERVICE = LocalService
