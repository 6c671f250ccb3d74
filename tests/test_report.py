"""report and render: the numbers users compare, the figures they look at, the page they share."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from mlbench.errors import UserError
from mlbench.report import plots
from mlbench.report.render import labelled, read_labelled_results, render_seed_csvs
from mlbench.report.seed_format import (
    PUBLISHED_RESULTS,
    PUBLISHED_THROUGHPUTS,
    elapsed_text,
    read_seed_results,
)
from tests.conftest import _link_images, make_project

SHARED = Path(__file__).resolve().parent / "data"
REFERENCE = SHARED / "image-classification-benchmark-data.csv"
THROUGHPUTS = SHARED / "image-classification-throughputs.csv"
GIT = ["git", "-c", "user.name=mlbench test", "-c", "user.email=test@mlbench.local"]


def _is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0, f"{' '.join(cmd)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


# --- render: the seed's CSVs ----------------------------------------------------------------

def test_render_reproduces_the_seed_headline_numbers(tmp_path, capsys):
    runs = read_seed_results(REFERENCE)
    table = plots.mean_accuracy_table(runs)
    at5 = table[table["ablation"] == 5].set_index("service")["mean"].round(3).to_dict()
    # the seed's `aws` is the project's `rekognition`
    assert at5 == {"nyckel": 0.732, "rekognition": 0.671, "vertex": 0.621, "huggingface": 0.561}
    written = render_seed_csvs([REFERENCE], THROUGHPUTS, tmp_path)
    assert len(written) == 5 and all(_is_png(p) for p in written)
    out = capsys.readouterr().out
    assert "0.732" in out and "0.561" in out and "published 2023" in out


def test_render_refuses_a_csv_without_the_seed_columns(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("dataset,service,accuracy\nbeans,x,0.5\n")
    with pytest.raises(UserError, match="missing column"):
        read_seed_results(bad)


def test_the_published_numbers_ship_with_the_package_unchanged():
    assert PUBLISHED_RESULTS.read_bytes() == REFERENCE.read_bytes()
    assert PUBLISHED_THROUGHPUTS.read_bytes() == THROUGHPUTS.read_bytes()


def test_render_draws_published_and_own_numbers_apart_with_one_name_per_service(tmp_path,
                                                                                 capsys):
    """Finding: render averaged a service's published and own numbers into one line, and drew
    `aws` and `rekognition` as two services."""
    mine = pd.read_csv(REFERENCE)
    mine = mine[mine["service"] == "aws"].assign(service="rekognition")
    mine["accuracy (%)"] = 0.5
    (tmp_path / "mine.csv").write_text(mine.to_csv(index=False))
    runs = read_labelled_results([REFERENCE, tmp_path / "mine.csv"])
    assert sorted(runs["service"].unique()) == ["huggingface", "nyckel", "rekognition",
                                                "vertex"]
    means = plots.mean_accuracy_table(runs)
    rek = means[(means["service"] == "rekognition") & (means["ablation"] == 5)]
    assert dict(zip(rek["source"], rek["mean"].round(3), strict=True)) == {
        "published 2023": 0.671, "this run": 0.5}
    written = render_seed_csvs([REFERENCE, tmp_path / "mine.csv"],
                               [THROUGHPUTS], tmp_path / "figs")
    assert all(_is_png(p) for p in written)
    out = capsys.readouterr().out
    assert "this run" in out and "published 2023" in out


def test_render_labels_inputs_by_source(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    shutil.copy(REFERENCE, tmp_path / "copy.csv")
    for p in (a, b):
        p.write_text("dataset,service,ablation,training times (s),accuracy (%),latency (s)\n"
                     "digits,hg,5,1,0.5,0.1\n")
    assert [lbl for lbl, _ in labelled([tmp_path / "copy.csv", a])] == ["published 2023",
                                                                        "this run"]
    assert [lbl for lbl, _ in labelled([a, b])] == [str(a), str(b)]
    assert labelled([Path(f"hog={a}")]) == [("hog", a)]
    assert set(read_labelled_results([a])["service"]) == {"huggingface"}
    with pytest.raises(UserError, match="not found"):
        read_labelled_results([tmp_path / "nope.csv"])


def test_seed_elapsed_times_read_back_as_the_seed_reads_them():
    for seconds in (0.123456, 1.0, 9.5, 0.000001):
        text = elapsed_text(seconds)
        assert text.startswith("0:00:0") and len(text) == 14
        assert float(text[-8:-1]) == pytest.approx(seconds, abs=1e-5)  # get_results.py's read


# --- report: one real run of the local service --------------------------------------------

@pytest.fixture(scope="module")
def reported(digits_project: Path, tmp_path_factory: pytest.TempPathFactory):
    """A private copy of the prepared digits project after train/evaluate/load (HOG features,
    sizes 5, 20 and 320, which digits cannot give) and `build_report`; also a git + DVC repo."""
    from mlbench.bench.evaluate import run_evaluation
    from mlbench.bench.load import run_load
    from mlbench.bench.train import run_training
    from mlbench.data.export import write_test_table
    from mlbench.project import parse_checked_params
    from mlbench.report.aggregate import build_report

    root = tmp_path_factory.mktemp("reported") / "proj"
    shutil.copytree(digits_project, root, copy_function=_link_images,
                    ignore=shutil.ignore_patterns("results", "__pycache__"))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        params = parse_checked_params({
            "ablations": [5, 20, 320], "local": {"features": "hog"},
            "load": {"calls": 30, "concurrency": 3}, "test_per_class": 5})
        write_test_table("digits", 5, 0)
        run_training(params, "local", "digits")
        run_evaluation(params, "local", "digits")
        run_load(params, "local", "digits")
        runs = build_report(params)
    (root / ".gitignore").write_text("/data/\n/results/runs/\n")
    run(["git", "init", "-q"], root)
    run(["dvc", "init", "-q"], root)
    return root, runs


def test_report_collects_metrics_unavailable_sizes_and_plots(reported, monkeypatch):
    root, runs = reported
    monkeypatch.chdir(root)
    assert list(runs["status"]) == ["ok", "ok", "unavailable"]
    per_run = json.loads(Path("results/metrics/local-digits.json").read_text())
    assert list(per_run) == ["acc@0005", "acc@0020", "acc@0320"]
    assert per_run["acc@0320"] == "unavailable"
    assert per_run["acc@0005"] == round(runs.loc[0, "accuracy"], 4)
    mean = json.loads(Path("results/mean-accuracy/local.json").read_text())
    assert mean == per_run  # one dataset: its mean is itself
    summary = pd.read_csv("results/summary.csv")
    assert "has only" in summary.loc[summary["ablation"] == 320, "reason"].item()
    five = summary[summary["ablation"] == 5].iloc[0]
    for col in ("accuracy", "accuracy_ci95_low", "accuracy_ci95_high", "macro_f1",
                "latency_p50_ms", "latency_p95_ms", "load_throughput_rps", "train_seconds"):
        assert five[col] == five[col], col  # present, not NaN
    curve = pd.read_csv("results/learning_curve.csv")
    assert list(curve.columns) == ["ablation", "local"] and list(curve["ablation"]) == [5, 20]
    for name in ("learning_curve.png", "learning_curve_by_dataset.png",
                 "learning_curve_vs_published.png", "latency.png", "latency_vs_published.png",
                 "confusion_local_digits_20.png"):
        assert _is_png(Path("results/plots") / name), name
    # our run renders beside the published numbers
    written = render_seed_csvs([REFERENCE, Path("results/benchmark-data.csv")],
                               [Path("results/throughputs.csv")], Path("side_by_side"))
    assert all(_is_png(p) for p in written)


def test_report_writes_the_seeds_result_files(reported, monkeypatch):
    """Finding: results were not where or how the seed wrote them."""
    root, runs = reported
    monkeypatch.chdir(root)
    seed = read_seed_results(Path("results/benchmark-data.csv"))
    assert len(seed) == 2 and seed["latency_s"].between(0, 1).all()
    assert Path("results/benchmark-data.csv").read_text().splitlines()[0] == (
        "dataset,service,ablation,training times (s),accuracy (%),latency (s)")
    tp = Path("results/throughputs.csv").read_text().splitlines()
    assert tp[0] == "service,throughput" and tp[1].startswith("local,") and len(tp) == 2
    assert sorted(p.name for p in Path("results/seed").iterdir()) == [
        "digits-local-results-20.csv", "digits-local-results-5.csv"]
    for n in (5, 20):
        with open(f"results/seed/digits-local-results-{n}.csv", newline="") as fh:
            rows = list(csv.reader(fh))
        assert len(rows) == 50 and all(len(r) == 5 for r in rows)  # no header, 5 columns
        # the seed's get_results.py: accuracy = row[1] == row[2]; latency = float(row[4])
        acc = sum(r[1] == r[2] for r in rows) / len(rows)
        assert acc == pytest.approx(runs.loc[runs["ablation"] == n, "accuracy"].item())
        assert all(0 < float(r[4]) < 5 for r in rows)
        assert {r[0] for r in rows} <= {p.name for p in Path("data/digits/test").rglob("*.png")}


def _metrics_table(root: Path) -> list[str]:
    lines = run(["dvc", "metrics", "show"], root).stdout.rstrip("\n").splitlines()
    assert lines, "dvc metrics show printed nothing"
    return lines


def _write_run_folders(services: list[str], datasets: list[str], sizes: list[int],
                       unavailable: dict[str, int]) -> None:
    """What train/evaluate/load leave behind, for services and datasets the offline suite
    cannot run for real: availability, classes, predictions, metrics and load summaries."""
    from mlbench import paths
    from mlbench.bench.stats import run_metrics
    from mlbench.io import atomic_write_csv, atomic_write_json

    classes = ["cat", "dog", "owl"]
    for ds in datasets:
        paths.classes_file(ds).parent.mkdir(parents=True, exist_ok=True)
        paths.classes_file(ds).write_text("\n".join(classes) + "\n")
        cut = unavailable.get(ds, 10**6)
        atomic_write_json(paths.availability_file(ds), {
            "available": [n for n in sizes if n < cut],
            "unavailable": {str(n): f"class 'owl' has only {cut - 1} training images"
                            for n in sizes if n >= cut}})
        for k, svc in enumerate(services):
            for i, n in enumerate(s for s in sizes if s < cut):
                rows = [[f"{ds}_{j}.png", classes[j % 3],
                         classes[j % 3] if j % 10 < 5 + i + k else classes[(j + 1) % 3],
                         "0.9", f"{0.05 + 0.01 * k + 0.001 * (j % 7):.6f}", 1, ""]
                        for j in range(40)]
                header = ["image", "actual_class", "predicted_class", "confidence",
                          "invoke_time", "attempts", "error"]
                atomic_write_csv(paths.predictions_csv(svc, ds, n), header, rows)
                metrics = run_metrics(pd.DataFrame(rows, columns=header))
                metrics["train_seconds"] = 10.0 * n
                atomic_write_json(paths.run_metrics_json(svc, ds, n), metrics)
                atomic_write_json(paths.throughput_summary(svc, ds, n), {
                    "calls": 100, "concurrency": 10, "mode": "batch",
                    "seconds_per_1000_calls": 20.0 + k, "throughput_rps": 50.0 - k,
                    "latency_p50_ms": 40.0, "latency_p95_ms": 90.0, "errors": 0,
                    "retries": 0})


def test_report_of_two_services_on_two_datasets(tmp_path, monkeypatch):
    """Several services and datasets: one colour and one row each, per-dataset panels, and the
    seed's names (`hg`) in the per-image files."""
    from mlbench.project import parse_checked_params
    from mlbench.report.aggregate import build_report

    monkeypatch.chdir(tmp_path)
    services, datasets = ["local", "huggingface"], ["animals", "digits"]
    _write_run_folders(services, datasets, [5, 20, 80], unavailable={"digits": 80})
    runs = build_report(parse_checked_params({"services": services, "datasets": datasets,
                                              "ablations": [5, 20, 80]}))
    assert len(runs) == 12 and (runs["status"] == "unavailable").sum() == 2
    assert sorted(p.name for p in Path("results/metrics").iterdir()) == [
        "huggingface-animals.json", "huggingface-digits.json", "local-animals.json",
        "local-digits.json"]
    mean = json.loads(Path("results/mean-accuracy/huggingface.json").read_text())
    acc = runs.set_index(["service", "dataset", "ablation"])["accuracy"]
    assert mean["acc@0005"] == round((acc["huggingface", "animals", 5]
                                      + acc["huggingface", "digits", 5]) / 2, 4)
    assert mean["acc@0080"] == round(acc["huggingface", "animals", 80], 4)  # digits cannot
    seed_files = sorted(p.name for p in Path("results/seed").iterdir())
    assert "digits-hg-results-20.csv" in seed_files and len(seed_files) == 10
    row = Path("results/seed/digits-hg-results-5.csv").read_text().splitlines()[0].split(",")
    assert row[4].startswith("0:00:00.") and len(row) == 5  # the seed's elapsed timedelta
    tp = pd.read_csv("results/throughputs.csv")
    assert dict(zip(tp["service"], tp["throughput"], strict=True)) == {"local": 20.0,
                                                                      "huggingface": 21.0}
    page = Path("results/report.html").read_text()
    results = page[page.index('id="results"'):]
    assert results[:results.index("</table>")].count("<tr") == 1 + 12
    assert page.count("<img") == 5 + 4  # 5 figures + a confusion matrix per service x dataset


def test_report_before_any_result_writes_every_output(tmp_path, monkeypatch):
    """Every output of the report stage exists even when no run has a result yet (DVC fails a
    stage that leaves an output out), and the page still shows the published numbers."""
    from mlbench import paths
    from mlbench.io import atomic_write_json
    from mlbench.project import parse_checked_params
    from mlbench.report.aggregate import build_report

    monkeypatch.chdir(tmp_path)
    atomic_write_json(paths.availability_file("digits"),
                      {"available": [5], "unavailable": {"320": "too few"}})
    runs = build_report(parse_checked_params({"ablations": [5, 320]}))
    assert list(runs["status"]) == ["missing", "unavailable"]
    assert json.loads(Path("results/metrics/local-digits.json").read_text()) == {
        "acc@0005": "missing", "acc@0320": "unavailable"}
    for out in ("plots", "summary.csv", "benchmark-data.csv", "throughputs.csv", "seed",
                "report.html", "learning_curve.csv", "mean-accuracy/local.json"):
        assert (Path("results") / out).exists(), out
    assert Path("results/throughputs.csv").read_text() == "service,throughput\n"
    page = Path("results/report.html").read_text()
    assert "published 2023" in page and "missing" in page


def test_dvc_metrics_show_is_a_narrow_table_in_numeric_order(reported):
    """Finding: `dvc metrics show` printed one row ~4,000 characters wide, ablations in string
    order (20, 320, 5, 80)."""
    root, _ = reported
    lines = _metrics_table(root)
    assert lines[0].split() == ["Path", "acc@0005", "acc@0020", "acc@0320"]
    assert [ln.split()[0] for ln in lines[1:]] == ["results/mean-accuracy/local.json",
                                                   "results/metrics/local-digits.json"]
    assert lines[2].split()[-1] == "unavailable"
    assert max(map(len, lines)) <= 120


def _fake_runs(services: list[str], datasets: list[str], sizes: list[int]) -> pd.DataFrame:
    rows = []
    for i, (svc, ds, n) in enumerate((s, d, n) for s in services for d in datasets
                                     for n in sizes):
        status = "unavailable" if n >= 1280 and ds != "food" else "ok"
        rows.append({"service": svc, "dataset": ds, "ablation": n, "status": status,
                     "accuracy": 0.5 + (i % 50) / 101 if status == "ok" else None})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("services, datasets, sizes", [
    (["local"], ["digits", "animals"], [5, 20, 80, 320, 500, 1280]),  # default + ablation=500
    (["local", "nyckel", "huggingface", "rekognition"],
     ["animals", "beans", "cars", "digits", "food", "intel"], [5, 20, 80, 320, 1280]),
])
def test_dvc_metrics_show_fits_120_columns_and_stays_a_table(tmp_path, monkeypatch, services,
                                                             datasets, sizes):
    from mlbench.report.metrics import write_metrics

    root = make_project(tmp_path / "proj")
    monkeypatch.chdir(root)
    write_metrics(_fake_runs(services, datasets, sizes))
    lines = _metrics_table(root)
    keys = [f"acc@{n:04d}" for n in sizes]
    assert lines[0].split() == ["Path", *keys]
    body = [ln.split() for ln in lines[1:]]
    assert len(body) == len(services) * (1 + len(datasets))
    assert all(len(cells) == 1 + len(sizes) for cells in body)
    assert [c[0] for c in body[:len(services)]] == [
        f"results/mean-accuracy/{s}.json" for s in sorted(services)]
    assert max(map(len, lines)) <= 120, "\n".join(lines)


README_EXP_SHOW = (  # the forms README.md gives, as a shell would pass them
    ["--only-changed", "--drop", "Created|data/|results/(runs|metrics)/"],
    ["--drop", ".*", "--keep", "Experiment|.*mean-accuracy/local.json:acc@00(05|50)"],
)


def test_dvc_exp_show_readme_forms_run(reported, tmp_path):
    """`dvc exp show` in the README's forms, on a committed baseline and the workspace that
    `dvc exp run -S ablation=50` leaves (params and metrics files of size 50 only)."""
    root, _ = reported
    proj = tmp_path / "proj"
    shutil.copytree(root, proj, symlinks=True, ignore=shutil.ignore_patterns("data"))
    run([*GIT, "add", "-A"], proj)
    run([*GIT, "commit", "-qm", "baseline"], proj)
    params = proj / "params.yaml"
    params.write_text(params.read_text().replace("ablation: all", "ablation: 50"))
    for name in ("mean-accuracy/local.json", "metrics/local-digits.json"):
        (proj / "results" / name).write_text(json.dumps({"acc@0050": 0.965}))
    changed, keep = (run(["dvc", "exp", "show", "--no-pager", *form], proj).stdout
                     for form in README_EXP_SHOW)
    assert "results/mean-accuracy/local.json:acc@0050" in changed
    assert "results/metrics/" not in changed
    assert "workspace" in keep and "0.965" in keep and "acc@0005" in keep
    assert max(len(ln.rstrip()) for ln in keep.splitlines()) <= 120
    diff = run(["dvc", "exp", "diff"], proj).stdout
    assert "acc@0050" in diff and "ablation" in diff
    assert max(map(len, diff.splitlines())) <= 120


# --- report.html in a real browser ---------------------------------------------------------

CHROMIUM = Path(os.environ.get("MLBENCH_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def test_report_html_is_self_contained(reported):
    root, _ = reported
    page = (root / "results" / "report.html").read_text()
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    for external in ("http://", "https://", "<script", "<link", "@import", "url("):
        assert external not in page, external


def test_report_html_renders_in_a_headless_browser(reported):
    """The page a user shares: every table row and figure shows in a real Chromium, and the
    page asks for nothing over the network."""
    missing = (f"no Chromium at {CHROMIUM} (Debian: apt-get install -y chromium)"
               if not CHROMIUM.exists() else None)
    try:
        from playwright import sync_api
    except ImportError:
        sync_api = None
        missing = missing or "Playwright for Python is not installed (pip install playwright)"
    if missing:
        if os.environ.get("MLBENCH_REQUIRE_BROWSER"):  # CI: a missing browser is a failure
            pytest.fail(missing)
        pytest.skip(missing)
    root, runs = reported
    url = (root / "results" / "report.html").as_uri()
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            requests: list[str] = []
            console: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: console.append(m.text))
            page.goto(url, wait_until="load")
            rows = page.locator("#results tbody tr")
            assert rows.count() == len(runs)
            assert "unavailable" in rows.nth(2).inner_text()
            first = rows.nth(0).inner_text()
            assert f"{runs.loc[0, 'accuracy']:.3f}" in first and "req/s" in first
            headline = page.locator("#headline tbody tr").all_inner_texts()
            assert any(r.startswith("local") and "this run" in r for r in headline)
            assert any("nyckel" in r and "published 2023" in r and "0.732" in r
                       for r in headline)
            tputs = page.locator("#throughputs tbody tr").all_inner_texts()
            assert len(tputs) == 5  # local this run + the four published services
            images = page.locator("img")
            assert images.count() == 6  # 5 figures + the confusion matrix of the largest run
            sizes = images.evaluate_all(
                "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])")
            assert all(done and w > 300 and h > 200 for done, w, h in sizes), sizes
            assert all(u == url or u.startswith("data:") for u in requests), requests
            assert not [m for m in console if "Refused" in m or "violat" in m], console
        finally:
            browser.close()
