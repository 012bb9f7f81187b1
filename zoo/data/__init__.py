"""Datasets: the Dataset type, built-in datasets and loaders for user files."""
