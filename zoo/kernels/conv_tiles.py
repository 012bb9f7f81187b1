"""Float32 stride-1 Conv2D as products on zoo's register tile, with no im2col copy.

``zoo.kernels.sgemm``'s tile computes ``ROWS x PANEL`` outputs, each one chain of
multiply-adds in ``k`` order, reading ``a``'s rows through a table of offsets and, in its
``tile_table`` form, ``b``'s row ``k`` at ``b + table[k]``. A stride-1 convolution is such a
product in the "wide" layout (as in ``zoo.kernels.conv``): an image's padded input
``(C, HP, WP)`` flattened, output ``(y, x)`` at column ``q = y * WP + x``, and tap
``t = (c, i, j)`` at offset ``offs[t] = c * HP * WP + i * dh * WP + j * dw``, so that row
``t`` of the im2col matrix is the flattened image itself, shifted by ``offs[t]``: the tile
reads it in place. The ``WP - OW`` columns after each output row are computed and thrown
away (zeros where they enter a sum).

Per image ``n`` (``F`` filters, ``T = C * KH * KW`` taps, ``m = (OH - 1) * WP + OW``
columns, rounded up to whole panels):

- **forward** ``Y_n (F x m) = W (F x T) @ X_n (T x m)``, ``X_n[t, q] = xp_n[offs[t] + q]``:
  ``tile_table`` with ``W``'s rows as ``a`` and ``offs`` as ``b``'s table, into a small
  scratch that is copied to ``(F, OH, OW)`` with the bias added.
- **weight gradient** ``dW.T (T x F) = sum_n X_n (T x m) @ Gt_n (m x F)``: ``a``'s rows are
  the taps read in place (``a_rows[r] = offs[t]``), ``Gt_n`` the output gradient as
  positions x filters (zeros in the thrown-away columns); every ``dW[f, t]`` is one chain
  over a block's images in order (``accumulate`` from its second image on), and the
  blocks' sums are added in order. Its tile is
  ``DW_ROWS x LANES`` (16 taps x 16 filters with AVX-512): LeNet-sized layers have 6 or 16
  filters, where a 32-wide panel would compute half of it for nothing.
- **input gradient** ``D_n (T x m) = W.T (T x F) @ G_n (F x m)`` on the tile (``G_n``: the
  output gradient in the wide layout, zeros between rows), each row of ``D_n`` then added
  into the padded image at its tap's offset (col2im), and the interior copied to ``dx``.
  Also measured (batch 64, one thread): the full correlation of the zero-bordered gradient
  with the flipped weights as one ``tile_table`` product (k = F * KH * KW, mostly on the
  border's zeros) was no faster on LeNet's conv2 (460-570 us against 460-500); one
  accumulating product per tap into the shifted image, rows = channels, was 12% faster
  there (6 channels) but 3.6x slower with one channel, where it leaves the tile's rows idle.

Layers with at most ``zoo.layers.conv.DIRECT_MAX_TAPS`` taps (LeNet's first: 1 channel, 25
taps, 6 filters) keep ``zoo.kernels.conv``'s direct weight-gradient kernel, run here on
blocks of images (``direct_backward``): with 6 filters the tile's weight gradient leaves
most lanes idle (measured about 2x slower, with the transposed gradient it needs).

**The same bits on any thread count.** Every job is cut into blocks of images
(``IMAGE_BLOCKS``, from the batch size alone) that zoo's threads share out
(``zoo.kernels.threads.run_call``); one thread runs the very same calls in turn. A block
does all the work of its images: the forward; or the gradient's views, the input gradient
and its own partial weight gradient (one chain per element, sgemm's contract, over its
images in order). The partial sums, per block for the weight gradient and per image for the
bias (float64) and the direct kernel's weight gradient, are added in order afterwards. One
job per layer and direction, and each image's data stays with the core that computed it.

The forward reads past the end of the last image by up to a panel (the thrown-away columns
of its last panel), so the input buffer has a zeroed tail (``forward_reach``).
"""

from __future__ import annotations

import functools

import numpy as np
from numba import carray, cfunc, types

from zoo.errors import DataError, describe_array
from zoo.kernels import atomics, conv, sgemm, threads, workers
from zoo.kernels._jit import njit
from zoo.kernels.conv import check_array, output_array

ROWS, PANEL, LANES = sgemm.ROWS, sgemm.PANEL, sgemm.LANES
# The weight gradient's tile: as many accumulator registers as sgemm's (16 taps x 16
# filters with AVX-512, 6 x 16 with AVX2), one vector of filters wide.
DW_ROWS = ROWS * (PANEL // LANES)
_dw_tile = sgemm.make_tile(DW_ROWS, 1)  # sgemm's tile in another shape
# Every job is cut into at most this many blocks of images, from the batch size alone (the
# weight gradient's sum over the blocks depends on the cut, so the cut never depends on the
# thread count).
IMAGE_BLOCKS = 8


def _ceil(a: int, b: int) -> int:
    return -(-a // b) * b


def wide_length(output_size, pitch) -> int:
    """Columns an image's output takes in the wide layout: rows ``pitch`` apart."""
    return (output_size[0] - 1) * pitch + output_size[1]


@functools.lru_cache(maxsize=64)
def _tap_offsets(channels, rows, pitch, kernel_size, dilation) -> np.ndarray:
    (kh, kw), (dh, dw) = kernel_size, dilation
    offs = np.array([c * rows * pitch + i * dh * pitch + j * dw
                     for c in range(channels) for i in range(kh) for j in range(kw)], np.int64)
    offs.setflags(write=False)  # shared by every call with these sizes
    return offs


def tap_offsets(channels, rows, pitch, kernel_size, dilation) -> np.ndarray:
    """``offs[(c, i, j)] = c * rows * pitch + i * dh * pitch + j * dw``: where each tap
    reads in an image ``(channels, rows, pitch)`` flattened (int64, read-only, cached: a
    layer asks for the same ones every step)."""
    return _tap_offsets(int(channels), int(rows), int(pitch), tuple(map(int, kernel_size)),
                        tuple(map(int, dilation)))


def forward_reach(padded_shape, kernel_size, dilation, output_size) -> int:
    """Elements the forward reads past the end of ``N`` padded images (a zeroed tail)."""
    _, c, hp, wp = padded_shape
    m = wide_length(output_size, wp)
    last = (c - 1) * hp * wp + (kernel_size[0] - 1) * dilation[0] * wp \
        + (kernel_size[1] - 1) * dilation[1] + _ceil(m, PANEL)
    return max(0, int(last) - c * hp * wp)


def gradient_shapes(padded_shape, filters, output_size) -> tuple:
    """The shapes of the backward's two views of the output gradient ``(N, F, OH, OW)``,
    both with zeros in the thrown-away columns of the wide layout: ``(N, F, MP)`` as the
    forward's output (``m`` columns rounded up to whole panels) and ``(N, m, FP)``, positions
    x filters, filters rounded up to a multiple of ``LANES``."""
    n, _, _, wp = padded_shape
    m = wide_length(output_size, wp)
    return (n, filters, _ceil(m, PANEL)), (n, m, _ceil(filters, LANES))


# -- kernels ---------------------------------------------------------------------------------
@njit
def _correlate(src, stride, offs, w, bias, use_bias, pitch, out, lo, hi):
    """``out[n, r, y, x] = sum_t w[r, t] * src[n * stride + offs[t] + y * pitch + x]``
    (+ ``bias[r]``) for images ``lo:hi``."""
    rows_, taps = w.shape
    oh, ow = out.shape[2], out.shape[3]
    m = (oh - 1) * pitch + ow
    mp = (m + PANEL - 1) // PANEL * PANEL
    y = np.empty((rows_, mp), np.float32)
    table = np.empty(ROWS, np.int64)
    w_at, y_at, offs_at = w.ctypes.data, y.ctypes.data, offs.ctypes.data
    for n in range(lo, hi):
        b_at = src.ctypes.data + 4 * n * stride
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
    """``dwt (T, FP) = sum_n X_n @ gt[n]`` over images ``lo:hi``, in order (one chain)."""
    m, fp = gt.shape[1], gt.shape[2]
    taps = dwt.shape[0]
    table = np.empty(DW_ROWS, np.int64)
    table_at = np.int64(table.ctypes.data)
    for t0 in range(0, taps, DW_ROWS):
        count = min(DW_ROWS, taps - t0)
        for r in range(DW_ROWS):
            table[r] = offs[t0 + min(r, count - 1)]
        for f0 in range(0, fp, LANES):
            c_at = dwt.ctypes.data + 4 * (t0 * fp + f0)
            for n in range(lo, hi):
                _dw_tile(src.ctypes.data + 4 * n * stride, table_at, 1,
                         gt.ctypes.data + 4 * (n * m * fp + f0), fp, m, c_at, fp, count, n > lo)


@njit
def _gradient_views(g, gw, gt, pitch, dbn, wide, lo, hi):
    """For images ``lo:hi``: ``g (N, F, OH, OW)`` into ``gw`` (if ``wide``) and ``gt`` at the
    wide layout's positions (the zeros between stay), and each image's bias gradient, summed
    in float64 into ``dbn[n]``."""
    f_, oh, ow = g.shape[1], g.shape[2], g.shape[3]
    for n in range(lo, hi):
        for f in range(f_):
            acc = 0.0
            for y in range(oh):
                s = g[n, f, y]
                for x in range(ow):
                    acc += s[x]
                if wide:
                    d = gw[n, f, y * pitch:]
                    for x in range(ow):
                        d[x] = s[x]
            dbn[n, f] = acc
        for y in range(oh):  # positions outer, filters inner: gt's rows are written whole
            for x in range(ow):
                d = gt[n, y * pitch + x]
                for f in range(f_):
                    d[f] = g[n, f, y, x]


@njit
def _input_grad(gw, w, offs, m, hp, wp, ph, pw, dx, lo, hi):
    """``dx[n]`` for images ``lo:hi``: ``D = W.T @ gw[n]`` (taps x wide positions) on the
    tile, each tap's row added into the padded image ``(C, HP, WP)`` at its offset (taps in
    order), then the interior copied out."""
    f_, taps = w.shape
    mp = gw.shape[2]
    c_, h, wd = dx.shape[1], dx.shape[2], dx.shape[3]
    d = np.empty((taps, mp), np.float32)
    dxp = np.empty(c_ * hp * wp, np.float32)
    table = np.empty(ROWS, np.int64)
    table_at, d_at = np.int64(table.ctypes.data), d.ctypes.data
    for n in range(lo, hi):
        b_at = gw.ctypes.data + 4 * n * f_ * mp
        for t0 in range(0, taps, ROWS):
            count = min(ROWS, taps - t0)
            sgemm.fill_rows(table, t0, count, 1)
            for j0 in range(0, m, PANEL):
                sgemm.tile(w.ctypes.data, table_at, taps, b_at + 4 * j0, mp, f_,
                           d_at + 4 * (t0 * mp + j0), mp, count, False)
        dxp[:] = 0
        for t in range(taps):
            src = d[t]
            dst = dxp[offs[t]:]
            for q in range(m):
                dst[q] += src[q]
        for c in range(c_):
            for y in range(h):
                src = dxp[(c * hp + ph + y) * wp + pw:]
                dst = dx[n, c, y]
                for x in range(wd):
                    dst[x] = src[x]


# -- jobs on zoo's threads: a plan (int64 words) per job, a cfunc per block ------------------
# A plan holds the addresses and sizes of a job's arrays; block i of a job is the images
# ``cuts[i]:cuts[i + 1]``.
(_X, _X_SIZE, _X_STRIDE, _OFFS, _TAPS, _W, _F, _N, _PITCH,  # both
 _BIAS, _USE_BIAS, _OUT, _OH, _OW,  # forward
 _GW, _MP, _GT, _M, _FP, _DWT, _DX, _C, _H, _WD, _HP, _PH, _PW, _INPUT_GRAD,  # backward
 _DBN, _BLOCKS) = range(30)
_WORDS = 30


@njit
def _f32(address, shape):
    return carray(atomics.pointer(address, np.float32(0)), shape)


@njit
def _i64(address, size):
    return carray(atomics.pointer(address, np.int64(0)), size)


@njit
def _block(desc, i):
    """Block ``i``'s bounds and its job's plan."""
    d = carray(desc, workers.DESC_WORDS)
    return d[workers.D_CUTS + i], d[workers.D_CUTS + i + 1], _i64(d[workers.D_ARGS], _WORDS)


def _forward_block(desc, i):
    lo, hi, p = _block(desc, i)
    _correlate(_f32(p[_X], p[_X_SIZE]), p[_X_STRIDE], _i64(p[_OFFS], p[_TAPS]),
               _f32(p[_W], (p[_F], p[_TAPS])), _f32(p[_BIAS], p[_F]), p[_USE_BIAS] != 0,
               p[_PITCH], _f32(p[_OUT], (p[_N], p[_F], p[_OH], p[_OW])), lo, hi)


def _backward_block(desc, i):
    """Everything of images ``lo:hi``: the gradient's views and bias sums, their input
    gradient, and their part of the weight gradient (``dwt[i]``)."""
    lo, hi, p = _block(desc, i)
    n, f, taps = p[_N], p[_F], p[_TAPS]
    offs = _i64(p[_OFFS], taps)
    gt = _f32(p[_GT], (n, p[_M], p[_FP]))
    input_grad = p[_INPUT_GRAD] != 0
    gw = _f32(p[_GW], (n, f, p[_MP]))
    _gradient_views(_f32(p[_OUT], (n, f, p[_OH], p[_OW])), gw, gt, p[_PITCH],
                    carray(atomics.pointer(p[_DBN], np.float64(0)), (n, f)), input_grad, lo, hi)
    if input_grad:
        _input_grad(gw, _f32(p[_W], (f, taps)), offs, p[_M], p[_HP], p[_PITCH], p[_PH],
                    p[_PW], _f32(p[_DX], (n, p[_C], p[_H], p[_WD])), lo, hi)
    _weight_grad(_f32(p[_X], p[_X_SIZE]), p[_X_STRIDE], offs, gt,
                 _f32(p[_DWT], (p[_BLOCKS], taps, p[_FP]))[i], lo, hi)


def _direct_backward_block(desc, i):
    lo, hi, p = _block(desc, i)
    n, f, taps, stride = p[_N], p[_F], p[_TAPS], p[_X_STRIDE]
    dxpf = _f32(p[_DX], (n, stride if p[_INPUT_GRAD] != 0 else 0))
    conv._direct2d_backward(  # noqa: SLF001  (zoo.kernels.conv's kernel, on images lo:hi)
        _f32(p[_OUT], (n, f, p[_OH], p[_OW]))[lo:hi],
        _f32(p[_X], (n, stride))[lo:hi], _i64(p[_OFFS], taps), _f32(p[_W], (f, taps)),
        _f32(p[_DWT], (n, f, taps))[lo:hi], _f32(p[_GW], (n, f))[lo:hi], dxpf[lo:hi],
        p[_PITCH], np.float32(0), p[_INPUT_GRAD] != 0)


_CFUNCS: dict = {}  # {name: cfunc}, compiled on first use


def _cfunc_address(fn) -> int:
    if fn.__name__ not in _CFUNCS:
        _CFUNCS[fn.__name__] = cfunc(types.void(types.CPointer(types.int64), types.int64),
                                     cache=True)(fn)
    return _CFUNCS[fn.__name__].address


def _cuts(size: int, blocks: int) -> list:
    blocks = max(1, min(blocks, size))
    return [size * i // blocks for i in range(blocks + 1)]


@njit
def _address(a):
    return a.ctypes.data  # a fifth of the cost of numpy's ``a.ctypes.data``


def _plan(words: dict) -> np.ndarray:
    """A job's plan from ``{word: array or int}`` (arrays by their address)."""
    plan = np.zeros(_WORDS, np.int64)
    for index, value in words.items():
        plan[index] = _address(value) if isinstance(value, np.ndarray) else int(value)
    return plan


def _run(fn, plan: np.ndarray, cuts: list) -> None:
    """The job ``fn`` (a block function above) on zoo's threads; ``plan`` must stay alive
    (and every array it points to) until it returns, as it does here."""
    args = np.zeros(workers.CALL_ARGS, np.int64)
    args[0] = plan.ctypes.data
    threads.run_call(_cfunc_address(fn), args, np.asarray(cuts, np.int64))


# -- public wrappers -------------------------------------------------------------------------
def _check_source(name, xf, padded_shape, reach):
    check_array(name, xf, 1, np.float32)
    need = int(np.prod(padded_shape)) + reach
    if xf.size < need:
        raise DataError(f"{name}: expected at least {need} elements (images of "
                        f"{tuple(padded_shape)} and a tail of {reach}); received {xf.size}")


def _check_weight(name, weight, padded_shape):
    check_array(f"{name}: weight", weight, 4, np.float32)
    if weight.shape[1] != padded_shape[1]:
        raise DataError(f"{name}: weight of shape {weight.shape} needs {weight.shape[1]} "
                        f"channels; the images have {padded_shape[1]}")


def conv2d_forward(xf, padded_shape, weight, bias, dilation, output_size, out=None):
    """Stride-1 float32 convolution of padded images, ``-> (N, F, OH, OW)``.

    ``xf``: the images ``padded_shape`` (as ``zoo.kernels.conv.padded_shape2d`` gives),
    flattened, then a zeroed tail of at least ``forward_reach(...)`` elements. ``bias`` may
    be None.
    """
    n, c, hp, wp = padded_shape = tuple(padded_shape)
    kernel_size = weight.shape[2:]
    _check_weight("conv2d_forward", weight, padded_shape)
    _check_source("conv2d_forward: xf", xf, padded_shape,
                  forward_reach(padded_shape, kernel_size, dilation, output_size))
    f = weight.shape[0]
    out = output_array(out, (n, f, *output_size), np.float32, "conv2d_forward")
    offs = tap_offsets(c, hp, wp, kernel_size, dilation)
    use_bias = bias is not None
    plan = _plan({_X: xf, _X_SIZE: xf.size, _X_STRIDE: c * hp * wp, _OFFS: offs,
                  _TAPS: offs.size, _W: weight, _F: f, _N: n, _PITCH: wp,
                  _BIAS: bias if use_bias else weight, _USE_BIAS: use_bias, _OUT: out,
                  _OH: output_size[0], _OW: output_size[1]})
    _run(_forward_block, plan, _cuts(n, IMAGE_BLOCKS))
    return out


def conv2d_backward(grad, xf, padded_shape, weight, dilation, pads, gw, gt, dweight,
                    dbias=None, dx=None):
    """Gradients of ``conv2d_forward`` for the output gradient ``grad``: fills ``dweight``
    (``(F, C, KH, KW)``), ``dbias`` if given and ``dx`` (the gradient of the unpadded input
    ``(N, C, H, W)``, at ``pads`` in the padded images) if given; returns ``dx``.

    ``gw`` and ``gt``: float32 buffers of ``gradient_shapes(...)``, zeroed once and reused
    (only the positions of outputs are written); ``gw`` may be None without ``dx``.
    """
    n, c, hp, wp = padded_shape = tuple(padded_shape)
    check_array("conv2d_backward: grad", grad, 4, np.float32)
    _check_weight("conv2d_backward", weight, padded_shape)
    f, kernel_size, output_size = weight.shape[0], weight.shape[2:], grad.shape[2:]
    if grad.shape[:2] != (n, f):
        raise DataError(f"conv2d_backward: grad must have shape (N, F, OH, OW) = "
                        f"{(n, f)} + (OH, OW); received {describe_array(grad)}")
    _check_source("conv2d_backward: xf", xf, padded_shape,
                  forward_reach(padded_shape, kernel_size, dilation, output_size))
    wide, transposed = gradient_shapes(padded_shape, f, output_size)
    for name, buf, shape in (("gw", gw, wide), ("gt", gt, transposed)):
        if (buf is not None or name == "gt" or dx is not None) and (
                not isinstance(buf, np.ndarray) or buf.shape != shape
                or buf.dtype != np.float32 or not buf.flags.c_contiguous):
            raise DataError(f"conv2d_backward: {name} must be a contiguous float32 array of "
                            f"shape {shape}; received {describe_array(buf)}")
    if dx is not None:
        check_array("conv2d_backward: dx", dx, 4, np.float32)
        if dx.shape[:2] != (n, c) or pads[0] + dx.shape[2] > hp or pads[1] + dx.shape[3] > wp:
            raise DataError(f"conv2d_backward: dx must be {(n, c)} + (H, W) images that fit "
                            f"at {tuple(pads)} in {padded_shape}; received "
                            f"{describe_array(dx)}")
    offs = tap_offsets(c, hp, wp, kernel_size, dilation)
    cuts = _cuts(n, IMAGE_BLOCKS)
    dwt = np.zeros((len(cuts) - 1, offs.size, transposed[2]), np.float32)  # per block
    dbn = np.empty((n, f), np.float64)  # per image
    input_grad = dx is not None
    plan = _plan({
        _X: xf, _X_SIZE: xf.size, _X_STRIDE: c * hp * wp, _OFFS: offs, _TAPS: offs.size,
        _W: weight, _F: f, _N: n, _PITCH: wp, _OUT: grad, _OH: output_size[0],
        _OW: output_size[1], _GT: gt, _M: transposed[1], _FP: transposed[2], _DWT: dwt,
        _BLOCKS: len(cuts) - 1, _DBN: dbn, _INPUT_GRAD: input_grad,
        # without an input gradient no block reads these: valid addresses all the same
        _GW: gw if input_grad else gt, _MP: wide[2] if input_grad else 0,
        _DX: dx if input_grad else gt, _C: c, _H: dx.shape[2] if input_grad else 0,
        _WD: dx.shape[3] if input_grad else 0, _HP: hp, _PH: pads[0], _PW: pads[1]})
    _run(_backward_block, plan, cuts)
    if dbias is not None:
        dbias[...] = dbn.sum(axis=0)  # over images in order
    total = dwt[0]
    for part in dwt[1:]:  # the blocks' sums, in order
        total += part
    dweight.reshape(f, -1)[...] = total[:, :f].T
    return dx


def direct_backward(grad, xf, padded_shape, weight, dilation, dweight, dbias=None,
                    input_grad=True):
    """``zoo.kernels.conv.conv2d_direct_backward``'s kernel on zoo's threads, for layers with
    few taps (LeNet's first), where the tile's weight gradient would leave most of its lanes
    idle: blocks of images, each writing its images' partial sums, added up over images in
    order afterwards. Returns the padded input's gradient (or None)."""
    n, c, hp, wp = padded_shape = tuple(padded_shape)
    check_array("direct_backward: grad", grad, 4, np.float32)
    _check_weight("direct_backward", weight, padded_shape)
    _check_source("direct_backward: xf", xf, padded_shape, 0)
    f, kernel_size = weight.shape[0], weight.shape[2:]
    if grad.shape[:2] != (n, f):
        raise DataError(f"direct_backward: grad must have shape (N, F, OH, OW) = "
                        f"{(n, f)} + (OH, OW); received {describe_array(grad)}")
    offs = tap_offsets(c, hp, wp, kernel_size, dilation)
    dwn = np.empty((n, f, offs.size), np.float32)  # per-image partial sums
    dbn = np.empty((n, f), np.float32)
    dxp = np.empty(padded_shape, np.float32) if input_grad else None
    plan = _plan({_X: xf, _X_STRIDE: c * hp * wp, _OFFS: offs, _TAPS: offs.size, _W: weight,
                  _F: f, _N: n, _PITCH: wp, _OUT: grad, _OH: grad.shape[2],
                  _OW: grad.shape[3], _DWT: dwn, _GW: dbn,
                  _DX: dxp if input_grad else dbn, _INPUT_GRAD: input_grad})
    _run(_direct_backward_block, plan, _cuts(n, IMAGE_BLOCKS))
    np.sum(dwn, axis=0, out=dweight.reshape(f, -1))
    if dbias is not None:
        np.sum(dbn, axis=0, out=dbias)
    return dxp
