"""GlobalMaxPool1D and GlobalMaxPool2D: numpy references, gradient checks, NaN."""

import numpy as np
import pytest

from zoo.errors import ConfigError
from zoo.kit.gradcheck import check_layer
from zoo.layers.pool import GlobalMaxPool1D, GlobalMaxPool2D


def _built(layer, shape, dtype=np.float64):
    layer.dtype = dtype
    layer.build(shape, np.random.default_rng(0))
    return layer


@pytest.mark.parametrize("cls, shape, axes", [(GlobalMaxPool2D, (3, 4, 5), (2, 3)),
                                              (GlobalMaxPool1D, (6, 3), (1,))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_numpy_and_routes_the_gradient_to_the_maximum(cls, shape, axes, dtype):
    rng = np.random.default_rng(1)
    layer = _built(cls(), shape, dtype)
    x = rng.standard_normal((2, *shape)).astype(dtype)
    y = layer.forward(x)
    np.testing.assert_array_equal(y, x.max(axis=axes))
    g = rng.standard_normal(y.shape).astype(dtype)
    dx = layer.backward(g)
    expand = tuple(a for a in axes)
    winners = x == np.expand_dims(y, expand)
    np.testing.assert_array_equal(dx, np.where(winners, np.expand_dims(g, expand), 0))


@pytest.mark.parametrize("cls, shape", [(GlobalMaxPool2D, (2, 3, 3)), (GlobalMaxPool1D, (5, 2))])
def test_gradcheck(cls, shape):
    check_layer(cls(), shape)


def test_nan_propagates_and_shapes_are_checked():
    layer = _built(GlobalMaxPool1D(), (3, 1))
    assert np.isnan(layer.forward(np.array([[[1.0], [np.nan], [2.0]]]))[0, 0])
    with pytest.raises(ConfigError, match=r"expects inputs of shape \(channels, height, width\)"):
        _built(GlobalMaxPool2D(), (4, 4))
