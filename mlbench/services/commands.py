"""The vendor commands every service gets from one factory: `mlbench <service> status|...`.

`vendor_cli` builds a service's Typer app with the commands every billed service needs, each
working on the models the project recorded (or was given by hand), opened through the same
`registry.open_service` as the pipeline stages:

    status   [DATASET] [ABLATION]   one line per model: where it is, what it costs now
    <deploy>  DATASET  ABLATION|all  make a torn-down model callable again
    <teardown> [DATASET] [ABLATION]  stop what bills while a model is deployed

A vendor names the last two in its own words (`undeploy`, `stop`...) and adds commands of its
own to the app it gets back. Only `cli.py` imports this; it never imports a vendor SDK.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

import typer

from mlbench import paths
from mlbench.cli_util import one_line_errors
from mlbench.core import ModelRef
from mlbench.errors import UserError
from mlbench.services.base import Service

DatasetOpt = Annotated[str | None, typer.Argument(help="Dataset (default: every one recorded).")]
AblationOpt = Annotated[str | None, typer.Argument(help="Images per class, or `all` (default).")]


def parse_ablation(value: str | None) -> int | None:
    """None or `all` -> every size; else a positive number of images per class."""
    if value in (None, "all"):
        return None
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"ablation must be a positive number of images per class or `all`, "
                        f"got {value!r}")
    return int(value)


def recorded_runs(service: str, dataset: str | None, ablation: int | None
                  ) -> Iterator[tuple[Service, ModelRef]]:
    """(opened service, model) of every run recorded for `service` or given in params.yaml,
    filtered by dataset and ablation; each service is closed after its turn."""
    from mlbench.params import load_params
    from mlbench.services.registry import open_service, parse_settings

    params = load_params()
    given = parse_settings(service, params.section(service)).endpoints
    runs = set(paths.model_runs(service)) | {(ds, n) for ds, sizes in given.items()
                                             for n in sizes}
    found = 0
    for ds, n in sorted(runs):
        if (dataset is None or ds == dataset) and (ablation is None or n == ablation):
            with open_service(params, service, ds, n) as svc:
                model = svc.recorded()
                if model is not None:
                    found += 1
                    yield svc, model
    if not found:
        what = " ".join(str(x) for x in (dataset, ablation) if x is not None) or "any dataset"
        raise UserError(f"no {service} model recorded for {what}; train one (`mlbench train "
                        f"{service} <dataset>`) or give one in params.yaml "
                        f"({service}.endpoints.<dataset>.<ablation>)")


def _each(service: str, dataset: str | None, ablation: str | None,
          action: Callable[[Service, ModelRef], str]) -> None:
    for svc, model in recorded_runs(service, dataset, parse_ablation(ablation)):
        typer.echo(f"{model.dataset} {model.ablation}: {action(svc, model)}")


def vendor_cli(service: str, help: str, *, deploy: str | None = None,
               teardown: str | None = None) -> typer.Typer:
    """The service's command group with `status`, and `deploy`/`teardown` under the names given
    (None: the service has nothing to deploy or stop)."""
    app = typer.Typer(help=help, no_args_is_help=True)

    @app.callback()
    def group() -> None:
        """A group even with one command: `mlbench <service> status`, never `mlbench <service>`."""

    @app.command("status")
    @one_line_errors
    def status(dataset: DatasetOpt = None, ablation: AblationOpt = None) -> None:
        """Show each recorded model's state at the vendor (deployed ones are billed)."""
        _each(service, dataset, ablation, lambda svc, model: svc.describe(model))

    if deploy:
        @app.command(deploy)
        @one_line_errors
        def deploy_cmd(dataset: Annotated[str, typer.Argument(help="Dataset.")],
                       ablation: AblationOpt = None) -> None:
            """Make a torn-down model callable again (billed from then on)."""
            _each(service, dataset, ablation, lambda svc, model: svc.deploy(model))

    if teardown:
        @app.command(teardown)
        @one_line_errors
        def teardown_cmd(dataset: DatasetOpt = None, ablation: AblationOpt = None) -> None:
            """Stop what is billed while a model is deployed."""
            _each(service, dataset, ablation, lambda svc, model: svc.teardown(model))

    return app
