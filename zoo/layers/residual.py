"""``Residual``: a skip connection around a stack of layers, ``x + body(x)``."""

from __future__ import annotations

import numpy as np

from zoo.errors import ConfigError
from zoo.layers.base import Layer


class Residual(Layer):
    """``y = x + body(x)``, the body being layers applied in order (He et al., 2016).

    Args:
        layers: the body; it must map its input shape to the same shape.

    Input shape: any. Output shape: the same. The gradient reaches the input along both paths:
    ``dx = dy + body.backward(dy)``. Parameters and buffers are the body's, named
    ``body.<i>.<name>``, so a model holding one saves, loads and flattens like any other.
    """

    def __init__(self, layers, name: str | None = None):
        from zoo.model import Sequential

        super().__init__(name)
        self.body = Sequential(layers)

    def build(self, input_shape, rng, dtype=None):
        if dtype is not None:
            self.dtype = np.dtype(dtype).type
        shape = self.body.build(input_shape, rng, dtype=self.dtype)
        if tuple(shape) != tuple(input_shape):
            raise ConfigError(f"Residual: the body must keep the input shape "
                              f"{tuple(input_shape)}; it gives {tuple(shape)}")
        self.input_shape = self.output_shape = tuple(input_shape)
        self.built = True
        return self.output_shape

    def forward(self, x, training=False):
        # A new array, not an in-place sum: the body's last layer may keep its output.
        return x + self.body.forward(x, training)

    def backward(self, grad_out):
        return grad_out + self.body.backward(grad_out)

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
