"""GaussianNoise: corrupt inputs while training, the denoising autoencoder's trick.

Vincent et al., "Extracting and Composing Robust Features with Denoising Autoencoders",
ICML 2008.
"""

from __future__ import annotations

import numpy as np

from zoo import checks
from zoo.layers.activations import accept_grad
from zoo.layers.base import Layer


class GaussianNoise(Layer):
    """Adds zero-mean Gaussian noise of standard deviation ``stddev`` while training only.

    Inference is the identity, so a model trained on noisy inputs is scored on clean ones.

    Args:
        stddev: the noise's standard deviation, a finite number >= 0.

    Input shape: any. Output shape: the same.

    The noise is drawn from ``self.rng``, a Generator seeded from the build generator, so a run
    is reproducible and a checkpoint can save where the stream is.
    """

    def __init__(self, stddev: float, name: str | None = None):
        super().__init__(name)
        self.stddev = checks.number("GaussianNoise", "stddev", stddev, minimum=0)
        self.rng = None
        self._noisy = None

    def build(self, input_shape, rng):
        self.rng = np.random.default_rng(rng.integers(2**63))
        return super().build(input_shape, rng)

    def forward(self, x, training=False):
        if not training or self.stddev == 0.0:
            return x
        self.check_input(x)
        dt = np.dtype(self.dtype)
        if self._noisy is None or self._noisy.shape != x.shape:
            self._noisy = np.empty(x.shape, dt)
        noisy = self.rng.standard_normal(dtype=dt, out=self._noisy)
        noisy *= dt.type(self.stddev)
        noisy += x
        return noisy

    def backward(self, grad_out):
        # d(x + noise)/dx is the identity, in training and in inference alike.
        if self.input_shape is not None and grad_out.shape[1:] != self.input_shape:
            accept_grad(self, grad_out, (len(grad_out), *self.input_shape))
        return grad_out

    def get_config(self):
        return {"stddev": self.stddev}
