"""Per-example normalisation over the trailing axes: ``LayerNorm`` and ``RMSNorm``.

Unlike ``BatchNorm`` they keep no running statistics and treat every example (every time step
of a sequence) on its own, so training and inference compute the same function; transformers
use them. Kernels: ``zoo.kernels.layernorm``.
"""

from __future__ import annotations

import math

import numpy as np

from zoo import checks, kernels
from zoo.errors import ConfigError
from zoo.layers.activations import accept_grad
from zoo.layers.base import Layer


def _shape_arg(layer, value):
    if value is None:
        return None
    shape = (value,) if isinstance(value, (int, np.integer)) else value
    ok = isinstance(shape, (tuple, list)) and len(shape) > 0 and all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in shape)
    if not ok:
        raise ConfigError(f"{layer}: normalized_shape must be a positive integer or a tuple of "
                          f"them (or None for the last axis); received "
                          f"normalized_shape={value!r}")
    return tuple(int(d) for d in shape)


def _eps_arg(layer, value, allow_none=False):
    if value is None and allow_none:
        return None
    return checks.positive_number(layer, "eps", value)


class _Norm(Layer):
    center = True

    def __init__(self, normalized_shape=None, eps=1e-5, elementwise_affine=True, bias=True,
                 name=None):
        super().__init__(name)
        cls = type(self).__name__
        self.normalized_shape = _shape_arg(cls, normalized_shape)
        self.eps = _eps_arg(cls, eps, allow_none=not self.center)
        self.elementwise_affine = checks.boolean(cls, "elementwise_affine", elementwise_affine)
        self.use_bias = checks.boolean(cls, "bias", bias) and self.elementwise_affine \
            and self.center
        self.weight = self.bias = None
        self._shape = None

    def build(self, input_shape, rng):
        cls = type(self).__name__
        input_shape = tuple(input_shape)
        shape = self.normalized_shape or input_shape[-1:]
        if not shape or input_shape[len(input_shape) - len(shape):] != shape:
            raise ConfigError(f"{cls}: normalized_shape {shape} must be the trailing axes of "
                              f"the input; received input shape {input_shape}")
        self._features = math.prod(shape)
        self._param_shape = shape
        if self.elementwise_affine:
            self.weight = self.add_parameter("weight", np.ones(shape))
        else:
            self._ones = np.ones(self._features, self.dtype)
        if self.use_bias:
            self.bias = self.add_parameter("bias", np.zeros(shape))
        self._zeros = np.zeros(self._features, self.dtype)
        self._scratch_grad = np.empty(self._features, self.dtype)
        self._eps = self.eps if self.eps is not None else float(np.finfo(self.dtype).eps)
        self._dt = np.dtype(self.dtype)
        self._shape = None
        self.input_shape = self.output_shape = input_shape
        self.built = True
        return self.output_shape

    def _vectors(self):
        w = self.weight.value.reshape(-1) if self.weight is not None else self._ones
        b = self.bias.value.reshape(-1) if self.bias is not None else self._zeros
        return w, b

    def _accept(self, x):
        """The slow path, when the batch shape or dtype changes: check, convert, new buffers."""
        self.check_input(x)
        x = np.ascontiguousarray(x, dtype=self._dt)
        self._shape = x.shape
        rows = x.size // self._features
        self._y = np.empty_like(x)
        self._gx = np.empty_like(x)
        self._mean = np.empty(rows)
        self._invstd = np.empty(rows)
        return x

    def forward(self, x, training=False):
        if x.shape != self._shape or x.dtype is not self._dt or not x.flags.c_contiguous:
            x = self._accept(x)
        w, b = self._vectors()
        y = self._y if training else np.empty_like(x)
        kernels.layernorm.norm_forward(x, w, b, self._eps, self.center, self._features, y,
                                       self._mean, self._invstd)
        self._x = x
        return y

    def backward(self, grad_out):
        if grad_out.shape != self._shape or grad_out.dtype is not self._dt \
                or not grad_out.flags.c_contiguous:
            grad_out = accept_grad(self, grad_out, self._shape)
        w, _ = self._vectors()
        dw = self.weight.grad.reshape(-1) if self.weight is not None else self._scratch_grad
        db = self.bias.grad.reshape(-1) if self.bias is not None else self._scratch_grad
        dx, _, _ = kernels.layernorm.norm_backward(grad_out, self._x, w, self._mean,
                                                   self._invstd, self.center, self._features,
                                                   self._gx, dw, db)
        return dx


class LayerNorm(_Norm):
    """Layer normalisation (Ba et al., 2016): each example's trailing axes to zero mean and
    unit variance, then a learned scale and shift. PyTorch's ``nn.LayerNorm``.

    Args:
        normalized_shape: the trailing axes to normalise over, an int or a tuple (None: the
            last axis, whatever its size).
        eps: added to the (biased) variance before the square root; 1e-5 as in PyTorch.
        elementwise_affine: learn ``weight`` (ones) and ``bias`` (zeros).
        bias: learn the bias (with ``elementwise_affine``).

    Parameters: ``weight`` and ``bias`` of shape ``normalized_shape`` (PyTorch's names and
    layout). Input shape: any ending in ``normalized_shape``. Output shape: the same.
    """

    center = True

    def get_config(self):
        return {"normalized_shape": self.normalized_shape, "eps": self.eps,
                "elementwise_affine": self.elementwise_affine, "bias": self.use_bias}


class RMSNorm(_Norm):
    """Root-mean-square normalisation (Zhang and Sennrich, 2019):
    ``x / sqrt(mean(x^2) + eps) * weight`` over the trailing axes. PyTorch's ``nn.RMSNorm``.

    Args:
        normalized_shape: as for ``LayerNorm``.
        eps: added to the mean square; None (the default, as in PyTorch) means the machine
            epsilon of the layer's dtype.
        elementwise_affine: learn ``weight`` (ones).

    Parameters: ``weight`` of shape ``normalized_shape``. No bias (as in PyTorch).
    Input shape: any ending in ``normalized_shape``. Output shape: the same.
    """

    center = False

    def __init__(self, normalized_shape=None, eps=None, elementwise_affine=True, name=None):
        super().__init__(normalized_shape, eps, elementwise_affine, bias=False, name=name)

    def get_config(self):
        return {"normalized_shape": self.normalized_shape, "eps": self.eps,
                "elementwise_affine": self.elementwise_affine}
