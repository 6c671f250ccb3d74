"""Wire format of the Hugging Face fake: an Inference Endpoint's image classification and the
Hub's file `resolve` endpoint.

Inference (https://huggingface.co/docs/inference-endpoints, huggingface_hub `InferenceClient`):
`POST <endpoint url>` with `Authorization: Bearer hf_...` and either the raw image bytes with an
`image/*` Content-Type, or JSON `{"inputs": "<base64>", "parameters": {"top_k",
"function_to_apply"}}`; answer `[{"label", "score"}, ...]` best first; while a replica starts,
`503 {"error": "Model ... is currently loading", "estimated_time": <s>}`; errors
`{"error": "..."}`.

Hub: `GET|HEAD /<repo_id>/resolve/<revision>/<file>` with `ETag`, `X-Repo-Commit` and
`Content-Length`; a missing repo is 404 with `X-Error-Code: RepoNotFound` (also for a private
repo without a valid token, as the Hub does), a missing file 404 `EntryNotFound`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
from typing import Any

from PIL import Image

from tests.fakes.http_base import BadRequest, FakeServer, Request, Response
from tests.fakes.huggingface.models import HfState

PARAMETERS = {"top_k", "function_to_apply"}
FUNCTIONS = {"sigmoid", "softmax", "none"}


def _check_image(raw: bytes, where: str) -> bytes:
    if not raw:
        raise BadRequest(f"{where}: empty image")
    try:
        with Image.open(io.BytesIO(raw)) as img:
            img.verify()
    except Exception:  # noqa: BLE001 - any decoder error means "not an image"
        raise BadRequest(f"{where}: cannot identify an image") from None
    return raw


def _json_inputs(req: Request) -> tuple[bytes, int]:
    body = req.json()
    if not isinstance(body, dict) or "inputs" not in body:
        raise BadRequest('JSON body must be {"inputs": "<base64 image>", "parameters": {...}}')
    unknown = sorted(set(body) - {"inputs", "parameters"})
    if unknown:
        raise BadRequest(f"unknown field {unknown[0]!r}")
    inputs = body["inputs"]
    if not isinstance(inputs, str):
        raise BadRequest("inputs: must be a base64 string")
    try:
        raw = base64.b64decode(inputs, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("inputs: not valid base64") from None
    params: dict[str, Any] = body.get("parameters") or {}
    if not isinstance(params, dict) or set(params) - PARAMETERS:
        raise BadRequest(f"parameters: only {sorted(PARAMETERS)} are allowed")
    if params.get("function_to_apply") not in FUNCTIONS | {None}:
        raise BadRequest(f"function_to_apply: one of {sorted(FUNCTIONS)}")
    top_k = params.get("top_k") or 5
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise BadRequest("top_k: a positive integer")
    return _check_image(raw, "inputs"), top_k


def install(server: FakeServer, state: HfState) -> None:
    """Register the endpoint and Hub routes on `server`."""

    @server.route("POST", r"/endpoints/(?P<name>[^/]+)/?")
    def classify(req: Request) -> Response:
        endpoint = state.endpoints.get(req.match["name"])  # type: ignore[index]
        if endpoint is None:
            return Response.json({"error": "Not Found"}, 404)
        auth = req.header("Authorization") or ""
        if auth != f"Bearer {state.token}":
            return Response.json({"error": "Authorization header is correct, but the token "
                                           "seems invalid" if auth else "Unauthorized"}, 401)
        if state.take_cold(endpoint):
            return Response.json({"error": f"Model {endpoint.name} is currently loading",
                                  "estimated_time": endpoint.estimated_time}, 503)
        ctype = (req.header("Content-Type") or "").split(";")[0].strip().lower()
        if ctype.startswith("image/"):
            image, top_k = _check_image(req.body, "body"), 5
        elif ctype == "application/json":
            image, top_k = _json_inputs(req)
        else:
            raise BadRequest(f"Content-Type {ctype or 'none'!r} not supported: send image bytes "
                             "with an image/* type, or JSON with base64 inputs")
        return Response.json(endpoint.classify(image, top_k))

    def resolve(req: Request) -> Response:
        repo = state.repos.get(req.match["repo"])  # type: ignore[index]
        auth = req.header("Authorization") or ""
        if repo is None or (repo.private and auth != f"Bearer {state.token}"):
            return Response.json({"error": "Repository not found"}, 404,
                                 {"X-Error-Code": "RepoNotFound"})
        if req.match["rev"] not in ("main", repo.commit):  # type: ignore[index]
            return Response.json({"error": "Invalid rev id"}, 404,
                                 {"X-Error-Code": "RevisionNotFound"})
        data = repo.files.get(req.match["file"])  # type: ignore[index]
        if data is None:
            return Response.json({"error": "Entry not found"}, 404,
                                 {"X-Error-Code": "EntryNotFound"})
        etag = hashlib.sha1(data).hexdigest()
        return Response(200, data, {"Content-Type": "application/json", "ETag": f'"{etag}"',
                                    "X-Repo-Commit": repo.commit, "Accept-Ranges": "bytes"})

    pattern = r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)"
    server.route("GET", pattern)(resolve)
    server.route("HEAD", pattern)(resolve)
