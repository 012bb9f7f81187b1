"""The one training loop, the stopping-criteria engine, callbacks and metrics."""
