"""The hooks a zoo plugin can implement.

Every hook answers *what exists*; the host owns the tables, aliases and duplicate checks and
hands each hook a ``register`` callback. Hooks only ever gain optional arguments; they are
never renamed or removed. See docs/plugin-hooks.md for each hook with an example.
"""

import pluggy

hookspec = pluggy.HookspecMarker("zoo")
hookimpl = pluggy.HookimplMarker("zoo")


@hookspec
def register_architectures(register):
    """Register architectures: ``register(Architecture(...), aliases=())``."""


@hookspec
def register_datasets(register):
    """Register datasets: ``register(DatasetInfo(...), aliases=())``."""


@hookspec
def register_losses(register):
    """Register losses: ``register(name, factory, aliases=())``; factory(**options) -> Loss."""


@hookspec
def register_optimizers(register):
    """Register optimizers: ``register(name, factory, aliases=())``; factory(lr=..., **options)."""


@hookspec
def register_stopping_criteria(register):
    """Register stopping criteria: ``register(name, factory, aliases=())``."""


@hookspec
def register_schedules(register):
    """Register learning-rate schedules: ``register(name, factory, aliases=())``;
    factory(**options) -> ``zoo.schedules.Schedule``."""


@hookspec
def register_metrics(register):
    """Register metrics: ``register(Metric(...), aliases=())`` (``zoo.training.metrics``)."""


@hookspec
def register_commands(cli):
    """Add click commands to the ``zoo`` command group ``cli``."""
