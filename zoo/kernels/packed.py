"""float32 products ``a @ b`` against a fixed ``b`` packed once: the recurrent step GEMMs.

A recurrent layer multiplies the same weights by a small state block at every time step
(32 x 128 by 128 x 512 for the ``lstm`` workload, 40 steps forward, 40 back). A BLAS call
repacks the whole weight matrix each time (256 KB here: a third of a 32-row call's time),
because it cannot know the matrix comes back. Here the weights are packed once per forward or
backward pass (``pack``) into column panels of ``PANEL`` floats, each panel's ``K`` rows
contiguous, and ``gemm`` runs a register tile of ``ROWS`` rows x one panel over every ``k``:
the panel (16 KB at K = 128) stays in L1 while the rows of ``a`` stream past it.

The tile is written in LLVM IR (``_tile``): numba cannot hold an accumulator tile in
registers, and one tile of ``ROWS x PANEL`` accumulators is the whole point. Every element of
``c`` is ``fma(a[i, K-1], b[K-1, j], ... fma(a[i, 0], b[0, j], 0))``, the products added in
the order of ``k`` (fused multiply-adds where the CPU has them, ``FUSED``), whatever the tile
or block it falls in, so a row's result depends on that row and ``b`` only: the same bits for
any split of the rows between threads. The tile shape is chosen for the CPU (it changes no
result): 8 rows x 32 columns (16 accumulators of 16 floats) where AVX-512 gives 32 vector
registers, 4 x 16 elsewhere. On the lstm workload's products this runs at 190-220 GFLOP/s on
one Sapphire Rapids core, against 100-140 for the BLAS call, whose packing dominates at 32 rows.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from zoo.kernels._jit import njit

LANES = 16  # floats in one LLVM vector of the tile


def _host_features() -> dict:
    try:
        import llvmlite.binding as llvm

        return dict(llvm.get_host_cpu_features())
    except Exception:  # noqa: BLE001  (no feature list: the small, unfused tile is safe)
        return {}


_FEATURES = _host_features()
# A tile of ROWS x PANEL accumulators: 8 x 32 (16 registers of 16 floats) with AVX-512's 32
# registers, 4 x 16 (8 registers of 8 floats) with AVX2's or NEON's 16.
ROWS, PANEL = (8, 2 * LANES) if _FEATURES.get("avx512f") else (4, LANES)
# Multiply-adds are fused (one rounding) where the CPU has the instruction, and always two
# roundings elsewhere: chosen here once, never by the compiler case by case.
FUSED = bool(_FEATURES.get("fma") or _FEATURES.get("neon") or _FEATURES.get("fp-armv8"))


def _make_tile(rows: int, vectors: int):
    """An intrinsic computing one ``rows x (vectors * LANES)`` tile of ``c = a @ b``."""

    @intrinsic
    def tile(typingctx, a, lda, b, k, c, ldc):
        sig = types.void(a, lda, b, k, c, ldc)

        def codegen(context, builder, signature, args):
            a_int, lda_v, b_int, k_v, c_int, ldc_v = args
            i64 = ir.IntType(64)
            f32 = ir.FloatType()
            vec = ir.VectorType(f32, LANES)
            fptr = f32.as_pointer()
            vptr = vec.as_pointer()
            lda_v = builder.sext(lda_v, i64) if lda_v.type.width < 64 else lda_v
            ldc_v = builder.sext(ldc_v, i64) if ldc_v.type.width < 64 else ldc_v
            k_v = builder.sext(k_v, i64) if k_v.type.width < 64 else k_v
            pa = builder.inttoptr(a_int, fptr)
            pb = builder.inttoptr(b_int, fptr)
            pc = builder.inttoptr(c_int, fptr)
            fma = builder.module.declare_intrinsic(
                f"llvm.fma.v{LANES}f32", fnty=ir.FunctionType(vec, [vec, vec, vec]))

            def multiply_add(x, y, z):
                if FUSED:
                    return builder.call(fma, [x, y, z])
                return builder.fadd(builder.fmul(x, y), z)

            width = vectors * LANES
            zero = ir.Constant(vec, [0.0] * LANES)
            zeros_mask = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)

            entry = builder.basic_block
            loop = builder.append_basic_block("tile.loop")
            done = builder.append_basic_block("tile.done")
            builder.cbranch(builder.icmp_signed(">", k_v, ir.Constant(i64, 0)), loop, done)

            builder.position_at_end(loop)
            kk = builder.phi(i64)
            kk.add_incoming(ir.Constant(i64, 0), entry)
            acc = [[builder.phi(vec) for _ in range(vectors)] for _ in range(rows)]
            for row in acc:
                for phi in row:
                    phi.add_incoming(zero, entry)
            base = builder.mul(kk, ir.Constant(i64, width))
            bv = [builder.load(builder.bitcast(
                builder.gep(pb, [builder.add(base, ir.Constant(i64, v * LANES))]), vptr),
                align=4) for v in range(vectors)]
            new = []
            for r in range(rows):
                at = builder.add(builder.mul(ir.Constant(i64, r), lda_v), kk)
                scalar = builder.load(builder.gep(pa, [at]), align=4)
                one = builder.insert_element(ir.Constant(vec, ir.Undefined), scalar,
                                             ir.Constant(ir.IntType(32), 0))
                splat = builder.shuffle_vector(one, ir.Constant(vec, ir.Undefined), zeros_mask)
                new.append([multiply_add(splat, bv[v], acc[r][v])
                            for v in range(vectors)])
            k_next = builder.add(kk, ir.Constant(i64, 1))
            end = builder.basic_block
            kk.add_incoming(k_next, end)
            for r in range(rows):
                for v in range(vectors):
                    acc[r][v].add_incoming(new[r][v], end)
            builder.cbranch(builder.icmp_signed("<", k_next, k_v), loop, done)

            builder.position_at_end(done)
            results = []
            for r in range(rows):  # every phi first: LLVM wants them at the top of a block
                for v in range(vectors):
                    result = builder.phi(vec)
                    result.add_incoming(zero, entry)
                    result.add_incoming(new[r][v], end)
                    results.append((r, v, result))
            for r, v, result in results:
                at = builder.add(builder.mul(ir.Constant(i64, r), ldc_v),
                                 ir.Constant(i64, v * LANES))
                builder.store(result, builder.bitcast(builder.gep(pc, [at]), vptr), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return tile


_tile_full = _make_tile(ROWS, PANEL // LANES)
_tile_row = _make_tile(1, PANEL // LANES)


def pack(b: np.ndarray) -> np.ndarray:
    """``b`` (K, N) float32 as ``(ceil(N / PANEL), K, PANEL)`` column panels, zero-padded.

    ``b`` may be a strided view (``w.T``): packed in one copy, without a transposed copy first.
    """
    k, n = b.shape
    panels = -(-n // PANEL)
    if n % PANEL == 0:
        return np.ascontiguousarray(b.reshape(k, panels, PANEL).transpose(1, 0, 2))
    padded = np.zeros((k, panels * PANEL), np.float32)
    padded[:, :n] = b
    return np.ascontiguousarray(padded.reshape(k, panels, PANEL).transpose(1, 0, 2))


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
    lds = scratch.strides[0] // 4
    for p in range(bp.shape[0]):
        j0 = p * width
        cols = min(width, n - j0)
        b_at = bp[p].ctypes.data
        i = 0
        while i < m:
            rows = ROWS if m - i >= ROWS else 1
            a_at = a[i:].ctypes.data
            if cols == width:
                if rows == ROWS:
                    _tile_full(a_at, lda, b_at, k, c[i:, j0:].ctypes.data, ldc)
                else:
                    _tile_row(a_at, lda, b_at, k, c[i:, j0:].ctypes.data, ldc)
            else:
                if rows == ROWS:
                    _tile_full(a_at, lda, b_at, k, scratch.ctypes.data, lds)
                else:
                    _tile_row(a_at, lda, b_at, k, scratch.ctypes.data, lds)
                for r in range(rows):
                    for j in range(cols):
                        c[i + r, j0 + j] = scratch[r, j]
            i += rows
