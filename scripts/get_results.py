"""Seed-compatible: `python scripts/get_results.py` = `mlbench report`.

Collects every run of params.yaml's services x datasets x ablations into the metrics files
(results/metrics/, results/mean-accuracy/), results/summary.csv, results/report.html and the
seed's own formats (results/benchmark-data.csv, results/throughputs.csv, results/seed/), draws
the plots and prints the table.
"""

from _seed import mlbench

if __name__ == "__main__":
    mlbench("report")
