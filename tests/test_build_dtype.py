"""``Layer.build(input_shape, rng, dtype=)`` builds any layer in a dtype, old-style ones too."""

import numpy as np
import pytest

from zoo.layers.base import Layer
from zoo.layers.dense import Dense
from zoo.model import Sequential


class OldStyle(Layer):
    """A third-party layer written before zoo passed dtype: ``build(self, input_shape, rng)``."""

    def build(self, input_shape, rng):
        self.w = self.add_parameter("w", rng.standard_normal(input_shape))
        return super().build(input_shape, rng)

    def forward(self, x, training=False):
        return x * self.w.value

    def backward(self, grad_out):
        return grad_out


class OldContainer(Layer):
    """An old-style container that hands its own dtype to its child, as zoo_resmlp does."""

    def __init__(self):
        super().__init__()
        self.inner = Sequential([Dense(3)])

    def build(self, input_shape, rng):
        self.output_shape = self.inner.build(input_shape, rng, dtype=self.dtype)
        self.input_shape, self.built = tuple(input_shape), True
        return self.output_shape


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_kind_of_layer_builds_in_the_given_dtype(dtype):
    rng = np.random.default_rng(0)
    for layer in (Dense(4), OldStyle(), OldContainer(), Sequential([OldStyle(), Dense(2)])):
        layer.build((5,), rng, dtype=dtype)
        assert layer.dtype is dtype
        params = [p for _, p in _all_parameters(layer)]
        assert params and all(p.value.dtype == dtype for p in params), type(layer).__name__


def test_without_dtype_a_layer_keeps_float32():
    layer = OldStyle()
    layer.build((3,), np.random.default_rng(0))
    assert layer.w.value.dtype == np.float32


def test_old_style_build_keeps_its_signature_for_introspection():
    assert OldStyle.build.__wrapped__.__qualname__ == "OldStyle.build"



def _all_parameters(layer):
    """Sequential lists its children's parameters; the old container keeps its child aside."""
    inner = getattr(layer, "inner", None)
    return [*layer.named_parameters(), *(inner.named_parameters() if inner else [])]
