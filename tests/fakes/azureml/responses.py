"""Wire format of the Azure ML fake: the ARM routes of one workspace, MLflow's `runs/get`, an
online endpoint's scoring URI and the App Service managed-identity token endpoint.

Follows the Azure ML REST reference (Microsoft.MachineLearningServices, api-version
2024-04-01): resources answer the ARM envelope `{"id", "name", "type", "properties", ...}`,
errors `{"error": {"code", "message"}}`; every call needs `api-version` and a bearer token;
`PUT` of an online endpoint or deployment answers 201 and the resource `Creating`, `DELETE`
202; `listKeys` `{"primaryKey", "secondaryKey"}`; a datastore's `listSecrets`
`{"secretsType": "AccountKey", "key"}`. MLflow: `GET <tracking>/api/2.0/mlflow/runs/get?run_id=`
answers `{"run": {"info", "data": {"tags": [{"key", "value"}]}}}`. Scoring: `POST` with
`Authorization: Bearer <endpoint key>` (and `azureml-model-deployment` to pick one) of
`{"input_data": {"columns": ["image"], "data": [<base64>]}}`, answered `[{"probs", "labels"}]`.

`GET /msi/token?api-version=2019-08-01&resource=` with `X-IDENTITY-HEADER` is App Service's
managed identity endpoint: with `IDENTITY_ENDPOINT`/`IDENTITY_HEADER` pointing here,
`azure-identity`'s `DefaultAzureCredential` gets its tokens from the fake, unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.fakes.azureml.models import PROVIDER, ApiFailure, AzureMLState, Job, Resource
from tests.fakes.http_base import FakeServer, Request, Response, VendorFake

WS = (r"/subscriptions/(?P<s>[^/]+)/resourceGroups/(?P<g>[^/]+)/providers/"
      + PROVIDER + r"/workspaces/(?P<w>[^/]+)")
NAME = r"(?P<name>[^/]+)"
VERSION = r"(?P<version>[^/]+)"
TYPE = f"{PROVIDER}/workspaces"


def arm_error(status: int, message: str, code: str | None = None) -> Response:
    return Response.json({"error": {"code": code or {400: "BadRequest", 401: "Unauthorized",
                                                      403: "Forbidden", 404: "NotFound",
                                                      409: "Conflict", 429: "TooManyRequests"
                                                      }.get(status, "InternalServerError"),
                                    "message": message}}, status)


class AzureMLFake(VendorFake):
    """A FakeServer speaking Azure ML's REST API over plain HTTP, backed by an AzureMLState."""

    def __init__(self, state: AzureMLState):
        self.state = state
        self.server = FakeServer(error_body=lambda status, msg: arm_error(status, msg))
        self._routes()

    @property
    def tracking_uri(self) -> str:
        """The workspace's MLflow URI as Azure gives it (`azureml://<host>/mlflow/v1.0/...`)."""
        return f"azureml://{self.url.split('://', 1)[1]}/mlflow/v1.0{self.state.path}"

    def calls(self, method: str, pattern: str) -> list[Request]:
        """Logged requests whose method matches and path contains `pattern`."""
        return [r for r in self.server.log if r.method == method and pattern in r.path]

    def envelope(self, path: str, props: dict[str, Any], **extra: Any) -> dict[str, Any]:
        kind = "/".join(p for i, p in enumerate(path.split("/")) if i % 2 == 0)
        return {"id": self.state.arm_id(path), "name": path.rsplit("/", 1)[-1],
                "type": f"{TYPE}/{kind}", "properties": props, **extra}

    def job_json(self, job: Job) -> dict[str, Any]:
        studio = f"https://ml.azure.com/runs/{job.name}?wsid={self.state.path}"
        return self.envelope(f"jobs/{job.name}", {
            **job.body, "status": job.status,
            "services": {"Studio": {"jobServiceType": "Studio", "endpoint": studio}}},
            systemData={"createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                   time.gmtime(job.created))})

    def endpoint_json(self, ep: Resource) -> dict[str, Any]:
        props = {**(ep.body.get("properties") or {}), "provisioningState": ep.state,
                 "scoringUri": f"{self.url}/score/{ep.name}",
                 "swaggerUri": f"{self.url}/score/{ep.name}/swagger.json",
                 "traffic": (ep.body.get("properties") or {}).get("traffic") or {}}
        return self.envelope(f"onlineEndpoints/{ep.name}", props, kind="Managed",
                             location=ep.body.get("location"),
                             identity=ep.body.get("identity") or {"type": "SystemAssigned"})

    def deployment_json(self, ep: str, dep: Resource) -> dict[str, Any]:
        return self.envelope(f"onlineEndpoints/{ep}/deployments/{dep.name}",
                             {**dep.body["properties"], "provisioningState": dep.state},
                             location=dep.body.get("location"), sku=dep.body.get("sku"))

    # -- routes ----------------------------------------------------------------------------------
    def _routes(self) -> None:
        s, st = self.server, self.state

        def arm(method: str, pattern: str) -> Callable[[Callable[..., Any]], Any]:
            def deco(fn: Callable[..., Any]) -> Any:
                def handler(req: Request) -> Response:
                    auth = req.header("Authorization") or ""
                    if not st.token_valid(auth.removeprefix("Bearer ")):
                        return arm_error(401, "The access token is missing, invalid or expired.",
                                         "InvalidAuthenticationToken")
                    if not req.query.get("api-version") and "/mlflow/" not in req.path:
                        return arm_error(400, "The api-version query parameter is required.",
                                         "MissingApiVersionParameter")
                    try:
                        with st.lock:
                            st.check_scope(req.match["s"], req.match["g"], req.match["w"])
                            return fn(req)
                    except ApiFailure as exc:
                        return arm_error(exc.status, exc.message, exc.code)

                s.route(method, pattern)(handler)
                return fn

            return deco

        @s.route("GET", r"/msi/token")
        def msi(req: Request) -> Response:
            if req.header("X-IDENTITY-HEADER") != st.identity_header or \
                    req.query.get("api-version") != ["2019-08-01"]:
                return Response.json({"error": "invalid_request"}, 400)
            resource = req.query["resource"][0]
            return Response.json({"access_token": st.issue_token(), "token_type": "Bearer",
                                  "expires_on": str(int(time.time()) + 3600),
                                  "resource": resource})

        @arm("GET", WS)
        def workspace(req: Request) -> Response:
            return Response.json({"id": st.path, "name": st.workspace, "type": TYPE,
                                  "location": st.location, "properties": {
                                      "mlFlowTrackingUri": self.tracking_uri,
                                      "workspaceId": "00000000-0000-0000-0000-00000000f00d",
                                      "provisioningState": "Succeeded"}})

        @arm("GET", WS + r"/computes/" + NAME)
        def compute(req: Request) -> Response:
            return Response.json(self.envelope(f"computes/{req.match['name']}", {
                "computeType": "AmlCompute", "provisioningState": "Succeeded",
                "properties": st.compute(req.match["name"])}, location=st.location))

        @arm("GET", WS + r"/datastores")
        def datastores(req: Request) -> Response:
            only_default = req.query.get("isDefault") == ["true"]
            return Response.json({"value": [
                self.envelope(f"datastores/{name}", _public(props))
                for name, props in st.datastores.items()
                if props["isDefault"] or not only_default]})

        @arm("GET", WS + r"/datastores/" + NAME)
        def get_datastore(req: Request) -> Response:
            return Response.json(self.envelope(f"datastores/{req.match['name']}",
                                               _public(st.datastore(req.match["name"]))))

        @arm("PUT", WS + r"/datastores/" + NAME)
        def put_datastore(req: Request) -> Response:
            props = st.put_datastore(req.match["name"], _props(req))
            return Response.json(self.envelope(f"datastores/{req.match['name']}",
                                               _public(props)), 201)

        @arm("POST", WS + r"/datastores/" + NAME + r"/listSecrets")
        def list_secrets(req: Request) -> Response:
            return Response.json(st.secrets(req.match["name"]))

        @arm("GET", WS + r"/data/" + NAME + r"/versions/" + VERSION)
        def get_data(req: Request) -> Response:
            found = st.data.get((req.match["name"], req.match["version"]))
            if found is None:
                raise ApiFailure(404, "UserError", "Data version not found.")
            return Response.json(self.envelope(
                f"data/{req.match['name']}/versions/{req.match['version']}", found))

        @arm("PUT", WS + r"/data/" + NAME + r"/versions/" + VERSION)
        def put_data(req: Request) -> Response:
            props = st.put_data(req.match["name"], req.match["version"], _props(req))
            return Response.json(self.envelope(
                f"data/{req.match['name']}/versions/{req.match['version']}", props), 201)

        @arm("GET", WS + r"/jobs/" + NAME)
        def get_job(req: Request) -> Response:
            return Response.json(self.job_json(st.job(req.match["name"])))

        @arm("PUT", WS + r"/jobs/" + NAME)
        def put_job(req: Request) -> Response:
            return Response.json(self.job_json(st.put_job(req.match["name"], _props(req))), 201)

        @arm("GET", r"/mlflow/v1\.0" + WS + r"/api/2\.0/mlflow/runs/get")
        def mlflow_run(req: Request) -> Response:
            return Response.json({"run": st.mlflow_run((req.query.get("run_id") or [""])[0])})

        @arm("GET", WS + r"/models/" + NAME + r"/versions/" + VERSION)
        def get_model(req: Request) -> Response:
            path = f"models/{req.match['name']}/versions/{req.match['version']}"
            return Response.json(self.envelope(path, st.model(st.arm_id(path))))

        @arm("PUT", WS + r"/models/" + NAME + r"/versions/" + VERSION)
        def put_model(req: Request) -> Response:
            path = f"models/{req.match['name']}/versions/{req.match['version']}"
            props = st.put_model(req.match["name"], req.match["version"], _props(req))
            return Response.json(self.envelope(path, props), 201)

        @arm("GET", WS + r"/onlineEndpoints/" + NAME)
        def get_endpoint(req: Request) -> Response:
            return Response.json(self.endpoint_json(st.endpoint(req.match["name"])))

        @arm("PUT", WS + r"/onlineEndpoints/" + NAME)
        def put_endpoint(req: Request) -> Response:
            ep = st.put_endpoint(req.match["name"], req.json())
            return Response.json(self.endpoint_json(ep), 201)

        @arm("DELETE", WS + r"/onlineEndpoints/" + NAME)
        def delete_endpoint(req: Request) -> Response:
            st.delete(req.match["name"])
            return Response(202, b"", {"Location": f"{self.url}{req.path}"})

        @arm("POST", WS + r"/onlineEndpoints/" + NAME + r"/listKeys")
        def list_keys(req: Request) -> Response:
            st.endpoint(req.match["name"], advance=False)
            primary, secondary = st.keys[req.match["name"]]
            return Response.json({"primaryKey": primary, "secondaryKey": secondary})

        @arm("GET", WS + r"/onlineEndpoints/" + NAME + r"/deployments")
        def list_deployments(req: Request) -> Response:
            ep = st.endpoint(req.match["name"])
            return Response.json({"value": [self.deployment_json(ep.name, d)
                                            for d in ep.children.values()]})

        deployment = WS + r"/onlineEndpoints/" + NAME + r"/deployments/(?P<dep>[^/]+)"

        @arm("GET", deployment)
        def get_deployment(req: Request) -> Response:
            ep = st.endpoint(req.match["name"])
            dep = ep.children.get(req.match["dep"])
            if dep is None:
                raise ApiFailure(404, "UserError", f"Deployment {req.match['dep']} not found.")
            return Response.json(self.deployment_json(ep.name, dep))

        @arm("PUT", deployment)
        def put_deployment(req: Request) -> Response:
            dep = st.put_deployment(req.match["name"], req.match["dep"], req.json())
            return Response.json(self.deployment_json(req.match["name"], dep), 201)

        @arm("DELETE", deployment)
        def delete_deployment(req: Request) -> Response:
            st.delete(req.match["name"], req.match["dep"])
            return Response(202, b"", {"Location": f"{self.url}{req.path}"})

        @s.route("POST", r"/score/" + NAME)
        def score(req: Request) -> Response:
            auth = req.header("Authorization") or ""
            try:
                return Response.json(st.score(req.match["name"], auth.removeprefix("Bearer "),
                                              req.header("azureml-model-deployment"),
                                              req.json()))
            except ApiFailure as exc:
                return arm_error(exc.status, exc.message, exc.code)


def _props(req: Request) -> dict[str, Any]:
    body = req.json()
    if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
        raise ApiFailure(400, "UserError", "the body must be {\"properties\": {...}}.")
    return body["properties"]


def _public(props: dict[str, Any]) -> dict[str, Any]:
    """A datastore as GET shows it: the credentials' type, never their secrets."""
    creds = {"credentialsType": (props.get("credentials") or {}).get("credentialsType")}
    return {**props, "credentials": creds}
