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
- **Integrity.** A published checksum (Food-101's MD5) or a pinned `sources.<ds>.sha256` is
  checked; otherwise the sha256 of the first download is recorded in `raw/checksums.json` and
  every later run (or re-download) must match it. A mismatching file is deleted and refused.
- **Idempotent.** A file already present whose size and mtime match its record is not even
  re-hashed; archives are extracted once (`mlbench.data.extract`).

Kaggle and Hugging Face go through their official clients, imported lazily, so a missing
credential is one `UserError` line (never the clients' own exit or traceback).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urlsplit

from mlbench.data.extract import extract_archive, is_archive
from mlbench.errors import ServiceCallError, ServiceError, UserError, needs_extra
from mlbench.io import atomic_write_json
from mlbench.retry import RETRY_STATUSES, RetryLater, RetryPolicy, retry_after_seconds

if TYPE_CHECKING:  # requests, urllib3 and tqdm load on first download: every CLI call imports
    import requests  # the dataset registry, and most calls never download anything


CHECKSUMS = "checksums.json"
KAGGLE_DOCS = "https://www.kaggle.com/docs/api#authentication"
SETTINGS = ("url", "sha256", "retries", "revision")
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
        if key == "retries" and (isinstance(value, bool) or not isinstance(value, int)
                                 or value < 0):
            raise UserError(f"params.yaml: sources.{ds}.retries: must be an integer >= 0, "
                            f"got {value!r}")
        if key == "revision" and not isinstance(value, str):
            raise UserError(f"params.yaml: sources.{ds}.revision: must be a string, got {value!r}")


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
        resolved = [replace(r, sha256=pinned[r.name].lower(), md5=None) if r.name in pinned else r
                    for r in resolved]
    return resolved


# -- checksums ----------------------------------------------------------------------------------
class Checksums:
    """`raw/checksums.json`: the sha256 (and size, mtime) of every file fetched, by name."""

    def __init__(self, raw: Path):
        self.path = raw / CHECKSUMS
        try:
            self.data: dict[str, dict[str, Any]] = json.loads(self.path.read_text())
        except (OSError, ValueError):
            self.data = {}

    def get(self, name: str) -> dict[str, Any] | None:
        return self.data.get(name)

    def record(self, name: str, path: Path, digests: tuple[str, str], source: str) -> None:
        st = path.stat()
        self.data[name] = {"sha256": digests[0], "md5": digests[1], "size": st.st_size,
                           "mtime_ns": st.st_mtime_ns, "source": source}
        atomic_write_json(self.path, dict(sorted(self.data.items())))


def file_digests(path: Path, label: str | None = None) -> tuple[str, str]:
    """sha256 and md5 of a file, in one pass (with a progress bar for big files)."""
    from tqdm import tqdm

    sha, md5 = hashlib.sha256(), hashlib.md5(usedforsecurity=False)
    size = path.stat().st_size
    with path.open("rb") as fh, tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024,
                                     desc=f"verify {label or path.name}", leave=False,
                                     disable=size < 256 << 20) as bar:
        while chunk := fh.read(CHUNK):
            sha.update(chunk)
            md5.update(chunk)
            bar.update(len(chunk))
    return sha.hexdigest(), md5.hexdigest()


def _verify(path: Path, remote: Remote, checksums: Checksums, ds: str) -> tuple[str, str]:
    """Check `path` against the published/pinned/recorded checksum; return (sha256, md5).

    A mismatching file is deleted and refused: it is corrupt, truncated or tampered with.
    """
    sha, md5 = file_digests(path, remote.name)
    recorded = checksums.get(remote.name)
    if remote.sha256:
        expected, got, kind = remote.sha256, sha, "sha256 (published or pinned)"
    elif remote.md5:
        expected, got, kind = remote.md5, md5, "md5 (published)"
    elif recorded:
        expected, got, kind = recorded["sha256"], sha, f"sha256 (recorded in raw/{CHECKSUMS})"
    else:
        return sha, md5
    if got != expected.lower():
        path.unlink(missing_ok=True)
        hint = (f"delete raw/{CHECKSUMS} if the source changed on purpose" if kind.startswith(
            "sha256 (recorded") else f"pin the new file with sources.{ds}.sha256 if it is meant "
                                    f"to differ (e.g. a test replica)")
        raise UserError(f"{remote.name}: checksum mismatch, {kind} is {expected} but the file has "
                        f"{got}; refused and deleted ({hint})")
    return sha, md5


def verified_file(raw: Path, remote: Remote, checksums: Checksums, ds: str) -> str | None:
    """The sha256 of `raw/<name>` if present and intact (cheap when unchanged since recorded)."""
    dest = raw / remote.name
    if not dest.is_file():
        return None
    rec = checksums.get(remote.name)
    st = dest.stat()
    if (rec and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns
            and (not remote.sha256 or rec.get("sha256") == remote.sha256.lower())
            and (not remote.md5 or rec.get("md5") == remote.md5.lower())):
        return str(rec["sha256"])  # verified before and untouched since: no re-hash
    digests = _verify(dest, remote, checksums, ds)
    checksums.record(remote.name, dest, digests, (rec or {}).get("source") or remote.where)
    return digests[0]


# -- the entry points sources call --------------------------------------------------------------
def fetch_files(ds: str, raw: Path, ctx: FetchContext, remotes: list[Remote]) -> dict[Path, str]:
    """Make every file of the dataset present and verified in `raw`; return path -> sha256."""
    raw.mkdir(parents=True, exist_ok=True)
    resolved = resolve(ds, remotes, ctx)
    retries = int(ctx.settings.get("retries", DEFAULT_RETRIES))
    revision = ctx.settings.get("revision")
    checksums = Checksums(raw)
    present: dict[Path, str] = {}
    for remote in resolved:
        sha = verified_file(raw, remote, checksums, ds)
        if sha is None:
            try:
                staged = _download(remote, raw, retries=retries, revision=revision)
            except UserError:
                if not remote.optional:
                    raise
                from mlbench.console import warn

                warn(f"{ds}: optional file {remote.name} not fetched from {remote.where}")
                continue
            digests = _verify(staged, remote, checksums, ds)
            staged.replace(raw / remote.name)
            checksums.record(remote.name, raw / remote.name, digests, remote.where)
            sha = digests[0]
        present[raw / remote.name] = sha
    clean_staging(raw)
    return present


def fetch_and_extract(ds: str, raw: Path, ctx: FetchContext,
                      remotes: list[Remote]) -> dict[Path, str]:
    """`fetch_files`, then extract every archive into `raw` (once; see `extract_archive`)."""
    files = fetch_files(ds, raw, ctx, remotes)
    protected = frozenset([CHECKSUMS, *(p.name for p in files)])
    for path, sha in files.items():
        if is_archive(path):
            extract_archive(path, raw, sha256=sha, protected=protected)
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

    from tqdm import tqdm

    src = Path(url2pathname(urlsplit(url).path))
    if not src.is_file():
        raise UserError(f"{url}: no such file; check MLBENCH_MIRROR / sources.<ds>.url")
    with src.open("rb") as fin, part.open("wb") as fout, tqdm(
        total=src.stat().st_size, unit="B", unit_scale=True, unit_divisor=1024, desc=src.name
    ) as bar:
        while chunk := fin.read(CHUNK):
            fout.write(chunk)
            bar.update(len(chunk))


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
    from tqdm import tqdm

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
    atomic_write_json(meta_file, {"url": url, "etag": resp.headers.get("ETag"),
                                  "last_modified": resp.headers.get("Last-Modified")})
    part.parent.mkdir(parents=True, exist_ok=True)
    label = part.name.removesuffix(".part")
    with part.open(mode) as fh, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                                     unit_divisor=1024, desc=label) as bar:
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
