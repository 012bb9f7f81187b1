"""Dense, activation, Dropout, Flatten and Reshape layers; initialisers; the seed's example."""

import math

import numpy as np
import pytest

from zoo import initializers
from zoo.errors import ConfigError, DataError
from zoo.kit.gradcheck import check_layer
from zoo.layers.activations import (
    GELU,
    Activation,
    LeakyReLU,
    ReLU,
    Sigmoid,
    Tanh,
    get_activation,
)
from zoo.layers.dense import Dense
from zoo.layers.dropout import Dropout
from zoo.layers.reshape import Flatten, Reshape
from zoo.losses import MSE
from zoo.model import Sequential
from zoo.optimizers import SGD
from zoo.training.flat import flatten_parameters

ACTIVATIONS = (None, "relu", "leaky_relu", "tanh", "sigmoid", "gelu", "gelu_erf")


def _built(layer, input_shape, dtype=np.float32, seed=0):
    layer.dtype = dtype
    layer.build(input_shape, np.random.default_rng(seed))
    return layer


# -- Dense -----------------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("input_shape", [(5,), (4, 3)])
def test_dense_gradcheck(activation, use_bias, input_shape):
    layer = Dense(3, activation=activation, use_bias=use_bias)
    check_layer(layer, input_shape, batch=3)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_dense_forward_matches_numpy(activation):
    rng = np.random.default_rng(1)
    layer = _built(Dense(6, activation=activation, bias_initializer="glorot_uniform"), (4,))
    x = rng.standard_normal((5, 4)).astype(np.float32)
    z = x.astype(np.float64) @ layer.weight.value + layer.bias.value
    ref = {None: z, "relu": np.maximum(z, 0), "leaky_relu": np.where(z > 0, z, 0.01 * z),
           "tanh": np.tanh(z), "sigmoid": 1 / (1 + np.exp(-z)),
           "gelu": 0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3))),
           "gelu_erf": 0.5 * z * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))}
    y = layer.forward(x, training=True)
    assert y.dtype == np.float32 and y.shape == (5, 6)
    np.testing.assert_allclose(y, ref[activation], rtol=2e-5, atol=2e-6)


def test_dense_applies_to_the_last_axis():
    rng = np.random.default_rng(2)
    layer = _built(Dense(3), (7, 4), np.float64)
    assert layer.output_shape == (7, 3)
    x = rng.standard_normal((2, 7, 4))
    y = layer.forward(x)
    np.testing.assert_allclose(y, x @ layer.weight.value + layer.bias.value)
    gx = layer.backward(np.ones((2, 7, 3)))
    assert gx.shape == x.shape


def test_dense_reuses_buffers_in_training_but_not_in_inference():
    rng = np.random.default_rng(3)
    layer = _built(Dense(4, activation="relu"), (3,))
    a = rng.standard_normal((8, 3)).astype(np.float32)
    b = rng.standard_normal((8, 3)).astype(np.float32)
    first, second = layer.forward(a, training=True), layer.forward(b, training=True)
    assert first is second  # one buffer while the batch shape stays the same
    g1 = layer.backward(np.ones((8, 4), np.float32))
    assert layer.backward(np.ones((8, 4), np.float32)) is g1
    p, q = layer.forward(a), layer.forward(b)
    assert p is not q and not np.array_equal(p, q)  # outputs a caller may keep
    # A smaller batch, then the full one again, still gives the right numbers.
    small = layer.forward(a[:3], training=True).copy()
    np.testing.assert_array_equal(small, layer.forward(a)[:3])


def test_dense_writes_gradients_into_a_flat_buffer():
    rng = np.random.default_rng(4)
    model = Sequential([Dense(5, activation="tanh"), Dense(2)])
    model.build((3,), rng)
    _, grads = flatten_parameters(model)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    model.forward(x, training=True)
    model.backward(np.ones((4, 2), np.float32))
    per_layer = np.concatenate([p.grad.ravel() for p in model.parameters()])
    np.testing.assert_array_equal(grads, per_layer)
    assert np.abs(grads).sum() > 0


def test_dense_without_input_gradient():
    layer = _built(Dense(2, activation="tanh"), (3,), np.float64)
    layer.needs_input_grad = False
    layer.forward(np.ones((2, 3)), training=True)
    assert layer.backward(np.ones((2, 2))) is None
    assert np.abs(layer.weight.grad).sum() > 0


def test_dense_converts_dtype_and_rejects_wrong_shapes():
    layer = _built(Dense(2), (3,))
    assert layer.forward(np.ones((4, 3))).dtype == np.float32
    with pytest.raises(DataError, match=r"Dense expects input of shape \(batch, 3\); received "
                                        r"float32 array of shape \(4, 5\)"):
        layer.forward(np.ones((4, 5), np.float32))
    layer.forward(np.ones((4, 3), np.float32), training=True)
    with pytest.raises(DataError, match=r"gradient of shape \(4, 2\)"):
        layer.backward(np.ones((4, 3), np.float32))


def test_dense_default_initializers_and_config():
    relu = _built(Dense(50, activation="relu"), (200,), seed=5)
    linear = _built(Dense(50), (200,), seed=5)
    assert np.abs(relu.weight.value).max() <= math.sqrt(6 / 200)
    assert np.abs(linear.weight.value).max() <= math.sqrt(6 / 250)
    assert np.abs(relu.weight.value).max() > 0.9 * math.sqrt(6 / 200)
    assert relu.weight.value.shape == (200, 50) and relu.bias.value.shape == (50,)
    assert not relu.bias.value.any()
    config = relu.get_config()
    assert config == {"units": 50, "activation": "relu", "use_bias": True,
                      "kernel_initializer": "he_uniform", "bias_initializer": "zeros"}
    assert Dense(**config).get_config() == config
    assert repr(relu) == "Dense(50, activation='relu')"
    assert repr(Dense(3, use_bias=False, kernel_initializer="orthogonal")) == \
        "Dense(3, use_bias=False, kernel_initializer='orthogonal')"
    no_bias = _built(Dense(4, use_bias=False), (2,))
    assert [p.name for p in no_bias.parameters()] == ["weight"]


@pytest.mark.parametrize("kwargs,message", [
    ({"units": 0}, "Dense: units must be a positive integer; received units=0"),
    ({"units": -3}, "units=-3"),
    ({"units": 2.5}, "units=2.5"),
    ({"units": True}, "units=True"),
    ({"units": 4, "activation": "swish"}, "activation must be one of relu"),
    ({"units": 4, "use_bias": "yes"}, "use_bias must be True or False"),
    ({"units": 4, "kernel_initializer": "lecun"}, "unknown initializer 'lecun'; known: "),
    ({"units": 4, "negative_slope": -0.1}, "negative_slope must be a finite number >= 0"),
])
def test_dense_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Dense(**kwargs)


# -- activation layers -----------------------------------------------------------------------
@pytest.mark.parametrize("make", [ReLU, lambda: LeakyReLU(0.2), Tanh, Sigmoid, GELU,
                                  lambda: Activation("tanh")])
@pytest.mark.parametrize("input_shape", [(6,), (2, 3, 4)])
def test_activation_layers_gradcheck(make, input_shape):
    check_layer(make(), input_shape)


def test_activation_layers_forward_values_config_and_repr():
    x = np.array([[-2.0, -0.5, 0.0, 0.5, 3.0]], np.float32)
    assert ReLU().build((5,), None) == (5,)
    np.testing.assert_array_equal(_built(ReLU(), (5,)).forward(x), [[0, 0, 0, 0.5, 3]])
    np.testing.assert_allclose(_built(LeakyReLU(0.1), (5,)).forward(x),
                               [[-0.2, -0.05, 0, 0.5, 3]], rtol=1e-6)
    np.testing.assert_allclose(_built(Tanh(), (5,)).forward(x), np.tanh(x), rtol=1e-6)
    assert repr(LeakyReLU()) == "LeakyReLU(negative_slope=0.01)"
    assert repr(ReLU()) == "ReLU()" and ReLU().get_config() == {}
    assert repr(Activation("gelu")) == "Activation('gelu')"
    assert repr(Activation("leaky_relu", 0.3)) == "Activation('leaky_relu', negative_slope=0.3)"
    assert LeakyReLU(0.3).get_config() == {"negative_slope": 0.3}
    assert isinstance(get_activation("relu"), ReLU)
    assert isinstance(get_activation("Sigmoid"), Sigmoid)
    with pytest.raises(ConfigError, match="activation must be one of relu, leaky_relu, tanh"):
        get_activation("softplus")
    with pytest.raises(ConfigError, match="LeakyReLU: negative_slope"):
        LeakyReLU(-1)
    with pytest.raises(ConfigError, match="Activation: activation must be one of"):
        Activation(None)


def test_activation_layer_keeps_inference_outputs_and_checks_gradients():
    layer = _built(Sigmoid(), (3,))
    a, b = np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32)
    ya, yb = layer.forward(a), layer.forward(b)
    assert ya is not yb and ya[0, 0] == 0.5
    assert layer.forward(a, training=True) is layer.forward(b, training=True)
    with pytest.raises(DataError, match=r"Sigmoid.backward expects a gradient of shape \(2, 3\)"):
        layer.backward(np.ones((3, 3), np.float32))


# -- Dropout ---------------------------------------------------------------------------------
def test_dropout_statistics_and_scaling():
    layer = _built(Dropout(0.3), (1000,), seed=6)
    x = np.ones((200, 1000), np.float32)
    y = layer.forward(x, training=True).copy()
    dropped = float(np.mean(y == 0))
    assert abs(dropped - 0.3) < 0.005  # 200k Bernoulli draws: std 0.001
    np.testing.assert_allclose(np.unique(y), [0.0, 1 / 0.7], rtol=1e-6)
    assert abs(float(y.mean()) - 1.0) < 0.01
    g = np.full_like(x, 2.0)
    np.testing.assert_allclose(layer.backward(g), 2 * y, rtol=1e-6)
    # A fresh mask each step.
    assert not np.array_equal(layer.forward(x, training=True), y)


def test_dropout_is_identity_in_inference_and_at_rate_zero():
    layer = _built(Dropout(0.5), (4,))
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    assert layer.forward(x, training=False) is x
    g = np.ones((2, 4), np.float32)
    assert layer.backward(g) is g
    zero = _built(Dropout(0.0), (4,))
    assert zero.forward(x, training=True) is x
    check_layer(Dropout(0.5), (4,), training=False)


def test_dropout_same_seed_same_masks_and_rng_is_its_own():
    masks = []
    for _ in range(2):
        layer = _built(Dropout(0.5), (50,), seed=7)
        assert isinstance(layer.rng, np.random.Generator)
        masks.append(layer.forward(np.ones((4, 50), np.float32), training=True).copy())
    np.testing.assert_array_equal(*masks)


@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5, "0.5", None])
def test_dropout_rate_errors(rate):
    with pytest.raises(ConfigError, match=r"Dropout: rate must be in \[0, 1\)"):
        Dropout(rate)


# -- Flatten and Reshape ---------------------------------------------------------------------
def test_flatten_and_reshape_round_trip():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 4, 5))
    flat = _built(Flatten(), (3, 4, 5), np.float64)
    assert flat.output_shape == (60,)
    y = flat.forward(x)
    np.testing.assert_array_equal(y, x.reshape(2, 60))
    assert flat.backward(y).shape == x.shape
    reshape = _built(Reshape((-1, 6)), (60,), np.float64)
    assert reshape.output_shape == (10, 6)
    np.testing.assert_array_equal(reshape.forward(y), x.reshape(2, 10, 6))
    assert reshape.get_config() == {"target_shape": (-1, 6)}
    check_layer(Flatten(), (2, 3))
    check_layer(Reshape((3, 2)), (6,))


@pytest.mark.parametrize("target", [(0,), (-1, -1), (), "12", (2.0, 3), None])
def test_reshape_config_errors(target):
    with pytest.raises(ConfigError, match="Reshape: target_shape must be"):
        Reshape(target)


def test_reshape_size_mismatch_is_a_config_error_at_build():
    with pytest.raises(ConfigError, match=r"cannot reshape input shape \(7,\)"):
        _built(Reshape((2, 3)), (7,))
    with pytest.raises(ConfigError, match=r"cannot reshape input shape \(7,\)"):
        _built(Reshape((-1, 2)), (7,))


# -- initialisers ----------------------------------------------------------------------------
@pytest.mark.parametrize("name,std", [
    ("he_normal", math.sqrt(2 / 400)), ("he_uniform", math.sqrt(2 / 400)),
    ("glorot_normal", math.sqrt(2 / 600)), ("glorot_uniform", math.sqrt(2 / 600)),
])
def test_initializer_variances(name, std):
    init = initializers.get_initializer(name)
    w = init((400, 200), 400, 200, np.random.default_rng(9), np.float32)
    assert w.dtype == np.float32 and w.shape == (400, 200)
    assert abs(float(w.std()) / std - 1) < 0.02
    assert abs(float(w.mean())) < 0.05 * std
    if name.endswith("uniform"):
        assert np.abs(w).max() <= std * math.sqrt(3)


@pytest.mark.parametrize("shape", [(6, 4), (4, 6), (2, 3, 5)])
def test_orthogonal_initializer(shape):
    w = initializers.orthogonal(shape, None, None, np.random.default_rng(10), np.float64)
    m = w.reshape(-1, shape[-1])
    small = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    np.testing.assert_allclose(small, np.eye(len(small)), atol=1e-12)


def test_initializer_lookup():
    assert initializers.get_initializer("xavier_uniform") is initializers.glorot_uniform
    assert initializers.get_initializer("kaiming_normal") is initializers.he_normal
    assert not initializers.zeros((3,)).any() and initializers.ones((2, 2)).all()

    def mine(shape, fan_in, fan_out, rng, dtype):
        return np.full(shape, 0.5, dtype)

    assert initializers.get_initializer(mine) is mine
    assert _built(Dense(2, kernel_initializer=mine), (3,)).weight.value[0, 0] == 0.5
    with pytest.raises(ConfigError, match="unknown initializer 'nope'; known: glorot_normal, "
                                          "glorot_uniform, he_normal, he_uniform, ones"):
        initializers.get_initializer("nope")
    with pytest.raises(ConfigError, match="fan_in and fan_out must be positive"):
        initializers.he_normal((2, 2), 0, 2, np.random.default_rng(0))


def test_same_seed_same_initial_weights_in_both_dtypes():
    a = _built(Dense(4), (3,), np.float32, seed=11)
    b = _built(Dense(4), (3,), np.float64, seed=11)
    np.testing.assert_allclose(a.weight.value, b.weight.value, rtol=1e-7)


# -- the seed note's worked example (docs/architecture.md) --------------------------------------
@pytest.mark.parametrize("fused", [False, True])
def test_seed_worked_example(fused):
    if fused:
        model = Sequential([Dense(2, activation="sigmoid"), Dense(1, activation="sigmoid")])
    else:
        model = Sequential([Dense(2), Sigmoid(), Dense(1), Sigmoid()])
    model.build((3,), np.random.default_rng(0), dtype=np.float64)
    dense1, dense2 = [layer for layer in model.layers if isinstance(layer, Dense)]
    dense1.weight.value[...] = np.array([[0.2, -0.5, 0.1], [-0.3, 0.4, 0.2]]).T
    dense1.bias.value[...] = [0.3, -0.1]
    dense2.weight.value[...] = [[0.5], [0.2]]
    dense2.bias.value[...] = [0.1]
    x, y = np.array([[2.0, 3.0, -1.0]]), np.array([[1.0]])
    loss = MSE()
    assert loss.forward(model.forward(x, training=True), y) == pytest.approx(0.16900, abs=5e-6)
    model.backward(loss.backward())
    np.testing.assert_allclose(dense2.weight.grad[:, 0], [-0.05754, -0.11434], atol=5e-6)
    assert dense2.bias.grad[0] == pytest.approx(-0.19905, abs=5e-6)
    np.testing.assert_allclose(dense1.weight.grad.T, [[-0.04091, -0.06136, 0.02045],
                                                      [-0.01946, -0.02920, 0.00973]], atol=5e-6)
    np.testing.assert_allclose(dense1.bias.grad, [-0.02045, -0.00973], atol=5e-6)
    # The note's step: plain SGD, lr 0.1, on the output layer only.
    SGD(lr=0.1).step([dense2.weight.value, dense2.bias.value],
                     [dense2.weight.grad, dense2.bias.grad])
    np.testing.assert_allclose(dense2.weight.value[:, 0], [0.50575, 0.21143], atol=5e-6)
    assert dense2.bias.value[0] == pytest.approx(0.11991, abs=5e-6)
    assert loss.forward(model.forward(x), y) == pytest.approx(0.16346, abs=5e-6)


def test_gelu_approximate_none_is_the_exact_form():
    from zoo.layers.activations import GELU, get_activation

    exact = GELU(approximate="none")
    assert exact.activation == "gelu_erf" and repr(exact) == "GELU(approximate='none')"
    assert repr(GELU()) == "GELU()" and get_activation("gelu_erf").activation == "gelu_erf"
    with pytest.raises(ConfigError, match="approximate must be one of tanh, none"):
        GELU(approximate="erf")
    check_layer(GELU(approximate="none"), (4, 5))
