"""`report` stage: every run of the selected services x datasets x ablations, in one place.

Writes `results/metrics.json` (service -> dataset -> ablation -> metrics, for `dvc metrics show`
and `dvc metrics diff`), `results/summary.csv` (one row a run, unavailable sizes included with
the reason), `results/learning_curve.csv` (DVC plot data), `results/benchmark-data.csv` and
`results/throughputs.csv` (the seed's formats, for `mlbench render` beside the published
numbers), and the figures under `results/plots/`.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from rich.table import Table

from mlbench import paths
from mlbench.console import err, out
from mlbench.data.ablate import read_availability
from mlbench.data.prepare import read_classes
from mlbench.io import atomic_write_csv, atomic_write_json, read_json
from mlbench.params import Params
from mlbench.report import plots
from mlbench.report.seed_format import to_seed_results

METRIC_KEYS = ("accuracy", "accuracy_ci95", "macro_f1", "latency_p50_ms", "latency_p95_ms",
               "latency_p99_ms", "errors")
LOAD_KEYS = ("throughput_rps", "seconds_per_1000_calls", "latency_p50_ms", "latency_p95_ms",
             "errors", "retries")


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
                lfile = paths.throughput_summary(svc, ds, n)
                if lfile.exists():
                    load = read_json(lfile)
                    row.update({f"load_{k}": load.get(k) for k in LOAD_KEYS})
                    row["load_concurrency"] = load.get("concurrency")
                rows.append(row)
    return pd.DataFrame(rows)


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def metrics_tree(runs: pd.DataFrame) -> dict:
    tree: dict = {}
    for r in runs.to_dict("records"):
        node = tree.setdefault(r["service"], {}).setdefault(r["dataset"], {})
        if r["status"] != "ok":
            node[str(r["ablation"])] = {"status": r["status"]}
            continue
        lo, hi = r["accuracy_ci95"] or (None, None)
        node[str(r["ablation"])] = {k: _clean(v) for k, v in {
            "accuracy": r["accuracy"], "accuracy_ci95_low": lo, "accuracy_ci95_high": hi,
            "macro_f1": r["macro_f1"], "latency_p50_ms": r["latency_p50_ms"],
            "latency_p95_ms": r["latency_p95_ms"],
            "throughput_rps": r.get("load_throughput_rps"),
            "train_seconds": r["train_seconds"], "errors": r["errors"],
        }.items()}
    return tree


def learning_curve_rows(runs: pd.DataFrame) -> tuple[list[str], list[list]]:
    """Wide table for `dvc plots`: ablation, then mean accuracy of each service."""
    table = plots.mean_accuracy_table(runs)
    services = sorted(table["service"].unique())
    body = []
    for n, part in table.groupby("ablation"):
        by = dict(zip(part["service"], part["mean"], strict=True))
        body.append([int(n)] + [f"{by[s]:.4f}" if s in by else "" for s in services])
    return ["ablation", *services], body


def call_latencies(ok: pd.DataFrame) -> pd.DataFrame:
    frames = []
    for r in ok.itertuples():
        pred = pd.read_csv(paths.predictions_csv(r.service, r.dataset, r.ablation),
                           keep_default_na=False, dtype={"error": str})
        pred = pred[pred["error"] == ""]
        frames.append(pd.DataFrame({"service": r.service,
                                    "latency_ms": pred["invoke_time"].astype(float) * 1000}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["service", "latency_ms"])


def draw(runs: pd.DataFrame) -> list[Path]:
    ok = runs[runs["status"] == "ok"].copy()
    if ok.empty:
        return []
    pdir = paths.plots_dir()
    written = [plots.learning_curve(ok, pdir / "learning_curve.png")]
    load = ok.dropna(subset=["load_latency_p50_ms"]) if "load_latency_p50_ms" in ok else ok[:0]
    load_frame = pd.DataFrame({"service": load["service"],
                               "latency_p50_ms": load.get("load_latency_p50_ms"),
                               "latency_p95_ms": load.get("load_latency_p95_ms"),
                               "concurrency": load.get("load_concurrency")})
    written.append(plots.latency_panel(call_latencies(ok), load_frame,
                                       pdir / "latency.png"))
    largest = ok.loc[ok.groupby(["service", "dataset"])["ablation"].idxmax()]
    for r in largest.itertuples():
        pred = pd.read_csv(paths.predictions_csv(r.service, r.dataset, r.ablation), dtype=str,
                           keep_default_na=False)
        pred = pred[pred["error"] == ""]
        written.append(plots.confusion(
            pred["actual_class"], pred["predicted_class"], read_classes(r.dataset),
            pdir / f"confusion_{r.service}_{r.dataset}_{r.ablation}.png",
            f"{r.service} on {r.dataset}, {r.ablation} images/class"))
    return written


def print_table(runs: pd.DataFrame) -> None:
    table = Table(title="mlbench results")
    for col in ("service", "dataset", "ablation", "accuracy", "95% CI", "macro-F1",
                "p50 ms", "p95 ms", "load req/s", "train s"):
        table.add_column(col, justify="left" if col in ("service", "dataset") else "right")
    for r in runs.to_dict("records"):
        if r["status"] != "ok":
            table.add_row(r["service"], r["dataset"], str(r["ablation"]),
                          f"[dim]{r['status']}[/dim]", "", "", "", "", "", "")
            continue
        lo, hi = r["accuracy_ci95"]
        rps = r.get("load_throughput_rps")
        table.add_row(r["service"], r["dataset"], str(r["ablation"]), f"{r['accuracy']:.3f}",
                      f"{lo:.3f}-{hi:.3f}", f"{r['macro_f1']:.3f}", f"{r['latency_p50_ms']:.1f}",
                      f"{r['latency_p95_ms']:.1f}",
                      f"{rps:.1f}" if rps is not None and not pd.isna(rps) else "-",
                      f"{r['train_seconds']:.1f}" if r["train_seconds"] is not None else "-")
    out.print(table)


def build_report(params: Params) -> pd.DataFrame:
    runs = collect_runs(params)
    atomic_write_json(paths.metrics_json(), metrics_tree(runs))
    summary = runs.drop(columns=["accuracy_ci95"], errors="ignore")
    if "accuracy_ci95" in runs:
        ci = runs["accuracy_ci95"].apply(lambda v: v if isinstance(v, list) else [None, None])
        summary.insert(5, "accuracy_ci95_low", [c[0] for c in ci])
        summary.insert(6, "accuracy_ci95_high", [c[1] for c in ci])
    paths.summary_csv().parent.mkdir(parents=True, exist_ok=True)
    summary.to_csv(paths.summary_csv(), index=False)
    ok = runs[runs["status"] == "ok"].copy()
    header, body = learning_curve_rows(ok) if not ok.empty else (["ablation"], [])
    atomic_write_csv(paths.learning_curve_csv(), header, body)
    if not ok.empty:
        ok["latency_s"] = ok["latency_mean_ms"] / 1000
        to_seed_results(ok).to_csv(paths.RESULTS / "benchmark-data.csv", index=False)
        if "load_seconds_per_1000_calls" in ok:
            tp = ok.groupby("service")["load_seconds_per_1000_calls"].median().reset_index()
            tp.columns = ["service", "throughput"]
            tp.to_csv(paths.RESULTS / "throughputs.csv", index=False)
    written = draw(runs)
    print_table(runs)
    missing = runs[runs["status"] == "missing"]
    if not missing.empty:
        err.print(f"[yellow]{len(missing)} selected run(s) have no results yet[/yellow]")
    for p in written:
        err.print(f"wrote {p}")
    return runs
