"""`report` stage: every run of the selected services x datasets x ablations, in one place.

Writes
- `results/metrics/<svc>-<ds>.json` and `results/mean-accuracy/<svc>.json`: accuracy per
  ablation, for `dvc metrics show` / `dvc exp show` (`report/metrics.py`);
- `results/summary.csv`: one row a run, unavailable sizes included with the reason;
- `results/learning_curve.csv`: mean accuracy per service and ablation (DVC plot data);
- the seed's formats (`report/seed_format.py`): `results/benchmark-data.csv`,
  `results/throughputs.csv` and `results/seed/<ds>-<svc>-results-<n>.csv`;
- the figures under `results/plots/`, and `results/report.html` (`report/html.py`), where this
  run sits beside the seed's published 2023 numbers (`report/published/`).
"""

from __future__ import annotations

import math
import shutil

import pandas as pd
from rich.table import Table

from mlbench import paths
from mlbench.console import err, out
from mlbench.data.ablate import read_availability
from mlbench.data.prepare import read_classes
from mlbench.io import atomic_write_csv, atomic_write_text, read_json
from mlbench.params import Params
from mlbench.report import html, plots
from mlbench.report.cost import run_cost
from mlbench.report.metrics import write_metrics
from mlbench.report.seed_format import (
    PUBLISHED_LABEL,
    PUBLISHED_RESULTS,
    PUBLISHED_THROUGHPUTS,
    SEED_COLUMNS,
    THIS_RUN,
    read_seed_results,
    read_seed_throughputs,
    seed_result_rows,
    seed_results_name,
    to_seed_results,
    to_seed_throughputs,
)

METRIC_KEYS = ("images", "accuracy", "accuracy_ci95", "macro_f1", "latency_p50_ms",
               "latency_p90_ms", "latency_p95_ms", "latency_p99_ms", "errors")
LOAD_KEYS = ("calls", "mode", "throughput_rps", "seconds_per_1000_calls", "latency_p50_ms",
             "latency_p95_ms", "errors", "retries")


def collect_runs(params: Params) -> pd.DataFrame:
    """One row per selected (service, dataset, ablation), with its status and metrics."""
    rows = []
    for svc in params.services:
        for ds in params.datasets:
            avail = read_availability(ds)
            for n in params.selected_sizes:
                row: dict = {"service": svc, "dataset": ds, "ablation": n}
                if n not in avail.available:
                    row.update(status="unavailable", reason=avail.unavailable.get(n, ""))
                    rows.append(row)
                    continue
                mfile = paths.run_metrics_json(svc, ds, n)
                if not mfile.exists():
                    row.update(status="missing", reason=f"no {mfile}")
                    rows.append(row)
                    continue
                m = read_json(mfile)
                row.update(status="ok", reason="")
                row.update({k: m.get(k) for k in METRIC_KEYS})
                row["latency_mean_ms"] = m.get("latency_mean_ms")
                row["train_seconds"] = m.get("train_seconds")
                row["latency_source"] = m.get("latency_source")
                lfile = paths.throughput_summary(svc, ds, n)
                load = read_json(lfile) if lfile.exists() else {}
                if load:
                    row.update({f"load_{k}": load.get(k) for k in LOAD_KEYS})
                    row["load_concurrency"] = load.get("concurrency")
                calls = int(m.get("images") or 0) + int(m.get("latency_calls") or 0) \
                    + int(load.get("calls") or 0)
                row.update(run_cost(svc, ds, n, params.prices.get(svc, {}), calls,
                                    load.get("throughput_rps")))
                rows.append(row)
    return pd.DataFrame(rows)


def tidy(ok: pd.DataFrame) -> pd.DataFrame:
    """The successful runs in the plots' tidy columns, CI split into two numbers."""
    frame = ok.copy()
    ci = frame["accuracy_ci95"].apply(lambda v: v if isinstance(v, list) else [None, None])
    frame["accuracy_ci95_low"] = [c[0] for c in ci]
    frame["accuracy_ci95_high"] = [c[1] for c in ci]
    frame["latency_s"] = frame["latency_mean_ms"].astype(float) / 1000
    for col in ("accuracy", "train_seconds"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame.drop(columns=["accuracy_ci95"])


def write_summary(runs: pd.DataFrame) -> None:
    summary = runs.drop(columns=["accuracy_ci95"], errors="ignore")
    if "accuracy_ci95" in runs:
        ci = runs["accuracy_ci95"].apply(lambda v: v if isinstance(v, list) else [None, None])
        at = list(summary.columns).index("accuracy") + 1
        summary.insert(at, "accuracy_ci95_low", [c[0] for c in ci])
        summary.insert(at + 1, "accuracy_ci95_high", [c[1] for c in ci])
    atomic_write_text(paths.summary_csv(), summary.to_csv(index=False))


def learning_curve_rows(ok: pd.DataFrame) -> tuple[list[str], list[list]]:
    """Wide table for `dvc plots`: ablation, then mean accuracy of each service."""
    table = plots.mean_accuracy_table(ok)
    services = sorted(table["service"].unique())
    body = []
    for n, part in table.groupby("ablation"):
        by = dict(zip(part["service"], part["mean"], strict=True))
        body.append([int(n)] + [f"{by[s]:.4f}" if s in by else "" for s in services])
    return ["ablation", *services], body


def _predictions(r) -> pd.DataFrame:
    return pd.read_csv(paths.predictions_csv(r.service, r.dataset, r.ablation), dtype=str,
                       keep_default_na=False)


def call_latencies(ok: pd.DataFrame) -> pd.DataFrame:
    """Seconds of every answered call of the scoring pass (one request at a time)."""
    frames = []
    for r in ok.itertuples():
        pred = _predictions(r)
        pred = pred[pred["error"] == ""]
        frames.append(pd.DataFrame({"service": r.service,
                                    "latency_s": pred["invoke_time"].astype(float)}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["service", "latency_s"])


def throughput_per_service(ok: pd.DataFrame) -> pd.DataFrame:
    """Seconds for 1,000 calls per service: the median over its runs' load tests."""
    col = "load_seconds_per_1000_calls"
    if col not in ok:
        return pd.DataFrame(columns=["service", "seconds_per_1000"])
    tp = ok.dropna(subset=[col]).groupby("service", sort=False)[col].median().reset_index()
    return tp.rename(columns={col: "seconds_per_1000"})


def write_seed_files(ok: pd.DataFrame, throughputs: pd.DataFrame) -> None:
    """The seed's three formats: the published table's, the throughputs' and per-run files."""
    seed = to_seed_results(ok) if not ok.empty else pd.DataFrame(columns=list(SEED_COLUMNS))
    atomic_write_text(paths.benchmark_data_csv(), seed.to_csv(index=False))
    atomic_write_text(paths.throughputs_csv(),
                      to_seed_throughputs(throughputs).to_csv(index=False))
    folder = paths.seed_results_dir()
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for r in ok.itertuples():
        atomic_write_csv(folder / seed_results_name(r.dataset, r.service, r.ablation), None,
                         seed_result_rows(_predictions(r), r.service))


def draw(ok: pd.DataFrame, published: pd.DataFrame, throughputs: pd.DataFrame
         ) -> list[html.Figure]:
    """Every figure of the report (also files under results/plots/, for `dvc plots show`), in
    the seed's order first: the averaged learning curve, then latency beside throughput.

    `published` and `throughputs` carry a `source` column: this run's and the 2023 numbers.
    """
    pdir = paths.plots_dir()
    if pdir.exists():
        shutil.rmtree(pdir)
    pdir.mkdir(parents=True)
    if ok.empty:
        return []
    mine = ok.assign(source=THIS_RUN)
    both = pd.concat([mine, published], ignore_index=True)
    figures = [
        html.Figure(plots.learning_curve(ok, pdir / "learning_curve.png",
                                         "Mean accuracy across datasets"),
                    "Learning curve, averaged over datasets",
                    "Mean accuracy across datasets (± SEM) against training images per class."),
        html.Figure(plots.latency_throughput(
                        call_latencies(ok), throughputs[throughputs["source"] == THIS_RUN],
                        pdir / "latency.png"),
                    "Latency and throughput",
                    "Left: seconds per call, one call at a time (box: quartiles, no outliers). "
                    "Right: seconds 1,000 calls took with the load test's calls in flight."),
        html.Figure(plots.learning_curves_by_dataset(ok, pdir / "learning_curve_by_dataset.png"),
                    "Learning curve of each dataset",
                    "Accuracy with its 95% bootstrap interval, per dataset."),
        html.Figure(plots.learning_curve(both, pdir / "learning_curve_vs_published.png",
                                         "This run beside the published 2023 benchmark"),
                    "This run beside the published 2023 numbers",
                    "Solid: this run; dashed: the 2023 benchmark (other datasets: beans, cars, "
                    "clothing, food, intel, pets, xrays)."),
        html.Figure(plots.latency_throughput(
                        both.dropna(subset=["latency_s"]), throughputs, pdir /
                        "latency_vs_published.png", "Mean latency per call, one value per run"),
                    "Latency and throughput beside the published 2023 numbers",
                    "Left: each run's mean seconds per call. Right: seconds for 1,000 calls "
                    "sent 10 at a time (2023) and by this run's load test."),
    ]
    largest = ok.loc[ok.groupby(["service", "dataset"])["ablation"].idxmax()]
    for r in largest.itertuples():
        pred = _predictions(r)
        pred = pred[pred["error"] == ""]
        name = f"{r.service} on {r.dataset}, {r.ablation} images/class"
        figures.append(html.Figure(plots.confusion(
            pred["actual_class"], pred["predicted_class"], read_classes(r.dataset),
            pdir / f"confusion_{r.service}_{r.dataset}_{r.ablation}.png", name),
            f"Confusion matrix: {name}"))
    return figures


def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, fmt)


def print_table(runs: pd.DataFrame) -> None:
    table = Table(title="mlbench results")
    for col in ("service", "dataset", "ablation", "accuracy", "95% CI", "macro-F1",
                "p50 ms", "p99 ms", "load req/s", "train s", "USD model", "USD/1k"):
        table.add_column(col, justify="left" if col in ("service", "dataset") else "right")
    for r in runs.to_dict("records"):
        if r["status"] != "ok":
            table.add_row(r["service"], r["dataset"], str(r["ablation"]),
                          f"[dim]{r['status']}[/dim]", "", "", "", "", "", "", "", "")
            continue
        lo, hi = r["accuracy_ci95"]
        table.add_row(r["service"], r["dataset"], str(r["ablation"]), f"{r['accuracy']:.3f}",
                      f"{lo:.3f}-{hi:.3f}", f"{r['macro_f1']:.3f}", f"{r['latency_p50_ms']:.1f}",
                      f"{r['latency_p99_ms']:.1f}", _cell(r.get("load_throughput_rps"), ".1f"),
                      _cell(r["train_seconds"], ".1f"), _cell(r.get("cost_training_usd"), ".2f"),
                      _cell(r.get("cost_per_1000_usd"), ".3f"))
    out.print(table)


def _intro(params: Params, runs: pd.DataFrame) -> str:
    ok = runs[runs["status"] == "ok"]
    parts = [f"Services: {', '.join(params.services)}. Datasets: {', '.join(params.datasets)}.",
             f"Training images per class: {', '.join(map(str, params.selected_sizes))}."]
    if not ok.empty and "images" in ok:
        per_ds = ok.groupby("dataset")["images"].max()
        parts.append("Test images: " + ", ".join(f"{d} {int(v)}" for d, v in per_ds.items()
                                                 if v == v) + ".")
    if "load_calls" in ok and ok["load_calls"].notna().any():
        first = ok.dropna(subset=["load_calls"]).iloc[0]
        parts.append(f"Load test: {int(first['load_calls'])} calls, "
                     f"{int(first['load_concurrency'])} in flight ({first['load_mode']}).")
    return html.esc(" ".join(parts))


def build_report(params: Params) -> pd.DataFrame:
    runs = collect_runs(params)
    write_metrics(runs)
    write_summary(runs)
    done = runs["status"] == "ok"
    ok = tidy(runs[done]) if done.any() else pd.DataFrame()
    header, body = learning_curve_rows(ok) if not ok.empty else (["ablation"], [])
    atomic_write_csv(paths.learning_curve_csv(), header, body)
    throughputs = throughput_per_service(ok)
    write_seed_files(ok, throughputs)

    published = read_seed_results(PUBLISHED_RESULTS).assign(source=PUBLISHED_LABEL)
    tp_both = pd.concat([throughputs.assign(source=THIS_RUN),
                         read_seed_throughputs(PUBLISHED_THROUGHPUTS).assign(
                             source=PUBLISHED_LABEL)], ignore_index=True)
    figures = draw(ok, published, tp_both)
    means = plots.mean_accuracy_table(pd.concat(
        [ok.assign(source=THIS_RUN), published] if not ok.empty else [published],
        ignore_index=True))
    page = html.write_page(paths.report_html(), title="mlbench report", intro=_intro(params, runs),
                           means=means, runs=runs, throughputs=tp_both, figures=figures)
    print_table(runs)
    missing = runs[runs["status"] == "missing"]
    if not missing.empty:
        err.print(f"[yellow]{len(missing)} selected run(s) have no results yet[/yellow]")
    for fig in figures:
        err.print(f"wrote {fig.path}")
    err.print(f"wrote {page}")
    return runs
