"""Seed-compatible entry point for Google Vertex AI (thin wrapper over mlbench).

    python scripts/vertex.py <dataset> [<ablation>]              # upload images + import file
    python scripts/vertex.py train    <dataset> <ablation>       # + training (no endpoint yet)
    python scripts/vertex.py invoke   <dataset> <ablation> [<project_id> <endpoint_id>]
    python scripts/vertex.py parallel <dataset> <ablation> [<project_id> <endpoint_id>]
    python scripts/vertex.py undeploy <dataset> <ablation>       # stop paying for the endpoint

Run from the project root (beside params.yaml), after `dvc repro` (or `mlbench fetch/prepare/
ablate/testsets <dataset>`) made the data. Credentials come from GOOGLE_APPLICATION_CREDENTIALS,
the project from `vertex.project` in params.yaml or GOOGLE_CLOUD_PROJECT (or the command line
of invoke/parallel, as in the seed), the bucket from `buckets.google`.

The seed's upload sent every ablation; without `<ablation>` this uploads each selected one
(params.yaml `ablation`): images, import file, dataset and import. `invoke`/`parallel` with a
project and endpoint id benchmark that endpoint (the seed's manual path: trained in the console)
as if params.yaml named it in `vertex.endpoints.<dataset>.<ablation>`; without them, the
endpoint `train` recorded. Results land where `mlbench evaluate` / `mlbench load` put them.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from mlbench.cli_util import run_script
from mlbench.console import err
from mlbench.errors import UserError

SERVICE = "vertex"
COMMANDS = ("upload", "train", "invoke", "parallel", "undeploy")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vertex.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upload", help="upload the images, the import file, and import them")
    up.add_argument("dataset")
    up.add_argument("ablation", nargs="?", type=int)
    for name, text in (("train", "upload, import and train one ablation (invoke deploys it)"),
                       ("undeploy", "undeploy the model so the endpoint stops being billed")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("dataset")
        cmd.add_argument("ablation", type=int)
    for name, text in (("invoke", "score every test image once (accuracy, latency)"),
                       ("parallel", "concurrent load test (params.yaml `load`)")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("dataset")
        cmd.add_argument("ablation", type=int)
        cmd.add_argument("project_id", nargs="?", help="project of an endpoint made elsewhere")
        cmd.add_argument("endpoint_id", nargs="?", help="its endpoint id (digits)")
    return parser


def run(argv: list[str]) -> None:
    from mlbench.project import load_checked_params

    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        argv = ["upload", *argv]  # the seed's `python scripts/vertex.py <dataset>`
    args = _parser().parse_args(argv)
    params = load_checked_params()
    if args.command == "upload":
        from mlbench.bench.runs import selected_sizes
        from mlbench.data.ablate import load_split
        from mlbench.services.registry import open_service

        sizes = [args.ablation] if args.ablation else list(selected_sizes(params, args.dataset))
        for n in sizes:
            with open_service(params, SERVICE, args.dataset, n) as svc:
                svc.upload(load_split(args.dataset, n))
                err.print(f"{SERVICE}/{args.dataset}/{n}: imported {svc.state.get('import_csv')}")
    elif args.command == "undeploy":
        from mlbench.services.vertex.cli import cli

        status = cli(["undeploy", args.dataset, str(args.ablation)], prog_name="vertex.py",
                     standalone_mode=False)
        if status:  # the command already printed its one-line error
            raise SystemExit(status)
    elif args.command == "train":
        from mlbench.bench.train import run_training

        run_training(dataclasses.replace(params, ablation=args.ablation), SERVICE, args.dataset)
    else:
        if (args.project_id is None) != (args.endpoint_id is None):
            raise UserError("give both <project_id> and <endpoint_id>, or neither")
        if args.project_id:
            from mlbench.bench.train import train_given

            params = train_given(params, SERVICE, args.dataset, args.ablation, args.endpoint_id,
                                 project=args.project_id)
        if args.command == "invoke":
            from mlbench.bench.evaluate import run_evaluation

            run_evaluation(params, SERVICE, args.dataset, [args.ablation])
        else:
            from mlbench.bench.load import run_load

            run_load(params, SERVICE, args.dataset, [args.ablation])


def main(argv: list[str] | None = None) -> int:
    return run_script(run, argv)


if __name__ == "__main__":
    sys.exit(main())
