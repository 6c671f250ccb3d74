"""The report's figures (seaborn), shared by `report` (our runs) and `render` (seed CSVs).

Every function takes a tidy table and a path, so the same figure is drawn from a live run or
from the seed's published numbers. A table may carry a `source` column ("this run",
"published 2023", ...): sources are drawn apart (line style, hue), never averaged together, and
a service keeps one colour in every figure.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: stages run headless

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from mlbench.services.registry import service_names  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")

LINE_STYLES = ("-", "--", ":", "-.")


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def service_colors(services) -> dict[str, tuple]:
    """One colour per service, the same in every figure and every run (package order first)."""
    order = list(service_names())
    order += sorted(set(map(str, services)) - set(order))
    colors = sns.color_palette("tab10", max(10, len(order)))
    return {name: colors[i % len(colors)] for i, name in enumerate(order)}


def _sources(frame: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(frame["source"])) if "source" in frame else []


def _label(service: str, source: str | None, several: bool) -> str:
    return f"{service} ({source})" if several and source else service


def mean_accuracy_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy across datasets, its SEM and dataset count, per (source,) service x ablation.

    Sources are kept apart: the published numbers and this run's are never averaged together.
    """
    keys = (["source"] if "source" in runs else []) + ["service", "ablation"]
    grouped = runs.dropna(subset=["accuracy"]).groupby(keys, sort=False)["accuracy"]
    table = grouped.agg(mean="mean", sem="sem", datasets="count").reset_index()
    table["sem"] = table["sem"].fillna(0.0)
    table = table.sort_values(["service", "ablation"], kind="stable")
    if "source" in table:  # sources in the order given: the first is drawn solid, listed first
        order = {s: i for i, s in enumerate(_sources(runs))}
        table = table.sort_values("source", key=lambda col: col.map(order), kind="stable")
    return table.reset_index(drop=True)


def _log_sizes(ax: plt.Axes, sizes) -> None:
    ticks = sorted({int(s) for s in sizes})
    ax.set_xscale("log")
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("training images per class")


def learning_curve(runs: pd.DataFrame, path: Path, title: str = "Accuracy vs training size"):
    """Mean accuracy (± SEM across datasets) vs images per class, log x; a line per service and
    source (colour = service, line style = source)."""
    table = mean_accuracy_table(runs)
    if "source" not in table:
        table = table.assign(source="")
    sources = _sources(table)
    colors = service_colors(table["service"])
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    for (service, source), part in table.groupby(["service", "source"], sort=False):
        part = part.sort_values("ablation")
        ax.errorbar(part["ablation"], part["mean"], yerr=part["sem"], marker="o", capsize=3,
                    color=colors[service],
                    linestyle=LINE_STYLES[sources.index(source) % len(LINE_STYLES)],
                    label=_label(service, source, len(sources) > 1))
    _log_sizes(ax, table["ablation"])
    ax.set_ylabel("mean accuracy (± SEM across datasets)")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.legend(title="service", fontsize="small")
    return _save(fig, path)


def learning_curves_by_dataset(runs: pd.DataFrame, path: Path):
    """Accuracy vs images per class, one panel per dataset, a line per service; error bars
    are each run's 95% bootstrap interval."""
    datasets = sorted(runs["dataset"].unique())
    cols = min(3, len(datasets))
    rows = -(-len(datasets) // cols)
    colors = service_colors(runs["service"])
    fig, axes = plt.subplots(rows, cols, figsize=(4.4 * cols, 3.6 * rows), squeeze=False,
                             sharey=True)
    for ax, ds in zip(axes.flat, datasets, strict=False):
        part = runs[runs["dataset"] == ds]
        for service, line in part.groupby("service"):
            line = line.sort_values("ablation")
            acc = line["accuracy"].astype(float)
            yerr = None
            if {"accuracy_ci95_low", "accuracy_ci95_high"} <= set(line.columns):
                low = (acc - line["accuracy_ci95_low"].astype(float)).clip(lower=0)
                high = (line["accuracy_ci95_high"].astype(float) - acc).clip(lower=0)
                yerr = [low.fillna(0), high.fillna(0)]
            ax.errorbar(line["ablation"], acc, yerr=yerr, marker="o", capsize=3,
                        color=colors[service], label=service)
        _log_sizes(ax, part["ablation"])
        ax.set_ylim(0, 1.02)
        ax.set_title(ds)
        ax.set_ylabel("accuracy (95% CI)")
        ax.legend(fontsize="small")
    for ax in list(axes.flat)[len(datasets):]:
        ax.set_visible(False)
    return _save(fig, path)


def _hue(frame: pd.DataFrame) -> dict:
    """seaborn hue arguments: by source when there are several, else by service."""
    if len(_sources(frame)) > 1:
        return {"hue": "source"}
    return {"hue": "service", "palette": service_colors(frame["service"]), "legend": False}


def accuracy_by_dataset(runs: pd.DataFrame, path: Path):
    data = runs.assign(label=[_label(s, src, len(_sources(runs)) > 1) for s, src in zip(
        runs["service"], runs["source"] if "source" in runs else [None] * len(runs),
        strict=True)])
    fig, ax = plt.subplots(figsize=(max(7, 1.3 * runs["dataset"].nunique() + 3), 4.6))
    sns.barplot(data=data, x="dataset", y="accuracy", hue="label", errorbar="se", ax=ax)
    ax.set_ylim(0, 1.02)
    ax.set_title("Accuracy by dataset (mean over ablations, ± SE)")
    ax.legend(title="service", fontsize="small")
    return _save(fig, path)


def traintime_vs_accuracy(runs: pd.DataFrame, path: Path):
    keys = (["source"] if "source" in runs else []) + ["service"]
    means = runs.groupby(keys)[["train_seconds", "accuracy"]].mean().reset_index()
    fig, ax = plt.subplots(figsize=(6.8, 4.6))
    sns.scatterplot(data=means, x="train_seconds", y="accuracy", hue="service", s=120,
                    palette=service_colors(means["service"]),
                    style="source" if "source" in means else None, ax=ax)
    ax.set_xscale("log")
    ax.set_xlabel("mean training time (s, log)")
    ax.set_ylabel("mean accuracy")
    ax.set_title("Training time vs accuracy")
    return _save(fig, path)


def traintime_by_ablation(runs: pd.DataFrame, path: Path):
    fig, ax = plt.subplots(figsize=(7, 4.6))
    sns.lineplot(data=runs, x="ablation", y="train_seconds", hue="service", marker="o",
                 palette=service_colors(runs["service"]),
                 style="source" if "source" in runs else None, errorbar="se", ax=ax)
    _log_sizes(ax, runs["ablation"])
    ax.set_yscale("log")
    ax.set_ylabel("training time (s, log)")
    ax.set_title("Training time by ablation")
    return _save(fig, path)


def latency_throughput(latency: pd.DataFrame, throughputs: pd.DataFrame | None, path: Path,
                       latency_title: str = "Latency per invoke"):
    """The seed's second figure: latency box plot per service (no outliers) beside the
    seconds 1,000 concurrent calls took (bars, from the throughputs table).

    `latency` holds `service`, `latency_s` (per call for a live run; per run's mean for the
    seed's published table) and optionally `source`; `throughputs` `service`,
    `seconds_per_1000` and optionally `source`.
    """
    panels = 2 if throughputs is not None and not throughputs.empty else 1
    names = [*latency["service"], *(throughputs["service"] if panels == 2 else [])]
    order = [s for s in service_colors(names) if s in set(names)]
    fig, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.6), squeeze=False)
    left = axes[0][0]
    sns.boxplot(data=latency, x="service", y="latency_s", showfliers=False, ax=left,
                order=order, **_hue(latency))
    left.set_title(latency_title)
    left.set_ylabel("time (s)")
    if panels == 2:
        right = axes[0][1]
        sns.barplot(data=throughputs, x="service", y="seconds_per_1000", ax=right,
                    errorbar=None, order=order, **_hue(throughputs))
        right.set_title("Throughput - 1k concurrent invokes")
        right.set_ylabel("time for 1,000 calls (s, lower is faster)")
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
