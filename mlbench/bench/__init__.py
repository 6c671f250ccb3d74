"""The harness: train, evaluate and load-test any `Service`, and the statistics of the results."""
