"""The fused Dense step's elementwise work, in blocks of rows that zoo's workers share.

Between its products, a layer of the fused step (``zoo.kernels.dense_stack``) has work that is
the same for every element: the forward's bias and activation (after adding the parts of a
product whose inner dimension was cut), and the backward's activation gradient; the last layer
under MSE also has the loss's gradient. On one thread these were four passes over the last
layer's output; on two, the posting thread made them alone while the other core waited: on the
autoencoder workload (784-256-32-256-784, batch 128) about 180 us of a 2.1 ms step.

``rows`` does them in one call on a block of rows (a loop per operation over rows that stay
in cache), and where the block is large enough the
step posts it as a job of row blocks (``ROW_WORK``). Each element gets the same operations in
the same order as in the layer's own kernels (``zoo.kernels.dense``, ``zoo.kernels.losses``,
whose per-element functions it calls), so the bits are the layer path's, on any thread count.
What is a sum over rows stays out of the blocks: the bias gradient (``dense._bias_grad``, the
rows in order) and the loss value (``losses.mse_value``, the same partial sums as ``_mse``),
each one pass after the job; under MSE the two run side by side, a job of two blocks (SUMS).
"""

from __future__ import annotations

import numpy as np
from numba import carray, cfunc, types

from zoo.kernels import atomics, workers
from zoo.kernels._jit import njit
from zoo.kernels.dense import (
    _bias,
    _bias_grad,
    _bias_leaky_relu,
    _bias_sigmoid,
    _bias_tanh,
    times_leaky_relu_grad,
    times_sigmoid_grad,
    times_tanh_grad,
)
from zoo.kernels.losses import mse_value

# Activation codes, as ``zoo.kernels.dense_stack`` numbers them (relu: leaky_relu, slope 0).
LINEAR, LEAKY_RELU, TANH, SIGMOID = 0, 1, 2, 3
# What ``rows`` does, as bits: the forward (the parts added, then bias and activation), the
# MSE gradient of the output, the activation's gradient. SUMS is a job of its own, two blocks
# of the whole output: block 0 the MSE loss (``losses.mse_value``), block 1 the bias gradient
# (``dense._bias_grad``), each the one pass in row order the layers make.
FORWARD, MSE_GRAD, ACT_GRAD, SUMS = 1, 2, 4, 8
# Elements a block gets at least: below that the job's hand-off costs more than a second
# core wins (a 128 x 256 layer's relu gradient takes about 9 us on one core). More than two
# blocks need WIDE_ROW_WORK each: on two threads the autoencoder's 128 x 784 output layer ran
# 2% faster a step in two blocks than in four (interleaved runs: 1,945 against 1,989 us),
# each core then working on one contiguous half.
ROW_WORK = 16_384
WIDE_ROW_WORK = 65_536
# Row blocks at most (a power of two: they share evenly over 1, 2, 4 ... threads).
MAX_ROW_BLOCKS = 8

# A job's words (from ``workers.D_ARGS``): what to do, the addresses of the arrays (each
# ``(rows, units)`` but the bias, ``(units,)``, and the slope, one float64) and their sizes.
R_OP, R_Y, R_PARTS, R_COUNT, R_BIAS, R_SLOPE, R_GRAD, R_DZ, R_TARGET, R_UNITS, R_CODE, \
    R_SIZE = range(12)


def row_cuts(rows: int, units: int) -> list[int]:
    """Bounds of the row blocks of a ``(rows, units)`` layer output: one block below
    ``2 * ROW_WORK`` elements, two below ``4 * WIDE_ROW_WORK``. A function of the sizes alone
    (elementwise work has the same bits however it is cut; fixed cuts keep each thread on the
    same rows step after step)."""
    blocks = 1
    while 2 * blocks <= MAX_ROW_BLOCKS and rows >= 2 * blocks \
            and rows * units >= 2 * blocks * (ROW_WORK if blocks == 1 else WIDE_ROW_WORK):
        blocks *= 2
    return [rows * i // blocks for i in range(blocks + 1)]


# Without fast-math, as the kernels whose bits it must give (see ``zoo.kernels.dense``).
@njit(fastmath=False)
def rows(op, y, parts, count, stride, bias, slope, code, grad, dz, target, size):
    """The elementwise work ``op`` on ``y``'s rows (``(r, units)``, a block of the layer's
    output), one loop per operation over the block, in this order:

    - FORWARD: ``y += part 0 + part 1 ...`` (``count`` parts, in order, as
      ``blas._add_parts``: part ``p``'s rows are at the address ``parts + p * stride``, laid out
      as ``y``), then ``y = act(y + bias)`` (the ``dense`` kernel of ``code``);
    - MSE_GRAD: ``grad = 2 (y - target) / size`` (``size``: the whole output's elements);
    - ACT_GRAD: ``dz = grad * act'(y)`` (``code`` not LINEAR)."""
    r, units = y.shape
    for p in range(count):
        part = carray(atomics.pointer(parts + p * stride, y[0, 0]), (r, units))
        for i in range(r):
            for j in range(units):
                y[i, j] += part[i, j]
    if op & FORWARD:
        if code == LEAKY_RELU:
            _bias_leaky_relu(y, bias, y, slope)
        elif code == TANH:
            _bias_tanh(y, bias, y, slope)
        elif code == SIGMOID:
            _bias_sigmoid(y, bias, y, slope)
        else:
            _bias(y, bias, y, slope)
    if op & MSE_GRAD:
        scale = y.dtype.type(2.0 / size)  # as losses._squared_errors
        for i in range(r):
            for j in range(units):
                grad[i, j] = scale * (y[i, j] - target[i, j])
    if op & ACT_GRAD:
        one = y.dtype.type(1)
        if code == LEAKY_RELU:
            a = y.dtype.type(slope)
            for i in range(r):
                for j in range(units):
                    dz[i, j] = times_leaky_relu_grad(grad[i, j], y[i, j], a, one)
        elif code == TANH:
            for i in range(r):
                for j in range(units):
                    dz[i, j] = times_tanh_grad(grad[i, j], y[i, j], one)
        elif code == SIGMOID:
            for i in range(r):
                for j in range(units):
                    dz[i, j] = times_sigmoid_grad(grad[i, j], y[i, j], one)


@njit
def describe(args, op, y, parts, count, bias, slope, code, grad, dz, target):
    """Write ``rows``'s job on the whole of ``y`` into ``args`` (``workers.CALL_ARGS`` words;
    ``parts``: the address of ``count`` parts laid out as ``y``, one after the other;
    ``slope``: an array whose first element is the slope). Arrays the job does not read may
    be any array of the dtype."""
    args[R_OP], args[R_Y], args[R_PARTS], args[R_COUNT] = op, y.ctypes.data, parts, count
    args[R_BIAS], args[R_SLOPE], args[R_GRAD] = bias.ctypes.data, slope.ctypes.data, \
        grad.ctypes.data
    args[R_DZ], args[R_TARGET], args[R_UNITS] = dz.ctypes.data, target.ctypes.data, y.shape[1]
    args[R_CODE], args[R_SIZE] = code, y.size


@njit
def _at(address, shape, x):
    """The ``shape`` array of ``x``'s dtype at ``address``."""
    return carray(atomics.pointer(address, x), shape)


@njit
def _block(d, i, x, itemsize):
    """Block ``i`` of the job described in ``d`` (a description's words), of ``x``'s dtype
    (``itemsize`` bytes)."""
    a = workers.D_ARGS
    units, size, count = d[a + R_UNITS], d[a + R_SIZE], d[a + R_COUNT]
    if d[a + R_OP] == SUMS:  # the loss into the float64 at R_PARTS, the bias gradient
        whole = (size // units, units)
        if i == 0:
            _at(d[a + R_PARTS], 1, np.float64(0))[0] = mse_value(
                _at(d[a + R_Y], whole, x), _at(d[a + R_TARGET], whole, x))
        else:
            _bias_grad(_at(d[a + R_DZ], whole, x), _at(d[a + R_BIAS], units, x))
        return
    lo, hi = d[workers.D_CUTS + i], d[workers.D_CUTS + i + 1]
    start, shape = lo * units * itemsize, (hi - lo, units)
    rows(d[a + R_OP], _at(d[a + R_Y] + start, shape, x), d[a + R_PARTS] + start, count,
         size * itemsize, _at(d[a + R_BIAS], units, x),
         _at(d[a + R_SLOPE], 1, np.float64(0))[0], d[a + R_CODE],
         _at(d[a + R_GRAD] + start, shape, x), _at(d[a + R_DZ] + start, shape, x),
         _at(d[a + R_TARGET] + start, shape, x), size)


def _block32(desc, i):
    _block(carray(desc, workers.DESC_WORDS), i, np.float32(0), 4)


def _block64(desc, i):
    _block(carray(desc, workers.DESC_WORDS), i, np.float64(0), 8)


_CFUNCS: dict = {}  # {itemsize: the cfunc}, made on first use


def block_address(dtype) -> int:
    """The address of the cfunc that computes one row block of a ``rows`` job of ``dtype``."""
    size = np.dtype(dtype).itemsize
    if size not in _CFUNCS:
        _CFUNCS[size] = cfunc(types.void(types.CPointer(types.int64), types.int64),
                              cache=True)(_block32 if size == 4 else _block64)
    return _CFUNCS[size].address
