"""The data half of the benchmark: fetch, prepare, ablate, export (test sets, upload folders)."""
