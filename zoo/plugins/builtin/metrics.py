"""The built-in metrics, registered through the same hook a plugin uses."""

from zoo.hookspecs import hookimpl


@hookimpl
def register_metrics(register):
    from zoo.training.metrics import BUILTIN_METRICS

    for metric in BUILTIN_METRICS:
        register(metric)
