"""Hugging Face: a model trained in the AutoTrain UI, served by a dedicated Inference Endpoint.

Training cannot be driven by API: `train` explains the AutoTrain steps and reads the deployed
endpoint's URL from params.yaml (`huggingface.endpoints.<ds>.<n>`, or one URL per dataset), then
checks the endpoint answers (waiting out a cold start). Predictions are raw POSTs of the image
bytes with their Content-Type and `Authorization: Bearer $HF_TOKEN`, answered
`[{"label", "score"}, ...]`; a 503 "loading" waits `estimated_time` and retries.

Why a raw POST rather than `huggingface_hub.InferenceClient`: the shared HTTP path
(`HttpService`) times every call the same way for every service, counts retries, and has an
async twin for the load test; and `InferenceClient` sends raw bytes without a Content-Type,
which the endpoints' inference toolkit rejects.

Endpoints often answer `LABEL_<i>`: the model's `config.json` `id2label` maps them back to class
names. It is fetched with `huggingface_hub` (honouring HF_ENDPOINT) from the repo named in
`huggingface.models.<ds>.<n>` (or a local config.json / model folder path) and kept in model.json.
"""

from __future__ import annotations

import io
import json
import os
import re
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlbench import paths
from mlbench.errors import UserError
from mlbench.params import SettingsBlock
from mlbench.services.base import AblationSplit, ModelRef, Prediction, ServiceContext, register
from mlbench.services.http import (
    HttpRequest,
    HttpService,
    ServiceCallError,
    image_mime,
    parse_label_scores,
)

ENV_TOKEN = "HF_TOKEN"
LABEL_ID = re.compile(r"LABEL_(\d+)")
AUTOTRAIN_URL = "https://huggingface.co/autotrain"


@dataclass(frozen=True)
class HuggingFaceSettings:
    """The `huggingface:` block of params.yaml, validated (a bad value names its key)."""

    endpoints: Mapping[str, Any]
    models: Mapping[str, Any]
    train_seconds: Mapping[str, Any]
    warmup: bool = True
    warmup_timeout: float = 900.0

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> HuggingFaceSettings:
        block = SettingsBlock("huggingface", raw, cls.__dataclass_fields__)
        shape = "dataset -> value (or dataset -> ablation -> value)"
        return cls(
            endpoints=block.mapping("endpoints", shape),
            models=block.mapping("models", shape),
            train_seconds=block.mapping("train_seconds", shape),
            warmup=block.boolean("warmup", cls.warmup),
            warmup_timeout=block.number("warmup_timeout", cls.warmup_timeout, 0, lo_open=True),
        )

    def lookup(self, key: str, ds: str, n: int) -> Any:
        """`huggingface.<key>.<ds>.<n>`, or `huggingface.<key>.<ds>` when that is one value."""
        per_ds = getattr(self, key).get(ds)
        if isinstance(per_ds, Mapping):
            return per_ds.get(n, per_ds.get(str(n)))
        return per_ds


def load_id2label(ref: str, token: str | None, where: str) -> dict[str, str]:
    """`id2label` of a model: from a local config.json (or folder), else from the Hub repo."""
    local = Path(ref).expanduser()
    if local.is_dir():
        local = local / "config.json"
    if local.is_file():
        text = local.read_text()
    elif ref.endswith(".json") or ref.startswith((".", "/", "~")):
        raise UserError(f"params.yaml: {where}: {ref} does not exist")
    else:
        text = _download_config(ref, token, where)
    try:
        mapping = json.loads(text).get("id2label") or {}
    except (ValueError, AttributeError):
        raise UserError(f"params.yaml: {where}: {ref}'s config.json is not a JSON object") from None
    if not isinstance(mapping, dict) or not mapping:
        raise UserError(f"params.yaml: {where}: {ref}'s config.json has no id2label")
    return {str(k): str(v) for k, v in mapping.items()}


def _download_config(repo_id: str, token: str | None, where: str) -> str:
    """config.json through huggingface_hub; HF_ENDPOINT (a mirror or a fake) is read now, not at
    import, and the file goes to a throwaway cache (it is kept in model.json instead)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    try:
        with tempfile.TemporaryDirectory(prefix="mlbench-hf-") as cache:
            path = hf_hub_download(repo_id, "config.json", token=token or False, cache_dir=cache,
                                   endpoint=os.environ.get("HF_ENDPOINT") or None)
            return Path(path).read_text()
    except HFValidationError:
        raise UserError(f"params.yaml: {where}: {repo_id!r} is not a Hub repo id "
                        "(<user>/<model>) nor an existing path") from None
    except (HfHubHTTPError, LocalEntryNotFoundError) as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        raise UserError(f"params.yaml: {where}: cannot read config.json of {repo_id} from the "
                        f"Hub (HTTP {status}); check the repo id and that {ENV_TOKEN} can read "
                        "it") from None


def autotrain_steps(ds: str, n: int, key: str) -> str:
    """What the user does by hand, in order (printed when the endpoint is not configured)."""
    return "\n".join([
        f"Hugging Face AutoTrain for {ds}, {n} images per class (training is UI-only):",
        f"  1. Open {AUTOTRAIN_URL}, create a project: task 'Image Classification'.",
        f"  2. Upload {paths.autotrain_zip(ds, 'train', n)} as training data and "
        f"{paths.autotrain_zip(ds, 'val', n)} as validation data (one folder per class;",
        f"     made by `mlbench folders {ds}`). Start training; note its duration.",
        "  3. When done, open the model AutoTrain pushed (<user>/<project>) and deploy it:",
        "     Deploy > Inference Endpoints, task image-classification; copy the endpoint URL.",
        "  4. In params.yaml set",
        f"       huggingface: {{endpoints: {{{ds}: {{{n}: <endpoint url>}}}},",
        f"                     models: {{{ds}: {{{n}: <user>/<project>}}}},",
        f"                     train_seconds: {{{ds}: {{{n}: <seconds AutoTrain took>}}}}}}",
        f"     and export {ENV_TOKEN}=hf_... (a token that can call the endpoint); rerun.",
        f"  (missing now: {key})",
    ])


def _probe_image() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (127, 127, 127)).save(buf, format="PNG")
    return buf.getvalue()


@register
class HuggingFaceService(HttpService):
    """A Hugging Face Inference Endpoint serving an AutoTrain image classifier."""

    name = "huggingface"

    def __init__(self, ctx: ServiceContext):
        super().__init__(ctx)
        self.config = HuggingFaceSettings.parse(self.settings)
        self._url = ""
        self._token = ""
        self._id2label: dict[str, str] = {}

    def _key(self, what: str) -> str:
        return f"huggingface.{what}.{self.ctx.dataset}.{self.ctx.ablation}"

    def _read_token(self) -> str:
        token = os.environ.get(ENV_TOKEN, "").strip()
        if not token:
            raise UserError(f"Hugging Face token missing: set {ENV_TOKEN} to a token that can "
                            "call your Inference Endpoint (huggingface.co/settings/tokens)")
        return token

    # -- upload / train --------------------------------------------------------------------------
    def upload(self, split: AblationSplit) -> None:
        """Nothing to send by API: AutoTrain takes the zips in its UI (see `train`)."""

    def train(self, split: AblationSplit) -> ModelRef:
        """Read the endpoint of the UI-trained model, check it answers, record the label map."""
        key = self._key("endpoints")
        url = self.config.lookup("endpoints", split.dataset, split.size)
        if not url:
            from mlbench.console import err

            err.print(autotrain_steps(split.dataset, split.size, key), markup=False)
            raise UserError(f"params.yaml: {key} is not set: train on AutoTrain, deploy an "
                            "Inference Endpoint and put its URL there (steps above)")
        return self.model_ref(url, split.dataset, split.size)

    def model_ref(self, url: Any, ds: str, n: int) -> ModelRef:
        """Check the endpoint at `url` answers and describe it (ids, label map, training time)."""
        key = f"huggingface.endpoints.{ds}.{n}"
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise UserError(f"params.yaml: {key}: must be the endpoint's http(s) URL, got {url!r}")
        self._token = self._read_token()
        model_ref = self.config.lookup("models", ds, n)
        if model_ref is not None and not isinstance(model_ref, str):
            raise UserError(f"params.yaml: {self._key('models')}: must be a Hub repo id or a "
                            f"path, got {model_ref!r}")
        id2label = (load_id2label(model_ref, self._token, self._key("models"))
                    if model_ref else {})
        self._connect(url, id2label)
        seconds = self.config.lookup("train_seconds", ds, n)
        if seconds is not None and (isinstance(seconds, bool)
                                    or not isinstance(seconds, int | float) or seconds < 0):
            raise UserError(f"params.yaml: {self._key('train_seconds')}: must be a number of "
                            f"seconds, got {seconds!r}")
        return ModelRef(
            service=self.name,
            dataset=ds,
            ablation=n,
            ids={"endpoint_url": url, **({"model": model_ref} if model_ref else {})},
            train_seconds=float(seconds) if seconds is not None else None,
            details={
                "id2label": id2label,
                "train_seconds_source": "params.yaml (AutoTrain UI)" if seconds is not None
                else "unknown: set " + self._key("train_seconds"),
                "trained_by": "AutoTrain UI (manual)",
            },
        )

    # -- predict ---------------------------------------------------------------------------------
    def connect(self, model: ModelRef) -> None:
        url = model.ids.get("endpoint_url")
        if not url:
            raise UserError(f"{model.dataset}/{model.ablation}: model.json has no endpoint_url; "
                            "rerun `mlbench train huggingface`")
        self._token = self._read_token()
        id2label = dict(model.details.get("id2label") or {})
        if not id2label and model.ids.get("model"):
            id2label = load_id2label(model.ids["model"], self._token, self._key("models"))
        self._connect(url, id2label)

    def _connect(self, url: str, id2label: dict[str, str]) -> None:
        self._url, self._id2label = url, id2label
        if self.config.warmup:
            self._warm_up()

    def _warm_up(self) -> None:
        """One call before any timed one: wait out a cold start (503 + estimated_time), and
        turn a wrong URL or token into a clear error instead of a column of error rows."""
        import requests

        deadline = time.monotonic() + self.config.warmup_timeout
        probe = _probe_image()
        attempt = 0
        while True:
            attempt += 1
            req = self.build_request(probe)
            try:
                resp = requests.post(req.url, data=req.body, headers=dict(req.headers),
                                     timeout=self.retry.timeout)
            except requests.RequestException as exc:
                status, body, headers, why = None, b"", {}, type(exc).__name__
            else:
                status, body, headers = resp.status_code, resp.content, resp.headers
                why = f"HTTP {status}"
            if status is not None and 200 <= status < 300:
                self.parse_response(status, headers, body)  # LABEL_n without a map fails here
                return
            if status in (401, 403):
                raise UserError(f"the endpoint refused {ENV_TOKEN} (HTTP {status}): use a token "
                                f"that can call {self._url}")
            if status in (404, 405):
                raise UserError(f"{self._url} answered HTTP {status}: check "
                                f"{self._key('endpoints')} in params.yaml")
            delay = self.retry_delay(status, headers, body, attempt) if status else None
            if status is not None and delay is None:
                raise ServiceCallError(f"warm-up call to {self._url}: {why}: {body[:200]!r}",
                                       status, attempt)
            left = deadline - time.monotonic()
            if left <= 0:
                raise UserError(f"{self._url} not ready after {self.config.warmup_timeout:g} s "
                                f"({why}); retry later or raise huggingface.warmup_timeout")
            time.sleep(min(left, max(delay or self.retry.backoff(attempt), 0.01)))

    def build_request(self, image: bytes) -> HttpRequest:
        if not self._url:
            raise RuntimeError("HuggingFaceService.connect() must be called before predict()")
        try:
            ctype = image_mime(image)
        except ValueError as exc:  # recorded as an error row, like any failed call
            raise ServiceCallError(f"huggingface: {exc}") from exc
        return HttpRequest("POST", self._url, body=image, headers={
            "Authorization": f"Bearer {self._token}",
            "Content-Type": ctype,
            "Accept": "application/json",
        })

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> Prediction:
        return parse_label_scores(body, status, who="huggingface", rename=self.class_name)

    def class_name(self, label: str) -> str:
        """The dataset's class for an endpoint label (`LABEL_3` -> id2label["3"])."""
        m = LABEL_ID.fullmatch(label)
        if m is None or label in self._id2label.values():
            return label
        if m[1] in self._id2label:
            return self._id2label[m[1]]
        if self._id2label:
            raise UserError(f"the endpoint answers {label} but the id2label of "
                            f"{self._key('models')} has no id {m[1]}: is it the endpoint's model?")
        raise UserError(f"the endpoint answers {label}, not class names: set "
                        f"{self._key('models')} in params.yaml to the model's Hub repo id (or a "
                        "local config.json) so its id2label can name the classes")
