"""zoo's large GEMMs give the same bits on one BLAS thread and on several, and the governor
that picks the count from step times picks the faster arm (fed made-up times: no timing here).
"""

import numpy as np
import pytest
from click.testing import CliRunner

from zoo.cli.main import cli
from zoo.errors import ConfigError
from zoo.kernels import blas
from zoo.kit.gradcheck import check_layer
from zoo.layers.conv import Conv2D
from zoo.layers.dense import Dense
from zoo.layers.reshape import Flatten
from zoo.losses import SoftmaxCrossEntropy
from zoo.model import Sequential
from zoo.optimizers import SGD
from zoo.training import threads
from zoo.training.loop import Trainer
from zoo.training.stopping import StoppingEngine

needs_setter = pytest.mark.skipif(blas.local_thread_setter() is None,
                                  reason="numpy's BLAS has no openblas_set_num_threads_local: "
                                         "zoo's GEMMs then always run on numpy's own count")


@pytest.fixture(autouse=True)
def one_thread_after():
    yield
    blas.set_threads(1)


def _operands(m, k, n, layout, dtype, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    if layout == "at":  # a weight gradient: x.T @ dz
        a = np.ascontiguousarray(a.T).T
    if layout == "bt":  # an input gradient: dz @ w.T
        b = np.ascontiguousarray(b.T).T
    return a, b


@needs_setter
@pytest.mark.parametrize("m, k, n, layout", [
    (128, 784, 256, "ab"), (128, 784, 256, "bt"), (784, 128, 256, "at"),
    (256, 128, 784, "at"), (64, 1000, 48, "ab"), (5, 3000, 7, "bt"), (300, 449, 2, "ab")])
def test_a_gemm_gives_the_same_bits_on_any_thread_count(m, k, n, layout):
    a, b = _operands(m, k, n, layout, np.float32)
    gemm = blas.Gemm(m, k, n, np.float32)
    results = []
    for count in (1, 2, 3, 1):
        blas.set_threads(count)
        results.append(gemm(a, b, np.empty((m, n), np.float32)).copy())
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    exact = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(results[0], exact, rtol=1e-4, atol=1e-4 * np.sqrt(k))
    chunk = blas.k_chunk(np.float32)
    assert all(hi - lo <= chunk for lo, hi in gemm.chunks)
    assert len(gemm.chunks) == -(-k // chunk)


@needs_setter
def test_the_chunk_is_verified_here_for_each_dtype():
    for dtype in (np.float32, np.float64):
        chunk = blas.k_chunk(dtype)
        assert chunk in blas.CHUNK_CANDIDATES  # this machine's OpenBLAS agrees at some length
        a, b = _operands(128, chunk, 256, "ab", dtype, seed=3)
        with blas.blas_threads(1):
            one = a @ b
        with blas.blas_threads(2):
            two = a @ b
        np.testing.assert_array_equal(one, two)


def test_small_products_stay_plain_numpy():
    chunk = blas.k_chunk(np.float32)
    assert blas.gemm_or_none(32, 64, 10, np.float32) is None
    big = blas.gemm_or_none(128, 256, 128, np.float32)
    assert big is None if chunk == 0 else big.threaded and len(big.chunks) == 1


def test_dense_with_a_chunked_product_passes_the_gradient_check():
    # fan_in 500 > every chunk length: forward and input gradient are summed chunk by chunk
    layer = Dense(3, activation="tanh")
    check_layer(layer, (500,), batch=4)
    if blas.k_chunk(np.float64):
        assert isinstance(layer._gemms[0], blas.Gemm) and len(layer._gemms[0].chunks) == 2


class Flipper:
    """A governor that changes the thread count after every step."""

    def __init__(self):
        self.steps = 0

    def observe(self, seconds):
        self.steps += 1
        blas.set_threads(1 + self.steps % 2)
        return True


def _mlp():
    return Sequential([Dense(256, activation="relu"), Dense(128, activation="relu"), Dense(10)])


def _convnet():
    return Sequential([Conv2D(16, 5), Conv2D(8, 3), Flatten(), Dense(10)])


def _train(make_model, shape, batch, governor, steps=6):
    rng = np.random.default_rng(0)
    model = make_model()
    model.build(shape, rng)
    trainer = Trainer(model, SoftmaxCrossEntropy(), SGD(lr=0.01, momentum=0.9),
                      StoppingEngine(), task="classify", batch_size=batch, rng=rng)
    trainer._governor = governor
    blas.set_threads(1)
    x = rng.random((batch, *shape), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    losses = [trainer.train_step(x, y) for _ in range(steps)]
    return trainer, losses


@needs_setter
@pytest.mark.parametrize("make_model, shape, batch", [(_mlp, (784,), 128),
                                                      (_convnet, (6, 14, 14), 64)])
def test_training_is_bit_identical_whatever_the_governor_chooses(make_model, shape, batch):
    fixed, fixed_losses = _train(make_model, shape, batch, None)
    flipped, flipped_losses = _train(make_model, shape, batch, Flipper())
    assert flipped._governor.steps == 6
    first = flipped.model.layers[0]
    gemms = first._gemms[:2] if isinstance(first, Dense) else [
        v for k, v in first._scratch.items() if isinstance(k, tuple) and k[0] == "gemm"]
    # the forward and weight-gradient products ran as several-thread Gemms, K chunked
    assert len(gemms) == 2 and all(isinstance(g, blas.Gemm) and g.threaded for g in gemms)
    assert any(len(g.chunks) > 1 for g in gemms)
    assert flipped_losses == fixed_losses
    np.testing.assert_array_equal(flipped.values, fixed.values)


# -- the governor, fed made-up step times ---------------------------------------------------
def _drive(governor, seconds_for, steps):
    """Run ``steps`` made-up steps; ``seconds_for(threads, i)`` is step i's time."""
    arms = []
    for i in range(steps):
        arms.append(blas.threads())
        if not governor.observe(seconds_for(blas.threads(), i)):
            return arms, i
    return arms, None


def test_on_an_idle_machine_the_governor_moves_to_two_threads():
    gov = threads.ThreadGovernor(2)
    arms, retired = _drive(gov, lambda n, i: 1e-3 if n == 1 else 0.6e-3, 200)
    assert retired is None and gov.current == 2 and gov.switches == 1
    # warm-up and one window on one thread, then a trial of two that it keeps
    assert arms[:threads.WARMUP + threads.WINDOW] == [1] * (threads.WARMUP + threads.WINDOW)
    assert arms[100:] == [2] * 100 or arms[100:].count(1) <= 2 * (threads.WINDOW + 1)


def test_stalls_on_a_busy_core_keep_one_thread_and_make_trials_rarer():
    # two threads: fast steps, but every 5th waits 40 ms for a descheduled thread
    def seconds(n, i):
        return 1e-3 if n == 1 else (40e-3 if i % 5 == 0 else 0.6e-3)

    gov = threads.ThreadGovernor(2)
    arms, _ = _drive(gov, seconds, 3000)
    assert gov.current == 1 and gov.switches == 0
    assert gov.interval == threads.MAX_INTERVAL
    # each trial stops at its first stall, long before WINDOW steps
    assert arms.count(2) < 0.02 * len(arms)


def test_when_the_other_core_gets_busy_the_governor_goes_back_to_one_thread():
    gov = threads.ThreadGovernor(2)
    busy_from = 300

    def seconds(n, i):
        if n == 1:
            return 1e-3
        return 0.6e-3 if i < busy_from else 3e-3

    arms, _ = _drive(gov, seconds, 600)
    assert arms[busy_from - 1] == 2
    # a few slow steps make the current arm worse than one thread was: a trial, and back
    back = arms.index(1, busy_from)
    assert back <= busy_from + threads.WINDOW  # (a trial of one thread may be under way)
    assert arms[back:back + threads.WINDOW + 1] == [1] * (threads.WINDOW + 1)
    assert gov.current == 1 and gov.switches == 2
    # later trials of two threads stop once they have cost a window of one-thread steps
    assert arms[back:].count(2) < 0.1 * len(arms[back:])


def test_the_governor_retires_when_steps_are_too_short_to_gain():
    gov = threads.ThreadGovernor(2)
    arms, retired = _drive(gov, lambda n, i: 20e-6, 100)
    assert retired == threads.WARMUP + threads.WINDOW - 1 and set(arms) == {1}
    assert blas.threads() == 1


def test_zoo_blas_threads_fixes_the_count_or_is_refused(monkeypatch):
    monkeypatch.setenv("ZOO_BLAS_THREADS", "2")
    assert threads.make_governor() is None and blas.threads() == 2
    monkeypatch.setenv("ZOO_BLAS_THREADS", "auto")
    assert blas.configured_threads() is None
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("ZOO_BLAS_THREADS", bad)
        with pytest.raises(ConfigError, match="ZOO_BLAS_THREADS must be 'auto' or a positive"):
            threads.make_governor()


def test_the_cli_reports_a_bad_zoo_blas_threads_in_one_line(monkeypatch):
    monkeypatch.setenv("ZOO_BLAS_THREADS", "lots")
    result = CliRunner().invoke(cli, ["train", "--arch", "mlp", "--dataset", "xor",
                                      "--epochs", "1"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "zoo: error: ZOO_BLAS_THREADS must be 'auto' or a positive integer; received 'lots'"]
