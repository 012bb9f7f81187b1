"""Activation layers: ReLU, LeakyReLU, Tanh, Sigmoid, GELU, and ``Activation(name)``.

One class does the work; the named layers are configurations of it. The maths is in
``zoo.kernels.activations``; backward reads the cached output (the input for the GELUs).
``"gelu"`` is the tanh approximation, ``"gelu_erf"`` the exact form (PyTorch's default).
"""

from __future__ import annotations

import numpy as np

from zoo import checks, kernels
from zoo.errors import DataError, describe_array
from zoo.kernels import ACTIVATIONS
from zoo.layers.base import Layer

FROM_INPUT = ("gelu", "gelu_erf")  # activations whose backward reads the input


def check_activation(layer: str, value, *, allow_none: bool = False):
    """Validate an activation option string (None means linear where allowed)."""
    if value is None and allow_none:
        return None
    if isinstance(value, str) and value.lower() in ACTIVATIONS:
        return value.lower()
    known = ", ".join(ACTIVATIONS) + (" or None" if allow_none else "")
    raise checks.fail(layer, "activation", value, f"one of {known}")


def check_slope(layer: str, value) -> float:
    """``leaky_relu``'s slope for negative inputs: a finite number >= 0."""
    return checks.number(layer, "negative_slope", value, minimum=0)


class Activation(Layer):
    """Applies an activation elementwise: ``Activation("relu")``.

    Args:
        activation: one of ``relu``, ``leaky_relu``, ``tanh``, ``sigmoid``, ``gelu`` (tanh
            approximation), ``gelu_erf`` (exact).
        negative_slope: slope of ``leaky_relu`` for negative inputs.

    Input shape: any. Output shape: the same.
    """

    def __init__(self, activation: str, negative_slope: float = 0.01, name: str | None = None):
        super().__init__(name)
        cls = type(self).__name__
        self.activation = check_activation(cls, activation)
        self.negative_slope = check_slope(cls, negative_slope)
        self._shape = None
        self._dt = None

    def build(self, input_shape, rng):
        self._dt = np.dtype(self.dtype)
        return super().build(input_shape, rng)

    def _accept(self, x):
        """The slow path, when the batch shape or dtype changes: check, convert, new buffers."""
        self.check_input(x)
        x = np.ascontiguousarray(x, dtype=self._dt)
        self._shape = x.shape
        self._y = np.empty_like(x)
        self._gx = np.empty_like(x)
        return x

    def forward(self, x, training=False):
        if x.shape != self._shape or x.dtype is not self._dt or not x.flags.c_contiguous:
            x = self._accept(x)
        # Training reuses the output buffer; inference returns a fresh array the caller keeps.
        y = self._y if training else np.empty_like(x)
        kernels.activations.forward(self.activation, x, y, self.negative_slope, check=False)
        self._cache = x if self.activation in FROM_INPUT else y
        return y

    def backward(self, grad_out):
        if grad_out.shape != self._shape or grad_out.dtype is not self._dt \
                or not grad_out.flags.c_contiguous:
            grad_out = accept_grad(self, grad_out, self._shape)
        return kernels.activations.backward(self.activation, grad_out, self._cache, self._gx,
                                            self.negative_slope, check=False)

    def get_config(self):
        config = {"activation": self.activation}
        if self.activation == "leaky_relu":
            config["negative_slope"] = self.negative_slope
        return config

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items()
                         if k != "activation")
        return f"{type(self).__name__}({self.activation!r}{', ' + args if args else ''})"


def accept_grad(layer, grad_out, shape):
    """A layer's backward input, checked: the wrong shape is a DataError, the wrong dtype or
    layout is converted (the slow path; the fast path is a shape/dtype/contiguity test)."""
    if not isinstance(grad_out, np.ndarray) or grad_out.shape != shape:
        raise DataError(f"{type(layer).__name__}.backward expects a gradient of shape {shape} "
                        f"(the last forward's output); received {describe_array(grad_out)}")
    return np.ascontiguousarray(grad_out, dtype=layer.dtype)


class _Named(Activation):
    """A fixed activation: its config holds only what can vary."""

    kind = ""

    def __init__(self, name: str | None = None):
        super().__init__(self.kind, name=name)

    def get_config(self):
        return {}

    def __repr__(self):
        return f"{type(self).__name__}()"


class ReLU(_Named):
    """max(x, 0) (Nair and Hinton, ICML 2010)."""

    kind = "relu"


class Tanh(_Named):
    """Hyperbolic tangent."""

    kind = "tanh"


class Sigmoid(_Named):
    """The logistic function 1 / (1 + exp(-x))."""

    kind = "sigmoid"


class GELU(Activation):
    """GELU (Hendrycks and Gimpel, https://arxiv.org/abs/1606.08415).

    Args:
        approximate: ``"tanh"`` (the default here, ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715
            x^3)))``) or ``"none"``, the exact ``x * Phi(x)`` with erf, which is PyTorch's
            ``nn.GELU()`` default. ``Activation("gelu_erf")`` is the exact form too.
    """

    def __init__(self, approximate: str = "tanh", name: str | None = None):
        checks.one_of("GELU", "approximate", approximate, ("tanh", "none"))
        super().__init__("gelu" if approximate == "tanh" else "gelu_erf", name=name)
        self.approximate = approximate

    def get_config(self):
        return {} if self.approximate == "tanh" else {"approximate": self.approximate}

    def __repr__(self):
        return "GELU()" if self.approximate == "tanh" else "GELU(approximate='none')"


class LeakyReLU(Activation):
    """x for x >= 0, ``negative_slope * x`` otherwise (Maas et al., ICML 2013)."""

    def __init__(self, negative_slope: float = 0.01, name: str | None = None):
        super().__init__("leaky_relu", negative_slope, name)

    def get_config(self):
        return {"negative_slope": self.negative_slope}

    def __repr__(self):
        return f"LeakyReLU(negative_slope={self.negative_slope!r})"


_CLASSES = {"relu": ReLU, "leaky_relu": LeakyReLU, "tanh": Tanh, "sigmoid": Sigmoid,
            "gelu": GELU}


def get_activation(name: str) -> Activation:
    """A new activation layer for an option string such as ``"relu"``."""
    name = check_activation("get_activation", name)
    return GELU(approximate="none") if name == "gelu_erf" else _CLASSES[name]()
