"""Rekognition Custom Labels lifecycle: project -> TRAIN/TEST datasets -> version -> running model.

Every step is "find, else create", keyed by names we choose deterministically, so a rerun after a
crash (even one that lost our state file) finds what the first run created instead of paying for
it twice:

- project `<project_prefix>-<dataset>-<n>-<digest>`: one per ablation content (a project holds a
  single TRAIN and a single TEST dataset);
- its datasets, found in the project's description by type;
- versions `v1`, `v2`, ...: the newest one that did not fail is reused (still training: wait for
  it); only when every version failed is a new one trained, so a rerun after TRAINING_FAILED
  retries once per rerun, never silently in a loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mlbench.console import err
from mlbench.errors import UserError
from mlbench.services.rekognition.aws import VERSION_ARN_RE, error_code, poll

#: Version states from which the model can be (or already is) started.
TRAINED = frozenset({"TRAINING_COMPLETED", "STARTING", "RUNNING", "STOPPING", "STOPPED",
                     "FAILED"})
#: Codes the service may answer when a name is already taken (created meanwhile by a rerun).
TAKEN = frozenset({"ResourceInUseException", "ResourceAlreadyExistsException"})
#: Version states that will never give a model.
DEAD = frozenset({"TRAINING_FAILED", "DELETING", "COPYING_FAILED", "DEPRECATED", "EXPIRED"})


class TrainingFailed(UserError):
    """Rekognition reported TRAINING_FAILED; the message carries its StatusMessage."""


@dataclass(frozen=True)
class Waiting:
    """How to wait: poll interval and the timeouts, from the `rekognition:` settings."""

    poll_seconds: float
    train_timeout: float
    start_timeout: float


def find_project(rek: Any, name: str) -> dict[str, Any] | None:
    answer = rek.describe_projects(ProjectNames=[name])
    found = [p for p in answer.get("ProjectDescriptions", []) if _name_of(p["ProjectArn"]) == name]
    return found[0] if found else None


def ensure_project(rek: Any, name: str) -> dict[str, Any]:
    """The project named `name`, created when missing (a concurrent creation is tolerated)."""
    project = find_project(rek, name)
    if project is None:
        try:
            rek.create_project(ProjectName=name)
            err.print(f"rekognition: created project {name}")
        except Exception as exc:
            if error_code(exc) not in TAKEN:
                raise
        project = find_project(rek, name)
        if project is None:
            raise UserError(f"rekognition: project {name} was created but cannot be described; "
                            "rerun")
    return project


def ensure_datasets(
    rek: Any, project: dict[str, Any], manifests: dict[str, tuple[str, str]], wait: Waiting
) -> dict[str, str]:
    """DatasetType -> ARN for TRAIN and TEST, created from the manifests when missing.

    `manifests` maps "TRAIN"/"TEST" to (bucket, key). Waits for CREATE_COMPLETE; a failed import
    stops with Rekognition's own message.
    """
    existing = {d["DatasetType"]: d["DatasetArn"] for d in project.get("Datasets", [])}
    arns: dict[str, str] = {}
    for kind in ("TRAIN", "TEST"):
        if kind in existing:
            arns[kind] = existing[kind]
            continue
        bucket, key = manifests[kind]
        try:
            arns[kind] = rek.create_dataset(
                ProjectArn=project["ProjectArn"], DatasetType=kind,
                DatasetSource={"GroundTruthManifest": {"S3Object": {"Bucket": bucket,
                                                                    "Name": key}}},
            )["DatasetArn"]
        except Exception as exc:
            if error_code(exc) not in TAKEN:
                raise
            again = find_project(rek, _name_of(project["ProjectArn"])) or {}
            arns[kind] = next(d["DatasetArn"] for d in again.get("Datasets", [])
                              if d["DatasetType"] == kind)
        err.print(f"rekognition: creating {kind} dataset from s3://{bucket}/{key}")
    for kind, arn in arns.items():
        desc = poll(lambda a=arn: rek.describe_dataset(DatasetArn=a)["DatasetDescription"],
                    lambda d: d.get("Status") not in ("CREATE_IN_PROGRESS", "UPDATE_IN_PROGRESS"),
                    f"{kind} dataset", wait.poll_seconds, wait.train_timeout,
                    "rerun to keep waiting")
        if desc.get("Status") not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
            raise UserError(
                f"rekognition: the {kind} dataset failed to import ({desc.get('Status')}: "
                f"{desc.get('StatusMessage', 'no message')}); fix the cause, delete it with "
                f"`aws rekognition delete-dataset --dataset-arn {arn}` and rerun")
        stats = desc.get("DatasetStats") or {}
        if stats.get("ErrorEntries"):
            err.print(f"[yellow]rekognition: {kind} dataset: {stats['ErrorEntries']} of "
                      f"{stats.get('TotalEntries')} images could not be imported[/yellow]")
    return arns


def list_versions(rek: Any, project_arn: str) -> list[dict[str, Any]]:
    """All versions of a project, oldest first."""
    versions: list[dict[str, Any]] = []
    token = None
    while True:
        kwargs: dict[str, Any] = {"ProjectArn": project_arn, "MaxResults": 100}
        if token:
            kwargs["NextToken"] = token
        page = rek.describe_project_versions(**kwargs)
        versions += page.get("ProjectVersionDescriptions", [])
        token = page.get("NextToken")
        if not token:
            break
    return sorted(versions, key=lambda v: v["CreationTimestamp"])


def describe_version(rek: Any, project_arn: str, version_arn: str) -> dict[str, Any]:
    match = VERSION_ARN_RE.match(version_arn)
    if not match:
        raise UserError(f"{version_arn!r} is not a Rekognition project version ARN")
    answer = rek.describe_project_versions(ProjectArn=project_arn, VersionNames=[match.group(4)])
    for desc in answer.get("ProjectVersionDescriptions", []):
        if desc["ProjectVersionArn"] == version_arn:
            return desc
    raise UserError(f"rekognition: model {version_arn} not found in project {project_arn}; "
                    "was it deleted? Remove its model.json (or rekognition.models entry) and rerun")


def project_arn_of(rek: Any, version_arn: str) -> str:
    """The project ARN of a version ARN (its project name is in it; the ARN's number is not)."""
    match = VERSION_ARN_RE.match(version_arn)
    if not match:
        raise UserError(f"{version_arn!r} is not a Rekognition project version ARN")
    project = find_project(rek, match.group(3))
    if project is None:
        raise UserError(f"rekognition: project {match.group(3)} of model {version_arn} not found "
                        f"in this account/region; check AWS_DEFAULT_REGION and the ARN")
    return project["ProjectArn"]


def ensure_trained(
    rek: Any, project_arn: str, output: dict[str, str], wait: Waiting,
    on_version: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Reuse the newest usable version (waiting for it to train), else train a new one.

    Returns the version description once trained; raises `TrainingFailed` with Rekognition's
    StatusMessage when training fails. `on_version(arn)` lets the caller record the version at
    once, before the long wait.
    """
    versions = list_versions(rek, project_arn)
    usable = [v for v in versions if v["Status"] not in DEAD]
    if usable:
        arn = usable[-1]["ProjectVersionArn"]
    else:
        if versions:
            last = versions[-1]
            err.print(f"rekognition: previous version {_version_of(last['ProjectVersionArn'])} "
                      f"ended {last['Status']} ({last.get('StatusMessage', '')}); "
                      "training a new one")
        names = {_version_of(v['ProjectVersionArn']) for v in versions}
        k = len(versions) + 1
        while f"v{k}" in names:
            k += 1
        name = f"v{k}"
        try:
            arn = rek.create_project_version(ProjectArn=project_arn, VersionName=name,
                                             OutputConfig=output)["ProjectVersionArn"]
            err.print(f"rekognition: training {name} of {_name_of(project_arn)} (this takes "
                      "about an hour or more)")
        except Exception as exc:
            if error_code(exc) not in TAKEN:
                raise
            arn = next(v["ProjectVersionArn"] for v in list_versions(rek, project_arn)
                       if _version_of(v["ProjectVersionArn"]) == name)
    if on_version:
        on_version(arn)
    version = poll(lambda: describe_version(rek, project_arn, arn),
                   lambda d: d["Status"] != "TRAINING_IN_PROGRESS",
                   f"training {_version_of(arn)}", wait.poll_seconds,
                   wait.train_timeout,
                   "it keeps training on AWS; rerun the train stage to keep waiting")
    if version["Status"] == "TRAINING_FAILED":
        raise TrainingFailed(f"rekognition: training of {arn} failed: "
                             f"{version.get('StatusMessage') or 'no status message'}")
    if version["Status"] not in TRAINED:
        raise UserError(f"rekognition: model {arn} is {version['Status']} "
                        f"({version.get('StatusMessage', '')}); it cannot be used")
    return version


def ensure_running(
    rek: Any, project_arn: str, version_arn: str, min_units: int, max_units: int | None,
    wait: Waiting,
) -> dict[str, Any]:
    """Start the model if needed and wait until RUNNING (it is billed from here on)."""
    version = describe_version(rek, project_arn, version_arn)
    status = version["Status"]
    if status == "TRAINING_IN_PROGRESS":
        raise UserError(f"rekognition: model {version_arn} is still training; run the train "
                        "stage first")
    if status == "STOPPING":
        version = poll(lambda: describe_version(rek, project_arn, version_arn),
                       lambda d: d["Status"] != "STOPPING", "stopping before restart",
                       wait.poll_seconds, wait.start_timeout, "rerun to keep waiting")
        status = version["Status"]
    if status in ("TRAINING_COMPLETED", "STOPPED", "FAILED"):
        kwargs: dict[str, Any] = {"ProjectVersionArn": version_arn, "MinInferenceUnits": min_units}
        if max_units is not None:
            kwargs["MaxInferenceUnits"] = max_units
        try:
            rek.start_project_version(**kwargs)
            err.print(f"rekognition: starting {version_arn} with {min_units} inference unit(s)")
        except Exception as exc:
            if error_code(exc) != "ResourceInUseException":  # started meanwhile by someone else
                raise
    elif status not in ("STARTING", "RUNNING"):
        raise UserError(f"rekognition: model {version_arn} is {status} and cannot be started")
    version = poll(lambda: describe_version(rek, project_arn, version_arn),
                   lambda d: d["Status"] != "STARTING", "starting the model", wait.poll_seconds,
                   wait.start_timeout, "rerun to keep waiting")
    if version["Status"] != "RUNNING":
        raise UserError(f"rekognition: model {version_arn} did not start ({version['Status']}: "
                        f"{version.get('StatusMessage', 'no message')})")
    return version


def stop(rek: Any, project_arn: str, version_arn: str, wait: Waiting,
         until_stopped: bool = False) -> str:
    """Stop a running (or starting) model; return the status it ends in (or is heading to)."""
    version = describe_version(rek, project_arn, version_arn)
    if version["Status"] == "STARTING":  # a model cannot be stopped while it starts
        version = poll(lambda: describe_version(rek, project_arn, version_arn),
                       lambda d: d["Status"] != "STARTING", "waiting for the start to finish",
                       wait.poll_seconds, wait.start_timeout, "rerun stop")
    if version["Status"] != "RUNNING":
        return version["Status"]
    try:
        status = rek.stop_project_version(ProjectVersionArn=version_arn).get("Status", "STOPPING")
    except Exception as exc:
        if error_code(exc) != "ResourceInUseException":
            raise
        status = describe_version(rek, project_arn, version_arn)["Status"]
    if until_stopped and status == "STOPPING":
        status = poll(lambda: describe_version(rek, project_arn, version_arn),
                      lambda d: d["Status"] != "STOPPING", "stopping", wait.poll_seconds,
                      wait.start_timeout, "it keeps stopping on AWS")["Status"]
    return status


def _name_of(project_arn: str) -> str:
    """`arn:...:project/<name>/<n>` -> `<name>`."""
    return project_arn.split(":project/", 1)[-1].split("/", 1)[0]


def _version_of(version_arn: str) -> str:
    """`arn:...:project/<p>/version/<name>/<n>` -> `<name>`."""
    match = VERSION_ARN_RE.match(version_arn)
    return match.group(4) if match else version_arn
