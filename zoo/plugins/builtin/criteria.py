"""The built-in stopping criteria, registered through the same hook a plugin uses.

``all_of`` and ``any_of`` are grammar of ``--stop`` specs (see ``zoo.training.stopspec``),
not registered criteria.
"""

from zoo.hookspecs import hookimpl
from zoo.training import stopping

BUILTIN_CRITERIA = (
    stopping.MaxEpochs,
    stopping.MaxSteps,
    stopping.MaxTime,
    stopping.LossBelow,
    stopping.LossDeltaBelow,
    stopping.EarlyStopping,
    stopping.Target,
    stopping.NonFinite,
)


@hookimpl
def register_stopping_criteria(register):
    for criterion in BUILTIN_CRITERIA:
        register(criterion.name, criterion)
