"""Safe extraction: malicious members are refused by name and nothing lands outside the
target; good archives are extracted once and re-extracted only when they change."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from mlbench.data.extract import extract_archive, is_archive, marker_path
from mlbench.errors import UserError
from tests.replicas.archives import tar_bytes, zip_bytes


def _tar(entries: list[tarfile.TarInfo | tuple[str, bytes]], compression: str = "") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=f"w:{compression}" if compression else "w") as tf:
        for e in entries:
            if isinstance(e, tarfile.TarInfo):
                tf.addfile(e)
            else:
                info = tarfile.TarInfo(e[0])
                info.size = len(e[1])
                tf.addfile(info, io.BytesIO(e[1]))
    return buf.getvalue()


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _special(name: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    return info


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, Path]:
    """(target folder, archive folder) side by side in a sandbox, so escapes are visible."""
    sandbox = tmp_path / "sandbox"
    target = sandbox / "data" / "raw"
    target.mkdir(parents=True)
    return target, sandbox


def _everything(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


TAR_ATTACKS = [
    ("dotdot", [("ok.txt", b"fine"), ("../evil.txt", b"x")], "../evil.txt", "'..'"),
    ("nested dotdot", [("a/../../evil.txt", b"x")], "a/../../evil.txt", "'..'"),
    ("absolute", [("/tmp/evil-abs.txt", b"x")], "/tmp/evil-abs.txt", "absolute"),
    ("symlink", [_link("link", "/etc", tarfile.SYMTYPE), ("link/passwd", b"x")], "link",
     "symbolic link"),
    ("relative symlink", [_link("up", "../..", tarfile.SYMTYPE)], "up", "symbolic link"),
    ("hard link", [_link("hard", "/etc/passwd", tarfile.LNKTYPE)], "hard", "hard link"),
    ("fifo", [_special("pipe", tarfile.FIFOTYPE)], "pipe", "special file"),
    ("device", [_special("dev", tarfile.CHRTYPE)], "dev", "special file"),
]


@pytest.mark.parametrize("compression", ["", "gz"])
@pytest.mark.parametrize("case, entries, member, why", TAR_ATTACKS,
                         ids=[a[0] for a in TAR_ATTACKS])
def test_malicious_tar_is_refused_naming_the_member(layout, case, entries, member, why,
                                                     compression):
    target, sandbox = layout
    archive = sandbox / "evil.tar.gz"
    archive.write_bytes(_tar(entries, compression))
    before = _everything(sandbox)
    with pytest.raises(UserError) as info:
        extract_archive(archive, target)
    message = str(info.value)
    assert repr(member) in message and why in message and "\n" not in message
    assert _everything(sandbox) == before  # nothing written anywhere, staging removed
    assert not Path("/tmp/evil-abs.txt").exists()


ZIP_ATTACKS = [
    ("dotdot", "../evil.txt", "'..'"),
    ("deep dotdot", "a/b/../../../evil.txt", "'..'"),
    ("backslash dotdot", "..\\evil.txt", "'..'"),
    ("absolute", "/tmp/evil-zip.txt", "absolute"),
    ("drive letter", "C:/evil.txt", "absolute"),
]


@pytest.mark.parametrize("case, member, why", ZIP_ATTACKS, ids=[a[0] for a in ZIP_ATTACKS])
def test_malicious_zip_is_refused_before_anything_is_written(layout, case, member, why):
    target, sandbox = layout
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("good/first.txt", b"written first if extraction were naive")
        info = zipfile.ZipInfo("placeholder")
        info.filename = member  # ZipInfo() would normalise it; a hostile archive does not
        zf.writestr(info, b"x")
    archive = sandbox / "evil.zip"
    archive.write_bytes(buf.getvalue())
    before = _everything(sandbox)
    with pytest.raises(UserError, match=why) as info:
        extract_archive(archive, target)
    assert repr(member) in str(info.value)
    assert _everything(sandbox) == before
    assert not Path("/tmp/evil-zip.txt").exists()


def test_zip_symlink_member_is_refused(layout):
    target, sandbox = layout
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("etc-link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc")
    archive = sandbox / "link.zip"
    archive.write_bytes(buf.getvalue())
    with pytest.raises(UserError, match="'etc-link' .symbolic link"):
        extract_archive(archive, target)
    assert not any(target.iterdir())


def test_good_archives_extract_once_and_again_only_when_changed(layout):
    target, sandbox = layout
    archive = sandbox / "images.tar.gz"
    # plain tar behind a .tar.gz name, like the Oxford Pets downloads
    archive.write_bytes(tar_bytes([("images", None), ("images/a b é.jpg", b"1"),
                                   ("images/sub/b.jpg", b"2")]))
    assert extract_archive(archive, target) is True
    assert (target / "images" / "a b é.jpg").read_bytes() == b"1"
    assert extract_archive(archive, target) is False  # up to date: skipped
    assert not [p for p in target.iterdir() if p.name.endswith(".extracting")]

    time.sleep(0.01)
    archive.write_bytes(tar_bytes([("images/c.jpg", b"3")], "gz"))  # a new version
    assert extract_archive(archive, target) is True
    assert sorted(p.name for p in (target / "images").iterdir()) == ["c.jpg"]  # stale gone


def test_sha256_stamp_survives_a_touch_and_deleted_output_is_restored(layout):
    target, sandbox = layout
    archive = sandbox / "x.zip"
    archive.write_bytes(zip_bytes([("seg_train/seg_train/a/1.jpg", b"1")]))
    assert extract_archive(archive, target, sha256="ab" * 32)
    os.utime(archive, (1, 1))  # same bytes, new mtime (e.g. restored from a cache)
    assert extract_archive(archive, target, sha256="ab" * 32) is False
    (target / "seg_train" / "seg_train" / "a" / "1.jpg").unlink()
    import shutil

    shutil.rmtree(target / "seg_train")
    assert extract_archive(archive, target, sha256="ab" * 32) is True
    assert (target / "seg_train" / "seg_train" / "a" / "1.jpg").exists()


def test_two_archives_sharing_a_folder_merge(layout):
    target, sandbox = layout
    a, b = sandbox / "a.tar", sandbox / "b.tar"
    a.write_bytes(tar_bytes([("stanford/cars_train/1.jpg", b"1")]))
    b.write_bytes(tar_bytes([("stanford/devkit/meta.mat", b"m")]))
    extract_archive(a, target)
    extract_archive(b, target)
    assert (target / "stanford/cars_train/1.jpg").exists()
    assert (target / "stanford/devkit/meta.mat").exists()


def test_leftover_staging_from_a_crash_is_cleaned(layout):
    target, sandbox = layout
    archive = sandbox / "a.zip"
    archive.write_bytes(zip_bytes([("f.txt", b"ok")]))
    stale = target / ".a.zip.extracting"
    (stale / "half").mkdir(parents=True)
    extract_archive(archive, target)
    assert not stale.exists() and (target / "f.txt").read_bytes() == b"ok"
    assert marker_path(archive, target).exists()


@pytest.mark.parametrize("name, data", [
    ("broken.tar.gz", tar_bytes([("a.txt", os.urandom(50_000))], "gz")[:20_000]),
    ("truncated.zip", zip_bytes([("a.txt", os.urandom(50_000))])[:20_000]),
    ("broken.zip", b"PK\x03\x04 this is not a zip"),
])
def test_damaged_archive_is_a_user_error(layout, name, data):
    target, sandbox = layout
    archive = sandbox / name
    archive.write_bytes(data)
    with pytest.raises(UserError, match="fetch again"):
        extract_archive(archive, target)
    assert not any(target.iterdir())


def test_is_archive():
    assert all(is_archive(Path(n)) for n in ("a.zip", "b.tar.gz", "c.tgz", "d.TAR", "e.tar.xz"))
    assert not any(is_archive(Path(n)) for n in ("a.parquet", "b.mat", "c.gz"))


@pytest.mark.parametrize("member", ["checksums.json", "a.zip", ".a.zip.extracted.json",
                                    "images.tar.gz"])
def test_archive_cannot_overwrite_the_fetch_records(layout, member):
    target, sandbox = layout
    archive = target / "a.zip"
    archive.write_bytes(zip_bytes([(member, b"forged"), ("ok/1.jpg", b"1")]))
    (target / "checksums.json").write_text("{}")
    with pytest.raises(UserError, match=f"'{member}' .would overwrite"):
        extract_archive(archive, target, protected=frozenset({"checksums.json", "images.tar.gz"}))
    assert (target / "checksums.json").read_text() == "{}"
    assert sorted(p.name for p in target.iterdir()) == ["a.zip", "checksums.json"]
