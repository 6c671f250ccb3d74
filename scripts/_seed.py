"""Shared by the seed-compatible scripts: run one `mlbench` command with the script's argv.

The seed benchmark was driven by `python <script>.py <dataset>`; these scripts keep those
commands working as thin wrappers, so there is one implementation (the `mlbench` CLI).
"""

from __future__ import annotations

import os
import subprocess
import sys


def _help() -> None:
    """`--help`/`-h`: the script's own docstring (what it stands for), then exit 0."""
    if {"-h", "--help"} & set(sys.argv[1:]):
        print((sys.modules["__main__"].__doc__ or "").strip())
        sys.exit(0)


def mlbench(*commands: str) -> None:
    """`mlbench <command> <script args>` for each command in turn; exits with the first failing
    status (a seed script may stand for several stages: the seed's `create_ablations.py` also
    wrote every service's format, which is `mlbench ablate` then `mlbench export`)."""
    _help()
    import click

    from mlbench.cli import app

    for command in commands:
        try:  # without standalone mode, click returns an exit status instead of exiting
            status = app(args=[command, *sys.argv[1:]], prog_name=os.path.basename(sys.argv[0]),
                         standalone_mode=False)
        except click.ClickException as exc:
            exc.show()
            sys.exit(exc.exit_code)
        if status:
            sys.exit(status)


def dvc_repro(*targets: str) -> None:
    """`dvc repro <targets>`, so the stages run (and are cached) exactly as in the pipeline."""
    _help()
    sys.exit(subprocess.call([sys.executable, "-m", "dvc", "repro", *targets]))
