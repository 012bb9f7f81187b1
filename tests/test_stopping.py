"""The stopping-criteria engine on scripted loss and metric curves (no training needed)."""

import json
import math

import numpy as np
import pytest

from zoo.errors import CheckpointError, ConfigError
from zoo.training.state import TrainState
from zoo.training.stopping import (
    AllOf,
    AnyOf,
    Criterion,
    EarlyStopping,
    LossBelow,
    LossDeltaBelow,
    MaxEpochs,
    MaxSteps,
    MaxTime,
    NonFinite,
    StoppingEngine,
    Target,
)

STEPS_PER_EPOCH = 10


class FakeModel:
    """A model with one weight vector; the test writes the epoch number into it."""

    def __init__(self):
        self.w = np.zeros(3)

    def state_dict(self):
        return {"w": self.w.copy()}

    def load_state_dict(self, state):
        self.w[...] = state["w"]


def epoch(n, loss=1.0, model=None, **metrics):
    metrics.setdefault("train_loss", loss)
    return TrainState("epoch", n, n * STEPS_PER_EPOCH, float(n), loss, metrics, model)


def step(n, loss=1.0, elapsed=0.0):
    return TrainState("step", (n - 1) // STEPS_PER_EPOCH, n, elapsed, loss)


def first_stop(criterion, states):
    """Feed states in order; return the index (1-based) of the first that sets the flag."""
    for i, state in enumerate(states, 1):
        criterion.update(state)
        if criterion.stop:
            return i
    return None


def val_curve(values, monitor="val_loss", model=None):
    return [epoch(i, model=model, **{monitor: v}) for i, v in enumerate(values, 1)]


# -- budgets ----------------------------------------------------------------------------------
def test_max_epochs_fires_at_exactly_the_limit():
    c = MaxEpochs(3)
    assert first_stop(c, [epoch(i) for i in range(1, 6)]) == 3
    assert c.reason == "max_epochs: reached the limit of 3 epochs"
    assert c.every == "epoch"


def test_max_steps_fires_at_exactly_the_limit_and_names_the_epoch():
    c = MaxSteps(25)
    assert first_stop(c, [step(i) for i in range(1, 40)]) == 25
    assert c.reason == "max_steps: reached the limit of 25 steps (epoch 3)"
    assert c.every == "step"


def test_max_time_fires_at_the_first_check_past_the_limit():
    c = MaxTime(2.5)
    assert first_stop(c, [step(i, elapsed=i * 0.6) for i in range(1, 10)]) == 5
    assert c.reason == "max_time: 3 s of training reached the limit of 2.5 s at step 5 (epoch 1)"


@pytest.mark.parametrize("text, seconds", [
    ("90", 90.0), ("90s", 90.0), ("1.5m", 90.0), ("2h", 7200.0), ("1d", 86400.0),
    ("01:30:00", 5400.0), ("00:01:00:30", 3630.0), (12, 12.0),
])
def test_max_time_accepts_seconds_units_and_lightning_clock_strings(text, seconds):
    assert MaxTime(text).seconds == seconds


@pytest.mark.parametrize("bad", ["abc", "1:30", "-5", 0, "5x"])
def test_max_time_rejects_bad_durations(bad):
    with pytest.raises(ConfigError, match=r"max_time: seconds must be a positive number"):
        MaxTime(bad)


# -- the loss curve ---------------------------------------------------------------------------
def test_loss_below_on_epoch_means_is_strict():
    c = LossBelow(0.1)
    states = [epoch(i, loss=v) for i, v in enumerate([0.5, 0.2, 0.1, 0.0999, 0.05], 1)]
    assert first_stop(c, states) == 4
    assert c.reason == "loss_below: mean training loss 0.0999 fell below 0.1 at epoch 4"


def test_loss_below_every_step_and_its_flag_is_a_level():
    c = LossBelow(0.01, every="step")
    assert c.checks_at("step") and not c.checks_at("epoch")
    assert first_stop(c, [step(i, loss=1 / i) for i in range(1, 200)]) == 101
    assert c.reason == "loss_below: loss 0.009901 fell below 0.01 at step 101 (epoch 11)"
    c.update(step(102, loss=0.5))
    assert not c.stop and c.reason is None


def test_loss_below_shows_enough_digits_to_differ_from_the_threshold():
    c = LossBelow(0.1)
    c.update(epoch(1, loss=0.0999999))
    assert "0.0999999 fell below 0.1" in c.reason


def test_loss_delta_below_needs_patience_consecutive_small_changes():
    losses = [1.0, 0.5, 0.49, 0.485, 0.3, 0.299, 0.2985, 0.2984, 0.1]
    c = LossDeltaBelow(0.02, patience=3)
    assert first_stop(c, [epoch(i, loss=v) for i, v in enumerate(losses, 1)]) == 8
    assert c.reason.startswith("loss_delta_below: |Δloss| stayed below 0.02 for "
                               "3 consecutive epochs (last 0.0001")
    assert c.reason.endswith("at epoch 8")
    # With patience 2 the first pair of small changes is enough.
    c = LossDeltaBelow(0.02, patience=2)
    assert first_stop(c, [epoch(i, loss=v) for i, v in enumerate(losses, 1)]) == 4


def test_loss_delta_below_a_non_finite_loss_breaks_the_run():
    c = LossDeltaBelow(0.1, patience=2, every="step")
    losses = [1.0, 1.01, math.nan, 1.0, 1.01, 1.02]
    assert first_stop(c, [step(i, loss=v) for i, v in enumerate(losses, 1)]) == 6
    assert "2 consecutive steps" in c.reason


def test_non_finite_names_the_step_and_epoch():
    c = NonFinite()
    assert c.every == "step"
    c.update(TrainState("step", 2, 1234, 1.0, float("nan")))
    assert c.stop and c.reason == "non_finite: loss became nan at step 1234 (epoch 3)"
    c.update(TrainState("step", 2, 1235, 1.0, 0.5))
    assert not c.stop


@pytest.mark.parametrize("value, text", [(math.inf, "inf"), (-math.inf, "-inf"),
                                         (np.float32("nan"), "nan")])
def test_non_finite_on_inf_and_numpy_nan(value, text):
    c = NonFinite()
    c.update(step(7, loss=value))
    assert c.reason == f"non_finite: loss became {text} at step 7 (epoch 1)"


# -- early stopping ---------------------------------------------------------------------------
def test_early_stopping_patience_counts_epochs_since_the_best():
    c = EarlyStopping(patience=3)
    values = [1.0, 0.8, 0.7, 0.71, 0.72, 0.69, 0.75, 0.76, 0.77, 0.5]
    assert first_stop(c, val_curve(values)) == 9
    assert c.reason == ("early_stopping: val_loss did not improve for 3 epochs "
                        "(best 0.69 at epoch 6)")


def test_early_stopping_patience_zero_stops_at_the_first_non_improvement():
    assert first_stop(EarlyStopping(patience=0), val_curve([1.0, 0.9, 0.95])) == 3


def test_early_stopping_min_delta_is_a_strict_margin():
    c = EarlyStopping(min_delta=0.01, patience=2)
    assert first_stop(c, val_curve([1.0, 0.95, 0.9, 0.895, 0.891, 0.5])) == 5
    assert c.reason == ("early_stopping: val_loss did not improve by more than 0.01 for "
                        "2 epochs (best 0.9 at epoch 3)")
    # Exactly min_delta better is not an improvement (Keras semantics).
    c = EarlyStopping(min_delta=0.5, patience=1)
    assert first_stop(c, val_curve([1.0, 0.5])) == 2


def test_early_stopping_mode_auto_maximises_accuracy_like_monitors():
    values = [0.5, 0.6, 0.6, 0.59]
    c = EarlyStopping(monitor="val_accuracy", patience=2)
    assert first_stop(c, val_curve(values, "val_accuracy")) == 4
    assert c.reason.endswith("(best 0.6 at epoch 2)")
    c = EarlyStopping(monitor="val_accuracy", mode="min", patience=2)
    assert first_stop(c, val_curve(values, "val_accuracy")) == 3
    assert c.reason.endswith("(best 0.5 at epoch 1)")
    rising = [0.1, 0.2, 0.3, 0.4]
    assert first_stop(EarlyStopping(monitor="val_r2", patience=1),
                      val_curve(rising, "val_r2")) is None
    assert first_stop(EarlyStopping(monitor="val_mse", patience=1),
                      val_curve(rising, "val_mse")) == 2
    assert first_stop(EarlyStopping(monitor="val_mse", mode="max", patience=1),
                      val_curve(rising, "val_mse")) is None


def test_early_stopping_baseline_must_be_beaten_within_patience():
    c = EarlyStopping(baseline=0.5, patience=3)
    assert first_stop(c, val_curve([0.9, 0.8, 0.7, 0.6])) == 3
    assert c.reason == ("early_stopping: val_loss did not beat the baseline 0.5 within "
                        "3 epochs (best 0.7 at epoch 3)")
    c = EarlyStopping(baseline=0.5, patience=3)
    assert first_stop(c, val_curve([0.9, 0.4, 0.45, 0.46, 0.47])) == 5
    assert c.reason == "early_stopping: val_loss did not improve for 3 epochs (best 0.4 at epoch 2)"


def test_early_stopping_start_from_epoch_is_a_warm_up():
    values = [1.0, 2.0, 3.0, 4.0, 0.5, 0.6, 0.7]
    assert first_stop(EarlyStopping(patience=2), val_curve(values)) == 3
    c = EarlyStopping(patience=2, start_from_epoch=3)
    assert first_stop(c, val_curve(values)) == 7
    assert c.best_epoch == 5


def test_early_stopping_never_takes_a_non_finite_value_as_best():
    c = EarlyStopping(patience=2)
    assert first_stop(c, val_curve([math.nan, 0.5, math.inf, math.nan])) == 4
    assert (c.best, c.best_epoch) == (0.5, 2)
    c = EarlyStopping(patience=1)
    assert first_stop(c, val_curve([math.nan])) == 1
    assert c.reason.endswith("(no finite value seen)")


def test_early_stopping_flag_drops_when_the_monitor_improves_again():
    c = EarlyStopping(patience=1)
    assert first_stop(c, val_curve([1.0, 1.1])) == 2
    c.update(epoch(3, val_loss=0.5))
    assert not c.stop and c.wait == 0


def test_early_stopping_restore_best_keeps_the_weights_of_the_best_epoch():
    model = FakeModel()
    engine = StoppingEngine([EarlyStopping(patience=2)])
    for i, v in enumerate([1.0, 0.6, 0.7, 0.65], 1):
        model.w[:] = i  # the "weights" after epoch i
        stopped = engine.check(epoch(i, model=model, val_loss=v))
    assert stopped and engine.criterion == "early_stopping"
    assert engine.finish(model) == ("early_stopping: restored the weights of epoch 2, "
                                    "the best val_loss (0.6)")
    np.testing.assert_array_equal(model.w, [2, 2, 2])


def test_restore_best_also_when_another_criterion_ended_training():
    model = FakeModel()
    engine = StoppingEngine([MaxEpochs(3), EarlyStopping(monitor="val_accuracy", patience=5)])
    for i, v in enumerate([0.5, 0.9, 0.7], 1):
        model.w[:] = i
        engine.check(epoch(i, model=model, val_accuracy=v))
    assert engine.criterion == "max_epochs"
    assert "restored the weights of epoch 2" in engine.finish(model)
    np.testing.assert_array_equal(model.w, [2, 2, 2])


def test_restore_best_false_keeps_the_last_weights():
    model = FakeModel()
    engine = StoppingEngine([EarlyStopping(patience=1, restore_best=False)])
    for i, v in enumerate([0.5, 0.9], 1):
        model.w[:] = i
        engine.check(epoch(i, model=model, val_loss=v))
    assert engine.stopped and engine.finish(model) is None
    np.testing.assert_array_equal(model.w, [2, 2, 2])


def test_restore_best_after_a_divergence():
    model = FakeModel()
    engine = StoppingEngine([EarlyStopping(patience=5)])
    model.w[:] = 1
    engine.check(epoch(1, model=model, val_loss=0.3))
    model.w[:] = math.nan
    assert engine.check(step(15, loss=math.inf))
    assert engine.diverged and engine.reason == "non_finite: loss became inf at step 15 (epoch 2)"
    assert "restored the weights of epoch 1" in engine.finish(model)
    np.testing.assert_array_equal(model.w, [1, 1, 1])


def test_early_stopping_without_a_model_says_the_weights_were_not_kept():
    engine = StoppingEngine([EarlyStopping(patience=1)])
    engine.check(epoch(1, val_loss=0.3))
    assert "were not kept" in engine.finish(FakeModel())


# -- target -----------------------------------------------------------------------------------
def test_target_reaches_a_value_in_either_direction():
    c = Target("val_accuracy", 0.9)
    assert first_stop(c, val_curve([0.5, 0.89, 0.9, 0.95], "val_accuracy")) == 3
    assert c.reason == "target: val_accuracy reached 0.9 (>= 0.9) at epoch 3"
    c = Target("val_loss", 0.2)
    assert first_stop(c, val_curve([0.5, 0.25, 0.19])) == 3
    assert c.reason == "target: val_loss reached 0.19 (<= 0.2) at epoch 3"
    c = Target("val_loss", 0.6, mode="max")
    assert first_stop(c, val_curve([0.5, 0.7])) == 2


# -- monitored metrics that are not there ---------------------------------------------------
def test_a_missing_monitor_raises_at_the_first_check_listing_the_metrics():
    c = EarlyStopping(monitor="val_accuracy")
    with pytest.raises(ConfigError) as info:
        c.update(epoch(1, val_loss=0.3, val_mse=0.1, val_r2=0.5))
    assert str(info.value) == ("early_stopping: monitor 'val_accuracy' is not a metric of this "
                               "run; available: loss, train_loss, val_loss, val_mse, val_r2")
    with pytest.raises(ConfigError, match="target: monitor 'val_f1'"):
        Target("val_f1", 0.5).update(epoch(1, val_loss=0.3))


def test_engine_reset_with_metrics_reports_a_wrong_monitor_before_training():
    engine = StoppingEngine([AllOf(MaxEpochs(2), Target("val_accuracy", 0.9))])
    with pytest.raises(ConfigError, match="available: loss, train_loss, val_loss, val_mse"):
        engine.reset(metrics=["train_loss", "val_loss", "val_mse"])


def test_without_validation_val_monitors_fall_back_to_train_and_say_so():
    c = EarlyStopping(patience=2)
    engine = StoppingEngine([c])
    engine.reset(metrics=["train_loss"])
    assert engine.notes == [("early_stopping: this run has no validation metrics, so it "
                            "monitors train_loss in place of val_loss")]
    for i, loss in enumerate([1.0, 0.5, 0.6, 0.7], 1):
        stopped = engine.check(epoch(i, loss=loss))
    assert stopped
    assert engine.reason == ("early_stopping: train_loss (in place of val_loss) did not improve "
                             "for 2 epochs (best 0.5 at epoch 2)")


def test_no_fallback_when_some_validation_metric_exists():
    with pytest.raises(ConfigError, match="monitor 'val_accuracy'"):
        EarlyStopping(monitor="val_accuracy").prepare(["train_loss", "train_accuracy",
                                                       "val_loss"])


def test_once_resolved_an_epoch_without_the_metric_is_not_counted():
    c = EarlyStopping(patience=1)
    c.update(epoch(1, val_loss=0.5))
    c.update(epoch(2))  # validation skipped this epoch
    assert not c.stop and c.wait == 0
    c.update(epoch(3, val_loss=0.6))
    assert c.stop


# -- argument validation ----------------------------------------------------------------------
@pytest.mark.parametrize("factory, kwargs, message", [
    (MaxEpochs, {"epochs": 0}, "max_epochs: epochs must be a positive integer; received epochs=0"),
    (MaxEpochs, {"epochs": 2.5}, "received epochs=2.5"),
    (MaxEpochs, {"epochs": True}, "received epochs=True"),
    (MaxSteps, {"steps": "10"}, "max_steps: steps must be a positive integer; received steps='10'"),
    (LossBelow, {"threshold": math.nan}, "loss_below: threshold must be a finite number"),
    (LossBelow, {"threshold": 0.1, "every": "batch"},
     "loss_below: every must be one of 'step', 'epoch'; received every='batch'"),
    (LossDeltaBelow, {"tol": 0}, "loss_delta_below: tol must be a positive number; received tol=0"),
    (LossDeltaBelow, {"tol": 0.1, "patience": 0}, "patience must be a positive integer"),
    (EarlyStopping, {"monitor": ""}, "early_stopping: monitor must be a metric name"),
    (EarlyStopping, {"mode": "up"}, "mode must be one of 'auto', 'min', 'max'; received mode='up'"),
    (EarlyStopping, {"min_delta": -0.1},
     "min_delta must be a number >= 0; received min_delta=-0.1"),
    (EarlyStopping, {"patience": -1}, ("patience must be a non-negative integer; received "
                                      "patience=-1")),
    (EarlyStopping, {"baseline": "low"}, "baseline must be a finite number or None"),
    (EarlyStopping, {"start_from_epoch": -2}, "start_from_epoch must be a non-negative integer"),
    (EarlyStopping, {"restore_best": "yes"}, ("restore_best must be true or false; received "
                                             "restore_best='yes'")),
    (Target, {"monitor": "val_accuracy", "value": None}, "target: value must be a finite number"),
    (AllOf, {}, "all_of: expected at least one criterion; received none"),
])
def test_arguments_are_validated_with_the_criterion_and_argument_named(factory, kwargs, message):
    with pytest.raises(ConfigError) as info:
        factory(**kwargs)
    assert message in str(info.value)


def test_composites_and_the_engine_reject_non_criteria():
    with pytest.raises(ConfigError, match=r"any_of: expected Criterion objects; received int 5 "
                                          r"at position 1"):
        AnyOf(MaxEpochs(1), 5)
    with pytest.raises(ConfigError, match="StoppingEngine: expected Criterion objects"):
        StoppingEngine(["max_epochs=5"])
    with pytest.raises(ConfigError, match="state.at must be 'step' or 'epoch'"):
        StoppingEngine().check(TrainState("batch", 0, 1, 0.0, 1.0))


def test_numpy_numbers_are_accepted_and_stored_as_python_numbers():
    c = EarlyStopping(patience=np.int64(3), min_delta=np.float32(0.5))
    assert type(c.patience) is int and type(c.min_delta) is float
    json.dumps(c.get_config())


# -- composition ------------------------------------------------------------------------------
def test_any_of_reports_the_member_that_fired():
    engine = StoppingEngine([AnyOf(MaxEpochs(10), LossBelow(0.2))])
    for i, loss in enumerate([0.5, 0.3, 0.1], 1):
        stopped = engine.check(epoch(i, loss=loss))
    assert stopped and engine.criterion == "loss_below"
    assert engine.reason == "loss_below: mean training loss 0.1 fell below 0.2 at epoch 3"


def test_all_of_needs_every_condition_at_the_same_check():
    c = AllOf(LossBelow(0.1), MaxEpochs(5))
    losses = [0.5, 0.05, 0.2, 0.3, 0.15, 0.08]
    assert first_stop(c, [epoch(i, loss=v) for i, v in enumerate(losses, 1)]) == 6
    assert c.reason == ("all_of: loss_below: mean training loss 0.08 fell below 0.1 at epoch 6; "
                        "max_epochs: reached the limit of 5 epochs")
    engine = StoppingEngine([AllOf(LossBelow(0.1), MaxEpochs(5))])
    for i, loss in enumerate(losses, 1):
        engine.check(epoch(i, loss=loss))
    assert engine.criterion == "all_of"


def test_all_of_with_mixed_cadences_keeps_each_members_latest_flag():
    c = AllOf(MaxSteps(15), LossBelow(0.1))
    assert c.every == "step+epoch" and c.checks_at("step") and c.checks_at("epoch")
    engine = StoppingEngine([c])
    assert not any(engine.check(step(i)) for i in range(1, 11))
    assert not engine.check(epoch(1, loss=0.05))  # loss holds, steps do not yet
    assert not any(engine.check(step(i)) for i in range(11, 15))
    assert engine.check(step(15))  # the loss flag from epoch 1 still holds
    assert engine.reason.startswith("all_of: max_steps: reached the limit of 15 steps")


def test_nested_composites():
    c = AnyOf(AllOf(MaxEpochs(2), LossBelow(0.5)), MaxEpochs(4))
    losses = [0.9, 0.8, 0.6, 0.4]
    assert first_stop(c, [epoch(i, loss=v) for i, v in enumerate(losses, 1)]) == 4
    assert c.fired.name == "all_of"


# -- the engine -------------------------------------------------------------------------------
def test_engine_non_finite_is_always_on_and_takes_precedence():
    engine = StoppingEngine([MaxSteps(3)])
    assert [type(c) for c in engine.walk()] == [NonFinite, MaxSteps]
    assert engine.describe() == ["max_steps(steps=3)", "non_finite()"]
    assert not engine.check(step(2))
    assert engine.check(step(3, loss=math.nan))
    assert engine.criterion == "non_finite" and engine.diverged
    assert not StoppingEngine([MaxSteps(3)], always=()).check(step(1, loss=math.nan))
    # Listed explicitly, it is not added twice.
    assert StoppingEngine([NonFinite()]).describe() == ["non_finite()"]


def test_engines_do_not_share_the_default_non_finite():
    a, b = StoppingEngine(), StoppingEngine()
    assert a.always[0] is not b.always[0]
    assert a.check(step(1, loss=math.nan)) and not b.stopped


def test_engine_checks_only_the_criteria_of_the_cadence():
    engine = StoppingEngine([MaxEpochs(1)])
    assert not engine.check(step(10))
    assert engine.check(epoch(1))
    assert (engine.stopped, engine.criterion) == (True, "max_epochs")
    assert engine.find("max_epochs")[0].epochs == 1


def test_engine_reset_starts_afresh():
    engine = StoppingEngine([EarlyStopping(patience=1)])
    for i, v in enumerate([1.0, 2.0], 1):
        engine.check(epoch(i, val_loss=v))
    assert engine.stopped
    engine.reset()
    assert not engine.stopped and engine.reason is None and engine.criterion is None
    es = engine.find("early_stopping")[0]
    assert (es.best, es.best_epoch, es.wait, es.stop) == (None, None, 0, False)
    assert not engine.check(epoch(1, val_loss=3.0))
    assert es.best == 3.0


def _scripted_run(engine, model, epochs, resume_at=None, make_engine=None):
    """Drive an engine over a noisy curve; optionally checkpoint and resume mid-run."""
    rng = np.random.default_rng(0)
    losses = 1.0 / np.arange(1, epochs + 1) + 0.05 * rng.random(epochs)
    accuracy = 1.0 - losses
    s = 0
    for e in range(1, epochs + 1):
        for _ in range(STEPS_PER_EPOCH):
            s += 1
            if engine.check(TrainState("step", e - 1, s, s * 0.01, float(losses[e - 1]))):
                return e, engine
        model.w[:] = e
        state = TrainState("epoch", e, s, s * 0.01, float(losses[e - 1]),
                           {"train_loss": float(losses[e - 1]), "val_loss": float(losses[e - 1]),
                            "val_accuracy": float(accuracy[e - 1])}, model)
        if engine.check(state):
            return e, engine
        if e == resume_at:
            saved = json.loads(json.dumps(engine.state_dict(), allow_nan=False))
            arrays = {k: v.copy() for k, v in engine.arrays().items()}
            engine = make_engine()
            engine.load_state_dict(saved)
            engine.load_arrays(arrays)
    return None, engine


def _specimen():
    return StoppingEngine([
        MaxEpochs(200),
        EarlyStopping(patience=4, min_delta=0.001),
        AnyOf(Target("val_accuracy", 0.999), LossDeltaBelow(1e-5, patience=3)),
        AllOf(MaxSteps(10_000), LossBelow(0.01, every="step")),
    ])


@pytest.mark.parametrize("resume_at", [7, 22])  # before and after the best epoch (21)
def test_state_dict_round_trip_mid_run_continues_identically(resume_at):
    model_a, model_b = FakeModel(), FakeModel()
    stop_a, straight = _scripted_run(_specimen(), model_a, 60)
    stop_b, resumed = _scripted_run(_specimen(), model_b, 60, resume_at=resume_at,
                                    make_engine=_specimen)
    assert stop_a == 25 and straight.criterion == "early_stopping"
    assert stop_b == stop_a
    assert resumed.reason == straight.reason and resumed.criterion == straight.criterion
    assert resumed.state_dict() == straight.state_dict()
    assert straight.finish(model_a) == resumed.finish(model_b)
    np.testing.assert_array_equal(model_a.w, model_b.w)


def test_state_dict_is_strict_json_even_after_a_nan():
    engine = StoppingEngine([LossDeltaBelow(0.1, every="step"), EarlyStopping()])
    engine.check(step(1, loss=math.nan))
    engine.check(epoch(1, val_loss=math.nan))
    state = engine.state_dict()
    assert json.loads(json.dumps(state, allow_nan=False)) == state
    assert state["criteria"][0]["name"] == "non_finite"
    assert state["stopped"] and state["criterion"] == "non_finite"


def test_load_state_dict_allows_new_arguments_but_not_new_criteria():
    old = StoppingEngine([MaxEpochs(5), EarlyStopping(patience=2)])
    for i in range(1, 6):
        old.check(epoch(i, val_loss=1.0 / i))
    assert old.criterion == "max_epochs"
    longer = StoppingEngine([MaxEpochs(10), EarlyStopping(patience=2)])
    longer.load_state_dict(old.state_dict())
    assert longer.stopped  # as saved; the next check re-evaluates with the new budget
    assert not longer.check(epoch(6, val_loss=1 / 6))
    assert longer.find("early_stopping")[0].best_epoch == 6
    with pytest.raises(CheckpointError, match="apart from budgets it has non_finite, "
                                              "early_stopping; this run has non_finite"):
        StoppingEngine([MaxEpochs(5)]).load_state_dict(old.state_dict())
    with pytest.raises(CheckpointError, match="the saved stopping state lacks criterion, criteria"):
        StoppingEngine([MaxEpochs(5)]).load_state_dict({"stopped": False, "reason": None})
    with pytest.raises(CheckpointError, match="early_stopping: the saved stopping state lacks"):
        bad = old.state_dict()
        bad["criteria"][2].pop("state")
        StoppingEngine([MaxEpochs(5), EarlyStopping(patience=2)]).load_state_dict(bad)
    with pytest.raises(CheckpointError, match="early_stopping: the saved stopping state lacks"):
        EarlyStopping().load_state_dict({"stop": False, "reason": None})


def test_get_config_and_repr():
    c = EarlyStopping(monitor="val_accuracy", patience=10, restore_best=False)
    assert c.get_config() == {"monitor": "val_accuracy", "mode": "auto", "min_delta": 0.0,
                              "patience": 10, "baseline": None, "start_from_epoch": 0,
                              "restore_best": False}
    assert repr(c) == "early_stopping(monitor=val_accuracy, patience=10, restore_best=false)"
    assert repr(AllOf(LossBelow(0.1), MaxEpochs(5))) == \
        "all_of(loss_below(threshold=0.1), max_epochs(epochs=5))"
    assert repr(Target("val_loss", 0.2)) == "target(monitor=val_loss, value=0.2)"
    assert repr(StoppingEngine([MaxEpochs(3)])) == \
        "StoppingEngine(max_epochs(epochs=3), non_finite())"


def test_a_third_party_criterion_works_in_the_engine():
    class Plateau(Criterion):
        """Stop when the loss equals the previous one."""

        name = "plateau"
        _state = ("last",)

        def __init__(self):
            super().__init__()
            self.last = None

        def update(self, state):
            if state.loss == self.last:
                self._fire(f"loss stuck at {state.loss} {state.epoch}")
            self.last = state.loss

    engine = StoppingEngine([Plateau()])
    assert not engine.check(epoch(1, loss=0.5))
    assert engine.check(epoch(2, loss=0.5))
    assert engine.reason == "plateau: loss stuck at 0.5 2"
    assert engine.state_dict()["criteria"][1]["state"] == {"stop": True, "reason":
                                                           engine.reason, "last": 0.5}


def test_builtins_are_registered_through_the_plugin_hook():
    from zoo.plugins import PluginHost

    host = PluginHost(load=[])
    assert host.criteria.names() == ["early_stopping", "loss_below", "loss_delta_below",
                                     "max_epochs", "max_steps", "max_time", "non_finite",
                                     "target"]
    assert host.criteria.get("early_stopping") is EarlyStopping
    assert host.criteria.owner("max_epochs") == "zoo.plugins.builtin.criteria"


class _MaxExamples(Criterion):
    """A plugin's budget: nothing in zoo names it; the class attribute makes it one."""

    name = "max_examples"
    every = "step"
    budget = True

    def __init__(self, examples: int):
        super().__init__()
        self.examples = examples

    def update(self, state) -> None:
        if state.step * 10 >= self.examples:
            self._fire(f"saw {self.examples} examples")
        else:
            self._clear()


def _step(n):
    return TrainState("step", 0, n, 0.0, 0.5)


def test_restore_rechecks_budgets_and_lets_them_change():
    old = StoppingEngine([_MaxExamples(50), EarlyStopping(patience=3, restore_best=True)])
    for n in range(1, 6):
        old.check(_step(n))
    assert old.stopped and old.criterion == "max_examples"
    # The same budget, larger, plus a new one, at other positions: the run goes on.
    resumed = StoppingEngine([MaxSteps(100), EarlyStopping(patience=3, restore_best=True),
                              _MaxExamples(80)])
    assert resumed.restore(old.state_dict(), old.arrays(), _step(5)) is False
    assert not resumed.stopped and resumed.reason is None
    # A budget already spent at the saved position ends the run at once, with its reason.
    spent = StoppingEngine([_MaxExamples(30), EarlyStopping(patience=3, restore_best=True)])
    assert spent.restore(old.state_dict(), old.arrays(), _step(5)) is True
    assert spent.criterion == "max_examples" and "saw 30 examples" in spent.reason
    # Budgets inside a composite are re-checked too.
    inside = StoppingEngine([AllOf(LossBelow(1.0, every="step"), _MaxExamples(30))])
    inside.check(_step(1))
    again = StoppingEngine([AllOf(LossBelow(1.0, every="step"), _MaxExamples(30))])
    assert again.restore(inside.state_dict(), {}, _step(3)) is True


def test_restore_finds_arrays_when_budgets_shift_positions():
    model = FakeModel()
    old = StoppingEngine([MaxEpochs(9), EarlyStopping(patience=5, restore_best=True)])
    old.reset()
    model.w[...] = 7.0
    old.check(epoch(1, val_loss=0.5, model=model))
    model.w[...] = 1.0
    resumed = StoppingEngine([EarlyStopping(patience=5, restore_best=True), MaxSteps(1000),
                              MaxEpochs(20)])
    resumed.restore(old.state_dict(), old.arrays(), TrainState("epoch", 1, 10, 0.0, 0.5))
    assert resumed.finish(model) is not None and (model.w == 7.0).all()
