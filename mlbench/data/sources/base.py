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
from mlbench.errors import UserError

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


def check_class_name(name: str, where: object) -> str:
    """`name` if it can be a folder name: a class becomes `data/<ds>/<split>/<class>/`, so a
    label such as `..` or `a/b` (from hostile metadata) must never reach a path."""
    if (not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name
            or len(name.encode("utf-8", "surrogateescape")) > 255):
        shown = name if len(name) <= 80 else f"{name[:60]}... ({len(name)} characters)"
        raise UserError(f"{where}: class name {shown!r} cannot be a folder name; fix the "
                        f"dataset's labels (or its source module)")
    return name
