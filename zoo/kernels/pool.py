"""Pooling kernels: max (with argmax indices for backward), average, global average and max.

Images are ``(N, C, H, W)`` (channels first) and pool over H and W; sequences are
``(N, T, F)`` (channels last) and pool over T. Padding positions never win a max and count as
zeros in an average (PyTorch's ``count_include_pad=True``). Max pooling keeps the index of each
window's maximum (``iy * W + ix`` for images, ``t`` for sequences) so the backward pass is a
scatter (Ranzato et al., "Unsupervised Learning of Invariant Feature Hierarchies", 2007 for
max pooling in convolutional networks). A NaN in a window propagates to its output.

The common 2x2, stride-2, unpadded max pool has its own pair, ``max_pool2d_2x2`` and
``max_pool2d_2x2_backward``: it keeps each argmax as an int8 code (``2 * row + column`` in
the window) and is vectorised (about 2.5x faster than a scalar scan on LeNet-5's first pool);
``max_pool2d`` uses it for that case and turns the codes into the usual indices.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import DataError, describe_array
from zoo.kernels._jit import njit
from zoo.kernels.conv import check_array, output_array


# -- 2-D -------------------------------------------------------------------------------------
def _check_backward(name, grad, indices, rank):
    """The gradient and the forward pass's argmax indices must fit each other."""
    check_array(f"{name}: grad", grad, rank)
    if indices.shape != grad.shape or indices.dtype != np.int32:
        raise DataError(f"{name}: indices must be int32 of shape {grad.shape}; "
                        f"received {describe_array(indices)}")


@njit
def _max2d(x, out, idx, kh, kw, sh, sw, ph, pw):
    n_, c_, h_, w_ = x.shape
    oh, ow = out.shape[2], out.shape[3]
    for n in range(n_):
        for c in range(c_):
            for y in range(oh):
                y0 = y * sh - ph
                for xo in range(ow):
                    x0 = xo * sw - pw
                    best = x[n, c, 0, 0]
                    at = -1
                    for i in range(kh):
                        iy = y0 + i
                        if iy < 0 or iy >= h_:
                            continue
                        for j in range(kw):
                            ix = x0 + j
                            if ix < 0 or ix >= w_:
                                continue
                            v = x[n, c, iy, ix]
                            if at < 0 or v > best or np.isnan(v):
                                best = v
                                at = iy * w_ + ix
                    out[n, c, y, xo] = best
                    idx[n, c, y, xo] = at


# The common 2x2, stride-2, unpadded window, in two passes that vectorise: a loop over each
# output row's few windows (14 in LeNet-5) runs scalar, so each image is done in a vertical
# pass (each column of a row pair, unit stride, into a small scratch that stays in cache) and a
# horizontal pass over all of that image's windows at once (one long loop). The argmax is kept
# as a code, 2 * row + column within the window (int8), a quarter of an int32 index's memory.
# Compares and selects only, so these kernels run without fast-math: the winner is always one
# of the inputs, bit for bit.
@njit(fastmath=False)
def _max2x2_columns(x, v, below):
    """``v[c * OH + y, k]``: the larger of ``x[c, 2y, k]`` and ``x[c, 2y + 1, k]``.

    ``below`` says the bottom one won: it is larger or NaN (a later NaN wins, as in ``_max2d``).
    """
    c_ = x.shape[0]
    oh = x.shape[1] // 2
    w2 = v.shape[1]
    for c in range(c_):
        for y in range(oh):
            top, bottom = x[c, 2 * y], x[c, 2 * y + 1]
            vr, br = v[c * oh + y], below[c * oh + y]
            for k in range(w2):
                a, d = top[k], bottom[k]
                b = (d > a) | (d != d)
                vr[k] = d if b else a
                br[k] = b


@njit(fastmath=False)
def _max2x2_pairs(v, below, out, code):
    """Each window's winner from its left and right column winners, in ``_max2d``'s order.

    ``_max2d`` scans a, b, d, e (top left, top right, bottom left, bottom right) and keeps the
    first maximum, or the last NaN. Between the left column's winner L (a or d) and the right
    one's R (b or e), R wins when it is larger, or the only NaN; on a tie (or two NaNs) the
    scan order decides, and only the pair (L = d, R = b) differs from "R wins on NaNs, L on
    ties": b comes before d, so b wins the tie and d wins as the later NaN.
    """
    for q in range(out.size):
        left, right = v[2 * q], v[2 * q + 1]
        lb, rb = below[2 * q], below[2 * q + 1]
        d_vs_b = lb & ~rb
        ln, rn = left != left, right != right
        r_wins = (right > left) | (rn & ~ln) | ((right == left) & d_vs_b) | (rn & ln & ~d_vs_b)
        out[q] = right if r_wins else left
        code[q] = np.int8(2) * np.int8(rb if r_wins else lb) + np.int8(r_wins)


@njit(fastmath=False)
def _max2x2(x, out, code):
    # x (N, C, H, W); out, code (N, C, H // 2, W // 2)
    n_, c_ = x.shape[0], x.shape[1]
    oh, ow = out.shape[2], out.shape[3]
    size = c_ * oh * ow
    v = np.empty((c_ * oh, 2 * ow), x.dtype)
    below = np.empty((c_ * oh, 2 * ow), np.bool_)
    for n in range(n_):
        _max2x2_columns(x[n], v, below)
        _max2x2_pairs(v.reshape(2 * size), below.reshape(2 * size), out[n].reshape(size),
                      code[n].reshape(size))


@njit
def _codes_to_indices(code, idx, w_):
    # code (P, OH, OW) -> idx: the flat position iy * W + ix in each input plane
    p_, oh, ow = code.shape
    for p in range(p_):
        for y in range(oh):
            for j in range(ow):
                c = code[p, y, j]
                idx[p, y, j] = (2 * y + ((c >> 1) & 1)) * w_ + 2 * j + (c & 1)


@njit(fastmath=False)
def _max2x2_backward(g, code, dx):
    # g, code (N, C, OH, OW); dx (N, C, H, W). Windows do not overlap, so each gradient is
    # stored over a zeroed image, as 0 + g like the general kernel's sum into zeros (-0 gives
    # +0; fast-math would drop the addition). Only the code's two low bits are read: any int8
    # stays inside its window.
    n_, c_, oh, ow = g.shape
    zero = dx.dtype.type(0)
    for n in range(n_):
        dx[n] = 0
        for c in range(c_):
            plane = dx[n, c]
            for y in range(oh):
                for j in range(ow):
                    k = code[n, c, y, j]
                    plane[2 * y + ((k >> 1) & 1), 2 * j + (k & 1)] = zero + g[n, c, y, j]


@njit
def _max2d_backward(g, idx, dx):
    # dx is (N, C, H * W): the indices are flat positions in each plane
    n_, c_, oh, ow = g.shape
    for n in range(n_):
        dx[n] = 0
        for c in range(c_):
            plane = dx[n, c]
            for y in range(oh):
                for xo in range(ow):
                    plane[idx[n, c, y, xo]] += g[n, c, y, xo]


@njit
def _avg2d(x, out, kh, kw, sh, sw, ph, pw):
    n_, c_, h_, w_ = x.shape
    oh, ow = out.shape[2], out.shape[3]
    scale = 1.0 / (kh * kw)
    for n in range(n_):
        for c in range(c_):
            for y in range(oh):
                y0 = y * sh - ph
                for xo in range(ow):
                    x0 = xo * sw - pw
                    acc = 0.0
                    for i in range(max(0, -y0), min(kh, h_ - y0)):
                        for j in range(max(0, -x0), min(kw, w_ - x0)):
                            acc += x[n, c, y0 + i, x0 + j]
                    out[n, c, y, xo] = acc * scale


@njit
def _avg2d_backward(g, dx, kh, kw, sh, sw, ph, pw):
    n_, c_, h_, w_ = dx.shape
    oh, ow = g.shape[2], g.shape[3]
    scale = 1.0 / (kh * kw)
    for n in range(n_):
        dx[n] = 0
        for c in range(c_):
            for y in range(oh):
                y0 = y * sh - ph
                for xo in range(ow):
                    x0 = xo * sw - pw
                    v = g[n, c, y, xo] * scale
                    for i in range(max(0, -y0), min(kh, h_ - y0)):
                        for j in range(max(0, -x0), min(kw, w_ - x0)):
                            dx[n, c, y0 + i, x0 + j] += v


def max_pool2d(x, pool_size, stride, padding, output_size, out=None, indices=None):
    """Max-pool images ``(N, C, H, W)``; returns ``(out, indices)`` (indices are int32).

    ``pool_size``, ``stride``, ``padding`` and ``output_size`` are ``(h, w)`` pairs; padding
    must be less than the pool size so every window holds at least one input element.
    """
    check_array("max_pool2d: x", x, 4)
    n, c = x.shape[:2]
    shape = (n, c, *output_size)
    out = output_array(out, shape, x.dtype, "max_pool2d")
    indices = output_array(indices, shape, np.int32, "max_pool2d indices")
    if tuple(pool_size) == (2, 2) and tuple(stride) == (2, 2) and tuple(padding) == (0, 0) \
            and tuple(output_size) == (x.shape[2] // 2, x.shape[3] // 2):
        _, codes = max_pool2d_2x2(x, out)
        _codes_to_indices(codes.reshape(n * c, *output_size),
                          indices.reshape(n * c, *output_size), x.shape[3])
    else:
        _max2d(x, out, indices, *pool_size, *stride, *padding)
    return out, indices


def max_pool2d_backward(grad, indices, input_shape, out=None):
    """Route ``grad`` ``(N, C, OH, OW)`` to the argmax positions of the forward pass."""
    _check_backward("max_pool2d_backward", grad, indices, 4)
    dx = output_array(out, tuple(input_shape), grad.dtype, "max_pool2d_backward")
    _max2d_backward(grad, indices, dx.reshape(*dx.shape[:2], -1))
    return dx


def max_pool2d_2x2(x, out=None, codes=None):
    """Max-pool images ``(N, C, H, W)`` over 2x2 windows, stride 2, no padding.

    Returns ``(out, codes)``, both ``(N, C, H // 2, W // 2)``: ``codes`` (int8) is the
    position of each window's maximum, ``2 * row + column`` in the window (0 to 3), under the
    same rule as ``max_pool2d``'s indices (the first maximum; a NaN wins, the last one if
    several). An odd last row or column is left out, as in ``max_pool2d``.
    """
    check_array("max_pool2d_2x2: x", x, 4)
    n, c, h, w = x.shape
    shape = (n, c, h // 2, w // 2)
    out = output_array(out, shape, x.dtype, "max_pool2d_2x2")
    codes = output_array(codes, shape, np.int8, "max_pool2d_2x2 codes")
    _max2x2(x, out, codes)
    return out, codes


def max_pool2d_2x2_backward(grad, codes, input_shape, out=None):
    """Route ``grad`` ``(N, C, OH, OW)`` to the maxima ``max_pool2d_2x2`` coded; zeros elsewhere."""
    check_array("max_pool2d_2x2_backward: grad", grad, 4)
    if codes.shape != grad.shape or codes.dtype != np.int8:
        raise DataError(f"max_pool2d_2x2_backward: codes must be int8 of shape {grad.shape}; "
                        f"received {describe_array(codes)}")
    if len(input_shape) != 4:
        raise DataError(f"max_pool2d_2x2_backward: input_shape must be (N, C, H, W); "
                        f"received {tuple(input_shape)}")
    n, c, h, w = input_shape
    if grad.shape != (n, c, h // 2, w // 2):
        raise DataError(f"max_pool2d_2x2_backward: grad must have shape "
                        f"{(n, c, h // 2, w // 2)} for inputs {tuple(input_shape)}; "
                        f"received {describe_array(grad)}")
    dx = output_array(out, tuple(input_shape), grad.dtype, "max_pool2d_2x2_backward")
    _max2x2_backward(grad, codes, dx)
    return dx


def avg_pool2d(x, pool_size, stride, padding, output_size, out=None):
    """Average-pool images ``(N, C, H, W)`` (padding counts as zeros)."""
    check_array("avg_pool2d: x", x, 4)
    out = output_array(out, (*x.shape[:2], *output_size), x.dtype, "avg_pool2d")
    _avg2d(x, out, *pool_size, *stride, *padding)
    return out


def avg_pool2d_backward(grad, input_shape, pool_size, stride, padding, out=None):
    """Spread ``grad`` evenly over each window of the forward pass."""
    check_array("avg_pool2d_backward: grad", grad, 4)
    dx = output_array(out, tuple(input_shape), grad.dtype, "avg_pool2d_backward")
    _avg2d_backward(grad, dx, *pool_size, *stride, *padding)
    return dx


# -- 1-D, channels last ----------------------------------------------------------------------
@njit
def _max1d(x, out, idx, k, s, p):
    n_, t_, f_ = x.shape
    ot = out.shape[1]
    for n in range(n_):
        for t in range(ot):
            t0 = t * s - p
            lo = max(0, -t0)
            hi = min(k, t_ - t0)
            for f in range(f_):
                out[n, t, f] = x[n, t0 + lo, f]
                idx[n, t, f] = t0 + lo
            for i in range(lo + 1, hi):
                for f in range(f_):
                    v = x[n, t0 + i, f]
                    best = out[n, t, f]
                    if (v > best or np.isnan(v)) and not np.isnan(best):
                        out[n, t, f] = v
                        idx[n, t, f] = t0 + i


@njit
def _max1d_backward(g, idx, dx):
    n_, ot, f_ = g.shape
    for n in range(n_):
        dx[n] = 0
        for t in range(ot):
            for f in range(f_):
                dx[n, idx[n, t, f], f] += g[n, t, f]


@njit
def _avg1d(x, out, k, s, p):
    n_, t_, f_ = x.shape
    ot = out.shape[1]
    scale = 1.0 / k
    for n in range(n_):
        for t in range(ot):
            t0 = t * s - p
            out[n, t] = 0
            for i in range(max(0, -t0), min(k, t_ - t0)):
                for f in range(f_):
                    out[n, t, f] += x[n, t0 + i, f]
            for f in range(f_):
                out[n, t, f] *= scale


@njit
def _avg1d_backward(g, dx, k, s, p):
    n_, t_, f_ = dx.shape
    ot = g.shape[1]
    scale = 1.0 / k
    for n in range(n_):
        dx[n] = 0
        for t in range(ot):
            t0 = t * s - p
            for i in range(max(0, -t0), min(k, t_ - t0)):
                for f in range(f_):
                    dx[n, t0 + i, f] += g[n, t, f] * scale


def max_pool1d(x, pool_size, stride, padding, output_size, out=None, indices=None):
    """Max-pool sequences ``(N, T, F)`` over T; returns ``(out, indices)`` (int32 steps)."""
    check_array("max_pool1d: x", x, 3)
    shape = (x.shape[0], output_size, x.shape[2])
    out = output_array(out, shape, x.dtype, "max_pool1d")
    indices = output_array(indices, shape, np.int32, "max_pool1d indices")
    _max1d(x, out, indices, pool_size, stride, padding)
    return out, indices


def max_pool1d_backward(grad, indices, input_shape, out=None):
    _check_backward("max_pool1d_backward", grad, indices, 3)
    dx = output_array(out, tuple(input_shape), grad.dtype, "max_pool1d_backward")
    _max1d_backward(grad, indices, dx)
    return dx


def avg_pool1d(x, pool_size, stride, padding, output_size, out=None):
    """Average-pool sequences ``(N, T, F)`` over T (padding counts as zeros)."""
    check_array("avg_pool1d: x", x, 3)
    out = output_array(out, (x.shape[0], output_size, x.shape[2]), x.dtype, "avg_pool1d")
    _avg1d(x, out, pool_size, stride, padding)
    return out


def avg_pool1d_backward(grad, input_shape, pool_size, stride, padding, out=None):
    check_array("avg_pool1d_backward: grad", grad, 3)
    dx = output_array(out, tuple(input_shape), grad.dtype, "avg_pool1d_backward")
    _avg1d_backward(grad, dx, pool_size, stride, padding)
    return dx


# -- global average --------------------------------------------------------------------------
@njit
def _global_avg_cf(x, out):
    n_, c_, s_ = x.shape
    for n in range(n_):
        for c in range(c_):
            acc = 0.0
            for i in range(s_):
                acc += x[n, c, i]
            out[n, c] = acc / s_


@njit
def _global_avg_cl(x, out):
    n_, t_, f_ = x.shape
    for n in range(n_):
        out[n] = 0
        for t in range(t_):
            for f in range(f_):
                out[n, f] += x[n, t, f]
        for f in range(f_):
            out[n, f] /= t_


def global_avg_pool2d(x, out=None):
    """Mean over H and W: ``(N, C, H, W) -> (N, C)``."""
    check_array("global_avg_pool2d: x", x, 4)
    out = output_array(out, x.shape[:2], x.dtype, "global_avg_pool2d")
    _global_avg_cf(x.reshape(x.shape[0], x.shape[1], -1), out)
    return out


def global_avg_pool2d_backward(grad, input_shape, out=None):
    check_array("global_avg_pool2d_backward: grad", grad, 2)
    dx = output_array(out, tuple(input_shape), grad.dtype, "global_avg_pool2d_backward")
    np.multiply(grad[:, :, None, None], 1.0 / (input_shape[2] * input_shape[3]), out=dx)
    return dx


def global_avg_pool1d(x, out=None):
    """Mean over T: ``(N, T, F) -> (N, F)``."""
    check_array("global_avg_pool1d: x", x, 3)
    out = output_array(out, (x.shape[0], x.shape[2]), x.dtype, "global_avg_pool1d")
    _global_avg_cl(x, out)
    return out


def global_avg_pool1d_backward(grad, input_shape, out=None):
    check_array("global_avg_pool1d_backward: grad", grad, 2)
    dx = output_array(out, tuple(input_shape), grad.dtype, "global_avg_pool1d_backward")
    np.multiply(grad[:, None, :], 1.0 / input_shape[1], out=dx)
    return dx


# -- global max ------------------------------------------------------------------------------
@njit
def _global_max_cf(x, out, idx):
    n_, c_, s_ = x.shape
    for n in range(n_):
        for c in range(c_):
            best, at = x[n, c, 0], 0
            for i in range(1, s_):
                v = x[n, c, i]
                if v > best or (v != v and best == best):  # first maximum; a NaN wins
                    best, at = v, i
            out[n, c] = best
            idx[n, c] = at


@njit
def _global_max_cl(x, out, idx):
    n_, t_, f_ = x.shape
    for n in range(n_):
        for f in range(f_):
            out[n, f] = x[n, 0, f]
            idx[n, f] = 0
        for t in range(1, t_):
            for f in range(f_):
                v, best = x[n, t, f], out[n, f]
                if v > best or (v != v and best == best):
                    out[n, f] = v
                    idx[n, f] = t


@njit
def _global_max_cf_backward(g, idx, dx):
    dx[:] = 0
    for n in range(g.shape[0]):
        for c in range(g.shape[1]):
            dx[n, c, idx[n, c]] = g[n, c]


@njit
def _global_max_cl_backward(g, idx, dx):
    dx[:] = 0
    for n in range(g.shape[0]):
        for f in range(g.shape[1]):
            dx[n, idx[n, f], f] = g[n, f]


def global_max_pool2d(x, out=None, indices=None):
    """Max over H and W: ``(N, C, H, W) -> (N, C)``, and the argmax (``iy * W + ix``, int32)."""
    check_array("global_max_pool2d: x", x, 4)
    out = output_array(out, x.shape[:2], x.dtype, "global_max_pool2d")
    indices = np.empty(x.shape[:2], np.int32) if indices is None else indices
    _global_max_cf(x.reshape(x.shape[0], x.shape[1], -1), out, indices)
    return out, indices


def global_max_pool2d_backward(grad, indices, input_shape, out=None):
    """The gradient routed to each channel's maximum; zeros elsewhere."""
    _check_backward("global_max_pool2d_backward", grad, indices, 2)
    dx = output_array(out, tuple(input_shape), grad.dtype, "global_max_pool2d_backward")
    _global_max_cf_backward(grad, indices, dx.reshape(dx.shape[0], dx.shape[1], -1))
    return dx


def global_max_pool1d(x, out=None, indices=None):
    """Max over T: ``(N, T, F) -> (N, F)``, and the argmax step (int32)."""
    check_array("global_max_pool1d: x", x, 3)
    out = output_array(out, (x.shape[0], x.shape[2]), x.dtype, "global_max_pool1d")
    indices = np.empty(out.shape, np.int32) if indices is None else indices
    _global_max_cl(x, out, indices)
    return out, indices


def global_max_pool1d_backward(grad, indices, input_shape, out=None):
    _check_backward("global_max_pool1d_backward", grad, indices, 2)
    dx = output_array(out, tuple(input_shape), grad.dtype, "global_max_pool1d_backward")
    _global_max_cl_backward(grad, indices, dx)
    return dx
