"""`mlbench` command line: one sub-command per pipeline stage, plus per-service commands.

Each DVC stage in `dvc.yaml` runs exactly one of these commands. A `UserError` anywhere
becomes one line on stderr and exit status 2; every other exception keeps its traceback.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Annotated

import typer

from mlbench.cli_util import user_errors
from mlbench.console import err
from mlbench.errors import UserError

app = typer.Typer(
    help="Benchmark image-classification AutoML services on your data (driven by `dvc repro`).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

Dataset = Annotated[str, typer.Argument(help="Dataset name (see `params.yaml` datasets).")]
ServiceName = Annotated[str, typer.Argument(help="Service name: local, nyckel, huggingface, "
                                                 "vertex or rekognition.")]


def _params():
    from mlbench.params import load_params

    return load_params()


def _known(dataset: str) -> str:
    """The dataset name, if a source module defines it (else a one-line error listing them)."""
    from mlbench.data.sources import get_source

    get_source(dataset)
    return dataset


@app.command()
@user_errors
def fetch(dataset: Dataset) -> None:
    """Get the dataset from its source (or built-in generator) into data/<ds>/raw/."""
    from mlbench import paths
    from mlbench.data.sources import get_source
    from mlbench.data.sources.base import FetchContext

    params = _params()
    raw = paths.raw_dir(dataset)
    raw.mkdir(parents=True, exist_ok=True)
    get_source(dataset).fetch(raw, FetchContext.from_params(dataset, params.sources))
    err.print(f"fetched {dataset} into {raw}")


@app.command()
@user_errors
def prepare(dataset: Dataset) -> None:
    """Decode and validate every image into data/<ds>/{train,test}/<class>/, with a manifest."""
    _known(dataset)
    from mlbench.data.prepare import prepare_dataset

    s = prepare_dataset(dataset, max_side=_params().max_side)
    err.print(f"{dataset}: {s.classes} classes, {s.written.get('train', 0)} train / "
              f"{s.written.get('test', 0)} test images, {s.rejected} rejected, "
              f"{s.leaked} test duplicates of train removed")


@app.command()
@user_errors
def ablate(dataset: Dataset) -> None:
    """Sample the nested, stratified ablations and write every service's file format."""
    _known(dataset)
    from mlbench.data.ablate import ablate_dataset
    from mlbench.data.export import export_ablations

    p = _params()
    avail = ablate_dataset(dataset, p.sizes, p.seed, p.val_fraction, explicit=p.ablation)
    files = export_ablations(dataset, p.buckets)
    err.print(f"{dataset}: ablations {list(avail.available)} ({files} files)")


@app.command()
@user_errors
def testsets(dataset: Dataset) -> None:
    """Write the test set in each service's format (data/<ds>/tests/<ds>_test_<svc>.csv)."""
    _known(dataset)
    from mlbench.data.export import export_testsets

    p = _params()
    export_testsets(dataset, p.test_per_class, p.seed, p.buckets)


@app.command()
@user_errors
def folders(dataset: Dataset) -> None:
    """Make the upload folders and AutoTrain zips of every ablation (data/<ds>/uploads/)."""
    _known(dataset)
    from mlbench.data.export import export_folders

    export_folders(dataset)


@app.command()
@user_errors
def train(service: ServiceName, dataset: Dataset) -> None:
    """Upload the selected ablation(s) to the service and train; writes model.json per size."""
    _known(dataset)
    from mlbench.bench.train import run_training

    run_training(_params(), service, dataset)


@app.command()
@user_errors
def evaluate(service: ServiceName, dataset: Dataset) -> None:
    """Score every test image (resumable); writes predictions.csv and metrics.json per size."""
    _known(dataset)
    from mlbench.bench.evaluate import run_evaluation

    run_evaluation(_params(), service, dataset)


@app.command()
@user_errors
def load(service: ServiceName, dataset: Dataset) -> None:
    """Concurrent load test (params `load`); writes throughput.csv and summary.json per size."""
    _known(dataset)
    from mlbench.bench.load import run_load

    run_load(_params(), service, dataset)


@app.command()
@user_errors
def report() -> None:
    """Aggregate every run into results/metrics.json, summary.csv and plots; print the table."""
    from mlbench.report.aggregate import build_report

    build_report(_params())


@app.command()
@user_errors
def render(
    csv: Annotated[list[Path], typer.Argument(help="Seed-format results CSV(s): dataset,service,"
                                              "ablation,training times (s),accuracy (%),"
                                              "latency (s).")],
    throughputs: Annotated[Path | None, typer.Option(help="Seed throughputs CSV "
                                                     "(service,throughput).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for the figures.")] = Path("result_plots"),
) -> None:
    """Draw the seed report's figures from hand-made results CSVs (the seed's render_results)."""
    from mlbench.report.render import render_seed_csvs

    render_seed_csvs(csv, throughputs, out)


serve_app = typer.Typer(help="Run a trained model's HTTP server by hand.", no_args_is_help=True)
app.add_typer(serve_app, name="serve")


@serve_app.command("local")
@user_errors
def serve_local(
    dataset: Dataset,
    ablation: Annotated[int, typer.Argument(help="Images per class of the trained model.")],
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any free port).")] = 8080,
) -> None:
    """Serve results/runs/local/<ds>/models/<n>/ on 127.0.0.1 until Ctrl-C."""
    from mlbench import paths
    from mlbench.services.local.model import MODEL_FILE
    from mlbench.services.local.server import main as server_main

    model_dir = paths.model_dir("local", dataset, ablation)
    if not (model_dir / MODEL_FILE).exists():
        raise UserError(f"{model_dir / MODEL_FILE}: missing; run `mlbench train local {dataset}`")
    server_main([str(model_dir), "--port", str(port)])


def _register_service_clis() -> None:
    """Mount each service's own commands (`mlbench rekognition stop ...`).

    Only the modules that define commands are imported, so every stage starts fast.
    """
    from mlbench.services.base import CLI_MODULES

    for name, module in CLI_MODULES.items():
        sub = getattr(importlib.import_module(module), "cli", None)
        if isinstance(sub, typer.Typer):
            app.add_typer(sub, name=name)


_register_service_clis()


def main() -> None:
    app()
