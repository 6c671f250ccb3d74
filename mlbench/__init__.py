"""mlbench: reproducible benchmark of image-classification AutoML services."""
