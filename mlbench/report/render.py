"""`mlbench render`: the seed's render_results.py — figures from hand-made results CSVs."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from rich.table import Table

from mlbench.console import err
from mlbench.console import out as stdout
from mlbench.report import plots
from mlbench.report.seed_format import read_seed_results, read_seed_throughputs


def accuracy_table(runs: pd.DataFrame, title: str) -> Table:
    """Mean accuracy across datasets per service (rows) and ablation (columns)."""
    means = plots.mean_accuracy_table(runs)
    sizes = sorted(means["ablation"].unique())
    table = Table(title=title)
    table.add_column("service")
    for n in sizes:
        table.add_column(f"{n}/class", justify="right")
    for service, part in means.groupby("service"):
        by_size = dict(zip(part["ablation"], part["mean"], strict=True))
        table.add_row(str(service), *[f"{by_size[n]:.3f}" if n in by_size else "-"
                                      for n in sizes])
    return table


def render_seed_csvs(csvs: list[Path], throughputs: Path | None, out: Path) -> list[Path]:
    runs = pd.concat([read_seed_results(p) for p in csvs], ignore_index=True)
    written = [
        plots.learning_curve(runs, out / "mean_accuracy_by_ablation.png"),
        plots.accuracy_by_dataset(runs, out / "accuracy_by_dataset.png"),
        plots.traintime_vs_accuracy(runs, out / "mean_traintime_vs_mean_accuracy.png"),
        plots.traintime_by_ablation(runs, out / "traintime_by_ablation.png"),
        plots.latency_by_service(runs, out / "latency_by_service.png"),
    ]
    if throughputs is not None:
        written.append(plots.throughput_bars(read_seed_throughputs(throughputs),
                                             out / "throughput.png"))
    stdout.print(accuracy_table(runs, "Mean accuracy across datasets"))
    for path in written:
        err.print(f"wrote {path}")
    return written
