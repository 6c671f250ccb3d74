"""The Vertex resources of one run, each created exactly once: dataset, import, training
pipeline, endpoint, deployment.

Every step first looks for what exists, in this order: the name recorded in the run's state
file (`vertex.json`), then a resource carrying the run's fingerprint label
(`labels.mlbench_run`), and only then creates one, writing its name (or its long-running
operation's name) to the state file before waiting on it. So a crash anywhere, even one that
loses the state file, never makes a second dataset, pipeline or endpoint: the rerun finds the
first ones and waits on them. A step that failed on Vertex's side (an operation with an
`error`, a FAILED pipeline) is forgotten, so the rerun tries it afresh.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlbench.console import err, warn
from mlbench.errors import UserError
from mlbench.io import atomic_write_json
from mlbench.services.vertex.api import ApiError, VertexApi, resource_of
from mlbench.services.vertex.settings import VertexSettings

IMAGE_METADATA_SCHEMA = "gs://google-cloud-aiplatform/schema/dataset/metadata/image_1.0.0.yaml"
SINGLE_LABEL_IO = ("gs://google-cloud-aiplatform/schema/dataset/ioformat/"
                   "image_classification_single_label_io_format_1.0.0.yaml")
AUTOML_IMAGE_CLASSIFICATION = ("gs://google-cloud-aiplatform/schema/trainingjob/definition/"
                               "automl_image_classification_1.0.0.yaml")
ML_USE_FILTER = "labels.aiplatform.googleapis.com/ml_use={}"
SUCCEEDED = "PIPELINE_STATE_SUCCEEDED"
FAILED = {"PIPELINE_STATE_FAILED", "PIPELINE_STATE_CANCELLED"}


def note(message: str) -> None:
    err.print(f"vertex: {message}")


@dataclass
class RunState:
    """The run's record, saved atomically on every change (None removes a key)."""

    path: Path
    data: dict[str, Any]

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def save(self, **updates: Any) -> None:
        for k, v in updates.items():
            if v is None:
                self.data.pop(k, None)
            else:
                self.data[k] = v
        atomic_write_json(self.path, self.data)


@dataclass(frozen=True)
class RunNames:
    """How the run's resources are named and labelled.

    `key` fingerprints everything the model depends on (images, labels, budget, model type);
    `data_key` only the imported data, so a new budget trains on the same dataset.
    """

    key: str
    data_key: str
    display: str
    labels: dict[str, str]

    @property
    def filter(self) -> str:
        return f'labels.mlbench_run="{self.key}"'

    @property
    def data_filter(self) -> str:
        return f'labels.mlbench_data="{self.data_key}"'


class Lifecycle:
    """Drive one run's resources to "model deployed", resuming whatever exists."""

    def __init__(self, api: VertexApi, config: VertexSettings, state: RunState,
                 names: RunNames):
        self.api, self.config, self.state, self.names = api, config, state, names

    def _wait(self, op_name: str, what: str, timeout: float, forget: Callable[[], None]
              ) -> dict[str, Any]:
        try:
            return self.api.wait_operation(op_name, what, timeout, self.config.poll_seconds)
        except ApiError:
            forget()
            raise

    def _earliest(self, collection: str, keep: Callable[[dict[str, Any]], bool] = bool,
                  filter_: str | None = None) -> dict[str, Any] | None:
        found = [r for r in self.api.list(collection, filter_ or self.names.filter) if keep(r)]
        if not found:
            return None
        first = sorted(found, key=lambda r: r.get("createTime", ""))[0]
        note(f"found {first['name']} of an earlier run")
        return first

    # -- dataset + import ------------------------------------------------------------------------
    def dataset(self) -> str:
        api, st = self.api, self.state
        name = st.get("dataset")
        if name and api.get(name) is None:
            warn(f"vertex: recorded dataset {name} is gone; making a new one")
            st.save(dataset=None, dataset_op=None, dataset_ready=None, import_op=None,
                    imported=None)
            name = None
        if not name:
            found = self._earliest("datasets", filter_=self.names.data_filter)
            if found:
                name = found["name"]
                st.save(dataset=name, dataset_ready=True)
        if not name:
            op = api.call("POST", f"{api.parent}/datasets", {
                "displayName": self.names.display, "metadataSchemaUri": IMAGE_METADATA_SCHEMA,
                "labels": self.names.labels}, create=True)
            name = resource_of(op["name"])
            st.save(dataset=name, dataset_op=op["name"])
            note(f"created dataset {name}")
        if st.get("dataset_op") and not st.get("dataset_ready"):
            self._wait(st.get("dataset_op"), "create dataset", self.config.import_timeout,
                       lambda: st.save(dataset=None, dataset_op=None))
        st.save(dataset_ready=True, dataset_op=None)
        return name

    def import_images(self, dataset: str) -> int:
        """Import the run's CSV once; the dataset's item count."""
        api, st = self.api, self.state
        expected = int(st.get("import_rows") or 0)
        if st.get("imported"):
            return int(st.get("data_items") or expected)
        op_name = st.get("import_op")
        if not op_name:
            count = int((api.get(dataset) or {}).get("dataItemCount") or 0)
            if expected and count >= expected:  # imported by a run that lost its record
                st.save(imported=True, data_items=count)
                return count
            op = api.call("POST", f"{dataset}:import", {"importConfigs": [{
                "gcsSource": {"uris": [st.get("import_csv")]},
                "importSchemaUri": SINGLE_LABEL_IO}]}, create=True)
            op_name = op["name"]
            st.save(import_op=op_name)
            note(f"importing {st.get('import_csv')} into {dataset}")
        self._wait(op_name, "import images", self.config.import_timeout,
                   lambda: st.save(import_op=None))
        count = int((api.get(dataset) or {}).get("dataItemCount") or 0)
        if count < expected:
            warn(f"vertex: the dataset holds {count} of {expected} images (Vertex merges "
                 "identical images); training on what it kept")
        st.save(imported=True, data_items=count, import_op=None)
        return count

    # -- training --------------------------------------------------------------------------------
    def pipeline_body(self, dataset: str) -> dict[str, Any]:
        c = self.config
        return {
            "displayName": self.names.display,
            "labels": self.names.labels,
            "inputDataConfig": {
                "datasetId": dataset.rsplit("/", 1)[1],
                "filterSplit": {"trainingFilter": ML_USE_FILTER.format("training"),
                                "validationFilter": ML_USE_FILTER.format("validation"),
                                "testFilter": ML_USE_FILTER.format("test")},
            },
            "modelToUpload": {"displayName": self.names.display, "labels": self.names.labels},
            "trainingTaskDefinition": AUTOML_IMAGE_CLASSIFICATION,
            "trainingTaskInputs": {"modelType": c.model_type, "multiLabel": False,
                                   "budgetMilliNodeHours": c.budget_milli_node_hours,
                                   "disableEarlyStopping": c.disable_early_stopping},
        }

    def pipeline(self, dataset: str) -> dict[str, Any]:
        """The run's training pipeline, waited on until it succeeded (UserError otherwise)."""
        api, c, st = self.api, self.config, self.state
        name = st.get("pipeline")
        pipeline = api.get(name) if name else None
        if pipeline is not None and pipeline.get("state") in FAILED:
            pipeline = None
        if pipeline is None:
            pipeline = self._earliest("trainingPipelines", lambda p: p.get("state") not in FAILED)
        if pipeline is None:
            pipeline = api.call("POST", f"{api.parent}/trainingPipelines",
                                self.pipeline_body(dataset), create=True)
            note(f"started training {pipeline['name']} ({c.model_type}, budget "
                 f"{c.budget_milli_node_hours} milli node hours)")
        st.save(pipeline=pipeline["name"])
        if pipeline.get("state") not in (*FAILED, SUCCEEDED):
            pipeline = api.wait_pipeline(pipeline["name"], c.train_timeout, c.poll_seconds)
        if pipeline.get("state") != SUCCEEDED:
            error = (pipeline.get("error") or {}).get("message", "no message")
            raise UserError(f"vertex: training pipeline {pipeline['name']} ended "
                            f"{pipeline.get('state')}: {error}; fix the cause and rerun "
                            "(a new pipeline will be started)")
        model = model_of(pipeline, api.parent)
        if not model:
            raise UserError(f"vertex: training pipeline {pipeline['name']} succeeded without "
                            "a model; look at it in the Cloud console")
        st.save(model=model)
        return pipeline

    # -- endpoint + deployment -------------------------------------------------------------------
    def endpoint(self) -> str:
        api, st = self.api, self.state
        name = st.get("endpoint")
        if name and api.get(name) is None:
            warn(f"vertex: recorded endpoint {name} is gone; making a new one")
            st.save(endpoint=None, endpoint_op=None, endpoint_ready=None, deploy_op=None,
                    deployed_model_id=None)
            name = None
        if not name:
            found = self._earliest("endpoints")
            if found:
                name = found["name"]
                st.save(endpoint=name, endpoint_ready=True)
        if not name:
            op = api.call("POST", f"{api.parent}/endpoints", {
                "displayName": self.names.display, "labels": self.names.labels}, create=True)
            name = resource_of(op["name"])
            st.save(endpoint=name, endpoint_op=op["name"])
            note(f"created endpoint {name}")
        if st.get("endpoint_op") and not st.get("endpoint_ready"):
            self._wait(st.get("endpoint_op"), "create endpoint", self.config.deploy_timeout,
                       lambda: st.save(endpoint=None, endpoint_op=None))
        st.save(endpoint_ready=True, endpoint_op=None)
        return name

    def deployed(self) -> str:
        """An endpoint with the trained model deployed on it; the endpoint's name."""
        api, c, st = self.api, self.config, self.state
        model, name = st.get("model"), self.endpoint()
        for dm in (api.get(name) or {}).get("deployedModels") or []:
            if str(dm.get("model", "")).split("@", 1)[0] == model:
                st.save(deployed_model_id=dm["id"], deploy_op=None)
                return name
        op_name = st.get("deploy_op")
        if not op_name:
            op = api.call("POST", f"{name}:deployModel", {
                "deployedModel": {
                    "model": model, "displayName": self.names.display,
                    "automaticResources": {"minReplicaCount": c.min_replicas,
                                           "maxReplicaCount": c.max_replicas}},
                "trafficSplit": {"0": 100}}, create=True)
            op_name = op["name"]
            st.save(deploy_op=op_name)
            note(f"deploying {model} to {name} (billed per node hour until undeployed)")
        resp = self._wait(op_name, "deploy model", c.deploy_timeout,
                          lambda: st.save(deploy_op=None))
        st.save(deployed_model_id=(resp.get("deployedModel") or {}).get("id"), deploy_op=None)
        return name


def model_of(pipeline: dict[str, Any], parent: str) -> str | None:
    """The model a succeeded pipeline uploaded (without a `@version` suffix)."""
    name = (pipeline.get("modelToUpload") or {}).get("name")
    if not name and pipeline.get("modelId"):
        name = f"{parent}/models/{pipeline['modelId']}"
    return str(name).split("@", 1)[0] if name else None


def undeploy_all(api: VertexApi, config: VertexSettings, endpoint: str,
                 delete_endpoint: bool) -> int:
    """Undeploy every model of `endpoint` (then delete it if asked); how many were undeployed."""
    ep = api.get(endpoint)
    if ep is None:
        note(f"endpoint {endpoint} does not exist any more")
        return 0
    count = 0
    for dm in ep.get("deployedModels") or []:
        op = api.call("POST", f"{endpoint}:undeployModel", {"deployedModelId": dm["id"]})
        api.wait_operation(op["name"], f"undeploy {dm['id']}", config.deploy_timeout,
                           config.poll_seconds)
        count += 1
    if delete_endpoint:
        op = api.call("DELETE", endpoint)
        api.wait_operation(op["name"], "delete endpoint", config.deploy_timeout,
                           config.poll_seconds)
    note(f"{endpoint}: {count} model(s) undeployed" + (", endpoint deleted"
                                                       if delete_endpoint else ""))
    return count
