"""params.yaml validation: every bad value is one clear line naming the key."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from mlbench.errors import UserError
from mlbench.params import load_params, parse_params
from mlbench.project import load_checked_params, parse_checked_params

REPO = Path(__file__).resolve().parent.parent


def test_repo_params_are_valid_and_default_to_the_offline_run():
    from mlbench.services.registry import parse_settings

    p = load_checked_params(REPO / "params.yaml")
    assert p.datasets == ("digits", "animals")
    assert p.services == ("local",)
    assert p.ablations == (5, 20, 80, 320, 1280)
    assert p.ablation is None
    assert p.selected_sizes == (5, 20, 80, 320, 1280)
    assert parse_settings("local", p.section("local")).features == "efficientnet-lite0"


def test_explicit_ablation_is_added_to_the_sizes_and_selected_alone():
    p = parse_params({"ablation": 50})
    assert p.sizes == (5, 20, 50, 80, 320, 1280)
    assert p.selected_sizes == (50,)
    assert parse_params({"ablation": "20"}).selected_sizes == (20,)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"datasets": ["nope"]}, "datasets"),
        ({"datasets": []}, "datasets"),
        ({"ablations": [5, -1]}, "ablations"),
        ({"ablations": [5, 5]}, "ablations"),
        ({"ablation": "some"}, "ablation"),
        ({"ablation": 1}, "ablation"),
        ({"seed": -3}, "seed"),
        ({"val_fraction": 1.5}, "val_fraction"),
        ({"test_per_class": 0}, "test_per_class"),
        ({"services": ["azure"]}, "services"),
        ({"local": {"features": "resnet"}}, "local.features"),
        ({"local": {"featurs": "hog"}}, "local.featurs"),
        ({"local": ["hog"]}, "local"),
        ({"vertex": {"budget_milli_node_hours": 1}}, "vertex.budget_milli_node_hours"),
        ({"local": {"image_size": 8}}, "local.image_size"),
        ({"load": {"mode": "burst"}}, "load.mode"),
        ({"load": {"concurrency": 0}}, "load.concurrency"),
        ({"buckets": ["x"]}, "buckets"),
        ({"max_side": True}, "max_side"),
    ],
)
def test_bad_value_names_the_key(data, key):
    with pytest.raises(UserError) as exc:
        parse_checked_params(data)
    message = str(exc.value)
    assert f"params.yaml: {key}:" in message
    assert "\n" not in message


def test_cli_reports_a_bad_param_in_one_line_without_traceback(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"seed": "x"}))
    proc = subprocess.run(["mlbench", "ablate", "digits"], cwd=tmp_path, capture_output=True,
                          text=True)
    assert proc.returncode == 2
    assert "params.yaml: seed: must be a non-negative integer" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_broken_yaml_is_a_user_error(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("datasets: [digits\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_params(f)


def test_service_settings_blocks_read_the_same_way():
    from mlbench.params import SettingsBlock

    with pytest.raises(UserError, match=r"^params.yaml: nyckel.tokn: unknown setting; did you mean "
                                        r"'token'\? use one of rps, token$"):
        SettingsBlock("nyckel", {"tokn": 1}, ["token", "rps"])
    block = SettingsBlock("vertex", {"rps": 0, "on": "yes", "n": 2.5, "ids": [1]},
                          ["rps", "on", "n", "ids", "name"])
    with pytest.raises(UserError, match=r"vertex.rps: must be a number in \(0, 25\], got 0"):
        block.number("rps", None, 0, 25, lo_open=True)
    with pytest.raises(UserError, match="vertex.on: must be true or false, got 'yes'"):
        block.boolean("on", False)
    with pytest.raises(UserError, match="vertex.n: must be an integer >= 1, got 2.5"):
        block.number("n", None, 1, integer=True)
    with pytest.raises(UserError, match="vertex.ids: must map dataset -> id"):
        block.mapping("ids", "dataset -> id")
    assert block.text("name", "mlbench") == "mlbench"
    assert block.number("missing", 3, 1, 5) == 3.0


def test_hand_given_resources_are_read_in_one_shape_for_every_service():
    from mlbench.params import SettingsBlock

    block = SettingsBlock("svc", {"endpoints": {"beans": {5: "e1", "20": " e2 "}}}, ["endpoints"])
    assert block.per_ablation("endpoints", "endpoint id") == {"beans": {5: "e1", 20: "e2"}}
    for bad, where in (({"beans": "e1"}, "svc.endpoints.beans:"),
                       ({"beans": {"five": "e1"}}, "svc.endpoints.beans: ablation sizes"),
                       ({"beans": {5: ""}}, "svc.endpoints.beans.5: must be a valid endpoint id"),
                       ({"beans": {5: "x"}}, "svc.endpoints.beans.5:")):
        with pytest.raises(UserError, match=f"^params.yaml: {where}"):
            SettingsBlock("svc", {"endpoints": bad}, ["endpoints"]).per_ablation(
                "endpoints", "endpoint id", check=lambda v: v != "x")


def test_a_disabled_services_block_is_still_validated():
    """A typo in a block not (yet) in `services:` must not wait for the day it is enabled."""
    with pytest.raises(UserError, match="^params.yaml: nyckel.rps:"):
        parse_checked_params({"services": ["local"], "nyckel": {"rps": 1000}})



@pytest.mark.parametrize(("data", "message"), [
    ({"ablaton": 500}, "ablaton: unknown key; did you mean 'ablation'?"),
    ({"local": {"featurs": "hog"}}, "local.featurs: unknown setting; did you mean 'features'?"),
    ({"load": {"typo": 1}}, "load.typo: unknown key; use one of"),
    ({"load": {"concurency": 4}}, "load.concurency: unknown key; did you mean 'concurrency'?"),
    ({"buckets": {"gogle": "b"}}, "buckets.gogle: unknown key; did you mean 'google'?"),
    ({"sources": {"digits": {"urll": "http://x"}}}, "sources.digits.urll: unknown key"),
    ({"sources": {"fod": {"url": "http://x"}}}, "sources.fod: unknown key; did you mean 'food'?"),
    ({"evaluate": {"retry_error": False}}, "evaluate.retry_error: unknown key; did you mean"),
    ({"services": ["rekognitoin"]}, "services: unknown name 'rekognitoin'; did you mean "
                                    "'rekognition'?"),
])
def test_unknown_keys_anywhere_name_the_nearest_valid_key(data, message):
    """A typo must never be silently ignored (`ablaton: 500` once ran as "up to date")."""
    with pytest.raises(UserError) as exc:
        parse_checked_params(data)
    assert str(exc.value).startswith(f"params.yaml: {message}")
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(("text", "message"), [
    ("seed: 1\nablation: 20\nseed: 2\n", "line 3: duplicate key 'seed' (first on line 1)"),
    ("load:\n  calls: 5\n  calls: 6\n", "line 3: duplicate key 'calls' (first on line 2)"),
    ("load: {timeout: .inf}\n", "load.timeout: must be a finite number, got inf"),
    ("val_fraction: .nan\n", "val_fraction: must be a finite number"),
    ("local: {image_size: .inf}\n", "local.image_size: must be an integer"),
    ("seed: 1\ndatasets: [digits\n", "is not valid YAML"),
])
def test_duplicate_keys_and_non_finite_numbers_are_refused(tmp_path, text, message):
    f = tmp_path / "params.yaml"
    f.write_text(text)
    with pytest.raises(UserError) as exc:
        load_checked_params(f)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_params_that_are_not_utf8_are_one_line(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_bytes("seed: 0\n# caf\u00e9\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"params.yaml: not UTF-8 text \(byte 0xe9 at offset "
                                        r"13\); save it as UTF-8"):
        load_params(f)


def test_evaluate_block_defaults_to_retrying_error_rows():
    assert parse_checked_params({}).evaluate.retry_errors is True
    assert parse_checked_params({"evaluate": {"retry_errors": False}}).evaluate.retry_errors \
        is False
    with pytest.raises(UserError, match="evaluate.retry_errors: must be true or false"):
        parse_checked_params({"evaluate": {"retry_errors": "no"}})
