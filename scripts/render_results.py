"""Seed-compatible: `python scripts/render_results.py <results.csv> ... [--throughputs F]`.

= `mlbench render`: the seed report's figures from hand-made CSVs in the seed's format
(`dataset,service,ablation,training times (s),accuracy (%),latency (s)`), e.g. the published
`image-classification-benchmark-data.csv` beside this run's `results/benchmark-data.csv`.
"""

from _seed import mlbench

if __name__ == "__main__":
    mlbench("render")
