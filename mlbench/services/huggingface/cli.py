"""`mlbench huggingface status|resume|pause|cancel`: see and stop what bills on Hugging Face.

An Inference Endpoint bills by the hour while it runs, called or not. `pause` applies
`huggingface.teardown` (pause, scale to zero or delete) to every endpoint mlbench created (the
pipeline's last stage does the same after each run); `resume` brings one back for another
`evaluate`/`load`. A training Job bills per minute until it ends: `cancel` stops one (a killed
`dvc repro` leaves it running on purpose, so that the rerun re-attaches). Endpoints given by
hand are listed but never paused or resumed. No SDK import here.
"""

import typer

from mlbench.cli_util import one_line_errors
from mlbench.services.commands import (
    AblationOpt,
    DatasetOpt,
    parse_ablation,
    recorded_runs,
    vendor_cli,
)

cli = vendor_cli("huggingface", "Hugging Face: status of each training Job and Inference "
                 "Endpoint; pause (stop paying, per huggingface.teardown) or resume them.",
                 deploy="resume", teardown="pause")


@cli.command("cancel")
@one_line_errors
def cancel(dataset: DatasetOpt = None, ablation: AblationOpt = None) -> None:
    """Cancel the training Jobs still running (billed per minute until they end)."""
    for svc, model in recorded_runs("huggingface", dataset, parse_ablation(ablation)):
        typer.echo(f"{model.dataset} {model.ablation}: {svc.cancel(model)}")  # type: ignore[attr-defined]
