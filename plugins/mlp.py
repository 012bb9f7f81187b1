"""The ``mlp`` architecture: a multilayer perceptron, the seed note's 'linear maps + non-linear
activations' stacked. Images and sequences are flattened into vectors first.

Registered through the entry point ``mlp = zoo_plugins.mlp`` exactly as a third-party plugin.
"""

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
    for units in options["hidden"]:
        layers.append(Dense(units, activation=options["activation"]))
        if options["dropout"] > 0:
            layers.append(Dropout(options["dropout"]))
    layers.append(Dense(spec.output_size))
    return Sequential(layers, name="mlp")


OPTIONS = (
    Option("hidden", "ints", (256, 256), "units of each hidden layer, e.g. 256,128",
           minimum=1, log=True),
    Option("activation", str, "relu", "activation after each hidden layer", ACTIVATIONS),
    Option("dropout", float, 0.2, "dropout rate after each hidden layer (0 = none)",
           minimum=0, maximum=1, exclusive_maximum=True),
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
)


@hookimpl
def register_architectures(register):
    register(MLP)
