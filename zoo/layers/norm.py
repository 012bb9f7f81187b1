"""Batch normalisation over the channel axis.

Ioffe and Szegedy, "Batch Normalization: Accelerating Deep Network Training by Reducing
Internal Covariate Shift", 2015 (https://arxiv.org/abs/1502.03167). Kernels:
``zoo.kernels.norm``.
"""

from __future__ import annotations

import numpy as np

from zoo import kernels
from zoo.checks import fraction, number
from zoo.errors import ConfigError, DataError
from zoo.layers.base import Layer


class BatchNorm(Layer):
    """Normalise each channel with batch statistics while training, running ones at inference.

    The channel axis is axis 1 for images ``(N, C, H, W)`` and the last axis for sequences
    ``(N, T, F)`` and vectors ``(N, F)``; statistics are taken over every other axis.

    Args:
        momentum: weight of the current batch in the running statistics
            (``running = (1 - momentum) * running + momentum * batch``, PyTorch's convention;
            the running variance uses the unbiased batch variance).
        eps: added to the variance before the square root.

    Parameters: ``weight`` (scale, ones) and ``bias`` (shift, zeros), one per channel.
    Buffers (saved with the model): ``running_mean`` (zeros) and ``running_var`` (ones).

    Input shape: any of the above. Output shape: the same.
    """

    def __init__(self, momentum: float = 0.1, eps: float = 1e-5, name=None):
        super().__init__(name)
        self.momentum = fraction("BatchNorm", "momentum", momentum, allow_one=True)
        self.eps = number("BatchNorm", "eps", eps, minimum=0, exclusive_minimum=True)

    def build(self, input_shape, rng):
        if len(input_shape) not in (1, 2, 3):
            raise ConfigError("BatchNorm expects vectors (features,), sequences (steps, features) "
                              f"or images (channels, height, width); received input shape "
                              f"{tuple(input_shape)}")
        self.channels_last = len(input_shape) < 3
        channels = input_shape[-1] if self.channels_last else input_shape[0]
        self.weight = self.add_parameter("weight", np.ones(channels))
        self.bias = self.add_parameter("bias", np.zeros(channels))
        self.add_buffer("running_mean", np.zeros(channels))
        self.add_buffer("running_var", np.ones(channels))
        self._mean = np.empty(channels, self.dtype)
        self._invstd = np.empty(channels, self.dtype)
        self.input_shape = self.output_shape = tuple(input_shape)
        self.built = True
        return self.output_shape

    def forward(self, x, training=False):
        self.check_input(x)
        x = np.ascontiguousarray(x)
        if training and x.size == x.shape[-1 if self.channels_last else 1]:
            raise DataError("BatchNorm: training needs more than one value per channel; "
                              f"received a batch of shape {x.shape}")
        out, _, _ = kernels.norm.batch_norm_forward(
            x, self.weight.value, self.bias.value, self._buffers["running_mean"],
            self._buffers["running_var"], self.momentum, self.eps, training,
            channels_last=self.channels_last, mean=self._mean, invstd=self._invstd)
        self._x, self._training = x, bool(training)
        return out

    def backward(self, grad_out):
        dx, _, _ = kernels.norm.batch_norm_backward(
            np.ascontiguousarray(grad_out), self._x, self.weight.value, self._mean, self._invstd,
            self._training, channels_last=self.channels_last, dweight=self.weight.grad,
            dbias=self.bias.grad)
        return dx

    def get_config(self):
        return {"momentum": self.momentum, "eps": self.eps}
