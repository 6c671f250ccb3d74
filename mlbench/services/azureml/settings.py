"""The `azureml:` block of params.yaml, validated, and where the workspace comes from.

The workspace is named by `subscription_id`, `resource_group` and `workspace`, each from this
block or else from `AZURE_SUBSCRIPTION_ID`, `AZURE_RESOURCE_GROUP`, `AZUREML_WORKSPACE_NAME`
(the names Azure's own samples use); credentials only from the environment, through
`DefaultAzureCredential`. A managed online endpoint made by hand is given as
`azureml.endpoints.<dataset>.<ablation>: <endpoint name>`. No SDK import here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from mlbench.errors import UserError
from mlbench.params import SettingsBlock
from mlbench.services.base import ServiceSettings

#: (setting, environment variable, what it is) of the three values naming the workspace.
WORKSPACE_KEYS = (("subscription_id", "AZURE_SUBSCRIPTION_ID", "subscription id"),
                  ("resource_group", "AZURE_RESOURCE_GROUP", "resource group"),
                  ("workspace", "AZUREML_WORKSPACE_NAME", "workspace name"))
#: Online endpoint names: 3-32 characters, a letter first, letters, digits and '-'.
ENDPOINT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]")
_COMPUTE = re.compile(r"[A-Za-z][A-Za-z0-9-]{1,15}")
_INSTANCE = re.compile(r"Standard_[A-Za-z0-9_]+")
_MODEL = re.compile(r"[a-z][a-z0-9_]*")
_GUID = re.compile(r"[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_DAY = 86400.0


@dataclass(frozen=True)
class Settings(ServiceSettings):
    """See docs/services/azureml.md for each key."""

    subscription_id: str | None = None
    resource_group: str | None = None
    workspace: str | None = None
    compute: str = "gpu-cluster"
    max_trials: int = 1
    max_concurrent_trials: int = 1
    timeout_minutes: int = 60
    model_name: str | None = None
    experiment: str = "mlbench"
    instance_type: str = "Standard_NC4as_T4_v3"
    instance_count: int = 1
    keep_endpoint: bool = False
    arm_endpoint: str = "https://management.azure.com"
    tracking_endpoint: str | None = None
    storage_endpoint: str | None = None
    poll_seconds: float = 30.0
    train_timeout: float = 2 * _DAY
    deploy_timeout: float = 3 * 3600.0
    request_timeout: float = 60.0
    upload_concurrency: int = 8
    #: AutoML jobs the run keeps in flight at once (read by the scheduler): more only queue on
    #: the cluster; set it to the cluster's maximum nodes / `max_concurrent_trials`.
    max_concurrent_trainings: int = 4

    #: Where the model lives and how it is searched for; not how it is served or waited on.
    MODEL_FIELDS: ClassVar[tuple[str, ...]] = (
        "subscription_id", "resource_group", "workspace", "arm_endpoint", "compute",
        "max_trials", "max_concurrent_trials", "timeout_minutes", "model_name")

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> Settings:
        block = SettingsBlock("azureml", raw, cls.keys())
        text, number = block.text, block.number

        def matching(key: str, pattern: re.Pattern[str], what: str) -> str | None:
            value = text(key, getattr(cls, key))
            if value is not None and not pattern.fullmatch(value):
                raise block.fail(key, what, value)
            return value

        def seconds(key: str, hi: float = 30 * _DAY) -> float:
            return number(key, getattr(cls, key), 0, hi, lo_open=True)

        max_trials = number("max_trials", cls.max_trials, 1, 1000, integer=True)
        return cls(
            endpoints=block.per_ablation("endpoints", "online endpoint name",
                                         lambda v: bool(ENDPOINT_NAME.fullmatch(v))),
            subscription_id=matching("subscription_id", _GUID, "must be a subscription id "
                                     "(a GUID)"),
            resource_group=text("resource_group", None),
            workspace=text("workspace", None),
            compute=matching("compute", _COMPUTE, "must be the name of a compute cluster of "
                             "the workspace (2-16 letters, digits, '-')") or cls.compute,
            max_trials=max_trials,
            max_concurrent_trials=number("max_concurrent_trials", cls.max_concurrent_trials, 1,
                                         min(100, max_trials), integer=True),
            timeout_minutes=number("timeout_minutes", cls.timeout_minutes, 1, 10080,
                                   integer=True),
            model_name=matching("model_name", _MODEL, "must be an AutoML image model name "
                                "such as vitb16r224 or seresnext"),
            experiment=text("experiment", cls.experiment) or cls.experiment,
            instance_type=matching("instance_type", _INSTANCE, "must be a VM size such as "
                                   "Standard_DS3_v2") or cls.instance_type,
            instance_count=number("instance_count", cls.instance_count, 1, 20, integer=True),
            keep_endpoint=block.boolean("keep_endpoint", cls.keep_endpoint),
            arm_endpoint=_url(block, "arm_endpoint", cls.arm_endpoint) or cls.arm_endpoint,
            tracking_endpoint=_url(block, "tracking_endpoint", None),
            storage_endpoint=_url(block, "storage_endpoint", None),
            poll_seconds=seconds("poll_seconds", 3600),
            train_timeout=seconds("train_timeout"),
            deploy_timeout=seconds("deploy_timeout"),
            request_timeout=seconds("request_timeout", 3600),
            upload_concurrency=number("upload_concurrency", cls.upload_concurrency, 1, 64,
                                      integer=True),
            max_concurrent_trainings=number("max_concurrent_trainings",
                                            cls.max_concurrent_trainings, 1, 100, integer=True),
        )

    def workspace_ids(self) -> tuple[str, str, str]:
        """(subscription, resource group, workspace), each from params or its environment
        variable; one line naming every one that is missing (its key and its variable)."""
        found = [getattr(self, key) or os.environ.get(env, "").strip()
                 for key, env, _ in WORKSPACE_KEYS]
        missing = [f"the {what} (azureml.{key} in params.yaml or {env})"
                   for (key, env, what), value in zip(WORKSPACE_KEYS, found, strict=True)
                   if not value]
        if missing:
            raise UserError(f"Azure ML needs {'; '.join(missing)}")
        subscription, group, workspace = found
        if not _GUID.fullmatch(subscription):
            raise UserError(f"AZURE_SUBSCRIPTION_ID: must be a subscription id (a GUID), got "
                            f"{subscription!r}")
        return subscription, group, workspace


def _url(block: SettingsBlock, key: str, default: str | None) -> str | None:
    """An http(s) base URL without its trailing slash (an emulator or a fake is plain http)."""
    value = block.text(key, default)
    if value is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise block.fail(key, "must be an http(s) URL", value)
    return value.rstrip("/") if value else value
