"""Safe, once-only extraction of dataset archives, and helpers to find things in the result.

Archives come from the internet or a mirror, so every member is checked before a byte of it
is written: absolute paths, `..` components, anything resolving outside the target, and links
(tar symlinks and hard links, zip symlinks) are refused with a `UserError` naming the member.
Members are written by this module (never `extractall`), into a staging folder inside the
target that is moved into place only when the whole archive is good, so a refused or
interrupted extraction leaves nothing behind and nothing ever lands outside the target.

An extraction is recorded in a marker file beside the archive (its sha256 when known, else
its size and mtime, plus the top-level entries it produced); a later run with the same
archive and those entries still present skips the work.
"""

from __future__ import annotations

import json
import lzma
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO, Any, NoReturn

from mlbench.errors import UserError
from mlbench.io import atomic_write_json

ZIP_SUFFIXES = (".zip",)
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"}
)
_COPY_CHUNK = 1 << 20


def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(ZIP_SUFFIXES) or name.endswith(TAR_SUFFIXES)


def marker_path(archive: Path, target: Path) -> Path:
    return target / f".{archive.name}.extracted.json"


#: Top-level names in the target that belong to the fetch machinery, never to an archive.
_RESERVED_SUFFIXES = (".extracted.json", ".extracting", ".part", ".part.json")


def extract_archive(archive: Path, target: Path, sha256: str | None = None,
                    protected: frozenset[str] = frozenset()) -> bool:
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
    staging.mkdir()
    try:
        if archive.name.lower().endswith(ZIP_SUFFIXES):
            _extract_zip(archive, staging)
        else:
            _extract_tar(archive, staging)
        entries = sorted(p.name for p in staging.iterdir())
        for name in entries:
            if name in protected or name == archive.name or name.endswith(_RESERVED_SUFFIXES):
                raise _refuse(archive, name, f"would overwrite {name} in {target}")
        marker.unlink(missing_ok=True)
        for entry in (previous or {}).get("entries", []):
            _remove(target / entry)  # what an older version of this archive left
        for name in entries:
            _merge_move(staging / name, target / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    atomic_write_json(marker, {**stamp, "entries": entries})
    return True


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
def safe_member_path(archive: Path, name: str, staging: Path) -> Path | None:
    """Where member `name` may be written inside `staging`; None for the archive root itself.

    Raises `UserError` for an absolute path, a drive letter, a `..` component or anything
    that would resolve outside `staging`.
    """
    clean = name.replace("\\", "/")
    if clean.startswith("/") or re.match(r"^[A-Za-z]:", clean):
        raise _refuse(archive, name, "absolute path")
    parts = [p for p in PurePosixPath(clean).parts if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(archive, name, "'..' path component")
    if not parts:
        return None
    dest = staging.joinpath(*parts)
    root = staging.resolve()
    if not dest.resolve().is_relative_to(root):
        raise _refuse(archive, name, "path escapes the target folder")
    return dest


def _refuse(archive: Path, member: str, why: str) -> UserError:
    return UserError(
        f"{archive.name}: refused unsafe archive member {member!r} ({why}); nothing was "
        f"extracted; delete {archive} and check its source"
    )


# -- zip ----------------------------------------------------------------------------------------
def _extract_zip(archive: Path, staging: Path) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as exc:
        raise UserError(f"{archive}: not a valid zip ({exc}); delete it and fetch again") from None
    with zf:
        infos = zf.infolist()
        planned = []
        for info in infos:  # check every member before writing anything
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise _refuse(archive, info.filename, "symbolic link")
            dest = safe_member_path(archive, info.filename, staging)
            if dest is not None:
                planned.append((info, dest))
        try:
            for info, dest in planned:
                if info.is_dir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src:
                    _write(src, dest)
        except _DAMAGE as exc:
            _damaged(archive, "zip", exc)


# -- tar ----------------------------------------------------------------------------------------
def _extract_tar(archive: Path, staging: Path) -> None:
    # r:* detects compression from the content: Oxford Pets' `.tar.gz` files are plain tar.
    try:
        tf = tarfile.open(archive, "r:*")  # noqa: SIM115 - closed by the `with` below
    except tarfile.TarError as exc:
        raise UserError(f"{archive}: not a valid tar ({exc}); delete it and fetch again") from None
    with tf:
        try:
            for member in tf:  # one streaming pass, even through gzip
                _extract_member(tf, member, archive, staging)
        except _DAMAGE as exc:
            _damaged(archive, "tar", exc)


def _extract_member(tf: tarfile.TarFile, member: tarfile.TarInfo, archive: Path,
                    staging: Path) -> None:
    if member.issym():
        raise _refuse(archive, member.name, f"symbolic link to {member.linkname!r}")
    if member.islnk():
        raise _refuse(archive, member.name, f"hard link to {member.linkname!r}")
    if not (member.isfile() or member.isdir()):
        raise _refuse(archive, member.name, "device, fifo or other special file")
    dest = safe_member_path(archive, member.name, staging)
    if dest is None:
        return
    if member.isdir():
        dest.mkdir(parents=True, exist_ok=True)
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    src = tf.extractfile(member)
    assert src is not None  # a regular file always has a data stream
    with src:
        _write(src, dest)


#: What a truncated or corrupt archive raises while being read (decompressors included).
_DAMAGE = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, lzma.LZMAError, OSError)


def _damaged(archive: Path, kind: str, exc: BaseException) -> NoReturn:
    if isinstance(exc, OSError) and exc.errno is not None:
        raise exc  # a real filesystem problem (disk full, permissions), not a bad archive
    raise UserError(f"{archive}: damaged {kind} ({exc}); delete it and fetch again") from None


# -- writing ------------------------------------------------------------------------------------
def _write(src: IO[bytes], dest: Path) -> None:
    with dest.open("wb") as out:
        shutil.copyfileobj(src, out, _COPY_CHUNK)


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
