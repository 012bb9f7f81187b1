"""LayerNorm and RMSNorm: float64 gradient checks and slow numpy references."""

import numpy as np
import pytest

from zoo.errors import ConfigError, DataError
from zoo.kit.gradcheck import check_layer
from zoo.layers.layernorm import LayerNorm, RMSNorm


def _built(layer, shape, dtype=np.float64, seed=0):
    layer.dtype = dtype
    layer.build(shape, np.random.default_rng(seed))
    return layer


def _randomise(layer, rng):
    for p in layer.parameters():
        p.value[...] = rng.standard_normal(p.value.shape)


def layer_norm_ref(x, weight, bias, axes, eps, center=True):
    """One example's trailing axes at a time, with plain Python statistics."""
    lead = x.shape[:x.ndim - axes]
    out = np.empty_like(x, dtype=np.float64)
    for idx in np.ndindex(*lead):
        v = x[idx].astype(np.float64)
        mu = v.mean() if center else 0.0
        var = ((v - mu) ** 2).mean()
        out[idx] = (v - mu) / np.sqrt(var + eps) * weight + bias
    return out


@pytest.mark.parametrize("shape, normalized", [((7,), None), ((4, 6), None), ((3, 4, 5), (4, 5))])
@pytest.mark.parametrize("cls", [LayerNorm, RMSNorm])
def test_gradcheck(cls, shape, normalized):
    layer = _built(cls(normalized, eps=1e-5), shape)
    _randomise(layer, np.random.default_rng(1))
    check_layer(layer, shape, batch=3)


@pytest.mark.parametrize("cls", [LayerNorm, RMSNorm])
def test_gradcheck_without_affine(cls):
    check_layer(cls(eps=1e-5, elementwise_affine=False), (5, 6))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("center", [True, False])
def test_forward_matches_reference(center, dtype):
    rng = np.random.default_rng(2)
    cls = LayerNorm if center else RMSNorm
    layer = _built(cls((3, 5), eps=1e-5), (2, 3, 5), dtype)
    _randomise(layer, rng)
    x = (rng.standard_normal((4, 2, 3, 5)) * 3 + 1).astype(dtype)
    bias = layer.bias.value if center else 0.0
    ref = layer_norm_ref(x, layer.weight.value, bias, 2, 1e-5, center)
    y = layer.forward(x, training=True)
    assert y.dtype == dtype and y.shape == x.shape
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, ref, rtol=tol, atol=tol)
    assert np.array_equal(layer.forward(x), y)  # no running statistics: same in inference


def test_backward_overwrites_parameter_gradients():
    rng = np.random.default_rng(3)
    layer = _built(LayerNorm(), (6,))
    x, g = rng.standard_normal((5, 6)), rng.standard_normal((5, 6))
    layer.forward(x, training=True)
    dx1 = layer.backward(g).copy()
    grads = [p.grad.copy() for p in layer.parameters()]
    layer.forward(x, training=True)
    np.testing.assert_array_equal(layer.backward(g), dx1)
    for p, before in zip(layer.parameters(), grads):
        np.testing.assert_array_equal(p.grad, before)


def test_rmsnorm_default_eps_is_the_dtype_epsilon():
    layer = _built(RMSNorm(), (4,), np.float32)
    assert layer._eps == float(np.finfo(np.float32).eps)
    assert [n for n, _ in layer.named_parameters()] == ["weight"]
    assert [n for n, _ in _built(LayerNorm(), (4,)).named_parameters()] == ["weight", "bias"]


def test_bad_arguments_and_inputs():
    with pytest.raises(ConfigError, match="eps must be a positive finite number"):
        LayerNorm(eps=0)
    with pytest.raises(ConfigError, match="normalized_shape must be"):
        LayerNorm(normalized_shape=(0,))
    with pytest.raises(ConfigError, match="must be the trailing axes"):
        _built(LayerNorm(5), (4, 6))
    layer = _built(LayerNorm(), (4,))
    with pytest.raises(DataError, match=r"expects input of shape \(batch, 4\)"):
        layer.forward(np.zeros((2, 5)))
    layer.forward(np.zeros((2, 4)), training=True)
    with pytest.raises(DataError, match="gradient of shape"):
        layer.backward(np.zeros((2, 3)))
