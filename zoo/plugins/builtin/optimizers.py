"""The built-in optimizers, registered through the same hook a plugin uses.

Each factory is the class: ``factory(lr=..., **options)``.
"""

from zoo.hookspecs import hookimpl


@hookimpl
def register_optimizers(register):
    from zoo.optimizers import SGD, Adam, AdamW, RMSProp

    register("sgd", SGD)
    register("rmsprop", RMSProp)
    register("adam", Adam)
    register("adamw", AdamW)
