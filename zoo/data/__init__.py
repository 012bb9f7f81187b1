"""Datasets: the Dataset type, built-in datasets and loaders for user files."""

# The dataset zoo trains on when none is named: generated, so nothing downloads.
DEFAULT_DATASET = "mnist1d"
