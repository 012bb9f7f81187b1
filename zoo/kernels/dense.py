"""Dense-layer kernels: bias + activation fused onto the GEMM output, and the fused backward.

The product ``x @ weight`` is a BLAS GEMM done by the layer; these kernels do everything else in
one pass each, so a Dense layer costs one GEMM + one kernel forward and one kernel + two GEMMs
backward:

- ``bias_act(y, bias, activation)``: ``y = act(y + bias)`` in place (gelu also keeps the
  pre-activation in ``pre``, which its backward needs);
- ``act_backward(grad_out, cached, activation, out, bias_grad)``: ``dz = grad_out * act'``
  and ``bias_grad = dz.sum(rows)`` together;
- ``bias_grad(grad_out)``: the row sum alone, for a layer without activation.

Arrays are C-contiguous float32/float64 of shape ``(..., units)``; ``bias`` is ``(units,)``.
``cached`` is the layer's output for relu, leaky_relu, tanh and sigmoid, its pre-activation for
gelu (``activations.BACKWARD_FROM``).
"""

from __future__ import annotations

import numpy as np

from zoo.errors import ConfigError, DataError, describe_array
from zoo.kernels import ACTIVATIONS
from zoo.kernels._jit import njit
from zoo.kernels.activations import (
    check_float,
    gelu_constants,
    gelu_derivative,
    gelu_erf_constants,
    gelu_erf_derivative,
    gelu_erf_value,
    gelu_value,
    output,
    scalar_sigmoid,
    scalar_tanh,
)

# None: the bias alone (a linear layer).
BIAS_ACTIVATIONS = (None, *ACTIVATIONS)

# Every kernel here compiles without fast-math (``@njit(fastmath=False)``), as do the
# per-element functions they call. The fused Dense step (``zoo.kernels.dense_stack``) compiles
# its own copies of them, and fast-math lets LLVM round each copy its own way: with it,
# ``g * s * (1 - s)`` was ``g * (s * (1 - s))`` in one copy and ``(g * s) * (1 - s)`` in the
# other, and which copy ran depended on what the process had run before. IEEE arithmetic in
# the order written gives every copy the same bits.


# -- forward: y = act(y + b) in place -------------------------------------------------------
@njit(fastmath=False)
def _bias(y, b, pre, slope):
    y2 = y.reshape(y.size // b.size, b.size)
    for i in range(y2.shape[0]):
        for j in range(b.size):
            y2[i, j] += b[j]


@njit(fastmath=False)
def _bias_leaky_relu(y, b, pre, slope):
    # relu is the slope-0 case: v * 0 keeps NaN, where max(v, 0) could drop it.
    y2 = y.reshape(y.size // b.size, b.size)
    a = y2.dtype.type(slope)
    for i in range(y2.shape[0]):
        for j in range(b.size):
            v = y2[i, j] + b[j]
            y2[i, j] = v if v > 0 else v * a


@njit(fastmath=False)
def _bias_tanh(y, b, pre, slope):
    y2 = y.reshape(y.size // b.size, b.size)
    for i in range(y2.shape[0]):
        for j in range(b.size):
            y2[i, j] = scalar_tanh(y2[i, j] + b[j])


@njit(fastmath=False)
def _bias_sigmoid(y, b, pre, slope):
    y2 = y.reshape(y.size // b.size, b.size)
    for i in range(y2.shape[0]):
        for j in range(b.size):
            y2[i, j] = scalar_sigmoid(y2[i, j] + b[j])


@njit(fastmath=False)
def _bias_gelu(y, b, pre, slope):
    y2 = y.reshape(y.size // b.size, b.size)
    z2 = pre.reshape(y2.shape)
    consts = gelu_constants(y2)
    for i in range(y2.shape[0]):
        for j in range(b.size):
            v = y2[i, j] + b[j]
            z2[i, j] = v
            y2[i, j] = gelu_value(v, consts)


@njit(fastmath=False)
def _bias_gelu_erf(y, b, pre, slope):
    y2 = y.reshape(y.size // b.size, b.size)
    z2 = pre.reshape(y2.shape)
    consts = gelu_erf_constants(y2)
    for i in range(y2.shape[0]):
        for j in range(b.size):
            v = y2[i, j] + b[j]
            z2[i, j] = v
            y2[i, j] = gelu_erf_value(v, consts)


# -- backward: dz = g * act'(cached), db = sum over rows of dz -------------------------------
# ``g`` times an activation's derivative, from the activation's output (``one``: 1 in their
# dtype). One definition for these kernels and the fused Dense step's blocks of rows
# (``zoo.kernels.dense_rows``), which must give the same bits.
@njit(fastmath=False)
def times_leaky_relu_grad(g, y, a, one):
    return g * (one if y > 0 else a)


@njit(fastmath=False)
def times_tanh_grad(g, t, one):
    return g * (one - t * t)


@njit(fastmath=False)
def times_sigmoid_grad(g, s, one):
    return g * s * (one - s)


@njit(fastmath=False)
def _bias_grad(g, db):
    g2 = g.reshape(g.size // db.size, db.size)
    db[:] = 0
    for i in range(g2.shape[0]):
        for j in range(db.size):
            db[j] += g2[i, j]


@njit(fastmath=False)
def _grad_leaky_relu(g, y, dz, db, slope):
    g2 = g.reshape(g.size // db.size, db.size)
    y2, d2 = y.reshape(g2.shape), dz.reshape(g2.shape)
    a, one = g2.dtype.type(slope), g2.dtype.type(1)
    db[:] = 0
    for i in range(g2.shape[0]):
        for j in range(db.size):
            d = times_leaky_relu_grad(g2[i, j], y2[i, j], a, one)
            d2[i, j] = d
            db[j] += d


@njit(fastmath=False)
def _grad_tanh(g, y, dz, db, slope):
    g2 = g.reshape(g.size // db.size, db.size)
    y2, d2 = y.reshape(g2.shape), dz.reshape(g2.shape)
    one = g2.dtype.type(1)
    db[:] = 0
    for i in range(g2.shape[0]):
        for j in range(db.size):
            d = times_tanh_grad(g2[i, j], y2[i, j], one)
            d2[i, j] = d
            db[j] += d


@njit(fastmath=False)
def _grad_sigmoid(g, y, dz, db, slope):
    g2 = g.reshape(g.size // db.size, db.size)
    y2, d2 = y.reshape(g2.shape), dz.reshape(g2.shape)
    one = g2.dtype.type(1)
    db[:] = 0
    for i in range(g2.shape[0]):
        for j in range(db.size):
            d = times_sigmoid_grad(g2[i, j], y2[i, j], one)
            d2[i, j] = d
            db[j] += d


@njit(fastmath=False)
def _grad_gelu(g, z, dz, db, slope):
    g2 = g.reshape(g.size // db.size, db.size)
    z2, d2 = z.reshape(g2.shape), dz.reshape(g2.shape)
    consts = gelu_constants(g2)
    db[:] = 0
    for i in range(g2.shape[0]):
        for j in range(db.size):
            d = g2[i, j] * gelu_derivative(z2[i, j], consts)
            d2[i, j] = d
            db[j] += d


@njit(fastmath=False)
def _grad_gelu_erf(g, z, dz, db, slope):
    g2 = g.reshape(g.size // db.size, db.size)
    z2, d2 = z.reshape(g2.shape), dz.reshape(g2.shape)
    consts = gelu_erf_constants(g2)
    db[:] = 0
    for i in range(g2.shape[0]):
        for j in range(db.size):
            d = g2[i, j] * gelu_erf_derivative(z2[i, j], consts)
            d2[i, j] = d
            db[j] += d


_FORWARD = {None: _bias, "relu": _bias_leaky_relu, "leaky_relu": _bias_leaky_relu,
            "tanh": _bias_tanh, "sigmoid": _bias_sigmoid, "gelu": _bias_gelu,
            "gelu_erf": _bias_gelu_erf}
_BACKWARD = {"relu": _grad_leaky_relu, "leaky_relu": _grad_leaky_relu, "tanh": _grad_tanh,
             "sigmoid": _grad_sigmoid, "gelu": _grad_gelu, "gelu_erf": _grad_gelu_erf}


# -- public wrappers ------------------------------------------------------------------------
def _check_activation(fn: str, activation, allowed) -> None:
    if activation not in allowed:
        known = ", ".join(str(a) for a in allowed)
        raise ConfigError(f"{fn}: activation must be one of {known}; received {activation!r}")


def _check_vector(fn: str, name: str, v, like: np.ndarray) -> None:
    units = like.shape[-1] if like.ndim else 0
    if not isinstance(v, np.ndarray) or v.shape != (units,) or v.dtype != like.dtype \
            or not v.flags.c_contiguous:
        raise DataError(f"{fn}: {name} must be a contiguous {like.dtype} array of shape "
                        f"({units},); received {describe_array(v)}")


def bias_act(y: np.ndarray, bias: np.ndarray | None = None, activation: str | None = None,
             negative_slope: float = 0.01, pre: np.ndarray | None = None,
             check: bool = True) -> np.ndarray:
    """``y = activation(y + bias)`` in place over the last axis; returns ``y``.

    For ``activation="gelu"`` or ``"gelu_erf"``, ``pre`` (same shape as ``y``) receives
    ``y + bias``, which ``act_backward`` needs. ``relu`` ignores ``negative_slope``.
    ``check=False`` skips the checks, for a layer that made every array itself (``bias`` must
    then be given).
    """
    if check:
        _check_activation("bias_act", activation, BIAS_ACTIVATIONS)
        check_float("bias_act", "y", y)
        if y.ndim == 0:
            raise DataError("bias_act: y must have at least one axis; received a scalar")
        if bias is None:
            if activation is None:
                return y
            bias = np.zeros(y.shape[-1], y.dtype)
        _check_vector("bias_act", "bias", bias, y)
        if activation in ("gelu", "gelu_erf"):
            if pre is None:
                raise DataError(f"bias_act: activation={activation!r} needs pre= (the backward "
                                f"reads it)")
            check_float("bias_act", "pre", pre, y)
    _FORWARD[activation](y, bias, y if pre is None else pre,
                         0.0 if activation == "relu" else negative_slope)
    return y


def bias_grad(grad_out: np.ndarray, out: np.ndarray | None = None,
              check: bool = True) -> np.ndarray:
    """The bias gradient: ``grad_out`` summed over every axis but the last, into ``out``."""
    if check:
        check_float("bias_grad", "grad_out", grad_out)
        if grad_out.ndim == 0:
            raise DataError("bias_grad: grad_out must have at least one axis; received a scalar")
        if out is None:
            out = np.empty(grad_out.shape[-1], grad_out.dtype)
        _check_vector("bias_grad", "out", out, grad_out)
    assert out is not None, "check=False needs out"
    _bias_grad(grad_out, out)
    return out


def act_backward(grad_out: np.ndarray, cached: np.ndarray, activation: str,
                 out: np.ndarray | None = None, bias_grad: np.ndarray | None = None,
                 negative_slope: float = 0.01, check: bool = True) -> np.ndarray:
    """``dz = grad_out * activation'`` into ``out``, and the bias gradient in the same pass.

    ``cached`` is the forward output (pre-activation for gelu and gelu_erf). ``bias_grad`` (shape
    ``(units,)``) receives ``dz`` summed over rows; leave it None for a layer without bias.
    ``out`` must not be ``grad_out`` itself (that would defeat vectorisation).
    ``check=False`` skips the checks (``out`` and ``bias_grad`` must then be given).
    """
    if check:
        _check_activation("act_backward", activation, _BACKWARD)
        check_float("act_backward", "grad_out", grad_out)
        check_float("act_backward", "cached", cached, grad_out)
        if grad_out.ndim == 0:
            raise DataError("act_backward: grad_out must have at least one axis; "
                            "received a scalar")
        out = output("act_backward", out, grad_out)
        if bias_grad is None:
            bias_grad = np.empty(grad_out.shape[-1], grad_out.dtype)  # scratch, discarded
        _check_vector("act_backward", "bias_grad", bias_grad, grad_out)
    assert out is not None, "check=False needs out"
    _BACKWARD[activation](grad_out, cached, out, bias_grad,
                          0.0 if activation == "relu" else negative_slope)
    return out
