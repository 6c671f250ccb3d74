"""A local fake of AWS Rekognition Custom Labels (JSON 1.1 over HTTP on 127.0.0.1).

    backend = RekognitionBackend(s3=<boto3 S3 client on moto>, steps=2)
    with FakeRekognition(backend) as fake:
        boto3.client("rekognition", endpoint_url=fake.url)

`models.py` holds the state and the service's rules; `responses.py` the wire format.
"""

from __future__ import annotations

from tests.fakes.http_base import FakeServer, VendorFake
from tests.fakes.rekognition.models import ACCOUNT, AwsError, RekognitionBackend
from tests.fakes.rekognition.responses import make_server

__all__ = ["ACCOUNT", "AwsError", "FakeRekognition", "RekognitionBackend"]


class FakeRekognition(VendorFake):
    """Backend + HTTP server, started and stopped together."""

    def __init__(self, backend: RekognitionBackend):
        self.backend = backend
        self.server: FakeServer = make_server(backend)

    def operations(self) -> list[str]:
        """The operations received so far, in order (from the server's request log)."""
        return [(r.header("X-Amz-Target") or "").split(".")[-1] for r in self.server.log]
