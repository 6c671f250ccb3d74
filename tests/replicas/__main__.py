"""Serve all six replicas as a mirror: `python -m tests.replicas serve [--port N]`
(`--train N --test N`: every class topped up to at least N training / test images)."""

from __future__ import annotations

import argparse
import time

import yaml

from tests.replicas.builders import BUILDERS, Size, mirror_files
from tests.replicas.server import MirrorServer


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.replicas")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: free)")
    parser.add_argument("--train", type=int, default=0,
                        help="at least this many training images per class (default: tiny)")
    parser.add_argument("--test", type=int, default=0,
                        help="at least this many test images per class (default: tiny)")
    args = parser.parse_args()
    size = Size(args.train, args.test) if args.train or args.test else None
    files, sources = mirror_files(dict.fromkeys(BUILDERS, size) if size else None)
    server = MirrorServer(files, port=args.port).start()
    print(f"export MLBENCH_MIRROR={server.url}")
    print("# params.yaml:")
    print(yaml.safe_dump({"sources": sources}, sort_keys=True), end="", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
