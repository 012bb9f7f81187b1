"""Learning-rate schedules: each against a slow, obvious reference, state, resume."""

import math

import numpy as np
import pytest

from zoo.checkpoints.format import read_checkpoint
from zoo.errors import CheckpointError, ConfigError
from zoo.plugins import PluginHost
from zoo.schedules import (
    Constant,
    Cosine,
    Exponential,
    OneCycle,
    ReduceOnPlateau,
    StepDecay,
)
from zoo.spec import SCHEDULE, parse_spec


def rates(schedule, base=1.0, steps_per_epoch=4, epochs=5):
    schedule.start(steps_per_epoch=steps_per_epoch, epochs=epochs)
    return [schedule.lr(base, k, (k - 1) // steps_per_epoch)
            for k in range(1, steps_per_epoch * epochs + 1)]


def test_builtins_are_registered_with_when_they_change():
    host = PluginHost(load=[])
    assert host.schedules.names() == ["constant", "cosine", "exponential", "one_cycle",
                                      "reduce_on_plateau", "step"]
    per = {name: factory.per for name, factory in host.schedules.items()}
    assert per == {"constant": "epoch", "cosine": "step", "exponential": "epoch",
                   "one_cycle": "step", "reduce_on_plateau": "epoch", "step": "epoch"}


def test_constant_step_and_exponential():
    assert rates(Constant(), base=0.3) == [0.3] * 20
    step = rates(StepDecay(step_size=2, gamma=0.5), base=0.8)
    assert step == [0.8] * 8 + [0.4] * 8 + [0.2] * 4
    exponential = rates(Exponential(gamma=0.9), base=2.0)
    assert exponential == [2.0 * 0.9 ** ((k - 1) // 4) for k in range(1, 21)]


def test_cosine_with_linear_warmup():
    got = rates(Cosine(warmup_epochs=1, min_lr=0.1), base=1.0)
    warmup, total = 4, 20
    expected = []
    for k in range(1, total + 1):
        if k <= warmup:
            expected.append(k / warmup)
        else:
            q = (k - warmup) / (total - warmup)
            expected.append(0.1 + 0.9 * (1 + math.cos(math.pi * q)) / 2)
    np.testing.assert_allclose(got, expected, rtol=1e-15)
    # the horizon: epochs= fixes it, after it the rate stays at min_lr
    fixed = rates(Cosine(epochs=2, min_lr=0.05))
    assert fixed[7] == pytest.approx(0.05) and fixed[-1] == pytest.approx(0.05)


def test_one_cycle_follows_pytorch_one_cycle_lr():
    """PyTorch's OneCycleLR (two phases, cosine annealing), written out step by step."""
    schedule = OneCycle(max_lr=1.0, pct_start=0.25, div_factor=10, final_div_factor=100)
    got = rates(schedule, base=123.0)  # max_lr given: the base rate is not used
    total = 20
    initial, final = 1.0 / 10, 1.0 / 10 / 100
    up_end = 0.25 * total - 1
    expected = []
    for i in range(total):
        if i <= up_end:
            pct, start, end = i / up_end, initial, 1.0
        else:
            pct, start, end = (i - up_end) / (total - 1 - up_end), 1.0, final
        expected.append(end + (start - end) / 2 * (math.cos(math.pi * pct) + 1))
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert got[0] == pytest.approx(0.1) and max(got) == pytest.approx(1.0)
    assert got[-1] == pytest.approx(final)


def test_reduce_on_plateau_as_keras():
    schedule = ReduceOnPlateau(monitor="val_loss", factor=0.5, patience=2, min_lr=0.2,
                               min_delta=0.01)
    schedule.resolve(["train_loss", "val_loss"])
    seen = []
    for epoch, value in enumerate([1.0, 0.9, 0.895, 0.9, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6], 1):
        schedule.update(epoch, {"val_loss": value}, 1.0)
        seen.append(schedule.lr(1.0, 0, epoch))
    # 0.895 is no improvement on 0.9 by more than 0.01; two such epochs halve the rate
    assert seen == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.2, 0.2]
    state = schedule.state_dict()
    again = ReduceOnPlateau(monitor="val_loss", factor=0.5, patience=2, min_lr=0.2)
    again.load_state_dict(state)
    assert again.state_dict() == state and again.lr(1.0, 0, 11) == 0.2


def test_reduce_on_plateau_maximises_accuracy_and_falls_back_to_train_metrics():
    up = ReduceOnPlateau(monitor="val_accuracy", patience=1, factor=0.5)
    up.resolve(["train_loss", "val_loss", "val_accuracy"])
    for epoch, value in enumerate([0.5, 0.7, 0.6], 1):
        up.update(epoch, {"val_accuracy": value}, 1.0)
    assert up.lr(1.0, 0, 3) == 0.5  # 0.6 after 0.7 is worse: one bad epoch is the patience
    alone = ReduceOnPlateau()
    note = alone.resolve(["train_loss", "train_accuracy"])
    assert "monitors train_loss" in note
    with pytest.raises(ConfigError, match="monitor 'val_f1' is not a metric of this run"):
        ReduceOnPlateau(monitor="val_f1").resolve(["train_loss", "val_loss"])
    with pytest.raises(CheckpointError, match="saved state must have numbers"):
        ReduceOnPlateau().load_state_dict({"current": "x", "best": None, "wait": 0,
                                           "cooling": 0})


@pytest.mark.parametrize("text", [
    "constant", "step(step_size=3, gamma=0.5)", "exponential(0.9)", "cosine(warmup_epochs=2)",
    "one_cycle(max_lr=0.1)", "reduce_on_plateau(monitor=val_accuracy, patience=3)",
])
def test_repr_is_a_spec_that_parses_back(text):
    host = PluginHost(load=[])
    schedule = parse_spec(text, host.schedules, SCHEDULE).build(SCHEDULE, text)
    again = parse_spec(repr(schedule), host.schedules, SCHEDULE).build(SCHEDULE, repr(schedule))
    assert repr(again) == repr(schedule) and again.get_config() == schedule.get_config()


@pytest.mark.parametrize("text, message", [
    ("step(step_size=0)", "step: step_size must be a positive integer; received step_size=0"),
    ("exponential(gamma=1.5)", "exponential: gamma must be in (0, 1]; received gamma=1.5"),
    ("cosine(warmup_epochs=-1)", "cosine: warmup_epochs must be a finite number >= 0"),
    ("one_cycle(pct_start=0)", "one_cycle: pct_start must be in (0, 1]; received pct_start=0"),
    ("reduce_on_plateau(factor=1)", "reduce_on_plateau: factor must be in (0, 1)"),
    ("reduce_on_plateau(mode=up)", "reduce_on_plateau: mode must be one of auto, min, max"),
    ("cosin", "unknown schedule 'cosin' (did you mean 'cosine'?); installed: constant, cosine"),
])
def test_bad_settings_are_one_clear_line(text, message):
    host = PluginHost(load=[])
    with pytest.raises(ConfigError) as info:
        parse_spec(text, host.schedules, SCHEDULE).build(SCHEDULE, text)
    assert str(info.value).startswith(f"--schedule {text!r}: ") and message in str(info.value)


def test_reduce_on_plateau_resumes_bit_exactly(tmp_path):
    """Its state (best, wait, reduced rate) goes through the checkpoint: 3 + 3 epochs = 6."""
    from zoo.checkpoints.callback import attach
    from zoo.checkpoints.resume import resume_run
    from zoo.run import Run, RunConfig

    def config(epochs):
        return RunConfig(arch="mlp", dataset="xor", epochs=epochs, lr=0.05,
                         options={"hidden": "8"}, stop=(f"max_epochs={epochs}",),
                         schedule="reduce_on_plateau(monitor=train_loss, patience=1, "
                                  "factor=0.5, min_delta=0.5)")

    straight = Run(config(6))
    attach(straight, tmp_path / "six.ckpt")
    straight.fit()
    assert straight.optimizer.lr < 0.05  # the plateau was reached: the rate was reduced
    first = Run(config(3))
    attach(first, tmp_path / "three.ckpt")
    first.fit()
    saved = read_checkpoint(tmp_path / "three.ckpt")[1]["schedule"]
    assert saved["per"] == "epoch" and saved["state"]["wait"] >= 0
    resumed = resume_run(tmp_path / "three.ckpt", {"epochs": 6}, save=tmp_path / "three.ckpt")
    resumed.fit()
    a, b = read_checkpoint(tmp_path / "six.ckpt")[0], read_checkpoint(tmp_path / "three.ckpt")[0]
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert resumed.schedule.state_dict() == straight.schedule.state_dict()
