"""In-memory zip/tar writers shaped like the real dataset archives."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from collections.abc import Iterable


def zip_bytes(entries: Iterable[tuple[str, bytes | None]]) -> bytes:
    """A zip of (name, bytes) entries; bytes None writes a folder entry (`name/`)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            info = zipfile.ZipInfo(name.rstrip("/") + "/" if data is None else name,
                                   date_time=(2020, 9, 13, 12, 26, 40))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data or b"")
    return buf.getvalue()


#: Fixed timestamps make every build byte-identical, so checksum pins stay valid.
MTIME = 1_600_000_000


def tar_bytes(entries: Iterable[tuple[str, bytes | None]], compression: str = "") -> bytes:
    """A tar (`compression` "" for plain, "gz", "bz2", "xz"); bytes None writes a folder."""
    buf = io.BytesIO()
    mode = f"w:{compression}" if compression in ("bz2", "xz") else "w"
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = MTIME
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tf.addfile(info)
            else:
                info.size = len(data)
                info.mode = 0o644
                tf.addfile(info, io.BytesIO(data))
    if compression == "gz":
        return gzip.compress(buf.getvalue(), mtime=MTIME)
    return buf.getvalue()
