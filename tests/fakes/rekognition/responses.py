"""Wire format of the fake: the AWS JSON 1.1 protocol as Rekognition speaks it.

`POST /` with `X-Amz-Target: RekognitionService.<Operation>`, `Content-Type:
application/x-amz-json-1.1` and a SigV4 `Authorization` header; the JSON body is checked against
the operation's input shape from botocore's copy of the service model (required members, unknown
members, string patterns such as the ARN formats, lengths, ranges, enums), answering a
`ValidationException` worded like the service's. Errors are `{"__type": ..., "message": ...}`
with the status the service uses; timestamps go out as epoch seconds and blobs come in as base64.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from functools import cache
from typing import Any

from tests.fakes.http_base import FakeServer, Request, Response
from tests.fakes.rekognition.models import AwsError, RekognitionBackend

JSON_11 = "application/x-amz-json-1.1"
TARGET_PREFIX = "RekognitionService."
OPERATIONS = (
    "CreateProject", "DescribeProjects", "CreateDataset", "DescribeDataset",
    "CreateProjectVersion", "DescribeProjectVersions", "StartProjectVersion",
    "StopProjectVersion", "DetectCustomLabels",
)


def error(code: str, message: str, status: int = 400) -> Response:
    return Response(status, json.dumps({"__type": code, "message": message}).encode(),
                    {"Content-Type": JSON_11, "x-amzn-RequestId": str(uuid.uuid4())})


def _fault_body(status: int, message: str) -> Response:
    """Body for FakeServer-level errors (injected faults, no route): typed like the service's."""
    code = {400: "ThrottlingException", 429: "ThrottlingException",
            404: "UnknownOperationException"}.get(status, "InternalServerError")
    return error(code, message, status)


@cache
def _model() -> Any:
    import botocore.session

    return botocore.session.get_session().get_service_model("rekognition")


class InvalidInput(Exception):
    pass


def validate(shape: Any, value: Any, where: str) -> None:
    """Check `value` against a botocore shape as the service's request validation does."""
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            raise InvalidInput(f"Value at '{where}' must be an object")
        for name in value:
            if name not in shape.members:
                raise InvalidInput(f"Unknown member '{name}' at '{where or 'request'}'")
        for name in shape.required_members:
            if value.get(name) is None:
                raise InvalidInput(f"Value null at '{_lc(where, name)}' failed to satisfy "
                                   "constraint: Member must not be null")
        for name, member in shape.members.items():
            if value.get(name) is not None:
                validate(member, value[name], _lc(where, name))
        return
    meta = shape.metadata
    if kind == "list":
        if not isinstance(value, list):
            raise InvalidInput(f"Value at '{where}' must be a list")
        _length(len(value), meta, where)
        for i, item in enumerate(value):
            validate(shape.member, item, f"{where}.{i + 1}")
    elif kind == "map":
        if not isinstance(value, dict):
            raise InvalidInput(f"Value at '{where}' must be a map")
    elif kind == "string":
        if not isinstance(value, str):
            raise InvalidInput(f"Value at '{where}' must be a string")
        _length(len(value), meta, where)
        if "pattern" in meta and not re.fullmatch(meta["pattern"], value, re.S):
            raise InvalidInput(f"Value '{value}' at '{where}' failed to satisfy constraint: "
                               f"Member must satisfy regular expression pattern: {meta['pattern']}")
        if shape.enum and value not in shape.enum:
            raise InvalidInput(f"Value '{value}' at '{where}' failed to satisfy constraint: "
                               f"Member must satisfy enum value set: [{', '.join(shape.enum)}]")
    elif kind in ("integer", "long", "float", "double"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidInput(f"Value at '{where}' must be a number")
        if "min" in meta and value < meta["min"]:
            raise InvalidInput(f"Value '{value}' at '{where}' failed to satisfy constraint: "
                               f"Member must have value greater than or equal to {meta['min']}")
        if "max" in meta and value > meta["max"]:
            raise InvalidInput(f"Value '{value}' at '{where}' failed to satisfy constraint: "
                               f"Member must have value less than or equal to {meta['max']}")
    elif kind == "blob":
        if not isinstance(value, str):
            raise InvalidInput(f"Value at '{where}' must be base64 text")
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"Value at '{where}' is not valid base64") from None
        _length(len(data), meta, where)
    elif kind == "boolean" and not isinstance(value, bool):
        raise InvalidInput(f"Value at '{where}' must be a boolean")


def _length(n: int, meta: dict[str, Any], where: str) -> None:
    if "min" in meta and n < meta["min"]:
        raise InvalidInput(f"Value at '{where}' failed to satisfy constraint: Member must have "
                           f"length greater than or equal to {meta['min']}")
    if "max" in meta and n > meta["max"]:
        raise InvalidInput(f"Value at '{where}' failed to satisfy constraint: Member must have "
                           f"length less than or equal to {meta['max']}")


def _lc(where: str, name: str) -> str:
    """Service-style member path: `image.bytes`, `projectVersionArn`."""
    part = name[:1].lower() + name[1:]
    return f"{where}.{part}" if where else part


class RekognitionResponses:
    """Decode a request, check it, call the backend, encode its answer."""

    def __init__(self, backend: RekognitionBackend):
        self.backend = backend

    def handle(self, req: Request) -> Response:
        auth = req.header("Authorization") or ""
        scope = re.search(r"Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/aws4_request", auth)
        if not auth.startswith("AWS4-HMAC-SHA256") or scope is None:
            return error("MissingAuthenticationTokenException", "Missing Authentication Token",
                         403)
        if scope.group(2) != "rekognition":
            return error("InvalidSignatureException",
                         f"Credential should be scoped to correct service: 'rekognition', not "
                         f"'{scope.group(2)}'", 403)
        target = req.header("X-Amz-Target") or ""
        op = target[len(TARGET_PREFIX):] if target.startswith(TARGET_PREFIX) else ""
        if op not in OPERATIONS:
            return error("UnknownOperationException", f"Unknown operation {target!r}")
        if (req.header("Content-Type") or "").split(";")[0].strip() != JSON_11:
            return error("SerializationException", f"Content-Type must be {JSON_11}")
        try:
            body = json.loads(req.body or b"{}")
        except ValueError:
            return error("SerializationException", "Request body is not valid JSON")
        try:
            validate(_model().operation_model(op).input_shape, body, "")
        except InvalidInput as exc:
            return error("ValidationException", f"1 validation error detected: {exc}")
        try:
            self.backend.check_throttle(op)
            answer = getattr(self, "op_" + re.sub(r"(?<!^)([A-Z])", r"_\1", op).lower())(body)
        except AwsError as exc:
            return error(exc.code, exc.message, exc.status)
        return Response(200, json.dumps(answer).encode(),
                        {"Content-Type": JSON_11, "x-amzn-RequestId": str(uuid.uuid4())})

    # -- operations --------------------------------------------------------------------------------
    def op_create_project(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("Feature", "CUSTOM_LABELS") != "CUSTOM_LABELS":
            raise AwsError("InvalidParameterException", "Only CUSTOM_LABELS is faked")
        return {"ProjectArn": self.backend.create_project(body["ProjectName"])}

    def op_describe_projects(self, body: dict[str, Any]) -> dict[str, Any]:
        items = self.backend.describe_projects(body.get("ProjectNames"))
        return _page(items, body, "ProjectDescriptions")

    def op_create_dataset(self, body: dict[str, Any]) -> dict[str, Any]:
        arn = self.backend.create_dataset(body["ProjectArn"], body["DatasetType"],
                                          body.get("DatasetSource"))
        return {"DatasetArn": arn}

    def op_describe_dataset(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"DatasetDescription": self.backend.describe_dataset(body["DatasetArn"])}

    def op_create_project_version(self, body: dict[str, Any]) -> dict[str, Any]:
        if body.get("TrainingData") or body.get("TestingData"):
            raise AwsError("InvalidParameterException",
                           "The project has datasets: do not pass TrainingData/TestingData")
        arn = self.backend.create_project_version(body["ProjectArn"], body["VersionName"],
                                                  body["OutputConfig"])
        return {"ProjectVersionArn": arn}

    def op_describe_project_versions(self, body: dict[str, Any]) -> dict[str, Any]:
        items = self.backend.describe_project_versions(body["ProjectArn"],
                                                       body.get("VersionNames"))
        return _page(items, body, "ProjectVersionDescriptions")

    def op_start_project_version(self, body: dict[str, Any]) -> dict[str, Any]:
        status = self.backend.start_project_version(
            body["ProjectVersionArn"], body["MinInferenceUnits"], body.get("MaxInferenceUnits"))
        return {"Status": status}

    def op_stop_project_version(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"Status": self.backend.stop_project_version(body["ProjectVersionArn"])}

    def op_detect_custom_labels(self, body: dict[str, Any]) -> dict[str, Any]:
        image = body["Image"]
        if ("Bytes" in image) == ("S3Object" in image):
            raise AwsError("InvalidParameterException", "Image needs exactly one of Bytes, "
                           "S3Object")
        if "S3Object" in image:
            raise AwsError("InvalidParameterException", "S3Object images are not faked")
        pacing = self.backend.pacing
        if pacing is not None:
            if pacing.admit() is not None:
                raise AwsError("ThrottlingException", "Rate exceeded")
            pacing.serve(body["ProjectVersionArn"])
        labels = self.backend.detect_custom_labels(
            body["ProjectVersionArn"], base64.b64decode(image["Bytes"]),
            body.get("MinConfidence"), body.get("MaxResults"))
        return {"CustomLabels": labels}


def _page(items: list[dict[str, Any]], body: dict[str, Any], key: str) -> dict[str, Any]:
    """Paginate with MaxResults / NextToken (an opaque offset), as Describe* operations do."""
    size = body.get("MaxResults") or 100
    try:
        start = int(base64.b64decode(body["NextToken"]).decode()) if body.get("NextToken") else 0
    except (ValueError, binascii.Error):
        raise AwsError("InvalidPaginationTokenException", "Invalid NextToken") from None
    out: dict[str, Any] = {key: items[start:start + size]}
    if start + size < len(items):
        out["NextToken"] = base64.b64encode(str(start + size).encode()).decode()
    return out


def make_server(backend: RekognitionBackend) -> FakeServer:
    """A FakeServer (not started) speaking Rekognition's JSON 1.1 protocol on `POST /`."""
    server = FakeServer(error_body=_fault_body)
    handler = RekognitionResponses(backend)
    server.route("POST", "/")(handler.handle)
    return server
