"""`mlbench nyckel ...`: the shared `status`, and `create` / `upload` for the seed's by-hand path.

Nothing of Nyckel is billed per hour, so there is nothing to deploy or tear down. Only the
harness writes model.json: `upload --wait` waits for training, and `mlbench train nyckel <ds>`
(or `nyckel.endpoints.<ds>.<n>` in params.yaml) records the model.
"""

from __future__ import annotations

from typing import Annotated

import typer

from mlbench.cli_util import one_line_errors
from mlbench.errors import UserError
from mlbench.services.commands import vendor_cli

cli = vendor_cli("nyckel", "Nyckel: create functions, upload an ablation, check training status.")

DatasetArg = Annotated[str, typer.Argument(help="Dataset name (see params.yaml datasets).")]
AblationArg = Annotated[int, typer.Argument(help="Ablation size, in images per class.")]


def _open(dataset: str, ablation: int):  # noqa: ANN202 - a NyckelService (SDK-free import)
    from mlbench.params import load_params
    from mlbench.services.registry import open_service

    return open_service(load_params(), "nyckel", dataset, ablation)


@cli.command()
@one_line_errors
def create(
    function_name: Annotated[str, typer.Argument(help="Name of the new function.")],
    dataset: Annotated[str | None, typer.Option(help="Make it this dataset's function...")]
    = None,
    ablation: Annotated[int | None, typer.Option(help="... for this ablation size.")] = None,
) -> None:
    """Create an image-classification function; print its id (and record it for a run)."""
    from mlbench.services.registry import service_class

    if (dataset is None) != (ablation is None):
        raise UserError("give both --dataset and --ablation, or neither")
    function_id = service_class("nyckel").create_function(  # type: ignore[attr-defined]
        function_name, dataset=dataset, ablation=ablation)
    if dataset is not None and ablation is not None:
        with _open(dataset, ablation) as svc:
            svc.choose(function_id, "nyckel create")
    typer.echo(function_id)


@cli.command()
@one_line_errors
def upload(
    dataset: DatasetArg,
    ablation: AblationArg,
    function_id: Annotated[str | None, typer.Option(
        help="Upload to this function (default: nyckel.endpoints.<ds>.<n>, else the one found "
             "or created for the ablation).")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until trained.")] = False,
) -> None:
    """Upload an ablation's images as samples (resumable); optionally wait for training."""
    from mlbench.data.ablate import load_split

    split = load_split(dataset, ablation)
    with _open(dataset, ablation) as svc:
        chosen = function_id or svc.hand_given()
        if chosen:
            svc.choose(chosen, "--function-id" if function_id else f"params.yaml: {svc.where()}")
        svc.upload(split)
        if wait:
            model = svc.train(split)
            secs = "unknown" if model.train_seconds is None else f"{model.train_seconds:.0f}"
            typer.echo(f"{model.ids['function_id']} trained; training seconds: {secs}")
        typer.echo(f"{svc.state.get('function_id')}: {svc.state.get('samples')} samples. To "
                   f"benchmark it, record the model with `mlbench train nyckel {dataset}`"
                   f"{'' if wait else ' (it waits for training)'}.")
