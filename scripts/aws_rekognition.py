"""Seed-compatible entry point for AWS Rekognition Custom Labels (thin wrapper over mlbench).

    python scripts/aws_rekognition.py upload   <dataset> <ablation>         # images + manifests
    python scripts/aws_rekognition.py train    <dataset> <ablation>         # + project, model
    python scripts/aws_rekognition.py invoke   <dataset> <ablation> [<arn>] # score the test set
    python scripts/aws_rekognition.py parallel <dataset> <ablation> [<arn>] # concurrent load test
    python scripts/aws_rekognition.py stop     <dataset> <ablation>         # stop paying

Run from the project root (beside params.yaml), after `dvc repro` (or `mlbench fetch/prepare/
ablate/testsets <dataset>`) made the data. Credentials come from the usual AWS variables
(`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`), the bucket from
`AWS_STORAGE_BUCKET_NAME` or `buckets.aws` in params.yaml, as in the seed.

`invoke`/`parallel` with an ARN benchmark that model (the seed's manual path: trained in the
console); without one, the model `train` recorded. Results land where `mlbench evaluate` /
`mlbench load` put them (results/runs/rekognition/<dataset>/...). The seed read the ablation of
`upload` from its fifth argument; the last argument is taken here, so both spellings work.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from mlbench.cli_util import run_script
from mlbench.errors import UserError

SERVICE = "rekognition"
BUCKET_ENV = "AWS_STORAGE_BUCKET_NAME"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aws_rekognition.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upload", help="upload the ablation and its Ground Truth manifests")
    up.add_argument("dataset")
    up.add_argument("rest", nargs="+", metavar="ablation",
                    help="images per class (the last argument, as the seed read it)")
    for name, text in (("train", "upload, create the project and datasets, train the model"),
                       ("stop", "stop the running model so it stops being billed")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("dataset")
        cmd.add_argument("ablation", type=int)
    for name, text in (("invoke", "score every test image once (accuracy, latency)"),
                       ("parallel", "concurrent load test (params.yaml `load`)")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("dataset")
        cmd.add_argument("ablation", type=int)
        cmd.add_argument("arn", nargs="?", help="project version ARN of a model trained "
                         "elsewhere (default: the model `train` recorded)")
    return parser


def _ablation(rest: list[str]) -> int:
    value = rest[-1]
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"ablation must be a positive number of images per class, got {value!r}")
    return int(value)


def _params():
    """params.yaml, with the seed's `AWS_STORAGE_BUCKET_NAME` (when set) as `buckets.aws`."""
    from mlbench.project import load_checked_params

    params = load_checked_params()
    bucket = os.environ.get(BUCKET_ENV, "").strip()
    return dataclasses.replace(params, buckets={**params.buckets, "aws": bucket}) if bucket \
        else params


def _service(params, dataset: str, n: int):
    from mlbench.services.registry import open_service

    return open_service(params, SERVICE, dataset, n)


def run(argv: list[str]) -> None:
    args = _parser().parse_args(argv)
    params = _params()
    if args.command == "upload":
        from mlbench.data.ablate import load_split

        n = _ablation(args.rest)
        with _service(params, args.dataset, n) as svc:
            svc.upload(load_split(args.dataset, n))
    elif args.command == "train":
        from mlbench.bench.train import run_training

        run_training(dataclasses.replace(params, ablation=args.ablation), SERVICE, args.dataset)
    elif args.command in ("invoke", "parallel"):
        if args.arn:
            from mlbench.bench.train import train_given

            params = train_given(params, SERVICE, args.dataset, args.ablation, args.arn)
        if args.command == "invoke":
            from mlbench.bench.evaluate import run_evaluation

            run_evaluation(params, SERVICE, args.dataset, [args.ablation])
        else:
            from mlbench.bench.load import run_load

            run_load(params, SERVICE, args.dataset, [args.ablation])
    elif args.command == "stop":
        with _service(params, args.dataset, args.ablation) as svc:
            model = svc.recorded()
            if model is None:
                raise UserError(f"no {SERVICE} model recorded for {args.dataset} "
                                f"{args.ablation}; train one first")
            print(f"{args.dataset} {args.ablation}: {svc.teardown(model)}")


def main(argv: list[str] | None = None) -> int:
    return run_script(run, argv)


if __name__ == "__main__":
    sys.exit(main())
