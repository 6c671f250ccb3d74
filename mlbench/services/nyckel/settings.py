"""The `nyckel:` block of params.yaml, validated (a bad value names its key). No SDK import."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from mlbench.params import SettingsBlock
from mlbench.services.base import ServiceSettings

#: Nyckel's documented limits: 25 requests/s and 25 requests in flight per account.
NYCKEL_MAX_RPS = 25.0
NYCKEL_MAX_IN_FLIGHT = 25


def default_concurrent_trainings(upload_concurrency: int) -> int:
    """Nyckel documents no limit on trainings in flight (a function retrains by itself after
    every change, in seconds); what concurrent trainings share is the account's 25 requests in
    flight, spent on their uploads. So as many as fit: 25 // `upload_concurrency` (3 at 8)."""
    return max(1, NYCKEL_MAX_IN_FLIGHT // upload_concurrency)
#: A function id as the console shows it (`function_abc123`), or without its prefix.
_FUNCTION_ID = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Settings(ServiceSettings):
    """`endpoints.<ds>.<n>`: a function made by hand (its id) to benchmark instead of training
    one; `function_prefix`: name prefix of the functions created; `train_timeout`,
    `poll_interval`: how long and how often to wait for training; `upload_concurrency`, `rps`:
    samples in flight and requests per second of the upload (at most Nyckel's 25 / 25/s);
    `max_concurrent_trainings`: trainings in flight at once (`default_concurrent_trainings`).

    MODEL_FIELDS is empty: Nyckel picks its own model, none of these settings changes it (the
    function's name changes with the prefix, not what it learns)."""

    function_prefix: str = "mlbench"
    train_timeout: float = 3600.0
    poll_interval: float = 5.0
    upload_concurrency: int = 8
    rps: float = NYCKEL_MAX_RPS
    max_concurrent_trainings: int = default_concurrent_trainings(8)

    MODEL_FIELDS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Settings:
        block = SettingsBlock("nyckel", raw, cls.keys())
        upload_concurrency = block.number("upload_concurrency", cls.upload_concurrency, 1,
                                          NYCKEL_MAX_IN_FLIGHT, integer=True)
        return cls(
            endpoints=block.per_ablation("endpoints", "Nyckel function id",
                                         lambda v: bool(_FUNCTION_ID.fullmatch(v))),
            function_prefix=block.text("function_prefix", cls.function_prefix),
            train_timeout=block.number("train_timeout", cls.train_timeout, 0, 7 * 24 * 3600,
                                       lo_open=True),
            poll_interval=block.number("poll_interval", cls.poll_interval, 0, 600, lo_open=True),
            upload_concurrency=upload_concurrency,
            rps=block.number("rps", cls.rps, 0, NYCKEL_MAX_RPS, lo_open=True),
            max_concurrent_trainings=block.number(
                "max_concurrent_trainings", default_concurrent_trainings(upload_concurrency), 1,
                1000, integer=True),
        )
