"""The fused Dense-stack step (``zoo.training.fused``, ``zoo.kernels.dense_stack``): the same
bits as the layers, and the layers wherever it does not apply."""

import subprocess
import sys

import numpy as np
import pytest

from zoo.errors import DataError
from zoo.kernels import cblas, threads
from zoo.kernels import dense_stack as ds
from zoo.layers.dense import Dense
from zoo.layers.dropout import Dropout
from zoo.losses import MSE, BinaryCrossEntropy, SoftmaxCrossEntropy
from zoo.model import Sequential
from zoo.optimizers import SGD, Adam
from zoo.training.loop import Trainer
from zoo.training.stopping import MaxEpochs, StoppingEngine

pytestmark = pytest.mark.skipif(cblas.gemm_function(np.float32)[0] == 0,
                                reason="numpy's BLAS is not OpenBLAS: no fused path to test")


def _trainer(layers, loss, dtype=np.float32, batch_size=7, optimizer=None, fused=True,
             input_size=9):
    rng = np.random.default_rng(0)
    model = Sequential(layers)
    model.build((input_size,), rng, dtype=dtype)
    task = "classify" if isinstance(loss, SoftmaxCrossEntropy) else "reconstruct"
    trainer = Trainer(model, loss, optimizer or SGD(lr=0.05, momentum=0.9),
                      StoppingEngine([MaxEpochs(3)]), task=task,
                      batch_size=batch_size, rng=rng)
    if not fused:
        trainer._fused = None
    return trainer


def _data(dtype, n=30, features=9, classes=5):
    rng = np.random.default_rng(1)
    return rng.random((n, features)).astype(dtype), rng.integers(0, classes, n)


STACKS = {
    "relu-linear": lambda: [Dense(16, activation="relu"), Dense(5)],
    "tanh-sigmoid-linear": lambda: [Dense(12, activation="tanh"),
                                    Dense(8, activation="sigmoid"), Dense(5)],
    "leaky-relu": lambda: [Dense(6, activation="leaky_relu", negative_slope=0.2), Dense(5)],
    "one layer (logistic regression)": lambda: [Dense(5)],
}


@pytest.mark.parametrize("stack", STACKS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_classifier_trains_to_the_same_bits_fused_or_layer_by_layer(stack, dtype):
    x, y = _data(dtype)
    runs = []
    for fused in (True, False):
        # 30 examples in batches of 7: every epoch ends with a batch of 2 rows.
        trainer = _trainer(STACKS[stack](), SoftmaxCrossEntropy(), dtype, fused=fused)
        assert (trainer._fused is not None) == fused
        trainer.fit(x, y)
        runs.append((trainer.values.copy(), trainer.history.rows))
    assert np.array_equal(runs[0][0], runs[1][0])
    assert runs[0][1][-1]["train_loss"] == runs[1][1][-1]["train_loss"]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_an_autoencoder_under_mse_and_adam_trains_to_the_same_bits(dtype):
    x, _ = _data(dtype)
    values = []
    for fused in (True, False):
        trainer = _trainer([Dense(4, activation="relu"), Dense(9, activation="sigmoid")],
                           MSE(), dtype, optimizer=Adam(lr=0.01), fused=fused)
        trainer.fit(x, None)
        values.append(trainer.values.copy())
    assert np.array_equal(*values)


def test_the_step_returns_the_outputs_and_loss_the_layers_give():
    x, y = _data(np.float32, n=7)
    trainer = _trainer(STACKS["tanh-sigmoid-linear"](), SoftmaxCrossEntropy())
    outputs, value, updated = trainer._fused.step(x, y)
    assert not updated  # no update without SGD's arguments
    expected = trainer.model.forward(x, training=True)
    assert np.array_equal(outputs, expected)
    assert value == trainer.loss.forward(expected, y)


@pytest.mark.parametrize("layers, loss", [
    ([Dense(8, activation="relu"), Dropout(0.5), Dense(5)], SoftmaxCrossEntropy()),
    ([Dense(8, activation="gelu"), Dense(5)], SoftmaxCrossEntropy()),
    ([Dense(8, use_bias=False), Dense(5)], SoftmaxCrossEntropy()),
    ([Dense(8), Dense(5)], BinaryCrossEntropy()),
    ([Dense(1), Dense(5)], SoftmaxCrossEntropy()),  # np.dot would use gemv for Dense(1)
])
def test_other_models_and_losses_go_through_the_layers(layers, loss):
    assert _trainer(layers, loss)._fused is None


# Stacks large enough for the fused step to share its work, batch 128. 784-256 cuts the inner
# dimension of the forward product, the rows of the weight gradient and the columns of the
# input gradient, and so does 256-784 (its weight is the largest array: ``blas.layer_axes``).
# A layer output of at least 2 * ``dense_rows.ROW_WORK`` elements has its elementwise work in
# row blocks (with the forward's parts, and under MSE the loss's gradient); the 32-wide
# layers' gradients, too small to cut, run as one job of two calls (``ds.PAIR``), and so do
# a large MSE output's loss and bias gradient (``ds.SUMS``). Each entry: input features,
# layers, loss, and the plans it must use (``ds.P_AXIS`` values, and which of ``ds.ROWS``,
# ``ds.PAIR``, ``ds.SUMS`` have blocks).
BLOCKED = {
    "784-256-10": (784, lambda: [Dense(256, activation="relu"), Dense(10)], "ce",
                   {1, 2}, {ds.ROWS}),
    "64-256-784": (64, lambda: [Dense(256, activation="relu"),
                                Dense(784, activation="sigmoid")], "mse", {1, 2},
                   {ds.ROWS, ds.SUMS}),
    "autoencoder 64-256-32-256-784": (
        64, lambda: [Dense(256, activation="relu"), Dense(32, activation="relu"),
                     Dense(256, activation="relu"), Dense(784, activation="sigmoid")], "mse",
        {1, 2}, {ds.ROWS, ds.PAIR, ds.SUMS}),
    "tanh, linear, leaky relu, 300 classes": (
        40, lambda: [Dense(256, activation="tanh"), Dense(256),
                     Dense(300, activation="leaky_relu", negative_slope=0.2), Dense(300)],
        "ce", set(), {ds.ROWS}),
}


@pytest.mark.parametrize("stack", BLOCKED)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_work_shared_in_blocks_trains_to_the_same_bits_on_any_thread_count(stack, dtype):
    features, layers, loss_name, axes, shared = BLOCKED[stack]
    rng = np.random.default_rng(2)
    x = rng.random((128, features)).astype(dtype)
    classes = layers()[-1].units
    if loss_name == "ce":
        loss, y = SoftmaxCrossEntropy(), rng.integers(0, 10, 128)
    else:
        loss, y = MSE(), rng.random((128, classes)).astype(dtype)
    runs = {}
    try:
        for fused, count in ((False, 1), (True, 1), (True, 2), (True, 3), (False, 2)):
            threads.set_threads(count)
            trainer = _trainer(layers(), loss, dtype, batch_size=128, fused=fused,
                               input_size=features)
            trainer._governor = None
            threads.set_threads(count)
            losses = [trainer.train_step(x, y) for _ in range(3)]
            if fused:
                plans = trainer._fused.work[128].plans
                products = plans[:, [ds.FORWARD, ds.WEIGHT_GRAD, ds.INPUT_GRAD]]
                assert set(products[products[..., ds.P_BLOCKS] > 1][:, ds.P_AXIS]) >= axes
                assert {job for job in (ds.ROWS, ds.PAIR, ds.SUMS)
                        if (plans[:, job, ds.P_BLOCKS] > 1).any()} == shared
            # The gradients too: an update rounds a gradient's last bits away.
            runs[(fused, count)] = (losses, trainer.values.copy(), trainer.grads.copy())
    finally:
        threads.set_threads(1)
    (losses, values, grads) = runs[(False, 1)]
    for key, (other_losses, other_values, other_grads) in runs.items():
        assert other_losses == losses, key
        np.testing.assert_array_equal(other_values, values, err_msg=str(key))
        np.testing.assert_array_equal(other_grads, grads, err_msg=str(key))


SGD_VARIANTS = {"plain": dict(lr=0.05), "momentum": dict(lr=0.05, momentum=0.9),
                "nesterov, weight decay": dict(lr=0.05, momentum=0.9, nesterov=True,
                                               weight_decay=0.01)}


@pytest.mark.parametrize("variant", SGD_VARIANTS)
@pytest.mark.parametrize("stack", ["small", "784-256-10"])
def test_the_update_made_inside_the_step_is_sgds_to_the_bit(variant, stack):
    if stack == "small":
        layers, features, batch = STACKS["tanh-sigmoid-linear"], 9, 7
    else:
        features, layers = BLOCKED[stack][:2]
        batch = 128
    rng = np.random.default_rng(3)
    x = rng.random((batch, features)).astype(np.float32)
    y = rng.integers(0, 5, batch)
    runs = {}
    try:
        for inside, count in ((False, 1), (True, 1), (True, 2), (True, 3)):
            trainer = _trainer(layers(), SoftmaxCrossEntropy(), batch_size=batch,
                               optimizer=SGD(**SGD_VARIANTS[variant]), input_size=features)
            trainer._governor = None
            threads.set_threads(count)
            if not inside:  # the trainer's separate update, after the fused step
                trainer._fused_sgd = lambda: None
            losses = []
            for i in range(4):
                if i == 2:
                    trainer.optimizer.lr = 0.02  # as a schedule changes it between steps
                # the last step on a batch of another size: a layout made after an update
                rows = batch if i < 3 else batch // 2 + 1
                losses.append(trainer.train_step(x[:rows], y[:rows]))
            assert trainer.optimizer.iterations == 4
            state = trainer.optimizer.state_dict()
            runs[(inside, count)] = (losses, trainer.values.copy(), state)
    finally:
        threads.set_threads(1)
    losses, values, state = runs[(False, 1)]
    for key, (other_losses, other_values, other_state) in runs.items():
        assert other_losses == losses, key
        np.testing.assert_array_equal(other_values, values, err_msg=str(key))
        assert other_state["step"] == state["step"]
        assert other_state["slots"].keys() == state["slots"].keys()
        for name, slot in state["slots"].items():
            np.testing.assert_array_equal(other_state["slots"][name], slot, err_msg=str(key))


@pytest.mark.parametrize("case", ["adam", "clipping", "sgd subclass", "biases exempt"])
def test_other_updates_are_left_to_the_optimizer(case):
    class MySGD(SGD):
        pass

    optimizer = {"adam": Adam(lr=0.01), "sgd subclass": MySGD(lr=0.05),
                 "biases exempt": SGD(lr=0.05, weight_decay=0.1, decay_bias_norm=False)
                 }.get(case, SGD(lr=0.05))
    trainer = _trainer(STACKS["relu-linear"](), SoftmaxCrossEntropy(), optimizer=optimizer)
    if case == "clipping":
        trainer.clip_norm = 1.0
    assert trainer._fused_sgd() is None
    x, y = _data(np.float32, n=7)
    trainer.train_step(x, y)
    assert trainer.optimizer.iterations == 1


ORDERED_RUNS = """
import hashlib
import sys
import numpy as np
from zoo.layers.dense import Dense
from zoo.losses import MSE
from zoo.model import Sequential
from zoo.optimizers import SGD
from zoo.training.loop import Trainer
from zoo.training.stopping import StoppingEngine

rng = np.random.default_rng(2)
x, y = rng.random((128, 64), dtype=np.float32), rng.random((128, 784), dtype=np.float32)
for fused in sys.argv[1] == "fused-first", sys.argv[1] != "fused-first":
    r = np.random.default_rng(0)
    model = Sequential([Dense(256, activation="tanh"), Dense(784, activation="sigmoid")])
    model.build((64,), r)
    trainer = Trainer(model, MSE(), SGD(lr=0.05, momentum=0.9), StoppingEngine(),
                      task="reconstruct", batch_size=128, rng=r)
    if not fused:
        trainer._fused = None
    losses = [trainer.train_step(x, y) for _ in range(3)]
    print(int(fused), hashlib.sha256(trainer.values.tobytes()).hexdigest(), *losses)
"""


def test_the_bits_do_not_depend_on_which_path_a_process_ran_first(subprocess_env):
    # Fast-math once let LLVM round the fused kernel's copy of the sigmoid gradient
    # differently from the layers' copy, and which copy ran depended on which path the
    # process had loaded from numba's cache first: each order in a fresh process, after one
    # that fills the cache, all four runs the same.
    runs = []
    for order in ("warm-up", "fused-first", "layers-first"):
        done = subprocess.run([sys.executable, "-c", ORDERED_RUNS, order], capture_output=True,
                              text=True, env=subprocess_env, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-2000:]
        runs += [line.split()[1:] for line in done.stdout.splitlines()]
    assert len(runs) == 6 and all(run == runs[0] for run in runs), runs


@pytest.mark.parametrize("dtype, features, units, calls_blas", [
    (np.float32, 9, 16, False),  # sgemm's products only
    (np.float64, 9, 16, True),
    (np.float32, 600, 500, True),  # a 600 x 500 weight is past sgemm's operands: BLAS's
])
def test_blas_is_held_to_one_thread_where_the_fused_step_calls_it(monkeypatch, dtype,
                                                                  features, units, calls_blas):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    x, y = _data(dtype, n=7, features=features)
    trainer = _trainer([Dense(units, activation="relu"), Dense(5)], SoftmaxCrossEntropy(),
                       dtype=dtype, input_size=features)
    libs = threads.blas_libraries()
    inside = []
    kernel = ds.fused_step

    def spy(*args):
        inside.append([lib.get_num_threads() for lib in libs])
        return kernel(*args)

    monkeypatch.setattr(ds, "fused_step", spy)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        before = [lib.get_num_threads() for lib in libs]
        trainer.train_step(x, y)
        assert [lib.get_num_threads() for lib in libs] == before  # restored after the step
    assert len(inside) == 1  # the fused kernel made the step
    assert trainer._fused.work[7].calls_blas is calls_blas
    if calls_blas:
        assert inside == [[1] * len(libs)]


def test_batches_it_cannot_take_go_through_the_layers():
    x, y = _data(np.float32, n=7)
    step = _trainer(STACKS["relu-linear"](), SoftmaxCrossEntropy())._fused
    assert step.step(x[:1], y[:1]) is None  # one row: np.dot's matrix-vector path
    assert step.step(x.astype(np.float64), y) is None
    assert step.step(np.asfortranarray(x), y) is None
    assert step.step(x, y.astype(np.int32)) is None
    assert step.step(x, y) is not None


def test_a_label_out_of_range_raises_the_losss_error():
    x, y = _data(np.float32, n=7)
    trainer = _trainer(STACKS["relu-linear"](), SoftmaxCrossEntropy())
    y[3] = 7
    with pytest.raises(DataError, match=r"labels must be in \[0, 5\); received label 7"):
        trainer.train_step(x, y)


def test_a_rebound_parameter_sends_steps_back_through_the_layers():
    x, y = _data(np.float32, n=7)
    trainer = _trainer(STACKS["relu-linear"](), SoftmaxCrossEntropy())
    layer = trainer.model.layers[0]
    layer.weight.value = layer.weight.value.copy()  # no longer a view of the flat buffer
    assert trainer._fused.step(x, y) is None
    trainer.train_step(x, y)  # and the layers still train it
    assert np.all(np.isfinite(layer.weight.value))
