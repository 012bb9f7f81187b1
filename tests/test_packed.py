"""zoo.kernels.packed: float32 products against a matrix packed once (the recurrent steps)."""

import numpy as np
import pytest

from zoo.kernels import packed

F32 = np.float32


def _rand(rng, *shape):
    return rng.standard_normal(shape).astype(F32)


def _product(a, b):
    c = np.full((a.shape[0], b.shape[1]), np.nan, F32)
    packed.gemm(a, packed.pack(b), c, packed.scratch())
    return c


@pytest.mark.parametrize("m, k, n", [(1, 1, 1), (5, 7, 3), (32, 128, 512), (32, 512, 128),
                                     (13, 33, packed.PANEL + 5), (packed.ROWS + 1, 64, 40),
                                     (64, 20, 256), (3, 0, 17)])
def test_the_product_matches_float64(m, k, n):
    rng = np.random.default_rng(m * 1000 + k * 10 + n)
    a, b = _rand(rng, m, k), _rand(rng, k, n)
    c = _product(a, b)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    # float32 rounding of k products: a few units in the last place of the sum of |terms|
    bound = 4 * np.finfo(F32).eps * (np.abs(a).astype(np.float64) @ np.abs(b) + 1e-30)
    assert np.all(np.abs(c - exact) <= bound * max(1, k) ** 0.5)


def test_row_slices_of_larger_arrays_are_read_and_written_in_place():
    rng = np.random.default_rng(1)
    big_a, b = _rand(rng, 20, 50), _rand(rng, 40, 70)
    big_c = np.zeros((20, 90), F32)
    packed.gemm(big_a[3:17, 5:45], packed.pack(b), big_c[3:17, 10:80], packed.scratch())
    np.testing.assert_array_equal(big_c[3:17, 10:80], _product(big_a[3:17, 5:45].copy(), b))
    assert not big_c[:3].any() and not big_c[17:].any()
    assert not big_c[:, :10].any() and not big_c[:, 80:].any()


def test_a_row_gets_the_same_bits_whatever_rows_it_is_computed_with():
    # What makes the recurrent loops' row blocks thread-count independent: a row's result
    # depends on that row and b only, not on the tile or block it falls in.
    rng = np.random.default_rng(2)
    a, b = _rand(rng, 37, 128), _rand(rng, 128, 3 * packed.PANEL + 7)
    whole = _product(a, b)
    for cuts in ([0, 1, 37], [0, 8, 16, 37], [0, 5, 19, 30, 37], list(range(38))):
        parts = np.concatenate([_product(a[lo:hi], b) for lo, hi in zip(cuts, cuts[1:])])
        np.testing.assert_array_equal(parts, whole, err_msg=str(cuts))


def test_pack_lays_out_zero_padded_column_panels():
    b = np.arange(3 * (packed.PANEL + 2), dtype=F32).reshape(3, packed.PANEL + 2)
    bp = packed.pack(b)
    assert bp.shape == (2, 3, packed.PANEL) and bp.flags.c_contiguous
    np.testing.assert_array_equal(bp[0], b[:, :packed.PANEL])
    np.testing.assert_array_equal(bp[1, :, :2], b[:, packed.PANEL:])
    assert not bp[1, :, 2:].any()


@pytest.mark.parametrize("rows,cols", [(2 * packed.PANEL, 8 * packed.PANEL),
                                       (packed.PANEL + 3, 4 * packed.PANEL + 12), (5, 7),
                                       (16, 16), (17, 33)])
def test_a_transposed_view_packs_like_its_contiguous_copy(rows, cols):
    # The transposed view goes through blocks transposed in registers, with edges in both
    # directions where the sizes are not multiples of the block (sgemm.LANES).
    w = _rand(np.random.default_rng(rows * cols), rows, cols)
    np.testing.assert_array_equal(packed.pack(w.T), packed.pack(np.ascontiguousarray(w.T)))


def test_packing_into_a_kept_array_overwrites_all_of_it():
    rng = np.random.default_rng(5)
    for units in (2 * packed.PANEL, packed.PANEL + 3):
        w = _rand(rng, units, 4 * units)
        for b in (w, w.T):  # contiguous, and the transposed view the backward packs
            out = np.full(packed.pack(b).shape, np.nan, F32)  # what a last user left
            assert packed.pack(b, out) is out
            np.testing.assert_array_equal(out, packed.pack(np.ascontiguousarray(b)))
