"""State of the Hugging Face fake: dedicated Inference Endpoints and Hub model repos.

An endpoint holds a real (tiny) model: nearest colour centroid per class, softmax over negative
distances, so answers are right or wrong for a reason. It can speak in class names or, as many
AutoTrain deployments do, in `LABEL_<i>` ids that only the repo's `config.json` `id2label` maps
back. A repo serves files (config.json) through the Hub's `resolve` endpoint.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import threading
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageStat


def mean_rgb(image: bytes) -> tuple[float, float, float]:
    with Image.open(io.BytesIO(image)) as img:
        r, g, b = ImageStat.Stat(img.convert("RGB")).mean
    return r, g, b


@dataclass
class Endpoint:
    """One deployed image-classification endpoint (`/endpoints/<name>` on the fake)."""

    name: str
    centroids: dict[str, tuple[float, float, float]]
    #: "names": answer class names; "ids": answer LABEL_<i> (i = position in sorted classes).
    label_style: str = "names"
    #: The next N calls answer 503 "currently loading" with `estimated_time`.
    cold_requests: int = 0
    estimated_time: float = 0.05
    calls: int = 0

    @property
    def classes(self) -> list[str]:
        return sorted(self.centroids)

    def id2label(self) -> dict[str, str]:
        return {str(i): c for i, c in enumerate(self.classes)}

    def classify(self, image: bytes, top_k: int = 5) -> list[dict[str, Any]]:
        rgb = mean_rgb(image)
        weights = {c: math.exp(-math.dist(rgb, centroid) / 10.0)
                   for c, centroid in self.centroids.items()}
        total = sum(weights.values()) or 1.0
        ranked = sorted(weights.items(), key=lambda cw: -cw[1])[:top_k]
        index = {c: i for i, c in enumerate(self.classes)}
        return [{"label": c if self.label_style == "names" else f"LABEL_{index[c]}",
                 "score": w / total} for c, w in ranked]


@dataclass
class Repo:
    """A Hub model repo: files by name, one commit, optionally private (token required)."""

    repo_id: str
    files: dict[str, bytes] = field(default_factory=dict)
    private: bool = False
    commit: str = "0" * 40

    @classmethod
    def autotrain_model(cls, repo_id: str, classes: list[str], private: bool = True) -> Repo:
        """A repo shaped like an AutoTrain image-classification model's."""
        config = {
            "architectures": ["ViTForImageClassification"],
            "id2label": {str(i): c for i, c in enumerate(classes)},
            "label2id": {c: str(i) for i, c in enumerate(classes)},
            "problem_type": "single_label_classification",
        }
        commit = hashlib.sha1(repo_id.encode()).hexdigest()
        return cls(repo_id, {"config.json": json.dumps(config).encode()}, private, commit)


class HfState:
    """Endpoints, repos and the one valid token; thread-safe."""

    def __init__(self, token: str = "hf_test_token"):
        self.token = token
        self.lock = threading.Lock()
        self.endpoints: dict[str, Endpoint] = {}
        self.repos: dict[str, Repo] = {}

    def add_endpoint(self, endpoint: Endpoint) -> Endpoint:
        with self.lock:
            self.endpoints[endpoint.name] = endpoint
        return endpoint

    def add_repo(self, repo: Repo) -> Repo:
        with self.lock:
            self.repos[repo.repo_id] = repo
        return repo

    def take_cold(self, endpoint: Endpoint) -> bool:
        """Whether this call meets a cold (loading) endpoint."""
        with self.lock:
            endpoint.calls += 1
            if endpoint.cold_requests > 0:
                endpoint.cold_requests -= 1
                return True
            return False
