"""zoo's large products: blocks fixed by the sizes, so the same bits on any thread count.

A ``Gemm`` for ``(m, k) @ (k, n)`` cuts the longest of its three sizes into blocks whose
number and bounds depend on ``m, k, n`` only (``partition``), and computes each block with one
single-threaded call. A cut of the output's rows or columns leaves every sum whole; a cut of
the inner dimension ``k`` gives each block a part of the sum, and the caller adds the parts in
block order. How many threads share the blocks (``zoo.kernels.threads``: one, or as a
trainer's governor or ``ZOO_BLAS_THREADS`` says) decides only who computes which block: one
thread runs the same calls in turn and adds the same parts in the same order. The bits never
depend on the thread count or the load.

Why the longest size: a Dense layer's weight ``(in, out)`` is in all three of its products,
forward ``(batch, in) @ (in, out)``, weight gradient ``(in, batch) @ (batch, out)`` and input
gradient ``(batch, out) @ (out, in)``. Cutting the longest size cuts the weight the same way in
all three when ``in`` is the longest (its rows), and the thread that posts a job always
computes its block 0 (``zoo.kernels.workers``), so on two threads each core keeps working on
its own half of the weight and of its gradient, in its own L2 cache. On the ``mlp`` workload
(784-256-128-10, batch 128) that made a two-thread step about 10% faster than cutting the
forward product's columns, whose halves cross the gradient's. A layer whose weight is the
largest of its arrays has its rows cut in all three even where ``out`` is the longest
(``layer_axes``): the optimizer's update goes by rows too.

float32 products of a training step's sizes (``sgemm.suits``: operands of at most 1 MB) run
zoo's own product (``zoo.kernels.sgemm``), whose every element is one chain of multiply-adds
in k order: their bits do not depend on the BLAS build or its kernel family either. A Dense
layer's uncut ones too (``layer_gemms``). Larger float32 products and float64 ones are calls
of numpy's BLAS, whose bits depend on the sizes, the BLAS build and the CPU's kernel family.

The split costs a little on one thread: each block packs the other operand again (measured:
+2-5% at two blocks on 128x784x256, +10-15% at four), so a block gets at least
``BLOCK_WORK`` multiply-adds, and block bounds fall on multiples of ``ALIGN`` so every block
but the last fills the register tiles.
"""

from __future__ import annotations

import numpy as np

from zoo.kernels import sgemm, threads

# Multiply-adds (m*k*n) per block at least: 2 blocks of BLOCK_WORK (about 12 us on one core)
# pay on two cores now that a worker starts its block within a microsecond
# (``zoo.kernels.workers``). A float32 column block of ``sgemm`` repacks nothing the other
# block packs; BLAS blocks (float64, and float32 past ``sgemm.MAX_OPERAND``) pack the other
# operand again, which costs one thread 10-15% at two blocks of 128x256x64. Half as much
# work per block made LeNet's step 7% faster on two threads (its 64x400x120 Dense products
# split) but `zoo train --arch cnn` on mnist1d 7% slower (5.8 -> 6.2 s), so it stays.
# More than two blocks need WIDE_WORK each: a 128x784x256 product costs one thread 8% more as
# 2 BLAS blocks and 45% as 8, so only products large enough for more cores to win that back
# are cut further.
BLOCK_WORK = 2_000_000
WIDE_WORK = 16_000_000
# Most blocks a product is cut into (a power of two, so they share evenly over 1, 2, 4 ...).
MAX_BLOCKS = 8
# Block bounds are multiples of this many rows, columns or inner indices.
ALIGN = 16
# The inner dimension is cut only where the parts to add are this small (elements of the
# output): a few microseconds to add, and scratch memory that stays small.
MAX_PARTIAL = 1 << 18


def partition(m: int, k: int, n: int, axis: int | None = None) -> tuple[int, list[int]]:
    """``(axis, cuts)``: cut the output's rows (axis 0), its columns (axis 1) or the inner
    dimension (axis 2) at ``cuts``.

    A function of the sizes alone (and of ``axis``, where the caller chooses it: a layer's
    products, ``layer_axes``): the longest size is cut. The inner dimension only where it is
    strictly the longest and the output has at most ``MAX_PARTIAL`` elements; between rows and
    columns a tie goes to the columns (each column block packs ``a`` again, the smaller
    operand then).
    """
    if axis is None:
        axis = 2 if k > max(m, n) and m * n <= MAX_PARTIAL else (1 if m <= n else 0)
    length = (m, n, k)[axis]
    blocks = 1
    while (2 * blocks <= MAX_BLOCKS and length >= 2 * blocks * ALIGN
           and m * k * n >= 2 * blocks * (BLOCK_WORK if blocks == 1 else WIDE_WORK)):
        blocks *= 2
    # Even blocks, inner bounds rounded to multiples of ALIGN (at least ALIGN apart: distinct).
    inner = [round(length * i / (blocks * ALIGN)) * ALIGN for i in range(1, blocks)]
    return axis, [0, *inner, length]


def layer_axes(rows: int, fan_in: int, units: int) -> tuple:
    """The axis each product of a layer ``y = x @ w``, ``w`` of shape ``(fan_in, units)``, is
    cut along: the forward product ``(rows, fan_in) @ (fan_in, units)``, the weight gradient
    ``(fan_in, rows) @ (rows, units)`` and the input gradient ``(rows, units) @ (units,
    fan_in)``, in that order; None leaves it to ``partition``'s rule (the longest size).

    Where the weight is the largest of the layer's arrays (``fan_in`` and ``units`` both at
    least ``rows``) all three cut the weight's rows, the ``fan_in`` axis, as long as the forward
    product's parts stay small (``MAX_PARTIAL``). On two threads each core then reads and
    writes the same half of the weight, of its gradient and of its optimizer state
    (``zoo.training.flat.owner_chunks`` cuts the update at those rows too) the whole step. This
    is the longest-size rule's own choice where ``fan_in`` is the longest; where ``units`` is
    (an autoencoder's 256 -> 784 output layer) that rule cut the weight's columns, whose halves
    crossed between the cores at every update: the autoencoder workload's two-thread step was
    4-7% slower that way (interleaved medians of 9-11 one-second runs: 2,156 us against
    2,063 on two threads, 2,194 against 2,108 under the governor).
    """
    if min(fan_in, units) >= rows and rows * units <= MAX_PARTIAL:
        return 2, 0, 1
    return None, None, None


def layer_gemms(rows: int, fan_in: int, units: int, dtype=None) -> tuple:
    """The ``Gemm`` (or None: one plain call) of each of a layer's three products, in the
    order and with the cuts of ``layer_axes``.

    A float32 product ``sgemm`` suits gets a ``Gemm`` even uncut: one ``sgemm`` call, not
    BLAS's. Its bits are then the same whatever the BLAS build or its kernel family, as a cut
    product's are. Speed, one EPYC core: the mlp-small workload's five products took 7.0 us
    against 6.9 with OpenBLAS's own kernels (SkylakeX) and 8.2 with its Haswell ones, the
    autoencoder's 256-32-256 layers' six 119 us against 147 and 133 (``docs/threads.md``,
    ``benchmarks/kernels.py``)."""
    shapes = ((rows, fan_in, units), (fan_in, rows, units), (rows, units, fan_in))
    own = dtype is not None and np.dtype(dtype) == np.float32
    return tuple(_layer_gemm(*shape, own, dtype, axis)
                 for shape, axis in zip(shapes, layer_axes(rows, fan_in, units)))


def _layer_gemm(m: int, k: int, n: int, own: bool, dtype, axis) -> Gemm | None:
    gemm = Gemm(m, k, n, dtype, axis)
    return gemm if gemm.blocks > 1 or (own and gemm.tiled) else None


def cut_in_two(length: int) -> int:
    """Where ``partition`` cuts a size of ``length`` into two blocks."""
    return round(length / (2 * ALIGN)) * ALIGN


class Gemm:
    """``out = a @ b`` for one shape ``(m, k) @ (k, n)``, the same bits on any thread count.

    Made once per shape by a layer, called every step. ``a`` and ``b`` may be transposed
    views; ``out`` is a C-contiguous ``(m, n)`` array and is returned.

    Where ``a`` and ``b`` are C-contiguous or transposed C-contiguous (and, for float64, zoo
    can call numpy's BLAS itself: ``zoo.kernels.cblas``), the blocks run as one job of
    ``zoo.kernels.workers.run_gemm``: numba kernels that call ``sgemm`` or BLAS's GEMM
    without the GIL, in workers that pick the job up within a microsecond. Otherwise each
    block is an ``sgemm.gemm`` or ``np.matmul`` of slices, run by ``threads.run_blocks``.
    Both compute the same blocks the same way, whatever the thread count.
    """

    def __init__(self, m: int, k: int, n: int, dtype=None, axis: int | None = None):
        self.shape = (m, k, n)
        self.axis, self.cuts = partition(m, k, n, axis)
        self.blocks = len(self.cuts) - 1
        self._bounds = np.array(self.cuts, np.int64)
        self._native: dict = {}  # {dtype: whether run_gemm computes it}
        self._parts: dict = {}  # {dtype: (blocks - 1, m, n) array}: a split k's later parts
        self.tiled = sgemm.suits(m, k, n)  # float32: sgemm's blocks, not BLAS's

    def __call__(self, a, b, out):
        tiled = self.tiled and out.dtype == np.float32
        if self.blocks == 1:
            if tiled and a.dtype == b.dtype == np.float32 and a.ndim == b.ndim == out.ndim == 2 \
                    and sgemm.gemm_if_supported(a, b, out):
                return out
            with threads.single_threaded_blas():
                np.matmul(a, b, out=out)
            return out
        dtype = out.dtype
        native = self._native.get(dtype)
        if native is None:
            from zoo.kernels.workers import MAX_GEMM_BLOCKS, gemm_supported

            native = self._native[dtype] = ((tiled or gemm_supported(dtype))
                                            and self.blocks <= MAX_GEMM_BLOCKS)
        m, k, n = self.shape
        parts = self._parts_of(dtype) if self.axis == 2 else None
        # BLAS reads and writes where the sizes say: anything else goes the checked way
        # (np.matmul raises on a shape that does not fit).
        if native and a.dtype == dtype and b.dtype == dtype and out.flags.c_contiguous \
                and a.shape == (m, k) and b.shape == (k, n) and out.shape == (m, n):
            a_base, ta = _row_major(a)
            b_base, tb = _row_major(b)
            if a_base is not None and b_base is not None:
                threads.run_gemm(self._bounds, self.axis, a_base, ta, b_base, tb, out, tiled,
                                 parts)
                return _add_parts(out, parts)
        cuts = self.cuts
        product = sgemm.gemm if tiled and sgemm.supports(a, b, out) else _matmul
        if self.axis == 1:
            def block(i):
                lo, hi = cuts[i], cuts[i + 1]
                product(a, b[:, lo:hi], out[:, lo:hi])
        elif self.axis == 0:
            def block(i):
                lo, hi = cuts[i], cuts[i + 1]
                product(a[lo:hi], b, out[lo:hi])
        else:
            def block(i):
                lo, hi = cuts[i], cuts[i + 1]
                product(a[:, lo:hi], b[lo:hi], parts[i - 1] if i else out)
        threads.run_blocks(block, self.blocks)
        return _add_parts(out, parts)

    def _parts_of(self, dtype):
        parts = self._parts.get(dtype)
        if parts is None:
            m, _, n = self.shape
            parts = self._parts[dtype] = np.empty((self.blocks - 1, m, n), dtype)
        return parts


def _add_parts(out, parts):
    """``out`` plus the later blocks' parts of a split inner dimension, in block order."""
    if parts is not None:
        for part in parts:
            np.add(out, part, out=out)
    return out


def _matmul(a, b, out):
    np.matmul(a, b, out=out)


def _row_major(x):
    """``(x, 0)`` if ``x`` is C-contiguous, ``(x.T, 1)`` if its transpose is, else
    ``(None, 0)``."""
    if x.flags.c_contiguous:
        return x, 0
    t = x.T
    if t.flags.c_contiguous:
        return t, 1
    return None, 0


def gemm_or_none(m: int, k: int, n: int, dtype=None, axis: int | None = None) -> Gemm | None:
    """A ``Gemm`` for a product large enough to cut into blocks, else None (a plain ``np.dot``
    is then the same single call, and cheaper to make)."""
    gemm = Gemm(m, k, n, dtype, axis)
    return gemm if gemm.blocks > 1 else None
