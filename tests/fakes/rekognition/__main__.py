"""Run the Rekognition fake by hand, e.g. for an offline `dvc repro` against moto:

    moto_server -H 127.0.0.1 -p 5000 &
    python -m tests.fakes.rekognition --s3-endpoint http://127.0.0.1:5000   # prints its URL
    export AWS_ENDPOINT_URL_S3=http://127.0.0.1:5000
    export AWS_ENDPOINT_URL_REKOGNITION=<the URL it printed>
    # + dummy AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_DEFAULT_REGION, and a bucket

Serves on a free port of 127.0.0.1, prints its URL, and runs until interrupted.
"""

from __future__ import annotations

import argparse
import threading

import boto3

from tests.fakes.rekognition import FakeRekognition, RekognitionBackend


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.rekognition")
    parser.add_argument("--s3-endpoint", required=True, help="S3 (moto) endpoint URL")
    parser.add_argument("--steps", type=int, default=3, help="Describe calls per transition")
    parser.add_argument("--train-seconds", type=float, default=3725.0,
                        help="simulated training time reported by the model")
    args = parser.parse_args()
    s3 = boto3.client("s3", endpoint_url=args.s3_endpoint)
    fake = FakeRekognition(RekognitionBackend(s3=s3, steps=args.steps,
                                              train_seconds=args.train_seconds))
    fake.start()
    print(fake.url, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        fake.stop()


if __name__ == "__main__":
    main()
