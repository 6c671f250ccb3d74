"""Hugging Face's lifecycle: a model trained in the AutoTrain UI, served by a dedicated Inference
Endpoint that the user names in params.yaml (`huggingface.endpoints.<ds>.<n>`).

Training has no API here yet, so the harness adopts the hand-made endpoint: `adopt` checks it
answers (waiting out a cold start), records its URL, its model's label map and the training
time given in params. Without an endpoint, `submit` prints the AutoTrain steps and stops with
one line naming the missing key. `upload` sends nothing: AutoTrain takes the exported zips in
its UI. Predictions go through the shared HTTP path (`HttpService`) with the wire in `api.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mlbench import paths
from mlbench.console import err
from mlbench.core import AblationSplit, ModelRef, Prediction
from mlbench.errors import UserError
from mlbench.services.base import Job, ServiceContext
from mlbench.services.http import HttpRequest, HttpService
from mlbench.services.huggingface import api, export

AUTOTRAIN_URL = "https://huggingface.co/autotrain"


def autotrain_steps(ds: str, n: int) -> str:
    """What the user does by hand, in order (printed when the endpoint is not configured)."""
    return "\n".join([
        f"Hugging Face AutoTrain for {ds}, {n} images per class (training is UI-only):",
        f"  1. Open {AUTOTRAIN_URL}, create a project: task 'Image Classification'.",
        f"  2. Upload {export.autotrain_zip(ds, 'train', n)} as training data and "
        f"{export.autotrain_zip(ds, 'val', n)} as validation data (one folder per class;",
        f"     written by `mlbench export {ds}`). Start training; note its duration.",
        "  3. When done, open the model AutoTrain pushed (<user>/<project>) and deploy it:",
        "     Deploy > Inference Endpoints, task image-classification; copy the endpoint URL.",
        "  4. In params.yaml set",
        f"       huggingface: {{endpoints: {{{ds}: {{{n}: <endpoint url>}}}},",
        f"                     models: {{{ds}: {{{n}: <user>/<project>}}}},",
        f"                     train_seconds: {{{ds}: {{{n}: <seconds AutoTrain took>}}}}}}",
        f"     and export {api.ENV_TOKEN}=hf_... (a token that can call the endpoint); rerun.",
    ])


class HuggingFaceService(HttpService):
    """A Hugging Face Inference Endpoint serving an AutoTrain image classifier."""

    name = "huggingface"

    def __init__(self, ctx: ServiceContext):
        super().__init__(ctx)
        self.endpoint: api.Endpoint | None = None

    def model_settings(self) -> dict[str, Any]:
        """This ablation's model and training time only: editing another ablation's entry must
        not re-check this one's endpoint."""
        return {key: self.settings.of(key, self.ctx.dataset, self.ctx.ablation)
                for key in self.settings.MODEL_FIELDS}

    # -- training --------------------------------------------------------------------------------
    def upload(self, split: AblationSplit) -> None:
        """Nothing to send by API: AutoTrain takes the exported zips in its UI (see `submit`)."""

    def submit(self, split: AblationSplit) -> Job:
        """Training is UI-only: print the AutoTrain steps, then stop on the missing endpoint."""
        err.print(autotrain_steps(split.dataset, split.size), markup=False)
        raise self._no_endpoint()

    def wait(self, job: Job) -> ModelRef:
        """There is no job to follow: `submit` starts none until training is automated."""
        raise self._no_endpoint()

    def _no_endpoint(self) -> UserError:
        return UserError(f"params.yaml: {self.where()} is not set: train on AutoTrain, deploy an "
                         "Inference Endpoint and put its URL there (steps above)")

    def adopt(self, given: str) -> ModelRef:
        """The endpoint at `given`: checked to answer, with its model's label map and the
        training time from params (AutoTrain's is not readable by API)."""
        ds, n = self.ctx.dataset, self.ctx.ablation
        token = api.read_token()
        repo = self.settings.of("models", ds, n)
        id2label = api.load_id2label(repo, token, self.where("models"), self.retry) if repo \
            else {}
        self._open(given, token, id2label)
        seconds = self.settings.of("train_seconds", ds, n)
        return ModelRef(
            service=self.name, dataset=ds, ablation=n,
            ids={"endpoint_url": given, **({"model": repo} if repo else {})},
            train_seconds=seconds,
            details={
                "id2label": id2label,
                "train_seconds_source": "params.yaml (AutoTrain UI)" if seconds is not None
                else "unknown: set " + self.where("train_seconds"),
                "trained_by": "AutoTrain UI (manual)",
            },
        )

    def recorded(self) -> ModelRef | None:
        """model.json, else the endpoint given in params.yaml (not checked yet)."""
        model, given = super().recorded(), self.hand_given()
        if model is None and given:
            return ModelRef(self.name, self.ctx.dataset, self.ctx.ablation,
                            ids={"endpoint_url": given})
        return model

    # -- serving ---------------------------------------------------------------------------------
    def connect(self, model: ModelRef) -> None:
        url = model.ids.get("endpoint_url")
        if not url:
            raise UserError(f"{model.dataset}/{model.ablation}: model.json has no endpoint_url; "
                            "rerun `mlbench train huggingface`")
        token = api.read_token()
        id2label = dict(model.details.get("id2label") or {})
        if not id2label and model.ids.get("model"):
            id2label = api.load_id2label(model.ids["model"], token, self.where("models"),
                                         self.retry)
        self._open(url, token, id2label)

    def _open(self, url: str, token: str, id2label: dict[str, str]) -> None:
        self.endpoint = api.Endpoint(url, token, id2label, self.where("models"))
        if self.settings.warmup:
            api.warm_up(self.endpoint, self.retry, timeout=self.settings.warmup_timeout,
                        endpoints_key=self.where())

    def build_request(self, image: bytes) -> HttpRequest:
        if self.endpoint is None:
            raise RuntimeError("HuggingFaceService.connect() must be called before predict()")
        return self.endpoint.request(image)

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> Prediction:
        if self.endpoint is None:
            raise RuntimeError("HuggingFaceService.connect() must be called before predict()")
        return self.endpoint.answer(status, body)

    # -- vendor commands -------------------------------------------------------------------------
    def describe(self, model: ModelRef) -> str:
        """Said without calling the endpoint: a call would wake one scaled to zero (billed)."""
        checked = paths.model_json(self.name, model.dataset, model.ablation).exists()
        state = "checked by `mlbench train`" if checked else \
            f"given in params.yaml, not checked yet (`mlbench train huggingface {model.dataset}`)"
        labels = model.ids.get("model") or self.settings.of("models", model.dataset,
                                                             model.ablation)
        return (f"{model.ids.get('endpoint_url')}: {state}; labels from "
                f"{labels or 'the endpoint'}; bills while running ({api.ENDPOINTS_UI})")

    def teardown(self, model: ModelRef) -> str:
        return f"not automated: pause or delete the endpoint at {api.ENDPOINTS_UI}"


SERVICE = HuggingFaceService
