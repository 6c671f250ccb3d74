"""Seed-compatible: `python scripts/build_all_data.py [<dataset> ...]` builds the data stages.

Runs fetch -> prepare -> ablate -> testsets -> export -> folders through DVC (`dvc repro`), for
every dataset in params.yaml or only the ones named, so only stale stages run.
"""

import sys

from _seed import dvc_repro

if __name__ == "__main__":
    names = sys.argv[1:]
    dvc_repro(*([f"{stage}@{d}" for d in names for stage in ("export", "folders")]
                or ["export", "folders"]))
