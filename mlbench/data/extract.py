"""Safe, bounded, once-only extraction of dataset archives, and helpers to find things in it.

Archives come from the internet or a mirror, so every member is checked before a byte of it
is written: absolute paths, `..` components, anything resolving outside the target, links
(tar symlinks and hard links, zip symlinks), special files and names longer than the file
system allows are refused with a `UserError` naming the member. Members are written by this
module (never `extractall`), into a staging folder inside the target that is moved into place
only when the whole archive is good, so a refused or interrupted extraction leaves nothing
behind and nothing ever lands outside the target.

An archive may not expand without bound (`ExtractLimits`): more members than `max_members`,
more bytes than `max_bytes`, or more than `max_ratio` times its own size (once past
`RATIO_FLOOR`) is refused before the member that would cross the line is written, naming the
limit and the `sources.<ds>` key that raises it. A zip is checked whole from its directory
before anything is written; a tar member by member, from its header, as the stream goes.

A damaged archive raises `DamagedArchive`; a full disk one line saying how much the archive
needs where (`diskspace.disk_full`).

An extraction is recorded in a marker file beside the archive (its sha256 when known, else
its size and mtime, plus the top-level entries it produced); a later run with the same
archive and those entries still present skips the work.
"""

from __future__ import annotations

import bz2
import errno
import gzip
import json
import lzma
import os
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, NoReturn

from mlbench.data.diskspace import disk_full, human, is_disk_full
from mlbench.errors import UserError
from mlbench.io import atomic_write_json

ZIP_SUFFIXES = (".zip",)
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"}
)
_COPY_CHUNK = 1 << 20
#: Below this many uncompressed bytes the ratio limit does not apply: a small archive of text
#: or `.mat` files may compress 100:1 and can do no harm.
RATIO_FLOOR = 64 << 20


@dataclass(frozen=True)
class ExtractLimits:
    """How far one archive may expand. Each limit is a `sources.<ds>` key (`KEYS`), so a user
    with a trusted, unusual archive raises it in params.yaml instead of editing code.

    The defaults leave room for every dataset here (Food-101: 101,000 JPEGs, ~5 GB, ratio ~1)
    and stop a zip or tar bomb (1 MB -> 1 GiB) before it is written.
    """

    max_bytes: int = 32 << 30
    max_ratio: float = 100.0
    max_members: int = 1_000_000
    #: The dataset whose `sources.<ds>` keys set these, for the message.
    dataset: str = "<ds>"

    #: field -> the `sources.<ds>` key that sets it (validated in `fetch.check_settings`).
    KEYS = {"max_bytes": "extract_max_bytes", "max_ratio": "extract_max_ratio",
            "max_members": "extract_max_members"}


class ArchiveError(UserError):
    """An archive that cannot be extracted; `reason` is the message without the file's name
    and the advice, for callers that say it in their own words (`fetch` on a fresh download)."""

    def __init__(self, where: object, reason: str, advice: str):
        reason = " ".join(reason.split())  # one line, whatever a library's message held
        super().__init__(f"{where}: {reason}; {advice}")
        self.reason = reason


class DamagedArchive(ArchiveError):
    """The archive is truncated or corrupt (not a hostile one): fetching it again may help."""


def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(ZIP_SUFFIXES) or name.endswith(TAR_SUFFIXES)


def marker_path(archive: Path, target: Path) -> Path:
    return target / f".{archive.name}.extracted.json"


#: Top-level names in the target that belong to the fetch machinery, never to an archive.
_RESERVED_SUFFIXES = (".extracted.json", ".extracting", ".part", ".part.json")


def extract_archive(archive: Path, target: Path, sha256: str | None = None,
                    protected: frozenset[str] = frozenset(),
                    limits: ExtractLimits = ExtractLimits()) -> bool:
    """Extract `archive` into `target` unless already done; return True when it extracted.

    `sha256` (when the caller verified the archive) makes the up-to-date check independent of
    the file's mtime, so a re-download of the same bytes does not re-extract. `protected`
    names top-level files the archive must not overwrite (the downloaded files, the checksum
    record); the archive itself always is.
    """
    target.mkdir(parents=True, exist_ok=True)
    marker = marker_path(archive, target)
    st = archive.stat()
    stamp: dict[str, Any] = {"archive": archive.name, "sha256": sha256, "size": st.st_size,
                             "mtime_ns": None if sha256 else st.st_mtime_ns}
    previous = _read_marker(marker)
    if previous is not None and _same_stamp(previous, stamp) and all(
        (target / e).exists() for e in previous.get("entries", [])
    ):
        return False

    staging = target / f".{archive.name}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir()
        for _ in _members(archive, limits, staging, archive.name):
            pass
        entries = sorted(p.name for p in staging.iterdir())
        for name in entries:
            if name in protected or name == archive.name or name.endswith(_RESERVED_SUFFIXES):
                raise _refuse(archive, name, f"would overwrite {name} in {target}")
        marker.unlink(missing_ok=True)
        for entry in (previous or {}).get("entries", []):
            _remove(target / entry)  # what an older version of this archive left
        for name in entries:
            _merge_move(staging / name, target / name)
        atomic_write_json(marker, {**stamp, "entries": entries})
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        shutil.rmtree(staging, ignore_errors=True)  # so "free" below counts what it held
        raise disk_full(target, f"extracting {archive.name}", unpacked_size(archive),
                        "rerun the fetch (it extracts from the start)") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True


def check_archive(archive: Path, limits: ExtractLimits = ExtractLimits(),
                  name: str | None = None) -> int:
    """Read `archive` through without writing anything; return its member count.

    Every zip member is decompressed and its CRC checked; a tar is read to the end of its
    compressed stream, so gzip/bzip2/xz check their own CRC. Raises `DamagedArchive` for a
    truncated or corrupt file, `UserError` for a member `extract_archive` would refuse or a
    limit it would hit (both `ArchiveError`s). `name` is the file name that tells zip from tar
    when `archive` is a staging file (`x.zip.part`). This is what `fetch` runs on a first
    download before it records the file's sha256 as the one to expect from then on.
    """
    return sum(1 for _ in _members(archive, limits, None, name or archive.name))


def unpacked_size(archive: Path) -> int | None:
    """Total bytes of the regular files in `archive` (from its directory / headers)."""
    try:
        if archive.name.lower().endswith(ZIP_SUFFIXES):
            with zipfile.ZipFile(archive) as zf:
                return sum(i.file_size for i in zf.infolist() if not i.is_dir())
        with tarfile.open(archive, "r:*") as tf:
            return sum(m.size for m in tf if m.isfile())
    except (*_DAMAGE, ValueError):
        return None


def _read_marker(marker: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _same_stamp(old: dict[str, Any], new: dict[str, Any]) -> bool:
    keys = ("archive", "sha256", "size") if new["sha256"] else ("archive", "size", "mtime_ns")
    return all(old.get(k) == new[k] for k in keys)


# -- member checks ------------------------------------------------------------------------------
class _Budget:
    """The running totals of one archive against its `ExtractLimits`."""

    def __init__(self, archive: Path, limits: ExtractLimits):
        self.archive, self.limits = archive, limits
        self.packed = max(1, archive.stat().st_size)
        self.members = 0
        self.unpacked = 0

    def admit(self, name: str, size: int) -> None:
        """Count member `name` of `size` bytes, or refuse the archive if it crosses a limit."""
        lim = self.limits
        self.members += 1
        self.unpacked += size
        if self.members > lim.max_members:
            self._over(name, f"has more than {lim.max_members:,} members", "max_members")
        if self.unpacked > lim.max_bytes:
            self._over(name, f"expands to more than {human(lim.max_bytes)}", "max_bytes")
        if self.unpacked > RATIO_FLOOR and self.unpacked > lim.max_ratio * self.packed:
            self._over(name, f"expands to more than {lim.max_ratio:g} times its "
                             f"{human(self.packed)}", "max_ratio")

    def _over(self, name: str, what: str, field: str) -> NoReturn:
        lim = self.limits
        key = f"sources.{lim.dataset}.{ExtractLimits.KEYS[field]}"
        raise ArchiveError(self.archive.name, f"refused at member {_shown(name)}: the archive "
                           f"{what} (a zip or tar bomb? if you trust it, raise {key} in "
                           f"params.yaml, now {getattr(lim, field):g})", "nothing was extracted")


def _shown(name: str, limit: int = 80) -> str:
    """A member name for a one-line message: quoted, and cut in the middle when very long."""
    if len(name) <= limit:
        return repr(name)
    return repr(f"{name[:limit // 2]}...{name[-limit // 4:]}") + f" ({len(name)} characters)"


def safe_member_path(archive: Path, name: str, staging: Path) -> Path | None:
    """Where member `name` may be written inside `staging`; None for the archive root itself.

    Raises `UserError` for an absolute path, a drive letter, a `..` component, anything that
    would resolve outside `staging`, or a name longer than the file system allows.
    """
    clean = name.replace("\\", "/")
    if clean.startswith("/") or re.match(r"^[A-Za-z]:", clean):
        raise _refuse(archive, name, "absolute path")
    parts = [p for p in PurePosixPath(clean).parts if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(archive, name, "'..' path component")
    if not parts:
        return None
    name_max, path_max = _name_limits(staging)
    longest = max(parts, key=lambda p: len(os.fsencode(p)))
    if len(os.fsencode(longest)) > name_max:
        raise _refuse(archive, name, f"a name of {len(os.fsencode(longest))} bytes; this file "
                                     f"system allows {name_max}")
    dest = staging.joinpath(*parts)
    if len(os.fsencode(dest.absolute())) >= path_max:
        raise _refuse(archive, name, f"path longer than this file system's {path_max} bytes")
    root = staging.resolve()
    if not dest.resolve().is_relative_to(root):
        raise _refuse(archive, name, "path escapes the target folder")
    return dest


def _name_limits(folder: Path) -> tuple[int, int]:
    """NAME_MAX and PATH_MAX of the file system holding `folder` (255 and 4096 if unknown)."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX"), os.pathconf(folder, "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):
        return 255, 4096


def _refuse(archive: Path, member: str, why: str) -> ArchiveError:
    return ArchiveError(archive.name, f"refused unsafe archive member {_shown(member)} ({why})",
                        f"nothing was extracted; delete {archive} and check its source")


# -- reading (and, with a staging folder, writing) every member ---------------------------------
def _members(archive: Path, limits: ExtractLimits, staging: Path | None,
             name: str) -> Iterator[str]:
    """Each member's name once it is checked (and written, when `staging` is given)."""
    if name.lower().endswith(ZIP_SUFFIXES):
        yield from _zip_members(archive, limits, staging)
    else:
        yield from _tar_members(archive, limits, staging)


def _zip_members(archive: Path, limits: ExtractLimits, staging: Path | None) -> Iterator[str]:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise DamagedArchive(archive, f"not a valid zip ({exc})",
                             "delete it and fetch again") from None
    with zf:
        budget = _Budget(archive, limits)
        planned = []
        for info in zf.infolist():  # check every member before writing anything
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise _refuse(archive, info.filename, "symbolic link")
            dest = safe_member_path(archive, info.filename, staging or _SCRATCH)
            budget.admit(info.filename, 0 if info.is_dir() else info.file_size)
            planned.append((info, dest))
        try:
            for info, dest in planned:
                if dest is not None and staging is not None:
                    if info.is_dir():
                        dest.mkdir(parents=True, exist_ok=True)
                    else:
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        with zf.open(info) as src:
                            _write(src, dest, archive, info.filename)
                elif not info.is_dir():
                    with zf.open(info) as src:  # decompress and check the CRC, write nothing
                        while src.read(_COPY_CHUNK):
                            pass
                yield info.filename
        except _DAMAGE as exc:
            _damaged(archive, "zip", exc)


def _tar_members(archive: Path, limits: ExtractLimits, staging: Path | None) -> Iterator[str]:
    # r:* detects compression from the content: Oxford Pets' `.tar.gz` files are plain tar.
    try:
        tf = tarfile.open(archive, "r:*")  # noqa: SIM115 - closed by the `with` below
    except (tarfile.TarError, *_DAMAGE) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        raise DamagedArchive(archive, f"not a valid tar ({exc})",
                             "delete it and fetch again") from None
    with tf:
        budget = _Budget(archive, limits)
        try:
            for member in tf:  # one streaming pass, even through gzip
                _check_tar_member(member, archive)
                dest = safe_member_path(archive, member.name, staging or _SCRATCH)
                budget.admit(member.name, member.size if member.isfile() else 0)
                if dest is not None and staging is not None:
                    _write_tar_member(tf, member, dest, archive)
                yield member.name
            if staging is None and isinstance(tf.fileobj, _COMPRESSED):
                while tf.fileobj.read(_COPY_CHUNK):  # to the end: the CRC is checked there
                    pass
        except _DAMAGE as exc:
            _damaged(archive, "tar", exc)


#: The decompressors that check a CRC at the end of their stream (a plain tar has none).
_COMPRESSED = (gzip.GzipFile, bz2.BZ2File, lzma.LZMAFile)
#: Stands in for the staging folder when an archive is only checked (nothing is written).
_SCRATCH = Path(".")


def _check_tar_member(member: tarfile.TarInfo, archive: Path) -> None:
    if member.issym():
        raise _refuse(archive, member.name, f"symbolic link to {member.linkname!r}")
    if member.islnk():
        raise _refuse(archive, member.name, f"hard link to {member.linkname!r}")
    if not (member.isfile() or member.isdir()):
        raise _refuse(archive, member.name, "device, fifo or other special file")


def _write_tar_member(tf: tarfile.TarFile, member: tarfile.TarInfo, dest: Path,
                      archive: Path) -> None:
    if member.isdir():
        dest.mkdir(parents=True, exist_ok=True)
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    src = tf.extractfile(member)
    assert src is not None  # a regular file always has a data stream
    with src:
        _write(src, dest, archive, member.name)


#: What a truncated or corrupt archive raises while being read (decompressors included).
_DAMAGE = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, OSError)


def _damaged(archive: Path, kind: str, exc: BaseException) -> NoReturn:
    if isinstance(exc, OSError) and exc.errno is not None:
        raise exc  # a real filesystem problem (disk full, permissions), not a bad archive
    raise DamagedArchive(archive, f"damaged {kind} ({exc})", "delete it and fetch again") \
        from None


# -- writing ------------------------------------------------------------------------------------
def _write(src: IO[bytes], dest: Path, archive: Path, member: str) -> None:
    try:
        with dest.open("wb") as out:
            shutil.copyfileobj(src, out, _COPY_CHUNK)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:  # a limit `safe_member_path` could not know
            raise _refuse(archive, member, "name too long for this file system") from None
        raise


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _merge_move(src: Path, dest: Path) -> None:
    """Move `src` to `dest`, merging into an existing folder (two archives may share one)."""
    if src.is_dir() and dest.is_dir():
        for child in src.iterdir():
            _merge_move(child, dest / child.name)
        return
    if dest.exists():
        _remove(dest)
    src.replace(dest)


# -- navigating an extracted tree ---------------------------------------------------------------
def is_junk(path: Path, root: Path) -> bool:
    """macOS litter and hidden files (.DS_Store, ._name, __MACOSX/) below `root`."""
    rel = path.relative_to(root).parts
    return any(p.startswith(".") or p == "__MACOSX" for p in rel)


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def image_files(folder: Path, root: Path) -> list[Path]:
    """Image files directly in `folder` (by extension; decoding is `prepare`'s job), sorted."""
    if not folder.is_dir():
        return []
    return sorted(
        p for p in folder.iterdir() if p.is_file() and is_image_name(p) and not is_junk(p, root)
    )


def find_dirs(root: Path, name: str) -> list[Path]:
    """Every non-junk folder called `name` under `root`, shallowest first."""
    found = [p for p in root.rglob(name) if p.is_dir() and not is_junk(p, root)]
    return sorted(found, key=lambda p: (len(p.relative_to(root).parts), str(p)))


def find_files(root: Path, pattern: str) -> list[Path]:
    """Every non-junk file matching glob `pattern` under `root`, shallowest first."""
    found = [p for p in root.rglob(pattern) if p.is_file() and not is_junk(p, root)]
    return sorted(found, key=lambda p: (len(p.relative_to(root).parts), str(p)))
