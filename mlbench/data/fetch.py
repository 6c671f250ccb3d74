"""The download layer of the `fetch` stage: HTTP with resume, Kaggle, Hugging Face, mirrors.

A dataset source lists the files it is made of as `Remote`s (a name, and where the file lives:
a URL, a Kaggle dataset or a Hugging Face dataset file). `fetch_files` puts each one in
`data/<ds>/raw/<name>`:

- **Where from.** `params.yaml` `sources.<ds>.url` (one URL or a list) replaces the dataset's
  files entirely; else env `MLBENCH_MIRROR=<base url>` serves every file as `<base>/<name>`
  (Kaggle and Hugging Face datasets included: their archive or parquet files keep their names);
  else the original location. `file://` URLs work too (an offline disk).
- **Resume.** HTTP downloads go to `<name>.part` with `Range` requests (and `If-Range`, so a
  file changed on the server restarts cleanly), are retried with exponential backoff after a
  dropped connection, a timeout, 429 or 5xx, and are renamed only once complete and verified.
  An interrupted `mlbench fetch` run continues where it stopped.
- **Integrity.** A pinned `sources.<ds>.sha256` or a published checksum (Food-101's MD5) is
  checked; otherwise the first download's content is checked (an archive must open and list,
  within the extraction limits; see `check_content`) and only then is its sha256 recorded in
  `raw/checksums.json`, with how it was verified; every later run (or re-download) must match
  it. A mismatching download is deleted and refused, and the message names the digest to pin;
  a file that is the one verified before is never deleted because a pin differs from it.
- **Bounded.** Archives are extracted within `ExtractLimits` (total bytes, ratio, members),
  each raised by a `sources.<ds>` key; a full disk is one line saying how much was needed where.
- **Idempotent.** A file already present whose size and mtime match its record is not even
  re-hashed; archives are extracted once (`mlbench.data.extract`).

Kaggle and Hugging Face go through their official clients, imported lazily, so a missing
credential is one `UserError` line (never the clients' own exit or traceback).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

from mlbench.data.diskspace import disk_full, human, is_disk_full
from mlbench.data.extract import (
    ArchiveError,
    DamagedArchive,
    ExtractLimits,
    check_archive,
    extract_archive,
    is_archive,
)
from mlbench.errors import ServiceCallError, ServiceError, UserError, needs_extra
from mlbench.io import atomic_write_json
from mlbench.retry import RETRY_STATUSES, RetryLater, RetryPolicy, retry_after_seconds

if TYPE_CHECKING:  # requests, urllib3 and tqdm load on first download: every CLI call imports
    import requests  # the dataset registry, and most calls never download anything


CHECKSUMS = "checksums.json"
KAGGLE_DOCS = "https://www.kaggle.com/docs/api#authentication"
#: The keys of `sources.<ds>` (checked here only: `check_settings`).
SETTINGS = ("url", "sha256", "retries", "revision", *ExtractLimits.KEYS.values())
#: Seconds before the first retry; doubled each attempt up to BACKOFF_CAP (tests shrink it).
BACKOFF_BASE = 1.0
BACKOFF_CAP = 60.0
DEFAULT_RETRIES = 5
TIMEOUT = (30.0, 120.0)  # connect, read (seconds without a byte)
CHUNK = 1 << 20
#: Besides the shared RETRY_STATUSES, a download also retries a request timeout and "too early".
_RETRY_STATUS = RETRY_STATUSES | {408, 425}


@dataclass(frozen=True)
class Remote:
    """One file a dataset is made of, by the name it keeps in `raw/` and under a mirror."""

    name: str
    url: str | None = None
    #: Published checksums (lower-case hex); only checked against the original or a mirror.
    sha256: str | None = None
    md5: str | None = None
    #: Kaggle dataset slug (`owner/name`) whose whole-dataset zip is this file.
    kaggle: str | None = None
    #: Hugging Face dataset repo and the path of this file in it.
    hf_repo: str | None = None
    hf_path: str | None = None
    #: A missing optional file is a warning (the source says later if it really needs it).
    optional: bool = False
    #: `sha256` is the user's `sources.<ds>.sha256`, not a published checksum.
    pinned: bool = False

    @property
    def where(self) -> str:
        if self.url:
            return self.url
        if self.kaggle:
            return f"kaggle:{self.kaggle}"
        return f"hf:{self.hf_repo}/{self.hf_path}"


# -- settings and the mirror override -----------------------------------------------------------
@dataclass(frozen=True)
class FetchContext:
    """What `fetch` may consult: the dataset's `sources.<ds>` params and the mirror override."""

    settings: dict[str, Any] = field(default_factory=dict)
    mirror: str | None = None

    @classmethod
    def from_params(cls, ds: str, sources: dict[str, dict[str, Any]]) -> FetchContext:
        return cls(settings=dict(sources.get(ds) or {}), mirror=os.environ.get("MLBENCH_MIRROR"))


def check_settings(ds: str, settings: dict[str, Any]) -> None:
    """Refuse unknown or mistyped `sources.<ds>` keys (a typo must not fetch the wrong thing)."""
    for key, value in settings.items():
        if key not in SETTINGS:
            raise UserError(f"params.yaml: sources.{ds}.{key}: unknown key; use one of "
                            f"{', '.join(SETTINGS)}")
        if key == "url" and not (isinstance(value, str) or (
            isinstance(value, list) and value and all(isinstance(u, str) for u in value)
        )):
            raise UserError(f"params.yaml: sources.{ds}.url: must be a URL or a list of URLs, "
                            f"got {value!r}")
        if key == "sha256" and not (isinstance(value, str) or (
            isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        )):
            raise UserError(f"params.yaml: sources.{ds}.sha256: must be a hex digest or a "
                            f"mapping of file name to digest, got {value!r}")
        if key == "sha256":
            for digest in [value] if isinstance(value, str) else value.values():
                if not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
                    raise UserError(f"params.yaml: sources.{ds}.sha256: {digest!r} is not a "
                                    f"sha256 digest (64 hex digits)")
        if key == "retries" and (isinstance(value, bool) or not isinstance(value, int)
                                 or value < 0):
            raise UserError(f"params.yaml: sources.{ds}.retries: must be an integer >= 0, "
                            f"got {value!r}")
        if key == "revision" and not isinstance(value, str):
            raise UserError(f"params.yaml: sources.{ds}.revision: must be a string, got {value!r}")
        if key in ("extract_max_bytes", "extract_max_members") and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise UserError(f"params.yaml: sources.{ds}.{key}: must be a whole number >= 1, "
                            f"got {value!r}")
        if key == "extract_max_ratio" and (
            isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or value < 1
        ):
            raise UserError(f"params.yaml: sources.{ds}.{key}: must be a finite number >= 1, "
                            f"got {value!r}")


def extract_limits(ds: str, settings: dict[str, Any]) -> ExtractLimits:
    """The extraction limits of `ds`: the defaults, raised or lowered by `sources.<ds>`."""
    check_settings(ds, settings)
    given = {field: settings[key] for field, key in ExtractLimits.KEYS.items() if key in settings}
    return ExtractLimits(dataset=ds, **given)


def url_name(url: str) -> str:
    """The file name a URL stands for (last path segment, percent-decoded)."""
    name = unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise UserError(f"{url}: cannot tell the file name from this URL; give a URL ending in "
                        f"the archive's file name")
    return name


def resolve(ds: str, remotes: list[Remote], ctx: FetchContext) -> list[Remote]:
    """Apply `sources.<ds>.url` or `MLBENCH_MIRROR` to the dataset's own file list."""
    check_settings(ds, ctx.settings)
    urls = ctx.settings.get("url")
    if urls:
        urls = [urls] if isinstance(urls, str) else list(urls)
        resolved = [Remote(name=url_name(u), url=u) for u in urls]
    elif ctx.mirror:
        base = ctx.mirror.rstrip("/")
        resolved = [Remote(name=r.name, url=f"{base}/{quote(r.name)}", sha256=r.sha256,
                           md5=r.md5, optional=r.optional) for r in remotes]
    else:
        resolved = list(remotes)
    pinned = ctx.settings.get("sha256")
    if pinned is not None:
        if isinstance(pinned, str):
            if len(resolved) != 1:
                raise UserError(f"params.yaml: sources.{ds}.sha256: {ds} has {len(resolved)} "
                                f"files; map each file name to its digest")
            pinned = {resolved[0].name: pinned}
        unknown = set(pinned) - {r.name for r in resolved}
        if unknown:
            names = ", ".join(r.name for r in resolved)
            raise UserError(f"params.yaml: sources.{ds}.sha256: no file named "
                            f"{sorted(unknown)[0]!r}; {ds} has {names}")
        resolved = [replace(r, sha256=pinned[r.name].lower(), md5=None, pinned=True)
                    if r.name in pinned else r for r in resolved]
    return resolved


# -- checksums ----------------------------------------------------------------------------------
#: How a recorded sha256 was established, i.e. why it may be trusted from then on:
#: matched the published checksum / matched the user's pin / first download whose content was
#: checked (the archive opens and lists, the file has its format). A record without one (made
#: by an older mlbench, which recorded the first download unchecked) binds nothing.
VERIFIED_BY = ("published", "pinned", "content")


class Checksums:
    """`raw/checksums.json`: the sha256 (and size, mtime, how it was verified) of every file
    fetched, by name."""

    def __init__(self, raw: Path):
        self.path = raw / CHECKSUMS
        try:
            self.data: dict[str, dict[str, Any]] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.data = {}
        if not isinstance(self.data, dict):
            self.data = {}

    def get(self, name: str) -> dict[str, Any] | None:
        rec = self.data.get(name)
        return rec if isinstance(rec, dict) else None

    def trusted(self, name: str) -> dict[str, Any] | None:
        """The record of `name` if its sha256 was verified (see `VERIFIED_BY`), else None."""
        rec = self.get(name)
        return rec if rec and rec.get("verified") in VERIFIED_BY and rec.get("sha256") else None

    def record(self, name: str, path: Path, digests: tuple[str, str], source: str,
               verified: str) -> None:
        st = path.stat()
        self.data[name] = {"sha256": digests[0], "md5": digests[1], "size": st.st_size,
                           "mtime_ns": st.st_mtime_ns, "source": source, "verified": verified,
                           "date": time.strftime("%Y-%m-%d")}
        self._save()

    def forget(self, name: str) -> None:
        if self.data.pop(name, None) is not None:
            self._save()

    def _save(self) -> None:
        atomic_write_json(self.path, dict(sorted(self.data.items())))


def file_digests(path: Path, label: str | None = None) -> tuple[str, str]:
    """sha256 and md5 of a file, in one pass (with a progress bar for big files)."""
    from mlbench.console import progress

    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    size = path.stat().st_size
    with path.open("rb") as fh, progress(total=size, unit="B", unit_scale=True, unit_divisor=1024,
                                     desc=f"verify {label or path.name}", leave=False,
                                     disable=size < 256 << 20) as bar:
        while chunk := fh.read(CHUNK):
            sha.update(chunk)
            md5.update(chunk)
            bar.update(len(chunk))
    return sha.hexdigest(), md5.hexdigest()


def check_content(path: Path, name: str, limits: ExtractLimits) -> None:
    """Raise `UserError` unless `path` is plausibly the file `name` stands for.

    An archive must open and list (every zip member's CRC, a tar to the end of its compressed
    stream, within `limits`); a parquet file must carry its magic bytes at both ends; any
    other file must be non-empty and not an HTML page (a login or error page saved under the
    archive's name is the commonest bad download). What can be known without a published
    checksum, checked before a first download's sha256 becomes the one to expect.
    """
    lower = name.lower()
    if is_archive(Path(lower)):
        try:
            check_archive(path, limits, name)
        except ArchiveError as exc:
            raise UserError(exc.reason) from None
        return
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(512)
        fh.seek(max(0, size - 4))
        tail = fh.read(4)
    if not size:
        raise UserError(f"{name}: the file is empty")
    if lower.endswith(".parquet") and not (size >= 12 and head[:4] == b"PAR1"
                                           and tail == b"PAR1"):
        raise UserError(f"{name}: not a parquet file (no PAR1 magic at both ends)")
    if not lower.endswith((".html", ".htm")) and re.match(rb"\s*<(!doctype html|html)", head,
                                                          re.IGNORECASE):
        raise UserError(f"{name}: the server sent an HTML page, not the file")


def _verify(path: Path, remote: Remote, checksums: Checksums, ds: str, *, final: Path,
            limits: ExtractLimits) -> tuple[str, str, str]:
    """Check `path` (a fresh download, or `final` itself) against what is expected of it;
    return (sha256, md5, how it was verified).

    Expected is, in this order: the pinned sha256, the published checksum, the sha256 recorded
    when the file was first verified; with none, the content itself is checked (see
    `check_content`) before its sha256 is recorded. A fresh download that fails is deleted; so
    is a file in place that differs from its record (corrupt or tampered). A file that is the
    one verified before is never deleted for a pin that differs: the pin is what is wrong, and
    the message says which digest to pin.
    """
    sha, md5 = file_digests(path, remote.name)
    trusted = checksums.trusted(remote.name)
    fresh = path != final
    if remote.sha256 or remote.md5:
        algo, expected, got = ("sha256", remote.sha256, sha) if remote.sha256 else \
            ("md5", remote.md5 or "", md5)
        if got == expected.lower():
            return sha, md5, "pinned" if remote.pinned else "published"
        kind = f"{algo} ({'pinned in params.yaml' if remote.pinned else 'published'})"
        verified_before = trusted is not None and trusted["sha256"] == sha
        if verified_before or (remote.pinned and not fresh):
            # the pin is what is wrong, not a file that was verified (or placed) before
            if fresh:
                path.replace(final)
            what = (f"the file verified on {trusted.get('date', 'an earlier run')} "
                    f"({trusted['verified']})" if verified_before and trusted
                    else "the file in place")
            raise UserError(
                f"{remote.name}: {kind} is {expected}, but {final} is {what}, sha256 {sha}; "
                f"kept. If it is the file you expect, pin that digest (sources.{ds}.sha256: "
                f"{sha}); to fetch another, delete {final}")
        path.unlink(missing_ok=True)
        raise UserError(
            f"{remote.name}: checksum mismatch, {kind} is {expected} but the file has {got}; "
            f"refused and deleted. If the file is meant to differ (e.g. a test replica), pin "
            f"it: sources.{ds}.sha256: {sha}")
    if trusted:
        if trusted["sha256"] == sha:
            return sha, md5, str(trusted["verified"])
        path.unlink(missing_ok=True)
        raise UserError(
            f"{remote.name}: checksum mismatch, the file verified on "
            f"{trusted.get('date', 'an earlier run')} had sha256 {trusted['sha256']} (raw/"
            f"{CHECKSUMS}) but this one has {sha}; refused and deleted. If the source changed "
            f"on purpose, pin the new file: sources.{ds}.sha256: {sha}")
    try:
        check_content(path, remote.name, limits)
    except UserError as exc:
        if fresh:
            path.unlink(missing_ok=True)
            raise UserError(f"{remote.name}: bad download from {remote.where}: {exc}; deleted, "
                            f"nothing recorded: run the fetch again, or set MLBENCH_MIRROR / "
                            f"sources.{ds}.url") from None
        raise UserError(f"{final}: {exc}; delete it and fetch again") from None
    return sha, md5, "content"


def verified_file(raw: Path, remote: Remote, checksums: Checksums, ds: str,
                  limits: ExtractLimits = ExtractLimits()) -> str | None:
    """The sha256 of `raw/<name>` if present and intact (cheap when unchanged since recorded)."""
    dest = raw / remote.name
    if not dest.is_file():
        return None
    rec = checksums.trusted(remote.name)
    st = dest.stat()
    if (rec and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns
            and (not remote.sha256 or rec.get("sha256") == remote.sha256.lower())
            and (not remote.md5 or rec.get("md5") == remote.md5.lower())):
        return str(rec["sha256"])  # verified before and untouched since: no re-hash
    sha, md5, how = _verify(dest, remote, checksums, ds, final=dest, limits=limits)
    source = (checksums.get(remote.name) or {}).get("source") or remote.where
    checksums.record(remote.name, dest, (sha, md5), source, how)
    return sha


# -- the entry points sources call --------------------------------------------------------------
def fetch_files(ds: str, raw: Path, ctx: FetchContext, remotes: list[Remote]) -> dict[Path, str]:
    """Make every file of the dataset present and verified in `raw`; return path -> sha256."""
    resolved = resolve(ds, remotes, ctx)
    limits = extract_limits(ds, ctx.settings)
    retries = int(ctx.settings.get("retries", DEFAULT_RETRIES))
    revision = ctx.settings.get("revision")
    present: dict[Path, str] = {}
    try:
        raw.mkdir(parents=True, exist_ok=True)
        checksums = Checksums(raw)
        for remote in resolved:
            sha = verified_file(raw, remote, checksums, ds, limits)
            if sha is None:
                try:
                    staged = _download(remote, raw, retries=retries, revision=revision)
                except UserError:
                    if not remote.optional:
                        raise
                    from mlbench.console import warn

                    warn(f"{ds}: optional file {remote.name} not fetched from {remote.where}")
                    continue
                final = raw / remote.name
                sha, md5, how = _verify(staged, remote, checksums, ds, final=final,
                                        limits=limits)
                staged.replace(final)
                _sidecar(staged).unlink(missing_ok=True)
                checksums.record(remote.name, final, (sha, md5), remote.where, how)
            present[raw / remote.name] = sha
        clean_staging(raw)
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise disk_full(raw, f"fetching {ds}", None, "rerun the fetch") from None
    return present


def fetch_and_extract(ds: str, raw: Path, ctx: FetchContext,
                      remotes: list[Remote]) -> dict[Path, str]:
    """`fetch_files`, then extract every archive into `raw` (once; see `extract_archive`).

    An archive found damaged while extracting loses its checksum record, so that the advice
    to delete it and fetch again leads to a fresh, checked download (not to a mismatch with
    the bad file's digest).
    """
    files = fetch_files(ds, raw, ctx, remotes)
    limits = extract_limits(ds, ctx.settings)
    protected = frozenset([CHECKSUMS, *(p.name for p in files)])
    for path, sha in files.items():
        if is_archive(path):
            try:
                extract_archive(path, raw, sha256=sha, protected=protected, limits=limits)
            except DamagedArchive:
                checksums = Checksums(raw)
                if (checksums.get(path.name) or {}).get("verified") == "content":
                    checksums.forget(path.name)
                raise
    return files


def _download(remote: Remote, raw: Path, *, retries: int, revision: str | None) -> Path:
    """Download `remote` to a staging file in `raw` and return its path (not yet verified)."""
    if remote.url:
        part = raw / f"{remote.name}.part"
        if remote.url.startswith("file://"):
            copy_file_url(remote.url, part)
        else:
            download_http(remote.url, part, retries=retries)
        return part
    if remote.kaggle:
        return download_kaggle(remote.kaggle, raw / ".kaggle", remote.name)
    assert remote.hf_repo and remote.hf_path, f"{remote.name}: no location"
    return download_hf(remote.hf_repo, remote.hf_path, raw / ".hf", revision=revision)


def copy_file_url(url: str, part: Path) -> None:
    """A `file://` mirror (an offline disk or share): copy the file, with a progress bar."""
    from urllib.request import url2pathname

    from mlbench.console import progress

    src = Path(url2pathname(urlsplit(url).path))
    if not src.is_file():
        raise UserError(f"{url}: no such file; check MLBENCH_MIRROR / sources.<ds>.url")
    total = src.stat().st_size
    with _disk_full_says(part, total, "rerun the fetch"), src.open("rb") as fin, \
            part.open("wb") as fout, progress(total=total, unit="B", unit_scale=True,
                                          unit_divisor=1024, desc=src.name) as bar:
        while chunk := fin.read(CHUNK):
            fout.write(chunk)
            bar.update(len(chunk))


@contextmanager
def _disk_full_says(part: Path, total: int | None, then: str) -> Iterator[None]:
    """A full disk while writing `part` as one line: the file's size, where, what is free."""
    try:
        yield
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        name = part.name.removesuffix(".part")
        try:
            have = f"{human(part.stat().st_size)} of it already in {part.name}"
        except OSError:
            have = ""
        raise disk_full(part.parent, f"downloading {name}", total, then, detail=have) from None


# -- HTTP ---------------------------------------------------------------------------------------
def download_http(url: str, part: Path, *, retries: int = DEFAULT_RETRIES,
                  session: requests.Session | None = None,
                  sleep: Callable[[float], None] = time.sleep) -> None:
    """Download `url` into `part`, resuming whatever `part` already holds.

    Each attempt resumes from the bytes already in `part`. Returns when `part` holds the whole
    file; raises `ServiceError` after `retries` failed retries (the partial file stays, so the
    next run resumes from it), `UserError` on a 4xx answer.
    """
    import requests

    policy = RetryPolicy(max_attempts=retries + 1, base_delay=BACKOFF_BASE,
                         max_delay=BACKOFF_CAP, max_server_delay=BACKOFF_CAP)
    own = session is None
    session = session or requests.Session()
    try:
        policy.call(lambda _attempt: _download_once(session, url, part), f"download of {url}",
                    sleep=sleep)
    except ServiceCallError as exc:
        have = part.stat().st_size if part.exists() else 0
        raise ServiceError(f"{exc}; run the fetch again to resume from byte {have}, or set "
                           "MLBENCH_MIRROR / sources.<ds>.url") from None
    finally:
        if own:
            session.close()


def _sidecar(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _download_once(session: requests.Session, url: str, part: Path) -> None:
    import requests
    import urllib3

    meta_file = _sidecar(part)
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError):
        meta = {}
    have = part.stat().st_size if part.exists() else 0
    if have and meta.get("url") != url:  # a partial file of some other URL: start over
        part.unlink()
        have = 0
    headers = {"Accept-Encoding": "identity"}  # the bytes as stored, so checksums match
    if have:
        headers["Range"] = f"bytes={have}-"
        validator = meta.get("etag") or meta.get("last_modified")
        if validator:
            headers["If-Range"] = validator
    try:
        with session.get(url, headers=headers, stream=True, timeout=TIMEOUT) as resp:
            _receive(resp, url, part, have, meta_file)
    except (requests.ConnectionError, requests.Timeout, urllib3.exceptions.HTTPError,
            requests.exceptions.ChunkedEncodingError) as exc:
        raise RetryLater(f"{type(exc).__name__}: {exc}") from None


def _receive(resp: requests.Response, url: str, part: Path, have: int, meta_file: Path) -> None:
    from mlbench.console import progress

    status = resp.status_code
    if status == 416 and have:
        total = _content_range_total(resp.headers.get("Content-Range", ""))
        if total == have:
            return  # the partial file was already complete
        part.unlink()
        raise RetryLater("server refused the resume range; restarting")
    if status in _RETRY_STATUS:
        raise RetryLater(f"HTTP {status}", status=status,
                         after=retry_after_seconds(resp.headers))
    if status >= 400:
        raise UserError(f"download of {url} failed: HTTP {status} {resp.reason}; the file may be "
                        f"gone: set sources.<ds>.url or MLBENCH_MIRROR (docs/datasets.md)")
    if status == 206:
        start, total = _content_range(resp.headers.get("Content-Range", ""))
        if start != have:
            part.unlink(missing_ok=True)
            raise RetryLater(f"server resumed at byte {start}, not {have}; restarting")
        mode = "ab"
    else:  # 200: a full body (no resume support, or the file changed under If-Range)
        have, mode = 0, "wb"
        length = resp.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
    then = "rerun the fetch (it resumes from the bytes already downloaded)"
    with _disk_full_says(part, total, then):
        atomic_write_json(meta_file, {"url": url, "etag": resp.headers.get("ETag"),
                                      "last_modified": resp.headers.get("Last-Modified")})
    label = part.name.removesuffix(".part")
    with _disk_full_says(part, total, then), part.open(mode) as fh, progress(
        total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=label
    ) as bar:
        for chunk in resp.raw.stream(CHUNK, decode_content=False):
            fh.write(chunk)
            bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size != total:
        raise RetryLater(f"connection closed at byte {size} of {total}")
    meta_file.unlink(missing_ok=True)


def _content_range(value: str) -> tuple[int, int | None]:
    """`bytes 100-199/1000` -> (100, 1000); total None when `*`."""
    try:
        unit, rest = value.split(" ", 1)
        span, total = rest.split("/", 1)
        start = int(span.split("-", 1)[0])
        if unit != "bytes":
            raise ValueError(unit)
        return start, (None if total.strip() == "*" else int(total))
    except ValueError:
        raise RetryLater(f"malformed Content-Range {value!r}") from None


def _content_range_total(value: str) -> int | None:
    try:
        return int(value.rsplit("/", 1)[1])
    except (IndexError, ValueError):
        return None


# -- Kaggle -------------------------------------------------------------------------------------
def kaggle_credentials_present() -> bool:
    """The credential sources the official client reads, checked without importing it."""
    env = os.environ
    if (env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY")) or env.get("KAGGLE_API_TOKEN"):
        return True
    home = Path.home()
    dirs = [Path(env["KAGGLE_CONFIG_DIR"])] if env.get("KAGGLE_CONFIG_DIR") else [
        home / ".kaggle", Path(env.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"]
    files = [d / "kaggle.json" for d in dirs] + [home / ".kaggle" / "access_token",
                                                 home / ".kaggle" / "access_token.txt"]
    return any(f.is_file() and f.stat().st_size > 0 for f in files)


def _kaggle_missing(slug: str) -> UserError:
    return UserError(f"Kaggle credentials missing for {slug}: put kaggle.json in ~/.kaggle/ or "
                     f"set KAGGLE_USERNAME and KAGGLE_KEY ({KAGGLE_DOCS}), or set MLBENCH_MIRROR")


def download_kaggle(slug: str, staging: Path, name: str) -> Path:
    """Download Kaggle dataset `slug` as `<staging>/<name>` with the official client.

    The client resumes its own partial download in `staging` on a rerun.
    """
    if not kaggle_credentials_present():
        raise _kaggle_missing(slug)
    try:  # `import kaggle` authenticates at import and may call exit(1): keep it contained
        with needs_extra(f"downloading {slug} from Kaggle", "datasets"):
            from kaggle.api.kaggle_api_extended import KaggleApi

        api = KaggleApi()
        api.authenticate()
    except SystemExit:
        raise _kaggle_missing(slug) from None
    import requests

    staging.mkdir(parents=True, exist_ok=True)
    try:
        with _disk_full_says(staging / f"{name}.part", None, "rerun the fetch"):
            api.dataset_download_files(slug, path=str(staging), quiet=False, unzip=False)
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise UserError(f"Kaggle refused {slug} (HTTP {status}): check your credentials and accept "
                        f"the dataset's terms at https://www.kaggle.com/datasets/{slug}") from None
    except requests.ConnectionError:
        raise UserError(f"cannot reach Kaggle to download {slug}; set MLBENCH_MIRROR "
                        f"(docs/datasets.md)") from None
    path = staging / name
    if not path.is_file():
        raise UserError(f"Kaggle download of {slug} did not produce {name} in {staging}")
    return path


# -- Hugging Face -------------------------------------------------------------------------------
def download_hf(repo: str, path_in_repo: str, staging: Path, revision: str | None = None) -> Path:
    """Download one file of Hugging Face dataset `repo` (honours HF_ENDPOINT and HF_TOKEN)."""
    with needs_extra(f"downloading {repo} from the Hugging Face Hub", "datasets"):
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            GatedRepoError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
        )

    endpoint = os.environ.get("HF_ENDPOINT") or None
    where = endpoint or "https://huggingface.co"
    try:
        with _disk_full_says(staging / f"{Path(path_in_repo).name}.part", None,
                             "rerun the fetch"):
            local = hf_hub_download(repo_id=repo, filename=path_in_repo, repo_type="dataset",
                                    revision=revision, local_dir=staging,
                                    token=os.environ.get("HF_TOKEN") or None, endpoint=endpoint)
    except GatedRepoError:
        raise UserError(f"Hugging Face dataset {repo} is gated: accept its terms on {where} and "
                        f"set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise UserError(f"Hugging Face dataset {repo} not found on {where} (private? set "
                        f"HF_TOKEN)") from None
    except LocalEntryNotFoundError:
        raise UserError(f"cannot reach {where} to download {repo}/{path_in_repo}; set "
                        f"MLBENCH_MIRROR or HF_ENDPOINT (docs/datasets.md)") from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        raise UserError(f"Hugging Face refused {repo}/{path_in_repo} (HTTP {status}); check "
                        f"HF_TOKEN and the revision") from None
    return Path(local)


def clean_staging(raw: Path) -> None:
    """Drop the clients' staging folders once every file is in place."""
    for name in (".kaggle", ".hf"):
        shutil.rmtree(raw / name, ignore_errors=True)
