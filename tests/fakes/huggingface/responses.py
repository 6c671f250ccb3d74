"""Wire format of the Hugging Face fake: what `huggingface_hub` 2.4 sends and reads.

Inference (https://huggingface.co/docs/inference-endpoints, huggingface_hub `InferenceClient`):
`POST <endpoint url>` with `Authorization: Bearer hf_...` and either the raw image bytes with an
`image/*` Content-Type, or JSON `{"inputs": "<base64>", "parameters": {"top_k",
"function_to_apply"}}`; answer `[{"label", "score"}, ...]` best first; while a replica starts,
`503 {"error": "Model ... is currently loading", "estimated_time": <s>}`; errors
`{"error": "..."}`. `GET <endpoint url>/health`: 200 once it runs (`InferenceEndpoint.wait`).

Hub files: `GET|HEAD /[datasets/]<repo_id>/resolve/<revision>/<file>` with `ETag`,
`X-Repo-Commit`, `Content-Length`; a missing repo is 404 `X-Error-Code: RepoNotFound` (also a
private repo without a valid token, as the Hub does), a missing file 404 `EntryNotFound`.

Hub API (`HfApi`, paths as `hf_api.py` / `_commit_api.py` build them):
- `GET /api/whoami-v2` -> `{"type": "user", "name", ...}`
- `POST /api/repos/create` `{"name", "organization", "visibility", "type"}` -> `{"url"}`; 409
  when it exists
- `GET /api/{models|datasets}/<repo>[/revision/<rev>]` -> `{"id", "sha", "private", "siblings"}`
- `GET /api/{type}s/<repo>/tree/<rev>[/<path>]?recursive=&expand=` -> `[{"type": "file" |
  "directory", "path", "oid", "size"}]`, paged by a `Link: <...>; rel="next"` header
- `POST /api/{type}s/<repo>/preupload/<rev>` `{"files": [{"path", "sample", "size"}]}` ->
  `{"files": [{"path", "uploadMode", "shouldIgnore", "oid"}]}`: always "regular" here, so the
  content goes inline in the commit (the real Hub answers "lfs" for images; that path is
  huggingface_hub's own)
- `POST /api/{type}s/<repo>/commit/<rev>` ndjson (`header`, then `file` {content base64, path,
  encoding} / `deletedFile`) -> `{"commitOid", "commitUrl"}`
- Jobs: `POST /api/jobs/<ns>` (the job spec of `_create_job_spec`) -> JobInfo JSON; `GET
  /api/jobs/<ns>[?label=k=v&stage=S]`; `GET /api/jobs/<ns>/<id>`; `POST .../<id>/cancel`;
  `GET .../<id>/logs[?tail=N]` (server-sent events `data: {"timestamp", "data"}`). 402 when the
  account has no credit.

Inference Endpoints API (`constants.INFERENCE_ENDPOINTS_ENDPOINT`, served here under `/v2`):
`POST /v2/endpoint/<ns>` (the payload `create_inference_endpoint` builds), `GET|DELETE
/v2/endpoint/<ns>/<name>`, `POST .../pause|resume|scale-to-zero`; raw endpoint JSON with
`status.state`, `status.url` once running, `healthRoute`. Resuming a running endpoint is 400
"already running" (what `resume(running_ok=True)` tolerates).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import time
from typing import Any

from PIL import Image

from tests.fakes.http_base import BadRequest, FakeServer, Request, Response
from tests.fakes.huggingface.models import (
    FLAVORS,
    JOB_DONE,
    HfState,
    HubJob,
    ManagedEndpoint,
    Repo,
    git_oid,
    iso,
)
from tests.fakes.pacing import retry_after

PARAMETERS = {"top_k", "function_to_apply"}
FUNCTIONS = {"sigmoid", "softmax", "none"}
REPO = r"(?P<type>models|datasets)/(?P<repo>[^/]+/[^/]+)"
INVALID_TOKEN = "Invalid credentials in Authorization header"


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


def _need(body: Any, *keys: str) -> Any:
    """`body[k1][k2]...`, or a 400 naming the missing field."""
    for i, key in enumerate(keys):
        if not isinstance(body, dict) or key not in body:
            raise BadRequest(f"missing field {'.'.join(keys[:i + 1])}", 422)
        body = body[key]
    return body


def install(server: FakeServer, state: HfState) -> None:
    """Register the endpoint, Hub, Jobs and Inference Endpoints routes on `server`."""

    def authorized(req: Request) -> bool:
        return (req.header("Authorization") or "") == f"Bearer {state.token}"

    def refuse(req: Request) -> Response | None:
        if authorized(req):
            return None
        return Response.json({"error": INVALID_TOKEN}, 401, {"X-Error-Message": INVALID_TOKEN})

    def owned(ns: str) -> Response | None:
        if ns != state.user:
            return Response.json({"error": f"You don't have the rights to use {ns}"}, 403)
        return None

    def gate(req: Request) -> Response | None:
        """The refusal for a request on namespace `ns` without the token or the rights."""
        return refuse(req) or owned(req.match["ns"])  # type: ignore[index]

    def repo_type(req: Request) -> str:
        return req.match["type"][:-1]  # type: ignore[index]

    def find(req: Request) -> Repo | Response:
        repo = state.repo(repo_type(req), req.match["repo"])  # type: ignore[index]
        if not state.readable(repo, req.header("Authorization") or ""):
            return Response.json({"error": "Repository not found"}, 404,
                                 {"X-Error-Code": "RepoNotFound"})
        return repo  # type: ignore[return-value]

    # -- inference -------------------------------------------------------------------------------
    @server.route("GET", r"/endpoints/(?P<name>[^/]+)/health")
    def health(req: Request) -> Response:
        name = req.match["name"]  # type: ignore[index]
        managed = state.managed.get(name)
        if managed is not None:
            state.advance_endpoint(managed)
            return Response.json({}, 200 if managed.state == "running" else 503)
        return Response.json({}, 200 if name in state.endpoints else 404)

    @server.route("POST", r"/endpoints/(?P<name>[^/]+)/?")
    def classify(req: Request) -> Response:
        name = req.match["name"]  # type: ignore[index]
        auth = req.header("Authorization") or ""
        if name not in state.endpoints and name not in state.managed:
            return Response.json({"error": "Not Found"}, 404)
        if auth != f"Bearer {state.token}":
            return Response.json({"error": "Authorization header is correct, but the token "
                                           "seems invalid" if auth else "Unauthorized"}, 401)
        cold = state.managed_cold(name)
        if cold is not None:
            if cold.state == "paused":
                return Response.json({"error": f"Endpoint {name} is paused"}, 503)
            return Response.json({"error": f"Model {name} is currently loading",
                                  "estimated_time": state.init_seconds}, 503)
        endpoint = state.endpoints[name]
        if state.take_cold(endpoint):
            return Response.json({"error": f"Model {endpoint.name} is currently loading",
                                  "estimated_time": endpoint.estimated_time}, 503)
        if state.pacing is not None:
            wait = state.pacing.admit()
            if wait is not None:
                return Response.json({"error": "Rate limit reached: too many requests"}, 429,
                                     {"Retry-After": retry_after(wait)})
            state.pacing.serve(name)
        ctype = (req.header("Content-Type") or "").split(";")[0].strip().lower()
        if ctype.startswith("image/"):
            image, top_k = _check_image(req.body, "body"), 5
        elif ctype == "application/json":
            image, top_k = _json_inputs(req)
        else:
            raise BadRequest(f"Content-Type {ctype or 'none'!r} not supported: send image bytes "
                             "with an image/* type, or JSON with base64 inputs")
        return Response.json(endpoint.classify(image, top_k))

    # -- Hub files -------------------------------------------------------------------------------
    def resolve(req: Request, repo_type: str) -> Response:
        repo = state.repo(repo_type, req.match["repo"])  # type: ignore[index]
        if not state.readable(repo, req.header("Authorization") or ""):
            return Response.json({"error": "Repository not found"}, 404,
                                 {"X-Error-Code": "RepoNotFound"})
        if req.match["rev"] not in ("main", repo.commit):  # type: ignore[index,union-attr]
            return Response.json({"error": "Invalid rev id"}, 404,
                                 {"X-Error-Code": "RevisionNotFound"})
        data = repo.files.get(req.match["file"])  # type: ignore[index,union-attr]
        if data is None:
            return Response.json({"error": "Entry not found"}, 404,
                                 {"X-Error-Code": "EntryNotFound"})
        etag = hashlib.sha1(data).hexdigest()
        return Response(200, data, {"Content-Type": "application/json", "ETag": f'"{etag}"',
                                    "X-Repo-Commit": repo.commit,  # type: ignore[union-attr]
                                    "Accept-Ranges": "bytes"})

    files = r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)"
    for method in ("GET", "HEAD"):
        server.route(method, "/datasets" + files)(lambda req: resolve(req, "dataset"))
        server.route(method, files)(lambda req: resolve(req, "model"))

    # -- Hub API: account and repos --------------------------------------------------------------
    @server.route("GET", r"/api/whoami-v2")
    def whoami(req: Request) -> Response:
        return refuse(req) or Response.json({"type": "user", "name": state.user,
                                             "fullname": "mlbench test user", "orgs": [],
                                             "auth": {"type": "access_token"}})

    @server.route("POST", r"/api/repos/create")
    def create_repo(req: Request) -> Response:
        body = req.json()
        name, ns = _need(body, "name"), body.get("organization") or state.user
        kind = body.get("type") or "model"
        if kind not in ("model", "dataset"):
            raise BadRequest(f"type: model or dataset here, got {kind!r}")
        if body.get("visibility") not in ("private", "public", None):
            raise BadRequest("visibility: private or public")
        failed = refuse(req) or owned(ns)
        if failed:
            return failed
        repo_id = f"{ns}/{name}"
        url = f"{state.public_url}/{'datasets/' if kind == 'dataset' else ''}{repo_id}"
        with state.lock:
            if state.repo(kind, repo_id) is not None:
                return Response.json({"error": f"You already created this {kind} repo",
                                      "url": url}, 409)
            state.add_repo(Repo(repo_id, private=body.get("visibility") == "private",
                                repo_type=kind))
            state.created[f"{kind}_repo"] += 1
        return Response.json({"url": url, "name": repo_id, "id": repo_id})

    def info(req: Request) -> Response:
        repo = find(req)
        if isinstance(repo, Response):
            return repo
        rev = req.match.groupdict().get("rev") or "main"  # type: ignore[union-attr]
        if rev not in ("main", *repo.commits):
            return Response.json({"error": "Invalid rev id"}, 404,
                                 {"X-Error-Code": "RevisionNotFound"})
        return Response.json({"id": repo.repo_id, "sha": repo.commit, "private": repo.private,
                              "siblings": [{"rfilename": p} for p in sorted(repo.files)]})

    server.route("GET", rf"/api/{REPO}")(info)
    server.route("GET", rf"/api/{REPO}/revision/(?P<rev>[^/]+)")(info)

    @server.route("GET", rf"/api/{REPO}/tree/(?P<rev>[^/]+)(?P<path>/.*)?")
    def tree(req: Request) -> Response:
        repo = find(req)
        if isinstance(repo, Response):
            return repo
        if req.match["rev"] != "main":  # type: ignore[index]
            raise BadRequest("the fake lists main only")
        prefix = (req.match["path"] or "").strip("/")  # type: ignore[index]
        recursive = (req.query.get("recursive") or ["false"])[0] == "true"
        entries: dict[str, dict[str, Any]] = {}
        for path, data in sorted(repo.files.items()):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) + 1:] if prefix else path
            parts = rest.split("/")
            for depth in range(1, len(parts)):
                folder = "/".join(filter(None, [prefix, *parts[:depth]]))
                if recursive or depth == 1:
                    entries.setdefault(folder, {"type": "directory", "path": folder, "size": 0,
                                                "oid": hashlib.sha1(folder.encode()).hexdigest()})
            if recursive or len(parts) == 1:
                entries[path] = {"type": "file", "path": path, "size": len(data),
                                 "oid": git_oid(data)}
        listing = [entries[k] for k in sorted(entries)]
        start = int((req.query.get("cursor") or ["0"])[0])
        page = listing[start:start + state.tree_page]
        headers = {}
        if start + state.tree_page < len(listing):
            nxt = (f"{state.public_url}{req.path}?recursive={str(recursive).lower()}"
                   f"&cursor={start + state.tree_page}")
            headers["Link"] = f'<{nxt}>; rel="next"'
        return Response.json(page, 200, headers)

    @server.route("POST", rf"/api/{REPO}/preupload/(?P<rev>[^/]+)")
    def preupload(req: Request) -> Response:
        repo = find(req)
        if isinstance(repo, Response):
            return repo
        wanted = _need(req.json(), "files")
        answer = []
        for entry in wanted:
            path, size = _need(entry, "path"), _need(entry, "size")
            base64.b64decode(_need(entry, "sample"), validate=True)
            if not isinstance(size, int) or size < 0:
                raise BadRequest(f"{path}: size must be a non-negative integer")
            current = repo.files.get(path)
            answer.append({"path": path, "uploadMode": "regular", "shouldIgnore": False,
                           "oid": git_oid(current) if current is not None else None})
        return Response.json({"files": answer, "commitOid": repo.commit})

    @server.route("POST", rf"/api/{REPO}/commit/(?P<rev>[^/]+)")
    def commit(req: Request) -> Response:
        repo = find(req)
        if isinstance(repo, Response):
            return repo
        if not authorized(req):
            return Response.json({"error": "You don't have write access"}, 403)
        if (req.header("Content-Type") or "") != "application/x-ndjson":
            raise BadRequest("a commit is ndjson (Content-Type: application/x-ndjson)")
        lines = [json.loads(line) for line in req.body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise BadRequest("the first ndjson line must be the header")
        summary = _need(lines[0], "value", "summary")
        added: dict[str, bytes] = {}
        deleted: list[str] = []
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            if key == "file":
                if value.get("encoding") != "base64":
                    raise BadRequest("file: encoding must be base64")
                added[_need(value, "path")] = base64.b64decode(_need(value, "content"))
            elif key == "deletedFile":
                deleted.append(_need(value, "path"))
            else:
                raise BadRequest(f"{key}: the fake answered uploadMode regular; only inline "
                                 "files and deletions are expected")
        with state.lock:
            state.files_received += len(added)
            oid = repo.apply(added, deleted, summary)
        prefix = "datasets/" if repo.repo_type == "dataset" else ""
        return Response.json({"success": True, "commitOid": oid, "hookOutput": "",
                              "commitUrl": f"{state.public_url}/{prefix}{repo.repo_id}"
                                           f"/commit/{oid}"})

    # -- Jobs ------------------------------------------------------------------------------------
    def job_json(job: HubJob) -> dict[str, Any]:
        state.advance_job(job)
        spec = job.spec
        running = None if job.started_at is None else \
            int((job.finished_at or time.time()) - job.started_at)
        return {
            "id": job.id, "createdAt": iso(job.created_at), "startedAt": iso(job.started_at),
            "finishedAt": iso(job.finished_at), "dockerImage": spec.get("dockerImage"),
            "spaceId": spec.get("spaceId"), "command": spec["command"],
            "arguments": spec.get("arguments") or [], "environment": spec["environment"],
            "secrets": dict.fromkeys(spec.get("secrets") or {}), "flavor": spec["flavor"],
            "labels": spec.get("labels"), "timeoutSeconds": spec.get("timeoutSeconds"),
            "status": {"stage": job.stage, "message": job.message},
            "owner": {"id": "user-1", "name": job.namespace, "type": "user"},
            "durations": {"schedulingSecs": None if job.started_at is None
                          else int(job.started_at - job.created_at),
                          "runningSecs": running,
                          "totalSecs": int(time.time() - job.created_at)},
        }

    def the_job(req: Request) -> HubJob | Response:
        if failed := gate(req):
            return failed
        job = state.jobs.get(req.match["id"])  # type: ignore[index]
        if job is None or job.namespace != req.match["ns"]:  # type: ignore[index]
            return Response.json({"error": "Job not found"}, 404)
        return job

    @server.route("POST", r"/api/jobs/(?P<ns>[^/]+)")
    def run_job(req: Request) -> Response:
        if failed := gate(req):
            return failed
        spec = req.json()
        command = _need(spec, "command")
        if not (isinstance(command, list) and command and all(isinstance(c, str)
                                                               for c in command)):
            raise BadRequest("command: a non-empty list of strings")
        if not isinstance(_need(spec, "environment"), dict):
            raise BadRequest("environment: an object")
        if _need(spec, "flavor") not in FLAVORS:
            raise BadRequest(f"flavor {spec['flavor']!r} does not exist")
        if not (spec.get("dockerImage") or spec.get("spaceId")):
            raise BadRequest("dockerImage or spaceId is required")
        if not state.credit:
            return Response.json({"error": "Payment Required: you need pre-paid credits to run "
                                           "Jobs. Add credits in your billing settings."}, 402)
        with state.lock:
            job_id = hashlib.sha1(f"job{len(state.jobs)}{time.time()}".encode()).hexdigest()[:24]
            job = state.jobs[job_id] = HubJob(job_id, req.match["ns"], spec,  # type: ignore[index]
                                              time.time())
            job.log(f"===== Job started at {iso(job.created_at)} =====")
            state.created["job"] += 1
            state.pace_job(job)
        return Response.json(job_json(job))

    @server.route("GET", r"/api/jobs/(?P<ns>[^/]+)")
    def list_jobs(req: Request) -> Response:
        if failed := gate(req):
            return failed
        wanted = dict(label.split("=", 1) for label in req.query.get("label", []))
        stages = {s.upper() for s in req.query.get("stage", [])}
        found = [job_json(j) for j in state.jobs.values()
                 if j.namespace == req.match["ns"]  # type: ignore[index]
                 and all(j.labels.get(k) == v for k, v in wanted.items())]
        return Response.json([j for j in found
                              if not stages or j["status"]["stage"] in stages])

    @server.route("GET", r"/api/jobs/(?P<ns>[^/]+)/(?P<id>[^/]+)")
    def inspect_job(req: Request) -> Response:
        job = the_job(req)
        return job if isinstance(job, Response) else Response.json(job_json(job))

    @server.route("POST", r"/api/jobs/(?P<ns>[^/]+)/(?P<id>[^/]+)/cancel")
    def cancel_job(req: Request) -> Response:
        job = the_job(req)
        if isinstance(job, Response):
            return job
        with state.lock:
            if job.stage not in JOB_DONE:
                job.stage, job.finished_at = "CANCELED", time.time()
        return Response.json({})

    @server.route("GET", r"/api/jobs/(?P<ns>[^/]+)/(?P<id>[^/]+)/logs")
    def job_logs(req: Request) -> Response:
        job = the_job(req)
        if isinstance(job, Response):
            return job
        state.advance_job(job)
        lines = list(job.logs)
        tail = req.query.get("tail")
        if tail:
            lines = lines[-int(tail[0]):]
        body = "".join(f"data: {json.dumps({'timestamp': iso(at), 'data': text})}\n\n"
                       for at, text in lines)
        return Response(200, body.encode(), {"Content-Type": "text/event-stream"})

    # -- Inference Endpoints API -----------------------------------------------------------------
    def the_endpoint(req: Request) -> ManagedEndpoint | Response:
        if failed := gate(req):
            return failed
        ep = state.managed.get(req.match["name"])  # type: ignore[index]
        if ep is None:
            return Response.json({"error": "Endpoint not found"}, 404)
        return ep

    @server.route("POST", r"/v2/endpoint/(?P<ns>[^/]+)")
    def create_endpoint(req: Request) -> Response:
        if failed := gate(req):
            return failed
        body = req.json()
        for keys in (("name",), ("type",), ("compute", "accelerator"),
                     ("compute", "instanceSize"), ("compute", "instanceType"),
                     ("compute", "scaling", "minReplica"), ("compute", "scaling", "maxReplica"),
                     ("model", "framework"), ("model", "repository"), ("model", "image"),
                     ("provider", "region"), ("provider", "vendor")):
            _need(body, *keys)
        name = body["name"]
        if len(name) > 32 or not name.replace("-", "").isalnum() or name != name.lower():
            raise BadRequest(f"name {name!r}: lowercase letters, digits and '-', 32 at most")
        if body["compute"]["accelerator"] not in ("cpu", "gpu"):
            raise BadRequest("compute.accelerator: cpu or gpu")
        if body["type"] not in ("public", "authenticated", "private"):
            raise BadRequest("type: public, authenticated or private")
        with state.lock:
            if name in state.managed:
                return Response.json({"error": f"Endpoint {name} already exists"}, 409)
            url = f"{state.public_url}/endpoints/{name}"
            ep = state.managed[name] = ManagedEndpoint(name, req.match["ns"], body, url,
                                                       state="initializing",
                                                       ready_at=state.ready_time(name))
            state.created["endpoint"] += 1
        return Response.json(state.endpoint_raw(ep))

    @server.route("GET", r"/v2/endpoint/(?P<ns>[^/]+)/(?P<name>[^/]+)")
    def get_endpoint(req: Request) -> Response:
        ep = the_endpoint(req)
        return ep if isinstance(ep, Response) else Response.json(state.endpoint_raw(ep))

    @server.route("DELETE", r"/v2/endpoint/(?P<ns>[^/]+)/(?P<name>[^/]+)")
    def delete_endpoint(req: Request) -> Response:
        ep = the_endpoint(req)
        if isinstance(ep, Response):
            return ep
        with state.lock:
            state.managed.pop(ep.name, None)
            state.endpoints.pop(ep.name, None)
        return Response.json({})

    @server.route("POST", r"/v2/endpoint/(?P<ns>[^/]+)/(?P<name>[^/]+)/"
                          r"(?P<action>pause|resume|scale-to-zero)")
    def act(req: Request) -> Response:
        ep = the_endpoint(req)
        if isinstance(ep, Response):
            return ep
        action = req.match["action"]  # type: ignore[index]
        with state.lock:
            state.advance_endpoint(ep)
            if action == "resume":
                if ep.state == "running":
                    return Response.json({"error": "Endpoint is already running"}, 400)
                ep.state, ep.ready_at = "initializing", state.ready_time(ep.name)
                ep.resumes += 1
            elif action == "pause":
                ep.state = "paused"
                ep.pauses += 1
            else:
                ep.state = "scaledToZero"
            ep.updated_at = time.time()
        return Response.json(state.endpoint_raw(ep))

