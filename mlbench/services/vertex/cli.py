"""`mlbench vertex ...`: the commands that stop (and restart) the billing of a deployed model.

A deployed AutoML model is billed per node hour while it sits on an endpoint, benchmark or
not; `undeploy` is how a user stops paying, `deploy` brings the same trained model back for
another `evaluate`/`load`, `status` shows what exists. Registered by mlbench.cli as the
`cli` attribute of mlbench.services.vertex.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from mlbench.cli_util import user_errors
from mlbench.console import err
from mlbench.errors import UserError

if TYPE_CHECKING:
    from mlbench.services.vertex import VertexService

cli = typer.Typer(help="Google Vertex AI: undeploy (stop paying), deploy again, status.",
                  no_args_is_help=True)
DatasetArg = Annotated[str, typer.Argument(help="Dataset name (see params.yaml datasets).")]
AblationArg = Annotated[str, typer.Argument(help="Images per class of the model, or `all`.")]


def _sizes(dataset: str, ablation: str) -> list[int]:
    """`all`: every ablation with a Vertex run folder; else the one number given."""
    from mlbench import paths

    if ablation == "all":
        root = paths.models_dir("vertex", dataset)
        return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) \
            if root.exists() else []
    if not ablation.isdigit() or int(ablation) < 1:
        raise UserError(f"ablation must be a positive number of images per class or `all`, "
                        f"got {ablation!r}")
    return [int(ablation)]


def _open(dataset: str, n: int) -> VertexService:
    from mlbench.bench.runs import open_service
    from mlbench.params import load_params
    from mlbench.services.vertex import VertexService

    svc = open_service(load_params(), "vertex", dataset, n)
    assert isinstance(svc, VertexService)
    return svc


@cli.command("undeploy")
@user_errors
def undeploy_cmd(
    dataset: DatasetArg,
    ablation: AblationArg,
    delete_endpoint: Annotated[bool, typer.Option(
        "--delete-endpoint", help="Also delete the (then empty) endpoint.")] = False,
) -> None:
    """Undeploy the model(s) of a trained ablation so the endpoint stops being billed."""
    sizes = _sizes(dataset, ablation)
    if not sizes:
        err.print(f"vertex: {dataset}: no Vertex models recorded")
    for n in sizes:
        with _open(dataset, n) as svc:
            svc.undeploy(delete_endpoint)


@cli.command("deploy")
@user_errors
def deploy_cmd(dataset: DatasetArg, ablation: AblationArg) -> None:
    """Deploy a trained model again (after `undeploy`) so `evaluate`/`load` can call it."""
    for n in _sizes(dataset, ablation):
        with _open(dataset, n) as svc:
            svc.redeploy()


@cli.command("status")
@user_errors
def status_cmd(dataset: DatasetArg, ablation: AblationArg = "all") -> None:
    """Show what each ablation's run created and whether a model is deployed (billing)."""
    for n in _sizes(dataset, ablation):
        with _open(dataset, n) as svc:
            state = svc.load_state()
            endpoint = svc.recorded_endpoint()
            live = "no endpoint"
            if endpoint:
                svc.check_access()
                ep = svc.api.get(endpoint)
                live = "endpoint gone" if ep is None else (
                    f"{len(ep.get('deployedModels') or [])} model(s) deployed")
            err.print(f"{dataset}/{n}: dataset {state.get('dataset', '-')}, pipeline "
                      f"{state.get('pipeline', '-')}, model {state.get('model', '-')}, "
                      f"endpoint {endpoint or '-'}: {live}")
