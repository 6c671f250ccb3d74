"""Seed-compatible: `python scripts/preprocessing.py <dataset>` = `mlbench prepare <dataset>`.

Decode, validate and split a fetched dataset into data/<dataset>/{train,test}/<class>/
"""

from _seed import mlbench

if __name__ == "__main__":
    mlbench("prepare")
