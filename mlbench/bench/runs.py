"""Which (service, dataset, ablation) runs a stage covers, and how to open a service for one."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager

from mlbench import paths
from mlbench.console import warn
from mlbench.core import ModelRef
from mlbench.data.ablate import read_availability
from mlbench.errors import UserError
from mlbench.io import read_json
from mlbench.params import Params
from mlbench.services.base import Service
from mlbench.services.registry import open_service


def selected_sizes(params: Params, ds: str, quiet: bool = False) -> Iterator[int]:
    """The selected sizes this dataset can give; warns (unless `quiet`) for each it cannot.

    When `ablation` asks a size that no dataset in `params.yaml` can give, that is an error:
    the run would otherwise silently produce nothing.
    """
    avail = read_availability(ds)
    if params.ablation is not None and params.ablation not in avail.available:
        others = []
        for other in params.datasets:
            f = paths.availability_file(other)
            if f.exists() and params.ablation in read_json(f)["available"]:
                others.append(other)
        if not others:
            raise UserError(f"ablation={params.ablation}: no dataset can give "
                            f"{params.ablation} images per class ({ds}: "
                            f"{avail.unavailable.get(params.ablation, 'not sampled')}); "
                            "choose a smaller `ablation` in params.yaml")
    for n in params.selected_sizes:
        if n in avail.available:
            yield n
        elif not quiet:
            warn(f"{ds}: ablation {n} unavailable ({avail.unavailable.get(n, 'not sampled')})")


def fingerprint(*parts: object) -> str:
    """A stable short hash of JSON-able parts: decides whether stored results still apply."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def trained_models(params: Params, service: str, ds: str,
                   sizes: list[int] | None = None) -> Iterator[ModelRef]:
    """The recorded model of each size (the selected ones by default); warns for a missing one."""
    for n in sizes or list(selected_sizes(params, ds, quiet=True)):
        model = ModelRef.load(paths.model_json(service, ds, n))
        if model is None:
            warn(f"{service}/{ds}/{n}: no trained model; run `mlbench train {service} {ds}`")
            continue
        yield model


class Connection:
    """One run's service, connected to its model on first use and kept for every later use:
    scoring, the single-stream pass and the load test of a run measured together share one
    connection, so a local model server is started (seconds: a process, onnxruntime sessions)
    and a cloud endpoint adopted and warmed once per run, not once per step. Nothing is
    connected when every step finds its results already written. Used by the run's own thread
    (its steps run one after another)."""

    def __init__(self, params: Params, service: str, model: ModelRef):
        self._params, self._service, self._model = params, service, model
        self._svc: Service | None = None

    def service(self) -> Service:
        if self._svc is None:
            svc = open_service(self._params, self._service, self._model.dataset,
                               self._model.ablation)
            try:
                svc.connect(self._model)
            except BaseException:
                svc.close()
                raise
            self._svc = svc
        return self._svc

    def close(self) -> None:
        svc, self._svc = self._svc, None
        if svc is not None:
            svc.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def connected(params: Params, service: str, model: ModelRef,
              connection: Connection | None) -> Iterator[Service]:
    """The run's service, connected: through `connection` when the caller keeps it for a later
    step (left open), else through a connection of its own, closed at the end."""
    if connection is not None:
        yield connection.service()
        return
    with Connection(params, service, model) as own:
        yield own.service()
