"""`mlbench render`: the seed's figures from seed-format CSVs, each input labelled by source.

The published 2023 numbers and a run of yours are drawn apart ("published 2023" vs "this
run"), never averaged into one line, and the seed's spellings (`aws`, `hg`) are the project's
service names (`rekognition`, `huggingface`), so one service is one colour. An input is labelled:
`LABEL=PATH` as given; the seed's published file (recognised by content) "published 2023"; the
only other input "this run"; several other inputs each by its path.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.table import Table

from mlbench.console import err
from mlbench.console import out as stdout
from mlbench.errors import UserError
from mlbench.report import plots
from mlbench.report.seed_format import (
    PUBLISHED_LABEL,
    THIS_RUN,
    is_published,
    read_seed_results,
    read_seed_throughputs,
)


def labelled(inputs: list[Path]) -> list[tuple[str, Path]]:
    """(source label, path) of each input, by the rules in the module docstring."""
    given: list[tuple[str | None, Path]] = []
    for arg in inputs:
        text = str(arg)
        if not arg.exists() and "=" in text:
            label, _, path = text.partition("=")
            if not label.strip():
                raise UserError(f"{text}: empty label before '='; write LABEL=PATH")
            given.append((label.strip(), Path(path)))
        else:
            given.append((None, arg))
    auto = [p for label, p in given if label is None and not is_published(p)]
    out = []
    for label, path in given:
        if label is None:
            label = (PUBLISHED_LABEL if is_published(path)
                     else THIS_RUN if len(auto) == 1 else str(path))
        out.append((label, path))
    return out


def read_labelled_results(inputs: list[Path]) -> pd.DataFrame:
    """Every input's rows with a `source` column, in the order given."""
    frames = [read_seed_results(p).assign(source=label) for label, p in labelled(inputs)]
    return pd.concat(frames, ignore_index=True)


def read_labelled_throughputs(inputs: list[Path]) -> pd.DataFrame:
    frames = [read_seed_throughputs(p).assign(source=label) for label, p in labelled(inputs)]
    return pd.concat(frames, ignore_index=True)


def accuracy_table(runs: pd.DataFrame, title: str) -> Table:
    """Mean accuracy across datasets per service and source (rows) and ablation (columns)."""
    means = plots.mean_accuracy_table(runs)
    if "source" not in means:
        means = means.assign(source="")
    sizes = sorted(means["ablation"].unique())
    table = Table(title=title)
    table.add_column("service")
    table.add_column("source")
    for n in sizes:
        table.add_column(f"{n}/class", justify="right")
    for (source, service), part in means.groupby(["source", "service"], sort=False):
        by_size = dict(zip(part["ablation"], part["mean"], strict=True))
        table.add_row(str(service), str(source),
                      *[f"{by_size[n]:.3f}" if n in by_size else "-" for n in sizes])
    return table


def render_seed_csvs(csvs: list[Path], throughputs: list[Path] | Path | None,
                     out: Path) -> list[Path]:
    """The seed's figures from results CSVs (+ throughputs CSVs) into `out`; prints the mean
    accuracy table. Returns the figure paths."""
    runs = read_labelled_results(csvs)
    if isinstance(throughputs, Path):
        throughputs = [throughputs]
    tp = read_labelled_throughputs(throughputs) if throughputs else None
    written = [
        plots.learning_curve(runs, out / "mean_accuracy_by_ablation.png"),
        plots.accuracy_by_dataset(runs, out / "accuracy_by_dataset.png"),
        plots.traintime_vs_accuracy(runs, out / "mean_traintime_vs_mean_accuracy.png"),
        plots.traintime_by_ablation(runs, out / "traintime_by_ablation.png"),
        plots.latency_throughput(runs.dropna(subset=["latency_s"]), tp,
                                 out / "throughput_latency.png",
                                 "Mean latency per invoke, one value per run"),
    ]
    stdout.print(accuracy_table(runs, "Mean accuracy across datasets"))
    for path in written:
        err.print(f"wrote {path}")
    return written
