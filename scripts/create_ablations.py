"""Seed-compatible: `python scripts/create_ablations.py <dataset>` = `mlbench ablate <dataset>`.

Write the ablations in every service's format into data/<dataset>/ablations/
"""

from _seed import mlbench

if __name__ == "__main__":
    mlbench("ablate")
