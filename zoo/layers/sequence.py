"""Adapters between data kinds and sequences, for recurrent models.

``ImageToSequence`` reads an image row by row, ``VectorToSequence`` reads a vector one value
at a time, and ``TimeMean`` pools a sequence of states into one vector. (The last step needs
no layer: a recurrent layer with ``return_sequences=False`` returns it.)
"""

from __future__ import annotations

import numpy as np

from zoo.errors import ConfigError, DataError, describe_array
from zoo.layers.base import Layer


class _Adapter(Layer):
    RANK = 0
    WHAT = ""
    _n = 0  # the batch size of the last forward pass

    def build(self, input_shape, rng):
        if len(input_shape) != self.RANK:
            raise ConfigError(f"{type(self).__name__} expects {self.WHAT}; received an input "
                              f"shape of rank {len(input_shape) + 1}: "
                              f"(batch, {', '.join(map(str, input_shape))})")
        self.input_shape = tuple(int(d) for d in input_shape)
        self.output_shape = self.shape_for(self.input_shape)
        self.built = True
        return self.output_shape

    def _grad_shape(self, grad_out) -> None:
        expected = (self._n, *self.output_shape)
        if not isinstance(grad_out, np.ndarray) or grad_out.shape != expected:
            raise DataError(f"{type(self).__name__}: backward expects a gradient of shape "
                            f"{expected}; received {describe_array(grad_out)}")


class ImageToSequence(_Adapter):
    """Images as sequences of their rows: ``(N, C, H, W)`` -> ``(N, H, C*W)``.

    Each time step sees one row of every channel (channel-major within the step), the usual
    way a recurrent network reads an image (as in the "pixel rows" MNIST RNN benchmarks).
    A view when C = 1, one copy otherwise.

    Input shape: ``(N, C, H, W)``. Output shape: ``(N, H, C*W)``.
    """

    RANK = 3
    WHAT = "images (batch, channels, height, width)"

    def shape_for(self, shape):
        c, h, w = shape
        return (h, c * w)

    def forward(self, x, training=False):
        self.check_input(x)
        self._n = len(x)
        c, h, w = self.input_shape
        if c == 1:
            return x.reshape(self._n, h, w)
        return np.ascontiguousarray(x.transpose(0, 2, 1, 3)).reshape(self._n, h, c * w)

    def backward(self, grad_out):
        self._grad_shape(grad_out)
        c, h, w = self.input_shape
        if c == 1:
            return grad_out.reshape(self._n, 1, h, w)
        g = grad_out.reshape(self._n, h, c, w).transpose(0, 2, 1, 3)
        return np.ascontiguousarray(g)


class VectorToSequence(_Adapter):
    """Vectors as sequences of one feature: ``(N, F)`` -> ``(N, F, 1)`` (a view).

    Input shape: ``(N, F)``. Output shape: ``(N, F, 1)``.
    """

    RANK = 1
    WHAT = "vectors (batch, features)"

    def shape_for(self, shape):
        return (shape[0], 1)

    def forward(self, x, training=False):
        self.check_input(x)
        self._n = len(x)
        return x.reshape(self._n, self.input_shape[0], 1)

    def backward(self, grad_out):
        self._grad_shape(grad_out)
        return grad_out.reshape(self._n, self.input_shape[0])


class TimeMean(_Adapter):
    """The mean over time of a sequence: ``(N, T, U)`` -> ``(N, U)``.

    Input shape: ``(N, T, U)``. Output shape: ``(N, U)``.
    """

    RANK = 2
    WHAT = "sequences (batch, steps, features)"

    def shape_for(self, shape):
        return (shape[1],)

    def forward(self, x, training=False):
        self.check_input(x)
        self._n = len(x)
        return x.mean(axis=1)

    def backward(self, grad_out):
        self._grad_shape(grad_out)
        t, u = self.input_shape
        grad = np.empty((self._n, t, u), grad_out.dtype)
        np.multiply(grad_out[:, None, :], grad_out.dtype.type(1.0 / t), out=grad)
        return grad
