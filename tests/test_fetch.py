"""The download layer against a real HTTP server on 127.0.0.1: resume, checksums, mirrors,
retries, and the Kaggle / Hugging Face clients (credentials, fake Hub endpoint)."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import types
from pathlib import Path

import pytest
from huggingface_hub.utils import _detect_agent

from mlbench.data import fetch
from mlbench.data.fetch import Remote, download_http, fetch_files, resolve
from mlbench.data.sources import get_source
from mlbench.data.sources.base import FetchContext
from mlbench.errors import ServiceError, UserError
from tests.replicas import MirrorServer, build
from tests.replicas.archives import zip_bytes
from tests.replicas.disk import small_disk

BLOB = os.urandom(3 * 1024 * 1024 + 12345)  # several 1 MiB chunks and a ragged tail
SPACED_ZIP = zip_bytes([("spaced name.txt", b"spaced name")])


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetch, "BACKOFF_BASE", 0.001)


@pytest.fixture
def server():
    with MirrorServer({"blob.bin": BLOB, "a file.zip": SPACED_ZIP}) as s:
        yield s


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ctx(server: MirrorServer, **settings) -> FetchContext:
    return FetchContext(settings=settings, mirror=server.url)


BLOB_REMOTE = [Remote(name="blob.bin", url="http://127.0.0.1:9/never-contacted/blob.bin")]


# -- plain download, record, idempotence --------------------------------------------------------
def test_download_records_sha256_and_second_run_is_offline(server, tmp_path):
    raw = tmp_path / "raw"
    files = fetch_files("demo", raw, ctx(server), BLOB_REMOTE)
    assert (raw / "blob.bin").read_bytes() == BLOB
    assert files == {raw / "blob.bin": sha(BLOB)}
    record = json.loads((raw / "checksums.json").read_text())["blob.bin"]
    assert record["sha256"] == sha(BLOB) and record["size"] == len(BLOB)
    assert record["source"] == f"{server.url}/blob.bin"  # the mirror, not the original URL
    assert not list(raw.glob("*.part*"))
    n = len(server.log)
    fetch_files("demo", raw, ctx(server), BLOB_REMOTE)
    assert len(server.log) == n  # complete and unchanged: no request at all


def test_mirror_keeps_original_file_names_url_quoted(server, tmp_path):
    remote = [Remote(name="a file.zip", url="http://127.0.0.1:9/a%20file.zip")]
    fetch_files("demo", tmp_path, ctx(server), remote)
    assert (tmp_path / "a file.zip").read_bytes() == SPACED_ZIP
    assert server.log[-1].path == "/a file.zip"


def test_url_setting_replaces_the_file_list(server, tmp_path):
    c = FetchContext(settings={"url": [f"{server.url}/blob.bin", f"{server.url}/a%20file.zip"]},
                     mirror="http://127.0.0.1:9/unused")
    files = fetch_files("demo", tmp_path, c, BLOB_REMOTE)
    assert sorted(p.name for p in files) == ["a file.zip", "blob.bin"]


# -- resume -------------------------------------------------------------------------------------
def test_dropped_connection_resumes_within_the_run(server, tmp_path):
    server.drop_after["blob.bin"] = 2 * 1024 * 1024 + 777
    fetch_files("demo", tmp_path, ctx(server), BLOB_REMOTE)
    assert (tmp_path / "blob.bin").read_bytes() == BLOB
    gets = server.requests_for("blob.bin")
    assert len(gets) == 2 and gets[0].range_start is None
    resumed_at = gets[1].range_start
    assert resumed_at is not None and 0 < resumed_at <= 2 * 1024 * 1024 + 777
    # only the missing tail was sent again, not the whole file
    assert server.sent["blob.bin"] == 2 * 1024 * 1024 + 777 + len(BLOB) - resumed_at


def test_interrupted_run_resumes_on_the_next_run(server, tmp_path):
    server.drop_after["blob.bin"] = 1024 * 1024 + 5
    with pytest.raises(ServiceError) as info:
        fetch_files("demo", tmp_path, ctx(server, retries=0), BLOB_REMOTE)
    assert "resume" in str(info.value) and "\n" not in str(info.value)
    part = tmp_path / "blob.bin.part"
    partial = part.stat().st_size
    assert 0 < partial <= 1024 * 1024 + 5 and not (tmp_path / "blob.bin").exists()

    fetch_files("demo", tmp_path, ctx(server), BLOB_REMOTE)
    second = server.requests_for("blob.bin")[-1]
    assert second.range_start == partial
    assert second.headers.get("If-Range") == server.etag("blob.bin")
    assert (tmp_path / "blob.bin").read_bytes() == BLOB
    assert not part.exists()


def test_file_changed_on_server_restarts_instead_of_splicing(server, tmp_path):
    server.drop_after["blob.bin"] = 1024 * 1024
    with pytest.raises(ServiceError):
        fetch_files("demo", tmp_path, ctx(server, retries=0), BLOB_REMOTE)
    new = os.urandom(len(BLOB))
    server.files["blob.bin"] = new  # new ETag: If-Range makes the server send it all (200)
    fetch_files("demo", tmp_path, ctx(server), BLOB_REMOTE)
    assert (tmp_path / "blob.bin").read_bytes() == new


def test_server_without_range_support_restarts_cleanly(server, tmp_path):
    server.ranges = False
    server.drop_after["blob.bin"] = 1024 * 1024
    fetch_files("demo", tmp_path, ctx(server), BLOB_REMOTE)
    assert (tmp_path / "blob.bin").read_bytes() == BLOB


def test_complete_part_answered_416_is_accepted(server, tmp_path):
    part = tmp_path / "blob.bin.part"
    part.write_bytes(BLOB)
    (tmp_path / "blob.bin.part.json").write_text(json.dumps({"url": f"{server.url}/blob.bin"}))
    download_http(f"{server.url}/blob.bin", part)
    assert part.read_bytes() == BLOB and server.log[-1].range_start == len(BLOB)


# -- retries and HTTP errors --------------------------------------------------------------------
def test_5xx_and_429_are_retried(server, tmp_path):
    server.fail["blob.bin"] = [503, 429, 502]
    fetch_files("demo", tmp_path, ctx(server), BLOB_REMOTE)
    assert len(server.requests_for("blob.bin")) == 4
    assert (tmp_path / "blob.bin").read_bytes() == BLOB


def test_404_is_one_line_user_error_without_retry(server, tmp_path):
    remote = [Remote(name="gone.tar", url="http://127.0.0.1:9/gone.tar")]
    with pytest.raises(UserError, match=r"HTTP 404.*MLBENCH_MIRROR") as info:
        fetch_files("demo", tmp_path, ctx(server), remote)
    assert "\n" not in str(info.value)
    assert len(server.requests_for("gone.tar")) == 1


def test_unreachable_host_gives_one_line_service_error(tmp_path):
    c = FetchContext(settings={"retries": 1}, mirror="http://127.0.0.1:9")  # discard port
    with pytest.raises(ServiceError, match="gave up after 2 attempts.*resume from byte 0") as info:
        fetch_files("demo", tmp_path, c, BLOB_REMOTE)
    assert "\n" not in str(info.value)


# -- checksums ----------------------------------------------------------------------------------
def test_tampered_redownload_is_refused_and_deleted(server, tmp_path):
    fetch_files("demo", tmp_path, ctx(server), BLOB_REMOTE)
    (tmp_path / "blob.bin").unlink()
    server.files["blob.bin"] = BLOB[:-1] + bytes([BLOB[-1] ^ 1])  # same size, one bit off
    with pytest.raises(UserError, match=r"checksum mismatch.*refused and deleted") as info:
        fetch_files("demo", tmp_path, ctx(server), BLOB_REMOTE)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "blob.bin").exists() and not (tmp_path / "blob.bin.part").exists()


def test_tampered_file_on_disk_is_refused_and_deleted(server, tmp_path):
    fetch_files("demo", tmp_path, ctx(server), BLOB_REMOTE)
    target = tmp_path / "blob.bin"
    target.write_bytes(bytes([BLOB[0] ^ 1]) + BLOB[1:])  # new mtime: no fast path
    with pytest.raises(UserError, match="checksum mismatch"):
        fetch_files("demo", tmp_path, ctx(server), BLOB_REMOTE)
    assert not target.exists()


def test_published_md5_mismatch_is_refused(server, tmp_path):
    remote = [Remote(name="blob.bin", url="http://127.0.0.1:9/blob.bin", md5="0" * 32)]
    with pytest.raises(UserError, match=r"md5 \(published\)"):
        fetch_files("demo", tmp_path, ctx(server), remote)
    assert not (tmp_path / "blob.bin").exists()
    good = [Remote(name="blob.bin", url="http://127.0.0.1:9/blob.bin",
                   md5=hashlib.md5(BLOB).hexdigest())]
    fetch_files("demo", tmp_path, ctx(server), good)
    assert (tmp_path / "blob.bin").exists()


def test_pinned_sha256_overrides_published_checksum(server, tmp_path):
    remote = [Remote(name="blob.bin", url="http://127.0.0.1:9/blob.bin", md5="0" * 32)]
    fetch_files("demo", tmp_path, ctx(server, sha256=sha(BLOB)), remote)
    assert (tmp_path / "blob.bin").read_bytes() == BLOB
    with pytest.raises(UserError, match="pinned"):
        fetch_files("demo", tmp_path / "other", ctx(server, sha256="f" * 64), remote)


# -- issue 14, finding 7: what a first download must be before its digest is the truth -------
GOOD_ZIP = zip_bytes([("images/a/1.jpg", b"1" * 5000), ("images/b/2.jpg", b"2" * 5000)])
ZIP_REMOTE = [Remote(name="data.zip", url="http://127.0.0.1:9/data.zip")]


def _records(raw: Path) -> dict:
    path = raw / "checksums.json"
    return json.loads(path.read_text()) if path.exists() else {}


@pytest.mark.parametrize("bad, why", [
    (GOOD_ZIP[: len(GOOD_ZIP) // 2], "not a valid zip"),
    (b"<!DOCTYPE html><html><body>Please sign in</body></html>", "not a valid zip"),
    (GOOD_ZIP[:-100] + bytes(100), "not a valid zip"),
])
def test_finding7_a_bad_first_download_is_not_recorded_and_a_good_one_then_passes(
        tmp_path, bad, why):
    raw = tmp_path / "raw"
    with MirrorServer({"data.zip": bad}) as server:
        with pytest.raises(UserError) as info:
            fetch.fetch_and_extract("demo", raw, ctx(server), ZIP_REMOTE)
        message = str(info.value)
        assert "\n" not in message and why in message
        assert "bad download" in message and "nothing recorded" in message
        assert _records(raw) == {} and not (raw / "data.zip").exists()
        server.files["data.zip"] = GOOD_ZIP  # "run the fetch again": the source is fine now
        fetch.fetch_and_extract("demo", raw, ctx(server), ZIP_REMOTE)
    assert (raw / "images/a/1.jpg").read_bytes() == b"1" * 5000
    record = _records(raw)["data.zip"]
    assert record["sha256"] == sha(GOOD_ZIP) and record["verified"] == "content"


def test_finding7_an_old_unverified_record_does_not_refuse_a_good_file(server, tmp_path):
    """Records from before content checks bind nothing: a stuck user gets unstuck."""
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "checksums.json").write_text(json.dumps({"blob.bin": {
        "sha256": "0" * 64, "md5": "0" * 32, "size": 1, "mtime_ns": 1, "source": "old"}}))
    fetch_files("demo", raw, ctx(server), BLOB_REMOTE)
    assert _records(raw)["blob.bin"]["sha256"] == sha(BLOB)


def test_finding7_extraction_damage_forgets_the_record_so_fetch_again_works(tmp_path):
    raw = tmp_path / "raw"
    with MirrorServer({"data.zip": GOOD_ZIP}) as server:
        fetch.fetch_and_extract("demo", raw, ctx(server), ZIP_REMOTE)
        archive = raw / "data.zip"
        st = archive.stat()
        damaged = bytearray(GOOD_ZIP)
        damaged[40] ^= 0xFF  # bit rot inside the first member's data, same size and mtime
        archive.write_bytes(bytes(damaged))
        os.utime(archive, ns=(st.st_atime_ns, st.st_mtime_ns))
        (raw / ".data.zip.extracted.json").unlink()
        with pytest.raises(UserError, match="damaged zip.*delete it and fetch again"):
            fetch.fetch_and_extract("demo", raw, ctx(server), ZIP_REMOTE)
        assert "data.zip" not in _records(raw)
        archive.unlink()  # what the message says
        fetch.fetch_and_extract("demo", raw, ctx(server), ZIP_REMOTE)
    assert _records(raw)["data.zip"]["sha256"] == sha(GOOD_ZIP)


def test_finding7_a_mistyped_pin_never_deletes_the_verified_file(server, tmp_path):
    raw = tmp_path / "raw"
    fetch_files("demo", raw, ctx(server), BLOB_REMOTE)
    requests = len(server.log)
    typo = sha(BLOB)[:-1] + ("0" if sha(BLOB)[-1] != "0" else "1")
    for _ in range(2):  # the same answer on every run, and the file stays
        with pytest.raises(UserError) as info:
            fetch_files("demo", raw, ctx(server, sha256=typo), BLOB_REMOTE)
        message = str(info.value)
        assert "\n" not in message and f"pinned in params.yaml) is {typo}" in message
        assert f"pin that digest (sources.demo.sha256: {sha(BLOB)})" in message
        assert "kept" in message and "verified on" in message
        assert (raw / "blob.bin").read_bytes() == BLOB
    assert len(server.log) == requests  # nothing downloaded again
    fetch_files("demo", raw, ctx(server, sha256=sha(BLOB)), BLOB_REMOTE)  # the digest it named
    assert len(server.log) == requests


def test_finding7_a_redownload_of_the_verified_file_is_kept_despite_a_mistyped_pin(server,
                                                                                  tmp_path):
    raw = tmp_path / "raw"
    fetch_files("demo", raw, ctx(server), BLOB_REMOTE)
    (raw / "blob.bin").unlink()
    with pytest.raises(UserError, match=f"sources.demo.sha256: {sha(BLOB)}"):
        fetch_files("demo", raw, ctx(server, sha256="e" * 64), BLOB_REMOTE)
    assert (raw / "blob.bin").read_bytes() == BLOB  # matched the verified record: moved in


def test_finding7_an_unknown_download_failing_its_pin_names_its_digest(server, tmp_path):
    raw = tmp_path / "raw"
    with pytest.raises(UserError) as info:
        fetch_files("demo", raw, ctx(server, sha256="e" * 64), BLOB_REMOTE)
    assert "refused and deleted" in str(info.value)
    assert f"pin it: sources.demo.sha256: {sha(BLOB)}" in str(info.value)
    assert not (raw / "blob.bin").exists() and _records(raw) == {}


@pytest.mark.parametrize("name, data, why", [
    ("train.parquet", b"PAR1 but cut short", "not a parquet file"),
    ("labels.mat", b"", "the file is empty"),
    ("labels.mat", b"\n  <html><head><title>404</title>", "HTML page"),
])
def test_finding7_non_archives_are_checked_for_their_format(tmp_path, name, data, why):
    with MirrorServer({name: data}) as server, pytest.raises(UserError, match=why):
        fetch_files("demo", tmp_path, ctx(server), [Remote(name=name)])
    assert _records(tmp_path) == {}


# -- issue 14, finding 10: a full disk while downloading ----------------------------------------
def test_finding10_disk_full_while_downloading_says_how_much_where(server, tmp_path):
    with small_disk(tmp_path / "raw", "1m") as raw:
        with pytest.raises(UserError) as info:
            fetch_files("demo", raw, ctx(server), BLOB_REMOTE)
        message = str(info.value)
        assert message.startswith(f"disk full while downloading blob.bin in {raw}: it needs "
                                  f"3.0 MiB (")
        assert "of it already in blob.bin.part)" in message
        assert "free there" in message and "resumes" in message and "\n" not in message
        assert (raw / "blob.bin.part").exists()  # kept: the next run resumes from it


# -- settings -----------------------------------------------------------------------------------
@pytest.mark.parametrize("settings, message", [
    ({"urls": "http://127.0.0.1:9/a.zip"}, "sources.demo.urls: unknown key"),
    ({"url": 3}, "sources.demo.url: must be a URL"),
    ({"retries": -1}, "sources.demo.retries"),
    ({"sha256": {"nope.zip": "ab" * 32}}, "no file named 'nope.zip'"),
    ({"sha256": "ab"}, r"'ab' is not a sha256 digest \(64 hex digits\)"),
    ({"extract_max_bytes": 0}, "sources.demo.extract_max_bytes: must be a whole number >= 1"),
    ({"extract_max_members": 2.5}, "sources.demo.extract_max_members: must be a whole number"),
    ({"extract_max_ratio": float("inf")}, "sources.demo.extract_max_ratio: must be a finite"),
    ({"extract_max_ratio": True}, "sources.demo.extract_max_ratio: must be a finite"),
])
def test_bad_settings_are_one_line_errors(settings, message):
    with pytest.raises(UserError, match=message):
        resolve("demo", BLOB_REMOTE, FetchContext(settings=settings))


# -- Kaggle -------------------------------------------------------------------------------------
@pytest.fixture
def no_kaggle_credentials(monkeypatch, tmp_path):
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR",
                "XDG_CONFIG_HOME", "MLBENCH_MIRROR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_missing_kaggle_credentials_is_one_line_pointing_at_the_docs(no_kaggle_credentials,
                                                                    tmp_path):
    sys.modules.pop("kaggle", None)
    with pytest.raises(UserError) as info:
        get_source("intel").fetch(tmp_path / "raw", FetchContext())
    message = str(info.value)
    assert "\n" not in message
    assert "KAGGLE_USERNAME" in message and "kaggle.json" in message
    assert "https://www.kaggle.com/docs/api" in message
    assert "kaggle" not in sys.modules  # never imported: it may exit(1) at import


def _fake_kaggle(monkeypatch, api_cls: type) -> None:
    pkg = types.ModuleType("kaggle")
    api = types.ModuleType("kaggle.api")
    ext = types.ModuleType("kaggle.api.kaggle_api_extended")
    ext.KaggleApi = api_cls  # type: ignore[attr-defined]
    for name, mod in (("kaggle", pkg), ("kaggle.api", api), ("kaggle.api.kaggle_api_extended",
                                                             ext)):
        monkeypatch.setitem(sys.modules, name, mod)


def test_kaggle_exit_at_authentication_becomes_user_error(no_kaggle_credentials, monkeypatch,
                                                          tmp_path):
    monkeypatch.setenv("KAGGLE_USERNAME", "someone")
    monkeypatch.setenv("KAGGLE_KEY", "not-a-real-key")

    class ExitingApi:
        def authenticate(self) -> None:
            raise SystemExit(1)

    _fake_kaggle(monkeypatch, ExitingApi)
    with pytest.raises(UserError, match="Kaggle credentials"):
        get_source("xrays").fetch(tmp_path / "raw", FetchContext())


def test_kaggle_download_goes_through_the_official_client(no_kaggle_credentials, monkeypatch,
                                                          tmp_path):
    home = tmp_path / "home" / ".kaggle"
    home.mkdir(parents=True)
    (home / "kaggle.json").write_text('{"username": "u", "key": "k"}')
    replica = build("xrays")
    calls = []

    class FakeApi:
        def authenticate(self) -> None:
            calls.append("auth")

        def dataset_download_files(self, slug, path, quiet, unzip):
            calls.append((slug, unzip))
            Path(path, slug.split("/")[1] + ".zip").write_bytes(
                replica.files["chest-xray-pneumonia.zip"])

    _fake_kaggle(monkeypatch, FakeApi)
    raw = tmp_path / "raw"
    source = get_source("xrays")
    source.fetch(raw, FetchContext())
    assert calls == ["auth", ("paultimothymooney/chest-xray-pneumonia", False)]
    assert (raw / "chest-xray-pneumonia.zip").is_file() and not (raw / ".kaggle").exists()
    assert json.loads((raw / "checksums.json").read_text())["chest-xray-pneumonia.zip"][
        "source"] == "kaggle:paultimothymooney/chest-xray-pneumonia"
    assert sum(1 for _ in source.images(raw)) == sum(replica.counts.values())


# -- Hugging Face -------------------------------------------------------------------------------
def test_beans_through_a_fake_hub_endpoint_with_token(monkeypatch, tmp_path):
    replica = build("beans")
    files = {f"datasets/AI-Lab-Makerere/beans/resolve/main/{p}": d for p, d in replica.hf.items()}
    monkeypatch.delenv("MLBENCH_MIRROR", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_TOKEN", "hf_testtoken")
    with MirrorServer({p.split("/main/", 1)[1]: d for p, d in files.items()}) as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        # the client's own side call (its agent-registry lookup) read HF_ENDPOINT at import:
        # give it an empty registry so the test never reaches for huggingface.co
        monkeypatch.setattr(_detect_agent, "_registry", {"standardEnvVars": [], "harnesses": {}})
        raw = tmp_path / "raw"
        source = get_source("beans")
        source.fetch(raw, FetchContext())
        downloads = [r for r in hub.log if "/resolve/" in r.path]
        assert {r.path for r in downloads} == {f"/{p}" for p in files}
        for r in downloads:
            auth = {k.lower(): v for k, v in r.headers.items()}.get("authorization")
            assert auth == "Bearer hf_testtoken"
    assert sorted(p.name for p in raw.glob("*.parquet")) == sorted(replica.files)
    assert not (raw / ".hf").exists()
    counted = {}
    for item in source.images(raw):
        counted[(item.split, item.class_name)] = counted.get((item.split, item.class_name), 0) + 1
    assert counted == dict(replica.counts)


def test_file_url_mirror_for_an_offline_disk(tmp_path):
    disk = tmp_path / "usb stick"
    disk.mkdir()
    (disk / "blob.bin").write_bytes(BLOB)
    c = FetchContext(mirror=disk.as_uri())
    fetch_files("demo", tmp_path / "raw", c, BLOB_REMOTE)
    assert (tmp_path / "raw" / "blob.bin").read_bytes() == BLOB
    with pytest.raises(UserError, match="no such file"):
        fetch_files("demo", tmp_path / "raw2", c, [Remote(name="missing.zip")])


def test_a_missing_datasets_extra_is_one_line_naming_it(tmp_path, monkeypatch):
    """The real datasets' clients are an extra: without it, say which one to install."""
    from mlbench.data.fetch import download_hf
    from mlbench.errors import MissingExtra

    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(MissingExtra) as info:
        download_hf("AI-Lab-Makerere/beans", "data/train.parquet", tmp_path)
    assert "pip install 'mlbench[datasets]'" in str(info.value)
    assert "huggingface_hub" in str(info.value) and "\n" not in str(info.value)
