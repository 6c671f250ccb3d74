"""Shared fixtures: a real project folder (repo copy + git + DVC) and a prepared `digits`.

Everything runs offline: the built-in dataset, the local service, and local fakes for vendors.
The feature cache (exported ONNX model, embeddings) is shared by the whole session through
MLBENCH_CACHE_DIR, as a user would share it between checkouts.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
# `mlbench` and `dvc` (and the stages DVC runs) come from this interpreter's environment, even
# when pytest is started without activating it.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
# No DVC usage analytics from test runs: each dvc command would start a daemon that tries to
# reach the internet (CPU on a 2-core machine, for nothing).
os.environ["DVC_NO_ANALYTICS"] = "1"
PROJECT_FILES = ("dvc.yaml", "params.yaml", ".dvcignore", "pyproject.toml")


def make_project(dest: Path, params: dict | None = None, git: bool = True) -> Path:
    """A fresh project folder: the pipeline, params and code, `git init` + `dvc init`."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        shutil.copy(REPO / name, dest / name)
    shutil.copytree(REPO / "mlbench", dest / "mlbench",
                    ignore=shutil.ignore_patterns("__pycache__"))
    if params:
        data = yaml.safe_load((dest / "params.yaml").read_text())
        data.update(params)
        (dest / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    if git:
        subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
        subprocess.run(["dvc", "init", "-q"], cwd=dest, check=True)
    return dest


def _session_dir(tmp_path_factory: pytest.TempPathFactory, name: str) -> Path:
    """A folder shared by every worker of this run (pytest-xdist gives each its own basetemp
    under one parent): the cache's files are written atomically, so workers share them safely
    and the ONNX graph is built and each image embedded once per run, not once per worker."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    path = shared / name
    path.mkdir(exist_ok=True)
    return path


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with the most `slow` tests (end-to-end `dvc repro` runs) first, each module's
    own order kept: pytest-xdist hands one module at a time to a free worker, in this order, so
    the longest modules start at once instead of after the short ones (when one worker would
    be left running the longest alone at the end)."""
    slow = Counter(item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow[item.nodeid.split("::")[0]])  # stable


@pytest.fixture(scope="session", autouse=True)
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    cache = Path(os.environ.get("MLBENCH_TEST_CACHE") or _session_dir(tmp_path_factory, "cache"))
    old = os.environ.get("MLBENCH_CACHE_DIR")
    os.environ["MLBENCH_CACHE_DIR"] = str(cache)
    yield cache
    if old is None:
        os.environ.pop("MLBENCH_CACHE_DIR", None)
    else:
        os.environ["MLBENCH_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def digits_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project with `digits` fetched, prepared, ablated and its test sets written.

    Built once per session through the stage functions (not DVC) and treated as read-only.
    """
    from mlbench.data.ablate import ablate_dataset
    from mlbench.data.export import export_all, write_test_table
    from mlbench.data.fetch import FetchContext
    from mlbench.data.prepare import prepare_dataset
    from mlbench.data.sources import get_source
    from mlbench.services.registry import export_hooks

    root = make_project(tmp_path_factory.mktemp("digits"), git=False)
    old = os.getcwd()
    os.chdir(root)
    try:
        raw = Path("data/digits/raw")
        get_source("digits").fetch(raw, FetchContext())
        prepare_dataset("digits", max_side=1024, workers=2)
        ablate_dataset("digits", (5, 20, 80, 320), seed=0, val_fraction=0.2)
        write_test_table("digits", None, 0)
        export_all("digits", {"google": "gbucket", "aws": "abucket"}, export_hooks())
    finally:
        os.chdir(old)
    return root


@pytest.fixture
def in_digits(digits_project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(digits_project)
    return digits_project


def _link_images(src: str, dst: str) -> None:
    """Hard-link the images (many, never edited in place); copy everything else, so a test
    that edits params.yaml or a CSV in its copy never edits the shared project through the
    link."""
    if Path(src).suffix.lower() in (".png", ".jpg", ".jpeg"):
        os.link(src, dst)
    else:
        shutil.copy2(src, dst)


@pytest.fixture
def digits_copy(digits_project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the prepared digits project (images hard-linked), as the cwd."""
    dest = tmp_path / "proj"
    shutil.copytree(digits_project, dest, copy_function=_link_images,
                    ignore=shutil.ignore_patterns("results", "__pycache__"))
    monkeypatch.chdir(dest)
    return dest
