"""`python -m mlbench`: the same CLI as the `mlbench` command."""

from mlbench.cli import main

main()
