"""Run the GCS emulator and the Vertex AI fake by hand, e.g. for an offline `dvc repro`:

    python -m tests.fakes.vertex --key /tmp/vertex-key.json     # prints what to export / set
    export STORAGE_EMULATOR_HOST=...  GOOGLE_APPLICATION_CREDENTIALS=/tmp/vertex-key.json
    # params.yaml: services: [local, vertex]; vertex: {project: mlbench-test,
    #              api_endpoint: <the URL it printed>, poll_seconds: 0.05, upload_concurrency: 4}

Both serve on free ports of 127.0.0.1 until interrupted. The fake reads the import CSVs and
images back from the emulator, so training "learns" the uploaded images.
"""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

from tests.fakes.vertex import VertexFake, VertexState, write_service_account_key


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.vertex")
    parser.add_argument("--key", type=Path, required=True,
                        help="where to write the service-account key file for the fake")
    parser.add_argument("--project", default="mlbench-test")
    parser.add_argument("--region", default="us-central1")
    parser.add_argument("--gcs-port", type=int, default=0, help="emulator port (0: any free)")
    parser.add_argument("--train-polls", type=int, default=3,
                        help="pipeline GETs from PENDING to SUCCEEDED")
    parser.add_argument("--train-seconds", type=float, default=7203.5,
                        help="simulated training time between startTime and endTime")
    args = parser.parse_args()

    from gcp_storage_emulator.server import create_server
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    gcs = create_server("127.0.0.1", args.gcs_port, in_memory=True)
    gcs.start()
    host, port = gcs._api._httpd.server_address[:2]
    gcs_url = f"http://{host}:{port}"
    client = storage.Client(project=args.project, credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": gcs_url})

    def read(uri: str) -> bytes | None:
        bucket, _, name = uri.removeprefix("gs://").partition("/")
        blob = client.bucket(bucket).get_blob(name)
        return None if blob is None else blob.download_as_bytes()

    fake = VertexFake(VertexState(project=args.project, location=args.region, gcs_reader=read,
                                  train_polls=args.train_polls,
                                  train_seconds=args.train_seconds)).start()
    write_service_account_key(args.key, fake.token_uri, state=fake.state)
    print(f"export STORAGE_EMULATOR_HOST={gcs_url}", flush=True)
    print(f"export GOOGLE_APPLICATION_CREDENTIALS={args.key.resolve()}", flush=True)
    print(f"# vertex: {{project: {args.project}, region: {args.region}, api_endpoint: "
          f"{fake.url}}}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()
        gcs.stop()


if __name__ == "__main__":
    main()
