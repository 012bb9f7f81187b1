"""The conformance kit for optimizers, losses, datasets, criteria, schedules and metrics: every
built-in passes, and a broken one fails with a message that says what broke."""

import numpy as np
import pytest

from zoo import testing
from zoo.plugins import PluginHost
from zoo.schedules import Schedule


@pytest.fixture(scope="module")
def host():
    return PluginHost(load=[])


def sgd_reference(param, grads, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    velocity = np.zeros_like(param)
    for g in grads:
        g = g + weight_decay * param
        velocity = momentum * velocity + g
        param = param - lr * ((g + momentum * velocity) if nesterov else velocity)
    return param


def adam_reference(param, grads, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                   decoupled=False):
    m = np.zeros_like(param)
    v = np.zeros_like(param)
    for t, g in enumerate(grads, 1):
        if decoupled:
            param = param * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * param
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        m_hat, v_hat = m / (1 - beta1 ** t), v / (1 - beta2 ** t)
        param = param - lr * m_hat / (np.sqrt(v_hat) + eps)
    return param


@pytest.mark.parametrize("name, options, reference", [
    ("sgd", {}, sgd_reference),
    ("sgd", {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-2}, sgd_reference),
    ("adam", {"weight_decay": 1e-2}, adam_reference),
    ("adamw", {"weight_decay": 0.1},
     lambda p, g, lr, **o: adam_reference(p, g, lr, decoupled=True, **o)),
    ("rmsprop", {"momentum": 0.5}, None),
])
def test_builtin_optimizers_conform(host, name, options, reference):
    done = testing.check_optimizer(name, options=options, reference=reference, host=host)
    assert ("matches the reference update" in done) == (reference is not None)
    assert "state_dict round trip resumes bit-identically" in done


def mse_reference(pred, target):
    return np.mean((pred - target) ** 2)


def cross_entropy_reference(logits, labels):
    total = 0.0
    for row, label in zip(logits, labels):
        total += np.log(np.sum(np.exp(row - row.max()))) + row.max() - row[label]
    return total / len(labels)


def bce_reference(logits, targets):
    p = 1 / (1 + np.exp(-logits))
    return np.mean(-(targets * np.log(p) + (1 - targets) * np.log(1 - p)))


@pytest.mark.parametrize("name, task, reference", [
    ("mse", "regress", mse_reference),
    ("softmax_cross_entropy", "classify", cross_entropy_reference),
    ("bce", "binary", bce_reference)])
def test_builtin_losses_conform(host, name, task, reference):
    done = testing.check_loss(name, task=task, reference=reference, host=host)
    assert "gradient matches float64 central differences" in done
    assert "value matches the reference" in done


@pytest.mark.parametrize("name", ["spirals", "xor", "sine", "adding", "digits", "mnist1d"])
def test_builtin_datasets_conform(host, name):
    assert "deterministic for a seed" in testing.check_dataset(name, host=host)


@pytest.mark.parametrize("spec", ["max_epochs=5", "max_steps=30", "max_time=1h",
                                  "loss_below(0.5)", "loss_delta_below(0.001, patience=2)",
                                  "early_stopping(patience=2)", "target(val_accuracy, 0.6)",
                                  "non_finite", "early_stopping(monitor=val_accuracy)"])
def test_builtin_criteria_conform(host, spec):
    assert "state_dict round trip decides as the original" in \
        testing.check_criterion(spec, host=host)


@pytest.mark.parametrize("spec", ["constant", "step(step_size=2)", "exponential",
                                  "cosine(warmup_epochs=1)", "one_cycle",
                                  "reduce_on_plateau(patience=1, factor=0.5)"])
def test_builtin_schedules_conform(host, spec):
    assert "state_dict round trip (through JSON) continues with the same rates" in \
        testing.check_schedule(spec, host=host)


def test_builtin_metrics_conform(host):
    for name in host.metrics.names():
        testing.check_metric(name, host=host)


# -- broken components are caught ----------------------------------------------------------------

class _Registry(dict):
    def names(self):
        return sorted(self)

    def canonical(self, name):
        return name


class _Host:
    def __init__(self, **registries):
        for kind in ("optimizers", "losses", "datasets", "criteria", "schedules", "metrics"):
            setattr(self, kind, _Registry(registries.get(kind, {})))


def test_an_optimizer_that_forgets_its_state_fails():
    from zoo.optimizers import SGD

    class Forgetful(SGD):
        name = "forgetful"

        def state_dict(self):
            state = super().state_dict()
            state["slots"] = {}
            return state

    fake = _Host(optimizers={"forgetful": lambda lr, **o: Forgetful(lr, momentum=0.9)})
    with pytest.raises(AssertionError, match="does not continue bit-identically"):
        testing.check_optimizer("forgetful", host=fake)


def test_an_optimizer_off_its_reference_fails(host):
    with pytest.raises(AssertionError, match="differs from the reference"):
        testing.check_optimizer("sgd", options={"momentum": 0.9}, host=host,
                                reference=lambda p, g, lr, **o: sgd_reference(p, g, lr))


def test_a_schedule_that_changes_within_an_epoch_fails():
    class Jumpy(Schedule):
        name = "jumpy"
        per = "epoch"

        def lr(self, base, step, epoch):
            return base / step

    fake = _Host(schedules={"jumpy": Jumpy})
    with pytest.raises(AssertionError, match="declares per='epoch' but changes the rate"):
        testing.check_schedule("jumpy", host=fake)


def test_a_loss_with_a_wrong_gradient_fails():
    from zoo.losses import MSE

    class Off(MSE):
        def backward(self):
            return super().backward() * 1.5

    fake = _Host(losses={"off": Off})
    with pytest.raises(AssertionError, match="loss off: gradient check"):
        testing.check_loss("off", host=fake)
    with pytest.raises(AssertionError, match="loss mse: value .* differs from the reference"):
        testing.check_loss("mse", host=_Host(losses={"mse": MSE}),
                           reference=lambda p, t: np.mean(np.abs(p - t)))


def test_registration_checks_default_specs(host):
    import dataclasses

    mlp = PluginHost(load=["mlp"]).architectures.get("mlp")
    good = dataclasses.replace(mlp, defaults={"optimizer": "sgd(momentum=0.9)",
                                              "schedule": "cosine(warmup_epochs=1)"})
    testing.check_registration(good, host=host)
    bad = dataclasses.replace(mlp, defaults={"optimizer": "sgd(momentm=0.9)"})
    with pytest.raises(AssertionError, match=r"defaults\['optimizer'\]: --optimizer "
                                             r"'sgd\(momentm=0.9\)': sgd has no parameter"):
        testing.check_registration(bad, host=host)
    worse = dataclasses.replace(mlp, defaults={"schedule": "step(gamma=2)"})
    with pytest.raises(AssertionError, match="step: gamma must be in"):
        testing.check_registration(worse, host=host)
