"""zoo's own datasets, losses, optimizers, stopping criteria, schedules and metrics, registered
through the hooks."""
