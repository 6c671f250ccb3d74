"""Safe extraction: malicious members are refused by name and nothing lands outside the
target; good archives are extracted once and re-extracted only when they change."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import time
import zipfile
import zlib
from pathlib import Path

import pytest

from mlbench.data.extract import (
    DamagedArchive,
    ExtractLimits,
    check_archive,
    extract_archive,
    is_archive,
    marker_path,
)
from mlbench.errors import UserError
from tests.replicas.archives import tar_bytes, zip_bytes
from tests.replicas.disk import small_disk


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


# -- issue 14, finding 8: zip and tar bombs -----------------------------------------------------
BOMB_SIZE = 256 << 20  # zeros, deflated at level 1 to ~1.1 MB: a ratio of ~230


def _zip_bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        zf.writestr("readme.txt", b"nothing to see")
        with zf.open("bomb.bin", "w", force_zip64=True) as out:
            for _ in range(BOMB_SIZE >> 20):
                out.write(bytes(1 << 20))
    return buf.getvalue()


def _tar_gz_bomb() -> bytes:
    """A tar.gz streamed through zlib: a 256 MiB member of zeros in ~1.1 MB."""
    info = tarfile.TarInfo("bomb.bin")
    info.size = BOMB_SIZE
    gz = zlib.compressobj(1, zlib.DEFLATED, 31)  # wbits 31: gzip framing
    parts = [gz.compress(info.tobuf())]
    parts += [gz.compress(bytes(1 << 20)) for _ in range(BOMB_SIZE >> 20)]
    parts += [gz.compress(bytes(1024)), gz.flush()]  # two zero blocks end the archive
    return b"".join(parts)


@pytest.mark.parametrize("name, build", [("bomb.zip", _zip_bomb), ("bomb.tar.gz", _tar_gz_bomb)])
def test_finding8_bomb_is_refused_naming_the_limit_and_its_key(layout, name, build):
    target, sandbox = layout
    archive = sandbox / name
    archive.write_bytes(build())
    assert archive.stat().st_size < 2 << 20
    before = _everything(sandbox)
    with pytest.raises(UserError) as info:
        extract_archive(archive, target, limits=ExtractLimits(dataset="demo"))
    message = str(info.value)
    assert "\n" not in message and "'bomb.bin'" in message
    assert "expands to more than 100 times" in message
    assert "sources.demo.extract_max_ratio" in message and "nothing was extracted" in message
    assert _everything(sandbox) == before  # refused from the header: not a byte written
    with pytest.raises(UserError, match="extract_max_ratio"):
        check_archive(archive, ExtractLimits(dataset="demo"))  # what fetch runs first


def test_finding8_a_trusted_archive_passes_with_its_limit_raised(layout):
    target, sandbox = layout
    archive = sandbox / "bomb.zip"
    archive.write_bytes(_zip_bomb())
    assert extract_archive(archive, target, limits=ExtractLimits(max_ratio=1000))
    assert (target / "bomb.bin").stat().st_size == BOMB_SIZE


@pytest.mark.parametrize("limits, key", [
    (ExtractLimits(max_members=3, dataset="demo"), "sources.demo.extract_max_members"),
    (ExtractLimits(max_bytes=10_000, dataset="demo"), "sources.demo.extract_max_bytes"),
])
@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_finding8_member_count_and_total_size_limits(layout, limits, key, kind):
    target, sandbox = layout
    entries = [(f"d/{i}.bin", os.urandom(3000)) for i in range(5)]
    archive = sandbox / f"many.{kind}"
    archive.write_bytes(zip_bytes(entries) if kind == "zip" else tar_bytes(entries))
    with pytest.raises(UserError, match=key) as info:
        extract_archive(archive, target, limits=limits)
    assert "\n" not in str(info.value)
    assert not any(target.iterdir())
    assert extract_archive(archive, target)  # the defaults allow it


def test_finding8_small_archives_may_compress_well(layout):
    """Below RATIO_FLOOR the ratio is not held against an archive: text compresses 1000:1."""
    target, sandbox = layout
    archive = sandbox / "meta.zip"
    archive.write_bytes(zip_bytes([("meta/classes.txt", b"apple_pie\n" * 200_000)]))
    assert extract_archive(archive, target)


# -- issue 14, finding 10: long member names, disk full -----------------------------------------
LONG = "d/" + "x" * 300 + ".jpg"


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_finding10_too_long_member_name_is_one_line_naming_it(layout, kind):
    target, sandbox = layout
    entries = [("ok/1.jpg", b"1"), (LONG, b"2")]
    archive = sandbox / f"long.{kind}"
    archive.write_bytes(zip_bytes(entries) if kind == "zip" else tar_bytes(entries))
    with pytest.raises(UserError) as info:
        extract_archive(archive, target)
    message = str(info.value)
    assert "\n" not in message and "refused unsafe archive member 'd/xxx" in message
    assert "(306 characters)" in message and "a name of 304 bytes" in message
    assert "allows 255" in message
    assert not any(target.iterdir())


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_finding10_disk_full_while_extracting_says_how_much_where(tmp_path, kind):
    archive = tmp_path / f"big.{kind}"
    entries = [("big/a.bin", os.urandom(1 << 20)), ("big/b.bin", os.urandom(2 << 20))]
    archive.write_bytes(zip_bytes(entries) if kind == "zip" else tar_bytes(entries, "gz"))
    with small_disk(tmp_path / "raw", "1m") as target:
        with pytest.raises(UserError) as info:
            extract_archive(archive, target)
        message = str(info.value)
        assert message.startswith(f"disk full while extracting big.{kind} in {target}: it "
                                  "needs 3.0 MiB, ")
        assert "free there" in message and "\n" not in message
        assert not any(target.iterdir())  # the staging folder went, freeing what it held


def test_check_archive_reads_a_gzip_to_its_crc(layout):
    _, sandbox = layout
    data = bytearray(tar_bytes([("a.txt", os.urandom(5000))], "gz"))
    data[-8] ^= 0xFF  # the CRC32 in the gzip trailer: the members themselves list fine
    archive = sandbox / "crc.tar.gz"
    archive.write_bytes(bytes(data))
    with pytest.raises(DamagedArchive, match="damaged tar"):
        check_archive(archive)
