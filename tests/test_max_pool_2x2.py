"""The 2x2, stride-2 max pool (int8 argmax codes) against a slow scan of each window."""

import itertools

import numpy as np
import pytest

from zoo import kernels
from zoo.errors import DataError
from zoo.kit.gradcheck import check_layer
from zoo.layers.pool import MaxPool2D

pool = kernels.pool


def scan_windows(x):
    """Each 2x2 window scanned in the order top left, top right, bottom left, bottom right:
    the first maximum wins, and any NaN wins over what came before it (so the last NaN)."""
    n, c, h, w = x.shape
    out = np.empty((n, c, h // 2, w // 2), x.dtype)
    codes = np.empty(out.shape, np.int8)
    for i, j, y, z in itertools.product(range(n), range(c), range(h // 2), range(w // 2)):
        best, at = None, -1
        for code in range(4):
            v = x[i, j, 2 * y + code // 2, 2 * z + code % 2]
            if at < 0 or v > best or np.isnan(v):
                best, at = v, code
        out[i, j, y, z], codes[i, j, y, z] = best, at
    return out, codes


def route_gradient(grad, codes, shape):
    dx = np.zeros(shape, grad.dtype)
    for i, j, y, z in itertools.product(*map(range, grad.shape)):
        code = codes[i, j, y, z]
        dx[i, j, 2 * y + code // 2, 2 * z + code % 2] += grad[i, j, y, z]
    return dx


def awkward(shape, dtype, seed):
    """Few distinct values (many ties), signed zeros, infinities and NaNs."""
    rng = np.random.default_rng(seed)
    values = np.array([-np.inf, -1.0, -0.0, 0.0, 1.0, 2.0, np.inf, np.nan], dtype)
    return rng.choice(values, size=shape, p=[.05, .2, .15, .15, .2, .1, .05, .1])


def assert_same_bits(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(got.view(np.uint8), want.view(np.uint8))


def every_window(dtype):
    """All 5**4 windows over {-1, -0, 0, 1, NaN}, side by side in one row pair."""
    values = np.array([-1.0, -0.0, 0.0, 1.0, np.nan], dtype)
    combos = np.array(list(itertools.product(values, repeat=4)), dtype)  # (625, 4)
    x = np.empty((1, 1, 2, 2 * len(combos)), dtype)
    x[0, 0, 0, 0::2], x[0, 0, 0, 1::2] = combos[:, 0], combos[:, 1]
    x[0, 0, 1, 0::2], x[0, 0, 1, 1::2] = combos[:, 2], combos[:, 3]
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_window_of_ties_signed_zeros_and_nans_matches_the_scan(dtype):
    x = every_window(dtype)
    out, codes = pool.max_pool2d_2x2(x)
    want_out, want_codes = scan_windows(x)
    assert_same_bits(out, want_out)
    np.testing.assert_array_equal(codes, want_codes)
    # and the generic kernel (any window) agrees, index for index
    generic_out = np.empty_like(out)
    generic_idx = np.empty(out.shape, np.int32)
    pool._max2d(x, generic_out, generic_idx, 2, 2, 2, 2, 0, 0)
    assert_same_bits(out, generic_out)
    _, idx = pool.max_pool2d(x, (2, 2), (2, 2), (0, 0), out.shape[2:])
    np.testing.assert_array_equal(idx, generic_idx)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 3, 8, 6), (1, 2, 7, 5), (3, 1, 9, 10), (2, 2, 2, 3),
                                   (1, 1, 3, 2), (64, 6, 28, 28)])
def test_forward_and_backward_match_the_scan(dtype, shape):
    x = awkward(shape, dtype, seed=sum(shape))
    out, codes = pool.max_pool2d_2x2(x)
    want_out, want_codes = scan_windows(x)
    assert_same_bits(out, want_out)
    np.testing.assert_array_equal(codes, want_codes)
    # the int32-index API routes through the same kernel
    out2, idx = pool.max_pool2d(x, (2, 2), (2, 2), (0, 0), out.shape[2:])
    assert_same_bits(out2, want_out)
    rows, cols = np.divmod(want_codes.astype(np.int64), 2)
    oh, ow = out.shape[2:]
    want_idx = (2 * np.arange(oh)[:, None] + rows) * shape[3] + 2 * np.arange(ow) + cols
    np.testing.assert_array_equal(idx, want_idx)
    # backward: the gradient lands on the coded position, zeros elsewhere (odd edges too)
    grad = awkward(out.shape, dtype, seed=1)
    grad[np.isnan(grad)] = -0.0
    dx = pool.max_pool2d_2x2_backward(grad, codes, shape, np.full(shape, 7.0, dtype))
    assert_same_bits(dx, route_gradient(grad, want_codes, shape))
    assert_same_bits(dx, pool.max_pool2d_backward(grad, idx, shape))


def test_outputs_are_reused_and_checked():
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 7)).astype(np.float32)
    out = np.empty((2, 3, 3, 3), np.float32)
    codes = np.empty(out.shape, np.int8)
    got, got_codes = pool.max_pool2d_2x2(x, out, codes)
    assert got is out and got_codes is codes
    np.testing.assert_array_equal(out, scan_windows(x)[0])
    with pytest.raises(DataError, match="max_pool2d_2x2 codes: out must be a C-contiguous int8"):
        pool.max_pool2d_2x2(x, codes=codes.astype(np.int32))
    with pytest.raises(DataError, match="codes must be int8 of shape"):
        pool.max_pool2d_2x2_backward(out, codes.astype(np.int32), x.shape)
    with pytest.raises(DataError, match=r"grad must have shape \(2, 3, 3, 3\)"):
        pool.max_pool2d_2x2_backward(out[:, :2].copy(), codes[:, :2].copy(), x.shape)
    with pytest.raises(DataError, match=r"input_shape must be \(N, C, H, W\)"):
        pool.max_pool2d_2x2_backward(out, codes, (2, 3, 6))


def test_backward_keeps_any_code_inside_its_window():
    grad = np.ones((1, 1, 2, 2), np.float32)
    codes = np.array([[[[7, -1], [4, -128]]]], np.int8)  # low bits 3, 3, 0, 0
    dx = pool.max_pool2d_2x2_backward(grad, codes, (1, 1, 4, 4))
    want = np.zeros((1, 1, 4, 4), np.float32)
    want[0, 0, 1, 1] = want[0, 0, 1, 3] = want[0, 0, 2, 0] = want[0, 0, 2, 2] = 1
    np.testing.assert_array_equal(dx, want)


def test_layer_runs_the_2x2_kernel_and_matches_the_scan():
    layer = MaxPool2D(2)
    layer.build((3, 9, 8), np.random.default_rng(0))
    x = awkward((4, 3, 9, 8), np.float32, seed=5)
    want_out, want_codes = scan_windows(x)
    first = layer.forward(x, training=True)
    assert_same_bits(first, want_out)
    np.testing.assert_array_equal(layer._codes, want_codes)
    assert layer.forward(x, training=True) is not first  # callers may keep outputs
    grad = np.random.default_rng(1).standard_normal(want_out.shape).astype(np.float32)
    assert_same_bits(layer.backward(grad), route_gradient(grad, want_codes, x.shape))
    # another batch size and dtype
    x64 = x[:2].astype(np.float64)
    assert_same_bits(layer.forward(x64), scan_windows(x64)[0])
    grad64 = grad[:2].astype(np.float64)
    assert_same_bits(layer.backward(grad64), route_gradient(grad64, want_codes[:2], x64.shape))


@pytest.mark.parametrize("shape", [(2, 5, 7), (1, 4, 6)])
def test_layer_gradients_on_odd_sizes(shape):
    layer = MaxPool2D(2)
    layer.dtype = np.float64
    layer.build(shape, np.random.default_rng(0))
    x = np.random.default_rng(3).standard_normal((3, *shape))
    check_layer(layer, shape, batch=3, x=x)
