"""Nothing billed stays up after a run unless asked: `mlbench teardown` and `mlbench status`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from mlbench import paths
from mlbench.errors import UserError
from mlbench.project import parse_checked_params
from mlbench.services.cloud import Deployment


def test_a_deployment_record_counts_its_hours_across_ups_and_downs(tmp_path):
    record = Deployment(tmp_path / "d.json")
    record.up("endpoint-1")
    since = dt.datetime.fromisoformat(record.get("since"))
    assert record.seconds_up(since + dt.timedelta(hours=2)) == pytest.approx(7200)
    record.update(since=(since - dt.timedelta(hours=1)).isoformat())
    record.down()
    assert not record.get("up") and record.seconds_up() == pytest.approx(3600, abs=5)
    record.up("endpoint-1")
    again = dt.datetime.fromisoformat(record.get("since"))
    assert record.seconds_up(again + dt.timedelta(minutes=30)) == pytest.approx(5400, abs=5)
    # the file survives a new process: it is what `mlbench status` reads
    assert Deployment(tmp_path / "d.json").get("resource") == "endpoint-1"


def test_status_lists_what_is_up_with_its_cost_and_teardown_tears_down_the_run(
        digits_copy, capsys):
    from mlbench.bench.teardown import billed, print_status, run_teardown
    from mlbench.bench.train import run_training

    data = yaml.safe_load(Path("params.yaml").read_text())
    data.update(datasets=["digits"], ablation=5, local={"features": "hog"},
                prices={"vertex": {"deployed_hour": 1.375}})
    params = parse_checked_params(data)
    run_training(params, "local", "digits")
    # a Vertex endpoint some run left up two hours ago
    up = Deployment(paths.deployment_file("vertex", "beans", 20))
    up.up("projects/p/locations/l/endpoints/7")
    two_hours_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    up.update(since=two_hours_ago.isoformat(timespec="seconds"))
    [row] = billed(params)
    assert (row.service, row.dataset, row.ablation) == ("vertex", "beans", 20)
    assert row.hours == pytest.approx(2, abs=0.01)
    assert row.so_far == pytest.approx(2.75, abs=0.02)
    print_status(params)
    shown = capsys.readouterr().out
    assert "endpoints/7" in shown and "1.38" in shown and "2.75" in shown
    # the local service bills nothing: its teardown says so
    assert run_teardown(params) == ["local/digits/5: nothing billed"]
    from mlbench.io import read_json

    assert read_json(paths.teardown_file())["torn_down"] == ["local/digits/5: nothing billed"]
    kept = parse_checked_params({**data, "keep_deployed": True})
    assert run_teardown(kept) == []
    assert read_json(paths.teardown_file()) == {"keep_deployed": True, "torn_down": []}


def test_prices_are_checked_like_every_other_key():
    with pytest.raises(UserError, match=r"prices.vertex.deployed_hours: unknown key; did you "
                                        r"mean 'deployed_hour'\?"):
        parse_checked_params({"prices": {"vertex": {"deployed_hours": 1}}})
    with pytest.raises(UserError, match=r"prices.vertx: unknown key; did you mean 'vertex'"):
        parse_checked_params({"prices": {"vertx": {"deployed_hour": 1}}})
    with pytest.raises(UserError, match=r"prices.vertex.deployed_hour: must be a price"):
        parse_checked_params({"prices": {"vertex": {"deployed_hour": -1}}})
