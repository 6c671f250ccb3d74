"""Nyckel's lifecycle: one image-classification function per (dataset, ablation).

- upload: the function (recorded in the state folder, else found by its deterministic name,
  else created), its labels, and the ablation's train + val images as annotated samples
  (Nyckel cross-validates internally; the rows of `export.samples`), concurrently but under
  `nyckel.rps`. Each sample carries its file name as `externalId`; the upload log plus Nyckel's
  409 `existingSampleId` make a rerun send only what is missing and never duplicate a sample.
- submit: nothing to start (Nyckel trains by itself on every change): the job is the function
  and the moment the upload ended.
- wait: until the official client reports a model trained on every sample. Training seconds =
  that moment minus the end of the upload.
- adopt: a function made by hand (`nyckel.endpoints.<ds>.<n>`), checked to be an image
  classifier.
- predict: `POST /v1/functions/<id>/invoke?capture=false` with the image as a data URI
  (`capture=false`, or every test image would become a sample of the function).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any

from mlbench import paths
from mlbench.console import err
from mlbench.core import AblationSplit, ImageRef, ModelRef, Prediction, utc_now
from mlbench.errors import ServiceCallError, UserError
from mlbench.services.base import Job, ServiceContext
from mlbench.services.cloud import StateStore, UploadLog, wait_for
from mlbench.services.http import HttpRequest, HttpService, best_of
from mlbench.services.nyckel.api import IMAGE_CLASSIFICATION, NyckelApi, data_uri, kind
from mlbench.services.nyckel.auth import ClientCredentials, TokenProvider, api_url
from mlbench.services.nyckel.export import samples
from mlbench.services.nyckel.settings import NYCKEL_MAX_RPS

STATE_FILE = "nyckel.json"
SAMPLES_FILE = "nyckel_samples.csv"
#: Every function `mlbench nyckel create` made, by id (to find and delete them later).
FUNCTIONS_LOG = paths.RESULTS / "nyckel" / "functions.json"

Sample = tuple[ImageRef, tuple[str, str]]


class NyckelService(HttpService):
    """Nyckel's hosted image classification, driven entirely through its API."""

    name = "nyckel"
    max_rps = NYCKEL_MAX_RPS

    def __init__(self, ctx: ServiceContext):
        super().__init__(ctx)
        self.base_url = api_url()
        self.state = StateStore(ctx.state_dir / STATE_FILE, {"api_url": self.base_url})
        self.samples_log = UploadLog(ctx.state_dir / SAMPLES_FILE)
        self._api: NyckelApi | None = None
        self._invoke_url = ""

    @property
    def api(self) -> NyckelApi:
        """The API client; reading the credentials here means nothing is sent without them."""
        if self._api is None:
            self._api = _api(self.base_url, self.settings.rps, self.retry)
        return self._api

    @classmethod
    def create_function(cls, name: str, **note: Any) -> str:
        """A new function (`mlbench nyckel create`), listed in results/nyckel/functions.json."""
        base = api_url()
        api = _api(base, NYCKEL_MAX_RPS, cls.retry)
        try:
            function_id = api.create_function(name)
        finally:
            api.close()
        entry = {"name": name, "api_url": base, "created_at": utc_now(), **note}
        StateStore(FUNCTIONS_LOG).update(**{function_id: entry})
        return function_id

    # -- the function ----------------------------------------------------------------------------
    def function_name(self, split: AblationSplit) -> str:
        """`<prefix>-<ds>-<n>-<digest>`: the digest (of the samples' names and labels) gives a
        changed ablation (new seed, new data) a new function instead of mixing samples."""
        rows = sorted("\t".join(row) for _, row in samples(split))
        digest = hashlib.sha256("\n".join(rows).encode()).hexdigest()[:8]
        return f"{self.settings.function_prefix}-{split.dataset}-{split.size}-{digest}"

    def checked(self, function_id: str, where: str) -> dict[str, Any]:
        """The function, if it exists and classifies images; else a UserError naming `where`."""
        fn = self.api.get_function(function_id)
        if fn is None:
            raise UserError(f"{where}: Nyckel has no function {function_id!r} for these "
                            "credentials")
        if kind(fn) != IMAGE_CLASSIFICATION:
            raise UserError(f"{where}: function {function_id} is {'/'.join(map(str, kind(fn)))}, "
                            "not Image/Classification")
        return fn

    def choose(self, function_id: str, where: str) -> None:
        """Make a function chosen by hand this run's function (`mlbench nyckel create|upload`),
        kept whatever the ablation's digest."""
        self.checked(function_id, where)
        self._record(function_id, None)

    def _record(self, function_id: str, name: str | None) -> None:
        """Record the run's function; `name` None: chosen by hand. Another function starts the
        record afresh (its samples, upload and training times are not this one's)."""
        if self.state.get("function_id") != function_id:
            self.state.reset(function_id=function_id)
        self.state.update(function_name=name, chosen_by_hand=True if name is None else None)

    def function(self, split: AblationSplit) -> str:
        """The recorded function (chosen by hand, or of the expected name), else the one of the
        expected name in the account, else a new one."""
        name = self.function_name(split)
        recorded = self.state.get("function_id")
        if (recorded and (self.state.get("chosen_by_hand") or
                          self.state.get("function_name") == name)
                and self.api.get_function(recorded) is not None):
            return recorded
        found = self.api.find_function(name)
        if found is None:
            found = self.api.create_function(name)
            err.print(f"nyckel: created function {name} ({found})")
        self._record(found, name)
        return found

    # -- training --------------------------------------------------------------------------------
    def upload(self, split: AblationSplit) -> None:
        """Labels + every train/val image as a sample; resumable, never duplicating."""
        if len(split.classes) < 2:
            raise UserError(f"{split.dataset}: Nyckel needs at least 2 classes")
        function_id = self.function(split)
        self.api.ensure_labels(function_id, split.classes)
        done = self.samples_log.done(function_id)
        todo = [s for s in samples(split) if s[1][0] not in done]
        created = self._send(function_id, todo, len(split.all)) if todo else 0
        record: dict[str, Any] = {"samples": len(self.samples_log.done(function_id)),
                                  "labels": len(split.classes)}
        if created:
            # else everything was on Nyckel already (or a lost record was rebuilt from 409s):
            # the upload ended earlier, and timing training from now would report ~0 s
            record.update(upload_finished_epoch=time.time(), upload_finished_at=utc_now())
        self.state.update(**record)

    def _upload_one(self, function_id: str, sample: Sample) -> tuple[str, bool]:
        ref, (external_id, label) = sample
        try:
            return self.api.post_sample(function_id, ref.path.read_bytes(), label, external_id)
        except ValueError as exc:  # not an image Nyckel takes: report it with the others
            raise ServiceCallError(f"{external_id}: {exc}") from exc

    def _send(self, function_id: str, todo: list[Sample], total: int) -> int:
        """Post `todo` `upload_concurrency` at a time, logging each outcome as it comes; the
        number created. Failed samples are reported together at the end."""
        from mlbench.console import progress

        failures: list[str] = []
        created = 0
        with self.samples_log.writer() as log, \
                progress(total=total, initial=total - len(todo), unit="img",
                     desc=f"nyckel upload {self.ctx.dataset}/{self.ctx.ablation}") as bar, \
                ThreadPoolExecutor(self.settings.upload_concurrency) as pool:
            futures = {pool.submit(self._upload_one, function_id, s): s[1][0] for s in todo}
            try:
                for fut in as_completed(futures):
                    try:
                        sample_id, new = fut.result()
                    except ServiceCallError as exc:
                        failures.append(str(exc))
                        continue
                    log.write([function_id, futures[fut], sample_id,
                               "created" if new else "existing"])
                    created += new
                    bar.update(1)
            except BaseException:
                for fut in futures:
                    fut.cancel()
                raise
        if failures:
            raise ServiceCallError(f"nyckel: {len(failures)} of {len(todo)} samples failed "
                                   f"(rerun to retry only those); first: {failures[0]}")
        return created

    def submit(self, split: AblationSplit) -> Job:
        """Nyckel trains by itself: nothing to start, only what `wait` times from."""
        return Job(split.dataset, split.size, {
            "function_id": self.function(split),
            "upload_finished_epoch": self.state.get("upload_finished_epoch")})

    def wait(self, job: Job) -> ModelRef:
        """Until Nyckel reports a model trained on every sample; timed from the upload's end."""
        function_id = job.ids["function_id"]

        def check() -> tuple[bool, str, None]:
            trained = self.api.is_trained(function_id)
            return trained, "trained" if trained else "training", None

        wait_for(check, what=f"nyckel training {function_id}", every=self.settings.poll_interval,
                 timeout=self.settings.train_timeout,
                 hint="Nyckel goes on training: rerun to keep waiting (nothing is uploaded "
                      "again), or raise nyckel.train_timeout")
        upload_end = job.ids.get("upload_finished_epoch")
        if upload_end and self.state.get("trained_epoch", 0) >= upload_end:
            train_seconds = self.state.get("train_seconds")  # measured by an earlier run: keep it
        else:
            trained = time.time()
            train_seconds = max(0.0, trained - upload_end) if upload_end else None
            self.state.update(trained_epoch=trained, trained_at=utc_now(),
                              train_seconds=train_seconds)
        return ModelRef(
            service=self.name, dataset=job.dataset, ablation=job.ablation,
            ids={"function_id": function_id}, train_seconds=train_seconds,
            started_at=self.state.get("upload_finished_at"),
            finished_at=self.state.get("trained_at"),
            details={"function_name": self.state.get("function_name"),
                     "samples": self.state.get("samples"), "labels": self.state.get("labels"),
                     "poll_interval_s": self.settings.poll_interval, "api_url": self.base_url,
                     "train_seconds_note": None if train_seconds is not None else
                     "upload finished in an earlier, unrecorded run: training time unknown"},
        )

    def adopt(self, given: str) -> ModelRef:
        """The function named in `nyckel.endpoints.<ds>.<n>`; its training time when this run
        folder measured it (`mlbench nyckel upload --function-id ... --wait`)."""
        fn = self.checked(given, f"params.yaml: {self.where()}")
        mine = self.state.get("function_id") == given
        return ModelRef(
            service=self.name, dataset=self.ctx.dataset, ablation=self.ctx.ablation,
            ids={"function_id": given},
            train_seconds=self.state.get("train_seconds") if mine else None,
            started_at=self.state.get("upload_finished_at") if mine else None,
            finished_at=self.state.get("trained_at") if mine else None,
            details={"function_name": fn.get("name"), "source": self.where(),
                     "api_url": self.base_url})

    def recorded(self) -> ModelRef | None:
        """model.json, else the function given or recorded here (uploaded, not yet trained)."""
        model = super().recorded()
        function_id = self.hand_given() or self.state.get("function_id")
        if model is None and function_id:
            model = ModelRef(self.name, self.ctx.dataset, self.ctx.ablation,
                             ids={"function_id": function_id})
        return model

    def describe(self, model: ModelRef) -> str:
        function_id = model.ids.get("function_id", "")
        if self.api.get_function(function_id) is None:
            return f"function {function_id}: gone (deleted at Nyckel?)"
        trained = self.api.is_trained(function_id)
        return (f"function {function_id}: {len(self.samples_log.done(function_id))} samples "
                f"recorded, {'trained' if trained else 'not trained yet'}")

    # -- serving ---------------------------------------------------------------------------------
    def connect(self, model: ModelRef) -> None:
        """Check the function exists and fetch a token now, so no timed call pays for it."""
        function_id = model.ids.get("function_id")
        if not function_id:
            raise UserError(f"{model.dataset}/{model.ablation}: model.json has no function_id; "
                            "rerun `mlbench train nyckel`")
        if self.api.get_function(function_id) is None:
            raise UserError(f"nyckel: function {function_id} (from model.json) no longer "
                            "exists; rerun `mlbench train nyckel`")
        self._invoke_url = f"{self.base_url}/v1/functions/{function_id}/invoke"

    def build_request(self, image: bytes) -> HttpRequest:
        if not self._invoke_url:
            raise RuntimeError("NyckelService.connect() must be called before predict()")
        try:
            body = json.dumps({"data": data_uri(image)}).encode()
        except ValueError as exc:  # recorded as an error row, like any failed call
            raise ServiceCallError(f"nyckel: {exc}") from exc
        return HttpRequest("POST", self._invoke_url, body=body, params={"capture": "false"},
                           headers={"Authorization": f"Bearer {self.api.tokens.token()}",
                                    "Content-Type": "application/json"})

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> Prediction:
        """`labelName` + `confidence`, and `labelConfidences` when Nyckel sends them."""
        try:
            answer = json.loads(body)
            named = [(answer["labelName"], answer.get("confidence") or 0.0)] \
                if answer.get("labelName") is not None else []
            ranked = [(lc["labelName"], lc.get("confidence") or 0.0)
                      for lc in answer.get("labelConfidences") or []]
            return best_of([(str(label), float(c)) for label, c in named + ranked])
        except (ValueError, AttributeError, TypeError, KeyError) as exc:
            raise ServiceCallError(f"nyckel: malformed invoke answer: {body[:200]!r}",
                                   status) from exc

    def on_unauthorized(self) -> bool:
        self.api.tokens.invalidate()
        return True

    def close(self) -> None:
        super().close()
        if self._api is not None:
            self._api.close()


def _api(base_url: str, rps: float, retry: Any) -> NyckelApi:
    tokens = TokenProvider(ClientCredentials.from_env(), base_url, retry=retry)
    return NyckelApi(tokens, base_url, rps=rps, retry=retry)


SERVICE = NyckelService
