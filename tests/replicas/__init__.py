"""Tiny synthetic replicas of the real dataset archives, and a local mirror to serve them.

`python -m tests.replicas serve [--port N] [--train N --test N]` serves every replica as one
flat mirror (the layout `MLBENCH_MIRROR` expects) and prints the `sources:` params it needs,
for trying `dvc repro` on all six datasets without the internet (`--train`/`--test`: at least
that many images per class, for a ladder of ablations).
"""

from tests.replicas.builders import BUILDERS, Replica, Size, build, mirror_files
from tests.replicas.server import MirrorServer

__all__ = ["BUILDERS", "MirrorServer", "Replica", "Size", "build", "mirror_files"]
