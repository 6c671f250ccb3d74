"""Seed-compatible entry point for a Hugging Face Inference Endpoint (thin wrapper over mlbench).

    python scripts/huggingface.py invoke   <dataset> <inference_endpoint> [<ablation>]
    python scripts/huggingface.py parallel <dataset> <inference_endpoint> [<ablation>]

`invoke` scores every test image once (accuracy, latency); `parallel` runs the concurrent load
test (params.yaml `load`). This is the seed's path: an endpoint deployed by hand, its model
trained elsewhere (mlbench trains and deploys by itself with `dvc repro` or `mlbench train
huggingface <dataset>`; see docs/services/huggingface.md). HF_TOKEN must hold a token that can
call the endpoint. The seed took no ablation: it is the third argument here, and may be left out
when params.yaml names one (`ablation: <n>`) or lists this URL under
`huggingface.endpoints.<dataset>.<n>`. If the endpoint answers LABEL_<i>, set
`huggingface.models.<dataset>.<n>` to the model's Hub repo id. Results land where `mlbench
evaluate` / `mlbench load` put them. The endpoint is yours: mlbench never pauses it.
"""

from __future__ import annotations

import argparse
import sys

from mlbench.cli_util import run_script
from mlbench.errors import UserError

SERVICE = "huggingface"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="huggingface.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("invoke", "score every test image once (accuracy, latency)"),
                       ("parallel", "concurrent load test (params.yaml `load`)")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("dataset")
        cmd.add_argument("inference_endpoint")
        cmd.add_argument("ablation", type=int, nargs="?")
    return parser


def _ablation(params, dataset: str, url: str, given: int | None) -> int:
    """The ablation the endpoint's model was trained on: given, configured, or the only one."""
    from mlbench.services.registry import parse_settings

    if given is not None:
        return given
    if params.ablation is not None:
        return params.ablation
    endpoints = parse_settings(SERVICE, params.section(SERVICE)).endpoints.get(dataset, {})
    matches = [n for n, u in endpoints.items() if u == url]
    if len(matches) == 1:
        return matches[0]
    raise UserError(f"which ablation was this endpoint trained on? run `python "
                    f"scripts/huggingface.py <invoke|parallel> {dataset} <url> <ablation>`")


def run(argv: list[str]) -> None:
    args = _parser().parse_args(argv)
    from mlbench.bench.train import train_given
    from mlbench.data.export import load_test_images
    from mlbench.project import load_checked_params

    params = load_checked_params()
    load_test_images(args.dataset)  # no test set: say so before calling the endpoint
    n = _ablation(params, args.dataset, args.inference_endpoint, args.ablation)
    params = train_given(params, SERVICE, args.dataset, n, args.inference_endpoint)
    if args.command == "invoke":
        from mlbench.bench.evaluate import run_evaluation

        run_evaluation(params, SERVICE, args.dataset, [n])
    else:
        from mlbench.bench.load import run_load

        run_load(params, SERVICE, args.dataset, [n])


def main(argv: list[str] | None = None) -> int:
    return run_script(run, argv)


if __name__ == "__main__":
    sys.exit(main())
