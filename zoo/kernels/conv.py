"""Convolution kernels: im2col / col2im for 1-D and 2-D, so the product itself is one BLAS GEMM.

The lowering is the classic one (Chellapilla, Puri and Simard, "High Performance Convolutional
Neural Networks for Document Processing", 2006): each output position's receptive field becomes
a column (2-D, channels first) or a row (1-D, channels last) of a matrix, the convolution is a
matrix product with the flattened weights, and the input gradient is the transposed product
scattered back by col2im.

Layouts:
- 2-D, images ``(N, C, H, W)``: ``cols`` is ``(C * KH * KW, N * OH * OW)``, row
  ``(c * KH + i) * KW + j``, column ``(n * OH + y) * OW + x``. ``weight.reshape(F, -1) @ cols``
  gives the output as ``(F, N * OH * OW)``; ``fnp_to_nfp`` moves it to ``(N, F, OH, OW)`` and
  adds the bias in the same pass, ``nfp_to_fnp`` does the reverse for the output gradient.
- 1-D, sequences ``(N, T, F)`` channels last: ``cols`` is ``(N * OT, K * F)``, row
  ``n * OT + t``, column ``i * F + f``. A window of K steps by F features is contiguous in the
  input, so a row is K contiguous copies; ``cols @ weight.reshape(K * F, filters)`` is already the
  ``(N, OT, filters)`` output.

Positions outside the input (padding) read as zero. Geometry (padding before each axis, output
sizes) is computed by the caller; the kernels trust it after the wrappers' checks.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import DataError, describe_array
from zoo.kernels._jit import njit, prange

_FLOATS = (np.float32, np.float64)


def _check(name: str, x: np.ndarray, ndim: int, dtype=None) -> None:
    if not isinstance(x, np.ndarray) or x.ndim != ndim or x.dtype.type not in _FLOATS:
        raise DataError(f"{name} must be a float32 or float64 array of rank {ndim}; "
                        f"received {describe_array(x)}")
    if dtype is not None and x.dtype != dtype:
        raise DataError(f"{name} must have dtype {np.dtype(dtype)}; received {x.dtype}")
    if not x.flags.c_contiguous:
        raise DataError(f"{name} must be C-contiguous; received a strided view")


def _out(out, shape, dtype, name):
    if out is None:
        return np.empty(shape, dtype)
    if out.shape != tuple(shape) or out.dtype != dtype or not out.flags.c_contiguous:
        raise DataError(f"{name}: out must be a C-contiguous {np.dtype(dtype)} array of shape "
                        f"{tuple(shape)}; received {describe_array(out)}")
    return out


@njit
def _valid_range(size_out, start, step, size_in):
    """Output indices o in [lo, hi) with 0 <= o * step + start < size_in."""
    lo = 0
    if start < 0:
        lo = (-start + step - 1) // step
    hi = 0
    if size_in - 1 - start >= 0:
        hi = (size_in - 1 - start) // step + 1
    if hi > size_out:
        hi = size_out
    if lo > hi:
        lo = hi
    return lo, hi



# -- 2-D, channels first ---------------------------------------------------------------------
@njit
def _im2col2d(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    n_, c_, h_, w_ = x.shape
    p_ = oh * ow
    for n in prange(n_):
        for c in range(c_):
            for i in range(kh):
                for j in range(kw):
                    row = (c * kh + i) * kw + j
                    x0 = j * dw - pw
                    lo, hi = _valid_range(ow, x0, sw, w_)
                    for y in range(oh):
                        iy = y * sh + i * dh - ph
                        col = n * p_ + y * ow
                        if iy < 0 or iy >= h_:
                            for xo in range(ow):
                                cols[row, col + xo] = 0
                            continue
                        for xo in range(lo):
                            cols[row, col + xo] = 0
                        for xo in range(lo, hi):
                            cols[row, col + xo] = x[n, c, iy, xo * sw + x0]
                        for xo in range(hi, ow):
                            cols[row, col + xo] = 0


@njit
def _col2im2d(cols, dx, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow):
    n_, c_, h_, w_ = dx.shape
    p_ = oh * ow
    for n in prange(n_):
        dx[n] = 0
        for c in range(c_):
            for i in range(kh):
                for j in range(kw):
                    row = (c * kh + i) * kw + j
                    x0 = j * dw - pw
                    lo, hi = _valid_range(ow, x0, sw, w_)
                    for y in range(oh):
                        iy = y * sh + i * dh - ph
                        if iy < 0 or iy >= h_:
                            continue
                        col = n * p_ + y * ow
                        for xo in range(lo, hi):
                            dx[n, c, iy, xo * sw + x0] += cols[row, col + xo]


@njit
def _fnp_to_nfp(y, bias, out, use_bias):
    n_, f_, p_ = out.shape
    for n in range(n_):
        for f in range(f_):
            b = bias[f] if use_bias else 0.0
            src = n * p_
            for p in range(p_):
                out[n, f, p] = y[f, src + p] + b


@njit
def _nfp_to_fnp(g, out, db, use_bias):
    n_, f_, p_ = g.shape
    if use_bias:
        db[:] = 0
    for n in range(n_):
        for f in range(f_):
            dst = n * p_
            acc = 0.0
            for p in range(p_):
                v = g[n, f, p]
                out[f, dst + p] = v
                acc += v
            if use_bias:
                db[f] += acc


def im2col2d(x, kernel_size, stride, padding, dilation, output_size, out=None):
    """Lower images ``(N, C, H, W)`` to columns ``(C * KH * KW, N * OH * OW)``.

    ``kernel_size``, ``stride``, ``padding`` (zeros before each axis), ``dilation`` and
    ``output_size`` are ``(h, w)`` pairs.
    """
    _check("im2col2d: x", x, 4)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow) = (kernel_size, stride, padding, dilation,
                                                      output_size)
    n, c = x.shape[:2]
    cols = _out(out, (c * kh * kw, n * oh * ow), x.dtype, "im2col2d")
    _im2col2d(x, cols, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    return cols


def col2im2d(cols, input_shape, kernel_size, stride, padding, dilation, output_size, out=None):
    """Scatter-add columns ``(C * KH * KW, N * OH * OW)`` back to images ``input_shape``."""
    _check("col2im2d: cols", cols, 2)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow) = (kernel_size, stride, padding, dilation,
                                                      output_size)
    n, c = input_shape[:2]
    if cols.shape != (c * kh * kw, n * oh * ow):
        raise DataError(f"col2im2d: cols must have shape {(c * kh * kw, n * oh * ow)}; "
                        f"received {describe_array(cols)}")
    dx = _out(out, tuple(input_shape), cols.dtype, "col2im2d")
    _col2im2d(cols, dx, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow)
    return dx


def fnp_to_nfp(y, bias, out):
    """``out[n, f, p] = y[f, n * P + p] + bias[f]`` (``bias`` may be None); returns ``out``."""
    _check("fnp_to_nfp: y", y, 2)
    _check("fnp_to_nfp: out", out, 3, y.dtype)
    use_bias = bias is not None
    _fnp_to_nfp(y, bias if use_bias else np.empty(0, y.dtype), out, use_bias)
    return out


def nfp_to_fnp(g, out, db=None):
    """``out[f, n * P + p] = g[n, f, p]`` and, if given, ``db[f] = sum over n, p``."""
    _check("nfp_to_fnp: g", g, 3)
    _check("nfp_to_fnp: out", out, 2, g.dtype)
    use_bias = db is not None
    _nfp_to_fnp(g, out, db if use_bias else np.empty(0, g.dtype), use_bias)
    return out


# -- 1-D, channels last ----------------------------------------------------------------------
@njit
def _im2col1d(x, cols, k, s, p, d, ot):
    n_, t_, f_ = x.shape
    for n in prange(n_):
        for t in range(ot):
            row = n * ot + t
            for i in range(k):
                it = t * s + i * d - p
                base = i * f_
                if it < 0 or it >= t_:
                    for f in range(f_):
                        cols[row, base + f] = 0
                else:
                    for f in range(f_):
                        cols[row, base + f] = x[n, it, f]


@njit
def _col2im1d(cols, dx, k, s, p, d, ot):
    n_, t_, f_ = dx.shape
    for n in prange(n_):
        dx[n] = 0
        for t in range(ot):
            row = n * ot + t
            for i in range(k):
                it = t * s + i * d - p
                if it < 0 or it >= t_:
                    continue
                base = i * f_
                for f in range(f_):
                    dx[n, it, f] += cols[row, base + f]


def im2col1d(x, kernel_size, stride, padding, dilation, output_size, out=None):
    """Lower sequences ``(N, T, F)`` to rows ``(N * OT, K * F)`` (all arguments ints)."""
    _check("im2col1d: x", x, 3)
    n, _, f = x.shape
    cols = _out(out, (n * output_size, kernel_size * f), x.dtype, "im2col1d")
    _im2col1d(x, cols, kernel_size, stride, padding, dilation, output_size)
    return cols


def col2im1d(cols, input_shape, kernel_size, stride, padding, dilation, output_size, out=None):
    """Scatter-add rows ``(N * OT, K * F)`` back to sequences ``input_shape``."""
    _check("col2im1d: cols", cols, 2)
    n, _, f = input_shape
    if cols.shape != (n * output_size, kernel_size * f):
        raise DataError(f"col2im1d: cols must have shape {(n * output_size, kernel_size * f)}; "
                        f"received {describe_array(cols)}")
    dx = _out(out, tuple(input_shape), cols.dtype, "col2im1d")
    _col2im1d(cols, dx, kernel_size, stride, padding, dilation, output_size)
    return dx
