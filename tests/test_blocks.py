"""TransformerEncoderBlock and the residual blocks: gradient checks and numpy references."""

import math

import numpy as np
import pytest
from test_attention import attention_ref
from test_layernorm import layer_norm_ref

from zoo.errors import ConfigError
from zoo.kit.gradcheck import check_layer
from zoo.layers.residual import ResidualBlock1D, ResidualBlock2D
from zoo.layers.transformer import TransformerEncoderBlock
from zoo.model import Sequential


def _built(layer, shape, dtype=np.float64, seed=0):
    layer.build(shape, np.random.default_rng(seed), dtype=dtype)
    for p in layer.parameters():  # nothing left at its trivial initial value
        p.value[...] += np.random.default_rng(seed + 1).standard_normal(p.value.shape) * 0.3
    return layer


def _same_dropout_masks(block):
    """Reseed every generator in the block before each forward, so a check sees one function."""
    forward = block.forward
    holders = [layer for layer in vars(block).values() if hasattr(layer, "rng")]

    def seeded(x, training=False):
        for i, layer in enumerate(holders):
            layer.rng = np.random.default_rng(i)
        return forward(x, training)

    block.forward = seeded


# -- transformer -----------------------------------------------------------------------------
def encoder_ref(x, params, heads, activation):
    """Pre-norm block from the single-layer references (Dense weights are (in, out))."""
    def p(name):
        return params[name]

    h = layer_norm_ref(x, p("norm1.weight"), p("norm1.bias"), 1, 1e-5)
    attn = {k.removeprefix("self_attn."): v for k, v in params.items()
            if k.startswith("self_attn.")}
    y = x + attention_ref(h, attn, heads)
    h = layer_norm_ref(y, p("norm2.weight"), p("norm2.bias"), 1, 1e-5)
    z = h @ p("linear1.weight") + p("linear1.bias")
    z = activation(z)
    return y + z @ p("linear2.weight") + p("linear2.bias")


def gelu_exact(z):
    return 0.5 * z * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_encoder_block_matches_reference(dtype):
    block = _built(TransformerEncoderBlock(2, mlp_dim=12, dropout=0.2), (5, 8), dtype)
    x = np.random.default_rng(2).standard_normal((3, 5, 8)).astype(dtype)
    params = {n: p.value.astype(np.float64) for n, p in block.named_parameters()}
    assert sorted(params) == sorted([
        "norm1.weight", "norm1.bias", "self_attn.in_proj_weight", "self_attn.in_proj_bias",
        "self_attn.out_proj.weight", "self_attn.out_proj.bias", "norm2.weight", "norm2.bias",
        "linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias"])
    tol = 1e-4 if dtype == np.float32 else 1e-11
    np.testing.assert_allclose(block.forward(x), encoder_ref(x, params, 2, gelu_exact),
                               rtol=tol, atol=tol)


@pytest.mark.parametrize("training, causal", [(False, False), (True, True)])
def test_encoder_block_gradcheck(training, causal):
    block = _built(TransformerEncoderBlock(2, mlp_dim=6, dropout=0.3 if training else 0.0,
                                           causal=causal), (4, 4))
    _same_dropout_masks(block)
    check_layer(block, (4, 4), batch=2, training=training)


def test_encoder_block_dropout_is_on_only_while_training():
    block = _built(TransformerEncoderBlock(2, dropout=0.5), (4, 4))
    x = np.random.default_rng(3).standard_normal((2, 4, 4))
    assert np.array_equal(block.forward(x), block.forward(x))
    assert not np.allclose(block.forward(x, training=True), block.forward(x))


def test_encoder_block_in_a_sequential_and_its_generators():
    from zoo.checkpoints.checkpoint import named_generators

    model = Sequential([TransformerEncoderBlock(2, dropout=0.1), TransformerEncoderBlock(2)])
    model.build((3, 4), np.random.default_rng(0))
    names = set(named_generators(model))
    assert {"0.self_attn", "0.dropout1", "0.dropout", "0.dropout2", "1.self_attn"} <= names
    assert "0.linear1.weight" in model.state_dict()


# -- residual blocks -------------------------------------------------------------------------
def conv_ref(x, w, stride, pad):
    """Cross-correlation of (N, C, *S) with (O, C, *K), zero padding ``pad``, in loops."""
    spatial = x.shape[2:]
    padded = np.pad(x, [(0, 0), (0, 0)] + [(pad, pad)] * len(spatial))
    k = w.shape[2:]
    out_size = [(s + 2 * pad - kk) // stride + 1 for s, kk in zip(spatial, k)]
    out = np.zeros((x.shape[0], w.shape[0], *out_size))
    for pos in np.ndindex(*out_size):
        window = tuple(slice(i * stride, i * stride + kk) for i, kk in zip(pos, k))
        piece = padded[(slice(None), slice(None), *window)]
        out[(slice(None), slice(None), *pos)] = np.tensordot(piece, w, axes=(
            list(range(1, piece.ndim)), list(range(1, w.ndim))))
    return out


def bn_train_ref(x, weight, bias, eps=1e-5):
    axes = (0, *range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mu, var = x.mean(axis=axes), x.var(axis=axes)
    return (x - mu.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * weight.reshape(
        shape) + bias.reshape(shape)


def residual_ref(x, params, stride, pad):
    """Channels-first input; 1-D conv weights arrive in PyTorch's (O, C, K) layout."""
    def p(name):
        return params[name]

    h = conv_ref(x, p("conv1.weight"), stride, pad)
    h = np.maximum(bn_train_ref(h, p("bn1.weight"), p("bn1.bias")), 0)
    h = bn_train_ref(conv_ref(h, p("conv2.weight"), 1, pad), p("bn2.weight"), p("bn2.bias"))
    short = x
    if "downsample_conv.weight" in params:
        short = bn_train_ref(conv_ref(x, p("downsample_conv.weight"), stride, 0),
                             p("downsample_bn.weight"), p("downsample_bn.bias"))
    return np.maximum(h + short, 0)


@pytest.mark.parametrize("shape, filters, stride", [((3, 5, 5), 3, 1), ((2, 6, 5), 4, 2),
                                                    ((3, 4, 4), 5, 1)])
def test_residual2d_matches_reference(shape, filters, stride):
    block = _built(ResidualBlock2D(filters, stride=stride), shape)
    x = np.random.default_rng(4).standard_normal((4, *shape))
    params = {n: p.value for n, p in block.named_parameters()}
    assert ("downsample_conv.weight" in params) == (stride != 1 or shape[0] != filters)
    np.testing.assert_allclose(block.forward(x, training=True),
                               residual_ref(x, params, stride, 1), atol=1e-10)


@pytest.mark.parametrize("shape, filters, stride", [((7, 3), 3, 1), ((7, 2), 4, 2)])
def test_residual1d_matches_reference(shape, filters, stride):
    block = _built(ResidualBlock1D(filters, stride=stride), shape)
    x = np.random.default_rng(5).standard_normal((4, *shape))
    params = {n: (p.value.transpose(2, 1, 0) if p.value.ndim == 3 else p.value)
              for n, p in block.named_parameters()}  # Conv1D's (K, F, O) to (O, F, K)
    ref = residual_ref(x.transpose(0, 2, 1), params, stride, 1).transpose(0, 2, 1)
    np.testing.assert_allclose(block.forward(x, training=True), ref, atol=1e-10)


@pytest.mark.parametrize("cls, shape, filters, stride", [
    (ResidualBlock2D, (2, 4, 4), 2, 1), (ResidualBlock2D, (2, 5, 4), 3, 2),
    (ResidualBlock1D, (6, 2), 2, 1), (ResidualBlock1D, (6, 2), 3, 2)])
@pytest.mark.parametrize("training", [False, True])
def test_residual_gradcheck(cls, shape, filters, stride, training):
    block = _built(cls(filters, stride=stride), shape)
    check_layer(block, shape, batch=3, training=training)


def test_residual_arguments():
    with pytest.raises(ConfigError, match="kernel_size must be odd"):
        ResidualBlock2D(4, kernel_size=2)
    with pytest.raises(ConfigError, match=r"expects inputs of shape \(steps, features\)"):
        ResidualBlock1D(4).build((3, 4, 4), np.random.default_rng(0))
