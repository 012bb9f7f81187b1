"""Denormals flushed to zero inside zoo's computations (``zoo.kernels.fpenv``), and only there.

Where the CPU has no mode zoo manages (not x86-64), the checks say that nothing changes.
Every check sets the mode it starts from, so none depends on what the process inherited.
"""

import threading

import numpy as np
import pytest

from zoo.kernels import blas, fpenv, threads
from zoo.layers.dense import Dense
from zoo.losses import SoftmaxCrossEntropy
from zoo.model import Sequential
from zoo.optimizers import SGD
from zoo.training.loop import Trainer, evaluate
from zoo.training.stopping import StoppingEngine

TINY32 = np.float32(1e-38)  # normal; a thousandth of it is denormal


@pytest.fixture
def ieee_mode():
    """Run the test from the IEEE mode (denormals kept), whatever the process had."""
    with fpenv.same_mode(fpenv.current_mode() & ~fpenv.FLUSH_BITS):
        yield
    threads.set_threads(1)


def denormal_product():
    return np.float32(TINY32 * np.float32(1e-3))


def test_flush_denormals_flushes_inside_and_restores_after(ieee_mode):
    before = fpenv.current_mode()
    assert not fpenv.flushing()
    assert denormal_product() != 0
    with fpenv.flush_denormals():
        assert fpenv.flushing() == fpenv.SUPPORTED
        assert (denormal_product() == 0) == fpenv.SUPPORTED
        with fpenv.flush_denormals():  # nested: no change, and no early restore
            pass
        assert fpenv.flushing() == fpenv.SUPPORTED
    assert fpenv.current_mode() == before
    assert denormal_product() != 0


def test_the_mode_is_restored_when_the_block_raises(ieee_mode):
    before = fpenv.current_mode()
    with pytest.raises(RuntimeError):
        with fpenv.flush_denormals():
            raise RuntimeError("boom")
    assert fpenv.current_mode() == before


def test_denormal_operands_are_read_as_zero_in_numpy_and_blas(ieee_mode):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((8, 8)).astype(np.float32)
    a[::2] = TINY32 * np.float32(1e-3)  # rows of denormals only
    zeroed = np.where(np.abs(a) < np.finfo(np.float32).tiny, np.float32(0), a)
    b = rng.standard_normal((8, 8)).astype(np.float32) * np.float32(1e30)
    with fpenv.flush_denormals():
        flushed = a @ b
    if fpenv.SUPPORTED:
        assert np.array_equal(flushed, zeroed @ b)
    kept = a @ b
    assert np.all(kept[::2] != 0)  # outside, the denormals count (x 1e30: about 1e-11)


@pytest.mark.parametrize("flush", [False, True])
def test_worker_threads_compute_in_the_posting_threads_mode(ieee_mode, flush):
    """Block 0 waits until another thread has started block 1, so a worker runs one."""
    threads.set_threads(2)
    seen = {}
    started = threading.Event()

    def block(i):
        if i == 1:
            started.set()
        else:
            assert started.wait(10), "no worker thread took block 1"
        seen[i] = (threading.get_ident(), fpenv.flushing(), denormal_product() == 0)

    if flush:
        with fpenv.flush_denormals():
            threads.run_blocks(block, 2)
    else:
        threads.run_blocks(block, 2)
    assert seen[0][0] != seen[1][0]  # two threads
    expected = flush and fpenv.SUPPORTED
    assert seen[0][1:] == seen[1][1:] == (expected, expected)
    assert fpenv.flushing() is False  # the poster's own mode is untouched after the job


@pytest.mark.parametrize("count", [1, 2, 3])
def test_a_blocked_product_with_denormals_is_the_same_on_any_thread_count(ieee_mode, count):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((128, 784)).astype(np.float32)
    a[:, ::5] *= np.float32(1e-40)  # a fifth of the columns denormal
    b = rng.standard_normal((784, 256)).astype(np.float32) * np.float32(1e30)
    gemm = blas.Gemm(128, 784, 256, np.float32)
    assert gemm.blocks > 1
    with fpenv.flush_denormals():
        threads.set_threads(1)
        one = gemm(a, b, np.empty((128, 256), np.float32)).copy()
        threads.set_threads(count)
        many = gemm(a, b, np.empty((128, 256), np.float32))
    assert np.array_equal(one, many)


def _trainer():
    rng = np.random.default_rng(0)
    model = Sequential([Dense(8, activation="relu"), Dense(3)])
    model.build((4,), rng)
    return Trainer(model, SoftmaxCrossEntropy(), SGD(lr=0.1), StoppingEngine(),
                   task="classify", batch_size=5, rng=rng)


@pytest.mark.parametrize("fused", [False, True])
def test_training_steps_and_evaluation_flush_and_the_caller_does_not(ieee_mode, monkeypatch,
                                                                     fused):
    trainer = _trainer()
    if not fused:
        trainer._fused = None  # the layer-by-layer step
    elif trainer._fused is None:
        pytest.skip("no fused Dense-stack step with this BLAS (zoo.training.fused)")
    # Inputs of 1e-38 through weights of 1e-3: every product and sum of the first layer is
    # denormal, so its outputs, and with a zero bias the step's outputs, are zero where
    # denormals are flushed and tiny but not zero where they are not. The fused step sets
    # the mode inside its kernel, the layers' step around the layers.
    for layer in trainer.model.layers:
        layer.weight.value[...] = np.float32(1e-3)
        layer.bias.value[...] = 0
    modes = []
    forward = trainer.loss.forward

    def spy(outputs, targets):
        modes.append(fpenv.flushing())
        return forward(outputs, targets)

    monkeypatch.setattr(trainer.loss, "forward", spy)
    x = np.full((5, 4), TINY32, np.float32)
    y = np.array([0, 1, 2, 0, 1])
    trainer.train_step(x, y)
    if fused:  # the path under test ran: the fused step laid out its work for 5 rows
        assert trainer._fused.work.get(5) is not None
    assert np.all(trainer._outputs == 0) == fpenv.SUPPORTED
    assert not fpenv.flushing()
    evaluate(trainer.model, trainer.loss, x, y, "classify", 5)
    assert modes == [fpenv.SUPPORTED] * (1 if fused else 2)
    assert not fpenv.flushing()
