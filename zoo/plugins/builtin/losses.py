"""The built-in losses, registered through the same hook a plugin uses.

Factories are the classes themselves; ``zoo.losses`` imports no kernel module at import time,
so listing losses never imports numba.
"""

from zoo.hookspecs import hookimpl


@hookimpl
def register_losses(register):
    from zoo.losses import MSE, BinaryCrossEntropy, SoftmaxCrossEntropy

    register("softmax_cross_entropy", SoftmaxCrossEntropy, aliases=("cross_entropy", "ce"))
    register("mse", MSE)
    register("bce", BinaryCrossEntropy, aliases=("binary_cross_entropy",))
