"""``zoo compare``: architectures side by side on one dataset, local processes or Dask."""
