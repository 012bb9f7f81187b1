"""zoo's float32 product (``zoo.kernels.sgemm``): right, and the same bits however it is cut."""

import numpy as np
import pytest
from numba import njit

from zoo.kernels import sgemm

# Sizes whose last panel is partial, narrow (at most LANES columns: 70, PANEL + LANES) or
# both, with partial row tiles and k blocks.
SIZES = [(1, 1, 1), (3, 5, 7), (9, 33, 31), (17, 600, 70), (130, 1100, 65),
         (sgemm.ROWS + 1, sgemm.KC + 3, sgemm.PANEL + 1), (11, 40, sgemm.PANEL + sgemm.LANES),
         # enough rows to copy b's panels, but b small enough to be read in place
         (sgemm.PACK_ROWS + 3, 64, 64), (64, 32, 10)]


def operand(rng, rows, cols, transposed):
    """A ``(rows, cols)`` float32 operand, stored transposed if asked."""
    if transposed:
        return rng.standard_normal((cols, rows)).astype(np.float32).T
    return rng.standard_normal((rows, cols)).astype(np.float32)


@pytest.mark.parametrize("m,k,n", SIZES)
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_matches_float64_product(m, k, n, ta, tb):
    rng = np.random.default_rng(m * 1000 + k + n)
    a, b = operand(rng, m, k, ta), operand(rng, k, n, tb)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
    out = np.full((m, n), np.nan, np.float32)
    sgemm.gemm(a, b, out)
    assert np.all(np.abs(out - exact) <= 1e-6 * k * scale + 1e-30)
    sgemm.gemm(a, b, out, accumulate=True)
    assert np.all(np.abs(out - 2 * exact) <= 2e-6 * k * scale + 1e-30)


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_blocks_of_rows_columns_and_k_give_the_same_bits(ta, tb):
    """Every element is one chain of multiply-adds in k order: computing row blocks, column
    blocks, or k in two parts (the second accumulating) changes no bit."""
    m, k, n = 45, 777, 70
    rng = np.random.default_rng(1)
    a, b = operand(rng, m, k, ta), operand(rng, k, n, tb)
    whole = np.empty((m, n), np.float32)
    sgemm.gemm(a, b, whole)
    rows = np.empty_like(whole)
    for lo, hi in [(0, 1), (1, 20), (20, 45)]:
        sgemm.gemm(a[lo:hi], b, rows[lo:hi])
    cols = np.empty_like(whole)
    for lo, hi in [(0, 33), (33, 34), (34, 70)]:
        sgemm.gemm(a, b[:, lo:hi], cols[:, lo:hi])
    split = np.empty_like(whole)
    sgemm.gemm(a[:, :300], b[:300], split)
    sgemm.gemm(a[:, 300:], b[300:], split, accumulate=True)
    assert whole.tobytes() == rows.tobytes() == cols.tobytes() == split.tobytes()


@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
def test_a_checked_call_gives_gemms_bits_or_refuses_untouched(ta, tb):
    rng = np.random.default_rng(3)
    a, b = operand(rng, 37, 21, ta), operand(rng, 21, 10, tb)
    want = sgemm.gemm(a, b, np.empty((37, 10), np.float32))
    out = np.full((37, 10), np.nan, np.float32)
    assert sgemm.gemm_if_supported(a, b, out)
    assert out.tobytes() == want.tobytes()
    strided = np.zeros((42, 30), np.float32)[::2, ::3]  # neither rows nor columns contiguous
    for args in ((strided[:, :21], b, out), (a, b[:, :9], out), (a, b, out[:, :9]),
                 (a, b, np.zeros((37, 20), np.float32)[:, ::2]), (a[::-1], b, out)):
        before = args[2].copy()
        assert not sgemm.gemm_if_supported(*args)
        np.testing.assert_array_equal(args[2], before)


def test_writes_only_its_output():
    rng = np.random.default_rng(2)
    a, b = operand(rng, 13, 40, False), operand(rng, 40, 37, True)
    big = np.full((20, 50), 7.0, np.float32)
    sgemm.gemm(a, b, big[3:16, 5:42])
    expected = np.full((20, 50), 7.0, np.float32)
    expected[3:16, 5:42] = big[3:16, 5:42]
    assert np.array_equal(big, expected)
    assert np.allclose(big[3:16, 5:42], a @ b, rtol=1e-5, atol=1e-5)


def test_supports_only_what_it_can_read():
    a = np.ones((4, 5), np.float32)
    b = np.ones((5, 6), np.float32)
    out = np.empty((4, 6), np.float32)
    assert sgemm.supports(a, b, out)
    assert sgemm.supports(a.T.T, np.ascontiguousarray(b.T).T, out)
    assert not sgemm.supports(a.astype(np.float64), b, out)
    assert not sgemm.supports(a[:, ::2], b[:3], out)  # neither rows nor columns contiguous
    assert not sgemm.supports(a, b, out.T.copy().T)  # output columns strided
    assert not sgemm.supports(a, b[:4], out)
    assert not sgemm.supports(a[::-1], b, out)


@pytest.mark.parametrize("args", [
    (np.ones((4, 5)), np.ones((5, 6), np.float32), np.empty((4, 6), np.float32)),
    (np.ones((4, 5), np.float32), np.ones((4, 6), np.float32), np.empty((4, 6), np.float32)),
    (np.ones((4, 5), np.float32), np.ones((5, 6), np.float32), np.empty((6, 4), np.float32).T),
    (np.ones((4, 5), np.float32), [[1.0] * 6] * 5, np.empty((4, 6), np.float32)),
])
def test_what_it_cannot_read_is_one_clear_error(args):
    from zoo.errors import DataError

    with pytest.raises(DataError, match="expected float32 matrices"):
        sgemm.gemm(*args)


def _tile_product(tile, rows, a, b):
    """``a @ b`` through one tile intrinsic of ``rows`` rows (m a multiple of rows, n of the
    tile's width): b's rows read in place."""
    width = tile.width

    @njit
    def run(a, b, c):
        table = np.empty(rows, np.int64)
        for j in range(0, b.shape[1], width):
            for i in range(0, a.shape[0], rows):
                sgemm.fill_rows(table, i, rows, a.strides[0] // 4)
                tile(np.int64(a.ctypes.data), np.int64(table.ctypes.data), 1,
                     np.int64(b[:, j:].ctypes.data), b.strides[0] // 4, a.shape[1],
                     np.int64(c[i:, j:].ctypes.data), c.strides[0] // 4, rows, False)

    c = np.zeros((a.shape[0], b.shape[1]), np.float32)
    run(a, b, c)
    return c


def test_every_tile_shape_gives_the_same_bits():
    # The tile is chosen for the CPU (8 x 32 with AVX-512, 6 x 16 with AVX2, ...); the results
    # must not depend on it. Every shape (and others) runs here, whatever this CPU is.
    rng = np.random.default_rng(3)
    a, b = operand(rng, 48, 96, False), operand(rng, 96, 64, False)
    results = [_tile_product(sgemm.make_tile(rows, vectors), rows, a, b)
               for rows in (1, 2, 3, 4, 6, 8) for vectors in (1, 2)]
    for other in results[1:]:
        np.testing.assert_array_equal(other, results[0])
    whole = np.empty((48, 64), np.float32)
    np.testing.assert_array_equal(results[0], sgemm.gemm(a, b, whole))


@pytest.mark.parametrize("features,shape", [
    ({"sse2": True, "avx": True, "avx2": True, "avx512f": True}, (8, 2 * sgemm.LANES)),
    ({"sse2": True, "avx": True, "avx2": True, "fma": True}, (6, sgemm.LANES)),
    ({"sse2": True, "avx": True}, (6, sgemm.LANES)),
    ({"sse2": True}, (2, sgemm.LANES)),
    ({"neon": True}, (4, sgemm.LANES)),
])
def test_the_tile_fits_the_vector_registers_of_the_target(features, shape):
    assert sgemm._tile_shape(features) == shape


def test_the_tile_follows_the_features_numba_compiles_for(monkeypatch):
    # NUMBA_CPU_FEATURES (a cache shared by machines, say) decides what the code may use: the
    # AVX-512 tile compiled without AVX-512 would spill its accumulators.
    from numba.core import config

    monkeypatch.setattr(config, "CPU_FEATURES", "+sse2,+avx,+avx2,+fma,-avx512f")
    features = sgemm._target_features()
    assert features["avx2"] and features["fma"] and not features["avx512f"]
    assert sgemm._tile_shape(features) == (6, sgemm.LANES)
    # without AVX, LLVM has no FMA or AVX2 either (both need its encoding)
    monkeypatch.setattr(config, "CPU_FEATURES", "+sse2,-avx,+avx2,+fma")
    features = sgemm._target_features()
    assert not features.get("fma") and not features.get("avx2")
    assert sgemm._tile_shape(features) == (2, sgemm.LANES)
    monkeypatch.setattr(config, "CPU_FEATURES", "")  # NUMBA_CPU_NAME=generic: the baseline
    features = sgemm._target_features()
    assert not any(features.get(name) for name in ("avx", "avx2", "fma", "avx512f"))


def test_without_fused_multiply_adds_the_tile_rounds_twice(monkeypatch):
    # Where the CPU has no FMA, each product is rounded before it is added: still accurate.
    monkeypatch.setattr(sgemm, "FUSED", False)
    rng = np.random.default_rng(5)
    a, b = operand(rng, 8, 200, False), operand(rng, 200, 32, False)
    c = _tile_product(sgemm.make_tile(8, 2), 8, a, b)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(c, exact, rtol=0, atol=2e-5 * np.abs(exact).max())
    twice = np.zeros_like(c)  # the same sums in numpy, one float32 rounding per operation
    for p in range(a.shape[1]):
        twice = twice + a[:, p:p + 1] * b[p]
    np.testing.assert_array_equal(c, twice)


@pytest.mark.parametrize("m,k,n", [(128, 784, 256), (784, 128, 256), (32, 150, 1500)])
def test_blocked_float32_gemms_are_sgemm_products_on_any_thread_count(m, k, n):
    """``blas.Gemm`` cuts float32 products into blocks of sgemm: the same bits as one whole
    sgemm product where it cuts rows or columns, as the block-order sum of sgemm products over
    the inner dimension's blocks where it cuts that (so no BLAS kernel family enters them),
    on 1, 2 and 3 threads."""
    from zoo.kernels import blas, threads

    rng = np.random.default_rng(4)
    a, b = operand(rng, m, k, True), operand(rng, k, n, False)
    gemm = blas.Gemm(m, k, n, np.float32)
    assert gemm.blocks > 1 and gemm.tiled
    whole = sgemm.gemm(a, b, np.empty((m, n), np.float32))
    if gemm.axis == 2:
        whole[:] = 0
        for lo, hi in zip(gemm.cuts, gemm.cuts[1:]):
            whole += sgemm.gemm(a[:, lo:hi], b[lo:hi], np.empty((m, n), np.float32))
    before = threads.threads()
    try:
        for count in (1, 2, 3):
            threads.set_threads(count)
            out = gemm(a, b, np.empty((m, n), np.float32))
            assert out.tobytes() == whole.tobytes(), count
    finally:
        threads.set_threads(before)


def test_products_too_large_for_sgemm_are_blas_blocks_on_any_thread_count():
    """Past ``MAX_OPERAND`` elements in an operand, BLAS's packing wins: those products are
    BLAS blocks, not sgemm's, and still the same bits on 1, 2 and 3 threads."""
    from zoo.kernels import blas, threads

    m, k, n = 64, 2048, 256
    assert k * n > sgemm.MAX_OPERAND and not sgemm.suits(m, k, n)
    rng = np.random.default_rng(6)
    a, b = operand(rng, m, k, False), operand(rng, k, n, False)
    gemm = blas.Gemm(m, k, n, np.float32)
    assert gemm.blocks > 1 and not gemm.tiled
    routed: list = []
    run_gemm = threads.run_gemm
    before = threads.threads()
    try:
        threads.run_gemm = lambda *args: routed.append(args[7]) or run_gemm(*args)
        outs = []
        for count in (1, 2, 3):
            threads.set_threads(count)
            outs.append(gemm(a, b, np.empty((m, n), np.float32)).copy())
    finally:
        threads.run_gemm = run_gemm
        threads.set_threads(before)
    from zoo.kernels import workers

    # BLAS blocks, not tiled ones (as np.matmul blocks where zoo cannot call BLAS itself)
    assert routed == ([False] * 3 if workers.gemm_supported(np.float32) else [])
    assert outs[0].tobytes() == outs[1].tobytes() == outs[2].tobytes()
    exact = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(outs[0], exact, rtol=1e-4, atol=1e-3)


@njit
def _transpose_one(src, src_step, dst, dst_step):
    sgemm.transpose_block(src.ctypes.data, src_step, dst.ctypes.data, dst_step)


def test_a_block_is_transposed_in_registers_exactly():
    lanes = sgemm.LANES
    src = np.arange(20 * 40, dtype=np.float32).reshape(20, 40)
    dst = np.full((lanes + 2, 50), -1.0, np.float32)
    # a block that starts inside both arrays, their rows 40 and 50 elements apart
    _transpose_one(src[3:, 5:], 40, dst[1:, 7:], 50)
    expected = np.full_like(dst, -1.0)
    expected[1:1 + lanes, 7:7 + lanes] = src[3:3 + lanes, 5:5 + lanes].T
    np.testing.assert_array_equal(dst, expected)


# Partial 16 x 16 blocks (fewer k, fewer columns, both) are transposed in registers too
# (``transpose_edge``), into a panel of the wide tile or of the narrow one.
@pytest.mark.parametrize("k0,kc,j0,cols,width", [
    (0, 16, 0, 16, sgemm.PANEL), (0, 100, 0, sgemm.PANEL, sgemm.PANEL),
    (5, 37, 3, sgemm.PANEL - 1, sgemm.PANEL), (16, 3, 20, min(17, sgemm.PANEL), sgemm.PANEL),
    (0, 1, 0, 1, sgemm.PANEL), (7, 10, 2, 10, sgemm.NARROW), (0, 64, 50, 10, sgemm.NARROW)])
def test_a_transposed_panel_is_packed_as_the_element_by_element_copy(k0, kc, j0, cols, width):
    rng = np.random.default_rng(k0 + kc + j0 + cols)
    b = rng.standard_normal((60, 130)).astype(np.float32)  # stored (n, k): op(b) = b.T
    panel = np.full((kc, width), np.nan, np.float32)
    sgemm._pack_panel(b, True, k0, kc, j0, cols, panel)
    expected = np.zeros_like(panel)
    expected[:, :cols] = b[j0:j0 + cols, k0:k0 + kc].T
    np.testing.assert_array_equal(panel, expected)


@pytest.mark.parametrize("m,k,n", [(20, 100, 70), (sgemm.ROWS, 2 * sgemm.KC + 5, 48)])
def test_a_transposed_b_gives_the_bits_of_its_contiguous_copy(m, k, n):
    rng = np.random.default_rng(m + k + n)
    a, b = operand(rng, m, k, False), operand(rng, k, n, True)
    assert not b.flags.c_contiguous
    out = sgemm.gemm(a, b, np.empty((m, n), np.float32))
    copied = sgemm.gemm(a, np.ascontiguousarray(b), np.empty((m, n), np.float32))
    assert out.tobytes() == copied.tobytes()


def _row_plan(rows):
    """The tile heights ``gemm_at`` takes for ``rows`` rows (``tile_rows``, in Python)."""
    plan = []
    while rows > 0:
        plan.append(sgemm.tile_rows.py_func(rows))
        rows -= plan[-1]
    return plan


def test_four_row_tiles_take_what_six_row_tiles_would_waste(monkeypatch):
    # AVX2's tile is 6 rows: a 32-row batch is 4 x 6 + 2 x 4 rows, not 6 x 6 with the last
    # tile computing 4 rows for nothing. The rule is plain arithmetic, checked on any CPU.
    monkeypatch.setattr(sgemm, "ROWS", 6)
    monkeypatch.setattr(sgemm, "SMALL_ROWS", 4)
    assert _row_plan(32) == [6, 6, 6, 6, 4, 4]
    assert _row_plan(2) == [4]
    assert _row_plan(11) == [6, 6]  # 5 left: one 6-row tile wastes 1 row, two 4-row ones 3
    for rows in range(1, 300):
        plan = _row_plan(rows)
        assert sum(plan) - rows <= 1 or rows < 4, (rows, plan)  # at most a row for nothing
        assert sum(plan[:-1]) < rows  # every tile has a row to keep


def test_without_a_smaller_tile_every_tile_is_full_height(monkeypatch):
    monkeypatch.setattr(sgemm, "ROWS", 8)
    monkeypatch.setattr(sgemm, "SMALL_ROWS", 8)
    assert _row_plan(32) == [8] * 4
    assert _row_plan(35) == [8] * 5
