"""The ``mlp`` architecture: a multilayer perceptron, the seed note's 'linear maps + non-linear
activations' stacked. Images and sequences are flattened into vectors first.

``preset=mnist1d`` builds the MNIST-1D paper's MLP (Greydanus 2020, the repository's
``MLPBase``): ``Dense(100, relu)``, then a residual ``h + relu(Dense(100)(h))``, then the output
layer, 15,210 parameters on MNIST-1D, trained as the paper did (see ``zoo_plugins._mnist1d``).

Registered through the entry point ``mlp = zoo_plugins.mlp`` exactly as a third-party plugin.
"""

from zoo_plugins import _mnist1d

from zoo.architecture import Architecture, Option
from zoo.hookspecs import hookimpl
from zoo.kernels import ACTIVATIONS


def build(spec, options):
    # Layer imports stay inside the builder so listing plugins never imports numerics.
    from zoo.layers.dense import Dense
    from zoo.layers.dropout import Dropout
    from zoo.layers.reshape import Flatten
    from zoo.model import Sequential

    layers = [Flatten()] if len(spec.input_shape) > 1 else []
    if options["preset"] == _mnist1d.PRESET:
        from zoo.layers.residual import Residual

        init = _mnist1d.DENSE_INIT
        layers += [Dense(100, activation="relu", **init),
                   Residual([Dense(100, activation="relu", **init)]),
                   Dense(spec.output_size, **init)]
        return Sequential(layers, name="mlp-mnist1d")
    for units in options["hidden"]:
        layers.append(Dense(units, activation=options["activation"]))
        if options["dropout"] > 0:
            layers.append(Dropout(options["dropout"]))
    layers.append(Dense(spec.output_size))
    return Sequential(layers, name="mlp")


OPTIONS = (
    Option("preset", str, "none", "mnist1d: the MNIST-1D paper's MLP (100 units, then 100 "
           "with a residual connection) and its training; the options below are then unused",
           ("none", _mnist1d.PRESET)),
    Option("hidden", "ints", (256, 256), "units of each hidden layer, e.g. 256,128",
           minimum=1, log=True, search=(32, 512), search_items=(1, 3)),
    Option("activation", str, "relu", "activation after each hidden layer", ACTIVATIONS),
    Option("dropout", float, 0.2, "dropout rate after each hidden layer (0 = none)",
           minimum=0, maximum=1, exclusive_maximum=True, search=(0.0, 0.5)),
)

MLP = Architecture(
    name="mlp",
    summary="multilayer perceptron: dense layers with non-linear activations",
    tasks=("classify", "regress"),
    build=build,
    options=OPTIONS,
    # After the MNIST-1D paper (Adam 1e-2, batch 100), wider and with dropout. An MLP overfits:
    # its validation loss turns up while its accuracy still climbs, so stop on accuracy.
    defaults={"optimizer": "adam", "lr": 1e-2, "batch_size": 100, "epochs": 100,
              "patience": 15, "monitor": "val_accuracy"},
    presets={_mnist1d.PRESET: _mnist1d.TRAINING},
    # zoo compare --tune: width and depth, dropout (above), and Adam's learning rate.
    search={"lr": (1e-3, 3e-2)},
)


@hookimpl
def register_architectures(register):
    register(MLP)
