"""Seed-compatible: `python scripts/get_results.py` = `mlbench report`.

Collects every run of params.yaml's services x datasets x ablations into results/metrics.json,
results/summary.csv and results/benchmark-data.csv (the seed's format), draws the plots and
prints the table.
"""

from _seed import mlbench

if __name__ == "__main__":
    mlbench("report")
