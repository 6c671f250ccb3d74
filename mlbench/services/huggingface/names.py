"""The names of what mlbench creates on Hugging Face, all derived from the run's inputs.

A name is a function of what the resource holds, so a rerun (after a crash, or in another
checkout) finds the same repo, Job or endpoint instead of paying for a second one, and changed
inputs get new ones:

    dataset repo   <ns>/mlbench-<ds>-<n>-<digest>            the ablation's images (split.digest)
    model repo     <ns>/mlbench-<ds>-<n>-<digest>-<run>      + backbone, hyperparameters, script
    Job labels     mlbench-run=<run>, mlbench-dataset, mlbench-ablation
    endpoint       mlbench-<ds>-<n>-<hash>                    model repo + hardware, <= 32 chars
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

#: Inference Endpoint names: lowercase letters, digits and '-', at most 32 characters.
ENDPOINT_NAME_MAX = 32


def slug(text: str, limit: int = 40) -> str:
    """`text` as lowercase letters, digits and single hyphens (a repo or endpoint name part)."""
    out = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return out[:limit].strip("-") or "x"


def digest(parts: Any, length: int = 8) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[
        :length]


def run_key(split_digest: str, model_settings: Mapping[str, Any], script_sha: str) -> str:
    """What the trained model depends on besides the images: one short hash."""
    return digest([split_digest, dict(model_settings), script_sha])


def dataset_repo(namespace: str, dataset: str, ablation: int, split_digest: str) -> str:
    return f"{namespace}/mlbench-{slug(dataset)}-{ablation}-{split_digest}"


def model_repo(namespace: str, dataset: str, ablation: int, split_digest: str, run: str) -> str:
    return f"{dataset_repo(namespace, dataset, ablation, split_digest)}-{run[:6]}"


def job_labels(run: str, dataset: str, ablation: int) -> dict[str, str]:
    return {"mlbench-run": run, "mlbench-dataset": slug(dataset), "mlbench-ablation": str(ablation)}


def endpoint_name(dataset: str, ablation: int, repo: str, hardware: Mapping[str, str]) -> str:
    """Unique per model repo and hardware; readable prefix, hash suffix, 32 characters at most."""
    tail = f"-{ablation}-{digest([repo, dict(hardware)], 6)}"
    room = ENDPOINT_NAME_MAX - len("mlbench-") - len(tail)
    return f"mlbench-{slug(dataset, max(1, room))}{tail}"[:ENDPOINT_NAME_MAX]
