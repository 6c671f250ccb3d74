"""Seed-compatible entry point for Google Vertex AI (thin wrapper over mlbench).

    python scripts/vertex.py <dataset> [<ablation>]              # upload images + import CSVs
    python scripts/vertex.py train    <dataset> <ablation>       # + dataset, training, endpoint
    python scripts/vertex.py invoke   <dataset> <ablation> [<project_id> <endpoint_id>]
    python scripts/vertex.py parallel <dataset> <ablation> [<project_id> <endpoint_id>]
    python scripts/vertex.py undeploy <dataset> <ablation>       # stop paying for the endpoint

Run from the project root (beside params.yaml), after `dvc repro` (or `mlbench fetch/prepare/
ablate/testsets <dataset>`) made the data. Credentials come from GOOGLE_APPLICATION_CREDENTIALS,
the project from `vertex.project` in params.yaml or GOOGLE_CLOUD_PROJECT (or the command line
of invoke/parallel, as in the seed), the bucket from `buckets.google`.

The seed's upload sent every ablation; without `<ablation>` this uploads each selected one
(params.yaml `ablation`). `invoke`/`parallel` with a project and endpoint id benchmark that
endpoint (the seed's manual path: trained in the console); without them, the endpoint `train`
recorded. Results land where `mlbench evaluate` / `mlbench load` put them
(results/runs/vertex/<dataset>/...).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from mlbench import paths
from mlbench.cli_util import run_script
from mlbench.console import err
from mlbench.errors import UserError

SERVICE = "vertex"
COMMANDS = ("upload", "train", "invoke", "parallel", "undeploy")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vertex.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("upload", help="upload the images and the import CSV(s)")
    up.add_argument("dataset")
    up.add_argument("ablation", nargs="?", type=int)
    for name, text in (("train", "upload, import, train and deploy one ablation"),
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


def _with_vertex(params, **settings):  # noqa: ANN001, ANN202 - Params in, Params out
    """`params` with keys of the `vertex:` block overridden (project, endpoints)."""
    from mlbench.params import parse_params

    raw = dict(params.raw)
    raw[SERVICE] = {**params.section(SERVICE), **settings}
    return parse_params(raw)


def _record_given_endpoint(params, dataset: str, n: int) -> None:  # noqa: ANN001
    """Write model.json for an endpoint made elsewhere, so evaluate/load use it."""
    from mlbench.bench.runs import open_service
    from mlbench.data.prepare import read_classes
    from mlbench.io import atomic_write_json

    with open_service(params, SERVICE, dataset, n) as svc:
        endpoint = svc.config.endpoint_for(dataset, n, svc.project)
        svc.check_access()
        model = svc.adopt_endpoint(endpoint, read_classes(dataset))
    atomic_write_json(paths.model_json(SERVICE, dataset, n), model.to_json())
    err.print(f"{SERVICE}/{dataset}/{n}: using {endpoint} (set vertex.project and "
              f"vertex.endpoints.{dataset}.{n} in params.yaml to keep it for `dvc repro`)")


def run(argv: list[str]) -> None:
    from mlbench.params import load_params

    if argv and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        argv = ["upload", *argv]  # the seed's `python scripts/vertex.py <dataset>`
    args = _parser().parse_args(argv)
    params = load_params()
    if args.command == "upload":
        from mlbench.bench.runs import open_service, selected_sizes
        from mlbench.data.ablate import load_split

        sizes = [args.ablation] if args.ablation else list(selected_sizes(params, args.dataset))
        for n in sizes:
            with open_service(params, SERVICE, args.dataset, n) as svc:
                uri = svc.upload_images(load_split(args.dataset, n))
            err.print(f"{SERVICE}/{args.dataset}/{n}: import file {uri}")
    elif args.command == "train":
        from mlbench.bench.train import run_training

        run_training(dataclasses.replace(params, ablation=args.ablation), SERVICE, args.dataset)
    elif args.command in ("invoke", "parallel"):
        if (args.project_id is None) != (args.endpoint_id is None):
            raise UserError("give both <project_id> and <endpoint_id>, or neither")
        if args.project_id:
            params = _with_vertex(params, project=args.project_id, endpoints={
                args.dataset: {args.ablation: args.endpoint_id}})
            _record_given_endpoint(params, args.dataset, args.ablation)
        if args.command == "invoke":
            from mlbench.bench.evaluate import run_evaluation

            run_evaluation(params, SERVICE, args.dataset, [args.ablation])
        else:
            from mlbench.bench.load import run_load

            run_load(params, SERVICE, args.dataset, [args.ablation])
    elif args.command == "undeploy":
        from mlbench.bench.runs import open_service

        with open_service(params, SERVICE, args.dataset, args.ablation) as svc:
            svc.undeploy()


def main(argv: list[str] | None = None) -> int:
    return run_script(run, argv)


if __name__ == "__main__":
    sys.exit(main())
