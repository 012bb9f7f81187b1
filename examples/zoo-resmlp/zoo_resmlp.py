"""``resmlp``: a residual multilayer perceptron, packaged as a third-party zoo plugin.

A dense stem maps the (flattened) input to ``width`` features; each of ``blocks`` residual
blocks adds ``Dense(activation) -> [Dropout] -> Dense`` of its input back to it, so the signal
and its gradient also travel through the identity path (He et al., "Deep Residual Learning for
Image Recognition", 2016, https://arxiv.org/abs/1512.03385; the identity skip without an
activation after the sum follows their "Identity Mappings in Deep Residual Networks", 2016,
https://arxiv.org/abs/1603.05027). A dense head gives the outputs. This is not the ResMLP of
Touvron et al. (2021), which mixes image patches.

zoo finds it through the entry point ``resmlp = "zoo_resmlp"`` in the group ``zoo``
(see pyproject.toml), exactly as it finds its own architectures.
"""

import numpy as np

from zoo.architecture import Architecture, Option
from zoo.errors import ConfigError
from zoo.hookspecs import hookimpl
from zoo.layers.base import Layer
from zoo.model import Sequential

__version__ = "0.1.0"

# The zoo plugin API this module is written for; another major version refuses to load it.
ZOO_API = "1"

ACTIVATIONS = ("relu", "gelu", "tanh")


class Residual(Layer):
    """``x + body(x)``: a skip connection around a stack of layers.

    Args:
        layers: the body, applied in order; it must map its input shape to itself.

    Input shape: any. Output shape: the same.

    A container: its parameters and buffers are the body's, named ``body.<i>.<name>``, so
    models save, load and flatten them like any others.
    """

    def __init__(self, layers, name=None):
        super().__init__(name)
        self.body = Sequential(layers)

    def build(self, input_shape, rng):
        shape = self.body.build(input_shape, rng, dtype=self.dtype)
        if shape != tuple(input_shape):
            raise ConfigError(f"Residual: the body must keep the input shape "
                              f"{tuple(input_shape)}; received output shape {shape}")
        self.input_shape = self.output_shape = tuple(input_shape)
        self.built = True
        return self.output_shape

    def forward(self, x, training=False):
        # A new array rather than adding in place: the body's last layer may keep its output.
        return np.add(x, self.body.forward(x, training))

    def backward(self, grad_out):
        return np.add(grad_out, self.body.backward(grad_out))

    def named_parameters(self, prefix=""):
        return self.body.named_parameters(f"{prefix}body.")

    def named_buffers(self, prefix=""):
        return self.body.named_buffers(f"{prefix}body.")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def get_config(self):
        return {"layers": [repr(layer) for layer in self.body.layers]}

    def __repr__(self):
        return f"Residual({', '.join(repr(layer) for layer in self.body.layers)})"


def build(spec, options):
    """Stem, ``blocks`` residual blocks, head: an unbuilt model for ``spec``."""
    from zoo.layers.dense import Dense
    from zoo.layers.dropout import Dropout
    from zoo.layers.reshape import Flatten

    width, act, rate = options["width"], options["activation"], options["dropout"]
    if options["blocks"] < 0:
        raise ConfigError(f"resmlp: blocks must be a non-negative integer; "
                          f"received blocks={options['blocks']}")
    layers = [Flatten()] if len(spec.input_shape) > 1 else []
    layers.append(Dense(width, activation=act))
    for _ in range(options["blocks"]):
        body = [Dense(width, activation=act)]
        if rate > 0:
            body.append(Dropout(rate))
        body.append(Dense(width))
        layers.append(Residual(body))
    layers.append(Dense(spec.output_size))
    return Sequential(layers, name="resmlp")


RESMLP = Architecture(
    name="resmlp",
    summary="residual MLP: dense blocks with identity skip connections (He et al. 2016)",
    tasks=("classify", "regress"),
    build=build,
    options=(
        Option("width", int, 64, "features carried along the residual stream"),
        Option("blocks", int, 2, "residual blocks (each Dense-activation-Dense)"),
        Option("activation", str, "relu", "activation inside each block and after the stem",
               ACTIVATIONS),
        Option("dropout", float, 0.0, "dropout rate inside each block (0 = none)"),
    ),
    defaults={"optimizer": "adam", "lr": 1e-3, "batch_size": 64, "epochs": 100,
              "patience": 10},
)


@hookimpl
def register_architectures(register):
    register(RESMLP)
