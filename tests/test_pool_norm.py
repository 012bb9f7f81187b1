"""Pooling and batch norm: kernels against numpy oracles, gradients, train/eval behaviour."""

import itertools

import numpy as np
import pytest

from zoo import kernels
from zoo.errors import ConfigError, DataError
from zoo.kit.gradcheck import check_layer
from zoo.layers.norm import BatchNorm
from zoo.layers.pool import (
    AvgPool1D,
    AvgPool2D,
    GlobalAvgPool1D,
    GlobalAvgPool2D,
    MaxPool1D,
    MaxPool2D,
)
from zoo.model import Sequential


def pool2d_oracle(x, k, s, p, reduce):
    """Pad (with -inf for max, 0 for average), then reduce each window."""
    fill = -np.inf if reduce == "max" else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])), constant_values=fill)
    oh = (xp.shape[2] - k[0]) // s[0] + 1
    ow = (xp.shape[3] - k[1]) // s[1] + 1
    out = np.empty(x.shape[:2] + (oh, ow))
    for y, z in itertools.product(range(oh), range(ow)):
        win = xp[:, :, y * s[0]:y * s[0] + k[0], z * s[1]:z * s[1] + k[1]]
        out[:, :, y, z] = win.max(axis=(2, 3)) if reduce == "max" else win.mean(axis=(2, 3))
    return out


def pool1d_oracle(x, k, s, p, reduce):
    x2 = x.transpose(0, 2, 1)[:, :, :, None]  # (N, F, T, 1): pool over T as an image axis
    out = pool2d_oracle(x2, (k, 1), (s, 1), (p, 0), reduce)
    return out[:, :, :, 0].transpose(0, 2, 1)


POOL_2D = [((2, 2), None, 0, (3, 6, 8)), ((2, 2), None, 0, (2, 7, 5)), (3, 2, 1, (2, 7, 6)),
           ((3, 2), (1, 2), (1, 0), (1, 5, 6)), (3, 1, 0, (2, 4, 5))]


@pytest.mark.parametrize("layer_cls,reduce", [(MaxPool2D, "max"), (AvgPool2D, "avg")])
@pytest.mark.parametrize("pool_size,stride,padding,shape", POOL_2D)
def test_pool2d_matches_oracle_and_gradients(layer_cls, reduce, pool_size, stride, padding,
                                             shape):
    layer = layer_cls(pool_size, stride, padding)
    layer.dtype = np.float64
    out_shape = layer.build(shape, np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((2, *shape))
    got = layer.forward(x)
    want = pool2d_oracle(x, layer.pool_size, layer.stride, layer.padding, reduce)
    assert got.shape == (2, *out_shape)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    check_layer(layer, shape, batch=2, x=x)


POOL_1D = [(2, None, 0, (8, 3)), (2, None, 0, (7, 2)), (3, 2, 1, (9, 2)), (3, 1, 1, (5, 1)),
           (4, 3, 2, (10, 2))]


@pytest.mark.parametrize("layer_cls,reduce", [(MaxPool1D, "max"), (AvgPool1D, "avg")])
@pytest.mark.parametrize("pool_size,stride,padding,shape", POOL_1D)
def test_pool1d_matches_oracle_and_gradients(layer_cls, reduce, pool_size, stride, padding,
                                             shape):
    layer = layer_cls(pool_size, stride, padding)
    layer.dtype = np.float64
    out_shape = layer.build(shape, np.random.default_rng(0))
    x = np.random.default_rng(2).standard_normal((3, *shape))
    got = layer.forward(x)
    want = pool1d_oracle(x, pool_size, layer.stride[0], padding, reduce)
    assert got.shape == (3, *out_shape)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    check_layer(layer, shape, batch=3, x=x)


def test_max_pool_backward_routes_to_the_argmax_only():
    x = np.array([[[[1.0, 5.0, 2.0, 0.0],
                    [3.0, 4.0, 9.0, 8.0]]]], np.float32)
    out, idx = kernels.pool.max_pool2d(x, (2, 2), (2, 2), (0, 0), (1, 2))
    np.testing.assert_array_equal(out, [[[[5.0, 9.0]]]])
    np.testing.assert_array_equal(idx, [[[[1, 6]]]])
    dx = kernels.pool.max_pool2d_backward(np.array([[[[10.0, 20.0]]]], np.float32), idx,
                                          x.shape)
    np.testing.assert_array_equal(dx, [[[[0, 10, 0, 0], [0, 0, 20, 0]]]])
    seq = np.array([[[1.0, 7.0], [4.0, 2.0], [3.0, 9.0]]])
    out, idx = kernels.pool.max_pool1d(seq, 2, 1, 0, 2)
    np.testing.assert_array_equal(out, [[[4.0, 7.0], [4.0, 9.0]]])
    dx = kernels.pool.max_pool1d_backward(np.ones_like(out), idx, seq.shape)
    np.testing.assert_array_equal(dx, [[[0, 1], [2, 0], [0, 1]]])


@pytest.mark.parametrize("pool_size", [(2, 2), (3, 3)])
def test_max_pool_propagates_nan(pool_size):
    x = np.zeros((1, 1, 6, 6), np.float32)
    x[0, 0, 1, 1] = np.nan
    out, _ = kernels.pool.max_pool2d(x, pool_size, pool_size, (0, 0), (6 // pool_size[0],) * 2)
    assert np.isnan(out[0, 0, 0, 0]) and not np.isnan(out[0, 0, 1:, :]).any()
    seq = np.zeros((1, 4, 1))
    seq[0, 1, 0] = np.nan
    out, _ = kernels.pool.max_pool1d(seq, 2, 2, 0, 2)
    assert np.isnan(out[0, 0, 0]) and out[0, 1, 0] == 0


def test_global_average_pooling():
    rng = np.random.default_rng(3)
    img = rng.standard_normal((2, 3, 4, 5))
    layer = GlobalAvgPool2D()
    assert layer.build((3, 4, 5), rng) == (3,)
    np.testing.assert_allclose(layer.forward(img), img.mean(axis=(2, 3)))
    check_layer(GlobalAvgPool2D(), (3, 4, 5))
    seq = rng.standard_normal((2, 6, 3)).astype(np.float32)
    layer = GlobalAvgPool1D()
    assert layer.build((6, 3), rng) == (3,)
    np.testing.assert_allclose(layer.forward(seq), seq.mean(axis=1), rtol=1e-6)
    check_layer(GlobalAvgPool1D(), (6, 3))


def test_pool_arguments_are_validated():
    with pytest.raises(ConfigError, match="MaxPool2D: pool_size must be a positive integer"):
        MaxPool2D(0)
    with pytest.raises(ConfigError, match="AvgPool1D: stride must be"):
        AvgPool1D(2, stride=-1)
    with pytest.raises(ConfigError, match="MaxPool1D: padding must be at most half"):
        MaxPool1D(2, padding=2)
    with pytest.raises(ConfigError, match="MaxPool2D: the kernel size 3 along width"):
        MaxPool2D((2, 3)).build((1, 4, 2), np.random.default_rng(0))
    with pytest.raises(ConfigError, match=r"GlobalAvgPool1D expects inputs of shape \(steps"):
        GlobalAvgPool1D().build((3, 4, 4), np.random.default_rng(0))
    assert MaxPool2D(2).get_config() == {"pool_size": (2, 2), "stride": (2, 2),
                                         "padding": (0, 0)}
    assert repr(AvgPool1D(3, 2)) == "AvgPool1D(pool_size=3, stride=2, padding=0)"


# -- batch norm ------------------------------------------------------------------------------
def bn_oracle(x, gamma, beta, eps, axes):
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


LAYOUTS = [((3, 4, 5), (0, 2, 3), (1, 3, 1, 1)),   # images: channel axis 1
           ((6, 3), (0, 1), (1, 1, 3)),            # sequences: last axis
           ((4,), (0,), (1, 4))]                   # vectors: last axis


@pytest.mark.parametrize("shape,axes,bshape", LAYOUTS)
def test_batch_norm_training_uses_batch_statistics(shape, axes, bshape):
    rng = np.random.default_rng(4)
    layer = BatchNorm(momentum=0.2)
    layer.dtype = np.float64
    layer.build(shape, rng)
    gamma, beta = rng.standard_normal(layer.weight.value.shape), rng.standard_normal(
        layer.bias.value.shape)
    layer.weight.value[...] = gamma
    layer.bias.value[...] = beta
    x = rng.standard_normal((5, *shape)) * 3 + 1
    got = layer.forward(x, training=True)
    np.testing.assert_allclose(got, bn_oracle(x, gamma.reshape(bshape), beta.reshape(bshape),
                                              1e-5, axes), rtol=1e-10, atol=1e-12)
    # running statistics moved 20% towards the batch's mean and unbiased variance
    mean = x.mean(axis=axes)
    var = x.var(axis=axes, ddof=1)
    np.testing.assert_allclose(layer._buffers["running_mean"], 0.2 * mean, rtol=1e-10)
    np.testing.assert_allclose(layer._buffers["running_var"], 0.8 + 0.2 * var, rtol=1e-10)
    check_layer(layer, shape, batch=5, training=True)


@pytest.mark.parametrize("shape,axes,bshape", LAYOUTS)
def test_batch_norm_inference_uses_running_statistics(shape, axes, bshape):
    rng = np.random.default_rng(5)
    layer = BatchNorm(eps=1e-3)
    layer.dtype = np.float64
    layer.build(shape, rng)
    c = layer.weight.value.shape[0]
    rm, rv = rng.standard_normal(c), rng.uniform(0.5, 2.0, c)
    layer.set_buffer("running_mean", rm)
    layer.set_buffer("running_var", rv)
    x = rng.standard_normal((4, *shape))
    got = layer.forward(x, training=False)
    want = (x - rm.reshape(bshape)) / np.sqrt(rv.reshape(bshape) + 1e-3)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # inference leaves the running statistics alone
    np.testing.assert_array_equal(layer._buffers["running_mean"], rm)
    check_layer(layer, shape, batch=4, training=False)


def test_batch_norm_running_statistics_converge_and_are_saved():
    rng = np.random.default_rng(6)
    model = Sequential([BatchNorm(momentum=0.1)])
    model.build((2, 3, 3), rng)
    for _ in range(200):
        x = (rng.standard_normal((16, 2, 3, 3)) * np.array([2.0, 0.5])[:, None, None]
             + np.array([3.0, -1.0])[:, None, None]).astype(np.float32)
        model.forward(x, training=True)
    state = model.state_dict()
    assert set(state) == {"0.weight", "0.bias", "0.running_mean", "0.running_var"}
    np.testing.assert_allclose(state["0.running_mean"], [3.0, -1.0], atol=0.15)
    np.testing.assert_allclose(state["0.running_var"], [4.0, 0.25], rtol=0.15)
    fresh = Sequential([BatchNorm()])
    fresh.build((2, 3, 3), rng)
    fresh.load_state_dict(state)
    x = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(fresh.forward(x), model.forward(x))


def test_batch_norm_float32_matches_float64():
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((32, 3, 5, 5)) * 100 + 1000).astype(np.float32)
    layers = {}
    for dtype in (np.float32, np.float64):
        layers[dtype] = BatchNorm()
        layers[dtype].dtype = dtype
        layers[dtype].build((3, 5, 5), rng)
    y32 = layers[np.float32].forward(x, training=True)
    y64 = layers[np.float64].forward(x.astype(np.float64), training=True)
    np.testing.assert_allclose(y32, y64, atol=1e-4)
    g = rng.standard_normal(x.shape)
    np.testing.assert_allclose(layers[np.float32].backward(g.astype(np.float32)),
                               layers[np.float64].backward(g), atol=1e-4)


def test_batch_norm_arguments_and_inputs_are_validated():
    with pytest.raises(ConfigError, match=r"BatchNorm: momentum must be in \[0, 1\]"):
        BatchNorm(momentum=1.5)
    with pytest.raises(ConfigError, match="BatchNorm: eps must be a positive finite number"):
        BatchNorm(eps=0)
    with pytest.raises(ConfigError, match="BatchNorm expects vectors"):
        BatchNorm().build((1, 2, 3, 4), np.random.default_rng(0))
    layer = BatchNorm()
    layer.build((3,), np.random.default_rng(0))
    with pytest.raises(DataError, match="more than one value per channel"):
        layer.forward(np.ones((1, 3), np.float32), training=True)
    assert layer.forward(np.ones((1, 3), np.float32)).shape == (1, 3)
    assert repr(layer) == "BatchNorm(momentum=0.1, eps=1e-05)"
