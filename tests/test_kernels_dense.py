"""Activation, dense, loss and optimizer kernels against slow, obviously correct numpy oracles."""

import math

import numpy as np
import pytest

from zoo import kernels
from zoo.errors import ConfigError, DataError

DTYPES = (np.float32, np.float64)
# float32 tanh/sigmoid/gelu use a rational approximation good to a few ulps.
TOL = {np.float32: {"rtol": 2e-6, "atol": 4e-7}, np.float64: {"rtol": 1e-12, "atol": 1e-14}}
# float32 derivatives lose a little more: gelu's x (1 - t^2) term multiplies tanh's absolute
# error by up to ~15 in the tails.
GRAD_TOL = {np.float32: {"rtol": 1e-5, "atol": 1e-5}, np.float64: TOL[np.float64]}
SLOPE = 0.07


def tol(dtype, name):
    """gelu_erf's float32 ``1 + erf(x / sqrt 2)`` cancels for negative x (as in any float32
    GELU, PyTorch's too): a few ulps of 1 in erf become ~1e-6 absolute in the output."""
    if name == "gelu_erf" and dtype == np.float32:
        return {"rtol": 2e-6, "atol": 1e-6}
    return TOL[dtype]


# -- oracles, in float64 with math's own functions ------------------------------------------
def _elementwise(f, x):
    return np.vectorize(f, otypes=[np.float64])(x.astype(np.float64))


def gelu_ref(v):
    return 0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ** 3)))


def gelu_grad_ref(v):
    k = math.sqrt(2 / math.pi)
    t = math.tanh(k * (v + 0.044715 * v ** 3))
    return 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * k * (1 + 3 * 0.044715 * v * v)


def gelu_erf_ref(v):
    return 0.5 * v * (1 + math.erf(v / math.sqrt(2)))


def gelu_erf_grad_ref(v):
    return 0.5 * (1 + math.erf(v / math.sqrt(2))) + v * math.exp(-v * v / 2) / math.sqrt(
        2 * math.pi)


def sigmoid_ref(v):
    return 1 / (1 + math.exp(-v)) if v >= 0 else math.exp(v) / (1 + math.exp(v))


FORWARD = {
    "relu": lambda v: max(v, 0.0),
    "leaky_relu": lambda v: v if v > 0 else SLOPE * v,
    "tanh": math.tanh,
    "sigmoid": sigmoid_ref,
    "gelu": gelu_ref,
    "gelu_erf": gelu_erf_ref,
}
# Derivative as a function of the input.
DERIVATIVE = {
    "relu": lambda v: 1.0 if v > 0 else 0.0,
    "leaky_relu": lambda v: 1.0 if v > 0 else SLOPE,
    "tanh": lambda v: 1 - math.tanh(v) ** 2,
    "sigmoid": lambda v: sigmoid_ref(v) * (1 - sigmoid_ref(v)),
    "gelu": gelu_grad_ref,
    "gelu_erf": gelu_erf_grad_ref,
}
NAMES = tuple(FORWARD)


def _data(rng, shape, dtype, scale=3.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


# -- activations ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(7,), (5, 13), (3, 4, 17)])
def test_activation_forward_and_backward_match_oracle(name, dtype, shape):
    rng = np.random.default_rng(1)
    x = _data(rng, shape, dtype)
    g = _data(rng, shape, dtype, 1.0)
    y = kernels.activations.forward(name, x, negative_slope=SLOPE)
    assert y.shape == x.shape and y.dtype == dtype
    np.testing.assert_allclose(y, _elementwise(FORWARD[name], x), **tol(dtype, name))
    cached = x if kernels.activations.BACKWARD_FROM[name] == "input" else y
    gx = kernels.activations.backward(name, g, cached, negative_slope=SLOPE)
    expected = g.astype(np.float64) * _elementwise(DERIVATIVE[name], x)
    np.testing.assert_allclose(gx, expected, **GRAD_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_named_wrappers_and_out_argument(dtype):
    rng = np.random.default_rng(2)
    x = _data(rng, (4, 9), dtype)
    out = np.empty_like(x)
    assert kernels.activations.relu(x, out=out) is out
    np.testing.assert_array_equal(out, np.maximum(x, 0))
    np.testing.assert_array_equal(kernels.activations.leaky_relu(x, 0.2),
                                  np.where(x > 0, x, dtype(0.2) * x))
    y = kernels.activations.sigmoid(x)
    g = np.ones_like(x)
    np.testing.assert_allclose(kernels.activations.sigmoid_backward(g, y), y * (1 - y),
                               **TOL[dtype])
    t = kernels.activations.tanh(x)
    np.testing.assert_allclose(kernels.activations.tanh_backward(g, t), 1 - t * t, **TOL[dtype])
    np.testing.assert_array_equal(kernels.activations.relu_backward(g, out), x > 0)
    np.testing.assert_allclose(kernels.activations.gelu_backward(g, x),
                               _elementwise(gelu_grad_ref, x), **GRAD_TOL[dtype])
    # In place (out is x) gives the same values.
    x2 = x.copy()
    kernels.activations.tanh(x2, out=x2)
    np.testing.assert_array_equal(x2, t)


@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_saturate_cleanly_and_keep_nan(dtype):
    x = np.array([0.0, 1e-30, -1e-6, 30.0, -30.0, 1e4, -1e4, np.inf, -np.inf, np.nan], dtype)
    t = kernels.activations.tanh(x)
    np.testing.assert_array_equal(t[3:9], [1, -1, 1, -1, 1, -1])
    assert t[1] == dtype(1e-30) and t[2] == pytest.approx(-1e-6, rel=1e-6)
    s = kernels.activations.sigmoid(x)
    np.testing.assert_allclose(s[[0, 5, 6, 7, 8]], [0.5, 1, 0, 1, 0], atol=1e-12)
    for name in NAMES:
        y = kernels.activations.forward(name, x)
        assert np.isnan(y[-1]), f"{name} must propagate NaN"
        assert np.isfinite(y[:7]).all(), name


def test_fast_tanh_float32_is_accurate_over_the_whole_range():
    x = np.linspace(-12, 12, 200_001, dtype=np.float32)
    t = kernels.activations.tanh(x)
    err = np.abs(t - np.tanh(x.astype(np.float64)))
    assert err.max() < 3e-7
    assert (np.abs(t) <= 1).all()
    # Monotone up to the approximation's own error (float32 rounding of p / q jitters by a
    # few ulps of 1 near saturation).
    assert (np.diff(t) >= -5e-7).all(), "tanh must stay monotone"


def test_activation_wrappers_reject_bad_arrays():
    x = np.ones((3, 4), np.float32)
    with pytest.raises(DataError, match="float32 or float64"):
        kernels.activations.relu(np.ones(3, np.int64))
    with pytest.raises(DataError, match="C-contiguous"):
        kernels.activations.relu(np.ones((4, 3), np.float32).T)
    with pytest.raises(DataError, match="out must be a float32 array of shape"):
        kernels.activations.relu(x, out=np.empty((3, 5), np.float32))
    with pytest.raises(DataError, match="y must be a float32 array of shape"):
        kernels.activations.tanh_backward(x, np.ones((3, 4), np.float64))


# -- dense -----------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", (None, *NAMES))
@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 11)])
def test_bias_act_and_act_backward_match_oracle(activation, dtype, shape):
    rng = np.random.default_rng(3)
    z = _data(rng, shape, dtype)
    b = _data(rng, shape[-1:], dtype)
    g = _data(rng, shape, dtype, 1.0)
    pre = np.empty_like(z)
    y = z.copy()
    assert kernels.dense.bias_act(y, b, activation, SLOPE, pre) is y
    z64 = z.astype(np.float64) + b
    f = (lambda v: v) if activation is None else FORWARD[activation]
    if activation == "relu":
        f = FORWARD["relu"]
    np.testing.assert_allclose(y, _elementwise(f, z64), **tol(dtype, activation))
    if activation is None:
        db = kernels.dense.bias_grad(g)
        np.testing.assert_allclose(db, g.reshape(-1, shape[-1]).sum(0), rtol=1e-5)
        return
    from_input = kernels.activations.BACKWARD_FROM[activation] == "input"
    if from_input:
        np.testing.assert_allclose(pre, z64, **tol(dtype, activation))
    cached = pre if from_input else y
    db = np.full(shape[-1], np.nan, dtype)
    dz = kernels.dense.act_backward(g, cached, activation, bias_grad=db, negative_slope=SLOPE)
    expected = g * _elementwise(DERIVATIVE[activation], z64)
    np.testing.assert_allclose(dz, expected, **GRAD_TOL[dtype])
    np.testing.assert_allclose(db, expected.reshape(-1, shape[-1]).sum(0), rtol=1e-5,
                               atol=1e-5 if dtype == np.float32 else 1e-12)


def test_relu_ignores_negative_slope_and_no_bias_means_zero_bias():
    z = np.array([[-2.0, 3.0]], np.float32)
    kernels.dense.bias_act(z, None, "relu", negative_slope=0.5)
    np.testing.assert_array_equal(z, [[0.0, 3.0]])
    same = np.array([[1.0, -1.0]])
    assert kernels.dense.bias_act(same, None, None) is same


def test_dense_kernels_reject_bad_arguments():
    y = np.ones((2, 3), np.float32)
    with pytest.raises(DataError, match=r"bias must be a contiguous float32 array of shape \(3,\)"):
        kernels.dense.bias_act(y, np.ones(4, np.float32), "relu")
    with pytest.raises(DataError, match="bias"):
        kernels.dense.bias_act(y, np.ones(3, np.float64), "relu")
    with pytest.raises(ConfigError, match="activation must be one of"):
        kernels.dense.bias_act(y, np.ones(3, np.float32), "swish")
    with pytest.raises(DataError, match="needs pre="):
        kernels.dense.bias_act(y, np.ones(3, np.float32), "gelu")
    with pytest.raises(ConfigError, match="activation must be one of"):
        kernels.dense.act_backward(y, y, None)
    with pytest.raises(DataError, match="cached"):
        kernels.dense.act_backward(y, np.ones((3, 2), np.float32), "relu")


# -- losses ----------------------------------------------------------------------------------
def softmax_ce_ref(z, labels):
    z = z.astype(np.float64)
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    p = np.exp(z - lse[:, None])
    onehot = np.eye(z.shape[1])[labels]
    n = len(z)
    return float(np.mean(lse - z[np.arange(n), labels])), (p - onehot) / n


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,c", [(1, 1), (3, 7), (33, 10)])
def test_softmax_cross_entropy_matches_oracle(dtype, n, c):
    rng = np.random.default_rng(4)
    z = _data(rng, (n, c), dtype)
    labels = rng.integers(0, c, n)
    loss, grad = kernels.losses.softmax_cross_entropy(z, labels)
    ref_loss, ref_grad = softmax_ce_ref(z, labels)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    assert loss == pytest.approx(ref_loss, rel=tol, abs=tol)
    np.testing.assert_allclose(grad, ref_grad, rtol=tol * 10, atol=tol)
    probs = kernels.losses.softmax(z)
    np.testing.assert_allclose(probs, ref_grad * n + np.eye(c)[labels], rtol=tol * 10, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_is_stable_for_extreme_logits(dtype):
    z = np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, -1000.0],
                  [1e30, 0.0, -1e30]], dtype)
    labels = np.array([1, 2, 0])
    loss, grad = kernels.losses.softmax_cross_entropy(z, labels)
    # Row 0: lse = 1000, loss 2000; row 1: log 3; row 2: 0.
    assert loss == pytest.approx((2000 + math.log(3)) / 3, rel=1e-6)
    assert np.isfinite(grad).all()
    np.testing.assert_allclose(grad[0], np.array([1, -1, 0]) / 3, atol=1e-7)
    np.testing.assert_allclose(grad[1], (np.full(3, 1 / 3) - [0, 0, 1]) / 3, atol=1e-7)
    p = kernels.losses.softmax(z)
    assert np.isfinite(p).all() and np.allclose(p.sum(axis=1), 1)


def test_softmax_cross_entropy_passes_nan_on_and_checks_labels():
    z = np.zeros((2, 3), np.float32)
    z[1, 2] = np.nan
    loss, _ = kernels.losses.softmax_cross_entropy(z, np.array([0, 1]))
    assert math.isnan(loss)
    with pytest.raises(DataError, match=r"labels must be in \[0, 3\); received label 3"):
        kernels.losses.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(DataError, match="received label -1"):
        kernels.losses.softmax_cross_entropy(np.zeros((2, 3)), np.array([-1, 0]))
    with pytest.raises(DataError, match="int64"):
        kernels.losses.softmax_cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(DataError, match=r"shape \(N, C\)"):
        kernels.losses.softmax_cross_entropy(np.zeros(3), np.array([0]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (4, 3), (2, 5, 3)])
def test_mse_matches_oracle(dtype, shape):
    rng = np.random.default_rng(5)
    p, t = _data(rng, shape, dtype), _data(rng, shape, dtype)
    loss, grad = kernels.losses.mse(p, t)
    d = p.astype(np.float64) - t
    assert loss == pytest.approx(np.mean(d * d), rel=1e-6 if dtype == np.float32 else 1e-13)
    np.testing.assert_allclose(grad, 2 * d / d.size, rtol=1e-6)


def bce_ref(z, t):
    z = z.astype(np.float64)
    p = np.array([sigmoid_ref(v) for v in z.ravel()]).reshape(z.shape)
    losses = np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))
    return float(losses.mean()), (p - t) / z.size


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(3,), (5, 4)])
def test_bce_with_logits_matches_oracle(dtype, shape):
    rng = np.random.default_rng(6)
    z = _data(rng, shape, dtype)
    t = rng.uniform(0, 1, shape).astype(dtype)
    loss, grad = kernels.losses.bce_with_logits(z, t)
    ref_loss, ref_grad = bce_ref(z, t)
    assert loss == pytest.approx(ref_loss, rel=1e-6)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_with_logits_is_stable_for_extreme_logits(dtype):
    z = np.array([1000.0, -1000.0, 1000.0, -1000.0, 0.0], dtype)
    t = np.array([1.0, 0.0, 0.0, 1.0, 0.5], dtype)
    loss, grad = kernels.losses.bce_with_logits(z, t)
    assert loss == pytest.approx((0 + 0 + 1000 + 1000 + math.log(2)) / 5, rel=1e-6)
    np.testing.assert_allclose(grad, np.array([0, 0, 1, -1, 0]) / 5, atol=1e-9)
    with pytest.raises(DataError, match=r"targets must be in \[0, 1\]; received 1.5"):
        kernels.losses.bce_with_logits(z, np.array([0, 1, 1.5, 0, 0], dtype))


# -- optimizer kernels (the classes are tested over several steps in test_optimizers.py) ------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_kernel_one_step(dtype, nesterov):
    rng = np.random.default_rng(7)
    p, g, v = (_data(rng, (3, 5), dtype) for _ in range(3))
    lr, mu, wd = 0.1, 0.9, 0.01
    d = g.astype(np.float64) + wd * p
    b = mu * v + d
    expected = p - lr * (d + mu * b if nesterov else b)
    kernels.optim.sgd(p, g, v, lr=lr, momentum=mu, nesterov=nesterov, weight_decay=wd)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(v, b, rtol=tol, atol=tol)
    np.testing.assert_allclose(p, expected, rtol=tol, atol=tol)


def test_squared_norm_and_scale():
    rng = np.random.default_rng(8)
    arrays = [_data(rng, s, np.float32) for s in [(7,), (3, 4), (2, 2, 5)]]
    expected = sum(float(np.sum(a.astype(np.float64) ** 2)) for a in arrays)
    assert kernels.optim.squared_norm(arrays) == pytest.approx(expected, rel=1e-12)
    before = [a.copy() for a in arrays]
    kernels.optim.scale_(arrays, 0.5)
    for a, b in zip(arrays, before):
        np.testing.assert_array_equal(a, b * np.float32(0.5))


def test_optim_kernels_reject_mismatched_arrays():
    p = np.zeros(4, np.float32)
    with pytest.raises(DataError, match="grad must be a C-contiguous"):
        kernels.optim.sgd(p, np.zeros(5, np.float32), lr=0.1)
    with pytest.raises(DataError, match="velocity"):
        kernels.optim.sgd(p, np.zeros(4, np.float32), None, lr=0.1, momentum=0.9)
    with pytest.raises(DataError, match="exp_avg_sq"):
        kernels.optim.adam(p, p.copy(), p.copy(), np.zeros(4), lr=0.1, step=1)
    frozen = np.zeros(4, np.float32)
    frozen.flags.writeable = False
    with pytest.raises(DataError, match="writeable"):
        kernels.optim.sgd(frozen, np.zeros(4, np.float32), lr=0.1)


def test_float32_erf_is_accurate_over_the_whole_line():
    """The rational float32 erf behind gelu_erf: a few ulps everywhere, exact +-1 in the tails."""
    x = np.concatenate([np.linspace(-6, 6, 200_001), [0.0, 1e-30, -1e-30, 4.0, 30.0, -30.0]])
    x = x.astype(np.float32)
    y = kernels.activations.gelu_erf(x)
    ref = _elementwise(gelu_erf_ref, x)
    np.testing.assert_allclose(y, ref, **tol(np.float32, "gelu_erf"))
    assert np.isnan(kernels.activations.gelu_erf(np.array([np.nan], np.float32)))[0]


def test_float32_exp_is_correctly_rounded_over_its_whole_range():
    """The vectorised float32 exp behind softmax cross-entropy: float64 arithmetic rounded
    once, so each result is exp(x) correctly rounded (math.exp's, rounded to float32), with
    0 and inf past the range and NaN kept."""
    from numba import njit

    from zoo.kernels.activations import scalar_exp

    @njit
    def exps(x, out):
        for i in range(x.size):
            out[i] = scalar_exp(x[i])

    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-110, 95, 200_000), np.linspace(-1, 1, 20_001),
                        [0.0, -0.0, 1e-30, -1e-30, 88.72, 88.73, -87.33, -103.9, -104.0, -200.0,
                         -1e30]]).astype(np.float32)
    out = np.empty_like(x)
    exps(x, out)
    with np.errstate(over="ignore"):  # float32 overflows to inf past 88.72
        ref = np.array([math.exp(v) for v in x.astype(np.float64)]).astype(np.float32)
    np.testing.assert_array_equal(out, ref)
    edges = np.array([1000.0, np.inf, -np.inf, np.nan], np.float32)
    exps(edges, edges)
    np.testing.assert_array_equal(edges, [np.inf, np.inf, 0.0, np.nan])
