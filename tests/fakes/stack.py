"""Every cloud fake at once, in this process: what a project needs to run all four cloud
services offline (the seed-scale benchmark; a by-hand `dvc repro` of the whole matrix).

    with CloudFakes(tmp, pacing={"vertex": Pacing(train=60.0)}) as fakes:
        env = fakes.stage_env()             # for `dvc repro`: the fakes' URLs and test credentials
        params.update(fakes.params())       # each service's block pointing at its fake + buckets
        ...
        fakes.created()                     # what each vendor was asked to create
        fakes.deployed()                    # what still serves (and bills) at each vendor

Nyckel, Hugging Face (Hub, Jobs, Inference Endpoints), Vertex AI (with the Cloud Storage
emulator it reads the uploads from) and Rekognition Custom Labels (with a moto S3 server) each
run on a free port of 127.0.0.1, each with its own optional `Pacing` (tests/fakes/pacing.py).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.fakes.pacing import Pacing

SERVICES = ("nyckel", "huggingface", "vertex", "rekognition")
NYCKEL_CLIENT = ("fake-client", "fake-secret")
HF_TOKEN = "hf_fake_stack_token"
GCP_PROJECT = "mlbench-fakes"
BUCKET = "mlbench-fake-images"
AWS_KEYS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing",
            "region_name": "us-east-1"}
#: Variables of the machine's own accounts that must not reach a stage talking to the fakes.
OWN_ACCOUNT_PREFIXES = ("AWS_", "GOOGLE_", "GCLOUD", "CLOUDSDK_", "HF_", "HUGGING", "NYCKEL_",
                        "AZURE", "STORAGE_EMULATOR")


def gcs_emulator() -> Any:
    """The Cloud Storage emulator, serving with a deep listen backlog: it answers one connection
    at a time, and `http.server`'s backlog of 5 would drop (and the kernel retry a second later)
    the connections of many uploads in flight at once."""
    from http.server import HTTPServer

    from gcp_storage_emulator import server as gcs

    class Deep(HTTPServer):
        request_queue_size = 512

    class Thread(gcs.APIThread):
        def run(self) -> None:
            self._httpd = Deep((self._host, self._port),
                               functools.partial(gcs.RequestHandler, self._storage))
            self.is_running.set()
            self._httpd.serve_forever()

    emulator = gcs.create_server("127.0.0.1", 0, in_memory=True)
    emulator._api = Thread("127.0.0.1", 0, emulator._storage)
    return emulator


class CloudFakes:
    """The four cloud fakes (+ GCS emulator, moto S3) of one run; a context manager."""

    def __init__(self, workdir: Path, pacing: Mapping[str, Pacing] | None = None):
        self.workdir = workdir
        self.pacing = dict(pacing or {})
        self.nyckel: Any = None
        self.hf: Any = None
        self.vertex: Any = None
        self.rekognition: Any = None
        self._gcs: Any = None
        self._moto: Any = None
        self.gcs_url = self.moto_url = ""
        self.key_file = workdir / "vertex-key.json"

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> CloudFakes:
        import boto3
        from moto.server import ThreadedMotoServer

        from tests.fakes.huggingface import HuggingFaceFake
        from tests.fakes.nyckel import NyckelFake
        from tests.fakes.rekognition import FakeRekognition, RekognitionBackend
        from tests.fakes.vertex import VertexFake, VertexState, write_service_account_key

        self.workdir.mkdir(parents=True, exist_ok=True)
        self.nyckel = NyckelFake(client_id=NYCKEL_CLIENT[0], client_secret=NYCKEL_CLIENT[1],
                                 pacing=self.pacing.get("nyckel")).start()
        self.hf = HuggingFaceFake(token=HF_TOKEN, pacing=self.pacing.get("huggingface")).start()

        self._gcs = gcs_emulator()
        self._gcs.start()
        host, port = self._gcs._api._httpd.server_address[:2]
        self.gcs_url = f"http://{host}:{port}"
        self.vertex = VertexFake(VertexState(project=GCP_PROJECT, gcs_reader=self._gcs_reader(),
                                             pacing=self.pacing.get("vertex"))).start()
        write_service_account_key(self.key_file, self.vertex.token_uri, state=self.vertex.state)

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's line per request
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        self.moto_url = f"http://{host}:{port}"
        s3 = boto3.client("s3", endpoint_url=self.moto_url, **AWS_KEYS)
        s3.create_bucket(Bucket=BUCKET)
        self.rekognition = FakeRekognition(RekognitionBackend(
            s3=s3, pacing=self.pacing.get("rekognition"))).start()
        return self

    def _gcs_reader(self) -> Any:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        client = storage.Client(project=GCP_PROJECT, credentials=AnonymousCredentials(),
                                client_options={"api_endpoint": self.gcs_url})

        def read(uri: str) -> bytes | None:
            bucket, _, name = uri.removeprefix("gs://").partition("/")
            blob = client.bucket(bucket).get_blob(name)
            return None if blob is None else blob.download_as_bytes()

        return read

    def stop(self) -> None:
        for fake in (self.nyckel, self.hf, self.vertex, self.rekognition):
            if fake is not None:
                fake.stop()
        if self._gcs is not None:
            self._gcs.stop()
        if self._moto is not None:
            self._moto.stop()

    def __enter__(self) -> CloudFakes:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what a project needs --------------------------------------------------------------------
    def stage_env(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """`base` (default: this process's environment) without the machine's own cloud
        accounts, plus the fakes' URLs and test credentials: the environment for the stages."""
        env = {k: v for k, v in (os.environ if base is None else base).items()
               if not k.upper().startswith(OWN_ACCOUNT_PREFIXES)}
        gcloud = self.workdir / "gcloud"
        env.update({
            "NYCKEL_API_URL": self.nyckel.url, "NYCKEL_CLIENT_ID": NYCKEL_CLIENT[0],
            "NYCKEL_CLIENT_SECRET": NYCKEL_CLIENT[1],
            "HF_TOKEN": HF_TOKEN, "HF_ENDPOINT": self.hf.url, "HF_HUB_DISABLE_TELEMETRY": "1",
            "STORAGE_EMULATOR_HOST": self.gcs_url,
            "GOOGLE_APPLICATION_CREDENTIALS": str(self.key_file),
            "CLOUDSDK_CONFIG": str(gcloud), "GCE_METADATA_HOST": "127.0.0.1:9",
            "GCE_METADATA_IP": "127.0.0.1:9", "GCE_METADATA_DETECT_RETRIES": "1",
            "GCE_METADATA_TIMEOUT": "0.2",
            "AWS_ACCESS_KEY_ID": AWS_KEYS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": AWS_KEYS["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": AWS_KEYS["region_name"], "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(self.workdir / "no-aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(self.workdir / "no-aws-credentials"),
        })
        return env

    def params(self) -> dict[str, Any]:
        """The params.yaml blocks pointing each service at its fake (merge settings of your own
        into them), and the buckets."""
        return {
            "buckets": {"google": BUCKET, "aws": BUCKET, "azure": BUCKET},
            "nyckel": {},
            "huggingface": {"endpoints_api": self.hf.endpoints_api},
            "vertex": {"project": GCP_PROJECT, "api_endpoint": self.vertex.url,
                       # one connection at a time at the emulator: a few uploads in flight
                       "upload_concurrency": 4},
            "rekognition": {"endpoint_url": self.rekognition.url,
                            "s3_endpoint_url": self.moto_url},
        }

    # -- what the vendors hold -------------------------------------------------------------------
    def created(self) -> dict[str, dict[str, int]]:
        """How many of each resource every vendor was asked to create (a rerun that re-attaches
        creates none)."""
        rek = self.rekognition.backend
        projects = list(rek.projects.values())
        return {
            "nyckel": dict(self.nyckel.state.created),
            "huggingface": dict(self.hf.state.created),
            "vertex": dict(self.vertex.state.created),
            "rekognition": {"projects": len(projects),
                            "datasets": sum(len(p.datasets) for p in projects),
                            "versions": sum(len(p.versions) for p in projects),
                            "starts": sum(v.starts for p in projects
                                          for v in p.versions.values())},
        }

    def deployed(self) -> dict[str, list[str]]:
        """What serves (and bills by the hour) at each vendor now."""
        hf = self.hf.state
        with hf.lock:
            for ep in hf.managed.values():
                hf.advance_endpoint(ep)
            endpoints = sorted(ep.name for ep in hf.managed.values()
                               if ep.state not in ("paused", "scaledToZero", "failed"))
        rek = self.rekognition.backend
        return {
            "nyckel": [],  # nothing is deployed at Nyckel: invokes are billed, not hours
            "huggingface": endpoints,
            "vertex": sorted(f"{ep.display_name}: {len(ep.deployed)} model(s)"
                             for ep in self.vertex.state.endpoints.values() if ep.deployed),
            "rekognition": sorted(v.arn for p in rek.projects.values()
                                  for v in p.versions.values()
                                  if v.state.status in ("STARTING", "RUNNING")),
        }

    def trainings_in_flight(self) -> dict[str, int]:
        """Per vendor, its paced trainings started and not yet done (a paced fake only)."""
        return {svc: len(p.in_flight("train")) for svc, p in self.pacing.items()}

    def throttled(self) -> dict[str, int]:
        """Per paced vendor, the prediction calls answered "too many requests"."""
        return {svc: p.throttled for svc, p in self.pacing.items()}
