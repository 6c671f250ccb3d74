"""The Hugging Face wire of a deployed endpoint: its image classification, its warm-up, and a
hand-given model's `config.json` from the Hub (the control plane is in `hub.py`).

An endpoint takes `POST <url>` with the image's bytes as they are on disk, their Content-Type
and `Authorization: Bearer $HF_TOKEN`, and answers `[{"label", "score"}, ...]`; while a replica
starts it answers `503 {"error": "... is currently loading", "estimated_time": <s>}`. Many
AutoTrain deployments answer `LABEL_<i>`: the model's `config.json` `id2label` names them, read
through `huggingface_hub` (which honours HF_ENDPOINT: a mirror, or the test fake).

Why a raw POST rather than `huggingface_hub.InferenceClient`: the shared HTTP path
(`HttpService`) times every service's calls the same way, counts retries and has an async twin
for the load test; and given raw bytes, `InferenceClient` sends no Content-Type, which the
endpoints' inference toolkit rejects.

Every call goes through the one retry policy; what a refusal means (a token, a URL, a repo id to
fix) becomes a one-line `UserError` naming what to change.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import requests
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

from mlbench.core import Prediction
from mlbench.errors import ServiceCallError, ServiceError, UserError
from mlbench.retry import RETRY_STATUSES, GaveUp, RetryLater, RetryPolicy
from mlbench.services.http import HttpRequest, image_mime, judge, parse_label_scores

ENV_TOKEN = "HF_TOKEN"
LABEL_ID = re.compile(r"LABEL_(\d+)")
#: Where a user pauses or deletes an endpoint (it bills while it runs).
ENDPOINTS_UI = "https://ui.endpoints.huggingface.co"
#: The shortest wait between two warm-up calls (a server may ask for 0 s).
WARMUP_MIN_WAIT = 0.05


def read_token() -> str:
    """HF_TOKEN, required before anything is sent (never printed nor written)."""
    token = os.environ.get(ENV_TOKEN, "").strip()
    if not token:
        raise UserError(f"Hugging Face token missing: set {ENV_TOKEN} to a token with write "
                        "access (repos, Jobs, Inference Endpoints; for a hand-given endpoint one "
                        "that can call it): huggingface.co/settings/tokens")
    return token


# -- the model's label names -------------------------------------------------------------------
def load_id2label(ref: str, token: str, where: str, policy: RetryPolicy) -> dict[str, str]:
    """`id2label` of a model: from a local config.json (or model folder), else from the Hub
    repo `ref`. `where` is the params key that named it, for messages."""
    local = Path(ref).expanduser()
    if local.is_dir():
        local = local / "config.json"
    if local.is_file():
        text = local.read_text()
    elif ref.endswith(".json") or ref.startswith((".", "/", "~")):
        raise UserError(f"params.yaml: {where}: {ref} does not exist")
    else:
        text = policy.call(lambda _: _download_config(ref, token, where),
                           f"config.json of {ref} from the Hub")
    try:
        mapping = json.loads(text).get("id2label") or {}
    except (ValueError, AttributeError):
        raise UserError(f"params.yaml: {where}: {ref}'s config.json is not a JSON object") from None
    if not isinstance(mapping, dict) or not mapping:
        raise UserError(f"params.yaml: {where}: {ref}'s config.json has no id2label")
    return {str(k): str(v) for k, v in mapping.items()}


def _hub_status(exc: BaseException) -> int | None:
    """The HTTP status behind a huggingface_hub error (None: the Hub was not reached)."""
    for error in (exc, exc.__cause__):
        response = getattr(error, "response", None)
        if response is not None:
            return response.status_code
    return None


def _download_config(repo_id: str, token: str, where: str) -> str:
    """One download of config.json. HF_ENDPOINT is read now, not at import; the file goes to a
    throwaway cache (it is kept in model.json instead). huggingface_hub retries a 429/5xx or a
    dropped connection itself before it raises; a Hub still failing is worth another attempt,
    a refusal is the user's to fix."""
    try:
        with tempfile.TemporaryDirectory(prefix="mlbench-hf-") as cache:
            path = hf_hub_download(repo_id, "config.json", token=token or False, cache_dir=cache,
                                   endpoint=os.environ.get("HF_ENDPOINT") or None)
            return Path(path).read_text()
    except HFValidationError:
        raise UserError(f"params.yaml: {where}: {repo_id!r} is not a Hub repo id "
                        "(<user>/<model>) nor an existing path") from None
    except (HfHubHTTPError, LocalEntryNotFoundError) as exc:
        status = _hub_status(exc)
        if status is None or status in RETRY_STATUSES:
            raise RetryLater(f"HTTP {status}" if status else "Hub not reachable",
                             status=status) from None
        raise UserError(f"params.yaml: {where}: cannot read config.json of {repo_id} from the "
                        f"Hub (HTTP {status}); check the repo id and that {ENV_TOKEN} can read "
                        "it") from None


# -- the endpoint ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Endpoint:
    """A deployed Inference Endpoint: its URL, the token that calls it, and the label map of
    its model (`models_key`: the params key that names that model, for messages)."""

    url: str
    token: str
    id2label: Mapping[str, str]
    models_key: str

    def request(self, image: bytes) -> HttpRequest:
        try:
            ctype = image_mime(image)
        except ValueError as exc:  # recorded as an error row, like any failed call
            raise ServiceCallError(f"huggingface: {exc}") from exc
        return HttpRequest("POST", self.url, body=image, headers={
            "Authorization": f"Bearer {self.token}",
            "Content-Type": ctype,
            "Accept": "application/json",
        })

    def answer(self, status: int, body: bytes) -> Prediction:
        return parse_label_scores(body, status, who="huggingface", rename=self.class_name)

    def class_name(self, label: str) -> str:
        """The dataset's class for an endpoint label (`LABEL_3` -> id2label["3"])."""
        m = LABEL_ID.fullmatch(label)
        if m is None or label in self.id2label.values():
            return label
        if m[1] in self.id2label:
            return self.id2label[m[1]]
        if self.id2label:
            raise UserError(f"the endpoint answers {label} but the id2label of "
                            f"{self.models_key} has no id {m[1]}: is it the endpoint's model?")
        raise UserError(f"the endpoint answers {label}, not class names: set {self.models_key} "
                        "in params.yaml to the model's Hub repo id (or a local config.json) so "
                        "its id2label can name the classes")


def probe_image() -> bytes:
    """A small grey PNG: what the warm-up sends."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (127, 127, 127)).save(buf, format="PNG")
    return buf.getvalue()


def warm_up(endpoint: Endpoint, base: RetryPolicy, *, timeout: float, endpoints_key: str
            ) -> Prediction:
    """One call before any timed one: wait out a cold start (503 + estimated_time, 5xx, a
    dropped connection) for up to `timeout` seconds, and turn a wrong token or URL into one
    clear line instead of a column of error rows. `endpoints_key` names the URL's params key.

    It is the service's own retry policy with a time budget instead of an attempt count: a
    server's `estimated_time` is honoured up to all of it, and no wait runs past it."""
    policy = replace(base, max_attempts=None, max_seconds=timeout, max_server_delay=timeout,
                     min_delay=WARMUP_MIN_WAIT)
    probe = probe_image()

    def attempt(n: int) -> Prediction:
        req = endpoint.request(probe)
        try:
            resp = session.request(req.method, req.url, headers=dict(req.headers), data=req.body,
                                   timeout=policy.timeout)
        except requests.RequestException as exc:
            raise RetryLater(type(exc).__name__) from None
        status, body = resp.status_code, resp.content
        if status in (401, 403):
            raise UserError(f"the endpoint refused {ENV_TOKEN} (HTTP {status}): use a token that "
                            f"can call {endpoint.url}")
        if status in (404, 405):
            raise UserError(f"{endpoint.url} answered HTTP {status}: check {endpoints_key} in "
                            "params.yaml")
        try:
            judge(status, resp.headers, body, can_renew=False)
        except ServiceCallError as exc:  # any other 4xx: no later call will do better
            raise ServiceCallError(f"warm-up call to {endpoint.url}: {exc}", status, n) from None
        return endpoint.answer(status, body)  # LABEL_<i> without a label map stops here

    with requests.Session() as session:
        try:
            return policy.call(attempt, f"warm-up of {endpoint.url}")
        except GaveUp as exc:  # still starting at the vendor when the budget ran out
            raise ServiceError(f"{endpoint.url} not ready after {timeout:g} s ({exc}); retry "
                               "later or raise huggingface.warmup_timeout") from None
