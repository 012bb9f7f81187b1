"""Standardize: subtract a mean and divide by a standard deviation measured on training data.

``zoo train --standardize`` puts one in front of the architecture's model, so the statistics
travel in the checkpoint as buffers and ``zoo evaluate``, ``zoo predict`` and ``zoo.load``
apply them to raw inputs without being told.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import ConfigError, DataError, describe_array
from zoo.layers.base import Layer

# A feature whose spread is below this is constant: it is centred, not scaled.
MIN_STD = 1e-8


class Standardize(Layer):
    """``(x - mean) / std`` with statistics from ``adapt(x)`` (as Keras' ``Normalization``).

    Statistics are per feature: over the batch for vectors ``(F,)``, over batch and time for
    sequences ``(T, F)``, per channel for images ``(C, H, W)``. A constant feature keeps
    ``std = 1``. Before ``adapt`` the layer is the identity (mean 0, std 1). Buffers ``mean``
    and ``std``, never trained.
    """

    def build(self, input_shape, rng, dtype=None):
        if dtype is not None:
            self.dtype = np.dtype(dtype).type
        shape = tuple(input_shape)
        if len(shape) not in (1, 2, 3):
            raise ConfigError(f"Standardize expects vectors (F,), sequences (T, F) or images "
                              f"(C, H, W); received input shape {shape}")
        self.input_shape = self.output_shape = shape
        if len(shape) == 1:
            stats = shape                    # per feature
        elif len(shape) == 2:
            stats = (1, shape[1])            # per feature, shared over time
        else:
            stats = (shape[0], 1, 1)         # per channel
        self.mean = self.add_buffer("mean", np.zeros(stats))
        self.std = self.add_buffer("std", np.ones(stats))
        self.built = True
        return shape

    def _axes(self) -> tuple:
        return {1: (0,), 2: (0, 1), 3: (0, 2, 3)}[len(self.input_shape)]

    def adapt(self, x: np.ndarray) -> None:
        """Measure ``mean`` and ``std`` on ``x`` (batch first), in float64."""
        self.check_input(x)
        if len(x) == 0:
            raise DataError(f"Standardize.adapt needs examples; received {describe_array(x)}")
        x = np.asarray(x, dtype=np.float64)
        mean = x.mean(axis=self._axes(), keepdims=True)[0]
        std = x.std(axis=self._axes(), keepdims=True)[0]
        std[std < MIN_STD] = 1.0
        self.set_buffer("mean", mean)
        self.set_buffer("std", std)

    def forward(self, x, training=False):
        self.check_input(x)
        return ((x - self.mean) / self.std).astype(self.dtype, copy=False)

    def backward(self, grad_out):
        return (grad_out / self.std).astype(self.dtype, copy=False)
