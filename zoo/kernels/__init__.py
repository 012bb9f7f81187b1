"""Numba-JIT kernels: pure functions on ndarrays, no classes, no state.

Each kernel module pairs private ``@njit`` arithmetic with public wrappers that check dtype,
rank and contiguity and allocate outputs. Submodules are imported on first attribute access
(``kernels.activations.relu(x)``), so importing layers, losses or optimizers does not import
numba; only running them does. Layer modules must use that attribute form and never import a
kernel submodule at module level.
"""

import importlib

# The activations zoo implements, by the names layers, options and plugins accept. Here, in the
# package that computes them and imports nothing heavy, so a plugin module can offer them as
# option choices without importing numerical code.
ACTIVATIONS = ("relu", "leaky_relu", "tanh", "sigmoid", "gelu", "gelu_erf")

_SUBMODULES = ("activations", "losses", "optim", "dense", "conv", "conv_tiles", "pool", "norm",
               "recurrent", "resample", "blas", "threads", "workers", "layernorm", "attention",
               "embedding")


def __getattr__(name):
    # ``from zoo.kernels import njit`` gives plugin authors zoo's numba policy (cache dir,
    # flags, compile-time accounting); it imports numba, so only kernel modules should use it.
    if name in ("njit", "prange"):
        from zoo.kernels import _jit

        return getattr(_jit, name)
    if name in _SUBMODULES:
        module = importlib.import_module(f"zoo.kernels.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'zoo.kernels' has no attribute {name!r}")


def compile_seconds() -> float:
    """Seconds spent so far in this process compiling or loading numba kernels."""
    import sys

    jit = sys.modules.get("zoo.kernels._jit")
    return 0.0 if jit is None else jit.compile_seconds()
