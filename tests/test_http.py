"""The shared HTTP path: retries, Retry-After, 503 loading, 401 renewal, sync and async alike."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping

import aiohttp
import pytest

from mlbench.core import Prediction
from mlbench.errors import ServiceCallError
from mlbench.retry import RetryLater, RetryPolicy, retry_after_seconds
from mlbench.services.base import Job, ServiceContext, ServiceSettings
from mlbench.services.http import HttpRequest, HttpService
from tests.fakes.http_base import FakeServer, Fault, Response


class Echo(HttpService):
    """A minimal HTTP service: POST bytes, answer `[{"label", "score"}]`."""

    name = "echo"
    retry = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.2, timeout=2)

    def __init__(self, url: str):
        super().__init__(ServiceContext("echo", ServiceSettings(), "d", 5, 0, {}, None))  # type: ignore[arg-type]
        self.url = url
        self.token = "old"
        self.renewals = 0

    def submit(self, split) -> Job:  # pragma: no cover - not used
        raise NotImplementedError

    def wait(self, job):  # pragma: no cover - not used
        raise NotImplementedError

    def connect(self, model) -> None:  # pragma: no cover - not used
        pass

    def build_request(self, image: bytes) -> HttpRequest:
        headers = {"Authorization": f"Bearer {self.token}"}
        return HttpRequest("POST", self.url + "/classify", headers, image)

    def parse_response(self, status: int, headers: Mapping[str, str], body: bytes) -> Prediction:
        top = json.loads(body)[0]
        return Prediction(top["label"], top["score"])

    def on_unauthorized(self) -> bool:
        self.renewals += 1
        self.token = "new"
        return True


@pytest.fixture
def server():
    fake = FakeServer()

    @fake.route("POST", "/classify")
    def classify(req):
        if req.header("Authorization") != "Bearer new":
            return Response.json({"error": "expired"}, 401)
        return Response.json([{"label": "cat", "score": 0.75}])

    with fake:
        yield fake


def _async_predict(svc: Echo, image: bytes) -> Prediction:
    async def go():
        async with aiohttp.ClientSession() as session:
            return await svc.apredict(session, image)

    return asyncio.run(go())


@pytest.fixture(params=["sync", "async"])
def call(request):
    return (lambda svc, img: svc.predict(img)) if request.param == "sync" else _async_predict


def test_401_renews_credentials_once(server, call):
    svc = Echo(server.url)
    pred = call(svc, b"img")
    assert pred.label == "cat" and pred.confidence == 0.75
    assert svc.renewals == 1 and pred.attempts == 2


def test_429_honours_retry_after_and_counts_attempts(server, call):
    svc = Echo(server.url)
    svc.token = "new"
    server.inject(Fault(429, count=2, headers={"Retry-After": "0.3"}))
    start = time.monotonic()
    pred = call(svc, b"img")
    assert pred.attempts == 3
    assert time.monotonic() - start >= 0.55


def test_503_loading_waits_estimated_time(server, call):
    svc = Echo(server.url)
    svc.token = "new"
    server.inject(Fault(503, count=1, body={"error": "Model x is currently loading",
                                            "estimated_time": 0.25}))
    start = time.monotonic()
    assert call(svc, b"img").attempts == 2
    assert time.monotonic() - start >= 0.25


def test_gives_up_after_max_attempts_with_the_last_error(server, call):
    svc = Echo(server.url)
    svc.token = "new"
    server.inject(Fault(500, count=10))
    with pytest.raises(ServiceCallError, match="gave up after 4 attempts: HTTP 500") as exc:
        call(svc, b"img")
    assert exc.value.attempts == 4
    assert len(server.log) == 4


def test_client_errors_are_not_retried(server, call):
    svc = Echo(server.url)
    svc.token = "new"
    server.inject(Fault(400, count=1, body={"message": "bad image"}))
    with pytest.raises(ServiceCallError, match="HTTP 400") as exc:
        call(svc, b"img")
    assert exc.value.attempts == 1 and len(server.log) == 1


def test_connection_errors_are_retried_then_reported(call):
    svc = Echo("http://127.0.0.1:9")  # discard port: nothing listens
    with pytest.raises(ServiceCallError, match="gave up after 4 attempts"):
        call(svc, b"img")


def test_retry_after_parsing():
    assert retry_after_seconds({"Retry-After": "3"}) == 3.0
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds({}) is None


def test_one_policy_for_every_remote_call_counts_attempts_and_waits_what_was_asked():
    """The policy the vendors' control planes use too: RetryLater is retried, waiting the
    server's own delay when it gave one; anything else is final at once."""
    policy = RetryPolicy(max_attempts=3, base_delay=10.0, max_server_delay=0.5)
    slept: list[float] = []
    seen: list[int] = []

    def flaky(n: int) -> str:
        seen.append(n)
        if n == 1:
            raise RetryLater("HTTP 429", status=429, after=2.0)  # capped at max_server_delay
        if n == 2:
            raise RetryLater("HTTP 503", status=503, after=0.125)
        return "done"

    assert policy.call(flaky, "op", sleep=slept.append) == "done"
    assert seen == [1, 2, 3] and slept == [0.5, 0.125]

    with pytest.raises(ServiceCallError, match="^op: gave up after 3 attempts: HTTP 503") as exc:
        policy.call(lambda n: (_ for _ in ()).throw(RetryLater("HTTP 503", status=503,
                                                                after=0)), "op",
                    sleep=slept.append)
    assert exc.value.status == 503 and exc.value.attempts == 3

    calls = []

    def final(n: int) -> None:
        calls.append(n)
        raise ValueError("not retried")

    with pytest.raises(ValueError):
        policy.call(final, "op", sleep=slept.append)
    assert calls == [1]


# -- issue 14, finding 12: credentials never reach results or the console ------------------------
SECRET_ENV = {"HF_TOKEN": "hf_abcdefghijklmnopqrstuvwx", "NYCKEL_CLIENT_SECRET": "nyk-s3cret+/=9",
              "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
              "AWS_SESSION_TOKEN": "FwoGZXIvYXdzEJr//////////wEaDM", "MY_API_KEY": "k-1234567890"}


def test_finding12_scrub_removes_headers_bearer_tokens_and_env_secrets(monkeypatch):
    from urllib.parse import quote

    from mlbench.redact import MASK, remember, scrub

    for name, value in SECRET_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DEBUG_LEVEL", "verbose1")  # not named like a secret: left alone
    texts = [
        'HTTP 400: {"headers": {"Authorization": "Bearer opaque-token-123"}}',
        "HTTP 400: authorization: Basic dXNlcjpwYXNzd29yZA==\nhost: x",
        "{'Authorization': 'token ghp_abcdef123456', 'Accept': 'application/json'}",
        "Proxy-Authorization=Bearer%20opaque-token-123&x=1",
        "echo: bearer opaque-token-123 (expired)",
        "ya29.a0AfH6SMBx-long-google-token and eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3.c2ln",
        *[f"the secret {v} and {quote(v, safe='')} leaked" for v in SECRET_ENV.values()],
    ]
    remember("runtime-access-token-777")
    texts.append("got runtime-access-token-777 back")
    for text in texts:
        clean = scrub(text)
        assert MASK in clean
        for secret in [*SECRET_ENV.values(), "opaque-token-123", "dXNlcjpwYXNzd29yZA",
                       "ghp_abcdef123456", "ya29.a0AfH6", "eyJhbGciOiJIUzI1NiJ9",
                       "runtime-access-token-777"]:
            assert secret not in clean and quote(secret, safe="") not in clean, (text, clean)
    assert scrub("HTTP 503: verbose1 loading") == "HTTP 503: verbose1 loading"


def test_finding12_an_error_body_echoing_authorization_is_scrubbed_before_it_is_cut(call):
    """A token straddling the snippet's cut must not leave its first half behind."""
    fake = FakeServer()
    token = "tok-" + "x" * 60

    @fake.route("POST", "/classify")
    def echo(req):
        return Response(400, ("." * 170 + f" Authorization: {req.header('Authorization')}")
                        .encode())

    with fake:
        svc = Echo(fake.url)
        svc.token = token
        with pytest.raises(ServiceCallError) as caught:
            call(svc, b"x")
    message = str(caught.value)
    assert "HTTP 400" in message and "tok-xxx" not in message and "[REDACTED]" in message


def test_finding12_load_test_error_rows_are_scrubbed(monkeypatch):
    import time as clock

    from mlbench.bench.load import _record

    monkeypatch.setenv("HF_TOKEN", SECRET_ENV["HF_TOKEN"])
    t0 = clock.perf_counter()
    record = _record(3, t0, t0, ServiceCallError(
        f"HTTP 400: bad token {SECRET_ENV['HF_TOKEN']} / Bearer abcdefgh12345", 400))
    assert SECRET_ENV["HF_TOKEN"] not in record.error and "abcdefgh12345" not in record.error


def test_finding12_one_line_errors_are_scrubbed_when_printed(monkeypatch, capsys):
    from mlbench.cli_util import one_line_errors
    from mlbench.errors import ServiceError

    monkeypatch.setenv("NYCKEL_CLIENT_SECRET", SECRET_ENV["NYCKEL_CLIENT_SECRET"])

    @one_line_errors
    def stage() -> None:
        raise ServiceError(f"vendor said: client_secret={SECRET_ENV['NYCKEL_CLIENT_SECRET']}, "
                           "Authorization: Bearer abcdefgh12345")

    import typer

    with pytest.raises(typer.Exit):
        stage()
    printed = capsys.readouterr().err
    assert "error: vendor said" in printed
    assert SECRET_ENV["NYCKEL_CLIENT_SECRET"] not in printed and "abcdefgh12345" not in printed


# -- issue 14, finding 10: a 2xx with another shape is a failed call, never a crash --------------
@pytest.mark.parametrize("body", [
    b'{"label": "cat", "score": 0.9}', b"{}", b'[{"label": ["cat"], "score": 0.9}]',
    b'[{"label": "cat", "score": ' + b"9" * 400 + b"}]", b'[{"label": "cat", "score": NaN}]',
    b'[{"label": "cat", "score": true}]', b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe",
    b'[{"label": "cat"}]', b"null",
])
def test_finding10_unexpected_json_is_a_call_error(body):
    from mlbench.services.http import parse_label_scores

    with pytest.raises(ServiceCallError, match="expected") as caught:
        parse_label_scores(body, 200, who="endpoint")
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 400
    assert parse_label_scores(b"[]").label is None  # an answer naming no class: no label
    assert parse_label_scores(b'[[{"label": "cat", "score": 1}]]').label == "cat"


# -- the synchronous client (issue 11: no per-call environment lookups) ---------------------------
def test_sync_client_sends_params_and_its_user_agent_and_reads_the_environment_once(monkeypatch):
    """The synchronous path appends query parameters, names itself, and honours `http_proxy` /
    `no_proxy` (read once per host, as `requests` read them on every call): behind a proxy
    the call goes through it, a host in `no_proxy` is called directly."""
    from mlbench.services.http import SyncClient, user_agent

    with FakeServer() as proxy, FakeServer() as direct:
        for fake, who in ((proxy, "proxy"), (direct, "direct")):
            fake.route("POST", r".*")(lambda req, who=who: Response.json({"via": who}))
        monkeypatch.setenv("http_proxy", proxy.url)
        monkeypatch.setenv("no_proxy", "localhost")
        client = SyncClient(4)
        try:
            # a name only the proxy could resolve: the call must go through the proxy
            status, _, body = client.send(HttpRequest(
                "POST", "http://vendor.invalid/v1/predict?x=1", {"X-Key": "k"}, b"img",
                {"version": "2"}), timeout=5)
            assert (status, json.loads(body)) == (200, {"via": "proxy"})
            sent = proxy.log[-1]
            assert sent.query == {"x": ["1"], "version": ["2"]}
            assert sent.header("User-Agent") == user_agent() and sent.header("X-Key") == "k"
            assert sent.body == b"img"
            monkeypatch.setenv("no_proxy", "127.0.0.1")  # read once per host: a new host sees it
            status, _, body = client.send(HttpRequest("POST", direct.url + "/p"), timeout=5)
            assert (status, json.loads(body)) == (200, {"via": "direct"})
            assert len(proxy.log) == 1
        finally:
            client.close()


def test_sync_client_does_not_follow_redirects_or_retry_by_itself():
    """Every attempt is the retry policy's: a 503 comes back as it is, once."""
    from mlbench.services.http import SyncClient

    with FakeServer() as fake:
        fake.route("POST", "/p")(lambda req: Response(503, b"busy"))
        client = SyncClient(2)
        try:
            status, _, body = client.send(HttpRequest("POST", fake.url + "/p", body=b"x"), 5)
        finally:
            client.close()
        assert (status, body, len(fake.log)) == (503, b"busy", 1)
