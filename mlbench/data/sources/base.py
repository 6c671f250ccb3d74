"""The contract every dataset source fulfils.

A source knows two things: how to get its files into `data/<ds>/raw/` (`fetch`), and how that
raw layout maps to images with a class and an official split (`images`). Everything after that
(decoding, validation, RGB conversion, leakage removal) is the shared `prepare` stage, so a new
dataset is one small module under `mlbench/data/sources/`.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Split = Literal["train", "test"]


@dataclass(frozen=True)
class RawImage:
    """One image as found in the raw data: where it is, its class and its official split."""

    path: Path
    class_name: str
    split: Split


@dataclass(frozen=True)
class FetchContext:
    """What `fetch` may consult: the dataset's `sources.<ds>` params and the mirror override."""

    settings: dict[str, Any] = field(default_factory=dict)
    mirror: str | None = None

    @classmethod
    def from_params(cls, ds: str, sources: dict[str, dict[str, Any]]) -> FetchContext:
        return cls(settings=dict(sources.get(ds) or {}), mirror=os.environ.get("MLBENCH_MIRROR"))


class DatasetSource(ABC):
    """A dataset: its name, a one-line description, and its fetch + layout knowledge."""

    name: str
    description: str
    #: True when `fetch` needs no network at all (the built-in datasets).
    builtin: bool = False

    @abstractmethod
    def fetch(self, raw: Path, ctx: FetchContext) -> None:
        """Put the dataset's files under `raw` (idempotent: skip what is already complete)."""

    @abstractmethod
    def images(self, raw: Path) -> Iterator[RawImage]:
        """Yield every candidate image in `raw` with its class and split (corrupt ones too)."""
