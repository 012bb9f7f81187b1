"""Losses: gradient checks, stability at extreme logits, predictions, errors, registration."""

import math
import sys

import numpy as np
import pytest

from zoo.errors import ConfigError, DataError
from zoo.kit.gradcheck import check_loss
from zoo.losses import MSE, BinaryCrossEntropy, SoftmaxCrossEntropy


def _logits(shape, seed=0, scale=2.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale


@pytest.mark.parametrize("n,c", [(1, 2), (5, 3), (8, 10)])
def test_softmax_cross_entropy_gradcheck(n, c):
    labels = np.random.default_rng(1).integers(0, c, n)
    check_loss(SoftmaxCrossEntropy(), _logits((n, c)), labels)


@pytest.mark.parametrize("shape", [(4,), (3, 2), (2, 3, 4)])
def test_mse_gradcheck(shape):
    check_loss(MSE(), _logits(shape), _logits(shape, seed=2))


@pytest.mark.parametrize("shape", [(6,), (3, 4)])
def test_bce_gradcheck(shape):
    target = np.random.default_rng(3).uniform(0, 1, shape)
    check_loss(BinaryCrossEntropy(), _logits(shape), target)


def test_softmax_cross_entropy_values_and_probabilities():
    loss = SoftmaxCrossEntropy()
    z = np.array([[2.0, 1.0, 0.1], [0.0, 0.0, 0.0]], np.float32)
    labels = np.array([0, 2])
    lse0 = math.log(math.exp(2) + math.exp(1) + math.exp(0.1))
    expected = ((lse0 - 2.0) + math.log(3)) / 2
    assert loss.forward(z, labels) == pytest.approx(expected, rel=1e-6)
    grad = loss.backward()
    assert grad.shape == z.shape and grad.dtype == np.float32
    np.testing.assert_allclose(grad.sum(axis=1), 0, atol=1e-7)
    probs = loss.activate(z)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(probs[1], 1 / 3, rtol=1e-6)
    assert repr(loss) == "SoftmaxCrossEntropy()" and loss.get_config() == {}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropies_are_stable_at_plus_minus_1000(dtype):
    ce = SoftmaxCrossEntropy()
    z = np.array([[1000.0, -1000.0], [-1000.0, 1000.0], [1000.0, 1000.0]], dtype)
    value = ce.forward(z, np.array([0, 0, 1]))
    assert value == pytest.approx((0 + 2000 + math.log(2)) / 3, rel=1e-6)
    grad = ce.backward()
    assert np.isfinite(grad).all()
    np.testing.assert_allclose(grad, np.array([[0, 0], [-1, 1], [0.5, -0.5]]) / 3, atol=1e-7)
    bce = BinaryCrossEntropy()
    logits = np.array([[1000.0, -1000.0], [-1000.0, 1000.0]], dtype)
    value = bce.forward(logits, np.array([[1.0, 0.0], [1.0, 0.0]], dtype))
    assert value == pytest.approx(2000 / 4, rel=1e-6)
    np.testing.assert_allclose(bce.backward(), np.array([[0, 0], [-1, 1]]) / 4, atol=1e-9)
    np.testing.assert_allclose(bce.activate(logits), [[1, 0], [0, 1]], atol=1e-7)


def test_mse_values_and_flexible_target_shape():
    loss = MSE()
    pred = np.array([[1.0, 2.0], [3.0, 5.0]])
    target = np.array([[1.0, 0.0], [3.0, 2.0]])
    assert loss.forward(pred, target) == pytest.approx((4 + 9) / 4)
    np.testing.assert_allclose(loss.backward(), 2 * (pred - target) / 4)
    assert loss.activate(pred) is pred
    # A reconstruction target with the same values per example in another shape.
    assert loss.forward(pred.reshape(2, 2), target.reshape(2, 2, 1)) == pytest.approx(13 / 4)
    # float64 targets for a float32 model are converted.
    assert loss.forward(pred.astype(np.float32), target) == pytest.approx(13 / 4)
    assert loss.backward().dtype == np.float32


def test_gradient_buffer_is_reused_while_the_shape_stays():
    loss = SoftmaxCrossEntropy()
    rng = np.random.default_rng(4)
    labels = np.array([0, 1, 2, 1])
    loss.forward(rng.standard_normal((4, 3)).astype(np.float32), labels)
    first = loss.backward()
    loss.forward(rng.standard_normal((4, 3)).astype(np.float32), labels)
    assert loss.backward() is first
    loss.forward(rng.standard_normal((2, 3)).astype(np.float32), labels[:2])
    assert loss.backward().shape == (2, 3)


def test_smaller_integer_label_types_are_accepted():
    z = _logits((3, 4))
    expected = SoftmaxCrossEntropy().forward(z, np.array([0, 3, 1]))
    loss = SoftmaxCrossEntropy()
    for _ in range(2):  # the converted path stays correct on repeated calls
        assert loss.forward(z, np.array([0, 3, 1], np.int32)) == expected
        assert loss.forward(z, [0, 3, 1]) == expected


@pytest.mark.parametrize("loss,pred,target,message", [
    (SoftmaxCrossEntropy(), np.zeros((2, 3)), np.array([0, 3]),
     r"labels must be in \[0, 3\); received label 3"),
    (SoftmaxCrossEntropy(), np.zeros((2, 3)), np.array([-1, 0]), "received label -1"),
    (SoftmaxCrossEntropy(), np.zeros((2, 3)), np.array([0, 1, 2]),
     (r"targets must be integer class labels of shape \(2,\); received int64 array of "
      r"shape \(3,\)")),
    (SoftmaxCrossEntropy(), np.zeros((2, 3)), np.array([0.0, 1.0]), "integer class labels"),
    (SoftmaxCrossEntropy(), np.zeros(3), np.array([0, 1, 2]), r"logits must have shape"),
    (SoftmaxCrossEntropy(), np.zeros((2, 3), np.int64), np.array([0, 1]), "float32 or float64"),
    (SoftmaxCrossEntropy(), np.zeros((0, 3)), np.zeros(0, np.int64), "non-empty batch"),
    (MSE(), np.zeros((2, 3)), np.zeros((2, 4)), r"targets must have the predictions' shape"),
    (MSE(), np.zeros((2, 3)), np.zeros((3, 2)), r"predictions' shape \(2, 3\)"),
    (MSE(), np.zeros((2, 3)), np.array([["a", "b", "c"]] * 2), "targets must be numbers"),
    (BinaryCrossEntropy(), np.zeros((2, 2)), np.array([[0, 1], [2, 0]]),
     r"targets must be in \[0, 1\]; received 2.0"),
    (BinaryCrossEntropy(), np.zeros((2, 2)), np.array([[0, 1], [np.nan, 0]]),
     r"targets must be in \[0, 1\]; received nan"),
])
def test_loss_errors(loss, pred, target, message):
    with pytest.raises(DataError, match=message):
        loss.forward(pred, target)


def test_backward_before_forward_is_an_error():
    with pytest.raises(ConfigError, match=r"MSE.backward\(\) called before forward\(\)"):
        MSE().backward()


def test_registered_losses_and_no_numba_at_import(fresh_host):
    host = fresh_host.get_host()
    assert host.losses.get("ce") is SoftmaxCrossEntropy
    assert host.losses.get("cross_entropy") is SoftmaxCrossEntropy
    assert host.losses.get("softmax_cross_entropy") is SoftmaxCrossEntropy
    assert host.losses.get("mse") is MSE
    assert host.losses.get("binary_cross_entropy") is BinaryCrossEntropy
    assert host.losses.get("bce")().name == "bce"
    for name in host.losses.names():
        assert host.losses.get(name)().name == name


def test_importing_losses_and_optimizers_does_not_import_numba():
    import subprocess

    code = ("import sys, zoo.losses, zoo.optimizers, zoo.plugins.builtin.losses, "
            "zoo.plugins.builtin.optimizers, zoo.layers.dense, zoo.layers.activations, "
            "zoo.layers.dropout, zoo.layers.reshape, zoo.initializers; "
            "print('numba' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
