"""A local fake of the Vertex AI v1 REST API (datasets, imports, AutoML training pipelines,
models, endpoints, deploy/undeploy, predict, long-running operations) and of Google's OAuth2
token endpoint for service-account keys.

    with VertexFake(VertexState(gcs_reader=read_from_emulator)) as fake:
        key = write_service_account_key(tmp_path / "key.json", fake.token_uri, state=fake.state)
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
        params: vertex.api_endpoint = fake.url
        ...
        fake.state.created                    # how many datasets/pipelines/endpoints were made
        fake.server.inject(Fault(429, count=1, headers={"Retry-After": "0"}))
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

from tests.fakes.http_base import Fault
from tests.fakes.vertex.models import VertexState
from tests.fakes.vertex.responses import VertexFake

__all__ = ["Fault", "VertexFake", "VertexState", "write_service_account_key"]


def write_service_account_key(path: Path, token_uri: str, project: str | None = None,
                              email: str = "bench@mlbench-test.iam.gserviceaccount.com",
                              state: VertexState | None = None) -> Path:
    """A real service-account key file (fresh RSA key) whose `token_uri` is the fake's, so
    google-auth signs a genuine JWT-bearer grant and the fake issues the access token. With
    `state`, the fake also knows the public key, so it accepts the self-signed JWTs the generated
    `aiplatform_v1` clients send instead of an access token (as Google does)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    kid = secrets.token_hex(8)
    info = {"type": "service_account", "private_key_id": kid, "private_key": pem,
            "client_email": email, "client_id": "1234567890", "token_uri": token_uri}
    if project:
        info["project_id"] = project
    if state is not None:
        state.public_keys[kid] = key.public_key()
    path.write_text(json.dumps(info))
    return path
