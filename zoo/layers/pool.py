"""Pooling layers: max and average over windows, global average and global max, in 1-D and 2-D.

2-D layers take images ``(N, C, H, W)``; 1-D layers take sequences ``(N, T, F)`` (channels
last) and pool over T. Kernels: ``zoo.kernels.pool``.
"""

from __future__ import annotations

import numpy as np

from zoo import kernels
from zoo.errors import ConfigError
from zoo.layers.base import Layer
from zoo.layers.conv import AXES, conv_geometry, int_tuple


class _Pool(Layer):
    """Window pooling: what the max and average variants share."""

    rank = 0

    def __init__(self, pool_size, stride=None, padding=0, name=None):
        super().__init__(name)
        cls = type(self).__name__
        self.pool_size = int_tuple(cls, "pool_size", pool_size, self.rank)
        self.stride = self.pool_size if stride is None else int_tuple(cls, "stride", stride,
                                                                      self.rank)
        self.padding = int_tuple(cls, "padding", padding, self.rank, minimum=0)
        for k, p in zip(self.pool_size, self.padding):
            if p > k // 2:
                raise ConfigError(f"{cls}: padding must be at most half the pool size "
                                  f"({k // 2} for pool_size {k}) so every window holds input; "
                                  f"received padding={padding!r}")

    def build(self, input_shape, rng):
        cls = type(self).__name__
        layout = "(channels, height, width)" if self.rank == 2 else "(steps, features)"
        if len(input_shape) != self.rank + 1:
            raise ConfigError(f"{cls} expects inputs of shape {layout} per example; "
                              f"received input shape {tuple(input_shape)}")
        spatial = input_shape[1:] if self.rank == 2 else input_shape[:1]
        self.out_size = tuple(
            conv_geometry(cls, AXES[self.rank][ax], size, self.pool_size[ax], self.stride[ax],
                          1, self.padding[ax])[1]
            for ax, size in enumerate(spatial))
        self.input_shape = tuple(input_shape)
        if self.rank == 2:
            self.output_shape = (input_shape[0], *self.out_size)
        else:
            self.output_shape = (self.out_size[0], input_shape[1])
        self.built = True
        return self.output_shape

    def get_config(self):
        unwrap = (lambda v: v[0]) if self.rank == 1 else (lambda v: v)
        return {"pool_size": unwrap(self.pool_size), "stride": unwrap(self.stride),
                "padding": unwrap(self.padding)}


class MaxPool2D(_Pool):
    """Max pooling over H and W.

    Args:
        pool_size: window, an int or ``(kh, kw)``.
        stride: step between windows (default: ``pool_size``).
        padding: implicit -inf border, at most half the window.

    Input shape: ``(N, C, H, W)``. Output shape: ``(N, C, OH, OW)``,
    ``OH = floor((H + 2 * ph - kh) / sh) + 1``.
    """

    rank = 2

    def build(self, input_shape, rng):
        # 2x2 windows with stride 2 (LeNet's, VGG's) take a vectorised kernel that codes the
        # argmax in int8.
        self._two_by_two = (self.pool_size, self.stride, self.padding) == ((2, 2), (2, 2),
                                                                          (0, 0))
        return super().build(input_shape, rng)

    def forward(self, x, training=False):
        self.check_input(x)
        x = np.ascontiguousarray(x)
        if self._two_by_two:
            out, self._codes = kernels.pool.max_pool2d_2x2(x)
            return out
        out, self._indices = kernels.pool.max_pool2d(x, self.pool_size, self.stride,
                                                     self.padding, self.out_size)
        return out

    def backward(self, grad_out):
        grad_out = np.ascontiguousarray(grad_out)
        input_shape = (len(grad_out), *self.input_shape)
        if self._two_by_two:
            return kernels.pool.max_pool2d_2x2_backward(grad_out, self._codes, input_shape)
        return kernels.pool.max_pool2d_backward(grad_out, self._indices, input_shape)


class MaxPool1D(_Pool):
    """Max pooling over time steps. Input ``(N, T, F)``; output ``(N, OT, F)``."""

    rank = 1

    def forward(self, x, training=False):
        self.check_input(x)
        x = np.ascontiguousarray(x)
        out, self._indices = kernels.pool.max_pool1d(x, self.pool_size[0], self.stride[0],
                                                     self.padding[0], self.out_size[0])
        return out

    def backward(self, grad_out):
        grad_out = np.ascontiguousarray(grad_out)
        return kernels.pool.max_pool1d_backward(grad_out, self._indices,
                                                (len(grad_out), *self.input_shape))


class AvgPool2D(_Pool):
    """Average pooling over H and W; padding counts as zeros. Input ``(N, C, H, W)``."""

    rank = 2

    def forward(self, x, training=False):
        self.check_input(x)
        x = np.ascontiguousarray(x)
        return kernels.pool.avg_pool2d(x, self.pool_size, self.stride, self.padding,
                                       self.out_size)

    def backward(self, grad_out):
        grad_out = np.ascontiguousarray(grad_out)
        return kernels.pool.avg_pool2d_backward(grad_out, (len(grad_out), *self.input_shape),
                                                self.pool_size, self.stride, self.padding)


class AvgPool1D(_Pool):
    """Average pooling over time steps; padding counts as zeros. Input ``(N, T, F)``."""

    rank = 1

    def forward(self, x, training=False):
        self.check_input(x)
        x = np.ascontiguousarray(x)
        return kernels.pool.avg_pool1d(x, self.pool_size[0], self.stride[0], self.padding[0],
                                       self.out_size[0])

    def backward(self, grad_out):
        grad_out = np.ascontiguousarray(grad_out)
        return kernels.pool.avg_pool1d_backward(grad_out, (len(grad_out), *self.input_shape),
                                                self.pool_size[0], self.stride[0],
                                                self.padding[0])


class _GlobalAvg(Layer):
    rank = 0

    def build(self, input_shape, rng):
        if len(input_shape) != self.rank + 1:
            layout = "(channels, height, width)" if self.rank == 2 else "(steps, features)"
            raise ConfigError(f"{type(self).__name__} expects inputs of shape {layout} per "
                              f"example; received input shape {tuple(input_shape)}")
        self.input_shape = tuple(input_shape)
        self.output_shape = (input_shape[0] if self.rank == 2 else input_shape[1],)
        self.built = True
        return self.output_shape


class GlobalAvgPool2D(_GlobalAvg):
    """Mean over H and W (Lin et al., "Network In Network", 2013). ``(N, C, H, W) -> (N, C)``."""

    rank = 2

    def forward(self, x, training=False):
        self.check_input(x)
        x = np.ascontiguousarray(x)
        return kernels.pool.global_avg_pool2d(x)

    def backward(self, grad_out):
        grad_out = np.ascontiguousarray(grad_out)
        return kernels.pool.global_avg_pool2d_backward(grad_out,
                                                       (len(grad_out), *self.input_shape))


class GlobalAvgPool1D(_GlobalAvg):
    """Mean over time steps. ``(N, T, F) -> (N, F)``."""

    rank = 1

    def forward(self, x, training=False):
        self.check_input(x)
        x = np.ascontiguousarray(x)
        return kernels.pool.global_avg_pool1d(x)

    def backward(self, grad_out):
        grad_out = np.ascontiguousarray(grad_out)
        return kernels.pool.global_avg_pool1d_backward(grad_out,
                                                       (len(grad_out), *self.input_shape))


class GlobalMaxPool2D(_GlobalAvg):
    """Max over H and W: ``(N, C, H, W) -> (N, C)``. PyTorch's ``AdaptiveMaxPool2d(1)``
    flattened; the gradient goes to each channel's (first) maximum."""

    rank = 2

    def forward(self, x, training=False):
        self.check_input(x)
        out, self._indices = kernels.pool.global_max_pool2d(np.ascontiguousarray(x))
        return out

    def backward(self, grad_out):
        grad_out = np.ascontiguousarray(grad_out)
        return kernels.pool.global_max_pool2d_backward(grad_out, self._indices,
                                                       (len(grad_out), *self.input_shape))


class GlobalMaxPool1D(_GlobalAvg):
    """Max over time steps: ``(N, T, F) -> (N, F)`` (channels last; PyTorch's
    ``AdaptiveMaxPool1d(1)`` on ``(N, F, T)``)."""

    rank = 1

    def forward(self, x, training=False):
        self.check_input(x)
        out, self._indices = kernels.pool.global_max_pool1d(np.ascontiguousarray(x))
        return out

    def backward(self, grad_out):
        grad_out = np.ascontiguousarray(grad_out)
        return kernels.pool.global_max_pool1d_backward(grad_out, self._indices,
                                                       (len(grad_out), *self.input_shape))
