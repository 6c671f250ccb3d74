"""Seed-compatible: `python scripts/create_tests.py <dataset>` = `mlbench testsets <dataset>`
then `mlbench export <dataset>`.

Choose the test set (data/<dataset>/test.csv) and write it in each service's format into
data/<dataset>/tests/, as the seed did.
"""

from _seed import mlbench

if __name__ == "__main__":
    mlbench("testsets", "export")
