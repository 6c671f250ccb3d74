"""report and render: the numbers users compare and the figures they look at."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from mlbench.errors import UserError
from mlbench.report import plots
from mlbench.report.render import render_seed_csvs
from mlbench.report.seed_format import read_seed_results

SHARED = Path(__file__).resolve().parent / "data"
REFERENCE = SHARED / "image-classification-benchmark-data.csv"
THROUGHPUTS = SHARED / "image-classification-throughputs.csv"


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_render_reproduces_the_seed_headline_numbers(tmp_path, capsys):
    runs = read_seed_results(REFERENCE)
    table = plots.mean_accuracy_table(runs)
    at5 = table[table["ablation"] == 5].set_index("service")["mean"].round(3).to_dict()
    assert at5 == {"nyckel": 0.732, "aws": 0.671, "vertex": 0.621, "huggingface": 0.561}
    written = render_seed_csvs([REFERENCE], THROUGHPUTS, tmp_path)
    assert len(written) == 6 and all(_is_png(p) for p in written)
    out = capsys.readouterr().out
    assert "0.732" in out and "0.561" in out


def test_render_refuses_a_csv_without_the_seed_columns(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("dataset,service,accuracy\nbeans,x,0.5\n")
    with pytest.raises(UserError, match="missing column"):
        read_seed_results(bad)


def test_report_collects_metrics_unavailable_sizes_and_plots(digits_copy):
    from mlbench.bench.evaluate import run_evaluation
    from mlbench.bench.load import run_load
    from mlbench.bench.train import run_training
    from mlbench.data.export import write_test_table
    from mlbench.project import parse_checked_params
    from mlbench.report.aggregate import build_report

    params = parse_checked_params({"ablations": [5, 20, 320], "local": {"features": "hog"},
                           "load": {"calls": 30, "concurrency": 3}, "test_per_class": 5})
    write_test_table("digits", 5, 0)
    run_training(params, "local", "digits")
    run_evaluation(params, "local", "digits")
    run_load(params, "local", "digits")
    runs = build_report(params)
    assert list(runs["status"]) == ["ok", "ok", "unavailable"]
    tree = json.loads(Path("results/metrics.json").read_text())
    five = tree["local"]["digits"]["5"]
    assert set(five) >= {"accuracy", "accuracy_ci95_low", "accuracy_ci95_high", "macro_f1",
                         "latency_p50_ms", "latency_p95_ms", "throughput_rps", "train_seconds"}
    assert tree["local"]["digits"]["320"] == {"status": "unavailable"}
    summary = pd.read_csv("results/summary.csv")
    assert "has only" in summary.loc[summary["ablation"] == 320, "reason"].item()
    curve = pd.read_csv("results/learning_curve.csv")
    assert list(curve.columns) == ["ablation", "local"] and list(curve["ablation"]) == [5, 20]
    seed = read_seed_results(Path("results/benchmark-data.csv"))
    assert len(seed) == 2 and seed["latency_s"].between(0, 1).all()
    for name in ("learning_curve.png", "latency.png", "confusion_local_digits_20.png"):
        assert _is_png(Path("results/plots") / name)
    # our run renders beside the published numbers
    shutil.copy(REFERENCE, "ref.csv")
    written = render_seed_csvs([Path("ref.csv"), Path("results/benchmark-data.csv")],
                               Path("results/throughputs.csv"), Path("side_by_side"))
    assert all(_is_png(p) for p in written)
