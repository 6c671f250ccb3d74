"""Shared by the seed-compatible scripts: run one `mlbench` command with the script's argv.

The seed benchmark was driven by `python <script>.py <dataset>`; these scripts keep those
commands working as thin wrappers, so there is one implementation (the `mlbench` CLI).
"""

from __future__ import annotations

import os
import subprocess
import sys


def mlbench(*command: str) -> None:
    """`mlbench <command> <script args>`; exits with its status."""
    from mlbench.cli import app

    app(args=[*command, *sys.argv[1:]], prog_name=os.path.basename(sys.argv[0]))


def dvc_repro(*targets: str) -> None:
    """`dvc repro <targets>`, so the stages run (and are cached) exactly as in the pipeline."""
    sys.exit(subprocess.call([sys.executable, "-m", "dvc", "repro", *targets]))
