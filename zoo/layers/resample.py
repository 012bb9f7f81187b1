"""Nearest-neighbour upsampling layers: ``Upsample1D`` on sequences, ``Upsample2D`` on images.

A decoder grows its signal back with upsampling followed by a convolution, which avoids the
checkerboard artefacts of transposed convolutions (Odena, Dumoulin and Olah, "Deconvolution
and Checkerboard Artifacts", Distill, 2016). Kernels: ``zoo.kernels.resample``.
"""

from __future__ import annotations

import numpy as np

from zoo import kernels
from zoo.errors import ConfigError
from zoo.layers.activations import accept_grad
from zoo.layers.base import Layer
from zoo.layers.conv import int_tuple


class _Upsample(Layer):
    """What the 1-D and 2-D layers share: the factor, shapes and buffers."""

    rank = 0

    def __init__(self, scale_factor=2, name=None):
        super().__init__(name)
        self.scale_factor = int_tuple(type(self).__name__, "scale_factor", scale_factor,
                                      self.rank)
        self._shape = None

    def build(self, input_shape, rng):
        cls = type(self).__name__
        layout = "(channels, height, width)" if self.rank == 2 else "(steps, features)"
        if len(input_shape) != self.rank + 1 or min(input_shape) < 1:
            raise ConfigError(f"{cls} expects inputs of shape {layout} per example; "
                              f"received input shape {tuple(input_shape)}")
        self.input_shape = tuple(input_shape)
        if self.rank == 2:
            c, h, w = input_shape
            self.output_shape = (c, h * self.scale_factor[0], w * self.scale_factor[1])
        else:
            t, f = input_shape
            self.output_shape = (t * self.scale_factor[0], f)
        self.built = True
        return self.output_shape

    def _accept(self, x):
        """The slow path, when the batch shape or dtype changes: check, convert, new buffers."""
        self.check_input(x)
        x = np.ascontiguousarray(x, dtype=self.dtype)
        self._shape = x.shape
        self._out_shape = (len(x), *self.output_shape)
        self._y = np.empty(self._out_shape, self.dtype)
        self._gx = np.empty(x.shape, self.dtype)
        return x

    def forward(self, x, training=False):
        if x.shape != self._shape or x.dtype != self.dtype or not x.flags.c_contiguous:
            x = self._accept(x)
        # Training reuses the output buffer; inference returns a fresh array the caller keeps.
        out = self._y if training else np.empty(self._out_shape, self.dtype)
        return self._up(x, out)

    def backward(self, grad_out):
        if grad_out.shape != self._out_shape or grad_out.dtype != self.dtype \
                or not grad_out.flags.c_contiguous:
            grad_out = accept_grad(self, grad_out, self._out_shape)
        return self._down(grad_out, self._gx)

    def get_config(self):
        factor = self.scale_factor
        return {"scale_factor": factor[0] if len(set(factor)) == 1 else factor}


class Upsample1D(_Upsample):
    """Repeats each time step ``scale_factor`` times (nearest neighbour).

    Args:
        scale_factor: a positive integer.

    Input shape: ``(N, T, F)``. Output shape: ``(N, T * scale_factor, F)``.
    """

    rank = 1

    def _up(self, x, out):
        return kernels.resample.upsample1d(x, self.scale_factor[0], out)

    def _down(self, grad_out, out):
        return kernels.resample.upsample1d_backward(grad_out, self.scale_factor[0], out)


class Upsample2D(_Upsample):
    """Repeats each pixel into a ``sh x sw`` block (nearest neighbour).

    Args:
        scale_factor: a positive integer or ``(sh, sw)``.

    Input shape: ``(N, C, H, W)``. Output shape: ``(N, C, H * sh, W * sw)``.
    """

    rank = 2

    def _up(self, x, out):
        return kernels.resample.upsample2d(x, self.scale_factor, out)

    def _down(self, grad_out, out):
        return kernels.resample.upsample2d_backward(grad_out, self.scale_factor, out)
