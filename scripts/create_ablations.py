"""Seed-compatible: `python scripts/create_ablations.py <dataset>` = `mlbench ablate <dataset>`
then `mlbench export <dataset>`.

Sample the ablations (data/<dataset>/ablations.csv) and write them in every service's format
into data/<dataset>/ablations/, as the seed did.
"""

from _seed import mlbench

if __name__ == "__main__":
    mlbench("ablate", "export")
