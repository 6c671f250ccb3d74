"""Seed-compatible: `python scripts/create_tests.py <dataset>` = `mlbench testsets <dataset>`.

Write the test set in each service's format into data/<dataset>/tests/
"""

from _seed import mlbench

if __name__ == "__main__":
    mlbench("testsets")
