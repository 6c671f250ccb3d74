"""The Vertex AI control plane: the generated `google.cloud.aiplatform_v1` clients over REST.

Why these clients and not the high-level `google.cloud.aiplatform` SDK: its classes block
inside `run()`/`deploy()` and only then reveal what they created (a crash mid-training would
lose the pipeline and a rerun would pay for a second one), and it takes ~3 s to import. The
generated clients return a long-running operation at once, so its name is recorded before any
waiting; they take an `http://` api_endpoint, which is how the tests reach a local fake.

Every call goes through the one retry policy with `retry=None` given to the client, so only
ours retries: 429/503 (refused, not processed) always, other 5xx and dropped connections only
for calls that are safe to repeat. A create call that may have happened is not blindly repeated:
the run stops with "rerun to continue" and the rerun finds the resource by its label. A 401
is renewed once by google-auth's session; a 401/403 after that is the user's to fix.

The generated clients take 1.3 s to import; they are loaded on first use (`v1` is a lazy
module), so the many stage processes that only read what was recorded (a `train`, `evaluate`
or `load` stage after `submit` and `measure` did the work) never pay for them.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any, TypeVar

import google.auth
import requests
from google.api_core import exceptions as gexc
from google.api_core.client_options import ClientOptions
from google.auth import exceptions as auth_exc
from google.longrunning import operations_pb2

from mlbench import redact
from mlbench.errors import ServiceCallError, ServiceError, UserError
from mlbench.retry import RetryLater, RetryPolicy, retry_after_seconds

T = TypeVar("T")
SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]
CREDENTIALS_ENV = "GOOGLE_APPLICATION_CREDENTIALS"
IMAGE_METADATA_SCHEMA = "gs://google-cloud-aiplatform/schema/dataset/metadata/image_1.0.0.yaml"
SINGLE_LABEL_IO = ("gs://google-cloud-aiplatform/schema/dataset/ioformat/"
                   "image_classification_single_label_io_format_1.0.0.yaml")
AUTOML_IMAGE_CLASSIFICATION = ("gs://google-cloud-aiplatform/schema/trainingjob/definition/"
                               "automl_image_classification_1.0.0.yaml")
ML_USE_FILTER = "labels.aiplatform.googleapis.com/ml_use={}"


def lazy_module(name: str) -> ModuleType:
    """The module `name`, executed on its first attribute access (`importlib.util.LazyLoader`);
    ModuleNotFoundError now, as an import would, when it is not installed (a missing extra)."""
    module = sys.modules.get(name)
    if module is not None:
        return module
    spec = None if name in sys.modules else importlib.util.find_spec(name)  # None: blocked
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


v1 = lazy_module("google.cloud.aiplatform_v1")
_LOADING = threading.Lock()


def load_clients() -> None:
    """Execute the lazy `v1` now, once, under a lock (LazyLoader is not thread-safe before
    Python 3.12, and `submit` opens many Vertex runs in threads). Every use of `v1` comes
    after a `VertexApi`, which calls this first."""
    with _LOADING:
        v1.PipelineState  # noqa: B018 - the attribute access is what loads it


def pipeline_failed(state: int) -> bool:
    return state in (v1.PipelineState.PIPELINE_STATE_FAILED,
                     v1.PipelineState.PIPELINE_STATE_CANCELLED)


def pipeline_succeeded(state: int) -> bool:
    return state == v1.PipelineState.PIPELINE_STATE_SUCCEEDED


def pipeline_done(state: int) -> bool:
    return pipeline_failed(state) or pipeline_succeeded(state)

#: gRPC codes of a failed operation or pipeline that the user must act on: bad input (3),
#: permission (7), quota (8), a failed precondition such as too few images (9), credentials (16).
USER_CODES = frozenset({3, 7, 8, 9, 16})
#: Refused without being processed: safe to send again, even a create.
_REFUSED = (gexc.TooManyRequests, gexc.ServiceUnavailable)
_SERVER = (gexc.InternalServerError, gexc.BadGateway, gexc.GatewayTimeout)


class TokenSource:
    """google-auth credentials -> a bearer token for the predict calls; thread-safe."""

    def __init__(self, credentials: Any):
        self.credentials = credentials
        self._lock = threading.Lock()

    @classmethod
    def from_environment(cls) -> TokenSource:
        """Application-default credentials with the cloud-platform scope, or one-line UserError."""
        try:
            creds, _ = google.auth.default(scopes=SCOPES)
        except auth_exc.DefaultCredentialsError as exc:
            hint = f" ({one_line(exc)[:160]})" if str(exc).strip() else ""
            raise UserError(f"Vertex AI needs Google credentials: set {CREDENTIALS_ENV} to a "
                            f"service-account key file (or run `gcloud auth "
                            f"application-default login`){hint}") from None
        return cls(creds)

    def token(self, force: bool = False) -> str:
        from google.auth.transport.requests import Request

        with self._lock:
            if force or not self.credentials.valid:
                try:
                    self.credentials.refresh(Request())
                except auth_exc.GoogleAuthError as exc:
                    raise UserError(f"Google rejected the credentials ({CREDENTIALS_ENV}): "
                                    f"{one_line(exc)}") from None
                redact.remember(self.credentials.token)  # scrubbed from any error echoing it
            return str(self.credentials.token)


def one_line(value: object) -> str:
    return " ".join(str(value).split())[:300]


def failure(what: str, code: int, message: str, hint: str) -> Exception:
    """A vendor-side failure (an operation's or a pipeline's `error`): the user's to fix when
    its code says so (quota, bad input, too few images), else Vertex's."""
    text = f"vertex: {what}: {message or 'no message'}; {hint}"
    return UserError(text) if code in USER_CODES else ServiceError(text)


def _verdict(exc: Exception, what: str, create: bool, attempt: int) -> Exception:
    """What an attempt raises for a failed call: RetryLater, UserError or ServiceCallError."""
    if isinstance(exc, auth_exc.RefreshError):
        return UserError(f"Google rejected the credentials ({CREDENTIALS_ENV}): {one_line(exc)}")
    status = exc.code if isinstance(exc, gexc.GoogleAPICallError) else None
    why = f"HTTP {status}: {one_line(exc.message)}" if isinstance(exc, gexc.GoogleAPICallError) \
        else f"{type(exc).__name__}: {one_line(exc)}"
    if isinstance(exc, gexc.Forbidden | gexc.Unauthorized):  # 403 / 401 (once renewed)
        return UserError(f"{what}: {why}; check that the Vertex AI API is enabled in the "
                         f"project, that the credentials ({CREDENTIALS_ENV}) have the Vertex AI "
                         "User role, and that the bucket is theirs to write")
    transient = status is None or isinstance(exc, _SERVER)
    if isinstance(exc, _REFUSED) or (transient and not create):
        headers = getattr(getattr(exc, "response", None), "headers", None) or {}
        return RetryLater(f"{what}: {why}", status=status, after=retry_after_seconds(headers))
    if transient:
        why += "; it may have been done: rerun to continue (the rerun finds it by its label)"
    return ServiceCallError(f"{what}: {why}", status, attempt)


def guarded(retry: RetryPolicy, what: str, fn: Callable[[], T], *, create: bool = False,
            missing_ok: bool = False) -> T | None:
    """`fn()` (one Google call) through the retry policy; None for a 404 when `missing_ok`."""
    def attempt(n: int) -> T | None:
        try:
            return fn()
        except gexc.NotFound as exc:
            if missing_ok:
                return None
            raise _verdict(exc, what, create, n) from None
        except (gexc.GoogleAPICallError, requests.RequestException,
                auth_exc.GoogleAuthError) as exc:
            raise _verdict(exc, what, create, n) from None

    return retry.call(attempt, what)


class VertexApi:
    """The calls on `projects/<project>/locations/<region>` of one API endpoint."""

    def __init__(self, base_url: str, project: str, region: str, credentials: Any,
                 retry: RetryPolicy):
        load_clients()
        self.parent = f"projects/{project}/locations/{region}"
        self.retry = retry
        options = ClientOptions(api_endpoint=base_url)
        self.datasets, self.pipelines, self.endpoints, self.models = (
            cls(transport="rest", credentials=credentials, client_options=options)
            for cls in (v1.DatasetServiceClient, v1.PipelineServiceClient,
                        v1.EndpointServiceClient, v1.ModelServiceClient))

    def close(self) -> None:
        for client in (self.datasets, self.pipelines, self.endpoints, self.models):
            client.transport.close()

    def _call(self, what: str, method: Callable[..., T], *, create: bool = False,
              missing_ok: bool = False, **request: Any) -> T:
        return guarded(self.retry, f"Vertex AI {what}",
                       lambda: method(**request, retry=None, timeout=self.retry.timeout),
                       create=create, missing_ok=missing_ok)

    # -- reads -----------------------------------------------------------------------------------
    def get(self, name: str) -> Any | None:
        """A dataset, pipeline, endpoint or model by resource name; None when it is gone."""
        method = {"datasets": self.datasets.get_dataset,
                  "trainingPipelines": self.pipelines.get_training_pipeline,
                  "endpoints": self.endpoints.get_endpoint,
                  "models": self.models.get_model}[name.split("/")[-2]]
        return self._call(f"get {name}", method, missing_ok=True, name=name)

    def find(self, kind: str, filter_: str) -> list[Any]:
        """Every dataset/trainingPipeline/endpoint matching a label filter (all pages)."""
        method = {"datasets": self.datasets.list_datasets,
                  "trainingPipelines": self.pipelines.list_training_pipelines,
                  "endpoints": self.endpoints.list_endpoints}[kind]
        return self._call(f"list {kind}", lambda **kw: list(method(**kw)),
                          request={"parent": self.parent, "filter": filter_})

    def operation(self, name: str) -> operations_pb2.Operation:
        return self._call(f"get {name}", self.datasets.get_operation, request={"name": name})

    # -- creates (each returns what names it at once) --------------------------------------------
    def create_dataset(self, display: str, labels: Mapping[str, str]) -> str:
        """Start creating an image dataset; the operation's name."""
        op = self._call("create dataset", self.datasets.create_dataset, create=True,
                        parent=self.parent, dataset=v1.Dataset(
                            display_name=display, metadata_schema_uri=IMAGE_METADATA_SCHEMA,
                            labels=labels))
        return op.operation.name

    def import_data(self, dataset: str, uri: str) -> str:
        op = self._call("import data", self.datasets.import_data, create=True, name=dataset,
                        import_configs=[v1.ImportDataConfig(
                            gcs_source=v1.GcsSource(uris=[uri]),
                            import_schema_uri=SINGLE_LABEL_IO)])
        return op.operation.name

    def create_pipeline(self, display: str, labels: Mapping[str, str], dataset: str,
                        inputs: Mapping[str, Any]) -> v1.TrainingPipeline:
        """An AutoML image classification pipeline on the import's `ml_use` filter split."""
        split = v1.FilterSplit(training_filter=ML_USE_FILTER.format("training"),
                               validation_filter=ML_USE_FILTER.format("validation"),
                               test_filter=ML_USE_FILTER.format("test"))
        return self._call("create training pipeline", self.pipelines.create_training_pipeline,
                          create=True, parent=self.parent, training_pipeline=v1.TrainingPipeline(
                              display_name=display, labels=labels,
                              input_data_config=v1.InputDataConfig(
                                  dataset_id=dataset.rsplit("/", 1)[1], filter_split=split),
                              model_to_upload=v1.Model(display_name=display, labels=labels),
                              training_task_definition=AUTOML_IMAGE_CLASSIFICATION,
                              training_task_inputs=dict(inputs)))

    def create_endpoint(self, display: str, labels: Mapping[str, str]) -> str:
        op = self._call("create endpoint", self.endpoints.create_endpoint, create=True,
                        parent=self.parent,
                        endpoint=v1.Endpoint(display_name=display, labels=labels))
        return op.operation.name

    def deploy(self, endpoint: str, model: str, display: str, replicas: tuple[int, int]) -> str:
        op = self._call("deploy model", self.endpoints.deploy_model, create=True,
                        endpoint=endpoint, traffic_split={"0": 100},
                        deployed_model=v1.DeployedModel(
                            model=model, display_name=display,
                            automatic_resources=v1.AutomaticResources(
                                min_replica_count=replicas[0], max_replica_count=replicas[1])))
        return op.operation.name

    def undeploy(self, endpoint: str, deployed_model_id: str) -> str:
        op = self._call("undeploy model", self.endpoints.undeploy_model, endpoint=endpoint,
                        deployed_model_id=deployed_model_id)
        return op.operation.name


def resource_of(op_name: str) -> str:
    """`projects/.../datasets/1/operations/2` -> `projects/.../datasets/1`."""
    return op_name.split("/operations/", 1)[0]


def model_of(pipeline: v1.TrainingPipeline) -> str:
    """The model a succeeded pipeline uploaded (without a `@version` suffix), or ''."""
    name = pipeline.model_to_upload.name or (
        f"{pipeline.name.split('/trainingPipelines/')[0]}/models/{pipeline.model_id}"
        if pipeline.model_id else "")
    return name.split("@", 1)[0]


def deployed_models(endpoint: v1.Endpoint | None) -> dict[str, str]:
    """Deployed model id -> model name (without `@version`) of an endpoint."""
    return {} if endpoint is None else {
        dm.id: dm.model.split("@", 1)[0] for dm in endpoint.deployed_models}
