"""Dense: the linear map of the seed note, ``y = activation(x @ weight + bias)``."""

from __future__ import annotations

import numpy as np

from zoo import checks, kernels
from zoo.checks import positive_int
from zoo.errors import ConfigError
from zoo.initializers import get_initializer, name_of
from zoo.layers.activations import FROM_INPUT, accept_grad, check_activation, check_slope
from zoo.layers.base import Layer

RELU_LIKE = ("relu", "leaky_relu", "gelu", "gelu_erf")


class Dense(Layer):
    """Fully connected layer over the last axis, with an optional fused activation.

    The product is one BLAS GEMM into a buffer reused while the batch shape stays the same
    (a ``kernels.blas.Gemm`` where it is large enough to use several threads);
    the bias and activation are applied to it in place by one kernel, and backward is one
    kernel (activation gradient and bias gradient together) plus two GEMMs.

    Args:
        units: output features.
        activation: None (linear), ``"relu"``, ``"leaky_relu"``, ``"tanh"``, ``"sigmoid"``,
            ``"gelu"`` (tanh approximation) or ``"gelu_erf"`` (exact, PyTorch's default GELU).
        use_bias: add a learned bias.
        kernel_initializer: an initialiser name (``zoo.initializers``) or function; by default
            ``he_uniform`` for relu-like activations and ``glorot_uniform`` otherwise.
        bias_initializer: ``"zeros"`` unless told otherwise.
        negative_slope: the slope of ``leaky_relu`` for negative inputs.

    Parameters:
        weight: ``(in_features, units)``, so forward is ``x @ weight``; bias: ``(units,)``.

    Input shape: ``(N, ..., in_features)``. Output shape: ``(N, ..., units)``.

    ``needs_input_grad = False`` (for a model's first layer) skips the input-gradient GEMM;
    backward then returns None.
    """

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer=None,
                 bias_initializer="zeros", name=None, negative_slope=0.01):
        super().__init__(name)
        self.units = positive_int("Dense", "units", units)
        self.activation = check_activation("Dense", activation, allow_none=True)
        self.use_bias = checks.boolean("Dense", "use_bias", use_bias)
        if kernel_initializer is None:
            kernel_initializer = ("he_uniform" if self.activation in RELU_LIKE
                                  else "glorot_uniform")
        self.kernel_initializer = get_initializer(kernel_initializer)
        self.bias_initializer = get_initializer(bias_initializer)
        self.negative_slope = check_slope("Dense", negative_slope)
        self.needs_input_grad = True
        self.weight = self.bias = None
        self._shape = self._dt = None

    def build(self, input_shape, rng):
        input_shape = tuple(input_shape)
        if len(input_shape) < 1 or input_shape[-1] < 1:
            raise ConfigError(f"Dense expects inputs of shape (..., in_features) per example; "
                              f"received input shape {input_shape}")
        fan_in = input_shape[-1]
        w = self.kernel_initializer((fan_in, self.units), fan_in, self.units, rng, self.dtype)
        self.weight = self.add_parameter("weight", w)
        if self.use_bias:
            b = self.bias_initializer((self.units,), fan_in, self.units, rng, self.dtype)
            self.bias = self.add_parameter("bias", b)
        self._dt = np.dtype(self.dtype)
        self._zero_bias = np.zeros(self.units, self._dt)  # the fused kernel always adds one
        self._scratch_grad = np.empty(self.units, self._dt)
        self._shape = None
        self.input_shape = input_shape
        self.output_shape = (*input_shape[:-1], self.units)
        self.built = True
        return self.output_shape

    def _accept(self, x):
        """The slow path, when the batch shape or dtype changes: check, convert, new buffers."""
        self.check_input(x)
        x = np.asarray(x, dtype=self._dt)
        self._shape = x.shape
        self._rows = x.size // x.shape[-1]
        self._out_shape = (*x.shape[:-1], self.units)
        self._work = None  # training buffers for this shape, made on first use
        # The three products for this shape: forward, weight gradient, input gradient.
        rows, fan_in, dt = self._rows, x.shape[-1], self._dt
        self._gemms = tuple(gemm or np.dot for gemm in kernels.blas.layer_gemms(
            rows, fan_in, self.units, dt))
        return x

    def _training_buffers(self):
        rows, dt = self._rows, self._dt
        y = np.empty((rows, self.units), dt)
        self._work = (y, np.empty_like(y) if self.activation in FROM_INPUT else None,
                      np.empty_like(y), np.empty((rows, self._shape[-1]), dt))
        return self._work

    def forward(self, x, training=False):
        if x.shape != self._shape or x.dtype is not self._dt:
            x = self._accept(x)
        x2 = x if x.ndim == 2 else x.reshape(self._rows, x.shape[-1])
        if training:
            y, pre, _, _ = self._work or self._training_buffers()
        else:  # inference returns a fresh array: callers may keep outputs of several batches
            y = np.empty((self._rows, self.units), self._dt)
            pre = np.empty_like(y) if self.activation in FROM_INPUT else None
        self._gemms[0](x2, self.weight.value, y)
        if self.activation is not None or self.use_bias:
            bias = self.bias.value if self.use_bias else self._zero_bias
            kernels.dense.bias_act(y, bias, self.activation, self.negative_slope, pre,
                                   check=False)
        self._x2 = x2
        self._cache = pre if self.activation in FROM_INPUT else y
        return y if x.ndim == 2 else y.reshape(self._out_shape)

    def backward(self, grad_out):
        if grad_out.shape != self._out_shape or grad_out.dtype is not self._dt \
                or not grad_out.flags.c_contiguous:
            grad_out = accept_grad(self, grad_out, self._out_shape)
        g2 = grad_out if grad_out.ndim == 2 else grad_out.reshape(self._rows, self.units)
        buffers = self._work or self._training_buffers()
        if self.activation is not None:
            bias_grad = self.bias.grad if self.use_bias else self._scratch_grad
            dz = kernels.dense.act_backward(g2, self._cache, self.activation, buffers[2],
                                            bias_grad, self.negative_slope, check=False)
        else:
            dz = g2
            if self.use_bias:
                kernels.dense.bias_grad(g2, self.bias.grad, check=False)
        self._gemms[1](self._x2.T, dz, self.weight.grad)
        if not self.needs_input_grad:
            return None
        gx = self._gemms[2](dz, self.weight.value.T, buffers[3])
        return gx if len(self._shape) == 2 else gx.reshape(self._shape)

    def get_config(self):
        return {"units": self.units, "activation": self.activation, "use_bias": self.use_bias,
                "kernel_initializer": name_of(self.kernel_initializer),
                "bias_initializer": name_of(self.bias_initializer),
                **({"negative_slope": self.negative_slope}
                   if self.activation == "leaky_relu" else {})}

    def __repr__(self):
        default_init = "he_uniform" if self.activation in RELU_LIKE else "glorot_uniform"
        defaults = {"activation": None, "use_bias": True, "kernel_initializer": default_init,
                    "bias_initializer": "zeros", "negative_slope": 0.01}
        config = self.get_config()
        args = [repr(config.pop("units"))]
        args += [f"{k}={v!r}" for k, v in config.items() if defaults.get(k, object()) != v]
        return f"Dense({', '.join(args)})"
