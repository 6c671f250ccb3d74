"""A real full disk for tests: a small tmpfs mounted on a folder.

Writes past its size fail with the kernel's own `ENOSPC`, exactly as on a full data disk, so
the code under test meets the real error (no patched `write`). Mounting needs root (as in CI
and on the project's machines); elsewhere the test is skipped with the reason.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def small_disk(folder: Path, size: str = "1m") -> Iterator[Path]:
    """`folder` as a tmpfs of `size` (e.g. "1m", "256k") for the duration of the block."""
    folder.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                            str(folder)], capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs (needs root): {mount.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "--lazy", str(folder)], check=True)
