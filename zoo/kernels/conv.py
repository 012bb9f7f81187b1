"""Convolution kernels: im2col / col2im (the product itself is one BLAS GEMM) and a direct
convolution for layers with few input channels.

The lowering is the classic one (Chellapilla, Puri and Simard, "High Performance Convolutional
Neural Networks for Document Processing", 2006): each output position's receptive field becomes
a column (2-D, channels first) or a row (1-D, channels last) of a matrix, the convolution is a
matrix product with the flattened weights, and the input gradient is the transposed product
scattered back by col2im.

Layouts:
- 2-D, images ``(N, C, H, W)``: the input is first copied into a zero-bordered buffer
  ``(N, C, HP, WP)`` (``pad2d``) so the inner loops need no bounds checks. ``cols`` is
  ``(C * KH * KW, N * OH * OW)``, row ``(c * KH + i) * KW + j``, column ``(n * OH + y) * OW + x``.
  ``weight.reshape(F, -1) @ cols`` gives the output as ``(F, N * OH * OW)``; ``fnp_to_nfp``
  moves it to ``(N, F, OH, OW)`` and adds the bias in the same pass, ``nfp_to_fnp`` does the
  reverse for the output gradient.
- 1-D, sequences ``(N, T, F)`` channels last: ``cols`` is ``(N * OT, K * F)``, row
  ``n * OT + t``, column ``i * F + f``. A window of K steps by F features is contiguous in the
  input, so a row is K contiguous copies; ``cols @ weight.reshape(K * F, filters)`` is already the
  ``(N, OT, filters)`` output.

Inner loops index views with loop counters rather than computed offsets: an index numba cannot
prove non-negative gets a wraparound check per element, which stops LLVM from vectorising
(measured 4-6x slower). Geometry (padding, output sizes) is computed by the caller.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import DataError, describe_array
from zoo.kernels._jit import njit

_FLOATS = (np.float32, np.float64)


def check_array(name: str, x: np.ndarray, ndim: int, dtype=None) -> None:
    """A float32/float64 C-contiguous array of rank ``ndim`` (and ``dtype`` if given)."""
    if not isinstance(x, np.ndarray) or x.ndim != ndim or x.dtype.type not in _FLOATS:
        raise DataError(f"{name} must be a float32 or float64 array of rank {ndim}; "
                        f"received {describe_array(x)}")
    if dtype is not None and x.dtype != dtype:
        raise DataError(f"{name} must have dtype {np.dtype(dtype)}; received {x.dtype}")
    if not x.flags.c_contiguous:
        raise DataError(f"{name} must be C-contiguous; received a strided view")


def output_array(out, shape, dtype, name):
    """``out`` if it fits (shape, dtype, contiguous), a new array if it is ``None``."""
    if out is None:
        return np.empty(shape, dtype)
    if out.shape != tuple(shape) or out.dtype != dtype or not out.flags.c_contiguous:
        raise DataError(f"{name}: out must be a C-contiguous {np.dtype(dtype)} array of shape "
                        f"{tuple(shape)}; received {describe_array(out)}")
    return out


# -- 2-D, channels first ---------------------------------------------------------------------
@njit
def _im2col2d(xp, cols, kh, kw, sh, sw, dh, dw, oh, ow):
    n_, c_ = xp.shape[0], xp.shape[1]
    p_ = oh * ow
    for n in range(n_):
        for c in range(c_):
            for i in range(kh):
                for j in range(kw):
                    crow = cols[(c * kh + i) * kw + j, n * p_:]
                    for y in range(oh):
                        dst = crow[y * ow:]
                        src = xp[n, c, y * sh + i * dh, j * dw::sw]
                        for t in range(ow):
                            dst[t] = src[t]


@njit
def _col2im2d(cols, dxp, kh, kw, sh, sw, dh, dw, oh, ow):
    n_, c_ = dxp.shape[0], dxp.shape[1]
    p_ = oh * ow
    dxp[:] = 0
    for n in range(n_):
        for c in range(c_):
            for i in range(kh):
                for j in range(kw):
                    crow = cols[(c * kh + i) * kw + j, n * p_:]
                    for y in range(oh):
                        src = crow[y * ow:]
                        dst = dxp[n, c, y * sh + i * dh, j * dw::sw]
                        for t in range(ow):
                            dst[t] += src[t]


@njit
def _im2col2d_wide(xpf, cols, kh, kw, dh, dw, pitch, m):
    n_, c_ = xpf.shape[0], xpf.shape[1]
    for n in range(n_):
        for c in range(c_):
            for i in range(kh):
                for j in range(kw):
                    dst = cols[(c * kh + i) * kw + j, n * m:]
                    src = xpf[n, c, i * dh * pitch + j * dw:]
                    for p in range(m):
                        dst[p] = src[p]


@njit
def _col2im2d_wide(cols, dxpf, kh, kw, dh, dw, pitch, m):
    n_, c_ = dxpf.shape[0], dxpf.shape[1]
    dxpf[:] = 0
    for n in range(n_):
        for c in range(c_):
            for i in range(kh):
                for j in range(kw):
                    src = cols[(c * kh + i) * kw + j, n * m:]
                    dst = dxpf[n, c, i * dh * pitch + j * dw:]
                    for p in range(m):
                        dst[p] += src[p]


@njit
def _fnp_to_nfp(y, bias, out, m, pitch, use_bias):
    n_, f_, oh, ow = out.shape
    for n in range(n_):
        for f in range(f_):
            b = bias[f] if use_bias else 0.0
            src = y[f, n * m:]
            for r in range(oh):
                s = src[r * pitch:]
                d = out[n, f, r]
                for t in range(ow):
                    d[t] = s[t] + b


@njit
def _nfp_to_fnp(g, out, db, m, pitch, use_bias):
    n_, f_, oh, ow = g.shape
    if use_bias:
        db[:] = 0
    for n in range(n_):
        for f in range(f_):
            dst = out[f, n * m:]
            acc = 0.0
            for r in range(oh):
                s = g[n, f, r]
                d = dst[r * pitch:]
                for t in range(ow):
                    d[t] = s[t]
                    acc += s[t]
                if r < oh - 1:
                    for t in range(ow, pitch):
                        d[t] = 0
            if use_bias:
                db[f] += acc


def padded_shape2d(input_shape, kernel_size, stride, padding, dilation, output_size) -> tuple:
    """Shape of the zero-bordered buffer: room for the input after ``padding`` zeros and for
    every window of the output."""
    n, c, h, w = input_shape
    sizes = []
    for ax, size in enumerate((h, w)):
        need = (output_size[ax] - 1) * stride[ax] + (kernel_size[ax] - 1) * dilation[ax] + 1
        sizes.append(max(need, padding[ax] + size))
    return (n, c, *sizes)


def pad2d(x, padding, out):
    """Copy images into the interior of ``out`` at offset ``padding``; returns ``out``.

    Only the interior is written: give a zeroed ``out`` once and reuse it, the border stays zero.
    """
    check_array("pad2d: x", x, 4)
    check_array("pad2d: out", out, 4, x.dtype)
    ph, pw = padding
    if out.shape[:2] != x.shape[:2] or out.shape[2] < ph + x.shape[2] \
            or out.shape[3] < pw + x.shape[3]:
        raise DataError(f"pad2d: out of shape {out.shape} cannot hold {x.shape} at {padding}")
    # a numpy slice copy: within ~40 us of a kernel for a batch of 64, and nothing to compile
    out[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]] = x
    return out


def crop2d(xp, padding, input_shape, out=None):
    """The interior of a padded buffer: the inverse of ``pad2d``."""
    check_array("crop2d: xp", xp, 4)
    out = output_array(out, tuple(input_shape), xp.dtype, "crop2d")
    (ph, pw), (h, w) = padding, input_shape[2:]
    out[...] = xp[:, :, ph:ph + h, pw:pw + w]
    return out


def _check_padded(name, xp, kernel_size, stride, dilation, output_size):
    for ax in (0, 1):
        need = (output_size[ax] - 1) * stride[ax] + (kernel_size[ax] - 1) * dilation[ax] + 1
        if xp.shape[2 + ax] < need:
            raise DataError(f"{name}: the padded input {xp.shape} is too small for "
                            f"{output_size} outputs of kernel {kernel_size}")


def wide_length(output_size, pitch) -> int:
    """Columns per example in the wide layout: output rows ``pitch`` apart, the last one short."""
    return (output_size[0] - 1) * pitch + output_size[1]


def im2col2d(xp, kernel_size, stride, dilation, output_size, out=None, wide=False):
    """Lower padded images ``(N, C, HP, WP)`` to columns ``(C * KH * KW, N * L)``.

    ``kernel_size``, ``stride``, ``dilation`` and ``output_size`` are ``(h, w)`` pairs. By
    default ``L = OH * OW`` and column ``n * L + y * OW + x`` is output ``(y, x)``. With
    ``wide=True`` (stride 1 only) output rows are ``WP`` apart (``L = wide_length(output_size,
    WP)``), so each row of ``cols`` is one contiguous copy per example; the ``WP - OW`` columns
    after each output row are unused.
    """
    check_array("im2col2d: xp", xp, 4)
    _check_padded("im2col2d", xp, kernel_size, stride, dilation, output_size)
    (kh, kw), (oh, ow) = kernel_size, output_size
    n, c, hp, wp = xp.shape
    if wide:
        if tuple(stride) != (1, 1):
            raise DataError(f"im2col2d: the wide layout needs stride (1, 1); received {stride}")
        m = wide_length(output_size, wp)
        cols = output_array(out, (c * kh * kw, n * m), xp.dtype, "im2col2d")
        _im2col2d_wide(xp.reshape(n, c, hp * wp), cols, kh, kw, *dilation, wp, m)
        return cols
    cols = output_array(out, (c * kh * kw, n * oh * ow), xp.dtype, "im2col2d")
    _im2col2d(xp, cols, kh, kw, *stride, *dilation, oh, ow)
    return cols


def col2im2d(cols, padded_shape, kernel_size, stride, dilation, output_size, out=None,
             wide=False):
    """Scatter-add columns (laid out as ``im2col2d`` makes them) back to a padded image buffer
    of ``padded_shape``, zeroed first."""
    check_array("col2im2d: cols", cols, 2)
    (kh, kw), (oh, ow) = kernel_size, output_size
    n, c, hp, wp = padded_shape
    m = wide_length(output_size, wp) if wide else oh * ow
    if cols.shape != (c * kh * kw, n * m):
        raise DataError(f"col2im2d: cols must have shape {(c * kh * kw, n * m)}; "
                        f"received {describe_array(cols)}")
    dxp = output_array(out, tuple(padded_shape), cols.dtype, "col2im2d")
    _check_padded("col2im2d", dxp, kernel_size, stride, dilation, output_size)
    if wide:
        if tuple(stride) != (1, 1):
            raise DataError(f"col2im2d: the wide layout needs stride (1, 1); received {stride}")
        _col2im2d_wide(cols, dxp.reshape(n, c, hp * wp), kh, kw, *dilation, wp, m)
    else:
        _col2im2d(cols, dxp, kh, kw, *stride, *dilation, oh, ow)
    return dxp


def fnp_to_nfp(y, bias, out, pitch=None):
    """Output images from the GEMM result: ``out[n, f, r, t] = y[f, n * L + r * pitch + t]
    + bias[f]``, ``L = y.shape[1] // N``; ``pitch`` is OW (default) or WP for the wide layout.
    ``bias`` may be None. Returns ``out``."""
    check_array("fnp_to_nfp: y", y, 2)
    check_array("fnp_to_nfp: out", out, 4, y.dtype)
    n, f, oh, ow = out.shape
    pitch = ow if pitch is None else pitch
    m = y.shape[1] // n
    if y.shape != (f, n * m) or m != wide_length((oh, ow), pitch):
        raise DataError(f"fnp_to_nfp: y must have shape {(f, n * wide_length((oh, ow), pitch))}"
                        f"; received {describe_array(y)}")
    use_bias = bias is not None
    _fnp_to_nfp(y, bias if use_bias else np.empty(0, y.dtype), out, m, pitch, use_bias)
    return out


def nfp_to_fnp(g, out, db=None, pitch=None):
    """The inverse move for output gradients ``(N, F, OH, OW) -> (F, N * L)``, zeros in the
    unused columns of the wide layout; ``db[f]``, if given, gets the sum over n, r, t."""
    check_array("nfp_to_fnp: g", g, 4)
    check_array("nfp_to_fnp: out", out, 2, g.dtype)
    n, f, oh, ow = g.shape
    pitch = ow if pitch is None else pitch
    m = wide_length((oh, ow), pitch)
    if out.shape != (f, n * m):
        raise DataError(f"nfp_to_fnp: out must have shape {(f, n * m)}; "
                        f"received {describe_array(out)}")
    use_bias = db is not None
    _nfp_to_fnp(g, out, db if use_bias else np.empty(0, g.dtype), m, pitch, use_bias)
    return out


# -- 2-D direct convolution, for few input channels ----------------------------------------
# With C * KH * KW small (LeNet's first layer has 1 x 5 x 5 taps) the im2col matrix is 25 times
# the input and the GEMM too thin for BLAS to pay. For stride 1, each output plane flattened
# with the padded row length WP is a sum over taps of the flattened padded input shifted by
# ``c * HP * WP + i * dh * WP + j * dw``: long contiguous multiply-adds, computing WP - OW unused
# columns per row on the way (loops over each 28-long output row ran about 2x slower). Taps go
# four at a time, so each pass over the accumulator does four multiply-adds (1.3x faster than
# one tap per pass; eight gained 7% more).
@njit
def _direct2d(xpf, offs, wf, b, out, pitch, use_bias):
    n_ = xpf.shape[0]
    f_, taps = wf.shape
    oh, ow = out.shape[2], out.shape[3]
    m = (oh - 1) * pitch + ow
    full = taps - taps % 4
    acc = np.empty(m, xpf.dtype)
    for n in range(n_):
        xn = xpf[n]
        for f in range(f_):
            bv = b[f] if use_bias else 0.0
            for p in range(m):
                acc[p] = bv
            for t in range(0, full, 4):
                w0, w1, w2, w3 = wf[f, t], wf[f, t + 1], wf[f, t + 2], wf[f, t + 3]
                x0, x1 = xn[offs[t]:], xn[offs[t + 1]:]
                x2, x3 = xn[offs[t + 2]:], xn[offs[t + 3]:]
                for p in range(m):
                    acc[p] += w0 * x0[p] + w1 * x1[p] + w2 * x2[p] + w3 * x3[p]
            for t in range(full, taps):
                w0, x0 = wf[f, t], xn[offs[t]:]
                for p in range(m):
                    acc[p] += w0 * x0[p]
            for y in range(oh):
                src = acc[y * pitch:]
                dst = out[n, f, y]
                for q in range(ow):
                    dst[q] = src[q]


@njit
def _direct2d_backward(g, xpf, offs, wf, dwn, dbn, dxpf, pitch, zero, input_grad):
    n_ = xpf.shape[0]
    f_, taps = wf.shape
    oh, ow = g.shape[2], g.shape[3]
    m = (oh - 1) * pitch + ow
    full = taps - taps % 4
    gw = np.zeros(m, xpf.dtype)  # output rows are rewritten below; the gaps stay zero
    for n in range(n_):
        xn = xpf[n]
        if input_grad:
            dxpf[n] = 0
        for f in range(f_):
            s = zero
            for y in range(oh):
                src = g[n, f, y]
                dst = gw[y * pitch:]
                for q in range(ow):
                    dst[q] = src[q]
                    s += src[q]
            dbn[n, f] = s
            for t in range(0, full, 4):
                x0, x1 = xn[offs[t]:], xn[offs[t + 1]:]
                x2, x3 = xn[offs[t + 2]:], xn[offs[t + 3]:]
                a0 = a1 = a2 = a3 = zero
                for p in range(m):
                    gv = gw[p]
                    a0 += gv * x0[p]
                    a1 += gv * x1[p]
                    a2 += gv * x2[p]
                    a3 += gv * x3[p]
                dwn[n, f, t] = a0
                dwn[n, f, t + 1] = a1
                dwn[n, f, t + 2] = a2
                dwn[n, f, t + 3] = a3
            for t in range(full, taps):
                x0 = xn[offs[t]:]
                a0 = zero
                for p in range(m):
                    a0 += gw[p] * x0[p]
                dwn[n, f, t] = a0
            if input_grad:
                for t in range(taps):
                    w0, ds = wf[f, t], dxpf[n, offs[t]:]
                    for p in range(m):
                        ds[p] += w0 * gw[p]


def _taps(xp_shape, kernel_shape, dilation) -> np.ndarray:
    """Offset of each tap ``(c, i, j)`` in an example's flattened padded input."""
    _, c, hp, wp = xp_shape
    kh, kw = kernel_shape
    cc, ii, jj = np.meshgrid(np.arange(c), np.arange(kh), np.arange(kw), indexing="ij")
    return (cc * hp * wp + ii * dilation[0] * wp + jj * dilation[1]).reshape(-1)


def conv2d_direct(xp, weight, bias, dilation, output_size, out=None):
    """Stride-1 convolution of padded images ``(N, C, HP, WP) -> (N, F, OH, OW)``.

    ``bias`` may be None.
    """
    check_array("conv2d_direct: xp", xp, 4)
    check_array("conv2d_direct: weight", weight, 4, xp.dtype)
    _check_padded("conv2d_direct", xp, weight.shape[2:], (1, 1), dilation, output_size)
    n, wp = xp.shape[0], xp.shape[3]
    f = weight.shape[0]
    out = output_array(out, (n, f, *output_size), xp.dtype, "conv2d_direct")
    use_bias = bias is not None
    _direct2d(xp.reshape(n, -1), _taps(xp.shape, weight.shape[2:], dilation),
              weight.reshape(f, -1), bias if use_bias else np.empty(0, xp.dtype), out, wp,
              use_bias)
    return out


def conv2d_direct_backward(grad, xp, weight, dilation, dweight, dbias=None, input_grad=True):
    """Gradients of ``conv2d_direct``: fills ``dweight`` (and ``dbias``); returns the gradient
    with respect to the padded input (crop it with ``crop2d``), or None if not ``input_grad``.
    """
    check_array("conv2d_direct_backward: grad", grad, 4)
    check_array("conv2d_direct_backward: xp", xp, 4, grad.dtype)
    check_array("conv2d_direct_backward: dweight", dweight, 4, grad.dtype)
    n, wp = xp.shape[0], xp.shape[3]
    f = weight.shape[0]
    # per-example partial sums, added up below: keeps float32 sums short
    dwn = np.empty((n, f, weight[0].size), xp.dtype)
    dbn = np.empty((n, f), xp.dtype)
    dxp = np.empty_like(xp) if input_grad else None
    _direct2d_backward(grad, xp.reshape(n, -1), _taps(xp.shape, weight.shape[2:], dilation),
                       weight.reshape(f, -1), dwn, dbn,
                       dxp.reshape(n, -1) if input_grad else np.empty((0, 0), xp.dtype), wp,
                       xp.dtype.type(0), input_grad)
    np.sum(dwn, axis=0, out=dweight.reshape(f, -1))
    if dbias is not None:
        np.sum(dbn, axis=0, out=dbias)
    return dxp


# -- 1-D, channels last ----------------------------------------------------------------------
@njit
def _im2col1d(x, cols, k, s, p, d, ot):
    n_, t_, f_ = x.shape
    for n in range(n_):
        for t in range(ot):
            crow = cols[n * ot + t]
            for i in range(k):
                it = t * s + i * d - p
                dst = crow[i * f_:]
                if it < 0 or it >= t_:
                    for f in range(f_):
                        dst[f] = 0
                else:
                    src = x[n, it]
                    for f in range(f_):
                        dst[f] = src[f]


@njit
def _col2im1d(cols, dx, k, s, p, d, ot):
    n_, t_, f_ = dx.shape
    dx[:] = 0
    for n in range(n_):
        for t in range(ot):
            crow = cols[n * ot + t]
            for i in range(k):
                it = t * s + i * d - p
                if it < 0 or it >= t_:
                    continue
                src = crow[i * f_:]
                dst = dx[n, it]
                for f in range(f_):
                    dst[f] += src[f]


def im2col1d(x, kernel_size, stride, padding, dilation, output_size, out=None):
    """Lower sequences ``(N, T, F)`` to rows ``(N * OT, K * F)`` (all arguments ints)."""
    check_array("im2col1d: x", x, 3)
    n, _, f = x.shape
    cols = output_array(out, (n * output_size, kernel_size * f), x.dtype, "im2col1d")
    _im2col1d(x, cols, kernel_size, stride, padding, dilation, output_size)
    return cols


def col2im1d(cols, input_shape, kernel_size, stride, padding, dilation, output_size, out=None):
    """Scatter-add rows ``(N * OT, K * F)`` back to sequences ``input_shape``."""
    check_array("col2im1d: cols", cols, 2)
    n, _, f = input_shape
    if cols.shape != (n * output_size, kernel_size * f):
        raise DataError(f"col2im1d: cols must have shape {(n * output_size, kernel_size * f)}; "
                        f"received {describe_array(cols)}")
    dx = output_array(out, tuple(input_shape), cols.dtype, "col2im1d")
    _col2im1d(cols, dx, kernel_size, stride, padding, dilation, output_size)
    return dx
