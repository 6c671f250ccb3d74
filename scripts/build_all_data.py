"""Seed-compatible: `python scripts/build_all_data.py [<dataset> ...]` builds the data stages.

Runs fetch -> prepare -> ablate -> testsets -> folders through DVC (`dvc repro`), for every
dataset in params.yaml or only the ones named, so only stale stages run.
"""

import sys

from _seed import dvc_repro

if __name__ == "__main__":
    names = sys.argv[1:]
    dvc_repro(*([f"folders@{d}" for d in names] + [f"testsets@{d}" for d in names]
                or ["folders", "testsets"]))
