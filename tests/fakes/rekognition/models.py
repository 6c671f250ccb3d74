"""State of the fake Rekognition Custom Labels service (no wire format here: see responses.py).

Behaves like the real service where the adapter depends on it:
- resources move through their documented states over a few Describe calls
  (dataset CREATE_IN_PROGRESS -> CREATE_COMPLETE, version TRAINING_IN_PROGRESS ->
  TRAINING_COMPLETED | TRAINING_FAILED, STARTING -> RUNNING, STOPPING -> STOPPED);
- a dataset is built by reading its Ground Truth manifest from S3 (the moto server the test
  runs), checking every JSON line and that each `source-ref` object exists; the model's labels
  are the training manifest's class names;
- DetectCustomLabels answers only while RUNNING, refuses images over 4 MB or not JPEG/PNG, and
  returns labels from a test-controlled mapping (sha256 of the image -> labels) or else a
  deterministic choice by hash, filtered by MinConfidence.
Tests reach in to script behaviour: `fail_training`, `answers`, `throttle(...)`, `steps`,
`allow_only(...)` (an IAM policy allowing only some operations).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.pacing import Pacing

ACCOUNT = "123456789012"
MAX_DETECT_BYTES = 4 * 1024 * 1024
GT_TYPE = "groundtruth/image-classification"
_ids = itertools.count(int(time.time() * 1000))


class AwsError(Exception):
    """An error the real API would answer: `__type` code, message, HTTP status."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


@dataclass
class Transition:
    """A status that becomes `then` after `steps` more Describe calls."""

    status: str
    then: str | None = None
    steps: int = 0
    message: str = ""
    then_message: str = ""
    #: Paced: becomes `then` at this wall time (whatever the Describe calls), not by `steps`.
    ready_at: float | None = None

    def tick(self) -> None:
        if self.then is None:
            return
        self.steps -= 1
        due = self.steps <= 0 if self.ready_at is None else time.time() >= self.ready_at
        if due:
            self.status, self.message, self.then = self.then, self.then_message, None


@dataclass
class Dataset:
    arn: str
    kind: str  # TRAIN | TEST
    created: float
    state: Transition
    labels: set[str] = field(default_factory=set)
    stats: dict[str, int] = field(default_factory=dict)
    message_code: str = "SUCCESS"


@dataclass
class Version:
    arn: str
    name: str
    created: float
    state: Transition
    output: dict[str, Any]
    labels: list[str]
    train_seconds: float
    min_units: int | None = None
    max_units: int | None = None
    starts: int = 0
    stops: int = 0


@dataclass
class Project:
    name: str
    arn: str
    created: float
    datasets: dict[str, Dataset] = field(default_factory=dict)
    versions: dict[str, Version] = field(default_factory=dict)


class RekognitionBackend:
    """All projects of one fake account/region."""

    def __init__(self, s3: Any = None, region: str = "us-east-1", steps: int = 2,
                 train_seconds: float = 3725.0, billable_seconds: int = 3312,
                 pacing: Pacing | None = None):
        self.s3 = s3  # boto3 S3 client on the moto server, to read manifests and check images
        self.region = region
        self.steps = steps
        self.train_seconds = train_seconds
        #: BillableTrainingTimeInSeconds of a trained version: AWS bills the compute time, not
        #: the wall time; deliberately another number, so a client reading the wrong one shows.
        self.billable_seconds = billable_seconds
        #: When set, every new version ends TRAINING_FAILED with this StatusMessage.
        self.fail_training: str | None = None
        #: sha256(image bytes) -> [(label, confidence 0-100), ...] (empty list: no label).
        self.answers: dict[str, list[tuple[str, float]]] = {}
        self.projects: dict[str, Project] = {}
        self.detected: list[bytes] = []  # images received by DetectCustomLabels, in order
        self._throttles: dict[str, list[Any]] = {}
        self._allowed: set[str] | None = None  # operations the caller's IAM policy allows
        self._lock = threading.RLock()
        #: Wall-clock pacing (`tests/fakes/pacing.py`): a version's training by
        #: `<project>/<version>` and its start by its ARN (instead of Describe calls), the
        #: DetectCustomLabels latency and rate limit (ThrottlingException beyond it).
        self.pacing = pacing

    # -- test controls -----------------------------------------------------------------------------
    def throttle(self, operation: str, count: int, code: str = "ThrottlingException",
                 status: int = 400) -> None:
        """Fail the next `count` calls of `operation` with `code` (default: throttling)."""
        with self._lock:
            self._throttles[operation] = [count, code, status]

    def allow_only(self, *operations: str) -> None:
        """Answer every other operation AccessDeniedException, as AWS does for credentials whose
        IAM policy allows only these (no argument: allow everything again)."""
        with self._lock:
            self._allowed = set(operations) or None

    def check_throttle(self, operation: str) -> None:
        with self._lock:
            if self._allowed is not None and operation not in self._allowed:
                raise AwsError("AccessDeniedException", f"User: arn:aws:iam::{ACCOUNT}:user/"
                               f"bench is not authorized to perform: rekognition:{operation} "
                               "because no identity-based policy allows the "
                               f"rekognition:{operation} action")
            entry = self._throttles.get(operation)
            if entry and entry[0] > 0:
                entry[0] -= 1
                raise AwsError(entry[1], "Rate exceeded" if "Thrott" in entry[1]
                               else f"injected {entry[1]}", entry[2])

    def version(self, arn: str) -> Version:
        for project in self.projects.values():
            for version in project.versions.values():
                if version.arn == arn:
                    return version
        raise AwsError("ResourceNotFoundException", f"Model {arn} not found")

    # -- helpers -----------------------------------------------------------------------------------
    def _arn(self, suffix: str) -> str:
        return f"arn:aws:rekognition:{self.region}:{ACCOUNT}:project/{suffix}"

    def _project(self, arn: str) -> Project:
        for project in self.projects.values():
            if project.arn == arn:
                return project
        raise AwsError("ResourceNotFoundException", f"Project {arn} not found")

    # -- projects ----------------------------------------------------------------------------------
    def create_project(self, name: str) -> str:
        with self._lock:
            if name in self.projects:
                raise AwsError("ResourceInUseException", f"Project {name} already exists")
            project = Project(name, self._arn(f"{name}/{next(_ids)}"), time.time())
            self.projects[name] = project
            return project.arn

    def describe_projects(self, names: list[str] | None) -> list[dict[str, Any]]:
        with self._lock:
            projects = [p for p in self.projects.values() if not names or p.name in names]
            return [{
                "ProjectArn": p.arn, "CreationTimestamp": p.created, "Status": "CREATED",
                "Feature": "CUSTOM_LABELS",
                "Datasets": [{"CreationTimestamp": d.created, "DatasetType": d.kind,
                              "DatasetArn": d.arn, "Status": d.state.status,
                              "StatusMessage": d.state.message,
                              "StatusMessageCode": d.message_code}
                             for d in p.datasets.values()],
            } for p in sorted(projects, key=lambda p: -p.created)]

    # -- datasets ----------------------------------------------------------------------------------
    def create_dataset(self, project_arn: str, kind: str, source: dict[str, Any] | None) -> str:
        with self._lock:
            project = self._project(project_arn)
            if kind in project.datasets:
                raise AwsError("ResourceAlreadyExistsException",
                               f"A {kind} dataset already exists in project {project.name}")
            manifest = (source or {}).get("GroundTruthManifest")
            if source and manifest and source.get("DatasetArn"):
                raise AwsError("InvalidParameterException",
                               "Specify DatasetArn or GroundTruthManifest, not both")
            arn = self._arn(f"{project.name}/dataset/{kind.lower()}/{next(_ids)}")
            dataset = Dataset(arn, kind, time.time(), Transition("CREATE_IN_PROGRESS"))
            ok, message = self._import(dataset, manifest["S3Object"]) if manifest else (True, "")
            dataset.state = Transition(
                "CREATE_IN_PROGRESS", "CREATE_COMPLETE" if ok else "CREATE_FAILED", self.steps,
                "The dataset is being created.", "The dataset was created." if ok else message)
            dataset.message_code = "SUCCESS" if ok else "CLIENT_ERROR"
            project.datasets[kind] = dataset
            return arn

    def _import(self, dataset: Dataset, obj: dict[str, Any]) -> tuple[bool, str]:
        """Read and check a Ground Truth manifest from S3, as dataset creation does."""
        bucket, key = obj.get("Bucket"), obj.get("Name")
        if not bucket or not key:
            raise AwsError("InvalidParameterException", "S3Object needs Bucket and Name")
        try:
            body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:  # noqa: BLE001 - any S3 failure: the import fails
            return False, f"The manifest file s3://{bucket}/{key} could not be read: {exc}"
        total = errors = 0
        index_of: dict[str, int] = {}
        for line in body.decode("utf-8").splitlines():
            if not line.strip():
                continue
            total += 1
            label = _check_line(line, bucket, self.s3, index_of)
            if label is None:
                errors += 1
            else:
                dataset.labels.add(label)
        dataset.stats = {"LabeledEntries": total - errors, "TotalEntries": total,
                         "TotalLabels": len(dataset.labels), "ErrorEntries": errors}
        if total == 0 or errors == total:
            return False, "The manifest file contains no valid JSON lines."
        return True, ""

    def describe_dataset(self, arn: str) -> dict[str, Any]:
        with self._lock:
            for project in self.projects.values():
                for d in project.datasets.values():
                    if d.arn == arn:
                        d.state.tick()
                        return {"CreationTimestamp": d.created, "LastUpdatedTimestamp": time.time(),
                                "Status": d.state.status, "StatusMessage": d.state.message,
                                "StatusMessageCode": d.message_code, "DatasetStats": d.stats}
            raise AwsError("ResourceNotFoundException", f"Dataset {arn} not found")

    # -- versions ----------------------------------------------------------------------------------
    def create_project_version(self, project_arn: str, name: str,
                               output: dict[str, Any]) -> str:
        with self._lock:
            project = self._project(project_arn)
            if name in project.versions:
                raise AwsError("ResourceInUseException", f"Version {name} already exists")
            for kind in ("TRAIN", "TEST"):
                d = project.datasets.get(kind)
                if d is None or d.state.status != "CREATE_COMPLETE":
                    raise AwsError("InvalidParameterException",
                                   f"The project has no {kind} dataset ready (status: "
                                   f"{d.state.status if d else 'missing'})")
            if not output.get("S3Bucket"):
                raise AwsError("InvalidParameterException", "OutputConfig.S3Bucket is required")
            if self.s3 is not None:
                try:
                    self.s3.head_bucket(Bucket=output["S3Bucket"])
                except Exception:  # noqa: BLE001
                    raise AwsError("InvalidParameterException",
                                   f"Output bucket {output['S3Bucket']} does not exist") from None
            train, test = project.datasets["TRAIN"], project.datasets["TEST"]
            failure = self.fail_training
            if failure is None and len(train.labels) < 2:
                failure = "The training dataset must have at least 2 labels."
            if failure is None and not test.labels <= train.labels:
                failure = "The test dataset has labels that are not in the training dataset."
            arn = self._arn(f"{project.name}/version/{name}/{next(_ids)}")
            state = Transition("TRAINING_IN_PROGRESS",
                               "TRAINING_FAILED" if failure else "TRAINING_COMPLETED",
                               self.steps, "The model is being trained.",
                               failure or "The model is ready to run.")
            if self.pacing is not None:
                state.ready_at = self.pacing.training_done_at(f"{project.name}/{name}")
            project.versions[name] = Version(arn, name, time.time(), state, dict(output),
                                             sorted(train.labels), self.train_seconds)
            return arn

    def describe_project_versions(self, project_arn: str,
                                  names: list[str] | None) -> list[dict[str, Any]]:
        with self._lock:
            project = self._project(project_arn)
            found = [v for v in project.versions.values() if not names or v.name in names]
            out = []
            for v in sorted(found, key=lambda v: -v.created):  # newest first, like the service
                v.state.tick()
                desc: dict[str, Any] = {
                    "ProjectVersionArn": v.arn, "CreationTimestamp": v.created,
                    "Status": v.state.status, "StatusMessage": v.state.message,
                    "OutputConfig": v.output, "Feature": "CUSTOM_LABELS",
                }
                if v.state.status not in ("TRAINING_IN_PROGRESS", "TRAINING_FAILED"):
                    desc.update(TrainingEndTimestamp=v.created + v.train_seconds,
                                BillableTrainingTimeInSeconds=self.billable_seconds,
                                EvaluationResult={"F1Score": 0.9})
                if v.min_units is not None:
                    desc["MinInferenceUnits"] = v.min_units
                if v.max_units is not None:
                    desc["MaxInferenceUnits"] = v.max_units
                out.append(desc)
            return out

    def start_project_version(self, arn: str, min_units: int, max_units: int | None) -> str:
        with self._lock:
            version = self.version(arn)
            if version.state.status not in ("TRAINING_COMPLETED", "STOPPED", "FAILED"):
                raise AwsError("ResourceInUseException",
                               f"The model is {version.state.status} and cannot be started")
            if max_units is not None and max_units < min_units:
                raise AwsError("InvalidParameterException",
                               "MaxInferenceUnits must be at least MinInferenceUnits")
            version.min_units, version.max_units = min_units, max_units
            version.starts += 1
            version.state = Transition("STARTING", "RUNNING", self.steps, "The model is starting.",
                                       "The model is running.")
            if self.pacing is not None:
                version.state.ready_at = self.pacing.deployment_done_at(arn)
            return "STARTING"

    def stop_project_version(self, arn: str) -> str:
        with self._lock:
            version = self.version(arn)
            if version.state.status != "RUNNING":
                raise AwsError("ResourceInUseException",
                               f"The model is {version.state.status}, not RUNNING")
            version.stops += 1
            version.state = Transition("STOPPING", "STOPPED", self.steps, "The model is stopping.",
                                       "The model is stopped.")
            return "STOPPING"

    # -- inference ---------------------------------------------------------------------------------
    def detect_custom_labels(self, arn: str, image: bytes, min_confidence: float | None,
                             max_results: int | None) -> list[dict[str, Any]]:
        with self._lock:
            version = self.version(arn)
            if version.state.status != "RUNNING":
                raise AwsError("ResourceNotReadyException",
                               f"The model is {version.state.status}, not RUNNING")
            if len(image) > MAX_DETECT_BYTES:
                raise AwsError("ImageTooLargeException",
                               f"Image size {len(image)} exceeds the 4 MB limit")
            if not (image[:3] == b"\xff\xd8\xff" or image[:8] == b"\x89PNG\r\n\x1a\n"):
                raise AwsError("InvalidImageFormatException", "Request has unsupported image "
                               "format")
            self.detected.append(image)
            digest = hashlib.sha256(image).hexdigest()
            labels = self.answers.get(digest)
            if labels is None:
                labels = _by_hash(digest, version.labels)
        threshold = 50.0 if min_confidence is None else min_confidence
        shown = sorted(((n, c) for n, c in labels if c >= threshold), key=lambda x: -x[1])
        return [{"Name": n, "Confidence": c} for n, c in shown[:max_results or None]]


def _by_hash(digest: str, labels: list[str]) -> list[tuple[str, float]]:
    """A deterministic answer: one label by hash with 50-99 %, the rest share what is left."""
    if not labels:
        return []
    top = labels[int(digest[:8], 16) % len(labels)]
    conf = 50.0 + int(digest[8:10], 16) % 50
    rest = [n for n in labels if n != top]
    return [(top, conf)] + [(n, (100.0 - conf) / len(rest)) for n in rest]


def _check_line(line: str, bucket: str, s3: Any, index_of: dict[str, int]) -> str | None:
    """The class name of a valid image-classification JSON line, else None (an error entry)."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    ref = entry.get("source-ref") if isinstance(entry, dict) else None
    if not isinstance(ref, str) or not ref.startswith(f"s3://{bucket}/"):
        return None  # all images of a dataset must be in the manifest's bucket
    attrs = [k for k in entry if k != "source-ref" and not k.endswith("-metadata")]
    if len(attrs) != 1 or f"{attrs[0]}-metadata" not in entry:
        return None
    value, meta = entry[attrs[0]], entry[f"{attrs[0]}-metadata"]
    if isinstance(value, bool) or not isinstance(value, int) or not isinstance(meta, dict):
        return None
    required = {"confidence", "job-name", "class-name", "human-annotated", "creation-date", "type"}
    if not required <= set(meta) or meta["type"] != GT_TYPE:
        return None
    name = meta["class-name"]
    if not isinstance(name, str) or not name or index_of.setdefault(name, value) != value:
        return None  # one class name, one index
    try:
        s3.head_object(Bucket=bucket, Key=ref[len(f"s3://{bucket}/"):])
    except Exception:  # noqa: BLE001 - missing or unreadable image
        return None
    return name
