"""Seed-compatible: `python scripts/create_folders.py <dataset>` = `mlbench folders <dataset>`.

Make the upload folders and AutoTrain zips in data/<dataset>/uploads/
"""

from _seed import mlbench

if __name__ == "__main__":
    mlbench("folders")
