"""float32 products ``a @ b`` against a fixed ``b`` packed once: the recurrent step GEMMs.

A recurrent layer multiplies the same weights by a small state block at every time step
(32 x 128 by 128 x 512 for the ``lstm`` workload, 40 steps forward, 40 back). A BLAS call
repacks the whole weight matrix each time (256 KB here: a third of a 32-row call's time),
because it cannot know the matrix comes back. Here the weights are packed once per forward or
backward pass (``pack``) into column panels of ``PANEL`` floats, each panel's ``K`` rows
contiguous, and ``gemm`` runs a register tile of ``ROWS`` rows x one panel over every ``k``:
the panel (16 KB at K = 128) stays in L1 while the rows of ``a`` stream past it.

The tile is ``zoo.kernels.sgemm``'s: every element of ``c`` is one chain of multiply-adds in
the order of ``k``, so a row's result depends on that row and ``b`` only, the same bits for
any split of the rows between threads. On the lstm workload's products this runs at 190-220
GFLOP/s on one Sapphire Rapids core, against 100-140 for the BLAS call, whose packing
dominates at 32 rows.
"""

from __future__ import annotations

import numpy as np

from zoo.kernels._jit import njit
from zoo.kernels.sgemm import PANEL, ROWS, _pack_panel, edge_panel, fill_rows, full_tile, tile_rows


def pack(b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``b`` (K, N) float32 as ``(ceil(N / PANEL), K, PANEL)`` column panels, zero-padded,
    into ``out`` (that shape, C-contiguous) or a new array.

    ``b`` may be a strided view (``w.T``): packed in one copy, without a transposed copy first.
    A C-contiguous ``b`` and a transposed view of one (what the backward steps pack) are packed
    by ``sgemm``'s own panel packing, the transpose in 16 x 16 blocks transposed in registers:
    numpy's strided copy read it one float per cache line, 130 us for the lstm workload's
    128 x 512 weights, and took 17 us against 6 for the contiguous ones (warm).
    """
    k, n = b.shape
    panels = -(-n // PANEL)
    if out is None:
        out = np.empty((panels, k, PANEL), np.float32)
    if b.flags.c_contiguous:
        _pack_panels(b, False, out)
        return out
    if b.T.flags.c_contiguous:
        _pack_panels(b.T, True, out)
        return out
    whole = n // PANEL
    # The whole panels as a view of b, whatever its strides: one copy, no temporary.
    out[:whole] = np.lib.stride_tricks.as_strided(
        b, (whole, k, PANEL), (PANEL * b.strides[1], b.strides[0], b.strides[1]),
        writeable=False)
    if whole < panels:  # the last, partial panel: zeros past column n
        out[whole] = 0
        out[whole, :, :n - whole * PANEL] = b[:, whole * PANEL:]
    return out


@njit
def _pack_panels(stored, transposed, out):
    """``out`` = ``pack(b)`` for ``b`` = ``stored`` (C-contiguous), or its transpose where
    ``transposed``: each panel packed as ``sgemm`` packs one of ``b``'s."""
    n = stored.shape[0] if transposed else stored.shape[1]
    k = out.shape[1]
    width = out.shape[2]
    for p in range(out.shape[0]):
        _pack_panel(stored, transposed, 0, k, p * width, min(width, n - p * width), out[p])


def scratch() -> np.ndarray:
    """The work array ``gemm`` needs, one per thread."""
    return np.empty((ROWS, PANEL), np.float32)


@njit
def gemm(a, bp, c, scratch):
    """``c = a @ b`` for ``bp = pack(b)``: ``a`` (M, K), ``c`` (M, N) float32 with contiguous
    rows (row slices of larger arrays included); ``scratch`` is a ``(ROWS, PANEL)`` float32
    work array for the last, partial panel."""
    m, k = a.shape
    n = c.shape[1]
    width = bp.shape[2]
    lda = a.strides[0] // 4
    ldc = c.strides[0] // 4
    rows = np.empty(ROWS, np.int64)
    a_at = np.int64(a.ctypes.data)
    for p in range(bp.shape[0]):
        j0 = p * width
        cols = min(width, n - j0)
        b_at = np.int64(bp[p].ctypes.data)
        if cols < width:  # the zero-padded last panel: through the scratch tile
            edge_panel(a_at, rows, lda, 1, b_at, width, k, np.int64(c.ctypes.data) + 4 * j0,
                       ldc, 0, m, cols, False, scratch)
            continue
        i = 0
        while i < m:
            size = tile_rows(m - i)
            count = min(size, m - i)
            fill_rows(rows, i, count, lda)
            full_tile(size, True, a_at, np.int64(rows.ctypes.data), 1, b_at, width, k,
                      np.int64(c[i:, j0:].ctypes.data), ldc, count, False)
            i += count
