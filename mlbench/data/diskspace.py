"""A full disk as one line: what was being written, where, how much it needs, how much is free.

`fetch` (download, extraction) and `prepare` write gigabytes. When the disk fills up, the
`OSError` (`ENOSPC`, or `EDQUOT` for a quota) would end the run with a traceback that says
neither how much space the step needs nor on which disk; each writer knows the first (the
download its `Content-Length`, an extraction its member sizes, `prepare` its remaining source
files) and this module adds the second.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from mlbench.errors import UserError

#: The errors a full disk (or an exhausted quota) raises on write.
DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


def free_bytes(where: Path) -> int | None:
    """Free bytes on the file system holding `where` (or its nearest existing parent)."""
    for folder in (where, *where.absolute().parents):
        try:
            return shutil.disk_usage(folder).free
        except OSError:
            continue
    return None


def human(size: float | None) -> str:
    """`1536` -> `1.5 KiB`: sizes in messages, binary units."""
    if size is None:
        return "an unknown amount"
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:,.0f} {unit}" if unit == "bytes" else f"{size:,.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def disk_full(where: Path, doing: str, needed: int | None, then: str,
              detail: str = "") -> UserError:
    """The one-line error for a full disk while `doing` something in `where`.

    `needed` is what the step needs in all (None when unknown), `detail` how that was
    reckoned; `then` says what to run once there is room (every writer here resumes or
    restarts cleanly).
    """
    need = f"it needs {human(needed)}" if needed is not None else "it needs more space"
    if detail:
        need += f" ({detail})"
    return UserError(f"disk full while {doing} in {where}: {need}, {human(free_bytes(where))} "
                     f"free there; free some space and {then}")
