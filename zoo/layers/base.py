"""The Layer interface every layer, model and container implements.

A layer's anatomy never varies: ``__init__`` stores and validates its configuration,
``build`` allocates parameters for an input shape, ``forward`` computes and caches what
``backward`` needs, ``backward`` right under it returns the gradient with respect to the input
and *overwrites* each parameter's ``grad``. Shapes never include the batch axis.

A layer joins paths in a graph (``zoo.graph``) by setting ``multi_input = True``: its
``build`` then receives a list of input shapes, ``forward`` a list of arrays and ``backward``
returns a list of gradients, one per input. A layer with several outputs sets
``num_outputs``: ``build`` returns a list of shapes, ``forward`` a list of arrays and
``backward`` receives a list of gradients. Neither ``forward`` nor ``backward`` may write into
the arrays it receives: in a graph the same array can reach several layers.

Two rules keep models fast and checkpoints exact:
- Reach parameters through their ``Parameter`` at call time (``self.weight.value``,
  ``self.weight.grad``) and write gradients in place (``out=`` or ``grad[...] =``): the trainer
  may move every parameter into one flat buffer so an optimizer step is one kernel call.
- A layer that draws random numbers while training keeps a ``numpy.random.Generator`` in
  ``self.rng``, created in ``build`` from the build generator; checkpoints save its state.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import numpy as np

# Layers have long imported these two checks from here; they live in zoo.checks.
from zoo.checks import fraction, positive_int  # noqa: F401
from zoo.errors import ConfigError, DataError, describe_array
from zoo.sizing import charge


class Parameter:
    """A trainable array and its gradient (same shape and dtype)."""

    __slots__ = ("name", "value", "grad")

    def __init__(self, name: str, value: np.ndarray):
        self.name = name
        self.value = value
        self.grad = np.zeros_like(value)

    def __repr__(self) -> str:
        return f"Parameter({self.name}, shape={self.value.shape}, dtype={self.value.dtype})"


class Layer:
    """Base class: subclasses override ``build``, ``forward``, ``backward``, ``get_config``.

    ``build(input_shape, rng, dtype=None)`` allocates the parameters in ``dtype`` (float32
    unless given; a gradient check builds in float64) and returns the output shape. A subclass
    may define ``build(self, input_shape, rng)`` without ``dtype``, as layers written before
    zoo passed it do: ``dtype=`` then sets ``self.dtype`` before that ``build`` runs (see
    ``__init_subclass__``), so every layer is built the same way. Containers pass ``dtype`` on
    to their children. Parameters are created with ``add_parameter`` and non-trainable state
    (running statistics) with ``add_buffer`` so models can save and load them by name.
    """

    # The graph protocol (see the module docstring): one input and one output unless set.
    multi_input = False
    num_outputs = 1

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        build = cls.__dict__.get("build")
        if build is not None and not _takes_dtype(build):
            cls.build = _with_dtype(build)

    def __init__(self, name: str | None = None):
        self.name = name
        self.dtype = np.float32
        self.built = False
        # Tuples once built, None before: typed Any so code that runs after build reads them
        # without a None check at every use.
        self.input_shape: Any = None
        self.output_shape: Any = None
        self._params: dict[str, Parameter] = {}
        self._buffers: dict[str, np.ndarray] = {}

    # -- to override -------------------------------------------------------------------------
    def build(self, input_shape: tuple, rng: np.random.Generator, dtype=None) -> tuple:
        """Allocate parameters for ``input_shape`` in ``dtype``; return the output shape."""
        if dtype is not None:
            self.dtype = np.dtype(dtype).type
        self.input_shape = self.output_shape = tuple(input_shape)
        self.built = True
        return self.output_shape

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def get_config(self) -> dict:
        return {}

    # -- shared machinery --------------------------------------------------------------------
    def add_parameter(self, name: str, value: np.ndarray) -> Parameter:
        charge(np.shape(value), self.dtype)  # counted against the model's budget (zoo.sizing)
        param = Parameter(name, np.ascontiguousarray(value, dtype=self.dtype))
        self._params[name] = param
        return param

    def add_buffer(self, name: str, value: np.ndarray) -> np.ndarray:
        charge(np.shape(value), self.dtype)
        buf = np.ascontiguousarray(value, dtype=self.dtype)
        self._buffers[name] = buf
        return buf

    def parameters(self) -> list[Parameter]:
        return list(self._params.values())

    def named_parameters(self, prefix: str = "") -> list[tuple[str, Parameter]]:
        return [(prefix + name, p) for name, p in self._params.items()]

    def named_buffers(self, prefix: str = "") -> list[tuple[str, np.ndarray]]:
        return [(prefix + name, b) for name, b in self._buffers.items()]

    def set_buffer(self, name: str, value: np.ndarray) -> None:
        """Overwrite a buffer in place (keeps references held by kernels valid)."""
        self._buffers[name][...] = value

    @property
    def num_params(self) -> int:
        return int(sum(p.value.size for p in self.parameters()))

    def check_input(self, x: np.ndarray) -> None:
        """One clear error when ``x`` does not fit the shape this layer was built for."""
        if not self.built:
            raise ConfigError(f"{self!r} is used before build(); build it with an input shape")
        if x.ndim != len(self.input_shape) + 1 or tuple(x.shape[1:]) != self.input_shape:
            raise DataError(
                f"{type(self).__name__} expects input of shape (batch, "
                f"{', '.join(map(str, self.input_shape))}); received {describe_array(x)}"
            )

    def __call__(self, x, training: bool = False):
        """``forward(x)`` on arrays; on ``zoo.graph`` tensors, a new node of a layer graph."""
        if not isinstance(x, np.ndarray):
            from zoo.graph import apply_layer, is_symbolic

            if is_symbolic(x):
                return apply_layer(self, x)
        return self.forward(x, training)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _takes_dtype(build) -> bool:
    try:
        params = inspect.signature(build).parameters
    except (TypeError, ValueError):
        return True
    return "dtype" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _with_dtype(build):
    """``build(self, input_shape, rng)`` as ``build(self, input_shape, rng, dtype=None)``."""

    @functools.wraps(build)
    def build_in_dtype(self, input_shape, rng, dtype=None):
        if dtype is not None:
            self.dtype = np.dtype(dtype).type
        return build(self, input_shape, rng)

    return build_in_dtype
