"""Registry of dataset sources: every module in this package that defines `SOURCE`.

Adding a dataset is adding one module here; nothing else needs to know its name.
"""

from __future__ import annotations

import difflib
import importlib
import pkgutil
import re
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


#: What a dataset name may look like: it names folders (`data/<ds>/`) and params keys.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def get_source(name: str) -> DatasetSource:
    """The source of dataset `name`; one-line `UserError` for an unknown or path-like name.

    Callers look the name up before they build any path from it, so `mlbench fetch ../../x`
    is refused before a folder is made.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        shown = name if not isinstance(name, str) or len(name) <= 80 else f"{name[:60]}..."
        raise UserError(f"{shown!r} is not a dataset name (letters, digits, _ and -; "
                        f"no path); choose one of {', '.join(dataset_names())}")
    try:
        return _registry()[name]
    except KeyError:
        near = difflib.get_close_matches(name, dataset_names(), n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        raise UserError(
            f"unknown dataset {name!r}; {hint}choose one of {', '.join(dataset_names())}"
        ) from None
