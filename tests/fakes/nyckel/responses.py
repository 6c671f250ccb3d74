"""Wire format of the Nyckel fake: the documented v1 API plus the v0.9 status reads.

Follows https://www.nyckel.com/docs/api (token, functions, labels, samples, invoke; error body
`{"message"}`; 409 duplicate sample with `existingSampleId`; `capture` defaulting to true) and
the official `nyckel` client (sample body `{"data", "externalId", "annotation": {"labelName"},
"sampleSets"}`; ids with or without their prefix; `GET /v0.9/functions/<id>/metrics` and
`GET /v0.9/functions/<id>` for `is_trained`). The v0.9 `state` of a function still training is
this fake's choice ("Annotating"); the client only checks for "Browsing"/"Tuning".

Every malformed request is answered 400 with a message naming the problem: a missing or bad
bearer token is 401, a form-less token request 400 `invalid_request`, bad client credentials
400 `invalid_client` (OAuth2 error bodies).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from typing import Any
from urllib.parse import parse_qs

from PIL import Image

from tests.fakes.http_base import BadRequest, FakeServer, Request, Response
from tests.fakes.nyckel.models import Function, NyckelState
from tests.fakes.pacing import retry_after

DATA_URI = re.compile(r"data:image/(?P<kind>[a-z0-9.+-]+);base64,(?P<payload>.+)", re.S)
FORMAT_OF = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG", "gif": "GIF", "webp": "WEBP",
             "bmp": "BMP"}
FUNCTION_FIELDS = {"name", "input", "output", "projectId"}
LABEL_FIELDS = {"name", "description", "metadata", "color"}
SAMPLE_FIELDS = {"data", "externalId", "annotation", "sampleSets", "metadata"}
INVOKE_FIELDS = {"data", "externalId", "metadata"}
INPUTS = {"Text", "Image", "Tabular"}
OUTPUTS = {"Classification", "Detection", "Search", "Ocr", "Localization", "Tags", "BoxDetect"}
BOOLS = {"true": True, "false": False}


def decode_image_data(value: Any) -> bytes:
    """The bytes of an image data URI; 400 for anything else (URL fetching is not faked)."""
    if not isinstance(value, str):
        raise BadRequest(f"data: expected a data URI string, got {type(value).__name__}")
    m = DATA_URI.fullmatch(value)
    if m is None:
        raise BadRequest("data: expected 'data:image/<type>;base64,<payload>', got "
                         f"{value[:40]!r}")
    try:
        raw = base64.b64decode(m["payload"], validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("data: payload is not valid base64") from None
    try:
        with Image.open(io.BytesIO(raw)) as img:
            actual = img.format
            img.verify()
    except Exception:  # noqa: BLE001 - any decoder error means "not an image"
        raise BadRequest("data: payload is not a decodable image") from None
    declared = FORMAT_OF.get(m["kind"])
    if declared is None or declared != actual:
        raise BadRequest(f"data: declared image/{m['kind']} but the payload is {actual}")
    return raw


def _json_body(req: Request, allowed: set[str]) -> dict[str, Any]:
    ctype = (req.header("Content-Type") or "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise BadRequest(f"Content-Type must be application/json, got {ctype or 'none'!r}")
    body = req.json()
    if not isinstance(body, dict):
        raise BadRequest("body must be a JSON object")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}")
    return body


def _query_bool(req: Request, name: str, default: bool) -> bool:
    values = req.query.get(name)
    if not values:
        return default
    value = values[-1].lower()
    if value not in BOOLS:
        raise BadRequest(f"query {name}: expected true or false, got {values[-1]!r}")
    return BOOLS[value]


def function_json(fn: Function) -> dict[str, Any]:
    return {"id": fn.id, "name": fn.name, "input": fn.input, "output": fn.output}


def install(server: FakeServer, state: NyckelState, page_size: int | None = None) -> None:
    """Register every route of the fake on `server`."""

    def authed(req: Request) -> Response | None:
        auth = req.header("Authorization") or ""
        if not auth.startswith("Bearer ") or not state.token_valid(auth[7:].strip()):
            return Response(401, b"", {"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return None

    def function_or_404(req: Request) -> Function:
        fn = state.find(req.match["fid"])  # type: ignore[index]
        if fn is None:
            raise BadRequest(f"function {req.match['fid']} not found", 404)  # type: ignore[index]
        return fn

    def paged(req: Request, items: list[dict[str, Any]]) -> Response:
        if page_size is None:
            return Response.json(items)
        start = int((req.query.get("start") or ["0"])[0])
        page = items[start:start + page_size]
        headers = {}
        if start + page_size < len(items):
            headers["Link"] = f'<{req.path}?start={start + page_size}>; rel="next"'
        return Response.json(page, headers=headers)

    @server.route("POST", r"/connect/token")
    def token(req: Request) -> Response:
        ctype = (req.header("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            return Response.json({"error": "invalid_request",
                                  "error_description": f"form body required, got {ctype!r}"}, 400)
        form = {k: v[-1] for k, v in parse_qs(req.body.decode()).items()}
        if form.get("grant_type") != "client_credentials":
            return Response.json({"error": "unsupported_grant_type"}, 400)
        if (form.get("client_id"), form.get("client_secret")) != (state.client_id,
                                                                  state.client_secret):
            return Response.json({"error": "invalid_client"}, 400)
        return Response.json({"access_token": state.issue_token(), "token_type": "Bearer",
                              "expires_in": state.expires_in})

    @server.route("GET", r"/v1/functions")
    def list_functions(req: Request) -> Response:
        if (denied := authed(req)) is not None:
            return denied
        with state.lock:
            items = [function_json(fn) for fn in state.functions.values()]
        return paged(req, items)

    @server.route("POST", r"/v1/functions")
    def create_function(req: Request) -> Response:
        if (denied := authed(req)) is not None:
            return denied
        body = _json_body(req, FUNCTION_FIELDS)
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise BadRequest("name: required")
        if body.get("input") not in INPUTS or body.get("output") not in OUTPUTS:
            raise BadRequest(f"input/output: must be one of {sorted(INPUTS)} / {sorted(OUTPUTS)}")
        return Response.json(function_json(state.create_function(name, body["input"],
                                                                 body["output"])))

    @server.route("GET", r"/v1/functions/(?P<fid>[^/]+)")
    def get_function(req: Request) -> Response:
        if (denied := authed(req)) is not None:
            return denied
        return Response.json(function_json(function_or_404(req)))

    @server.route("DELETE", r"/v1/functions/(?P<fid>[^/]+)")
    def delete_function(req: Request) -> Response:
        if (denied := authed(req)) is not None:
            return denied
        fn = function_or_404(req)
        with state.lock:
            del state.functions[fn.id]
        return Response.json({})

    @server.route("GET", r"/v1/functions/(?P<fid>[^/]+)/labels")
    def list_labels(req: Request) -> Response:
        if (denied := authed(req)) is not None:
            return denied
        fn = function_or_404(req)
        with state.lock:
            items = [{"id": lb.id, "name": lb.name} for lb in fn.labels.values()]
        return paged(req, items)

    @server.route("POST", r"/v1/functions/(?P<fid>[^/]+)/labels")
    def create_label(req: Request) -> Response:
        if (denied := authed(req)) is not None:
            return denied
        fn = function_or_404(req)
        body = _json_body(req, LABEL_FIELDS)
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            raise BadRequest("name: required")
        if fn.label_by_name(name) is not None:
            raise BadRequest(f"a label named {name!r} already exists", 409)
        label = state.add_label(fn, name)
        return Response.json({"id": label.id, "name": label.name})

    @server.route("GET", r"/v1/functions/(?P<fid>[^/]+)/samples")
    def list_samples(req: Request) -> Response:
        if (denied := authed(req)) is not None:
            return denied
        fn = function_or_404(req)
        wanted = (req.query.get("externalId") or [None])[0]
        with state.lock:
            items = [{"id": s.id, "externalId": s.external_id,
                      **({"annotation": {"labelId": s.label_id}} if s.label_id else {})}
                     for s in fn.samples.values() if wanted is None or s.external_id == wanted]
        return paged(req, items)

    @server.route("POST", r"/v1/functions/(?P<fid>[^/]+)/samples")
    def create_sample(req: Request) -> Response:
        if (denied := authed(req)) is not None:
            return denied
        fn = function_or_404(req)
        body = _json_body(req, SAMPLE_FIELDS)
        if fn.input != "Image":
            raise BadRequest(f"function {fn.id} takes {fn.input} input; this fake serves Image")
        image = decode_image_data(body.get("data"))
        external_id = body.get("externalId")
        if external_id is not None and not isinstance(external_id, str):
            raise BadRequest("externalId: must be a string")
        label_id = None
        annotation = body.get("annotation")
        if annotation is not None:
            if not isinstance(annotation, dict) or not (
                annotation.get("labelName") or annotation.get("labelId")
            ):
                raise BadRequest("annotation: must hold labelName or labelId")
            label = (fn.label_by_name(annotation["labelName"]) if annotation.get("labelName")
                     else fn.labels.get(annotation["labelId"]))
            if label is None:
                raise BadRequest(f"annotation: no label {annotation} in function {fn.id}")
            label_id = label.id
        sample, created = state.add_sample(fn, image, external_id, label_id)
        if not created:
            return Response.json({"message": "A sample with the same data already exists",
                                  "existingSampleId": sample.id}, 409)
        return Response.json({"id": sample.id, "externalId": sample.external_id,
                              **({"annotation": {"labelId": label_id}} if label_id else {})})

    @server.route("POST", r"/v1/functions/(?P<fid>[^/]+)/invoke")
    def invoke(req: Request) -> Response:
        if (denied := authed(req)) is not None:
            return denied
        fn = function_or_404(req)
        if state.pacing is not None:
            wait = state.pacing.admit()
            if wait is not None:  # Nyckel's documented limit: 25 requests/s, 429 beyond
                return Response.json({"message": "Too many requests: rate limit exceeded"}, 429,
                                     {"Retry-After": retry_after(wait)})
            state.pacing.serve(fn.name)
        capture = _query_bool(req, "capture", True)
        _query_bool(req, "includeMetadata", False)
        body = _json_body(req, INVOKE_FIELDS)
        image = decode_image_data(body.get("data"))
        if not state.is_trained(fn):
            return Response.json({"message": "Function has no trained model yet"}, 400)
        ranked = state.predict(fn, image)
        state.record_invocation(fn, capture, req.query, image)
        best, confidence = ranked[0]
        answer: dict[str, Any] = {"labelName": best.name, "labelId": best.id,
                                  "confidence": confidence}
        if req.query.get("labelCount"):
            count = int(req.query["labelCount"][-1])
            answer["labelConfidences"] = [{"labelName": lb.name, "labelId": lb.id,
                                           "confidence": c} for lb, c in ranked[:count]]
        return Response.json(answer)

    @server.route("GET", r"/v0.9/functions/(?P<fid>[^/]+)/metrics")
    def metrics(req: Request) -> Response:
        if (denied := authed(req)) is not None:
            return denied
        fn = function_or_404(req)
        trained = state.is_trained(fn)
        with state.lock:
            count = len(fn.samples)
        return Response.json({"sampleCount": count, "predictionCount": count if trained else 0,
                              "isTraining": not trained,
                              "annotatedLabelCounts": state.label_counts(fn)})

    @server.route("GET", r"/v0.9/functions/(?P<fid>[^/]+)")
    def function_v09(req: Request) -> Response:
        if (denied := authed(req)) is not None:
            return denied
        fn = function_or_404(req)
        return Response.json({**function_json(fn),
                              "state": "Browsing" if state.is_trained(fn) else "Annotating"})
