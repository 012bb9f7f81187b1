"""Shape-only layers: Flatten and Reshape (views where the input is contiguous, no copies)."""

from __future__ import annotations

import math

import numpy as np

from zoo.errors import ConfigError
from zoo.layers.base import Layer


class Flatten(Layer):
    """Flattens each example: ``(N, d1, d2, ...)`` -> ``(N, d1 * d2 * ...)``.

    Input shape: ``(N, ...)``. Output shape: ``(N, prod(...))``.
    """

    def build(self, input_shape, rng):
        self.input_shape = tuple(input_shape)
        self.output_shape = (math.prod(self.input_shape),)
        self.built = True
        return self.output_shape

    def forward(self, x, training=False):
        self.check_input(x)
        return x.reshape(len(x), self.output_shape[0])

    def backward(self, grad_out):
        return grad_out.reshape(len(grad_out), *self.input_shape)


class Reshape(Layer):
    """Reshapes each example to ``target_shape`` (without the batch axis; one entry may be -1).

    Args:
        target_shape: a tuple of positive ints, at most one of them -1 (inferred).

    Input shape: ``(N, ...)``. Output shape: ``(N, *target_shape)``.
    """

    def __init__(self, target_shape, name: str | None = None):
        super().__init__(name)
        shape = tuple(target_shape) if isinstance(target_shape, (tuple, list)) else None
        ok = shape is not None and len(shape) > 0 and all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) and (d > 0 or d == -1)
            for d in shape) and shape.count(-1) <= 1
        if shape is None or not ok:
            raise ConfigError("Reshape: target_shape must be a non-empty tuple of positive "
                              "integers, at most one of them -1; received "
                              f"target_shape={target_shape!r}")
        self.target_shape = tuple(int(d) for d in shape)

    def build(self, input_shape, rng):
        self.input_shape = tuple(input_shape)
        size = math.prod(self.input_shape)
        known = math.prod(d for d in self.target_shape if d != -1)
        shape = self.target_shape
        if -1 in shape:
            if size % known:
                raise ConfigError(f"Reshape: cannot reshape input shape {self.input_shape} "
                                  f"({size} values) to {shape}")
            shape = tuple(size // known if d == -1 else d for d in shape)
        elif known != size:
            raise ConfigError(f"Reshape: cannot reshape input shape {self.input_shape} "
                              f"({size} values) to {shape} ({known} values)")
        self.output_shape = shape
        self.built = True
        return shape

    def forward(self, x, training=False):
        self.check_input(x)
        return x.reshape(len(x), *self.output_shape)

    def backward(self, grad_out):
        return grad_out.reshape(len(grad_out), *self.input_shape)

    def get_config(self):
        return {"target_shape": self.target_shape}
