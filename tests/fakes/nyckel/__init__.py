"""A local fake of the Nyckel API (token, functions, labels, samples, invoke, training status).

    with NyckelFake() as fake:            # serves on 127.0.0.1:<free port>
        monkeypatch.setenv("NYCKEL_API_URL", fake.url)
        ...
        fake.state.functions             # what the client created
        fake.server.inject(Fault(429, count=1, headers={"Retry-After": "0"}))
"""

from __future__ import annotations

from tests.fakes.http_base import FakeServer, Fault, Request, Response, VendorFake
from tests.fakes.nyckel.models import Function, NyckelState, Sample
from tests.fakes.nyckel.responses import install

__all__ = ["Fault", "Function", "NyckelFake", "NyckelState", "Sample"]


class NyckelFake(VendorFake):
    """The fake account (`state`) behind a real HTTP server (`server`)."""

    def __init__(self, page_size: int | None = None, **state_options: object):
        self.state = NyckelState(**state_options)  # type: ignore[arg-type]
        self.server = FakeServer(
            error_body=lambda status, msg: Response.json({"message": msg}, status)
        )
        install(self.server, self.state, page_size=page_size)

    # -- assertions helpers ------------------------------------------------------------------------
    def requests(self, method: str, path_regex: str) -> list[Request]:
        import re

        return [r for r in self.server.log
                if r.method == method and re.fullmatch(path_regex, r.path)]

    def function(self, function_id: str) -> Function:
        fn = self.state.find(function_id)
        assert fn is not None, f"no function {function_id}"
        return fn

    def samples(self, function_id: str) -> list[Sample]:
        return list(self.function(function_id).samples.values())
