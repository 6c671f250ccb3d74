"""Wire format of the Vertex AI fake: the documented v1 REST resources and the OAuth2 token route.

Follows https://cloud.google.com/vertex-ai/docs/reference/rest (v1): `datasets.create` and
`datasets.import` and `endpoints.create/deployModel/undeployModel/delete` answer a
long-running `Operation` (`name`, `metadata`, `done`, then `response` or `error`) read back
with `GET /v1/<operation name>` (or `GET /ui/<operation name>`, the binding the generated
`aiplatform_v1` REST transport picks first); `trainingPipelines.create` answers the
`TrainingPipeline` itself; enums are names, or numbers when the query asks
`$alt=json;enum-encoding=int` (as the generated REST clients do); `list` methods take
`filter`/`pageSize`/`pageToken` and answer `nextPageToken`; errors
are `{"error": {"code", "message", "status"}}`. `:predict` takes the AutoML image instance
format (`{"instances": [{"content": <base64>}], "parameters": {"confidenceThreshold",
"maxPredictions"}}`, one image a request, at most 1.5 MB) and answers `predictions[0]` with
`ids`/`displayNames`/`confidences` best first, plus `deployedModelId`.

`POST /token` is a Google OAuth2 token endpoint for service-account keys (the JWT-bearer grant
google-auth sends): point a key file's `token_uri` here and google-auth works unchanged. A
call's bearer is such an access token, or the service account's self-signed JWT (what the
generated clients send for a key file), checked against the key's public half.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import time
from typing import Any
from urllib.parse import parse_qs

from PIL import Image

from tests.fakes.http_base import BadRequest, FakeServer, Request, Response
from tests.fakes.pacing import retry_after
from tests.fakes.vertex.models import ApiFailure, Operation, VertexState

P = r"/v1/projects/(?P<p>[^/]+)/locations/(?P<l>[^/]+)"
ID = r"(?P<id>[0-9]+)"
COLON = r"(?::|%3A)"
MAX_PREDICT_BYTES = 1_500_000
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
#: The audience Google checks in a service-account JWT (whatever the key's token_uri says).
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
PIPELINE_STATES = {f"PIPELINE_STATE_{s}": i for i, s in enumerate((
    "UNSPECIFIED", "QUEUED", "PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLING",
    "CANCELLED", "PAUSED"))}
STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                404: "NOT_FOUND", 409: "ALREADY_EXISTS", 429: "RESOURCE_EXHAUSTED",
                500: "INTERNAL", 503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def google_error(status: int, message: str, name: str | None = None) -> Response:
    return Response.json({"error": {"code": status, "message": message,
                                    "status": name or STATUS_NAMES.get(status, "UNKNOWN")}},
                         status)


def operation_json(op: Operation) -> dict[str, Any]:
    out: dict[str, Any] = {"name": op.name, "metadata": op.metadata}
    if op.done:
        out["done"] = True
        if op.error is not None:
            out["error"] = op.error
        else:
            out["response"] = op.response or {}
    return out


class VertexFake:
    """A FakeServer speaking Vertex AI v1 over plain HTTP, backed by a VertexState."""

    def __init__(self, state: VertexState | None = None, page_size: int = 50):
        self.state = state or VertexState()
        self.page_size = page_size
        self.server = FakeServer(error_body=lambda status, msg: google_error(status, msg))
        self._routes()

    # -- lifecycle -------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self.server.url

    @property
    def token_uri(self) -> str:
        return f"{self.server.url}/token"

    def start(self) -> VertexFake:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self) -> VertexFake:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def calls(self, method: str, pattern: str) -> list[Request]:
        """Logged requests whose method matches and path contains `pattern`."""
        return [r for r in self.server.log if r.method == method and pattern in r.path]

    # -- routes ----------------------------------------------------------------------------------
    def _routes(self) -> None:
        s, st = self.server, self.state

        def api(method: str, pattern: str):
            def deco(fn):
                def handler(req: Request) -> Response:
                    auth = req.header("Authorization") or ""
                    token = auth[7:] if auth.startswith("Bearer ") else ""
                    if not (st.token_valid(token) or _self_signed_jwt(st, token)):
                        return google_error(401, "Request had invalid authentication "
                                            "credentials. Expected OAuth 2 access token.")
                    try:
                        return fn(req)
                    except ApiFailure as exc:
                        return google_error(exc.code, exc.message, exc.status)

                s.route(method, pattern)(handler)
                return fn

            return deco

        @s.route("POST", r"/token")
        def token(req: Request) -> Response:
            form = {k: v[0] for k, v in parse_qs(req.body.decode()).items()}
            if form.get("grant_type") != JWT_GRANT or "assertion" not in form:
                return Response.json({"error": "unsupported_grant_type"}, 400)
            claims = _jwt_claims(form["assertion"])
            if claims is None or CLOUD_PLATFORM not in str(claims.get("scope", "")).split():
                return Response.json({"error": "invalid_scope",
                                      "error_description": "cloud-platform scope required"}, 400)
            if claims.get("aud") != GOOGLE_TOKEN_AUDIENCE or not claims.get("iss"):
                return Response.json({"error": "invalid_grant",
                                      "error_description": "Invalid JWT audience"}, 400)
            return Response.json({"access_token": st.issue_token(), "token_type": "Bearer",
                                  "expires_in": st.expires_in})

        @api("GET", r"/(?:v1|ui)/(?P<op>projects/.+/operations/[0-9]+)")
        def get_operation(req: Request) -> Response:
            return Response.json(operation_json(st.poll_operation(req.match["op"])))

        @api("POST", P + r"/datasets")
        def create_dataset(req: Request) -> Response:
            parent = st.parent(req.match["p"], req.match["l"])
            return Response.json(operation_json(st.create_dataset(parent, _body(req))))

        @api("GET", P + r"/(?P<kind>datasets|trainingPipelines|endpoints|models)")
        def list_resources(req: Request) -> Response:
            parent = st.parent(req.match["p"], req.match["l"])
            items = [_enums(req, item)
                     for item in st.list(req.match["kind"], parent, _q(req, "filter"))]
            size = int(_q(req, "pageSize") or self.page_size)
            start = int(_q(req, "pageToken") or 0)
            out: dict[str, Any] = {req.match["kind"]: items[start:start + size]}
            if start + size < len(items):
                out["nextPageToken"] = str(start + size)
            return Response.json(out)

        @api("GET", P + r"/datasets/" + ID)
        def get_dataset(req: Request) -> Response:
            parent = st.parent(req.match["p"], req.match["l"])
            ds = st.dataset(f"{parent}/datasets/{req.match['id']}")
            return Response.json(st.dataset_json(ds))

        @api("POST", P + r"/datasets/" + ID + COLON + "import")
        def import_data(req: Request) -> Response:
            parent = st.parent(req.match["p"], req.match["l"])
            op = st.import_data(f"{parent}/datasets/{req.match['id']}", _body(req))
            return Response.json(operation_json(op))

        @api("POST", P + r"/trainingPipelines")
        def create_pipeline(req: Request) -> Response:
            parent = st.parent(req.match["p"], req.match["l"])
            return Response.json(_enums(req, st.pipeline_json(st.create_pipeline(parent,
                                                                                 _body(req)))))

        @api("GET", P + r"/trainingPipelines/" + ID)
        def get_pipeline(req: Request) -> Response:
            parent = st.parent(req.match["p"], req.match["l"])
            p = st.pipeline(f"{parent}/trainingPipelines/{req.match['id']}")
            return Response.json(_enums(req, st.pipeline_json(p)))

        @api("GET", P + r"/models/" + ID)
        def get_model(req: Request) -> Response:
            parent = st.parent(req.match["p"], req.match["l"])
            return Response.json(st.model_json(st.model(f"{parent}/models/{req.match['id']}")))

        @api("POST", P + r"/endpoints")
        def create_endpoint(req: Request) -> Response:
            parent = st.parent(req.match["p"], req.match["l"])
            return Response.json(operation_json(st.create_endpoint(parent, _body(req))))

        @api("GET", P + r"/endpoints/" + ID)
        def get_endpoint(req: Request) -> Response:
            parent = st.parent(req.match["p"], req.match["l"])
            ep = st.endpoint(f"{parent}/endpoints/{req.match['id']}")
            return Response.json(st.endpoint_json(ep))

        @api("DELETE", P + r"/endpoints/" + ID)
        def delete_endpoint(req: Request) -> Response:
            parent = st.parent(req.match["p"], req.match["l"])
            op = st.delete_endpoint(f"{parent}/endpoints/{req.match['id']}")
            return Response.json(operation_json(op))

        @api("POST", P + r"/endpoints/" + ID + COLON + "(?P<verb>deployModel|undeployModel)")
        def deploy(req: Request) -> Response:
            parent = st.parent(req.match["p"], req.match["l"])
            name = f"{parent}/endpoints/{req.match['id']}"
            body = _body(req)
            op = st.deploy(name, body) if req.match["verb"] == "deployModel" else \
                st.undeploy(name, body)
            return Response.json(operation_json(op))

        @api("POST", P + r"/endpoints/" + ID + COLON + "predict")
        def predict(req: Request) -> Response:
            parent = st.parent(req.match["p"], req.match["l"])
            if st.pacing is not None:
                wait = st.pacing.admit()
                if wait is not None:
                    response = google_error(429, "Quota exceeded for aiplatform.googleapis.com/"
                                            "online_prediction_requests_per_base_model")
                    response.headers["Retry-After"] = retry_after(wait)
                    return response
                endpoint = st.endpoint(f"{parent}/endpoints/{req.match['id']}")
                st.pacing.serve(endpoint.display_name)
            image, threshold, limit = _predict_request(_body(req))
            dm, model, ranked = st.predict(f"{parent}/endpoints/{req.match['id']}", image,
                                           threshold, limit)
            return Response.json({
                "predictions": [{"ids": [r[0] for r in ranked],
                                 "displayNames": [r[1] for r in ranked],
                                 "confidences": [r[2] for r in ranked]}],
                "deployedModelId": dm.id, "model": model.name,
                "modelDisplayName": model.display_name, "modelVersionId": "1",
            })


def _enums(req: Request, resource: dict[str, Any]) -> dict[str, Any]:
    """A pipeline's `state` as its number when the client asked for integer enums."""
    if "state" in resource and "enum-encoding=int" in _q(req, "$alt"):
        return {**resource, "state": PIPELINE_STATES[resource["state"]]}
    return resource


def _q(req: Request, key: str) -> str:
    return (req.query.get(key) or [""])[0]


def _body(req: Request) -> dict[str, Any]:
    body = req.json()
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def _predict_request(body: dict[str, Any]) -> tuple[bytes, float, int]:
    instances = body.get("instances")
    if not isinstance(instances, list) or len(instances) != 1:
        raise BadRequest("AutoML image classification takes exactly one instance a request")
    inst = instances[0]
    if not isinstance(inst, dict) or set(inst) != {"content"}:
        raise BadRequest('instance must be {"content": "<base64 image>"}')
    try:
        image = base64.b64decode(inst["content"], validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise BadRequest("instance content is not valid base64") from None
    if len(image) > MAX_PREDICT_BYTES:
        raise BadRequest(f"image is {len(image)} bytes; the limit is 1.5 MB")
    try:
        with Image.open(io.BytesIO(image)) as img:
            img.verify()
    except Exception:  # noqa: BLE001 - any decoder error means "not an image"
        raise BadRequest("instance content is not a decodable image") from None
    params = body.get("parameters") or {}
    unknown = set(params) - {"confidenceThreshold", "maxPredictions"}
    if unknown:
        raise BadRequest(f"unknown parameters {sorted(unknown)}")
    threshold = params.get("confidenceThreshold", 0.5)
    limit = params.get("maxPredictions", 10)
    if not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
        raise BadRequest("confidenceThreshold must be a number in [0, 1]")
    # JSON has one number type: the official client sends protobuf Values, so 5 arrives as 5.0.
    if isinstance(limit, bool) or not isinstance(limit, int | float) or limit < 1 or (
            isinstance(limit, float) and not limit.is_integer()):
        raise BadRequest("maxPredictions must be a positive integer")
    return image, float(threshold), int(limit)


def _b64json(part: str) -> dict[str, Any] | None:
    try:
        value = json.loads(_b64(part))
    except (binascii.Error, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _jwt_claims(assertion: str) -> dict[str, Any] | None:
    parts = assertion.split(".")
    return _b64json(parts[1]) if len(parts) == 3 else None


def _self_signed_jwt(st: VertexState, token: str) -> bool:
    """A service account's self-signed JWT, which Google accepts instead of an access token:
    RS256-signed by a key it knows (`kid`), for the cloud-platform scope (or an API audience),
    `iss` = `sub`, not expired."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    parts = token.split(".")
    header, claims = (_b64json(parts[0]), _b64json(parts[1])) if len(parts) == 3 else (None, None)
    key = st.public_keys.get(str(header.get("kid"))) if header else None
    if key is None or claims is None or header.get("alg") != "RS256":
        return False
    try:
        key.verify(_b64(parts[2]), f"{parts[0]}.{parts[1]}".encode(), padding.PKCS1v15(),
                   hashes.SHA256())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    scoped = CLOUD_PLATFORM in str(claims.get("scope", "")).split() \
        or str(claims.get("aud", "")).startswith("https://")
    return scoped and claims.get("iss") == claims.get("sub") \
        and float(claims.get("exp", 0)) > time.time()
