"""Residual connections (He et al., "Deep Residual Learning for Image Recognition", 2016):
``Residual``, a skip around any stack of layers, and the convolution blocks, torchvision's
``BasicBlock`` for images and the same block over time for sequences."""

from __future__ import annotations

import numpy as np

from zoo import kernels
from zoo.checks import positive_int
from zoo.errors import ConfigError
from zoo.layers.activations import ReLU, accept_grad
from zoo.layers.base import Layer
from zoo.layers.block import Block
from zoo.layers.conv import Conv1D, Conv2D
from zoo.layers.norm import BatchNorm


class _Residual(Block):
    """``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``."""

    conv: type[Conv1D] | type[Conv2D] = Conv2D
    layout = ""

    def __init__(self, filters, stride=1, kernel_size=3, name=None):
        super().__init__(name)
        cls = type(self).__name__
        self.filters = positive_int(cls, "filters", filters)
        self.stride = positive_int(cls, "stride", stride)
        self.kernel_size = positive_int(cls, "kernel_size", kernel_size)
        if self.kernel_size % 2 == 0:
            raise ConfigError(f"{cls}: kernel_size must be odd so the padding keeps the size; "
                              f"received kernel_size={kernel_size!r}")
        pad = self.kernel_size // 2
        self.conv1 = self.conv(filters, self.kernel_size, stride=self.stride, padding=pad,
                               use_bias=False)
        self.bn1 = BatchNorm()
        self.relu = ReLU()
        self.conv2 = self.conv(filters, self.kernel_size, padding=pad, use_bias=False)
        self.bn2 = BatchNorm()
        self.downsample_conv = self.downsample_bn = None
        self._out = None

    def _channels(self, input_shape):
        raise NotImplementedError

    def build(self, input_shape, rng, dtype=None):
        self.set_dtype(dtype)
        input_shape = tuple(input_shape)
        rank = 2 if self.conv is Conv2D else 1
        if len(input_shape) != rank + 1:
            raise ConfigError(f"{type(self).__name__} expects inputs of shape {self.layout} per "
                              f"example; received input shape {input_shape}")
        names = ["conv1", "bn1", "relu", "conv2", "bn2"]
        if self.stride != 1 or self._channels(input_shape) != self.filters:
            # PyTorch's "downsample": a strided 1x1 convolution and batch norm
            self.downsample_conv = self.conv(self.filters, 1, stride=self.stride,
                                             use_bias=False)
            self.downsample_bn = BatchNorm()
            names += ["downsample_conv", "downsample_bn"]
        self.children = tuple(names)
        shape = input_shape
        for name in names[:5]:
            shape = self.build_child(name, shape, rng)
        if self.downsample_conv is not None:
            short = self.build_child("downsample_conv", input_shape, rng)
            self.build_child("downsample_bn", short, rng)
        self.input_shape, self.output_shape = input_shape, shape
        self.built = True
        return shape

    def forward(self, x, training=False):
        self.check_input(x)
        x = np.asarray(x, self.dtype)
        h = x
        for name in ("conv1", "bn1", "relu", "conv2", "bn2"):
            h = getattr(self, name).forward(h, training)
        short = x
        if self.downsample_conv is not None:
            short = self.downsample_bn.forward(self.downsample_conv.forward(x, training),
                                               training)
        out = np.add(h, short)
        kernels.activations.relu(out, out=out)
        self._out = out
        return out

    def backward(self, grad_out):
        grad_out = accept_grad(self, grad_out, self._out.shape)
        g = kernels.activations.relu_backward(grad_out, self._out)
        main = g
        for name in ("bn2", "conv2", "relu", "bn1", "conv1"):
            main = getattr(self, name).backward(main)
        short = g
        if self.downsample_conv is not None:
            short = self.downsample_conv.backward(self.downsample_bn.backward(g))
        return main + short

    def get_config(self):
        return {"filters": self.filters, "stride": self.stride,
                "kernel_size": self.kernel_size}


class ResidualBlock2D(_Residual):
    """torchvision's ``BasicBlock`` on images: two ``kernel_size`` convolutions (the first with
    ``stride``), each followed by batch norm, a ReLU between them, and the input added back
    before the last ReLU. When the stride or the channel count changes, the input goes through
    a strided 1x1 convolution and batch norm first (torchvision's ``downsample``).

    Args:
        filters: output channels. stride: of the first convolution (2 halves H and W).
        kernel_size: odd; padding ``kernel_size // 2`` keeps the size at stride 1.

    Sub-layers (and parameter prefixes): ``conv1``, ``bn1``, ``conv2``, ``bn2`` and, when
    needed, ``downsample_conv`` and ``downsample_bn`` (torchvision's ``downsample.0`` and
    ``.1``). Convolutions have no bias, as in torchvision; weights in PyTorch's layout.

    Input shape: ``(N, C, H, W)``. Output shape: ``(N, filters, ceil(H / stride),
    ceil(W / stride))``.
    """

    conv = Conv2D
    layout = "(channels, height, width)"

    def _channels(self, input_shape):
        return input_shape[0]


class ResidualBlock1D(_Residual):
    """``ResidualBlock2D`` over time: the same block with ``Conv1D`` on sequences ``(T, F)``
    (channels last; PyTorch's equivalent runs ``Conv1d`` and ``BatchNorm1d`` on ``(N, F, T)``).
    ``Conv1D``'s weights are ``(kernel_size, in_features, filters)``.

    Input shape: ``(N, T, F)``. Output shape: ``(N, ceil(T / stride), filters)``.
    """

    conv = Conv1D
    layout = "(steps, features)"

    def _channels(self, input_shape):
        return input_shape[1]


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
