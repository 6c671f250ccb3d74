"""Every script's and command's `--help` answers (exit 0, text, no traceback)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tests.conftest import REPO

SCRIPTS = sorted(p for p in (REPO / "scripts").glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_seed_script_answers_help(script, tmp_path):
    """`build_all_data.py --help` once answered "Stage 'folders@--help' not found"."""
    proc = subprocess.run([sys.executable, str(script), "--help"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and len(proc.stdout.strip()) > 40
    assert not list(tmp_path.iterdir())  # asking for help creates nothing


def _commands(app: typer.Typer, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    import typer.main

    group = typer.main.get_command(app)
    found: list[tuple[str, ...]] = []

    def walk(cmd, path):  # noqa: ANN001 - click commands
        found.append(path)
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, (*path, name))

    walk(group, prefix)
    return found


def test_every_mlbench_command_answers_help():
    from mlbench.cli import app

    commands = _commands(app)
    assert ("train",) in commands and ("rekognition", "stop") in commands
    assert ("local", "serve") in commands and ("check",) in commands
    runner = CliRunner()
    for path in commands:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage" in result.output, path


@pytest.mark.parametrize("name", ["../../x", "nope", "/tmp/abs", "a/b"])
def test_finding9_a_bad_dataset_name_creates_nothing(tmp_path, name):
    """`mlbench fetch ../../x` made a folder outside the project before refusing."""
    project = tmp_path / "deep" / "proj"
    project.mkdir(parents=True)
    (project / "params.yaml").write_text("datasets: [digits]\n")
    proc = subprocess.run(["mlbench", "fetch", name], cwd=project, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    created = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert created == [Path("deep"), Path("deep/proj"), Path("deep/proj/params.yaml")]


def test_finding6_unknown_service_is_exit_2_before_anything(tmp_path):
    """`mlbench evaluate nope digits` exited 0 with a warning."""
    (tmp_path / "params.yaml").write_text("datasets: [digits]\n")
    for stage in ("train", "evaluate", "load"):
        proc = subprocess.run(["mlbench", stage, "nope", "digits"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "unknown service 'nope'" in proc.stderr and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]
