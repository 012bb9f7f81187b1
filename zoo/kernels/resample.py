"""Nearest-neighbour upsampling by integer factors, and its gradient.

Sequences ``(N, T, F)`` (channels last) repeat each time step ``factor`` times; images
``(N, C, H, W)`` (channels first) repeat each pixel into a ``sh x sw`` block. The gradient of a
repeat is the sum over the block. Upsampling followed by a convolution is the decoder step that
avoids the checkerboard artefacts of transposed convolutions (Odena, Dumoulin and Olah,
"Deconvolution and Checkerboard Artifacts", Distill, 2016).
"""

from __future__ import annotations

from zoo.errors import DataError
from zoo.kernels._jit import njit
from zoo.kernels.conv import check_array, output_array


# -- 1-D, channels last ----------------------------------------------------------------------
@njit
def _up1d(x, out, s):
    n_, t_, f_ = x.shape
    for n in range(n_):
        for t in range(t_):
            src = x[n, t]
            for i in range(s):
                dst = out[n, t * s + i]
                for f in range(f_):
                    dst[f] = src[f]


@njit
def _up1d_backward(g, dx, s):
    n_, t_, f_ = dx.shape
    for n in range(n_):
        for t in range(t_):
            dst = dx[n, t]
            src = g[n, t * s]
            for f in range(f_):
                dst[f] = src[f]
            for i in range(1, s):
                src = g[n, t * s + i]
                for f in range(f_):
                    dst[f] += src[f]


# -- 2-D, channels first ---------------------------------------------------------------------
@njit
def _up2d(x, out, sh, sw):
    n_, c_, h_, w_ = x.shape
    for n in range(n_):
        for c in range(c_):
            for y in range(h_):
                src = x[n, c, y]
                row = out[n, c, y * sh]
                for t in range(w_):
                    v = src[t]
                    d = row[t * sw:]
                    for j in range(sw):
                        d[j] = v
                for i in range(1, sh):
                    dst = out[n, c, y * sh + i]
                    for t in range(w_ * sw):
                        dst[t] = row[t]


@njit
def _up2d_backward(g, dx, sh, sw):
    n_, c_, h_, w_ = dx.shape
    for n in range(n_):
        for c in range(c_):
            for y in range(h_):
                dst = dx[n, c, y]
                for t in range(w_):
                    dst[t] = 0
                for i in range(sh):
                    src = g[n, c, y * sh + i]
                    for t in range(w_):
                        s = src[t * sw:]
                        acc = dst[t]
                        for j in range(sw):
                            acc += s[j]
                        dst[t] = acc


# -- public wrappers ---------------------------------------------------------------------------
def _factor(name: str, factor) -> None:
    if not all(isinstance(f, int) and f >= 1 for f in factor):
        raise DataError(f"{name}: factors must be positive integers; received {factor!r}")


def upsample1d(x, factor: int, out=None):
    """``(N, T, F)`` -> ``(N, T * factor, F)``, each step repeated ``factor`` times."""
    check_array("upsample1d: x", x, 3)
    _factor("upsample1d", (factor,))
    n, t, f = x.shape
    out = output_array(out, (n, t * factor, f), x.dtype, "upsample1d")
    _up1d(x, out, factor)
    return out


def upsample1d_backward(grad_out, factor: int, out=None):
    """The gradient of ``upsample1d``: ``(N, T * factor, F)`` -> ``(N, T, F)`` block sums."""
    check_array("upsample1d_backward: grad_out", grad_out, 3)
    _factor("upsample1d_backward", (factor,))
    n, tt, f = grad_out.shape
    if tt % factor:
        raise DataError(f"upsample1d_backward: grad_out has {tt} steps, not a multiple of "
                        f"factor {factor}")
    out = output_array(out, (n, tt // factor, f), grad_out.dtype, "upsample1d_backward")
    _up1d_backward(grad_out, out, factor)
    return out


def upsample2d(x, factor: tuple, out=None):
    """``(N, C, H, W)`` -> ``(N, C, H * sh, W * sw)``, each pixel an ``sh x sw`` block."""
    check_array("upsample2d: x", x, 4)
    _factor("upsample2d", tuple(factor))
    sh, sw = factor
    n, c, h, w = x.shape
    out = output_array(out, (n, c, h * sh, w * sw), x.dtype, "upsample2d")
    _up2d(x, out, sh, sw)
    return out


def upsample2d_backward(grad_out, factor: tuple, out=None):
    """The gradient of ``upsample2d``: block sums, ``(N, C, H*sh, W*sw)`` -> ``(N, C, H, W)``."""
    check_array("upsample2d_backward: grad_out", grad_out, 4)
    _factor("upsample2d_backward", tuple(factor))
    sh, sw = factor
    n, c, hh, ww = grad_out.shape
    if hh % sh or ww % sw:
        raise DataError(f"upsample2d_backward: grad_out of spatial size {(hh, ww)} is not a "
                        f"multiple of factor {(sh, sw)}")
    out = output_array(out, (n, c, hh // sh, ww // sw), grad_out.dtype, "upsample2d_backward")
    _up2d_backward(grad_out, out, sh, sw)
    return out
