"""`mlbench` command line: one sub-command per pipeline stage, plus per-service commands.

Each DVC stage in `dvc.yaml` runs exactly one of these commands. A `UserError` anywhere
becomes one line on stderr and exit status 2, a `ServiceError` one line and status 1; every
other exception keeps its traceback. Each service package's `cli.py` is mounted as
`mlbench <service> ...`; nothing here names a service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlbench.cli_util import one_line_errors
from mlbench.console import err
from mlbench.services.registry import command_apps, service_names

app = typer.Typer(
    help="Benchmark image-classification AutoML services on your data (driven by `dvc repro`).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

Dataset = Annotated[str, typer.Argument(help="Dataset name (see `params.yaml` datasets).")]
ServiceName = Annotated[str, typer.Argument(
    help=f"Service name: {', '.join(service_names())} (see `params.yaml` services).")]


def _params():
    from mlbench.project import load_checked_params

    return load_checked_params()


def _service(name: str) -> str:
    from mlbench.services.registry import check_name

    return check_name(name)


def _known(dataset: str) -> str:
    """The dataset name, if a source module defines it (else a one-line error listing them)."""
    from mlbench.data.sources import get_source

    get_source(dataset)
    return dataset


@app.command()
@one_line_errors
def check() -> None:
    """Validate params.yaml (every key, name and service block); the pipeline's first stage,
    so a typo fails `dvc repro` at once instead of being ignored. Writes the selected services'
    blocks to results/service-settings.json, which submit and measure depend on."""
    import json

    from mlbench import paths
    from mlbench.io import atomic_write_text

    params = _params()
    blocks = {svc: params.section(svc) for svc in sorted(params.services)}
    atomic_write_text(paths.service_settings_file(),
                      json.dumps(blocks, indent=2, sort_keys=True, default=str) + "\n")
    err.print(f"params.yaml: ok ({', '.join(params.services)} x {', '.join(params.datasets)})")


@app.command()
@one_line_errors
def fetch(dataset: Dataset) -> None:
    """Get the dataset from its source (or built-in generator) into data/<ds>/raw/."""
    from mlbench import paths
    from mlbench.data.sources import get_source
    from mlbench.data.sources.base import FetchContext

    source = get_source(dataset)  # a path-like or unknown name stops here, before any folder
    params = _params()
    raw = paths.raw_dir(dataset)
    raw.mkdir(parents=True, exist_ok=True)
    source.fetch(raw, FetchContext.from_params(dataset, params.sources))
    err.print(f"fetched {dataset} into {raw}")


@app.command()
@one_line_errors
def prepare(dataset: Dataset) -> None:
    """Decode and validate every image into data/<ds>/{train,test}/<class>/, with a manifest."""
    _known(dataset)
    from mlbench.data.prepare import prepare_dataset

    s = prepare_dataset(dataset, max_side=_params().max_side)
    err.print(f"{dataset}: {s.classes} classes, {s.written.get('train', 0)} train / "
              f"{s.written.get('test', 0)} test images, {s.rejected} rejected, "
              f"{s.leaked} test duplicates of train removed")


@app.command()
@one_line_errors
def ablate(dataset: Dataset) -> None:
    """Sample the nested, stratified ablations (data/<ds>/ablations.csv)."""
    _known(dataset)
    from mlbench.data.ablate import ablate_dataset

    p = _params()
    avail = ablate_dataset(dataset, p.sizes, p.seed, p.val_fraction, explicit=p.ablation)
    err.print(f"{dataset}: ablations {list(avail.available)}")


@app.command()
@one_line_errors
def testsets(dataset: Dataset) -> None:
    """Choose the test set every service is scored on (data/<ds>/test.csv)."""
    _known(dataset)
    from mlbench.data.export import write_test_table

    p = _params()
    count = write_test_table(dataset, p.test_per_class, p.seed)
    err.print(f"{dataset}: {count} test images")


@app.command()
@one_line_errors
def export(dataset: Dataset) -> None:
    """Write the seed benchmark's files in every service's format (data/<ds>/ablations/,
    data/<ds>/tests/)."""
    _known(dataset)
    from mlbench.data.export import export_all
    from mlbench.services.registry import export_hooks

    files = export_all(dataset, _params().buckets, export_hooks())
    err.print(f"{dataset}: {files} files in the seed's formats")


@app.command()
@one_line_errors
def folders(dataset: Dataset) -> None:
    """Make the seed's flat upload folders of every ablation (data/<ds>/uploads/)."""
    _known(dataset)
    from mlbench.data.export import export_folders

    export_folders(dataset)


@app.command()
@one_line_errors
def submit() -> None:
    """Start every training the run needs at once (within each vendor's limit) and follow
    them together; the train stages then find each model trained."""
    from mlbench.bench.schedule import run_submit

    run_submit(_params())


@app.command()
@one_line_errors
def measure() -> None:
    """Score, time and load-test every trained run side by side (deploying each); the
    evaluate and load stages then find each run measured."""
    from mlbench.bench.measure import run_measure

    run_measure(_params())


@app.command()
@one_line_errors
def train(service: ServiceName, dataset: Dataset) -> None:
    """Upload the selected ablation(s) to the service and train; writes model.json per size."""
    _known(dataset)
    _service(service)
    from mlbench.bench.train import run_training

    run_training(_params(), service, dataset)


@app.command()
@one_line_errors
def evaluate(service: ServiceName, dataset: Dataset) -> None:
    """Score every test image (resumable); writes predictions.csv and metrics.json per size."""
    _known(dataset)
    _service(service)
    from mlbench.bench.evaluate import run_evaluation

    run_evaluation(_params(), service, dataset)


@app.command()
@one_line_errors
def load(service: ServiceName, dataset: Dataset) -> None:
    """Concurrent load test (params `load`); writes throughput.csv and summary.json per size."""
    _known(dataset)
    _service(service)
    from mlbench.bench.load import run_load

    run_load(_params(), service, dataset)


@app.command()
@one_line_errors
def report() -> None:
    """Aggregate every run: metrics files, summary.csv, seed-format CSVs, plots, report.html."""
    from mlbench.report.aggregate import build_report

    build_report(_params())


@app.command()
@one_line_errors
def teardown() -> None:
    """Stop what bills by the hour for every model of the run (unless keep_deployed: true)."""
    from mlbench.bench.teardown import run_teardown

    run_teardown(_params())


@app.command()
@one_line_errors
def status() -> None:
    """List every deployed resource the project knows of: since when, USD per hour, so far."""
    from mlbench.bench.teardown import print_status

    print_status(_params())


@app.command()
@one_line_errors
def render(
    csv: Annotated[list[Path], typer.Argument(help="Seed-format results CSV(s): dataset,service,"
                                              "ablation,training times (s),accuracy (%),"
                                              "latency (s). LABEL=PATH names a file's source.")],
    throughputs: Annotated[list[Path] | None, typer.Option(
        help="Seed throughputs CSV (service,throughput); repeat for several sources.")] = None,
    out: Annotated[Path, typer.Option(help="Folder for the figures.")] = Path("result_plots"),
) -> None:
    """Draw the seed report's figures from seed-format CSVs, each input labelled by its source
    (the published 2023 file "published 2023", a single other file "this run")."""
    from mlbench.report.render import render_seed_csvs

    render_seed_csvs(csv, throughputs, out)


for _name, _commands in command_apps().items():
    app.add_typer(_commands, name=_name)


def main() -> None:
    from mlbench.runlock import guard_process

    guard_process()  # a stage never outlives the `dvc repro` that started it
    app()
