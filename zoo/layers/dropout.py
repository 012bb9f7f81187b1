"""Dropout: randomly zero activations while training (Srivastava et al., JMLR 2014)."""

from __future__ import annotations

import numpy as np

from zoo.checks import fraction
from zoo.layers.activations import accept_grad
from zoo.layers.base import Layer


class Dropout(Layer):
    """Inverted dropout: zero elements with probability ``rate`` while training.

    Kept elements are scaled by ``1 / (1 - rate)``, so inference is the identity.

    Args:
        rate: the probability of dropping an element, in [0, 1).

    Input shape: any. Output shape: the same.

    The mask is drawn from ``self.rng``, a Generator seeded from the build generator, so a run
    is reproducible and a checkpoint can save where the stream is.
    """

    def __init__(self, rate: float, name: str | None = None):
        super().__init__(name)
        self.rate = fraction("Dropout", "rate", rate)
        self.rng = None
        self._mask = None

    def build(self, input_shape, rng):
        self.rng = np.random.default_rng(rng.integers(2**63))
        return super().build(input_shape, rng)

    def forward(self, x, training=False):
        if not training or self.rate == 0.0:
            self._mask = None
            return x
        self.check_input(x)
        dt = np.dtype(self.dtype)
        x = np.asarray(x, dtype=dt)
        if self._mask is None or self._mask.shape != x.shape:
            self._mask = np.empty(x.shape, dt)
            self._y = np.empty(x.shape, dt)
            self._gx = np.empty(x.shape, dt)
        mask = self.rng.random(dtype=dt, out=self._mask)
        np.greater_equal(mask, self.rate, out=mask)  # 1.0 where kept, 0.0 where dropped
        mask *= dt.type(1.0 / (1.0 - self.rate))
        return np.multiply(x, mask, out=self._y)

    def backward(self, grad_out):
        if self._mask is None:  # the last forward was the identity
            return grad_out
        if grad_out.shape != self._mask.shape:
            accept_grad(self, grad_out, self._mask.shape)
        return np.multiply(grad_out, self._mask, out=self._gx)

    def get_config(self):
        return {"rate": self.rate}
