"""The project's params, checked against what this install knows: datasets and services.

`mlbench.params` checks the shape of every key; this adds what needs the registries above it:
each dataset and service name exists, and the params block of every service is valid (a typo in
the block of a service not in `services:` is caught too). Every command reads params here first,
so a mistake stops the run before anything is created.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from mlbench import paths
from mlbench.data.fetch import check_settings
from mlbench.data.sources import dataset_names
from mlbench.errors import UserError
from mlbench.params import Params, check_keys, load_params, parse_params
from mlbench.services.registry import parse_settings, service_names


def check_params(params: Params) -> Params:
    """`params`, once every dataset, service, service block and dataset source in it is known
    and valid."""
    for key, names, known in (("datasets", params.datasets, dataset_names()),
                              ("services", params.services, service_names())):
        unknown = [n for n in names if n not in known]
        if unknown:
            near = difflib.get_close_matches(unknown[0], known, n=1)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise UserError(f"params.yaml: {key}: unknown name {unknown[0]!r}; {hint}each must "
                            f"be one of {', '.join(known)}")
    for name in service_names():
        if name in params.raw or name in params.services:
            parse_settings(name, params.section(name))
    check_keys("sources.", params.sources, dataset_names())
    check_keys("prices.", params.prices, service_names())
    for ds, settings in params.sources.items():
        check_settings(ds, settings)
    return params


def parse_checked_params(data: dict[str, Any]) -> Params:
    return check_params(parse_params(data, extra_keys=service_names()))


def load_checked_params(path: Path = paths.PARAMS_FILE) -> Params:
    return check_params(load_params(path, extra_keys=service_names()))
