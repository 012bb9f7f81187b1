"""The same bits on any thread count, by construction: zoo's blocked products, the worker pool,
the BLAS held to one thread, whole training runs on 1, 2 and 3 threads (and under every
OpenBLAS kernel family this CPU can run, in subprocesses), and the governor that picks the
count from step times (fed made-up times: no timing here). Nothing here knows what this
machine computes: every check compares zoo with itself or with float64 within a tolerance.
"""

import hashlib
import os
import platform
import subprocess
import sys
import threading

import numpy as np
import pytest
from click.testing import CliRunner

from zoo.cli.main import cli
from zoo.errors import ConfigError
from zoo.kernels import blas, sgemm, threads, workers
from zoo.layers.conv import Conv2D
from zoo.layers.dense import Dense
from zoo.layers.recurrent import GRU, LSTM, SimpleRNN
from zoo.layers.reshape import Flatten
from zoo.losses import SoftmaxCrossEntropy
from zoo.model import Sequential
from zoo.optimizers import SGD
from zoo.training import governor as gov_module
from zoo.training.loop import Trainer
from zoo.training.stopping import StoppingEngine

HERE = os.path.abspath(__file__)


@pytest.fixture(autouse=True)
def one_thread_after():
    yield
    threads.set_threads(1)


# -- blocked products ------------------------------------------------------------------------
def _operands(m, k, n, layout, dtype, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((k, n)).astype(dtype)
    if layout == "at":  # a weight gradient: x.T @ dz
        a = np.ascontiguousarray(a.T).T
    if layout == "bt":  # an input gradient: dz @ w.T
        b = np.ascontiguousarray(b.T).T
    return a, b


@pytest.mark.parametrize("m, k, n, layout", [
    (128, 784, 256, "ab"), (128, 784, 256, "bt"), (784, 128, 256, "at"),
    (128, 256, 784, "bt"), (6400, 150, 16, "ab"), (1000, 3000, 40, "ab"), (40, 3000, 1000, "bt"),
    (128, 784, 256, "at"), (64, 3000, 40, "at"), (900, 2000, 700, "ab")])
def test_a_gemm_gives_the_same_bits_on_any_thread_count(m, k, n, layout):
    a, b = _operands(m, k, n, layout, np.float32)
    gemm = blas.Gemm(m, k, n, np.float32)
    assert gemm.blocks > 1  # these are all large enough to be cut
    results = []
    for count in (1, 2, 3, 1):
        threads.set_threads(count)
        results.append(gemm(a, b, np.empty((m, n), np.float32)).copy())
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    exact = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(results[0], exact, rtol=1e-4, atol=1e-4 * np.sqrt(k))


def test_the_partition_depends_on_the_sizes_alone():
    for m, k, n in [(128, 784, 256), (784, 128, 256), (6400, 150, 16), (130, 10**5, 130),
                    (4096, 4096, 4096), (17, 10**6, 33), (128, 256, 128), (2000, 3000, 1000)]:
        axis, cuts = blas.partition(m, k, n)
        length = (m, n, k)[axis]
        blocks = len(cuts) - 1
        if k > max(m, n) and m * n <= blas.MAX_PARTIAL:
            assert axis == 2  # the longest size is cut, the inner one too
        else:
            assert axis == (1 if m <= n else 0)  # the longer side of the output
        assert cuts[0] == 0 and cuts[-1] == length and cuts == sorted(set(cuts))
        assert all(c % blas.ALIGN == 0 for c in cuts[:-1])
        assert blocks & (blocks - 1) == 0 and blocks <= blas.MAX_BLOCKS  # a power of two
        if blocks > 1:
            assert m * k * n >= blocks * blas.BLOCK_WORK
        if blocks > 2:
            assert m * k * n >= blocks * blas.WIDE_WORK
    assert blas.partition(128, 784, 256) == (2, [0, 384, 784])  # a Dense forward: the inputs
    assert blas.partition(784, 128, 256) == (0, [0, 384, 784])  # its weight gradient: the same
    assert blas.partition(128, 256, 784) == (1, [0, 384, 784])  # a wide layer: the outputs
    assert blas.partition(128, 784, 256)[0] == 2
    assert blas.partition(2000, 3000, 1000)[0] == 0  # too many partial sums to keep: rows
    assert len(blas.partition(4096, 4096, 4096)[1]) - 1 == blas.MAX_BLOCKS


def test_a_layer_whose_weight_is_its_largest_array_has_its_rows_cut_in_every_product():
    # (rows, fan_in, units) -> the axes of forward, weight gradient, input gradient
    for rows, fan_in, units in [(128, 256, 784), (128, 784, 256), (64, 256, 4096)]:
        forward, weight_grad, input_grad = blas.layer_gemms(rows, fan_in, units)
        assert (forward.axis, weight_grad.axis, input_grad.axis) == (2, 0, 1)
        assert forward.cuts == weight_grad.cuts == input_grad.cuts  # the same rows of w
        assert forward.cuts[-1] == fan_in
    # where fan_in is the longest size, that is the longest-size rule's own choice
    assert [g.axis for g in blas.layer_gemms(128, 784, 256)] == [
        blas.partition(*shape)[0] for shape in ((128, 784, 256), (784, 128, 256),
                                                (128, 256, 784))]
    # a batch longer than the weight's sides, or too many partial sums: the longest size
    for rows, fan_in, units in [(1024, 256, 128), (512, 600, 1024)]:
        assert blas.layer_axes(rows, fan_in, units) == (None, None, None)
        shapes = ((rows, fan_in, units), (fan_in, rows, units), (rows, units, fan_in))
        assert [g.axis for g in blas.layer_gemms(rows, fan_in, units)] == [
            blas.partition(*shape)[0] for shape in shapes]
    assert blas.layer_gemms(8, 32, 64) == (None, None, None)  # too small to cut


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_split_inner_dimension_adds_its_parts_in_block_order(dtype):
    # (m, k, n) with k the longest: block i sums over k in cuts[i]:cuts[i + 1] (float32 by
    # zoo's sgemm, float64 by BLAS), and the parts are added in block order.
    a, b = _operands(64, 3000, 40, "ab", dtype, seed=5)
    gemm = blas.Gemm(64, 3000, 40, dtype)
    assert gemm.axis == 2 and gemm.blocks == 2
    expected = np.zeros((64, 40), dtype)
    with threads.single_threaded_blas():
        for lo, hi in zip(gemm.cuts, gemm.cuts[1:]):
            part = np.empty((64, 40), dtype)
            if dtype == np.float32:
                blas.sgemm.gemm(a[:, lo:hi], b[lo:hi], part)
            else:
                np.matmul(a[:, lo:hi], b[lo:hi], out=part)
            expected += part
    for count in (1, 2, 3):
        threads.set_threads(count)
        np.testing.assert_array_equal(gemm(a, b, np.empty((64, 40), dtype)), expected)
        strided = np.empty((64, 41), dtype)[:, :40]  # not C-contiguous: the Python blocks
        np.testing.assert_array_equal(gemm(a, b, strided), expected)


def test_small_products_stay_plain_numpy():
    assert blas.gemm_or_none(32, 64, 10, np.float32) is None
    assert blas.gemm_or_none(128, 256, 32, np.float32) is None  # 1M multiply-adds: one block
    assert blas.gemm_or_none(128, 256, 128, np.float32).blocks == 2
    assert blas.gemm_or_none(128, 784, 256, np.float32).blocks == 2


def test_a_dense_layers_uncut_float32_products_are_one_sgemm_call_each():
    # not BLAS's: their bits then depend on no BLAS build or kernel family
    for rows, fan_in, units in ((32, 64, 10), (128, 256, 32)):
        gemms = blas.layer_gemms(rows, fan_in, units, np.float32)
        assert all(g is not None and g.blocks == 1 and g.tiled for g in gemms)
        assert blas.layer_gemms(rows, fan_in, units, np.float64) == (None, None, None)
        rng = np.random.default_rng(rows)
        x = rng.standard_normal((rows, fan_in)).astype(np.float32)
        w = rng.standard_normal((fan_in, units)).astype(np.float32)
        dz = rng.standard_normal((rows, units)).astype(np.float32)
        for gemm, a, b in zip(gemms, (x, x.T, dz), (w, dz, w.T)):
            want = sgemm.gemm(a, b, np.empty((a.shape[0], b.shape[1]), np.float32))
            got = gemm(a, b, np.full_like(want, np.nan))
            np.testing.assert_array_equal(got, want)
    # too large for sgemm (an operand past MAX_OPERAND): still one plain call
    assert blas.layer_gemms(2, 1 << 18, 1, np.float32)[0] is None


# -- the worker pool and BLAS on one thread --------------------------------------------------
def test_every_block_runs_exactly_once_whatever_the_thread_count():
    for count in (1, 2, 3, 8):
        ran = []
        threads.set_threads(count)
        threads.run_blocks(ran.append, 7)
        assert sorted(ran) == list(range(7))
    threads.run_blocks(ran.append, 0)  # nothing to do returns at once


def test_blocks_run_on_several_threads_at_once():
    # Block 0 waits for block 1: only two threads at once can finish this.
    other = threading.Event()
    names = {}

    def block(i):
        names[i] = threading.current_thread().name
        if i == 1:
            other.set()
        else:
            assert other.wait(timeout=20)

    workers.run_blocks(block, 2, 2, threads.single_threaded_blas)
    assert names[0] != names[1]


def test_an_error_in_a_block_is_raised_after_every_block_ended():
    ended = []

    def block(i):
        if i == 2:
            raise ValueError("block 2 failed")
        ended.append(i)

    threads.set_threads(2)
    with pytest.raises(ValueError, match="block 2 failed"):
        threads.run_blocks(block, 6)
    assert sorted(ended) == [0, 1, 3, 4, 5]
    threads.run_blocks(ended.append, 2)  # the pool still works


@pytest.mark.parametrize("scope", [threads.single_threaded_blas, threads.step_scope])
def test_blas_runs_on_one_thread_inside_and_as_before_after(scope):
    libs = threads.blas_libraries()
    if not libs:
        pytest.skip("threadpoolctl finds no BLAS library whose thread count can be set")
    from threadpoolctl import threadpool_limits

    with threadpool_limits(2, user_api="blas"):
        before = [lib.get_num_threads() for lib in libs]
        with scope():
            assert [lib.get_num_threads() for lib in libs] == [1] * len(libs)
            with threads.single_threaded_blas():  # a job inside a step: the outer one holds
                assert [lib.get_num_threads() for lib in libs] == [1] * len(libs)
            assert [lib.get_num_threads() for lib in libs] == [1] * len(libs)
        assert [lib.get_num_threads() for lib in libs] == before
        with scope():  # and a scope after the nested ones holds again
            assert [lib.get_num_threads() for lib in libs] == [1] * len(libs)
        assert [lib.get_num_threads() for lib in libs] == before


# -- whole training runs ---------------------------------------------------------------------
class Flipper:
    """A governor that changes the thread count after every step."""

    def __init__(self):
        self.steps = 0

    def observe(self, seconds):
        self.steps += 1
        threads.set_threads(1 + self.steps % 3)
        return True


MODELS = {  # (model, input shape, batch): each has a product or a time loop cut into blocks
    "mlp": (lambda: Sequential([Dense(256, activation="relu"), Dense(128, activation="relu"),
                                Dense(10)]), (784,), 128),
    # the same, its Dense layers one call each instead of one fused step (zoo.training.fused)
    "mlp-layers": (lambda: Sequential([Dense(256, activation="relu"),
                                       Dense(128, activation="relu"), Dense(10)]), (784,), 128),
    "conv": (lambda: Sequential([Conv2D(16, 5), Conv2D(8, 3), Flatten(), Dense(10)]),
             (6, 14, 14), 64),
    "rnn": (lambda: Sequential([SimpleRNN(128), Dense(10)]), (12, 1), 64),
    "lstm": (lambda: Sequential([LSTM(64), Dense(10)]), (8, 20), 64),
    "gru": (lambda: Sequential([GRU(64), Dense(10)]), (8, 3), 64),
}


def _train(name, count, steps=4):
    make_model, shape, batch = MODELS[name]
    rng = np.random.default_rng(0)
    model = make_model()
    model.build(shape, rng)
    trainer = Trainer(model, SoftmaxCrossEntropy(), SGD(lr=0.01, momentum=0.9),
                      StoppingEngine(), task="classify", batch_size=batch, rng=rng)
    if name.endswith("-layers"):
        trainer._fused = None
    assert (trainer._fused is not None) == (name == "mlp")
    flipper = Flipper() if count == "flip" else None
    trainer._governor = flipper
    threads.set_threads(1 if flipper else count)
    x = rng.random((batch, *shape), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    losses = [trainer.train_step(x, y) for _ in range(steps)]
    assert flipper is None or flipper.steps == steps
    return trainer, losses


def _count_blocks(monkeypatch) -> list:
    """The number of blocks of every parallel job from now on (gemms, native calls such as
    the float32 convolutions', and Python blocks)."""
    cut: list = []
    run, run_gemm, run_call = threads.run_blocks, threads.run_gemm, threads.run_call
    monkeypatch.setattr(threads, "run_blocks", lambda fn, n: cut.append(n) or run(fn, n))
    monkeypatch.setattr(threads, "run_gemm", lambda cuts, *args: cut.append(len(cuts) - 1)
                        or run_gemm(cuts, *args))
    monkeypatch.setattr(threads, "run_call", lambda fn, args, cuts: cut.append(len(cuts) - 1)
                        or run_call(fn, args, cuts))
    return cut


@pytest.mark.parametrize("path", ["native", "python"])
@pytest.mark.parametrize("name", list(MODELS))
def test_training_is_bit_identical_on_1_2_3_threads_and_when_the_count_flips(name, path,
                                                                            monkeypatch):
    if path == "python":  # the products as np.matmul blocks, as where zoo cannot call BLAS
        monkeypatch.setattr(workers, "gemm_supported", lambda dtype: False)
    cut = _count_blocks(monkeypatch)  # products and time loops that ran as several blocks
    one, one_losses = _train(name, 1)
    if name == "mlp":  # one fused kernel call, which posts its blocks and chunks itself
        layout = one._fused.work[MODELS[name][2]]
        assert layout.scratch is not None and layout.chunked
    else:
        assert cut and max(cut) > 1
    for count in (2, 3, "flip"):
        other, losses = _train(name, count)
        assert losses == one_losses, count
        np.testing.assert_array_equal(other.values, one.values, err_msg=str(count))


# -- every OpenBLAS kernel family this CPU can run --------------------------------------------
# OPENBLAS_CORETYPE names and the CPU features (numpy's names) each family's kernels use.
X86_FAMILIES = {"Prescott": ("SSE3",), "Nehalem": ("SSE42",), "Sandybridge": ("AVX",),
                "Haswell": ("AVX2", "FMA3"), "Zen": ("AVX2", "FMA3"),
                "SkylakeX": ("AVX512_SKX",), "Cooperlake": ("AVX512_SKX", "AVX512BF16"),
                "SapphireRapids": ("AVX512_SPR",)}
ARM_FAMILIES = {"ARMV8": ("ASIMD",), "NeoverseN1": ("ASIMD",), "NeoverseV1": ("SVE",),
                "NeoverseN2": ("SVE",)}
FAMILIES = ARM_FAMILIES if platform.machine().lower() in ("aarch64", "arm64") else X86_FAMILIES


def _cpu_features() -> dict:
    """numpy's run-time view of the CPU's features (checked with the OS's support too)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy 1.x
        from numpy.core._multiarray_umath import __cpu_features__
    return __cpu_features__


def _blas_is_openblas() -> bool:
    return any(lib.internal_api == "openblas" for lib in threads.blas_libraries())


def _family_env(family: str, subprocess_env: dict) -> dict:
    """The environment of a subprocess under OpenBLAS's kernel ``family``; the test is
    skipped, naming why, where numpy's BLAS is not OpenBLAS or the CPU cannot run it."""
    if not _blas_is_openblas():
        pytest.skip(f"{family}: numpy's BLAS is not OpenBLAS (no kernel families to choose)")
    missing = [f for f in FAMILIES[family] if not _cpu_features().get(f)]
    if missing:
        pytest.skip(f"{family}: this CPU cannot run its kernels (no {', '.join(missing)})")
    return {**subprocess_env, "OPENBLAS_CORETYPE": family}


RUN_UNDER_FAMILY = """
import sys
import numpy, pytest, threadpoolctl
print("architecture:", [i.get("architecture") for i in threadpoolctl.threadpool_info()
                        if i["user_api"] == "blas"], flush=True)
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", sys.argv[1], "-k", sys.argv[2]]))
"""


# Haswell's (AVX2) in the fast lane: the family most machines without AVX-512 run; the others
# (a few seconds each) in the slow one.
@pytest.mark.parametrize("family", [
    pytest.param(f, marks=[] if f == "Haswell" else pytest.mark.slow) for f in FAMILIES])
def test_training_is_bit_identical_under_every_openblas_kernel_family(family, subprocess_env):
    env = _family_env(family, subprocess_env)
    done = subprocess.run([sys.executable, "-c", RUN_UNDER_FAMILY, HERE,
                           "gemm_gives_the_same_bits or bit_identical_on_1_2_3"],
                          capture_output=True, text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, f"{family}:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}"
    assert " passed" in done.stdout and "architecture: ['" in done.stdout


def _dense_bits() -> str:
    """Hashes of the weights of the float32 mlp after a few steps on one thread, trained
    through the fused step and through its layers (``_model_bits``)."""
    return _model_bits(("mlp", "mlp-layers"))


DENSE_BITS = """
import os, sys
sys.path.insert(0, os.path.dirname(sys.argv[1]))
import test_blas_threads
print("bits:", test_blas_threads._dense_bits(), flush=True)
"""


@pytest.mark.parametrize("family", [
    pytest.param(f, marks=[] if f == "Haswell" else pytest.mark.slow) for f in FAMILIES])
def test_a_float32_dense_model_trains_to_the_same_bits_under_every_kernel_family(
        family, subprocess_env):
    # Every product of its step is zoo's own (sgemm: cut or not), none BLAS's: the weights
    # under another OpenBLAS kernel family are this process's, bit for bit.
    env = _family_env(family, subprocess_env)
    done = subprocess.run([sys.executable, "-c", DENSE_BITS, HERE], capture_output=True,
                          text=True, env=env, timeout=600, check=False)
    assert done.returncode == 0, f"{family}:\n{done.stdout[-3000:]}\n{done.stderr[-2000:]}"
    assert f"bits: {_dense_bits()}" in done.stdout


# -- kernels compiled for a CPU with narrower vectors ------------------------------------------
def _model_bits(names=tuple(MODELS)) -> str:
    """One line per model of ``MODELS``: a hash of its weights and losses after a few steps."""
    lines = []
    for name in names:
        trainer, losses = _train(name, 1)
        digest = hashlib.sha256(trainer.values.tobytes() + np.array(losses).tobytes())
        lines.append(f"{name} {digest.hexdigest()}")
    return "\n".join(lines)


MODEL_BITS = """
import os, sys
sys.path.insert(0, os.path.dirname(sys.argv[1]))
import test_blas_threads
from zoo.kernels import sgemm
print(f"tile: {sgemm.ROWS} x {sgemm.PANEL}", flush=True)
print(test_blas_threads._model_bits(), flush=True)
"""


def _avx2_target_env(subprocess_env: dict) -> dict:
    """The environment of a subprocess whose kernels numba compiles for this CPU without its
    AVX-512: the code an AVX2 machine runs (16 registers of 8 floats, sgemm's 6 x 16 tile,
    256-bit recurrent cells). Skipped, naming why, where the CPU has no AVX-512 to take away.
    """
    target = sgemm.avx2_target()
    if target is None:
        pytest.skip("AVX2 target: this CPU has no AVX-512, its kernels are AVX2's or narrower")
    return {**subprocess_env, **target}


@pytest.mark.slow
def test_kernels_compiled_for_avx2_train_to_this_cpus_bits(subprocess_env):
    # Another register tile (6 x 16 instead of 8 x 32), other convolution tiles and half-width
    # vectors in the recurrent cells: still the same chains of multiply-adds, so every model
    # trains to the same bits as here (the kernels compiled afresh: about a minute).
    env = _avx2_target_env(subprocess_env)
    done = subprocess.run([sys.executable, "-c", MODEL_BITS, HERE], capture_output=True,
                          text=True, env=env, timeout=900, check=False)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-2000:]}"
    assert f"tile: 6 x {sgemm.LANES}" in done.stdout
    assert _model_bits() in done.stdout


@pytest.mark.slow
def test_a_cold_and_a_warm_kernel_cache_train_to_the_same_bits(subprocess_env, tmp_path):
    # The first process compiles every kernel (each inlining its callees' fresh IR), the
    # second loads them from numba's cache (linking the cached IR): the code may differ, the
    # bits may not. The lstm's cell once summed in another order in one of them.
    env = {**subprocess_env, "ZOO_CACHE_DIR": str(tmp_path)}
    outputs = []
    for _ in ("cold", "warm"):
        done = subprocess.run([sys.executable, "-c", MODEL_BITS, HERE], capture_output=True,
                              text=True, env=env, timeout=900, check=False)
        assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-2000:]}"
        outputs.append(done.stdout)
    assert _model_bits() in outputs[0] and _model_bits() in outputs[1]


# The tests of the code whose shapes follow the CPU's vectors: sgemm's tile and panels, the
# packed weights, the convolution tiles, the recurrent cells.
SHAPED_BY_THE_CPU = ("test_sgemm.py", "test_packed.py", "test_conv_tiles.py", "test_recurrent.py")


@pytest.mark.slow
def test_the_kernels_tests_pass_when_compiled_for_avx2(subprocess_env):
    # What an AVX2 machine runs, tested here: a test that assumed AVX-512's 32-column panel
    # once failed there and nowhere else.
    env = _avx2_target_env(subprocess_env)
    files = [os.path.join(os.path.dirname(HERE), name) for name in SHAPED_BY_THE_CPU]
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           *files], capture_output=True, text=True, env=env, timeout=900,
                          check=False)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-2000:]}"
    assert " passed" in done.stdout and " failed" not in done.stdout


# -- the governor, fed made-up step times ---------------------------------------------------
def _drive(governor, seconds_for, steps):
    """Run ``steps`` made-up steps; ``seconds_for(threads, i)`` is step i's time."""
    arms = []
    for i in range(steps):
        arms.append(threads.threads())
        if not governor.observe(seconds_for(threads.threads(), i)):
            return arms, i
    return arms, None


def test_on_an_idle_machine_the_governor_stays_on_two_threads():
    gov = gov_module.ThreadGovernor(2)
    arms, retired = _drive(gov, lambda n, i: 1e-3 if n == 1 else 0.6e-3, 400)
    assert retired is None and gov.current == 2 and gov.switches == 0
    # warm-up and one window on two threads, then a short trial of one that loses
    warm = gov_module.WARMUP + gov_module.WINDOW
    assert arms[:warm] == [2] * warm
    first_trial = arms[warm:].index(2)
    assert 0 < first_trial <= gov_module.FIRST_TRIAL_WARMUP + gov_module.MIN_TRIAL
    assert arms.count(1) <= 3 * (gov_module.FIRST_TRIAL_WARMUP + gov_module.MIN_TRIAL)


def test_a_clearly_slower_trial_ends_after_a_few_steps():
    # one thread 1.7x slower (the lstm workload on an idle 2-core machine): each trial runs
    # its transition step and CLEAR_STEPS counted steps, no more
    gov = gov_module.ThreadGovernor(2)
    arms, _ = _drive(gov, lambda n, i: 1.7e-3 if n == 1 else 1e-3, 1200)
    warm = gov_module.WARMUP + gov_module.WINDOW
    trials = "".join(map(str, arms[warm:])).replace("2", " ").split()
    assert len(trials) == 2 and all(len(t) == 1 + gov_module.CLEAR_STEPS for t in trials)
    # and the trials thin out fast: the first right away, the next CLEAR_BACKOFF times
    # FIRST_INTERVAL steps later (BACKOFF times after a trial that loses by less)
    starts = [i for i in range(warm, len(arms)) if arms[i] == 1 and arms[i - 1] == 2]
    gap = gov_module.CLEAR_BACKOFF * gov_module.FIRST_INTERVAL
    assert starts[1] - starts[0] > gap and gov.current == 2
    assert gov.interval == min(gov_module.CLEAR_BACKOFF * gap, gov_module.MAX_INTERVAL)


def test_a_trial_not_clearly_slower_runs_until_it_loses():
    # one thread only 10% slower: not a clear loss, so the trial runs MIN_TRIAL counted steps
    gov = gov_module.ThreadGovernor(2)
    arms, _ = _drive(gov, lambda n, i: 1.1e-3 if n == 1 else 1e-3, 100)
    warm = gov_module.WARMUP + gov_module.WINDOW
    assert arms[warm:].index(2) == 1 + gov_module.MIN_TRIAL
    assert gov.interval == gov_module.BACKOFF * gov_module.FIRST_INTERVAL


def test_the_first_steps_do_not_count_nor_stall():
    # two threads: the first steps start the workers (slow), then they are the faster arm
    def seconds(n, i):
        if n == 1:
            return 1e-3
        return 30e-3 if i == 0 else 4e-3 if i == 1 else 0.6e-3

    gov = gov_module.ThreadGovernor(2)
    arms, _ = _drive(gov, seconds, 100)
    warm = gov_module.WARMUP + gov_module.WINDOW
    assert arms[:warm] == [2] * warm and gov.current == 2 and gov.switches == 0


def test_a_first_stall_tries_one_thread_at_once():
    # two threads fast but for one stall at step 6: one thread is tried right after it
    def seconds(n, i):
        return 1e-3 if n == 1 else (50e-3 if i == 6 else 0.6e-3)

    gov = gov_module.ThreadGovernor(2)
    arms, _ = _drive(gov, seconds, 10)
    assert arms[:7] == [2] * 7 and arms[7] == 1


def test_stalls_on_a_busy_core_keep_one_thread_and_make_trials_rarer():
    # two threads: fast steps, but every 5th waits 40 ms for a descheduled thread
    def seconds(n, i):
        return 1e-3 if n == 1 else (40e-3 if i % 5 == 0 else 0.6e-3)

    gov = gov_module.ThreadGovernor(2)
    arms, _ = _drive(gov, seconds, 3000)
    assert gov.current == 1 and gov.switches == 1  # at the first stall
    assert arms.index(1) <= gov_module.WARMUP + 5
    assert gov.interval == gov_module.MAX_INTERVAL
    # each trial stops at its first stall, long before WINDOW steps
    assert arms.count(2) < 0.02 * len(arms)


def test_when_the_other_core_gets_busy_the_governor_goes_back_to_one_thread():
    gov = gov_module.ThreadGovernor(2)
    busy_from = 300

    def seconds(n, i):
        if n == 1:
            return 1e-3
        return 0.6e-3 if i < busy_from else 3e-3

    arms, _ = _drive(gov, seconds, 600)
    assert arms[busy_from - 1] == 2
    # a few slow steps make the current arm worse than one thread was: a trial, and back
    back = arms.index(1, busy_from)
    assert back <= busy_from + gov_module.WINDOW  # (a trial of one thread may be under way)
    assert arms[back:back + gov_module.WINDOW + 1] == [1] * (gov_module.WINDOW + 1)
    assert gov.current == 1 and gov.switches == 1
    # later trials of two threads stop once they have cost a window of one-thread steps
    assert arms[back:].count(2) < 0.1 * len(arms[back:])


def test_the_governor_retires_when_steps_are_too_short_to_gain():
    gov = gov_module.ThreadGovernor(2)
    arms, retired = _drive(gov, lambda n, i: 20e-6, 100)
    assert retired == gov_module.WARMUP + gov_module.WINDOW - 1 and set(arms) == {2}
    assert threads.threads() == 1


def test_zoo_blas_threads_fixes_the_count_or_is_refused(monkeypatch):
    monkeypatch.setenv("ZOO_BLAS_THREADS", "2")
    assert threads.make_governor() is None and threads.threads() == 2
    monkeypatch.setenv("ZOO_BLAS_THREADS", "auto")
    assert threads.configured_threads() is None
    monkeypatch.setattr(threads, "available_cpus", lambda: 4)
    governor = threads.make_governor()
    assert governor.arms == (1, 4) and threads.threads() == 4
    monkeypatch.setattr(threads, "available_cpus", lambda: 1)
    assert threads.make_governor() is None and threads.threads() == 1
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("ZOO_BLAS_THREADS", bad)
        with pytest.raises(ConfigError, match="ZOO_BLAS_THREADS must be 'auto' or a positive"):
            threads.make_governor()


def test_compare_workers_get_a_fixed_share_of_the_cores(monkeypatch):
    monkeypatch.setattr(threads, "available_cpus", lambda: 4)
    env = threads.worker_environment(2, environ={"MKL_NUM_THREADS": "3"})
    assert env.pop("MKL_NUM_THREADS") == "3"  # the user's choice is kept
    assert set(env) == {"OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS",
                        "ZOO_BLAS_THREADS"} and set(env.values()) == {"2"}
    assert set(threads.worker_environment(8, environ={}).values()) == {"1"}


def test_the_cli_reports_a_bad_zoo_blas_threads_in_one_line(monkeypatch):
    monkeypatch.setenv("ZOO_BLAS_THREADS", "lots")
    result = CliRunner().invoke(cli, ["train", "--arch", "mlp", "--dataset", "xor",
                                      "--epochs", "1"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "zoo: error: ZOO_BLAS_THREADS must be 'auto' or a positive integer; received 'lots'"]
