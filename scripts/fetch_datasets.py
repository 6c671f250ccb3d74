"""Seed-compatible: `python scripts/fetch_datasets.py <dataset>` = `mlbench fetch <dataset>`.

Fetch a dataset into data/<dataset>/raw/
"""

from _seed import mlbench

if __name__ == "__main__":
    mlbench("fetch")
