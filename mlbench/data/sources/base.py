"""The contract every dataset source fulfils.

A source knows two things: how to get its files into `data/<ds>/raw/` (`fetch`), and how that
raw layout maps to images with a class and an official split (`images`). Everything after that
(decoding, validation, RGB conversion, leakage removal) is the shared `prepare` stage, so a new
dataset is one small module under `mlbench/data/sources/`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from mlbench.core import ImageRef
from mlbench.data.fetch import FetchContext

Split = Literal["train", "test"]


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
    def images(self, raw: Path) -> Iterator[ImageRef]:
        """Yield every candidate image in `raw` with its class and official split (`train` or
        `test`; corrupt ones too: `prepare` rejects them with a reason)."""
