"""The ``linear`` architecture: one dense layer from the (flattened) input to the outputs.

With softmax cross-entropy that is multinomial logistic regression, with MSE linear regression:
the baseline every other architecture has to beat, and the first row of the MNIST-1D paper's
table (32%). ``preset=mnist1d`` trains it as that paper did (see ``zoo_plugins._mnist1d``).

Registered through the entry point ``linear = zoo_plugins.linear`` exactly as a third-party
plugin. Layer imports stay inside the builder so listing plugins never imports numerics.
"""

from zoo_plugins import _mnist1d

from zoo.architecture import Architecture, Option
from zoo.hookspecs import hookimpl


def build(spec, options):
    from zoo.layers.dense import Dense
    from zoo.layers.reshape import Flatten
    from zoo.model import Sequential

    layers = [Flatten()] if len(spec.input_shape) > 1 else []
    if options["preset"] == _mnist1d.PRESET:
        layers.append(Dense(spec.output_size, **_mnist1d.DENSE_INIT))
    else:  # glorot_uniform: no activation follows, so He's ReLU gain does not apply
        layers.append(Dense(spec.output_size, kernel_initializer="glorot_uniform"))
    return Sequential(layers, name="linear")


OPTIONS = (
    Option("preset", str, "none", "mnist1d: train as the MNIST-1D paper did (Adam 1e-2, "
           "batch 100, 8001 steps in data order, no early stopping)", ("none", _mnist1d.PRESET)),
)

LINEAR = Architecture(
    name="linear",
    summary="linear model: logistic (softmax) regression for classes, linear regression "
            "for targets",
    tasks=("classify", "regress"),
    build=build,
    options=OPTIONS,
    # A convex model: stop on the validation loss, which is smooth, rather than on the
    # accuracy, which a 400-example validation split moves in steps of 0.25 points.
    defaults={"optimizer": "adam", "lr": 1e-2, "batch_size": 100, "epochs": 100,
              "patience": 10, "monitor": "val_loss"},
    presets={_mnist1d.PRESET: _mnist1d.TRAINING},
    # zoo compare --tune: a linear model has only its training to tune.
    search={"lr": (1e-3, 1e-1), "batch_size": (32, 256)},
)


@hookimpl
def register_architectures(register):
    register(LINEAR)
