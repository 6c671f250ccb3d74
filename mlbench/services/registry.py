"""Services are found like datasets: every package under `mlbench/services/` is one.

A service package holds `settings.py` (a `Settings` class: its params block, validated),
`service.py` (`SERVICE`: the `Service` subclass) and, where it has them, `cli.py` (`cli`: its
vendor commands, mounted as `mlbench <name> ...`) and `export.py` (`export(...)`: the files the
seed benchmark kept in its format). Nothing else names a service: adding one is adding a package
and its params block.

`settings.py`, `cli.py` and `export.py` never import a vendor SDK, so validating params,
starting the CLI and exporting files work with only the offline default installed; a missing
SDK is reported (one line naming the extra to install) when the service itself is opened.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from collections.abc import Callable, Mapping
from functools import cache
from types import ModuleType
from typing import Any

from mlbench import paths
from mlbench.errors import UserError, needs_extra
from mlbench.params import Params
from mlbench.services.base import Service, ServiceContext, ServiceSettings

_PACKAGE = "mlbench.services"


@cache
def service_names() -> tuple[str, ...]:
    """Every service package, sorted (`local` first, being the offline default)."""
    import mlbench.services as pkg

    names = [m.name for m in pkgutil.iter_modules(pkg.__path__)
             if m.ispkg and not m.name.startswith("_")]
    return tuple(sorted(names, key=lambda n: (n != "local", n)))


def check_name(name: str) -> str:
    if name not in service_names():
        raise UserError(f"unknown service {name!r}; choose one of {', '.join(service_names())}")
    return name


def _part(name: str, part: str) -> ModuleType | None:
    """`mlbench.services.<name>.<part>`, or None when the package has no such module."""
    module = f"{_PACKAGE}.{check_name(name)}.{part}"
    return importlib.import_module(module) if importlib.util.find_spec(module) else None


def settings_type(name: str) -> type[ServiceSettings]:
    module = _part(name, "settings")
    cls = getattr(module, "Settings", None)
    if not (isinstance(cls, type) and issubclass(cls, ServiceSettings)):
        raise TypeError(f"{_PACKAGE}.{name}.settings must define Settings(ServiceSettings)")
    return cls


def parse_settings(name: str, raw: Mapping[str, Any] | None) -> ServiceSettings:
    """The service's params block, validated (one-line `UserError` for a bad value)."""
    if raw is not None and not isinstance(raw, Mapping):
        raise UserError(f"params.yaml: {name}: must be a mapping of settings, got {raw!r}")
    return settings_type(name).parse(raw or {})


def service_class(name: str) -> type[Service]:
    """The service's class; a missing optional SDK is one line naming the extra to install."""
    with needs_extra(f"the {name} service", name):
        module = _part(name, "service")
    cls = getattr(module, "SERVICE", None)
    if not (isinstance(cls, type) and issubclass(cls, Service) and cls.name == name):
        raise TypeError(f"{_PACKAGE}.{name}.service must define SERVICE, a Service named {name}")
    return cls


def open_service(params: Params, name: str, dataset: str, ablation: int) -> Service:
    """The service for one (dataset, ablation), with its narrow context.

    The one way every caller gets a service: the harness stages and the vendor commands.
    """
    ctx = ServiceContext(
        service=name, settings=parse_settings(name, params.section(name)), dataset=dataset,
        ablation=ablation, seed=params.seed, buckets=dict(params.buckets),
        state_dir=paths.model_dir(name, dataset, ablation), in_flight=params.load.concurrency)
    return service_class(name)(ctx)


def _collect(part: str, attr: str) -> dict[str, Any]:
    """name -> `<attr>` of every service that has a `<part>.py`."""
    found = {}
    for name in service_names():
        module = _part(name, part)
        if module is not None:
            found[name] = getattr(module, attr)
    return found


def export_hooks() -> dict[str, Callable[..., int]]:
    """name -> `export` of every service that writes files in the seed's formats."""
    return _collect("export", "export")


def command_apps() -> dict[str, Any]:
    """name -> the Typer app of every service with vendor commands (`cli.py`)."""
    return _collect("cli", "cli")
