"""A local fake of Hugging Face: the Hub API (repos, uploads and commits, tree listings, Jobs),
the Inference Endpoints API, and the endpoints themselves (image classification).

    with HuggingFaceFake() as fake:
        ep = fake.add_endpoint("beans-5", {"red": (220, 30, 30), "blue": (30, 40, 220)})
        url = fake.endpoint_url("beans-5")          # put in params huggingface.endpoints
        fake.state.add_repo(Repo.autotrain_model("me/beans-5", ep.classes))
        monkeypatch.setenv("HF_ENDPOINT", fake.url)  # the Hub base URL
        # the automatic path: huggingface.endpoints_api = fake.endpoints_api
"""

from __future__ import annotations

import re

from tests.fakes.http_base import FakeServer, Fault, Request, Response, VendorFake
from tests.fakes.huggingface.models import Endpoint, HfState, Repo
from tests.fakes.huggingface.responses import install
from tests.fakes.pacing import Pacing

__all__ = ["Endpoint", "Fault", "HfState", "HuggingFaceFake", "Repo"]


class HuggingFaceFake(VendorFake):
    """The fake state (`state`) behind a real HTTP server (`server`)."""

    def __init__(self, token: str = "hf_test_token", user: str = "mlbench-user",
                 pacing: Pacing | None = None):
        self.state = HfState(token, user)
        self.state.pacing = pacing
        self.server = FakeServer(error_body=lambda status, msg: Response.json({"error": msg},
                                                                              status))
        install(self.server, self.state)

    def start(self):  # noqa: ANN201 - returns the subclass
        super().start()
        self.state.public_url = self.url
        return self

    @property
    def endpoints_api(self) -> str:
        """What `huggingface.endpoints_api` is set to (the real one is .../v2 as well)."""
        return f"{self.url}/v2"

    def endpoint_url(self, name: str) -> str:
        return f"{self.url}/endpoints/{name}"

    def add_endpoint(self, name: str, centroids: dict[str, tuple[float, float, float]],
                     **options: object) -> Endpoint:
        return self.state.add_endpoint(Endpoint(name, dict(centroids), **options))  # type: ignore[arg-type]

    def requests(self, method: str, path_regex: str) -> list[Request]:
        return [r for r in self.server.log
                if r.method == method and re.fullmatch(path_regex, r.path)]
