"""Seed-compatible entry point for Nyckel (a thin wrapper over mlbench).

    python scripts/nyckel.py create   <function_name>                      # prints the id
    python scripts/nyckel.py upload   <dataset> <function_id> <ablation>   # samples + training
    python scripts/nyckel.py invoke   <dataset> <function_id> <ablation>   # score the test set
    python scripts/nyckel.py parallel <dataset> <function_id> <ablation>   # concurrent load test

Run from the project root (beside params.yaml) after `dvc repro` (or `mlbench fetch/prepare/
ablate/testsets <dataset>`) made the data. Credentials: NYCKEL_CLIENT_ID, NYCKEL_CLIENT_SECRET
(NYCKEL_API_URL overrides the API base URL). `upload` is resumable and waits until the function
has trained (`mlbench nyckel upload --function-id ... --wait`); `invoke` and `parallel` run
`mlbench evaluate` / `mlbench load` on that function, as if params.yaml named it in
`nyckel.endpoints.<dataset>.<ablation>` (the harness records its model.json, with the training
time `upload` measured). Without <function_id> the pipeline (`dvc repro`) finds or creates one.
"""

from __future__ import annotations

import argparse
import os
import sys

# Run as `python scripts/nyckel.py`, this folder is first on sys.path and this file would shadow
# the official `nyckel` package that mlbench imports: take the folder off the path.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]

from mlbench.cli_util import run_script  # noqa: E402

SERVICE = "nyckel"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nyckel.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create an image-classification function")
    create.add_argument("function_name")
    for name, text in (("upload", "upload the ablation as samples, wait for training"),
                       ("invoke", "score every test image once (accuracy, latency)"),
                       ("parallel", "concurrent load test (params.yaml `load`)")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("dataset")
        cmd.add_argument("function_id")
        cmd.add_argument("ablation", type=int)
    return parser


def run(argv: list[str]) -> None:
    args = _parser().parse_args(argv)
    from mlbench.services.nyckel.cli import cli

    if args.command in ("create", "upload"):
        argv = (["create", args.function_name] if args.command == "create" else
                ["upload", args.dataset, str(args.ablation), "--function-id", args.function_id,
                 "--wait"])
        status = cli(argv, prog_name="nyckel.py", standalone_mode=False)
        if status:  # the command already printed its one-line error
            raise SystemExit(status)
        return
    from mlbench.bench.train import train_given
    from mlbench.data.export import load_test_images
    from mlbench.project import load_checked_params

    load_test_images(args.dataset)  # no test set: say so before recording anything
    params = train_given(load_checked_params(), SERVICE, args.dataset, args.ablation,
                         args.function_id)
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
