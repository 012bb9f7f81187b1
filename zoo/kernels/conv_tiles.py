"""Float32 stride-1 Conv2D as implicit products on zoo's register tile: no im2col copy.

``zoo.kernels.sgemm``'s tile computes ``ROWS x PANEL`` outputs, each one chain of
multiply-adds in ``k`` order, reading ``a``'s rows through a table of offsets and, in its
``tile_table`` form, ``b``'s row ``k`` at ``b + table[k]``. A stride-1 convolution is such a
product with nothing copied, in the "wide" layout of ``zoo.kernels.conv``: an image's padded
input ``(C, HP, WP)`` flattened, output position ``(y, x)`` at column ``q = y * WP + x``, and
tap ``t = (c, i, j)`` at offset ``offs[t] = c * HP * WP + i * dh * WP + j * dw``, so that row
``t`` of the im2col matrix is the flattened image shifted by ``offs[t]``. Columns
``x >= OW`` of each output row (``WP - OW`` of them) are computed and thrown away.

Per image ``n`` (``F`` filters, ``T = C * KH * KW`` taps, ``m = (OH - 1) * WP + OW``):

- **forward** ``Y_n (F x m) = W (F x T) @ X_n (T x m)``, ``X_n[t, q] = xp_n[offs[t] + q]``:
  ``tile_table`` with ``W``'s rows as ``a`` and ``offs`` as ``b``'s table, into a small
  scratch that is copied to ``(F, OH, OW)`` with the bias added.
- **input gradient** the full correlation of the gradient with the flipped weights, the
  same product again: ``dX_n (C x m') = Wf (C x F*KH*KW) @ G_n``, with ``G_n``'s rows
  shifted windows of the gradient in a zero border of ``(KH - 1) * dh`` rows and
  ``(KW - 1) * dw`` columns (pitch ``GW``), ``Wf[c, (f, i, j)] = W[f, c, KH-1-i, KW-1-j]``;
  only the input's own positions (not its padding) are computed, and written straight to
  ``dx``. Measured against the alternative (``W.T @ G`` then col2im's scatter) it needs no
  scatter and no second kernel.
- **weight gradient** ``dW.T (T x F) = sum_n X_n (T x m) @ Gt_n (m x F)``: ``a``'s rows are
  the taps read in place (``a_rows[r] = offs[t]``), ``Gt_n`` is the gradient transposed to
  positions x filters with zeros in the thrown-away columns, and the chain of every
  ``dW[f, t]`` runs over images in order (``accumulate`` from the second image on). Its tile
  is ``DW_ROWS x LANES`` (16 taps x 16 filters with AVX-512): LeNet-sized layers have 6 or
  16 filters, and a 32-wide panel would compute half of it for nothing.

**The same bits on any thread count.** Every output element is one chain in a fixed order
(sgemm's contract), and zoo's threads (``zoo.kernels.threads.run_call``) only share out
blocks whose outputs are disjoint: images for the forward and the input gradient, groups of
``DW_ROWS`` taps for the weight gradient (whose chain runs over all images), so one thread
and any number compute the same calls. The bias gradient is summed per image in float64 and
over images in order, by one thread.

Reads run past the last image by up to a panel (the thrown-away columns of its last panel
and rows of its last output row), so every source buffer has a zeroed tail of ``reach``
elements (``forward_reach``, ``GradientLayout``).
"""

from __future__ import annotations

import numpy as np
from numba import carray, cfunc, types

from zoo.errors import DataError
from zoo.kernels import atomics, sgemm, threads, workers
from zoo.kernels._jit import njit
from zoo.kernels.conv import check_array

ROWS, PANEL, LANES = sgemm.ROWS, sgemm.PANEL, sgemm.LANES
# The weight gradient's tile: as many accumulator registers as sgemm's (16 taps x 16
# filters with AVX-512, 4 x 16 elsewhere), one vector of filters wide.
DW_ROWS = ROWS * (PANEL // LANES)
_dw_tile = sgemm._make_tile(DW_ROWS, 1)  # noqa: SLF001  (sgemm's own tile, another shape)
# At most this many blocks per job (the images of the forward; images and tap groups of the
# backward), chosen from the sizes alone: whatever the cut, every element's chain is the same.
IMAGE_BLOCKS = 8
TAP_BLOCKS = 6


def _ceil(a: int, b: int) -> int:
    return -(-a // b) * b


def wide_length(output_size, pitch) -> int:
    """Columns an image's output takes in the wide layout: rows ``pitch`` apart."""
    return (output_size[0] - 1) * pitch + output_size[1]


def tap_offsets(channels, pitch_rows, pitch, kernel_size, dilation) -> np.ndarray:
    """``offs[(c, i, j)] = c * rows * pitch + i * dh * pitch + j * dw`` (int64)."""
    kh, kw = kernel_size
    cc, ii, jj = np.meshgrid(np.arange(channels), np.arange(kh), np.arange(kw), indexing="ij")
    return (cc * pitch_rows * pitch + ii * dilation[0] * pitch
            + jj * dilation[1]).reshape(-1).astype(np.int64)


def forward_reach(padded_shape, kernel_size, dilation, output_size) -> int:
    """Elements the forward reads past the end of ``N`` padded images (a zeroed tail)."""
    _, c, hp, wp = padded_shape
    m = wide_length(output_size, wp)
    last = tap_offsets(c, hp, wp, kernel_size, dilation)[-1] + _ceil(m, PANEL)
    return max(0, int(last) - c * hp * wp)


class GradientLayout:
    """The shapes of the backward's two views of the output gradient (a plain record).

    ``padded``: ``(N, F, GH, GW)``, the gradient at rows ``(KH - 1) * dh`` and columns
    ``(KW - 1) * dw`` of a zero border big enough for every input position; ``flat``: its
    length with the zeroed tail the input gradient reads. ``transposed``: ``(N, m, FP)``,
    the gradient as positions x filters in the forward's wide layout, filters padded to a
    multiple of ``LANES``, zeros in the thrown-away columns.
    """

    def __init__(self, input_shape, filters, kernel_size, dilation, pads, output_size,
                 padded_width):
        n, c, h, w = input_shape
        (kh, kw), (dh, dw), (ph, pw) = kernel_size, dilation, pads
        oh, ow = output_size
        self.edge = ((kh - 1) * dh, (kw - 1) * dw)
        gh = max(self.edge[0] + oh, h + ph + self.edge[0])
        gw = max(self.edge[1] + ow, w + pw + self.edge[1])
        self.padded = (n, filters, gh, gw)
        self.base = ph * gw + pw  # where input position (0, 0) reads from
        self.offsets = tap_offsets(filters, gh, gw, kernel_size, dilation)
        m_in = wide_length((h, w), gw)
        reach = max(0, self.base + int(self.offsets[-1]) + _ceil(m_in, PANEL) - filters * gh * gw)
        self.flat = n * filters * gh * gw + reach
        self.transposed = (n, wide_length(output_size, padded_width), _ceil(filters, LANES))


# -- kernels ---------------------------------------------------------------------------------
@njit
def _correlate(src, stride, base, offs, w, bias, use_bias, pitch, out, lo, hi):
    """``out[n, r, y, x] = sum_t w[r, t] * src[n * stride + base + offs[t] + y * pitch + x]``
    (+ ``bias[r]``) for images ``lo:hi``."""
    rows_, taps = w.shape
    oh, ow = out.shape[2], out.shape[3]
    m = (oh - 1) * pitch + ow
    mp = (m + PANEL - 1) // PANEL * PANEL
    y = np.empty((rows_, mp), np.float32)
    table = np.empty(ROWS, np.int64)
    w_at, y_at, offs_at = w.ctypes.data, y.ctypes.data, offs.ctypes.data
    for n in range(lo, hi):
        b_at = src.ctypes.data + 4 * (n * stride + base)
        for r0 in range(0, rows_, ROWS):
            count = min(ROWS, rows_ - r0)
            sgemm.fill_rows(table, r0, count, taps)
            for j0 in range(0, m, PANEL):
                sgemm.tile_table(w_at, np.int64(table.ctypes.data), 1, b_at + 4 * j0, offs_at,
                                 taps, y_at + 4 * (r0 * mp + j0), mp, count, False)
        for r in range(rows_):
            add = bias[r] if use_bias else np.float32(0)
            for yy in range(oh):
                s = y[r, yy * pitch:]
                d = out[n, r, yy]
                for x in range(ow):
                    d[x] = s[x] + add


@njit
def _weight_grad(src, stride, offs, gt, dwt, lo, hi):
    """Rows ``lo * DW_ROWS`` on of ``dwt (T, FP) = sum_n X_n @ gt[n]``, images in order."""
    n_, m, fp = gt.shape
    taps = dwt.shape[0]
    table = np.empty(DW_ROWS, np.int64)
    table_at = np.int64(table.ctypes.data)
    for t0 in range(lo * DW_ROWS, min(taps, hi * DW_ROWS), DW_ROWS):
        count = min(DW_ROWS, taps - t0)
        for r in range(DW_ROWS):
            table[r] = offs[t0 + min(r, count - 1)]
        for f0 in range(0, fp, LANES):
            c_at = dwt.ctypes.data + 4 * (t0 * fp + f0)
            for n in range(n_):
                _dw_tile(src.ctypes.data + 4 * n * stride, table_at, 1,
                         gt.ctypes.data + 4 * (n * m * fp + f0), fp, m, c_at, fp, count, n > 0)


@njit
def _gradient_views(g, gp, edge_h, edge_w, gt, pitch, db, use_bias):
    """``g (N, F, OH, OW)`` into the interiors of ``gp`` and ``gt`` (their zeros stay), and
    the bias gradient: per image in float64, over images in order."""
    n_, f_, oh, ow = g.shape
    if use_bias:
        db[:] = 0
    for n in range(n_):
        for f in range(f_):
            acc = 0.0
            for y in range(oh):
                s = g[n, f, y]
                d = gp[n, f, edge_h + y, edge_w:]
                for x in range(ow):
                    d[x] = s[x]
                    acc += s[x]
            if use_bias:
                db[f] += acc
        for y in range(oh):  # positions outer, filters inner: gt's rows are written whole
            for x in range(ow):
                d = gt[n, y * pitch + x]
                for f in range(f_):
                    d[f] = g[n, f, y, x]


@njit
def _flip(w, out):
    """``out[c, (f, i, j)] = w[f, c, KH-1-i, KW-1-j]``: the input gradient's weights."""
    f_, c_, kh, kw = w.shape
    for c in range(c_):
        for f in range(f_):
            for i in range(kh):
                for j in range(kw):
                    out[c, (f * kh + i) * kw + j] = w[f, c, kh - 1 - i, kw - 1 - j]


# -- jobs on zoo's threads: a plan (int64 words) per job, a cfunc per block ------------------
# correlate (forward, input gradient): src, src size, stride, base, offs, taps, w, rows,
# bias, use_bias, pitch, out, N, OH, OW (15 words); weight gradient: src, src size, stride,
# offs, taps, gt, N, m, FP, dwt (10 words). A backward plan is both, then whether the input
# gradient runs and N: its blocks are images 0:N, then groups of taps from N on.
_DW, _BACK = 15, 25


@njit
def _f32(address, shape):
    return carray(atomics.pointer(address, np.float32(0)), shape)


@njit
def _i64(address, size):
    return carray(atomics.pointer(address, np.int64(0)), size)


@njit
def _correlate_plan(p, lo, hi):
    src = _f32(p[0], p[1])
    offs = _i64(p[4], p[5])
    w = _f32(p[6], (p[7], p[5]))
    bias = _f32(p[8], p[7])
    out = _f32(p[11], (p[12], p[7], p[13], p[14]))
    _correlate(src, p[2], p[3], offs, w, bias, p[9] != 0, p[10], out, lo, hi)


@njit
def _weight_grad_plan(p, lo, hi):
    q = p[_DW:]
    src = _f32(q[0], q[1])
    offs = _i64(q[3], q[4])
    gt = _f32(q[5], (q[6], q[7], q[8]))
    dwt = _f32(q[9], (q[4], q[8]))
    _weight_grad(src, q[2], offs, gt, dwt, lo, hi)


@njit
def _block_bounds(desc, i):
    d = carray(desc, workers.DESC_WORDS)
    return d[workers.D_CUTS + i], d[workers.D_CUTS + i + 1], d[workers.D_ARGS]


def _forward_block(desc, i):
    lo, hi, plan = _block_bounds(desc, i)
    _correlate_plan(_i64(plan, _DW), lo, hi)


def _backward_block(desc, i):
    lo, hi, plan = _block_bounds(desc, i)
    p = _i64(plan, _BACK + 2)
    images = p[_BACK + 1] if p[_BACK] != 0 else 0
    if lo < images:
        _correlate_plan(p, lo, hi)
    else:
        _weight_grad_plan(p, lo - images, hi - images)


_CFUNCS: dict = {}  # {name: cfunc}, compiled on first use


def _address(fn) -> int:
    if fn.__name__ not in _CFUNCS:
        _CFUNCS[fn.__name__] = cfunc(types.void(types.CPointer(types.int64), types.int64),
                                     cache=True)(fn)
    return _CFUNCS[fn.__name__].address


def _cuts(size: int, blocks: int) -> list:
    blocks = max(1, min(blocks, size))
    return [size * i // blocks for i in range(blocks + 1)]


def _run(fn, plan: np.ndarray, cuts: list) -> None:
    args = np.zeros(workers.CALL_ARGS, np.int64)
    args[0] = plan.ctypes.data
    threads.run_call(_address(fn), args, np.asarray(cuts, np.int64))


def _correlate_words(src, stride, base, offs, w, bias, pitch, out) -> list:
    use_bias = bias is not None
    return [src.ctypes.data, src.size, stride, base, offs.ctypes.data, offs.size,
            w.ctypes.data, w.shape[0], (bias if use_bias else w).ctypes.data, int(use_bias),
            pitch, out.ctypes.data, out.shape[0], out.shape[2], out.shape[3]]


# -- public wrappers -------------------------------------------------------------------------
def _check_source(name, xf, padded_shape, reach):
    check_array(name, xf, 1, np.float32)
    need = int(np.prod(padded_shape)) + reach
    if xf.size < need:
        raise DataError(f"{name}: expected at least {need} elements (images of "
                        f"{tuple(padded_shape)} and a tail of {reach}); received {xf.size}")


def conv2d_forward(xf, padded_shape, weight, bias, dilation, output_size, out=None):
    """Stride-1 float32 convolution of padded images, ``-> (N, F, OH, OW)``.

    ``xf``: the images ``padded_shape`` (as ``zoo.kernels.conv.padded_shape2d`` gives),
    flattened, then a zeroed tail of at least ``forward_reach(...)`` elements. ``bias`` may
    be None.
    """
    padded_shape = tuple(padded_shape)
    kernel_size = weight.shape[2:]
    _check_source("conv2d_forward: xf", xf, padded_shape,
                  forward_reach(padded_shape, kernel_size, dilation, output_size))
    check_array("conv2d_forward: weight", weight, 4, np.float32)
    n, c, hp, wp = padded_shape
    f = weight.shape[0]
    if weight.shape[1] != c:
        raise DataError(f"conv2d_forward: weight {weight.shape} needs {weight.shape[1]} "
                        f"channels; the images have {c}")
    if out is None:
        out = np.empty((n, f, *output_size), np.float32)
    offs = tap_offsets(c, hp, wp, kernel_size, dilation)
    w = weight.reshape(f, -1)
    plan = np.array(_correlate_words(xf, c * hp * wp, 0, offs, w, bias, wp, out), np.int64)
    _run(_forward_block, plan, _cuts(n, IMAGE_BLOCKS))
    return out


def conv2d_backward(grad, xf, padded_shape, weight, dilation, pads, layout, gp, gt, dweight,
                    dbias=None, dx=None):
    """Gradients of ``conv2d_forward``: fills ``dweight`` (``(F, C, KH, KW)``), ``dbias`` if
    given and ``dx`` (the unpadded input's gradient ``(N, C, H, W)``) if given.

    ``layout``: a ``GradientLayout``; ``gp`` (``layout.flat`` elements) and ``gt``
    (``layout.transposed``): zeroed float32 buffers, given zeroed once and reused (only
    their interiors are written).
    """
    check_array("conv2d_backward: grad", grad, 4, np.float32)
    n, c, hp, wp = padded_shape
    f = weight.shape[0]
    kernel_size = weight.shape[2:]
    _check_source("conv2d_backward: xf", xf, padded_shape,
                  forward_reach(padded_shape, kernel_size, dilation, grad.shape[2:]))
    if gp.size != layout.flat or gt.shape != layout.transposed:
        raise DataError("conv2d_backward: gp and gt must be made for this layout")
    gp4 = gp[:int(np.prod(layout.padded))].reshape(layout.padded)
    use_bias = dbias is not None
    _gradient_views(grad, gp4, *layout.edge, gt, wp, dbias if use_bias else grad[0, 0, 0],
                    use_bias)
    taps = c * kernel_size[0] * kernel_size[1]
    dwt = np.empty((taps, gt.shape[2]), np.float32)
    offs = tap_offsets(c, hp, wp, kernel_size, dilation)
    if dx is not None:
        wflip = np.empty((c, f * kernel_size[0] * kernel_size[1]), np.float32)
        _flip(weight, wflip)
        corr = _correlate_words(gp, f * layout.padded[2] * layout.padded[3], layout.base,
                                layout.offsets, wflip, None, layout.padded[3], dx)
        images = n
    else:  # valid words that no block reads: only the weight gradient's blocks run
        corr = _correlate_words(xf, 0, 0, offs, weight.reshape(f, -1), None, wp, grad)
        images = 0
    words = corr + [xf.ctypes.data, xf.size, c * hp * wp, offs.ctypes.data, taps,
                    gt.ctypes.data, n, gt.shape[1], gt.shape[2], dwt.ctypes.data,
                    int(dx is not None), n]
    plan = np.array(words, np.int64)
    groups = -(-taps // DW_ROWS)
    cuts = (_cuts(n, IMAGE_BLOCKS) if images else [0]) \
        + [images + b for b in _cuts(groups, TAP_BLOCKS)[1:]]
    _run(_backward_block, plan, cuts)
    dweight.reshape(f, -1)[...] = dwt[:, :f].T
    return dx
