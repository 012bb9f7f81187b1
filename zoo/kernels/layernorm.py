"""Layer normalisation and RMS normalisation over the last axis, forward and backward.

Layer norm (Ba, Kiros and Hinton, 2016, https://arxiv.org/abs/1607.06450) normalises each row
``x`` (the trailing axes flattened into one of D values) by its own mean and biased variance:
``y = (x - mean) / sqrt(var + eps) * weight + bias``. RMS norm (Zhang and Sennrich, 2019,
https://arxiv.org/abs/1910.07467) skips the centring: ``y = x / sqrt(mean(x^2) + eps) * weight``
(its ``bias`` is all zeros). Both keep no running statistics: training and inference compute
the same thing. Sums accumulate in float64, so float32 rows keep their precision.

The forward pass returns per-row ``mean`` (zeros for RMS norm) and ``invstd`` =
``1 / sqrt(var + eps)``, which the backward pass takes back. With ``xhat = (x - mean) * invstd``
and ``d = grad * weight``, backward is
``dx = invstd * (d - mean(d) - xhat * mean(d * xhat))`` (RMS norm: without ``- mean(d)``),
``dweight = sum over rows of grad * xhat`` and ``dbias = sum over rows of grad``.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import DataError, describe_array
from zoo.kernels._jit import njit


@njit
def _forward(x, weight, bias, eps, center, out, mean, invstd):
    rows, d = x.shape
    for r in range(rows):
        mu = 0.0
        if center:
            for j in range(d):
                mu += x[r, j]
            mu /= d
        acc = 0.0
        for j in range(d):
            v = x[r, j] - mu
            acc += v * v
        inv = 1.0 / np.sqrt(acc / d + eps)
        mean[r] = mu
        invstd[r] = inv
        m, s = x.dtype.type(mu), x.dtype.type(inv)
        for j in range(d):
            out[r, j] = (x[r, j] - m) * s * weight[j] + bias[j]


@njit
def _backward(g, x, weight, mean, invstd, center, dx, dweight, dbias):
    rows, d = x.shape
    dw = np.zeros(d)
    db = np.zeros(d)
    for r in range(rows):
        m, s = x.dtype.type(mean[r]), x.dtype.type(invstd[r])
        sum_d = 0.0
        sum_dx = 0.0
        for j in range(d):
            xhat = (x[r, j] - m) * s
            gj = g[r, j]
            dj = gj * weight[j]
            sum_d += dj
            sum_dx += dj * xhat
            dw[j] += gj * xhat
            db[j] += gj
        a = x.dtype.type(sum_d / d if center else 0.0)
        b = x.dtype.type(sum_dx / d)
        for j in range(d):
            xhat = (x[r, j] - m) * s
            dx[r, j] = s * (g[r, j] * weight[j] - a - xhat * b)
    for j in range(d):
        dweight[j] = dw[j]
        dbias[j] = db[j]


# -- public wrappers ------------------------------------------------------------------------
def _check(fn, name, a, shape=None, dtype=None):
    if not isinstance(a, np.ndarray) or a.dtype.char not in "fd" or not a.flags.c_contiguous \
            or (shape is not None and a.shape != shape) \
            or (dtype is not None and a.dtype != dtype):
        want = f"a C-contiguous {dtype or 'float32 or float64'} array"
        if shape is not None:
            want += f" of shape {shape}"
        raise DataError(f"{fn}: {name} must be {want}; received {describe_array(a)}")


def _rows(fn, x, features):
    _check(fn, "x", x)
    if x.ndim < 1 or x.size % features or x.shape[-1] == 0:
        raise DataError(f"{fn}: x must end in axes of {features} values in all; received "
                        f"{describe_array(x)}")
    return x.reshape(x.size // features, features)


def norm_forward(x, weight, bias, eps, center=True, features=None, out=None, mean=None,
                 invstd=None):
    """Normalise rows of ``features`` values (default: the last axis) of ``x``.

    ``center=True`` is layer norm, ``False`` RMS norm (pass zeros as ``bias``). Returns
    ``(out, mean, invstd)``; ``mean`` and ``invstd`` (float64, one per row) feed the backward.
    """
    features = x.shape[-1] if features is None else int(features)
    x2 = _rows("norm_forward", x, features)
    for name, v in (("weight", weight), ("bias", bias)):
        _check("norm_forward", name, v, (features,), x.dtype)
    rows = x2.shape[0]
    out = np.empty_like(x) if out is None else out
    _check("norm_forward", "out", out, x.shape, x.dtype)
    mean = np.empty(rows) if mean is None else mean
    invstd = np.empty(rows) if invstd is None else invstd
    _check("norm_forward", "mean", mean, (rows,), np.float64)
    _check("norm_forward", "invstd", invstd, (rows,), np.float64)
    _forward(x2, weight, bias, float(eps), bool(center), out.reshape(x2.shape), mean, invstd)
    return out, mean, invstd


def norm_backward(grad, x, weight, mean, invstd, center=True, features=None, out=None,
                  dweight=None, dbias=None):
    """Gradients of ``norm_forward``: returns ``(dx, dweight, dbias)`` (the latter two
    overwritten, not accumulated)."""
    features = x.shape[-1] if features is None else int(features)
    x2 = _rows("norm_backward", x, features)
    _check("norm_backward", "grad", grad, x.shape, x.dtype)
    _check("norm_backward", "weight", weight, (features,), x.dtype)
    rows = x2.shape[0]
    _check("norm_backward", "mean", mean, (rows,), np.float64)
    _check("norm_backward", "invstd", invstd, (rows,), np.float64)
    out = np.empty_like(x) if out is None else out
    dweight = np.empty_like(weight) if dweight is None else dweight
    dbias = np.empty_like(weight) if dbias is None else dbias
    _check("norm_backward", "out", out, x.shape, x.dtype)
    _check("norm_backward", "dweight", dweight, (features,), x.dtype)
    _check("norm_backward", "dbias", dbias, (features,), x.dtype)
    _backward(grad.reshape(x2.shape), x2, weight, mean, invstd, bool(center),
              out.reshape(x2.shape), dweight, dbias)
    return out, dweight, dbias
