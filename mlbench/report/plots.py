"""The report's figures (seaborn), shared by `report` (our runs) and `render` (seed CSVs).

Every function takes a tidy table and a path, so the same figure is drawn from a live run or
from the seed's published numbers, side by side.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: stages run headless

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def mean_accuracy_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy across datasets, its SEM and dataset count, per service x ablation."""
    grouped = runs.dropna(subset=["accuracy"]).groupby(["service", "ablation"])["accuracy"]
    table = grouped.agg(mean="mean", sem="sem", datasets="count").reset_index()
    table["sem"] = table["sem"].fillna(0.0)
    return table


def learning_curve(runs: pd.DataFrame, path: Path, title: str = "Accuracy vs training size"):
    """Mean accuracy (± SEM across datasets) vs images per class, log x, a line per service."""
    table = mean_accuracy_table(runs)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for service, part in table.groupby("service"):
        part = part.sort_values("ablation")
        ax.errorbar(part["ablation"], part["mean"], yerr=part["sem"], marker="o", capsize=3,
                    label=service)
    ax.set_xscale("log")
    ticks = sorted(table["ablation"].unique())
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("training images per class")
    ax.set_ylabel("mean accuracy (± SEM across datasets)")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(title="service")
    return _save(fig, path)


def accuracy_by_dataset(runs: pd.DataFrame, path: Path):
    fig, ax = plt.subplots(figsize=(max(7, 1.2 * runs["dataset"].nunique() + 3), 4.5))
    sns.barplot(data=runs, x="dataset", y="accuracy", hue="service", errorbar="se", ax=ax)
    ax.set_ylim(0, 1.02)
    ax.set_title("Accuracy by dataset (mean over ablations, ± SE)")
    return _save(fig, path)


def traintime_vs_accuracy(runs: pd.DataFrame, path: Path):
    means = runs.groupby("service")[["train_seconds", "accuracy"]].mean().reset_index()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    sns.scatterplot(data=means, x="train_seconds", y="accuracy", hue="service", s=120, ax=ax)
    ax.set_xscale("log")
    ax.set_xlabel("mean training time (s, log)")
    ax.set_ylabel("mean accuracy")
    ax.set_title("Training time vs accuracy")
    return _save(fig, path)


def traintime_by_ablation(runs: pd.DataFrame, path: Path):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.lineplot(data=runs, x="ablation", y="train_seconds", hue="service", marker="o",
                 errorbar="se", ax=ax)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training images per class")
    ax.set_ylabel("training time (s, log)")
    ax.set_title("Training time by ablation")
    return _save(fig, path)


def latency_by_service(runs: pd.DataFrame, path: Path):
    """Mean single-call latency per service, from the seed-format table (one value per run)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    sns.boxplot(data=runs, x="service", y="latency_s", ax=ax)
    ax.set_ylabel("mean latency per call (s)")
    ax.set_title("Latency by service")
    return _save(fig, path)


def throughput_bars(throughputs: pd.DataFrame, path: Path):
    """Seconds for 1,000 calls in batches of 10, per service (the seed's throughput figure)."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    data = throughputs.sort_values("seconds_per_1000")
    sns.barplot(data=data, x="service", y="seconds_per_1000", ax=ax)
    ax.set_ylabel("seconds for 1,000 calls, 10 concurrent")
    ax.set_title("Concurrent throughput (lower is faster)")
    return _save(fig, path)


def latency_panel(calls: pd.DataFrame, load: pd.DataFrame, path: Path):
    """Left: per-call latency boxplot per service; right: latency under concurrency (bars)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    sns.boxplot(data=calls, x="service", y="latency_ms", ax=left, showfliers=False)
    left.set_ylabel("latency per call (ms)")
    left.set_title("Single-call latency (evaluate)")
    if not load.empty:
        melted = load.melt(id_vars=["service"], value_vars=["latency_p50_ms", "latency_p95_ms"],
                           var_name="percentile", value_name="ms")
        melted["percentile"] = melted["percentile"].str.extract(r"(p\d+)")[0]
        sns.barplot(data=melted, x="service", y="ms", hue="percentile", ax=right, errorbar=None)
        conc = int(load["concurrency"].iloc[0])
        right.set_title(f"Latency under load ({conc} in flight)")
    right.set_ylabel("latency (ms)")
    return _save(fig, path)


def confusion(actual: pd.Series, predicted: pd.Series, classes: list[str], path: Path,
              title: str):
    """Confusion matrix; answers that named no class get their own "(none)" column."""
    predicted = predicted.where(predicted != "", "(none)")
    labels = list(classes) + (["(none)"] if (predicted == "(none)").any() else [])
    matrix = pd.crosstab(pd.Categorical(actual, categories=classes),
                         pd.Categorical(predicted, categories=labels), dropna=False)
    size = min(14, 3 + 0.45 * len(labels))
    fig, ax = plt.subplots(figsize=(size + 1, size))
    sns.heatmap(matrix.to_numpy(), annot=len(labels) <= 20, fmt="d", cmap="Blues", cbar=False,
                xticklabels=labels, yticklabels=classes, ax=ax)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    return _save(fig, path)
