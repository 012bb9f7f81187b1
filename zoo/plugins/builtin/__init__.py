"""zoo's own datasets, losses, optimizers and stopping criteria, registered through the hooks."""
