"""Upsampling and Gaussian noise: kernels against numpy oracles, gradient checks, validation."""

import numpy as np
import pytest

from zoo import kernels
from zoo.errors import ConfigError, DataError
from zoo.kit.gradcheck import check_layer
from zoo.layers.noise import GaussianNoise
from zoo.layers.resample import Upsample1D, Upsample2D


def up1d_oracle(x, s):
    return np.repeat(x, s, axis=1)


def up2d_oracle(x, sh, sw):
    return np.repeat(np.repeat(x, sh, axis=2), sw, axis=3)


def up1d_backward_oracle(g, s):
    n, tt, f = g.shape
    return g.reshape(n, tt // s, s, f).sum(axis=2)


def up2d_backward_oracle(g, sh, sw):
    n, c, hh, ww = g.shape
    return g.reshape(n, c, hh // sh, sh, ww // sw, sw).sum(axis=(3, 5))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,s", [((2, 5, 3), 2), ((3, 4, 1), 3), ((1, 1, 2), 1)])
def test_upsample1d_kernel_matches_oracle(dtype, shape, s):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(dtype)
    y = kernels.resample.upsample1d(x, s)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, up1d_oracle(x, s))
    g = rng.standard_normal(y.shape).astype(dtype)
    np.testing.assert_allclose(kernels.resample.upsample1d_backward(g, s),
                               up1d_backward_oracle(g, s), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,factor", [((2, 3, 4, 5), (2, 2)), ((1, 2, 3, 2), (3, 1)),
                                          ((2, 1, 2, 3), (1, 2)), ((1, 1, 1, 1), (2, 3))])
def test_upsample2d_kernel_matches_oracle(dtype, shape, factor):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(dtype)
    y = kernels.resample.upsample2d(x, factor)
    np.testing.assert_array_equal(y, up2d_oracle(x, *factor))
    g = rng.standard_normal(y.shape).astype(dtype)
    np.testing.assert_allclose(kernels.resample.upsample2d_backward(g, factor),
                               up2d_backward_oracle(g, *factor), rtol=1e-5, atol=1e-6)


def test_kernels_write_into_given_buffers_and_reject_bad_ones():
    x = np.ones((2, 3, 4), np.float32)
    out = np.full((2, 6, 4), -1.0, np.float32)
    assert kernels.resample.upsample1d(x, 2, out) is out
    assert (out == 1).all()
    with pytest.raises(DataError, match="out must be"):
        kernels.resample.upsample1d(x, 2, np.empty((2, 5, 4), np.float32))
    with pytest.raises(DataError, match="float32 or float64 array of rank 4"):
        kernels.resample.upsample2d(x, (2, 2))
    with pytest.raises(DataError, match="C-contiguous"):
        kernels.resample.upsample1d(np.ones((2, 4, 3), np.float32).transpose(0, 2, 1), 2)
    with pytest.raises(DataError, match="not a multiple"):
        kernels.resample.upsample2d_backward(np.ones((1, 1, 3, 4)), (2, 2))
    with pytest.raises(DataError, match="positive integers"):
        kernels.resample.upsample1d(x, 0)


@pytest.mark.parametrize("factor,shape", [(2, (4, 3)), (3, (2, 1))])
def test_upsample1d_layer_gradients(factor, shape):
    layer = Upsample1D(factor)
    layer.dtype = np.float64
    assert layer.build(shape, np.random.default_rng(0)) == (shape[0] * factor, shape[1])
    check_layer(layer, shape, batch=2)


@pytest.mark.parametrize("factor,shape", [(2, (2, 3, 4)), ((1, 3), (1, 2, 2)), ((2, 1), (3, 2, 3))])
def test_upsample2d_layer_gradients(factor, shape):
    layer = Upsample2D(factor)
    layer.dtype = np.float64
    sh, sw = (factor, factor) if isinstance(factor, int) else factor
    assert layer.build(shape, np.random.default_rng(0)) == (shape[0], shape[1] * sh,
                                                            shape[2] * sw)
    check_layer(layer, shape, batch=2)


def test_upsample_layers_float32_outputs_are_kept_in_inference():
    layer = Upsample2D(2)
    layer.build((1, 2, 2), np.random.default_rng(0))
    x = np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2)
    first = layer.forward(x)
    second = layer.forward(x + 1)
    assert first.dtype == np.float32 and first.shape == (2, 1, 4, 4)
    np.testing.assert_array_equal(first, up2d_oracle(x, 2, 2))  # not overwritten
    np.testing.assert_array_equal(second, first + 1)


def test_upsample_validation_and_config():
    with pytest.raises(ConfigError, match="scale_factor must be a positive integer"):
        Upsample1D(0)
    with pytest.raises(ConfigError, match="tuple of 2"):
        Upsample2D((2, 2, 2))
    with pytest.raises(ConfigError, match=r"\(steps, features\)"):
        Upsample1D(2).build((3, 4, 5), np.random.default_rng(0))
    layer = Upsample2D(2)
    layer.build((1, 2, 2), np.random.default_rng(0))
    with pytest.raises(DataError, match="expects input of shape"):
        layer.forward(np.ones((1, 1, 3, 2), np.float32))
    assert Upsample2D((2, 1)).get_config() == {"scale_factor": (2, 1)}
    assert repr(Upsample1D(3)) == "Upsample1D(scale_factor=3)"


# -- GaussianNoise ---------------------------------------------------------------------------
def test_gaussian_noise_only_while_training():
    layer = GaussianNoise(0.5)
    layer.build((200,), np.random.default_rng(0))
    x = np.zeros((50, 200), np.float32)
    assert layer.forward(x, training=False) is x
    noisy = layer.forward(x, training=True)
    assert noisy.dtype == np.float32 and not np.shares_memory(noisy, x)
    assert (x == 0).all()  # the clean input, still the loss's target, is untouched
    assert abs(noisy.std() - 0.5) < 0.02 and abs(noisy.mean()) < 0.02
    first = noisy.copy()
    assert not np.array_equal(layer.forward(x, training=True), first)  # a new draw each step
    g = np.ones_like(x)
    assert layer.backward(g) is g


def test_gaussian_noise_is_reproducible_and_gradchecks():
    draws = []
    for _ in range(2):
        layer = GaussianNoise(0.3)
        layer.build((4,), np.random.default_rng(7))
        draws.append(layer.forward(np.ones((3, 4)), training=True).copy())
    np.testing.assert_array_equal(*draws)
    layer = GaussianNoise(0.3)
    layer.dtype = np.float64
    layer.build((3, 2), np.random.default_rng(0))
    check_layer(layer, (3, 2), training=False)
    # In training the noise is additive: the input gradient is still the identity.
    state = layer.rng.bit_generator.state

    class Replayed(GaussianNoise):
        def forward(self, x, training=False):
            self.rng.bit_generator.state = state
            return super().forward(x, training)

    replayed = Replayed(0.3)
    replayed.dtype = np.float64
    replayed.build((3, 2), np.random.default_rng(0))
    state = replayed.rng.bit_generator.state
    check_layer(replayed, (3, 2), training=True)


@pytest.mark.parametrize("bad", [-0.1, float("nan"), "0.2", True])
def test_gaussian_noise_rejects_bad_stddev(bad):
    with pytest.raises(ConfigError, match="stddev must be a finite number >= 0"):
        GaussianNoise(bad)
