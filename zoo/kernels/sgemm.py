"""zoo's own float32 matrix product: the same bits on any thread count, CPU and BLAS build.

Every float32 product of a training step (``zoo.kernels.blas.Gemm``, the fused Dense stack,
the recurrent step products) runs here instead of BLAS. Two reasons:

- **The same bits by construction.** Every element of ``c = a @ b`` is one chain of
  multiply-adds in the order of ``k``, ``fma(a[i, K-1], b[K-1, j], ... fma(a[i, 0], b[0, j],
  0))``, fused where the CPU has FMA (``FUSED``), whatever tile, block or thread computes it.
  A product cut into row or column blocks therefore gives the same bits however the blocks
  are shared, and the register tile's shape (chosen for the CPU) changes no result. A BLAS
  build's bits depend on its kernel family (``OPENBLAS_CORETYPE``) and blocking; these do not.
- **Speed at the sizes a training step has.** BLAS packs both operands on every call, which
  costs a large share of the small products of a step (a 128-row batch). Here ``b`` is read
  in place where its rows are contiguous, and only ``a`` is read with any strides (so
  ``x.T @ dz`` needs no copy). Measured on one Sapphire Rapids core, 128x784 by 784x256:
  about 175 GFLOP/s against 153 for OpenBLAS's SkylakeX kernels and 113 for its Haswell ones.

The tile (``make_tile``) is written in LLVM IR: numba cannot keep an accumulator tile in
registers, and a tile of ``ROWS x PANEL`` accumulators is the whole point. ``ROWS x PANEL``
is 8 x 32 (16 registers of 16 floats) where AVX-512 gives 32 vector registers, 6 x 16 with
AVX's 16, as numba compiles for the CPU (``_tile_shape``); a last panel of at most 16 columns
takes a tile one vector wide (``tile_narrow``), and with the 6-row tile the last rows take
4-row tiles where 6 would compute rows for nothing (``tile_rows``). A last panel narrower than
the tile is read and written through masked vector loads and stores with AVX-512, through a
zero-padded copy and a scratch tile without it (``MASKED_MEMORY``, ``edge_panel``).

Loop order (``gemm_at``): blocks of ``MC`` rows of ``a`` (kept in L2) by ``KC`` of ``k`` by
panels of ``PANEL`` columns of ``b`` (kept in L1) by tiles of ``ROWS`` rows. A tile goes on
from the value stored by the previous ``k`` block, a float32 stored exactly, so the
``k`` blocking does not change the chain either.
"""

from __future__ import annotations

import platform

import numpy as np
from llvmlite import ir
from numba import carray, types
from numba.extending import intrinsic

from zoo.errors import DataError, describe_array
from zoo.kernels import atomics
from zoo.kernels._jit import njit

LANES = 16  # floats in one LLVM vector of the tile


def _target_features() -> dict:
    """The CPU features numba compiles for, as ``{name: bool}``.

    Those are the host's unless ``NUMBA_CPU_FEATURES`` (or ``NUMBA_CPU_NAME=generic``) names
    others, say for a kernel cache shared by several machines, and without the AVX family
    where numba turns it off (``NUMBA_ENABLE_AVX=0``, and by default on CPU names a VM may
    report falsely). The tile must fit what the code is compiled for: the AVX-512 tile
    compiled without AVX-512 spills its accumulators to memory, and a fused multiply-add
    compiled without FMA becomes a call to the C library's ``fmaf``.
    """
    try:
        from numba.core import codegen, config

        flat = config.CPU_FEATURES  # type: ignore[attr-defined]
        if flat is None:
            flat = codegen.get_host_cpu_features()
    except Exception:  # noqa: BLE001  (no feature list: the small, unfused tile is safe)
        return {}
    features = {item[1:]: item[0] == "+" for item in flat.split(",") if item[:1] in ("+", "-")}
    if platform.machine().lower() in ("x86_64", "amd64"):
        features.setdefault("sse2", True)  # x86-64's baseline, even for NUMBA_CPU_NAME=generic
    # LLVM turns off what depends on a feature turned off: FMA and AVX2 are VEX-encoded.
    if not features.get("avx"):
        for name in ("avx2", "fma", "avx512f"):
            features.pop(name, None)
    return features


def avx2_target() -> dict | None:
    """The environment (``NUMBA_CPU_NAME``, ``NUMBA_CPU_FEATURES``) under which numba compiles
    zoo's kernels for this x86-64 CPU without its AVX-512: the code a machine with AVX2 only
    runs (a smaller tile, 256-bit vectors). None where the CPU has no AVX-512 to take away.
    For the tests and benchmarks that check such machines get the same bits, and measure them.
    """
    if not _target_features().get("avx512f"):
        return None
    import llvmlite.binding as llvm

    features = ",".join(
        ("+" if on and not name.startswith(("avx512", "avx10", "amx")) else "-") + name
        for name, on in llvm.get_host_cpu_features().items())
    return {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": features}


def _tile_shape(features: dict) -> tuple[int, int]:
    """``(ROWS, PANEL)``: the largest tile whose accumulators, ``b``'s vectors and ``a``'s
    broadcast value fit the vector registers, so nothing spills to memory, with enough
    independent accumulators to hide the multiply-add's latency (4-5 cycles, 2 a cycle)."""
    if features.get("avx512f"):  # 32 registers of 16 floats: 16 accumulators
        return 8, 2 * LANES
    if features.get("avx"):  # 16 registers of 8 floats: 12 accumulators (BLIS's 6 x 16)
        return 6, LANES
    if features.get("sse2"):  # 16 registers of 4 floats: 8 accumulators
        return 2, LANES
    return 4, LANES  # NEON's 32 registers of 4 floats: 16 accumulators


_FEATURES = _target_features()
ROWS, PANEL = _tile_shape(_FEATURES)
# Multiply-adds are fused (one rounding) where the CPU has the instruction, and always two
# roundings elsewhere: chosen here once, never by the compiler case by case.
FUSED = bool(_FEATURES.get("fma") or _FEATURES.get("neon") or _FEATURES.get("fp-armv8"))
# Blocking: KC values of k per pass (a KC x PANEL panel of b, 64 KB, stays in L1/L2 while
# MC rows of a, MC x KC x 4 = 512 KB, stay in L2).
KC = 512
MC = 256
# Products whose operands a and b hold at most this many elements each (1 MB: both fit in a
# core's L2 together) are sgemm's: a training step's batch against a layer's weights.
# Larger ones are BLAS's, whose packing of both operands wins there (one core, GFLOP/s,
# sgemm against OpenBLAS SkylakeX: 128x784x256 146-169 / 146-152, 256x1024x1024 136 / 159,
# 2048^3 121 / 172, 2048x512x2048 with a transposed a 74 / 169).
MAX_OPERAND = 1 << 18
# A panel of b is copied into a contiguous KC x PANEL block (which streams from L1 far better
# than rows ldb apart) when at least this many rows of a will use it: 16 x 150 by 150 x 8704
# runs at 82 GFLOP/s in place and 77 copied, 128 x 784 by 784 x 256 at 149 and 165.
PACK_ROWS = 4 * ROWS
NARROW = LANES  # columns of the narrow tile
# Whether a partial panel's tile reads b and reads and writes c with masked vector loads and
# stores (``tile_partial``). AVX-512 has them natively. AVX2's (VMASKMOVPS) are slow on AMD:
# one EPYC core under an AVX2 target took 193 ns for a 6 x 10 tile over k = 64 with them
# against 106 ns for the full tile, 40 ns each for the loads and the stores (the stores are
# microcoded). NEON has none. There the partial panel is a zero-padded copy of b, and the
# tile writes a scratch tile whose first ``cols`` columns are copied to c.
MASKED_MEMORY = bool(_FEATURES.get("avx512f"))


def _splat(builder, value, element):
    """A vector of ``LANES`` copies of ``value`` (of LLVM type ``element``)."""
    vector = ir.VectorType(element, LANES)
    one = builder.insert_element(ir.Constant(vector, ir.Undefined), value,
                                 ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(one, ir.Constant(vector, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))


def _first_lanes(builder, count):
    """The mask of a vector's first ``count`` lanes (an i64 value; all where it is LANES or
    more, none where it is 0 or less)."""
    i64 = ir.IntType(64)
    lanes = ir.Constant(ir.VectorType(i64, LANES), list(range(LANES)))
    return builder.icmp_signed("<", lanes, _splat(builder, count, i64))


def _masked_memory(builder):
    """LLVM's masked vector load and store of ``LANES`` floats: ``load(pointer, mask)`` (zeros
    where the mask is off) and ``store(value, pointer, mask)``."""
    vec = ir.VectorType(ir.FloatType(), LANES)
    vptr, i32 = vec.as_pointer(), ir.IntType(32)
    mask = ir.VectorType(ir.IntType(1), LANES)
    load = builder.module.declare_intrinsic(
        f"llvm.masked.load.v{LANES}f32.p0v{LANES}f32",
        fnty=ir.FunctionType(vec, [vptr, i32, mask, vec]))
    store = builder.module.declare_intrinsic(
        f"llvm.masked.store.v{LANES}f32.p0v{LANES}f32",
        fnty=ir.FunctionType(ir.VoidType(), [vec, vptr, i32, mask]))
    align = ir.Constant(i32, 4)
    return (lambda pointer, on: builder.call(load, [pointer, align, on,
                                                    ir.Constant(vec, [0.0] * LANES)]),
            lambda value, pointer, on: builder.call(store, [value, pointer, align, on]))


def make_tile(rows: int, vectors: int, b_table: bool = False, masked: bool = False):
    """An intrinsic computing one ``rows x (vectors * LANES)`` tile of ``c (+)= a @ b``.

    ``tile(a, a_rows, a_step, b, b_step, k, c, ldc, store_rows, accumulate)``, addresses as
    integers, strides in elements (``masked``: one more argument, ``cols``, below):

    - ``a[r, kk]`` is at ``a + a_rows[r] + kk * a_step`` (``a_rows``: the address of ``rows``
      int64 offsets), so ``a`` may be transposed or gathered (a convolution's taps);
    - ``b[kk, j]`` is at ``b + kk * b_step + j``, or with ``b_table`` at
      ``b + b_step[kk] + j`` (``b_step``: the address of ``k`` int64 offsets);
    - ``c[r, j]`` is at ``c + r * ldc + j``; rows from ``store_rows`` on are computed but not
      stored (their ``a_rows`` may repeat a valid row); with ``accumulate`` the chain goes on
      from the values in ``c`` instead of from zero;
    - ``masked``: only the first ``cols`` columns of ``b`` and ``c`` are read and written
      (masked vector loads and stores), the others computed from zeros. A product's last,
      partial panel then needs neither a zero-padded copy of ``b`` nor a copy of ``c``.
    """

    def build(typingctx, a, a_rows, a_step, b, b_step, k, c, ldc, store_rows, accumulate,
              cols=None):
        sig = types.void(a, a_rows, a_step, b, b_step, k, c, ldc, store_rows, accumulate,
                         *(() if cols is None else (cols,)))

        def codegen(context, builder, signature, args):
            i64 = ir.IntType(64)
            f32 = ir.FloatType()
            vec = ir.VectorType(f32, LANES)
            fptr = f32.as_pointer()
            vptr = vec.as_pointer()
            iptr = i64.as_pointer()

            def wide(v):
                return builder.sext(v, i64) if v.type.width < 64 else v

            a_int, rows_int, a_step_v, b_int, b_step_v, k_v, c_int, ldc_v, store_v, acc_v = [
                wide(v) for v in args[:10]]
            pa = builder.inttoptr(a_int, fptr)
            pb = builder.inttoptr(b_int, fptr)
            pc = builder.inttoptr(c_int, fptr)
            prow = builder.inttoptr(rows_int, iptr)
            ptab = builder.inttoptr(b_step_v, iptr) if b_table else None
            fma = builder.module.declare_intrinsic(
                f"llvm.fma.v{LANES}f32", fnty=ir.FunctionType(vec, [vec, vec, vec]))

            def multiply_add(x, y, z):
                if FUSED:
                    return builder.call(fma, [x, y, z])
                return builder.fadd(builder.fmul(x, y), z)

            def c_at(r, v):
                at = builder.add(builder.mul(ir.Constant(i64, r), ldc_v),
                                 ir.Constant(i64, v * LANES))
                return builder.bitcast(builder.gep(pc, [at]), vptr)

            if masked:  # lane j of vector v is a column where v * LANES + j < cols
                cols_v = wide(args[10])
                masks = [_first_lanes(builder, builder.sub(cols_v, ir.Constant(i64, v * LANES)))
                         for v in range(vectors)]
                masked_load, masked_store = _masked_memory(builder)

            def load(pointer, v):
                if not masked:
                    return builder.load(pointer, align=4)
                return masked_load(pointer, masks[v])

            def store(value, pointer, v):
                if not masked:
                    builder.store(value, pointer, align=4)
                    return
                masked_store(value, pointer, masks[v])

            zero = ir.Constant(vec, [0.0] * LANES)
            zeros_mask = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)
            a_rows = [builder.load(builder.gep(prow, [ir.Constant(i64, r)]))
                      for r in range(rows)]

            # start values: zero, or c's (rows that are not stored read row 0: valid memory)
            load_block = builder.append_basic_block("tile.load")
            start_block = builder.append_basic_block("tile.start")
            entry = builder.basic_block
            builder.cbranch(builder.icmp_signed("!=", acc_v, ir.Constant(i64, 0)),
                            load_block, start_block)
            builder.position_at_end(load_block)
            loaded = []
            for r in range(rows):
                valid = builder.icmp_signed("<", ir.Constant(i64, r), store_v)
                row = builder.select(valid, ir.Constant(i64, r), ir.Constant(i64, 0))
                loaded.append([load(builder.bitcast(builder.gep(pc, [builder.add(
                    builder.mul(row, ldc_v), ir.Constant(i64, v * LANES))]), vptr), v)
                    for v in range(vectors)])
            builder.branch(start_block)
            builder.position_at_end(start_block)
            start = []
            for r in range(rows):
                start.append([])
                for v in range(vectors):
                    phi = builder.phi(vec)
                    phi.add_incoming(zero, entry)
                    phi.add_incoming(loaded[r][v], load_block)
                    start[r].append(phi)

            loop = builder.append_basic_block("tile.loop")
            done = builder.append_basic_block("tile.done")
            builder.cbranch(builder.icmp_signed(">", k_v, ir.Constant(i64, 0)), loop, done)

            builder.position_at_end(loop)
            kk = builder.phi(i64)
            kk.add_incoming(ir.Constant(i64, 0), start_block)
            acc = [[builder.phi(vec) for _ in range(vectors)] for _ in range(rows)]
            for r in range(rows):
                for v in range(vectors):
                    acc[r][v].add_incoming(start[r][v], start_block)
            if b_table:
                base = builder.load(builder.gep(ptab, [kk]))
            else:
                base = builder.mul(kk, b_step_v)
            bv = [load(builder.bitcast(
                builder.gep(pb, [builder.add(base, ir.Constant(i64, v * LANES))]), vptr), v)
                for v in range(vectors)]
            a_k = builder.mul(kk, a_step_v)
            new = []
            for r in range(rows):
                scalar = builder.load(builder.gep(pa, [builder.add(a_rows[r], a_k)]), align=4)
                one = builder.insert_element(ir.Constant(vec, ir.Undefined), scalar,
                                             ir.Constant(ir.IntType(32), 0))
                splat = builder.shuffle_vector(one, ir.Constant(vec, ir.Undefined), zeros_mask)
                new.append([multiply_add(splat, bv[v], acc[r][v]) for v in range(vectors)])
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
                results.append([])
                for v in range(vectors):
                    result = builder.phi(vec)
                    result.add_incoming(start[r][v], start_block)
                    result.add_incoming(new[r][v], end)
                    results[r].append(result)
            for r in range(rows):
                if r == 0:  # a tile always stores its first row
                    for v in range(vectors):
                        store(results[r][v], c_at(r, v), v)
                    continue
                block = builder.append_basic_block(f"tile.store{r}")
                after = builder.append_basic_block(f"tile.after{r}")
                builder.cbranch(builder.icmp_signed("<", ir.Constant(i64, r), store_v),
                                block, after)
                builder.position_at_end(block)
                for v in range(vectors):
                    store(results[r][v], c_at(r, v), v)
                builder.branch(after)
                builder.position_at_end(after)
            return context.get_dummy_value()

        return sig, codegen

    if masked:
        @intrinsic
        def tile(typingctx, a, a_rows, a_step, b, b_step, k, c, ldc, store_rows, accumulate,
                 cols):
            return build(typingctx, a, a_rows, a_step, b, b_step, k, c, ldc, store_rows,
                         accumulate, cols)
    else:
        @intrinsic
        def tile(typingctx, a, a_rows, a_step, b, b_step, k, c, ldc, store_rows, accumulate):
            return build(typingctx, a, a_rows, a_step, b, b_step, k, c, ldc, store_rows,
                         accumulate)

    tile.width = vectors * LANES  # type: ignore[attr-defined]
    return tile


tile = make_tile(ROWS, PANEL // LANES)
tile_table = make_tile(ROWS, PANEL // LANES, b_table=True)
# A product's last panel of at most LANES columns (a 10-class layer's whole output) takes a
# tile of one vector where the panel is two: half the multiply-adds of the wide tile.
tile_narrow = make_tile(ROWS, 1)
# The same two for a last panel narrower than the tile (``masked``).
tile_partial = make_tile(ROWS, PANEL // LANES, masked=True)
tile_narrow_partial = make_tile(ROWS, 1, masked=True)
# AVX2's 6-row tile leaves a remainder of 2 rows in a batch of 32 or 128: its last tile
# computed 6 rows to keep 2, a ninth of a 32-row product. Tiles of 4 rows (8 accumulators)
# take such remainders instead (``tile_rows``): 32 rows are 4 x 6 + 2 x 4. One EPYC core,
# AVX2 target, 30 x 64 by 64 x 64 took 2.71 us and 32 x 64 3.14 us with 6-row tiles.
SMALL_ROWS = 4 if ROWS == 6 else ROWS
HAS_SMALL = SMALL_ROWS != ROWS
tile_small = make_tile(SMALL_ROWS, PANEL // LANES)
tile_small_narrow = make_tile(SMALL_ROWS, 1)


def _transpose_rows(builder, rows):
    """Transpose ``LANES`` vectors of ``LANES`` floats in place: in four rounds of shuffles,
    the rows ``h`` apart (h = 8, 4, 2, 1) swap their off-diagonal ``h``-wide blocks."""
    i32 = ir.IntType(32)
    h = LANES // 2
    while h:
        low = [j if j & h == 0 else LANES + j - h for j in range(LANES)]
        high = [j + h if j & h == 0 else LANES + j for j in range(LANES)]
        for r in range(LANES):
            if r & h:
                continue
            x, y = rows[r], rows[r + h]
            rows[r] = builder.shuffle_vector(x, y, ir.Constant(ir.VectorType(i32, LANES), low))
            rows[r + h] = builder.shuffle_vector(x, y,
                                                 ir.Constant(ir.VectorType(i32, LANES), high))
        h //= 2


@intrinsic
def transpose_block(typingctx, src, src_step, dst, dst_step):
    """``dst[c, r] = src[r, c]`` for a ``LANES x LANES`` block of float32: ``src`` and
    ``dst`` addresses as integers, rows ``src_step`` and ``dst_step`` elements apart.

    Sixteen vector loads, four rounds of sixteen two-vector shuffles, sixteen vector stores:
    the rows ``h`` apart (h = 8, 4, 2, 1) swap their off-diagonal ``h``-wide blocks, which
    leaves the block transposed. The element-by-element copy it replaces (a transposed ``b``'s
    panel, ``_pack_panel``) read one float per cache line it touched and took about 150 us
    of a 128x784 by 784x256 product on one core; a plain copy moves the same bits.
    """
    sig = types.void(src, src_step, dst, dst_step)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        vec = ir.VectorType(ir.FloatType(), LANES)
        src_v, src_step_v, dst_v, dst_step_v = [
            builder.sext(v, i64) if v.type.width < 64 else v for v in args]
        fptr = ir.FloatType().as_pointer()
        psrc, pdst = builder.inttoptr(src_v, fptr), builder.inttoptr(dst_v, fptr)

        def row(base, step, r):
            at = builder.mul(ir.Constant(i64, r), step)
            return builder.bitcast(builder.gep(base, [at]), vec.as_pointer())

        rows = [builder.load(row(psrc, src_step_v, r), align=4) for r in range(LANES)]
        _transpose_rows(builder, rows)
        for r in range(LANES):
            builder.store(rows[r], row(pdst, dst_step_v, r), align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def transpose_edge(typingctx, src, src_step, dst, dst_step, rows, cols):
    """``transpose_block`` for a block of ``rows x cols`` (each at most ``LANES``): only those
    are read, ``cols`` rows of ``LANES`` floats written, zeros past ``rows`` in each. The last,
    partial blocks of a transposed panel (a 10-class layer's weights have 10 columns), which
    element by element took longer than the product they fed."""
    sig = types.void(src, src_step, dst, dst_step, rows, cols)

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        vptr = ir.VectorType(ir.FloatType(), LANES).as_pointer()
        src_v, src_step_v, dst_v, dst_step_v, rows_v, cols_v = [
            builder.sext(v, i64) if v.type.width < 64 else v for v in args]
        fptr = ir.FloatType().as_pointer()
        psrc, pdst = builder.inttoptr(src_v, fptr), builder.inttoptr(dst_v, fptr)
        masked_load, _ = _masked_memory(builder)
        in_cols = _first_lanes(builder, cols_v)

        def row(base, step, r):
            at = builder.mul(ir.Constant(i64, r), step)
            return builder.bitcast(builder.gep(base, [at]), vptr)

        rows = []
        for r in range(LANES):  # rows past ``rows`` read nothing: an all-false mask
            valid = builder.icmp_signed("<", ir.Constant(i64, r), rows_v)
            mask = builder.and_(in_cols, _splat(builder, valid, ir.IntType(1)))
            rows.append(masked_load(row(psrc, src_step_v, r), mask))
        _transpose_rows(builder, rows)
        for r in range(LANES):  # row r of the result only where r < cols
            block = builder.append_basic_block(f"edge.store{r}")
            after = builder.append_basic_block(f"edge.after{r}")
            builder.cbranch(builder.icmp_signed("<", ir.Constant(i64, r), cols_v), block,
                            after)
            builder.position_at_end(block)
            builder.store(rows[r], row(pdst, dst_step_v, r), align=4)
            builder.branch(after)
            builder.position_at_end(after)
        return context.get_dummy_value()

    return sig, codegen


@njit
def fill_rows(table, first, count, stride):
    """``table[r]``: the offset of row ``first + r`` (``stride`` apart), the last of ``count``
    rows repeated past it."""
    for r in range(table.shape[0]):
        table[r] = (first + min(r, count - 1)) * stride


@njit
def _pack_panel(b, tb, k0, kc, j0, cols, panel):
    """``panel[kk, j] = op(b)[k0 + kk, j0 + j]`` for ``cols`` columns, zeros after them
    (``b``: the stored 2-D array)."""
    width = panel.shape[1]
    if tb:  # op(b)[kk, j] = b[j, kk]: LANES x LANES blocks transposed in registers, the
        # partial ones at the edges too (zeros past ``cols`` in their columns)
        ldb = b.shape[1]
        for kk in range(0, kc, LANES):
            for j in range(0, cols, LANES):
                src = b.ctypes.data + 4 * ((j0 + j) * ldb + k0 + kk)
                dst = panel.ctypes.data + 4 * (kk * width + j)
                if kc - kk >= LANES and cols - j >= LANES:
                    transpose_block(src, ldb, dst, width)
                else:
                    transpose_edge(src, ldb, dst, width, min(LANES, cols - j),
                                   min(LANES, kc - kk))
    else:
        for kk in range(kc):
            src = b[k0 + kk, j0:]
            dst = panel[kk]
            for j in range(cols):
                dst[j] = src[j]
    if cols < width:
        for kk in range(kc):
            for j in range(cols, width):
                panel[kk, j] = 0.0


@njit
def tile_rows(left):
    """How many rows the next tile takes with ``left`` rows to go: ``ROWS``, or ``SMALL_ROWS``
    where smaller tiles compute fewer rows for nothing (6 and 4 rows: 2 or 3 left take a
    4-row tile, 7 or 8 two of them). A tile computes each of its rows as every tile does, so
    which tile takes a row changes no bit."""
    if SMALL_ROWS == ROWS or ROWS < left <= 2 * SMALL_ROWS or left <= SMALL_ROWS:
        return SMALL_ROWS
    return ROWS


@njit
def full_tile(rows, wide, a, rows_at, a_step, b, b_step, k, c, ldc, count, more):
    """``tile`` (``wide``: ``PANEL`` columns) or ``tile_narrow`` (``NARROW``), of ``rows``
    rows (``ROWS`` or ``SMALL_ROWS``, ``tile_rows``), for the callers that need both heights:
    each tile's code is large, so it has one call site here (``gemm_at`` keeps its own calls
    of the full-height tiles inline)."""
    if HAS_SMALL and rows == SMALL_ROWS:
        if wide:
            tile_small(a, rows_at, a_step, b, b_step, k, c, ldc, count, more)
        else:
            tile_small_narrow(a, rows_at, a_step, b, b_step, k, c, ldc, count, more)
    elif wide:
        tile(a, rows_at, a_step, b, b_step, k, c, ldc, count, more)
    else:
        tile_narrow(a, rows_at, a_step, b, b_step, k, c, ldc, count, more)


@njit
def edge_panel(a, row_table, row_stride, a_step, b, width, kc, c, ldc, i0, i1, cols, more,
               edge):
    """Rows ``i0:i1`` of a partial panel, its first ``cols`` of ``width`` columns, without
    masked memory (``MASKED_MEMORY``; ``zoo.kernels.packed`` too): ``b`` is the panel
    zero-padded, ``c`` the address of the panel's first column in row 0 (rows ``ldc``
    apart), and each tile works in ``edge`` (a ``ROWS x PANEL`` scratch tile), its start
    values copied in where it goes on from ``c`` (``more``), then its first ``cols`` columns
    copied out. The copies move float32 values exactly: the same bits as the masked tile."""
    cf = carray(atomics.pointer(c, np.float32(0)), max((i1 - 1) * ldc + cols, 0))
    i = i0
    while i < i1:
        rows = tile_rows(i1 - i)
        count = min(rows, i1 - i)
        fill_rows(row_table, i, count, row_stride)
        at = i * ldc
        if more:
            for r in range(count):
                for j in range(cols):
                    edge[r, j] = cf[at + r * ldc + j]
        full_tile(rows, width == PANEL, a, np.int64(row_table.ctypes.data), a_step, b, width,
                  kc, np.int64(edge.ctypes.data), PANEL, count, more)
        for r in range(count):
            for j in range(cols):
                cf[at + r * ldc + j] = edge[r, j]
        i += count


@njit
def gemm_at(ta, tb, m, n, k, a, lda, b, ldb, c, ldc, accumulate):
    """``c (+)= op(a) @ op(b)``, float32, all three row-major at the addresses ``a``, ``b``,
    ``c`` (integers) with leading dimensions ``lda``, ``ldb``, ``ldc`` in elements; ``op`` is
    the transpose where ``ta``/``tb`` is true. ``accumulate``: add to ``c``."""
    rows_a = k if ta else m  # a's stored shape
    cols_a = m if ta else k
    b2 = carray(atomics.pointer(b, np.float32(0)), (n if tb else k, ldb))
    cf = carray(atomics.pointer(c, np.float32(0)), max((m - 1) * ldc + n, 0))
    row_table = np.empty(ROWS, np.int64)
    depth = min(KC, max(k, 1))
    packs = tb or (min(m, MC) >= PACK_ROWS and k * n > 8192)
    # without masked memory a partial last panel is always copied (zero-padded)
    partial = not MASKED_MEMORY and n % NARROW != 0
    panel = np.empty((depth if packs or partial else 0, PANEL), np.float32)
    narrow = panel.reshape(panel.size)[:panel.shape[0] * NARROW].reshape((panel.shape[0], NARROW))
    edge = np.empty((ROWS if partial else 0, PANEL), np.float32)  # edge_panel's scratch tile
    a_step = lda if ta else 1
    row_stride = 1 if ta else lda
    if m <= 0 or n <= 0 or rows_a <= 0 or cols_a <= 0:
        if not accumulate:
            for i in range(m):
                for j in range(n):
                    cf[i * ldc + j] = 0.0
        return
    for i0 in range(0, m, MC):
        i1 = min(m, i0 + MC)
        for k0 in range(0, k, KC):
            kc = min(KC, k - k0)
            more = accumulate or k0 > 0
            a_k0 = a + 4 * k0 * a_step
            for j0 in range(0, n, PANEL):
                cols = min(PANEL, n - j0)
                width = PANEL if cols > NARROW else NARROW
                if not MASKED_MEMORY and cols < width:
                    _pack_panel(b2, tb, k0, kc, j0, cols, panel if width == PANEL else narrow)
                    edge_panel(a_k0, row_table, row_stride, a_step, np.int64(panel.ctypes.data),
                               width, kc, c + 4 * j0, ldc, i0, i1, cols, more, edge)
                    continue
                if packs:
                    _pack_panel(b2, tb, k0, kc, j0, cols, panel if width == PANEL else narrow)
                    b_at, b_step = np.int64(panel.ctypes.data), width
                else:  # too few rows to pay for a copy: b's rows in place
                    b_at, b_step = b + 4 * (k0 * ldb + j0), ldb
                c_at = c + 4 * j0
                i = i0
                while i < i1:
                    rows = tile_rows(i1 - i)
                    count = min(rows, i1 - i)
                    fill_rows(row_table, i, count, row_stride)
                    # the tiles' code is large: one call site here of each full-height tile
                    # (full_tile has the small ones); a partial panel's reads and writes of
                    # b and c are masked to its columns
                    rows_at = np.int64(row_table.ctypes.data)
                    if HAS_SMALL and rows == SMALL_ROWS and cols == width:
                        full_tile(rows, cols == PANEL, a_k0, rows_at, a_step, b_at, b_step, kc,
                                  c_at + 4 * i * ldc, ldc, count, more)
                    elif cols == PANEL:
                        tile(a_k0, rows_at, a_step, b_at, b_step, kc, c_at + 4 * i * ldc, ldc,
                             count, more)
                    elif cols == NARROW:
                        tile_narrow(a_k0, rows_at, a_step, b_at, b_step, kc, c_at + 4 * i * ldc,
                                    ldc, count, more)
                    elif width == PANEL:
                        tile_partial(a_k0, rows_at, a_step, b_at, b_step, kc, c_at + 4 * i * ldc,
                                     ldc, count, more, cols)
                    else:
                        tile_narrow_partial(a_k0, rows_at, a_step, b_at, b_step, kc,
                                            c_at + 4 * i * ldc, ldc, count, more, cols)
                    i += count


def suits(m: int, k: int, n: int) -> bool:
    """Whether an ``(m, k) @ (k, n)`` product is sgemm's rather than BLAS's (``MAX_OPERAND``)."""
    return m * k <= MAX_OPERAND and k * n <= MAX_OPERAND


def _layout(x):
    """``(x's storage, transposed, leading dimension)`` for a 2-D float32 view whose rows or
    columns are contiguous, else None."""
    if min(x.strides) < 0:
        return None
    if x.strides[1] == 4 or x.shape[1] <= 1:
        return False, max(x.strides[0] // 4, x.shape[1], 1)
    if x.strides[0] == 4 or x.shape[0] <= 1:
        return True, max(x.strides[1] // 4, x.shape[0], 1)
    return None


def supports(a, b, out) -> bool:
    """Whether ``gemm`` takes these operands as they are: float32, 2-D, each with contiguous
    rows or contiguous columns (``out``: contiguous rows), sizes that fit."""
    if not (a.dtype == b.dtype == out.dtype == np.float32):
        return False
    if a.ndim != 2 or b.ndim != 2 or out.ndim != 2:
        return False
    if a.shape[1] != b.shape[0] or out.shape != (a.shape[0], b.shape[1]):
        return False
    return (_layout(a) is not None and _layout(b) is not None
            and (out.strides[1] == 4 or out.shape[1] <= 1) and min(out.strides) >= 0)


def gemm(a, b, out, accumulate=False):
    """``out = a @ b`` (``out += a @ b`` with ``accumulate``) for float32 operands ``supports``
    takes (a ``DataError`` otherwise); ``out`` must not overlap ``a`` or ``b``."""
    if not all(isinstance(x, np.ndarray) for x in (a, b, out)) or not supports(a, b, out):
        raise DataError(
            "sgemm.gemm: expected float32 matrices a (m, k), b (k, n) and out (m, n), each "
            "with contiguous rows or columns (out: rows); received "
            + ", ".join(describe_array(x) for x in (a, b, out)))
    return product(a, b, out, accumulate)


def product(a, b, out, accumulate=False):
    """``gemm`` for operands a caller has checked with ``supports``."""
    ta, lda = _layout(a)
    tb, ldb = _layout(b)
    ldc = max(out.strides[0] // 4, out.shape[1], 1)
    m, k = a.shape
    gemm_at(ta, tb, m, b.shape[1], k, a.ctypes.data, lda, b.ctypes.data, ldb,
            out.ctypes.data, ldc, accumulate)
    return out


@njit
def _stored(x):
    """``(transposed, leading dimension)`` of a 2-D float32 array as ``_layout`` finds it, or
    ``(False, -1)`` where neither its rows nor its columns are contiguous."""
    if x.strides[0] < 0 or x.strides[1] < 0:
        return False, -1
    if x.strides[1] == 4 or x.shape[1] <= 1:
        return False, max(x.strides[0] // 4, x.shape[1], 1)
    if x.strides[0] == 4 or x.shape[0] <= 1:
        return True, max(x.strides[1] // 4, x.shape[0], 1)
    return False, -1


@njit
def gemm_if_supported(a, b, out):
    """``out = a @ b`` for float32 2-D arrays, checked and computed in one kernel call (a
    layer's uncut product: ``supports`` and ``product`` from Python cost about 3 us a call,
    more than a small product's arithmetic). Returns False, untouched, for operands
    ``supports`` would refuse."""
    m, k = a.shape
    n = b.shape[1]
    if b.shape[0] != k or out.shape[0] != m or out.shape[1] != n:
        return False
    ta, lda = _stored(a)
    tb, ldb = _stored(b)
    if lda < 0 or ldb < 0 or out.strides[0] < 0 or (out.strides[1] != 4 and n > 1):
        return False
    gemm_at(ta, tb, m, n, k, a.ctypes.data, lda, b.ctypes.data, ldb, out.ctypes.data,
            max(out.strides[0] // 4, n, 1), False)
    return True
