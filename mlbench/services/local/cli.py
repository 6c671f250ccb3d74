"""`mlbench local ...`: serve a trained local model by hand, and the shared `status`."""

from __future__ import annotations

from typing import Annotated

import typer

from mlbench.cli_util import one_line_errors
from mlbench.services.commands import vendor_cli

cli = vendor_cli("local", "The built-in baseline: serve a trained model by hand, or list them.")


@cli.command()
@one_line_errors
def serve(
    dataset: Annotated[str, typer.Argument(help="Dataset name (see params.yaml datasets).")],
    ablation: Annotated[int, typer.Argument(help="Images per class of the trained model.")],
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = 8080,
) -> None:
    """Serve results/models/local/<ds>/<n>/ on 127.0.0.1 until Ctrl-C."""
    from mlbench import paths
    from mlbench.errors import UserError
    from mlbench.services.local.model import MODEL_FILE
    from mlbench.services.local.server import main as server_main

    model_dir = paths.model_dir("local", dataset, ablation)
    if not (model_dir / MODEL_FILE).exists():
        raise UserError(f"{model_dir / MODEL_FILE}: missing; run `mlbench train local {dataset}`")
    server_main([str(model_dir), "--port", str(port)])
