"""What a run cost: training hours, deployed hours and calls times `prices:` in params.yaml."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from mlbench import paths
from mlbench.core import ModelRef
from mlbench.report.cost import run_cost, training_hours
from mlbench.services.cloud import Deployment


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _model(tmp_path: Path, **fields) -> None:
    ModelRef("vertex", "beans", 20, **fields).save(paths.model_json("vertex", "beans", 20))


def test_training_is_priced_by_the_hours_the_vendor_bills_not_the_wall_time(in_tmp):
    _model(in_tmp, train_seconds=7200.0, details={"billable_training_hours": 8.0})
    cost = run_cost("vertex", "beans", 20, {"training_hour": 3.465}, 1000, None)
    # Vertex bills node hours (8 here) for a pipeline that ran 2 hours of wall time
    assert cost["training_hours"] == 8.0
    assert cost["cost_training_usd"] == pytest.approx(27.72)


def test_without_a_billed_figure_the_wall_time_is_priced(in_tmp):
    _model(in_tmp, train_seconds=1800.0)
    assert training_hours(ModelRef.load(paths.model_json("vertex", "beans", 20))) == 0.5
    cost = run_cost("vertex", "beans", 20, {"training_hour": 2.0}, 0, None)
    assert cost["cost_training_usd"] == pytest.approx(1.0)


def test_deployed_hours_come_from_the_runs_deployment_record(in_tmp):
    _model(in_tmp, train_seconds=60.0)
    record = Deployment(paths.deployment_file("vertex", "beans", 20))
    record.up("projects/p/locations/l/endpoints/1")
    since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)
    record.update(since=since.isoformat(timespec="seconds"))
    record.down()
    cost = run_cost("vertex", "beans", 20, {"deployed_hour": 1.375}, 0, None)
    assert cost["deployed_hours"] == pytest.approx(3, abs=0.01)
    assert cost["cost_deployed_usd"] == pytest.approx(4.125, abs=0.02)


def test_every_billed_unit_is_paid_for(in_tmp):
    """Two Rekognition inference units running an hour bill two inference-unit hours, and a
    busy endpoint's predictions cost twice as much as on one unit at the same rate."""
    _model(in_tmp, train_seconds=60.0)
    record = Deployment(paths.deployment_file("vertex", "beans", 20))
    record.up("arn:model", units=2)
    since = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    record.update(since=since.isoformat(timespec="seconds"))
    record.down()
    cost = run_cost("vertex", "beans", 20, {"deployed_hour": 4.0}, 0, 10.0)
    assert cost["deployed_hours"] == pytest.approx(1, abs=0.01)
    assert cost["cost_deployed_usd"] == pytest.approx(8.0, abs=0.02)
    assert cost["cost_per_1000_usd"] == pytest.approx(2 * 4.0 * 1000 / 36000)
    # up again on one unit for half an hour: 2 + 0.5 unit-hours in all
    record.up("arn:model", units=1)
    half = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=30)
    record.update(since=half.isoformat(timespec="seconds"))
    assert record.unit_seconds() / 3600 == pytest.approx(2.5, abs=0.01)


def test_a_missing_price_leaves_the_figure_empty_never_zero(in_tmp):
    _model(in_tmp, train_seconds=60.0)
    cost = run_cost("vertex", "beans", 20, {}, 500, 10.0)
    assert cost["cost_training_usd"] is None
    assert cost["cost_deployed_usd"] is None
    assert cost["cost_per_1000_usd"] is None
    assert cost["calls"] == 500


@given(per_hour=st.floats(0.01, 100), rps=st.floats(0.01, 1000),
       per_call=st.one_of(st.none(), st.floats(0, 10)))
def test_the_price_of_1000_predictions_is_an_hour_spread_over_what_it_answers(
        per_hour, rps, per_call):
    prices = {"deployed_hour": per_hour}
    if per_call is not None:
        prices["per_1000_calls"] = per_call
    cost = run_cost("nowhere", "nothing", 1, prices, 0, rps)
    answered_per_hour = rps * 3600
    expected = per_hour / answered_per_hour * 1000 + (per_call or 0.0)
    assert cost["cost_per_1000_usd"] == pytest.approx(expected)
    # twice the throughput never costs more per prediction
    faster = run_cost("nowhere", "nothing", 1, prices, 0, rps * 2)["cost_per_1000_usd"]
    assert faster <= cost["cost_per_1000_usd"] + 1e-12


def test_the_report_puts_cost_in_summary_csv_and_the_page(digits_copy):
    from mlbench.bench.evaluate import run_evaluation
    from mlbench.bench.train import run_training
    from mlbench.project import parse_checked_params
    from mlbench.report.aggregate import build_report

    data = yaml.safe_load(Path("params.yaml").read_text())
    data.update(datasets=["digits"], services=["local"], ablation=5,
                local={"features": "hog"}, latency={"samples": 20},
                prices={"local": {"training_hour": 36.0, "per_1000_calls": 0.5}})
    params = parse_checked_params(data)
    [model] = run_training(params, "local", "digits")
    run_evaluation(params, "local", "digits")
    build_report(params)
    [row] = list(csv.DictReader(paths.summary_csv().open()))
    assert float(row["cost_training_usd"]) == pytest.approx(model.train_seconds / 100, rel=1e-3)
    # no load test ran: no throughput, so only the per-call price counts
    assert float(row["cost_per_1000_usd"]) == pytest.approx(0.5)
    # the test set plus the single-stream pass
    assert int(row["calls"]) == int(row["images"]) + 20
    page = paths.report_html().read_text()
    assert "USD per 1,000 predictions" in page and "0.500" in page
