"""Benchmark (issue 14, finding 3): what a dead local model server costs `evaluate`.

A `LocalService` (hog head, built-in `digits` at 5 images per class, in a temporary project) is
connected; its server is SIGKILLed, then:

(a) before the fix, per image: the call goes through the retry policy unaware that the server is
    gone (`on_unreachable` switched off) until it gives up: the seconds each image waited
    (the campaign saw 17-20 s, about 2 hours for 450 images);
(b) after: seconds from the kill to the next prediction answered (found dead at the first
    refused connection, restarted, called again), and, after a second kill, seconds until
    the run stops with its one line.

Run from the project root: `python benchmarks/bench_dead_server.py [--old-images 3]`.
Writes results/bench/dead_server.json.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import tempfile
from pathlib import Path

from _common import ROOT, Stopwatch, chdir, check_quiet, print_table, say, write_result


def _connected_service(project: Path):
    from mlbench.data.ablate import ablate_dataset, load_split
    from mlbench.data.export import write_test_table
    from mlbench.data.fetch import FetchContext
    from mlbench.data.prepare import prepare_dataset
    from mlbench.data.sources import get_source
    from mlbench.project import parse_checked_params
    from mlbench.services.registry import open_service

    get_source("digits").fetch(Path("data/digits/raw"), FetchContext())
    prepare_dataset("digits", max_side=1024, workers=2)
    ablate_dataset("digits", (5,), seed=0, val_fraction=0.2)
    write_test_table("digits", 1, 0)
    svc = open_service(parse_checked_params({"local": {"features": "hog"}}), "local",
                       "digits", 5)
    split = load_split("digits", 5)
    svc.upload(split)
    svc.connect(svc.train(split))
    return svc


def _kill(svc) -> None:
    os.kill(svc._server.proc.pid, signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old-images", type=int, default=3,
                        help="images timed with the old behaviour (each waits out every retry)")
    args = parser.parse_args()
    results: dict = {}
    check_quiet(results)
    from mlbench.data.export import load_test_images
    from mlbench.errors import ServiceCallError, ServiceError
    from mlbench.services.http import CallAgain

    with tempfile.TemporaryDirectory(prefix="mlbench-bench-dead-") as tmp, chdir(Path(tmp)):
        os.environ.setdefault("MLBENCH_CACHE_DIR", str(Path(tmp) / "cache"))
        say("preparing digits and training the hog head")
        svc = _connected_service(Path(tmp))
        image = load_test_images("digits")[0].path.read_bytes()
        svc.predict(image)

        say("(b) kill -> restart -> answered")
        _kill(svc)
        with Stopwatch() as restart:
            try:
                svc.predict(image)
            except CallAgain:
                svc.predict(image)
        _kill(svc)
        with Stopwatch() as stop:
            try:
                svc.predict(image)
            except ServiceError as exc:
                results["stop_line"] = str(exc)
        results["kill_to_next_answer_s"] = round(restart.seconds, 3)
        results["second_kill_to_stop_s"] = round(stop.seconds, 3)

        say(f"(a) the old behaviour, {args.old_images} image(s)")
        svc.restarts = 0
        svc._start()
        _kill(svc)
        svc.on_unreachable = lambda: None  # what the HTTP path did before: retry blindly
        waits = []
        for _ in range(args.old_images):
            with Stopwatch() as sw, contextlib.suppress(ServiceCallError):
                svc.predict(image)
            waits.append(round(sw.seconds, 2))
        results["old_seconds_per_image"] = waits
        svc.close()

    print_table("dead local model server during evaluate", ("case", "seconds"), [
        ("before: each image waits out the retries", sum(waits) / len(waits)),
        ("after: kill -> restarted -> next answer", results["kill_to_next_answer_s"]),
        ("after: second kill -> one-line stop", results["second_kill_to_stop_s"]),
    ])
    say(f"wrote {write_result('dead_server', results, vars(args))}")


if __name__ == "__main__":
    os.chdir(ROOT)
    main()
