"""`train` stage: upload + train one service on every selected ablation of a dataset.

A model whose inputs (the ablation's images, the service's settings) are unchanged is reused,
so a rerun after a crash continues with the next ablation instead of paying to train again.
"""

from __future__ import annotations

from mlbench import paths
from mlbench.bench.runs import fingerprint, open_service, read_model, selected_sizes
from mlbench.console import err
from mlbench.data.ablate import load_split
from mlbench.data.prepare import manifest_hashes
from mlbench.io import atomic_write_json
from mlbench.params import Params
from mlbench.services.base import AblationSplit, ModelRef, Service


def split_fingerprint(svc: Service, split: AblationSplit, sha: dict[str, str]) -> str:
    """Identity of a model: the ablation (names, classes, content) + the service's settings."""
    rows = [(r.filename, r.class_name, "train", sha[r.filename]) for r in split.train]
    rows += [(r.filename, r.class_name, "val", sha[r.filename]) for r in split.val]
    return fingerprint(rows, svc.model_settings())


def run_training(params: Params, service: str, ds: str) -> list[ModelRef]:
    models = []
    sha = manifest_hashes(ds)
    for n in selected_sizes(params, ds):
        split = load_split(ds, n)
        with open_service(params, service, ds, n) as svc:
            key = split_fingerprint(svc, split, sha)
            existing = read_model(service, ds, n)
            if existing is not None and existing.details.get("fingerprint") == key:
                err.print(f"{service}/{ds}/{n}: model up to date, reused")
                models.append(existing)
                continue
            err.print(f"{service}/{ds}/{n}: training on {len(split.train)} train + "
                      f"{len(split.val)} val images")
            svc.upload(split)
            model = svc.train(split)
        model.details["fingerprint"] = key
        atomic_write_json(paths.model_json(service, ds, n), model.to_json())
        secs = f"{model.train_seconds:.1f}s" if model.train_seconds is not None else "n/a"
        err.print(f"{service}/{ds}/{n}: trained in {secs}")
        models.append(model)
    return models
