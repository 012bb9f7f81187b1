"""Embedding, positional encodings and patch embeddings: gradient checks, numpy references."""

import math

import numpy as np
import pytest

from zoo import kernels
from zoo.errors import ConfigError, DataError
from zoo.kit.gradcheck import check_layer
from zoo.layers.embedding import (
    Embedding,
    PositionalEmbedding,
    SinusoidalPositionalEncoding,
)
from zoo.layers.patch import PatchEmbedding1D, PatchEmbedding2D


def _built(layer, shape, dtype=np.float64, seed=0):
    layer.dtype = dtype
    layer.build(shape, np.random.default_rng(seed))
    return layer


# -- Embedding -------------------------------------------------------------------------------
def test_embedding_gradcheck_on_the_weight():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 7, (3, 5)).astype(np.float64)
    check_layer(Embedding(7, 4), (5,), x=x, check_input=False)


@pytest.mark.parametrize("padding_idx", [None, 2])
def test_embedding_matches_reference(padding_idx):
    rng = np.random.default_rng(1)
    layer = _built(Embedding(6, 3, padding_idx=padding_idx), (4,))
    if padding_idx is not None:
        assert np.all(layer.weight.value[padding_idx] == 0)
    idx = rng.integers(0, 6, (5, 4))
    idx[0, :2] = 2  # a repeated index: its gradient rows add up
    y = layer.forward(idx, training=True)
    np.testing.assert_array_equal(y, layer.weight.value[idx])
    g = rng.standard_normal(y.shape)
    dx = layer.backward(g)
    assert dx.shape == idx.shape and not dx.any()
    ref = np.zeros((6, 3))
    for pos in np.ndindex(*idx.shape):
        if idx[pos] != padding_idx:
            ref[idx[pos]] += g[pos]
    np.testing.assert_allclose(layer.weight.grad, ref, atol=1e-12)


def test_embedding_takes_whole_floats_and_rejects_the_rest():
    layer = _built(Embedding(4, 2), (3,), np.float32)
    np.testing.assert_array_equal(layer.forward(np.array([[0.0, 3.0, 1.0]], np.float32)),
                                  layer.weight.value[[[0, 3, 1]]])
    with pytest.raises(DataError, match="integer indices"):
        layer.forward(np.array([[0.5, 1.0, 2.0]]))
    with pytest.raises(DataError, match=r"indices in \[0, 4\); received values from 0 to 4"):
        layer.forward(np.array([[0, 4, 1]]))
    with pytest.raises(ConfigError, match="padding_idx must be an index"):
        Embedding(4, 2, padding_idx=4)
    with pytest.raises(DataError, match=r"indices must lie in \[0, 3\)"):
        kernels.embedding.lookup(np.zeros((3, 2)), np.array([5]))


# -- positions -------------------------------------------------------------------------------
def test_positional_embedding_gradcheck_and_reference():
    layer = _built(PositionalEmbedding(), (5, 4))
    check_layer(layer, (5, 4))
    x = np.random.default_rng(2).standard_normal((3, 5, 4))
    np.testing.assert_allclose(layer.forward(x), x + layer.weight.value)
    g = np.random.default_rng(3).standard_normal((3, 5, 4))
    np.testing.assert_allclose(layer.backward(g), g)
    np.testing.assert_allclose(layer.weight.grad, g.sum(0))


def test_sinusoidal_encoding_is_vaswanis_table():
    layer = _built(SinusoidalPositionalEncoding(), (6, 5))
    check_layer(SinusoidalPositionalEncoding(), (6, 5))
    table = layer.forward(np.zeros((1, 6, 5)))[0]
    for t in range(6):
        for i in range(5):
            angle = t / 10000 ** ((i - i % 2) / 5)
            want = math.sin(angle) if i % 2 == 0 else math.cos(angle)
            assert table[t, i] == pytest.approx(want, abs=1e-12)
    assert layer.parameters() == []


# -- patches ---------------------------------------------------------------------------------
def conv_patches_ref(x, weight, bias):
    """A strided convolution with kernel = stride over zero-padded (N, C, *spatial) input."""
    e, c, *k = weight.shape
    n, _, *size = x.shape
    grid = [-(-s // p) for s, p in zip(size, k)]
    padded = np.zeros((n, c, *[g * p for g, p in zip(grid, k)]))
    padded[(slice(None), slice(None), *[slice(0, s) for s in size])] = x
    out = np.zeros((n, math.prod(grid), e))
    for b in range(n):
        for token, cell in enumerate(np.ndindex(*grid)):
            window = tuple(slice(i * p, (i + 1) * p) for i, p in zip(cell, k))
            piece = padded[(b, slice(None), *window)]
            out[b, token] = [np.sum(piece * weight[o]) + bias[o] for o in range(e)]
    return out


@pytest.mark.parametrize("shape, patch", [((8, 3), 2), ((10, 2), 4), ((9,), 3), ((7,), 2)])
def test_patch1d_gradcheck_and_reference(shape, patch):
    layer = _built(PatchEmbedding1D(patch, 5), shape)
    check_layer(layer, shape)
    x = np.random.default_rng(4).standard_normal((2, *shape))
    seq = x.reshape(2, shape[0], -1).transpose(0, 2, 1)  # PyTorch's (N, C, L)
    ref = conv_patches_ref(seq, layer.weight.value, layer.bias.value)
    assert layer.output_shape == (-(-shape[0] // patch), 5)
    np.testing.assert_allclose(layer.forward(x), ref, atol=1e-12)


@pytest.mark.parametrize("shape, patch", [((1, 8, 8), 4), ((2, 6, 9), (3, 2)), ((3, 5, 5), 2)])
def test_patch2d_gradcheck_and_reference(shape, patch):
    layer = _built(PatchEmbedding2D(patch, 4), shape)
    check_layer(layer, shape, batch=2)
    x = np.random.default_rng(5).standard_normal((2, *shape))
    ref = conv_patches_ref(x, layer.weight.value, layer.bias.value)
    np.testing.assert_allclose(layer.forward(x), ref, atol=1e-12)


def test_patch_bad_shapes():
    with pytest.raises(ConfigError, match="expects images"):
        _built(PatchEmbedding2D(2, 4), (8, 8))
    with pytest.raises(ConfigError, match="expects vectors"):
        _built(PatchEmbedding1D(2, 4), (1, 8, 8))
    with pytest.raises(ConfigError, match="patch_size must be a positive integer"):
        PatchEmbedding1D(0, 4)
