"""Nyckel: one image-classification function per (dataset, ablation), trained automatically.

- upload: finds or creates the function (`nyckel.functions.<ds>.<n>` in params.yaml, else the
  one recorded in the state folder, else one named `<function_prefix>-<ds>-<n>`), creates the
  labels, and posts the ablation's train + val images as annotated samples (Nyckel
  cross-validates internally), concurrently but under Nyckel's 25 requests/s. Each sample
  carries its file name as `externalId`; a local record plus Nyckel's 409 `existingSampleId`
  make a rerun send only what is missing and never duplicate a sample.
- train: Nyckel trains by itself; this polls the training status until the function reports
  a model trained on every sample. Training seconds = that moment minus the end of the upload.
- predict: `POST /v1/functions/<id>/invoke?capture=false` with the image as a data URI
  (`capture=false`, or every test image would become a sample of the function).

Credentials come from NYCKEL_CLIENT_ID / NYCKEL_CLIENT_SECRET; NYCKEL_API_URL overrides the API
base URL. See docs/services/nyckel.md.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from mlbench.cli_util import user_errors
from mlbench.errors import UserError
from mlbench.io import CsvAppender, atomic_write_json, read_json
from mlbench.params import SettingsBlock
from mlbench.services.base import (
    AblationSplit,
    ImageRef,
    ModelRef,
    Prediction,
    ServiceContext,
    register,
    utc_now,
)
from mlbench.services.http import HttpRequest, HttpService, ServiceCallError
from mlbench.services.nyckel.api import NYCKEL_MAX_IN_FLIGHT, NYCKEL_MAX_RPS, NyckelApi, data_uri
from mlbench.services.nyckel.auth import ClientCredentials, TokenProvider, api_url

STATE_FILE = "nyckel.json"
SAMPLES_FILE = "nyckel_samples.csv"
SAMPLES_HEADER = ("function_id", "external_id", "sample_id", "outcome")


@dataclass(frozen=True)
class NyckelSettings:
    """The `nyckel:` block of params.yaml, validated (a bad value names its key)."""

    functions: Mapping[str, Any]
    function_prefix: str = "mlbench"
    train_timeout: float = 3600.0
    poll_interval: float = 5.0
    upload_concurrency: int = 8
    rps: float = NYCKEL_MAX_RPS

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> NyckelSettings:
        block = SettingsBlock("nyckel", raw, cls.__dataclass_fields__)
        return cls(
            functions=block.mapping("functions", "dataset -> ablation -> function id"),
            function_prefix=block.text("function_prefix", cls.function_prefix),
            train_timeout=block.number("train_timeout", cls.train_timeout, 0, 7 * 24 * 3600,
                                       lo_open=True),
            poll_interval=block.number("poll_interval", cls.poll_interval, 0, 600,
                                       lo_open=True),
            upload_concurrency=block.number("upload_concurrency", cls.upload_concurrency, 1,
                                            NYCKEL_MAX_IN_FLIGHT, integer=True),
            rps=block.number("rps", cls.rps, 0, NYCKEL_MAX_RPS, lo_open=True),
        )

    def function_for(self, ds: str, n: int) -> str | None:
        """`nyckel.functions.<ds>.<n>` (YAML keys may be numbers or strings), if set."""
        per_ds = self.functions.get(ds)
        if per_ds is None:
            return None
        if not isinstance(per_ds, Mapping):
            raise UserError(f"params.yaml: nyckel.functions.{ds}: must map ablation sizes to "
                            f"function ids (one function per ablation), got {per_ds!r}")
        value = per_ds.get(n, per_ds.get(str(n)))
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise UserError(f"params.yaml: nyckel.functions.{ds}.{n}: must be a function id "
                            f"such as function_abc123, got {value!r}")
        return value.strip() if value else None


@register
class NyckelService(HttpService):
    """Nyckel's hosted image classification, driven entirely through its API."""

    name = "nyckel"
    max_rps = NYCKEL_MAX_RPS

    def __init__(self, ctx: ServiceContext):
        super().__init__(ctx)
        self.config = NyckelSettings.parse(self.settings)
        self.base_url = api_url()
        self._api: NyckelApi | None = None
        self._function_id: str | None = None
        self._invoke_url = ""

    # -- plumbing --------------------------------------------------------------------------------
    @property
    def api(self) -> NyckelApi:
        """The API client; reading the credentials here means nothing is sent without them."""
        if self._api is None:
            tokens = TokenProvider(ClientCredentials.from_env(), self.base_url)
            self._api = NyckelApi(tokens, self.base_url, rps=self.config.rps, retry=self.retry)
        return self._api

    @property
    def _state_path(self) -> Path:
        return self.ctx.state_dir / STATE_FILE

    def _state(self) -> dict[str, Any]:
        """What an earlier run recorded here, if it ran against the same API base URL."""
        try:
            state = read_json(self._state_path)
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) and state.get("api_url") == self.base_url else {}

    def _save_state(self, **updates: Any) -> dict[str, Any]:
        state = self._state()
        state.update(updates, api_url=self.base_url)
        atomic_write_json(self._state_path, state)
        return state

    def _param_key(self) -> str:
        return f"nyckel.functions.{self.ctx.dataset}.{self.ctx.ablation}"

    def function_name(self, split: AblationSplit) -> str:
        """`<prefix>-<ds>-<n>-<digest>`: the digest (of the ablation's files and classes) gives
        a changed ablation (new seed, new data) a new function instead of mixing samples."""
        rows = sorted(f"{img.filename}\t{img.class_name}" for img in split.all)
        digest = hashlib.sha256("\n".join(rows).encode()).hexdigest()[:8]
        return f"{self.config.function_prefix}-{split.dataset}-{split.size}-{digest}"

    def use_function(self, function_id: str, name: str | None = None) -> None:
        """Record `function_id` as this (dataset, ablation)'s function. `name` is the expected
        name when found or created here; without it the function was chosen by hand (params,
        `upload <function_id>`) and is kept whatever the ablation's digest."""
        self._function_id = function_id
        state = self._state()
        if state.get("function_id") != function_id:
            state = {"function_id": function_id}
        state.update(function_name=name, chosen_by_hand=name is None, api_url=self.base_url)
        atomic_write_json(self._state_path, state)

    def ensure_function(self, split: AblationSplit) -> str:
        """Params, then the state record, then a function of the expected name, else create."""
        if self._function_id:
            return self._function_id
        configured = self.config.function_for(self.ctx.dataset, self.ctx.ablation)
        if configured:
            fn = self.api.get_function(configured)
            if fn is None:
                raise UserError(f"params.yaml: {self._param_key()}: Nyckel has no function "
                                f"{configured!r} for these credentials")
            self._check_kind(fn, self._param_key())
            self.use_function(configured)
            return configured
        name = self.function_name(split)
        state = self._state()
        recorded = state.get("function_id")
        if (recorded and (state.get("chosen_by_hand") or state.get("function_name") == name)
                and self.api.get_function(recorded) is not None):
            self._function_id = recorded
            return recorded
        found = self.api.find_function(name)
        if found is None:
            found = str(self.api.create_function(name)["id"])
            _note(f"nyckel: created function {name} ({found})")
        self.use_function(found, name)
        return found

    @staticmethod
    def _check_kind(fn: Mapping[str, Any], where: str) -> None:
        if fn.get("input") != "Image" or fn.get("output") != "Classification":
            raise UserError(f"params.yaml: {where}: function {fn.get('id')} is "
                            f"{fn.get('input')}/{fn.get('output')}, not Image/Classification")

    # -- upload ----------------------------------------------------------------------------------
    def _recorded(self, function_id: str) -> dict[str, str]:
        """external id -> sample id of what earlier runs uploaded to this function."""
        path = self.ctx.state_dir / SAMPLES_FILE
        if not path.exists():
            return {}
        with path.open(newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.DictReader(fh) if r.get("function_id") == function_id
                    and r.get("sample_id")]
        return {r["external_id"]: r["sample_id"] for r in rows}

    def _upload_one(self, function_id: str, image: ImageRef) -> tuple[str, str, bool]:
        try:
            sample_id, created = self.api.post_sample(
                function_id, image.path.read_bytes(), image.class_name, image.filename
            )
        except ValueError as exc:  # not an image Nyckel takes: report it with the others
            raise ServiceCallError(f"{image.filename}: {exc}") from exc
        return image.filename, sample_id, created

    def upload(self, split: AblationSplit) -> None:
        """Labels + every train/val image as a sample; resumable, never duplicating."""
        from tqdm import tqdm

        if len(split.classes) < 2:
            raise UserError(f"{split.dataset}: Nyckel needs at least 2 classes")
        function_id = self.ensure_function(split)
        self.api.ensure_labels(function_id, split.classes)
        done = self._recorded(function_id)
        todo = [img for img in split.all if img.filename not in done]
        if not todo:
            self._save_state(samples=len(done))
            return
        failures: list[str] = []
        created_here = 0
        with CsvAppender(self.ctx.state_dir / SAMPLES_FILE, SAMPLES_HEADER) as log, \
                tqdm(total=len(split.all), initial=len(split.all) - len(todo), unit="img",
                     desc=f"nyckel upload {split.dataset}/{split.size}") as bar, \
                ThreadPoolExecutor(self.config.upload_concurrency) as pool:
            pending: set[Future[tuple[str, str, bool]]] = {
                pool.submit(self._upload_one, function_id, img) for img in todo
            }
            try:
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        try:
                            external_id, sample_id, created = fut.result()
                        except ServiceCallError as exc:
                            failures.append(str(exc))
                            continue
                        log.write([function_id, external_id, sample_id,
                                   "created" if created else "existing"])
                        created_here += created
                        bar.update(1)
            except BaseException:
                for fut in pending:
                    fut.cancel()
                raise
        if failures:
            raise ServiceCallError(
                f"nyckel: {len(failures)} of {len(todo)} samples failed (rerun to retry only "
                f"those); first: {failures[0]}"
            )
        if created_here:
            self._save_state(samples=len(self._recorded(function_id)),
                             upload_finished_epoch=time.time(), upload_finished_at=utc_now())
        else:
            # Everything was already on Nyckel (a lost record, rebuilt from 409s): the upload
            # ended earlier, and timing training from now would report ~0 s.
            self._save_state(samples=len(self._recorded(function_id)))

    # -- train -----------------------------------------------------------------------------------
    def train(self, split: AblationSplit) -> ModelRef:
        """Wait until Nyckel reports a model trained on every sample; time it from the upload."""
        from tqdm import tqdm

        function_id = self.ensure_function(split)
        state = self._state()
        timeout, interval = self.config.train_timeout, self.config.poll_interval
        start = time.monotonic()
        errors = 0
        with tqdm(total=int(timeout), unit="s", desc=f"nyckel training {function_id}",
                  bar_format="{desc}: {n}s elapsed (timeout {total}s)") as bar:
            while True:
                try:
                    trained = self.api.is_trained(function_id)
                    errors = 0
                except (RuntimeError, ValueError, AssertionError, OSError) as exc:
                    # The official client raises these on a non-200 (e.g. a token expired
                    # server-side): renew the token and poll again, but not forever.
                    errors += 1
                    self.api.tokens.invalidate()
                    self.api.forget_status_client(function_id)
                    if errors >= 5:
                        raise ServiceCallError(
                            f"nyckel: training status of {function_id} failed 5 times: {exc}"
                        ) from exc
                    trained = False
                elapsed = time.monotonic() - start
                bar.n = int(elapsed)
                bar.refresh()
                if trained:
                    break
                if elapsed >= timeout:
                    raise UserError(
                        f"nyckel: function {function_id} not trained after {timeout:g} s; rerun "
                        "to keep waiting (nothing is uploaded again), or raise "
                        "nyckel.train_timeout"
                    )
                time.sleep(min(interval, max(0.0, timeout - elapsed)))
        upload_end = state.get("upload_finished_epoch")
        if upload_end and state.get("trained_epoch", 0) >= upload_end:
            train_seconds = state.get("train_seconds")  # measured by an earlier run: keep it
        else:
            trained_epoch = time.time()
            train_seconds = max(0.0, trained_epoch - upload_end) if upload_end else None
            state = self._save_state(trained_epoch=trained_epoch, trained_at=utc_now(),
                                     train_seconds=train_seconds)
        return ModelRef(
            service=self.name,
            dataset=split.dataset,
            ablation=split.size,
            ids={"function_id": function_id},
            train_seconds=train_seconds,
            started_at=state.get("upload_finished_at"),
            finished_at=state.get("trained_at"),
            details={
                "function_name": state.get("function_name"),
                "samples": state.get("samples"),
                "labels": len(split.classes),
                "poll_interval_s": interval,
                "api_url": self.base_url,
                "train_seconds_note": None if train_seconds is not None else
                "upload finished in an earlier, unrecorded run: training time unknown",
            },
        )

    # -- predict ---------------------------------------------------------------------------------
    def connect(self, model: ModelRef) -> None:
        """Check the function exists and fetch a token now, so no call pays for it."""
        function_id = model.ids.get("function_id")
        if not function_id:
            raise UserError(f"{model.dataset}/{model.ablation}: model.json has no function_id; "
                            "rerun `mlbench train nyckel`")
        if self.api.get_function(function_id) is None:
            raise UserError(f"nyckel: function {function_id} (from model.json) no longer "
                            "exists; rerun `mlbench train nyckel`")
        self._function_id = function_id
        self._invoke_url = f"{self.base_url}/v1/functions/{function_id}/invoke"

    def build_request(self, image: bytes) -> HttpRequest:
        if not self._invoke_url:
            raise RuntimeError("NyckelService.connect() must be called before predict()")
        try:
            body = json.dumps({"data": data_uri(image)}).encode()
        except ValueError as exc:  # recorded as an error row, like any failed call
            raise ServiceCallError(f"nyckel: {exc}") from exc
        return HttpRequest(
            "POST",
            self._invoke_url,
            headers={"Authorization": f"Bearer {self.api.tokens.token()}",
                     "Content-Type": "application/json"},
            body=body,
            params={"capture": "false"},
        )

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> Prediction:
        try:
            answer = json.loads(body)
            confidence = float(answer.get("confidence") or 0.0)
        except (ValueError, AttributeError, TypeError) as exc:
            raise ServiceCallError(f"nyckel: malformed invoke answer: {body[:200]!r}",
                                   status) from exc
        scores = {
            str(lc["labelName"]): _unit(lc.get("confidence"))
            for lc in answer.get("labelConfidences") or []
            if isinstance(lc, dict) and lc.get("labelName") is not None
        }
        label = answer.get("labelName")
        return Prediction(str(label) if label is not None else None, _unit(confidence),
                          scores or None)

    def on_unauthorized(self) -> bool:
        self.api.tokens.invalidate()
        return True

    def close(self) -> None:
        super().close()
        if self._api is not None:
            self._api.close()


def _unit(value: Any) -> float:
    """A confidence clamped to [0, 1] (floating-point answers may stray by an ulp)."""
    try:
        return min(1.0, max(0.0, float(value)))
    except (TypeError, ValueError):
        return 0.0


def _note(message: str) -> None:
    from mlbench.console import err

    err.print(message)


# -- vendor commands: `mlbench nyckel ...` ---------------------------------------------------------
cli = typer.Typer(help="Nyckel: create functions, upload an ablation, check training status.",
                  no_args_is_help=True)

DatasetArg = Annotated[str, typer.Argument(help="Dataset name (see params.yaml datasets).")]
AblationArg = Annotated[int, typer.Argument(help="Ablation size, in images per class.")]


def _service(dataset: str, ablation: int) -> NyckelService:
    from mlbench import paths
    from mlbench.params import load_params

    ctx = ServiceContext(load_params(), dataset, ablation, paths.model_dir("nyckel", dataset,
                                                                           ablation))
    return NyckelService(ctx)


@cli.command()
@user_errors
def create(
    function_name: Annotated[str, typer.Argument(help="Name of the new function.")],
    dataset: Annotated[str | None, typer.Option(help="Record it as this dataset's function.")]
    = None,
    ablation: Annotated[int | None, typer.Option(help="... for this ablation size.")] = None,
) -> None:
    """Create an image-classification function; print its id and record it."""
    from mlbench import paths

    if (dataset is None) != (ablation is None):
        raise UserError("give both --dataset and --ablation, or neither")
    base = api_url()
    api = NyckelApi(TokenProvider(ClientCredentials.from_env(), base), base)
    try:
        function_id = str(api.create_function(function_name)["id"])
    finally:
        api.close()
    log = paths.RESULTS / "nyckel" / "functions.json"
    try:
        known = read_json(log) if log.exists() else []
    except ValueError:
        known = []
    known.append({"name": function_name, "id": function_id, "api_url": base,
                  "created_at": utc_now(), "dataset": dataset, "ablation": ablation})
    atomic_write_json(log, known)
    if dataset is not None and ablation is not None:
        _service(dataset, ablation).use_function(function_id)
    typer.echo(function_id)


@cli.command()
@user_errors
def upload(
    dataset: DatasetArg,
    ablation: AblationArg,
    function_id: Annotated[str | None, typer.Option(help="Use this function (else found or "
                                                          "created per dataset + ablation).")]
    = None,
    wait_trained: Annotated[bool, typer.Option("--wait/--no-wait",
                                               help="Wait for training, write model.json.")]
    = True,
) -> None:
    """Upload an ablation's images as samples (resumable); then wait for training."""
    from mlbench import paths
    from mlbench.data.ablate import load_split

    split = load_split(dataset, ablation)
    with _service(dataset, ablation) as svc:
        if function_id:
            svc.use_function(function_id)
        svc.upload(split)
        if wait_trained:
            model = svc.train(split)
            atomic_write_json(paths.model_json("nyckel", dataset, ablation), model.to_json())
            secs = "unknown" if model.train_seconds is None else f"{model.train_seconds:.0f}"
            typer.echo(f"{model.ids['function_id']} trained; training seconds: {secs}")


@cli.command()
@user_errors
def status(dataset: DatasetArg, ablation: AblationArg) -> None:
    """Show the function, the samples uploaded so far and whether it is trained."""
    from mlbench.data.ablate import load_split

    with _service(dataset, ablation) as svc:
        function_id = svc.config.function_for(dataset, ablation) or svc._state().get("function_id")
        if not function_id:
            typer.echo(f"no function yet for {dataset}/{ablation} "
                       f"(would be named {svc.function_name(load_split(dataset, ablation))})")
            return
        recorded = len(svc._recorded(function_id))
        trained = svc.api.is_trained(function_id)
        typer.echo(f"function {function_id}: {recorded} samples recorded, "
                   f"{'trained' if trained else 'not trained yet'}")
