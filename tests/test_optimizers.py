"""Optimizers against numpy references over several steps; state round trips; clipping."""

import math

import numpy as np
import pytest

from zoo.errors import CheckpointError, ConfigError, DataError
from zoo.optimizers import SGD, Adam, AdamW, Optimizer, RMSProp, clip_grad_norm

STEPS = 5


# -- references: PyTorch's update rules, written out in float64 numpy -------------------------
def sgd_ref(p, grads, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    v = np.zeros_like(p)
    for g in grads:
        d = g + weight_decay * p
        if momentum:
            v = momentum * v + d
            d = d + momentum * v if nesterov else v
        p = p - lr * d
    return p


def rmsprop_ref(p, grads, lr, alpha=0.99, eps=1e-8, momentum=0.0, weight_decay=0.0):
    s, b = np.zeros_like(p), np.zeros_like(p)
    for g in grads:
        d = g + weight_decay * p
        s = alpha * s + (1 - alpha) * d * d
        u = d / (np.sqrt(s) + eps)
        if momentum:
            b = momentum * b + u
            u = b
        p = p - lr * u
    return p


def adam_ref(p, grads, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
             decoupled=False):
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    return p


def adamw_ref(p, grads, lr, weight_decay=0.01, **kwargs):
    return adam_ref(p, grads, lr, weight_decay=weight_decay, decoupled=True, **kwargs)


CASES = [
    (SGD, sgd_ref, {"lr": 0.1}),
    (SGD, sgd_ref, {"lr": 0.1, "weight_decay": 0.05}),
    (SGD, sgd_ref, {"lr": 0.05, "momentum": 0.9}),
    (SGD, sgd_ref, {"lr": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    (RMSProp, rmsprop_ref, {"lr": 0.01}),
    (RMSProp, rmsprop_ref, {"lr": 0.01, "alpha": 0.9, "momentum": 0.5, "weight_decay": 0.1}),
    (Adam, adam_ref, {"lr": 0.01}),
    (Adam, adam_ref, {"lr": 0.01, "beta1": 0.8, "beta2": 0.99, "weight_decay": 0.1}),
    (AdamW, adamw_ref, {"lr": 0.01}),
    (AdamW, adamw_ref, {"lr": 0.01, "weight_decay": 0.3, "eps": 1e-6}),
]
IDS = [f"{cls.__name__}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for cls, _, kw in CASES]


def _problem(dtype, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(3, 4), (4,), (2, 3, 2)]
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(STEPS)]
    return params, grads


def _run(optimizer, params, grad_steps):
    buffers = [np.zeros_like(p) for p in params]
    for step in grad_steps:
        for buf, g in zip(buffers, step):
            buf[...] = g
        optimizer.step(params, buffers)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cls,ref,kwargs", CASES, ids=IDS)
def test_update_matches_reference_over_several_steps(cls, ref, kwargs, dtype):
    params, grad_steps = _problem(dtype)
    expected = [ref(p.astype(np.float64), [s[i].astype(np.float64) for s in grad_steps],
                    **kwargs) for i, p in enumerate(params)]
    optimizer = cls(**kwargs)
    _run(optimizer, params, grad_steps)
    assert optimizer.iterations == STEPS
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == np.float64 else {"rtol": 2e-5, "atol": 2e-6}
    for got, want in zip(params, expected):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, **tol)


@pytest.mark.parametrize("cls,ref,kwargs", CASES, ids=IDS)
def test_flat_buffer_step_equals_per_parameter_steps(cls, ref, kwargs):
    params, grad_steps = _problem(np.float32, seed=1)
    flat = np.concatenate([p.ravel() for p in params])
    flat_grads = [[np.concatenate([g.ravel() for g in step])] for step in grad_steps]
    _run(cls(**kwargs), params, grad_steps)
    _run(cls(**kwargs), [flat], flat_grads)
    np.testing.assert_array_equal(flat, np.concatenate([p.ravel() for p in params]))


@pytest.mark.parametrize("cls,ref,kwargs", CASES, ids=IDS)
def test_state_dict_round_trip_continues_bit_identically(cls, ref, kwargs):
    params, grad_steps = _problem(np.float32, seed=2)
    straight = [p.copy() for p in params]
    _run(cls(**kwargs), straight, grad_steps)

    first = cls(**kwargs)
    resumed = [p.copy() for p in params]
    _run(first, resumed, grad_steps[:2])
    state = first.state_dict()
    assert state["name"] == cls.name and state["step"] == 2
    assert state["config"] == first.get_config()
    for key, value in state["slots"].items():
        slot, index = key.rsplit(".", 1)
        assert slot in first.slot_names() and value.shape == params[int(index)].shape
    _run(first, [p.copy() for p in resumed], grad_steps[2:3])  # later steps never touch state
    # A new optimizer (built with other hyperparameters) takes over from the saved state.
    second = cls(lr=123.0)
    second.load_state_dict(state)
    assert second.get_config() == first.get_config()
    _run(second, resumed, grad_steps[2:])
    for a, b in zip(resumed, straight):
        np.testing.assert_array_equal(a, b)
    assert second.state_dict()["step"] == STEPS


def test_state_dict_before_any_step_and_lazy_slots():
    optimizer = SGD(lr=0.1, momentum=0.9)
    assert optimizer.state_dict() == {"name": "sgd", "config": optimizer.get_config(),
                                      "step": 0, "slots": {}}
    assert SGD(lr=0.1).slot_names() == ()
    fresh = SGD(lr=1.0)
    fresh.load_state_dict(optimizer.state_dict())
    p = np.ones(3)
    fresh.step([p], [np.ones(3)])
    np.testing.assert_allclose(p, 0.9)  # lr and momentum came from the state; velocity 0
    assert set(fresh.state_dict()["slots"]) == {"velocity.0"}


def test_new_arrays_with_the_same_layout_keep_their_state():
    optimizer = SGD(lr=0.1, momentum=0.5)
    p, g = np.zeros(2), np.ones(2)
    optimizer.step([p], [g])
    moved = p.copy()
    optimizer.step([moved], [g.copy()])  # a model made flat between steps, say
    np.testing.assert_allclose(moved, -0.1 - 0.1 * 1.5)


@pytest.mark.parametrize("state,message", [
    ({"name": "adam", "config": {"lr": 0.1}, "step": 1, "slots": {}}, "is for 'adam', not 'sgd'"),
    ({"name": "sgd"}, "must have name, config, step and slots"),
    ({"name": "sgd", "config": {"lr": -1}, "step": 1, "slots": {}}, "saved config does not fit"),
    ({"name": "sgd", "config": {"lr": 0.1, "beta": 2}, "step": 1, "slots": {}},
     "saved config does not fit"),
    ({"name": "sgd", "config": {"lr": 0.1}, "step": -2, "slots": {}}, "step must be an integer"),
    ({"name": "sgd", "config": {"lr": 0.1, "momentum": 0.9}, "step": 1,
      "slots": {"velocity.0": "x"}}, "slot velocity.0 must be a float array"),
])
def test_load_state_dict_errors(state, message):
    with pytest.raises(CheckpointError, match=message):
        SGD(lr=0.1).load_state_dict(state)


def test_loaded_slots_must_fit_the_parameters():
    optimizer = SGD(lr=0.1, momentum=0.9)
    optimizer.step([np.zeros(3)], [np.ones(3)])
    state = optimizer.state_dict()
    other = SGD(lr=0.1, momentum=0.9)
    other.load_state_dict(state)
    with pytest.raises(CheckpointError, match=r"velocity.0 has shape \(3,\); parameter 0 has"):
        other.step([np.zeros(4)], [np.ones(4)])
    other.load_state_dict(state)
    with pytest.raises(CheckpointError, match="do not fit 2 parameters"):
        other.step([np.zeros(3), np.zeros(1)], [np.ones(3), np.ones(1)])


@pytest.mark.parametrize("lr", [0, -0.1, float("nan"), float("inf"), "0.1", None, True])
def test_lr_must_be_positive_and_finite(lr):
    for cls in (SGD, RMSProp, Adam, AdamW):
        with pytest.raises(ConfigError, match=rf"{cls.__name__}: lr must be a positive finite "
                                              rf"number; received lr="):
            cls(lr=lr)
    with pytest.raises(ConfigError, match=r"^SGD: lr must be a positive finite number; "
                                          r"received lr=0$"):
        SGD(lr=0)


@pytest.mark.parametrize("make,message", [
    (lambda: SGD(0.1, momentum=1.0), r"momentum must be in \[0, 1\)"),
    (lambda: SGD(0.1, momentum=-0.1), "momentum"),
    (lambda: SGD(0.1, nesterov=True), "nesterov=True needs momentum > 0"),
    (lambda: SGD(0.1, momentum=0.9, nesterov="yes"), "nesterov must be True or False"),
    (lambda: SGD(0.1, weight_decay=-1), "weight_decay must be a finite number >= 0"),
    (lambda: RMSProp(0.1, alpha=1.5), "alpha"),
    (lambda: RMSProp(0.1, eps=0), "eps must be a positive finite number"),
    (lambda: Adam(0.1, beta1=1.0), "beta1"),
    (lambda: AdamW(0.1, beta2=-0.5), "AdamW: beta2"),
])
def test_hyperparameter_errors(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_step_rejects_mismatched_gradients():
    optimizer = Adam(lr=0.1)
    with pytest.raises(DataError, match=r"gradient 0 must be a C-contiguous float64 array of "
                                        r"shape \(3,\)"):
        optimizer.step([np.zeros(3)], [np.zeros(4)])
    with pytest.raises(DataError, match="two lists of equal length"):
        optimizer.step([np.zeros(3)], [])
    with pytest.raises(DataError, match="parameter 0 must be a writeable"):
        optimizer.step([np.zeros(3, np.int64)], [np.zeros(3, np.int64)])


def test_config_and_repr():
    assert repr(SGD(0.1, momentum=0.9)) == \
        "SGD(lr=0.1, momentum=0.9, nesterov=False, weight_decay=0.0, decay_bias_norm=True)"
    assert AdamW(lr=0.001).get_config()["weight_decay"] == 0.01
    for cls in (SGD, RMSProp, Adam, AdamW):
        opt = cls(lr=0.5)
        assert isinstance(opt, Optimizer)
        assert type(opt)(**opt.get_config()).get_config() == opt.get_config()


def test_registered_optimizers(fresh_host):
    host = fresh_host.get_host()
    for name, cls in [("sgd", SGD), ("rmsprop", RMSProp), ("adam", Adam), ("adamw", AdamW)]:
        assert host.optimizers.get(name) is cls
        assert host.optimizers.get(name)(lr=0.01, weight_decay=0.1).name == name


# -- clip_grad_norm --------------------------------------------------------------------------
def test_clip_grad_norm_scales_to_max_norm_and_returns_the_norm():
    grads = [np.array([3.0, 0.0], np.float32), np.array([[4.0]], np.float32)]
    assert clip_grad_norm(grads, 1.0) == pytest.approx(5.0)
    total = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads))
    assert total == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(grads[0], [0.6, 0.0], rtol=1e-5)


def test_clip_grad_norm_leaves_small_and_non_finite_gradients_alone():
    small = [np.array([0.3, 0.4])]
    assert clip_grad_norm(small, 1.0) == pytest.approx(0.5)
    np.testing.assert_array_equal(small[0], [0.3, 0.4])
    bad = [np.array([np.inf, 1.0])]
    assert math.isinf(clip_grad_norm(bad, 1.0))
    np.testing.assert_array_equal(bad[0], [np.inf, 1.0])
    with pytest.raises(ConfigError, match="max_norm must be a positive finite number"):
        clip_grad_norm(small, 0)
