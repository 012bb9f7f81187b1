"""The speed policies keep results correct: the trainer's skipped input gradient, the BLAS
thread default, and the benchmark workloads (timings are measured in benchmarks/, never here)."""

import argparse
import importlib.util
import math
import os

import numpy as np
import pytest

from zoo.kernels.threads import BLAS_THREAD_VARIABLES, prepare_environment
from zoo.layers.dense import Dense
from zoo.layers.reshape import Flatten
from zoo.losses import SoftmaxCrossEntropy
from zoo.model import Sequential
from zoo.optimizers import SGD
from zoo.training.loop import Trainer
from zoo.training.stopping import StoppingEngine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _trainer(model, shape=(6,)):
    model.build(shape, np.random.default_rng(0))
    return Trainer(model, SoftmaxCrossEntropy(), SGD(lr=0.1, momentum=0.9), StoppingEngine(),
                   task="classify", batch_size=8)


def test_blas_threads_default_to_one_and_keep_the_users_choice():
    env = {"PATH": "/bin"}
    prepare_environment(env)
    assert all(env[name] == "1" for name in BLAS_THREAD_VARIABLES)
    assert "ZOO_BLAS_THREADS" not in env  # zoo's large GEMMs: chosen while training
    assert env["OPENBLAS_THREAD_TIMEOUT"] == "20"
    again = dict(env)
    prepare_environment(again)  # a second call, or a child process: zoo's 1s are not a user's
    assert again == env and "ZOO_BLAS_THREADS" not in again
    child = dict(env, OPENBLAS_NUM_THREADS="2")  # ...but a user's choice in a child is
    prepare_environment(child)
    assert child["ZOO_BLAS_THREADS"] == "2"
    for name in BLAS_THREAD_VARIABLES:  # any one set by the user: all left alone...
        env = {name: "2"}
        prepare_environment(env)
        assert env == {name: "2", "ZOO_BLAS_THREADS": "2", "OPENBLAS_THREAD_TIMEOUT": "20"}
    env = {"OMP_NUM_THREADS": "3", "ZOO_BLAS_THREADS": "auto", "OPENBLAS_THREAD_TIMEOUT": "4"}
    prepare_environment(env)  # ...and so are ZOO_BLAS_THREADS and the timeout
    assert env == {"OMP_NUM_THREADS": "3", "ZOO_BLAS_THREADS": "auto",
                   "OPENBLAS_THREAD_TIMEOUT": "4"}


def test_trainer_skips_the_first_layers_input_gradient_with_identical_updates():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 6)).astype(np.float32)
    y = rng.integers(0, 3, 8)
    skip = _trainer(Sequential([Dense(5, activation="relu"), Dense(3)]))
    assert skip.model.layers[0].needs_input_grad is False
    assert skip.model.layers[1].needs_input_grad is True
    # The same model and steps by hand, computing every input gradient.
    model = Sequential([Dense(5, activation="relu"), Dense(3)])
    model.build((6,), np.random.default_rng(0))
    params = [p.value for p in model.parameters()]
    velocity = [np.zeros_like(p) for p in params]
    loss = SoftmaxCrossEntropy()
    for _ in range(3):
        skip.train_step(x, y)
        loss.forward(model.forward(x, training=True), y)
        assert model.backward(loss.backward()).shape == x.shape
        for p, v, g in zip(params, velocity, [p.grad for p in model.parameters()]):
            v *= np.float32(0.9)
            v += g
            p -= np.float32(0.1) * v
    for a, b in zip(skip.model.parameters(), model.parameters()):
        np.testing.assert_allclose(a.value, b.value, rtol=1e-6, atol=1e-7)


def test_a_layer_in_front_keeps_the_input_gradient_it_passes_on():
    trainer = _trainer(Sequential([Flatten(), Dense(4), Dense(3)]), shape=(2, 3))
    assert trainer.model.layers[1].needs_input_grad is True
    x = np.ones((8, 2, 3), np.float32)
    assert math.isfinite(trainer.train_step(x, np.zeros(8, np.int64)))


def test_nested_sequential_first_leaf_skips():
    inner = Sequential([Dense(4, activation="relu"), Dense(4)])
    _trainer(Sequential([inner, Dense(3)]))
    assert inner.layers[0].needs_input_grad is False
    assert inner.layers[1].needs_input_grad is True


def _steps_module():
    spec = importlib.util.spec_from_file_location(
        "zoo_bench_steps", os.path.join(ROOT, "benchmarks", "steps.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["mlp-small", "mlp", "cnn", "rnn", "lstm", "autoencoder"])
def test_benchmark_workloads_are_the_designs_and_train(name):
    steps = _steps_module()
    trainer, xb, tb = steps.make_trainer(name)
    sizes = {"mlp-small": 4810, "mlp": 235146, "cnn": 61706, "rnn": 17930, "lstm": 67850,
             "autoencoder": 419120}
    assert trainer.values.size == sizes[name]
    before = trainer.values.copy()
    first = trainer.train_step(xb, tb)
    second = trainer.train_step(xb, tb)
    assert math.isfinite(first) and second < first
    assert not np.array_equal(before, trainer.values)


def _bench_module(name):
    import sys

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))  # their sibling imports
    try:
        spec = importlib.util.spec_from_file_location(
            f"zoo_bench_{name}", os.path.join(ROOT, "benchmarks", f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(os.path.join(ROOT, "benchmarks"))


def test_product_flops_count_what_a_step_multiplies():
    flops = _bench_module("_workloads").PRODUCT_FLOPS
    # mlp-small, 64-64-10, batch 32: forward 32x64x64 + 32x64x10, both weight gradients, and
    # the second layer's input gradient (the first one's is never computed).
    assert flops["mlp-small"] == 2 * 32 * (2 * (64 * 64 + 64 * 10) + 64 * 10)
    # lstm: 40 steps of a 64x128 @ 128x512 product, three times (forward, dU, dh), + the head.
    assert flops["lstm"] == 2 * 64 * 40 * 128 * 512 * 3 + 2 * 64 * 2 * 128 * 10


def test_the_peer_table_reports_the_share_of_the_fp32_limit():
    compare = _bench_module("compare_peers")
    flops = compare._workloads.PRODUCT_FLOPS["lstm"]
    at_limit = 0.95 * 100e9 / flops  # steps/s at 95% of a 100 GFLOP/s limit
    results = {"zoo": {"lstm": [at_limit]}, "torch": {"lstm": [at_limit]}}
    rows, _ = compare.steps_table(results, ["lstm"], {"lstm": [1.0]}, limit=100.0)
    assert "| 95% | 1.5x: within 10% of the fp32 limit |" in rows[-1]
    rows, _ = compare.steps_table(results, ["lstm"], {"lstm": [1.0]}, limit=200.0)
    assert "| 48% | 1.5x: **not met** |" in rows[-1]


def test_a_second_machine_writes_its_own_sections():
    compare = _bench_module("compare_peers")
    args = argparse.Namespace(threads=False, coretype="Haswell", isa=None, busy=False,
                              machine="EPYC")
    assert compare.section_name(args) == "steps-haswell-epyc"
    args.coretype, args.isa = None, "avx2"
    assert compare.section_name(args) == "steps-avx2-epyc"
    args.isa, args.machine = None, None
    assert compare.section_name(args) == "steps"


def test_capping_the_instruction_set_keeps_the_one_thread_flags_of_xla(monkeypatch):
    # --isa avx2's XLA flag and the single-thread peers' XLA flags go to the same variable
    compare = _bench_module("compare_peers")
    monkeypatch.setattr(compare, "ISA_ENV", [{"XLA_FLAGS": "--xla_cpu_max_isa=AVX2",
                                              "ONEDNN_MAX_CPU_ISA": "AVX2"}])
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    env = compare.environment(compare.ONE_THREAD)
    assert env["XLA_FLAGS"].split() == ["--xla_cpu_max_isa=AVX2",
                                        *compare.ONE_THREAD["XLA_FLAGS"].split()]
    assert env["ONEDNN_MAX_CPU_ISA"] == "AVX2" and env["OMP_NUM_THREADS"] == "1"
    assert compare.environment()["XLA_FLAGS"] == "--xla_cpu_max_isa=AVX2"


@pytest.mark.parametrize("name", ["a-b", "x y", "", "é"])
def test_a_machine_name_that_is_not_letters_and_digits_is_refused(name, capsys):
    compare = _bench_module("compare_peers")
    with pytest.raises(SystemExit) as stop:
        compare.main(["--machine", name, "--no-write", "--peer-python", ""])
    assert stop.value.code == 2
    assert "--machine expects letters and digits" in capsys.readouterr().err
