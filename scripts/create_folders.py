"""Seed-compatible: `python scripts/create_folders.py <dataset>` = `mlbench folders <dataset>`.

Make the flat upload folders of every ablation in data/<dataset>/uploads/ (the AutoTrain zips
are written by `mlbench export`, with the other Hugging Face files).
"""

from _seed import mlbench

if __name__ == "__main__":
    mlbench("folders")
