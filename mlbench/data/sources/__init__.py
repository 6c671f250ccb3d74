"""Registry of dataset sources: every module in this package that defines `SOURCE`.

Adding a dataset is adding one module here; nothing else needs to know its name.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache

from mlbench.data.sources.base import DatasetSource
from mlbench.errors import UserError


@cache
def _registry() -> dict[str, DatasetSource]:
    found: dict[str, DatasetSource] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base" or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        source = getattr(module, "SOURCE", None)
        if isinstance(source, DatasetSource):
            found[source.name] = source
    return dict(sorted(found.items()))


def dataset_names() -> list[str]:
    return list(_registry())


def get_source(name: str) -> DatasetSource:
    try:
        return _registry()[name]
    except KeyError:
        raise UserError(
            f"unknown dataset {name!r}; choose one of {', '.join(dataset_names())}"
        ) from None
