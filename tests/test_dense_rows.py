"""The fused Dense step's elementwise pass (``zoo.kernels.dense_rows``): numpy's arithmetic, the
Dense kernels' bits, and the same bits cut into row blocks on any thread count."""

import numpy as np
import pytest

from zoo.kernels import dense, dense_rows, threads, workers
from zoo.kernels._jit import njit
from zoo.kernels.losses import mse

CODES = {None: dense_rows.LINEAR, "leaky_relu": dense_rows.LEAKY_RELU,
         "tanh": dense_rows.TANH, "sigmoid": dense_rows.SIGMOID}
SLOPE = 0.2
EVERYTHING = dense_rows.FORWARD | dense_rows.MSE_GRAD | dense_rows.ACT_GRAD


@pytest.fixture(autouse=True)
def one_thread_after():
    yield
    threads.set_threads(1)


def _arrays(dtype, rows=40, units=24, count=2):
    rng = np.random.default_rng(0)
    y = rng.standard_normal((rows, units)).astype(dtype)
    parts = rng.standard_normal((max(count, 1), rows, units)).astype(dtype)
    bias = rng.standard_normal(units).astype(dtype)
    target = rng.random((rows, units)).astype(dtype)
    return y, parts, bias, target


def _numpy(activation, y, parts, bias, target):
    """The forward (parts added in order, bias, activation), the MSE gradient and the
    activation's gradient, written the obvious way in float64."""
    z = y.astype(np.float64)
    for part in parts:
        z = z + part
    z = z + bias
    out = {None: z, "leaky_relu": np.where(z > 0, z, SLOPE * z), "tanh": np.tanh(z),
           "sigmoid": 1 / (1 + np.exp(-z))}[activation]
    grad = 2 * (out - target) / out.size
    slope = {None: np.ones_like(out), "leaky_relu": np.where(out > 0, 1.0, SLOPE),
             "tanh": 1 - out ** 2, "sigmoid": out * (1 - out)}[activation]
    return out, grad, grad * slope


def _rows(op, activation, y, parts, count, bias, target, grad=None):
    grad = np.zeros_like(y) if grad is None else grad
    dz = np.zeros_like(y)
    dense_rows.rows(op, y, parts.ctypes.data, count, y.nbytes, bias, SLOPE, CODES[activation],
                    grad, dz, target, y.size)
    return y, grad, dz


@pytest.mark.parametrize("activation", CODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_one_pass_does_what_numpy_does(activation, dtype):
    y, parts, bias, target = _arrays(dtype)
    expected = _numpy(activation, y, parts, bias, target)
    got = _rows(EVERYTHING, activation, y.copy(), parts, 2, bias, target)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    for name, g, e in zip(("output", "loss gradient", "activation gradient"), got, expected):
        if name == "activation gradient" and activation is None:
            continue  # a linear layer has none: its dz is the loss gradient
        np.testing.assert_allclose(g, e, rtol=tolerance, atol=tolerance * 1e-3, err_msg=name)


@pytest.mark.parametrize("activation", CODES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_it_gives_the_dense_layers_kernels_bits(activation, dtype):
    y, parts, bias, target = _arrays(dtype)
    # The layer path: parts added as blas._add_parts does, then bias_act, then the MSE
    # kernel's gradient and act_backward.
    layer = y.copy()
    for part in parts:
        np.add(layer, part, out=layer)
    dense.bias_act(layer, bias, activation, negative_slope=SLOPE)
    grad = np.empty_like(layer)
    mse(layer, target, grad)
    out, row_grad, row_dz = _rows(EVERYTHING, activation, y.copy(), parts, 2, bias, target)
    np.testing.assert_array_equal(out, layer)
    np.testing.assert_array_equal(row_grad, grad)
    if activation is not None:
        dz = dense.act_backward(grad, layer, activation, negative_slope=SLOPE,
                                bias_grad=np.empty(layer.shape[1], dtype))
        np.testing.assert_array_equal(row_dz, dz)
        # and on its own, from a given gradient (a hidden layer's backward)
        given = np.random.default_rng(1).standard_normal(layer.shape).astype(dtype)
        _, _, alone = _rows(dense_rows.ACT_GRAD, activation, layer.copy(), parts, 0, bias,
                            target, grad=given)
        np.testing.assert_array_equal(alone, dense.act_backward(
            given, layer, activation, negative_slope=SLOPE))


def test_row_blocks_depend_on_the_sizes_alone():
    assert dense_rows.row_cuts(128, 784) == [0, 64, 128]
    assert dense_rows.row_cuts(128, 2048) == [0, 32, 64, 96, 128]  # 65,536 elements a block
    assert dense_rows.row_cuts(128, 256) == [0, 64, 128]
    assert dense_rows.row_cuts(128, 32) == [0, 128]  # too little work to share
    assert dense_rows.row_cuts(3, 100_000) == [0, 1, 3]  # never an empty block
    for rows, units in [(1, 10**6), (1024, 1024), (77, 999)]:
        cuts = dense_rows.row_cuts(rows, units)
        assert cuts[0] == 0 and cuts[-1] == rows and len(cuts) - 1 <= dense_rows.MAX_ROW_BLOCKS
        assert all(a < b for a, b in zip(cuts, cuts[1:]))


@njit
def _job(box, ticket, clock, fn, args, cuts, op, y, parts, count, bias, slope, code, grad, dz,
         target):
    dense_rows.describe(args, op, y, parts, count, bias, slope, code, grad, dz, target)
    workers.call_in_kernel(box, ticket, clock, 0, fn, args, cuts)


@pytest.mark.parametrize("count", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_blocks_give_one_passs_bits_on_any_thread_count(count, dtype):
    y, parts, bias, target = _arrays(dtype, rows=128, units=784, count=3)
    expected = _rows(EVERYTHING, "sigmoid", y.copy(), parts, 3, bias, target)
    cuts = np.array(dense_rows.row_cuts(128, 784), np.int64)
    assert len(cuts) > 2
    got, grad, dz = y.copy(), np.full_like(y, np.nan), np.full_like(y, np.nan)
    with threads.single_threaded_blas(), workers.kernel_jobs(count) as jobs:
        _job(jobs.box, jobs.ticket, jobs.clock, dense_rows.block_address(dtype),
             np.zeros(workers.CALL_ARGS, np.int64), cuts, EVERYTHING, got, parts.ctypes.data, 3,
             bias, np.array([SLOPE]), dense_rows.SIGMOID, grad, dz, target)
    for g, e in zip((got, grad, dz), expected):
        np.testing.assert_array_equal(g, e)
