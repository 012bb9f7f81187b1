"""MultiHeadAttention and its softmax kernel: gradient checks and a slow numpy reference."""

import numpy as np
import pytest

from zoo import kernels
from zoo.errors import ConfigError, DataError
from zoo.kit.gradcheck import check_layer
from zoo.layers.attention import MultiHeadAttention


def _built(layer, shape, dtype=np.float64, seed=0):
    layer.dtype = dtype
    layer.build(shape, np.random.default_rng(seed))
    for p in layer.parameters():  # non-zero biases, so their gradients are checked for real
        p.value[...] = np.random.default_rng(seed + 1).standard_normal(p.value.shape) * 0.5
    return layer


def attention_ref(x, params, heads, causal=False, padding=None):
    """Self-attention one example, one head, one query at a time, in float64."""
    x = x.astype(np.float64)
    n, t, e = x.shape
    d = e // heads
    w_in, w_out = params["in_proj_weight"], params["out_proj.weight"]
    b_in = params.get("in_proj_bias", np.zeros(3 * e))
    b_out = params.get("out_proj.bias", np.zeros(e))
    out = np.zeros((n, t, e))
    for b in range(n):
        q = x[b] @ w_in[:e].T + b_in[:e]
        k = x[b] @ w_in[e:2 * e].T + b_in[e:2 * e]
        v = x[b] @ w_in[2 * e:].T + b_in[2 * e:]
        concat = np.zeros((t, e))
        for h in range(heads):
            sl = slice(h * d, (h + 1) * d)
            for i in range(t):
                visible = [j for j in range(t) if not (causal and j > i)
                           and not (padding is not None and padding[b, j])]
                if not visible:
                    continue
                scores = np.array([q[i, sl] @ k[j, sl] / np.sqrt(d) for j in visible])
                weights = np.exp(scores - scores.max())
                weights /= weights.sum()
                concat[i, sl] = sum(w * v[j, sl] for w, j in zip(weights, visible))
        out[b] = concat @ w_out.T + b_out
    return out


def _params(layer):
    return {name: p.value.astype(np.float64) for name, p in layer.named_parameters()}


@pytest.mark.parametrize("heads, causal, bias", [(1, False, True), (2, False, True),
                                                  (3, True, True), (2, True, False)])
def test_gradcheck(heads, causal, bias):
    layer = _built(MultiHeadAttention(heads, causal=causal, bias=bias), (5, 6))
    check_layer(layer, (5, 6), batch=2)


def test_gradcheck_with_key_padding():
    layer = _built(MultiHeadAttention(2), (4, 6))
    mask = np.array([[False, False, True, True], [False, False, False, True]])
    forward = layer.forward
    layer.forward = lambda x, training=False: forward(x, training, key_padding_mask=mask)
    check_layer(layer, (4, 6), batch=2)


def test_gradcheck_with_attention_dropout():
    """Dropout on the weights, with the same mask on every call of the check."""
    layer = _built(MultiHeadAttention(2, dropout=0.3), (4, 6))
    forward = layer.forward

    def same_mask(x, training=False):
        layer.rng = np.random.default_rng(7)
        return forward(x, training)

    layer.forward = same_mask
    check_layer(layer, (4, 6), batch=2, training=True)
    out = layer.forward(np.ones((2, 4, 6)), training=True)
    assert not np.allclose(out, layer.forward(np.ones((2, 4, 6)), training=False))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("causal", [False, True])
def test_forward_matches_reference(causal, dtype):
    rng = np.random.default_rng(3)
    layer = _built(MultiHeadAttention(4, causal=causal), (7, 8), dtype)
    x = rng.standard_normal((3, 7, 8)).astype(dtype)
    padding = np.zeros((3, 7), bool)
    padding[1, 4:] = True
    padding[2, :] = True  # an example with nothing to attend to: zero attention, bias only
    y = layer.forward(x, training=True, key_padding_mask=padding)
    assert y.dtype == dtype and y.shape == x.shape
    ref = attention_ref(x, _params(layer), 4, causal, padding)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(layer.forward(x), attention_ref(x, _params(layer), 4, causal),
                               rtol=tol, atol=tol)


def test_masked_keys_do_not_change_the_output_nor_get_gradient():
    rng = np.random.default_rng(4)
    layer = _built(MultiHeadAttention(2), (5, 4))
    x = rng.standard_normal((1, 5, 4))
    mask = np.array([[False, False, False, True, True]])
    y = layer.forward(x, key_padding_mask=mask).copy()
    x2 = x.copy()
    x2[0, 3:] = 100.0
    y2 = layer.forward(x2, key_padding_mask=mask)
    np.testing.assert_allclose(y2[0, :3], y[0, :3], atol=1e-12)
    g = np.zeros_like(y)
    g[0, :3] = 1.0  # only unmasked queries' outputs matter
    layer.forward(x, training=True, key_padding_mask=mask)
    np.testing.assert_array_equal(layer.backward(g)[0, 3:], 0.0)


def test_softmax_kernel_masks_and_rows_sum_to_one():
    rng = np.random.default_rng(5)
    s = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    p = kernels.attention.masked_softmax(s, causal=True)
    assert np.allclose(p.sum(-1), 1, atol=1e-6)
    assert np.all(p[..., np.triu_indices(4, 1)[0], np.triu_indices(4, 1)[1]] == 0)
    with pytest.raises(DataError, match="key_padding_mask must be a boolean array"):
        kernels.attention.masked_softmax(s, key_padding_mask=np.zeros((2, 4)))
    with pytest.raises(DataError, match="scores must be"):
        kernels.attention.masked_softmax(s[0])


def test_backward_overwrites_parameter_gradients():
    rng = np.random.default_rng(6)
    layer = _built(MultiHeadAttention(2), (3, 4))
    x, g = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 3, 4))
    layer.forward(x, training=True)
    layer.backward(g)
    first = {n: p.grad.copy() for n, p in layer.named_parameters()}
    layer.forward(x, training=True)
    layer.backward(g)
    for n, p in layer.named_parameters():
        np.testing.assert_array_equal(p.grad, first[n])


def test_bad_arguments_and_inputs():
    with pytest.raises(ConfigError, match="num_heads must divide the embedding size"):
        _built(MultiHeadAttention(3), (5, 8))
    with pytest.raises(ConfigError, match="expects sequences"):
        _built(MultiHeadAttention(2), (8,))
    with pytest.raises(ConfigError, match="dropout must be in"):
        MultiHeadAttention(2, dropout=1.0)
    layer = _built(MultiHeadAttention(2), (5, 8))
    with pytest.raises(DataError, match="key_padding_mask must be a boolean array"):
        layer.forward(np.zeros((2, 5, 8)), key_padding_mask=np.zeros((2, 4), bool))
