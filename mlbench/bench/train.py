"""`train` stage: upload + train one service on every selected ablation of a dataset.

A model whose inputs (the ablation's images, the service's settings, a hand-given resource)
are unchanged is reused, so a rerun after a crash continues with the next ablation instead of
paying to train again. The harness, and only it, writes each `model.json`, with the
fingerprint of those inputs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mlbench import paths
from mlbench.bench.runs import fingerprint, selected_sizes
from mlbench.console import err
from mlbench.core import AblationSplit, ModelRef
from mlbench.data.ablate import load_split
from mlbench.data.prepare import manifest_hashes
from mlbench.params import Params
from mlbench.runlock import writer_lock
from mlbench.services.base import Service
from mlbench.services.registry import open_service


def split_fingerprint(svc: Service, split: AblationSplit, sha: dict[str, str],
                      given: str | None = None) -> str:
    """Identity of a model: the ablation (names, classes, content) + the service's settings
    (+ the hand-given resource, when the model was made by hand)."""
    rows = [(r.name, r.class_name, "train", sha[r.name]) for r in split.train]
    rows += [(r.name, r.class_name, "val", sha[r.name]) for r in split.val]
    return fingerprint(rows, svc.model_settings(), given)


def record_model(model: ModelRef, key: str) -> None:
    """Write `model.json` with the fingerprint it was trained for."""
    model.details["fingerprint"] = key
    model.save(paths.model_json(model.service, model.dataset, model.ablation))


def run_training(params: Params, service: str, ds: str) -> list[ModelRef]:
    with writer_lock(paths.writer_lock(service, ds), f"mlbench train {service} {ds}"):
        return _train_sizes(params, service, ds)


def _train_sizes(params: Params, service: str, ds: str) -> list[ModelRef]:
    models = []
    sha = manifest_hashes(ds)
    for n in selected_sizes(params, ds):
        split = load_split(ds, n)
        with open_service(params, service, ds, n) as svc:
            given = svc.hand_given()
            key = split_fingerprint(svc, split, sha, given)
            existing = ModelRef.load(paths.model_json(service, ds, n))
            if existing is not None and existing.details.get("fingerprint") == key:
                err.print(f"{service}/{ds}/{n}: model up to date, reused")
                models.append(existing)
                continue
            if given:
                err.print(f"{service}/{ds}/{n}: using {given} ({svc.where()})")
                model = svc.adopt(given)
            else:
                err.print(f"{service}/{ds}/{n}: training on {len(split.train)} train + "
                          f"{len(split.val)} val images")
                svc.upload(split)
                model = svc.train(split)
        record_model(model, key)
        secs = f"{model.train_seconds:.1f}s" if model.train_seconds is not None else "n/a"
        err.print(f"{service}/{ds}/{n}: trained in {secs}")
        models.append(model)
    return models


def train_given(params: Params, service: str, ds: str, n: int, given: str,
                **settings: Any) -> Params:
    """Record the model of a resource made by hand for one ablation, as if params.yaml named it
    `<service>.endpoints.<ds>.<n>` (with `settings` in the service's block); the params that
    do, with `ablation: n`. The seed scripts' "benchmark this endpoint" path."""
    block = dict(params.section(service))
    endpoints = {d: dict(sizes) for d, sizes in (block.get("endpoints") or {}).items()}
    endpoints.setdefault(ds, {})[n] = given
    params = dataclasses.replace(params, ablation=n, raw={
        **params.raw, "ablation": n, service: {**block, **settings, "endpoints": endpoints}})
    err.print(f"{service}/{ds}/{n}: using {given} (set {service}.endpoints.{ds}.{n} in "
              "params.yaml to keep it for `dvc repro`)")
    run_training(params, service, ds)
    return params
