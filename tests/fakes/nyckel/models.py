"""State of the Nyckel fake: accounts' tokens, functions, labels, samples, training, invokes.

Kept apart from the wire format (responses.py), moto-style. The "model" of a trained function is
a real nearest-centroid classifier over the mean colour of its annotated samples, so a test can
tell a correct label mapping from a wrong one, and confidences are real numbers in [0, 1].
"""

from __future__ import annotations

import hashlib
import itertools
import secrets
import string
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from tests.fakes.pacing import Pacing
from tests.images import mean_rgb

ALPHABET = string.ascii_lowercase + string.digits


def new_id(prefix: str) -> str:
    """Nyckel ids: a readable prefix, an underscore, 16 alphanumerics (`function_9ab6...`)."""
    return f"{prefix}_{''.join(secrets.choice(ALPHABET) for _ in range(16))}"


@dataclass
class Label:
    id: str
    name: str


@dataclass
class Sample:
    id: str
    external_id: str | None
    digest: str
    rgb: tuple[float, float, float]
    label_id: str | None
    origin: str  # "Api" or "InvokeCapture"


@dataclass
class Invocation:
    function_id: str
    capture: bool
    query: dict[str, list[str]]


@dataclass
class Function:
    id: str
    name: str
    input: str
    output: str
    labels: dict[str, Label] = field(default_factory=dict)
    samples: dict[str, Sample] = field(default_factory=dict)
    #: Wall-clock time at which the model covering the current samples is ready.
    trained_at: float | None = None

    def label_by_name(self, name: str) -> Label | None:
        return next((lb for lb in self.labels.values() if lb.name == name), None)

    def annotated(self) -> list[Sample]:
        return [s for s in self.samples.values() if s.label_id is not None]


class NyckelState:
    """Everything the fake account holds; thread-safe (the server is threaded)."""

    def __init__(self, client_id: str = "test-client", client_secret: str = "test-secret",
                 expires_in: int = 3600, train_delay: float = 0.2,
                 pacing: Pacing | None = None):
        self.client_id = client_id
        self.client_secret = client_secret
        self.expires_in = expires_in
        #: Seconds after the last sample change until the function counts as trained
        #: (`float("inf")`: never, to test timeouts).
        self.train_delay = train_delay
        #: Wall-clock pacing (`tests/fakes/pacing.py`): training time per function name (from
        #: its last sample change, replacing `train_delay`), invoke latency and rate limit.
        self.pacing = pacing
        #: How many functions, labels and samples were created (what "no duplicates" checks).
        self.created: Counter[str] = Counter()
        self.lock = threading.RLock()
        self.tokens: dict[str, float] = {}
        self.token_requests = 0
        self.functions: dict[str, Function] = {}
        self.invocations: list[Invocation] = []
        self._counter = itertools.count()

    # -- auth ------------------------------------------------------------------------------------
    def issue_token(self) -> str:
        with self.lock:
            token = f"tok-{next(self._counter)}-{secrets.token_hex(8)}"
            self.tokens[token] = time.time() + self.expires_in
            self.token_requests += 1
            return token

    def token_valid(self, token: str) -> bool:
        with self.lock:
            expiry = self.tokens.get(token)
            return expiry is not None and time.time() < expiry

    def expire_tokens(self) -> None:
        """Every issued token stops working now (the next call gets a 401)."""
        with self.lock:
            self.tokens = dict.fromkeys(self.tokens, 0.0)

    # -- functions -------------------------------------------------------------------------------
    def find(self, function_id: str) -> Function | None:
        """By id, with or without its `function_` prefix (Nyckel accepts both)."""
        with self.lock:
            full = function_id if function_id.startswith("function_") else f"function_{function_id}"
            return self.functions.get(full)

    def create_function(self, name: str, input_: str, output: str) -> Function:
        with self.lock:
            fn = Function(new_id("function"), name, input_, output)
            self.functions[fn.id] = fn
            self.created["functions"] += 1
            return fn

    def add_label(self, fn: Function, name: str) -> Label:
        with self.lock:
            label = Label(new_id("label"), name)
            fn.labels[label.id] = label
            self.created["labels"] += 1
            self._touch(fn)
            return label

    def add_sample(self, fn: Function, image: bytes, external_id: str | None,
                   label_id: str | None, origin: str = "Api") -> tuple[Sample, bool]:
        """(sample, created). Nyckel keeps no duplicate data in a function: same bytes -> the
        existing sample; same externalId -> the existing sample too."""
        digest = hashlib.sha256(image).hexdigest()
        with self.lock:
            for s in fn.samples.values():
                if s.digest == digest or (external_id and s.external_id == external_id):
                    return s, False
            sample = Sample(new_id("sample"), external_id, digest, mean_rgb(image), label_id,
                            origin)
            fn.samples[sample.id] = sample
            self.created["samples"] += 1
            if label_id is not None:
                self._touch(fn)
            return sample, True

    def _touch(self, fn: Function) -> None:
        if self.pacing is not None:
            fn.trained_at = self.pacing.training_done_at(fn.name)
        else:
            fn.trained_at = time.time() + self.train_delay

    # -- training status (what the official client reads from v0.9) -------------------------------
    def is_trained(self, fn: Function) -> bool:
        with self.lock:
            counts = self.label_counts(fn)
            enough = len(counts) >= 2 and all(c >= 2 for c in counts.values())
            return enough and fn.trained_at is not None and time.time() >= fn.trained_at

    def label_counts(self, fn: Function) -> dict[str, int]:
        with self.lock:
            counts: dict[str, int] = {}
            for s in fn.annotated():
                counts[s.label_id] = counts.get(s.label_id, 0) + 1  # type: ignore[index]
            return counts

    # -- invoke ----------------------------------------------------------------------------------
    def predict(self, fn: Function, image: bytes) -> list[tuple[Label, float]]:
        """Labels with confidences (softmax over negative centroid distances), best first."""
        import math

        rgb = mean_rgb(image)
        with self.lock:
            groups: dict[str, list[tuple[float, float, float]]] = {}
            for s in fn.annotated():
                groups.setdefault(s.label_id, []).append(s.rgb)  # type: ignore[arg-type]
            labels = [fn.labels[lid] for lid in groups]
        dists = []
        for lb in labels:
            pts = groups[lb.id]
            centroid = [sum(p[i] for p in pts) / len(pts) for i in range(3)]
            dists.append(math.dist(rgb, centroid))
        weights = [math.exp(-d / 10.0) for d in dists]
        total = sum(weights) or 1.0
        ranked = sorted(zip(labels, (w / total for w in weights), strict=True),
                        key=lambda lc: -lc[1])
        return ranked

    def record_invocation(self, fn: Function, capture: bool, query: dict[str, list[str]],
                          image: bytes) -> None:
        with self.lock:
            self.invocations.append(Invocation(fn.id, capture, query))
            if capture:
                self.add_sample(fn, image, None, None, origin="InvokeCapture")
