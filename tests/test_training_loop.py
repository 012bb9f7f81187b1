"""The one training loop: learning, determinism, exact resume, bad input."""

import numpy as np
import pytest

from zoo.data.load import load_dataset
from zoo.errors import DataError
from zoo.run import Run, RunConfig, train


def weights(run):
    return {k: v.copy() for k, v in run.model.state_dict().items()}


def test_mlp_learns_spirals():
    # Spirals sit on a plateau near 65% for a few dozen epochs before the MLP "gets" them,
    # so this uses a fixed budget rather than the default early stopping.
    result = train(RunConfig(arch="mlp", dataset="spirals", seed=0, stop=("max_epochs=120",),
                             options={"hidden": "64,64"}))
    assert result.test["accuracy"] > 0.95
    assert result.epochs == 120 and result.steps == 120 * 8
    assert result.history[-1]["epoch"] == result.epochs


def test_same_seed_same_weights_other_seed_differs():
    def run_weights(seed):
        run = Run(RunConfig(arch="mlp", dataset="xor", epochs=3, seed=seed,
                            options={"hidden": "8"}))
        run.fit()
        return weights(run)

    a, b, c = run_weights(1), run_weights(1), run_weights(2)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not all(np.array_equal(a[k], c[k]) for k in a)


def test_state_dict_mid_epoch_resumes_bit_exactly():
    """Train 3 epochs straight vs. stop mid-epoch 2, copy every state, continue."""
    config = RunConfig(arch="mlp", dataset="spirals", epochs=3, seed=5,
                       options={"hidden": "16", "dropout": "0.2"}, batch_size=50,
                       stop=("max_epochs=3",))
    straight = Run(config)
    straight.fit()

    first = Run(config)
    first.engine = first.trainer.engine = _StopAfterSteps(first.engine, steps=11)
    first.fit()
    assert first.trainer.step == 11 and first.trainer.batch_index > 0

    second = Run(config)
    second.model.load_state_dict(first.model.state_dict())
    second.optimizer.load_state_dict(first.optimizer.state_dict())
    second.trainer.load_state_dict(first.trainer.state_dict())
    for (_, a), (_, b) in zip(_generators(first.model), _generators(second.model)):
        b.bit_generator.state = a.bit_generator.state
    second.engine.load_state_dict(first.engine.inner.state_dict())
    second.fit()
    assert second.trainer.step == straight.trainer.step
    a, b = weights(straight), weights(second)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def _generators(model):
    return [(i, layer.rng) for i, layer in enumerate(model.layers) if hasattr(layer, "rng")]


class _StopAfterSteps:
    """Wrap an engine and stop after a number of steps (simulates an interruption)."""

    def __init__(self, inner, steps):
        self.inner, self.steps, self.stopped, self.reason = inner, steps, False, None

    def reset(self, metrics=None):
        self.inner.reset(metrics)

    def check(self, state):
        self.inner.check(state)
        if state.at == "step" and state.step >= self.steps:
            self.stopped, self.reason = True, "test stop"
        return self.stopped

    def finish(self, model):
        pass


def test_bad_training_data_is_rejected_before_compute():
    run = Run(RunConfig(arch="mlp", dataset="xor", epochs=1))
    with pytest.raises(DataError, match="training inputs must have shape"):
        run.trainer.fit(np.zeros((4, 3), np.float32), np.zeros(4, np.int64))
    with pytest.raises(DataError, match="len\\(y\\) = 3"):
        run.trainer.fit(np.zeros((4, 2), np.float32), np.zeros(3, np.int64))


def test_validation_split_is_the_same_for_every_seed():
    ds = load_dataset("digits")
    a = ds.split_validation(0.1, seed=0)
    b = ds.split_validation(0.1, seed=0)
    assert np.array_equal(a[2], b[2])


class _RecordingTrainer:
    """A Trainer that keeps the first column of every batch it trains on (the example ids)."""

    @staticmethod
    def make(shuffle, steps, seed=0):
        from zoo.layers.dense import Dense
        from zoo.losses import MSE
        from zoo.model import Sequential
        from zoo.optimizers import SGD
        from zoo.training.loop import Trainer
        from zoo.training.stopping import MaxSteps, StoppingEngine

        class Recording(Trainer):
            def train_step(self, xb, tb):
                self.seen.append(xb[:, 0].astype(int).tolist())
                return super().train_step(xb, tb)

        model = Sequential([Dense(1)])
        model.build((2,), np.random.default_rng(0))
        trainer = Recording(model, MSE(), SGD(0.01), StoppingEngine([MaxSteps(steps)]),
                            task="regress", batch_size=3, rng=np.random.default_rng(seed),
                            shuffle=shuffle)
        trainer.seen = []
        return trainer


def _ids(n):
    x = np.stack([np.arange(n), np.zeros(n)], axis=1).astype(np.float32)
    return x, np.zeros((n, 1), np.float32)


def test_without_shuffle_every_epoch_walks_the_examples_in_stored_order():
    trainer = _RecordingTrainer.make(shuffle=False, steps=7)
    before = trainer.rng.bit_generator.state
    trainer.fit(*_ids(7))
    # 7 examples in batches of 3: [0 1 2] [3 4 5] [6], then the same again from example 0.
    assert trainer.seen == [[0, 1, 2], [3, 4, 5], [6], [0, 1, 2], [3, 4, 5], [6], [0, 1, 2]]
    assert trainer.rng.bit_generator.state == before  # the order draws nothing


def test_shuffle_draws_a_new_order_every_epoch():
    trainer = _RecordingTrainer.make(shuffle=True, steps=6)
    trainer.fit(*_ids(7))
    first = sum(trainer.seen[:3], [])
    second = sum(trainer.seen[3:], [])
    assert sorted(first) == sorted(second) == list(range(7))
    assert first != second and first != list(range(7))


def test_shuffle_must_be_a_boolean():
    from zoo.errors import ConfigError

    with pytest.raises(ConfigError, match="shuffle must be True or False; received "
                                          "shuffle='no'"):
        _RecordingTrainer.make(shuffle="no", steps=1)
