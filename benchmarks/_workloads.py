"""The six canonical workloads, shared by zoo's benchmark and the peers' scripts (stdlib only).

One training step = forward + loss + backward + SGD(lr=0.01, momentum=0.9) update, float32,
a fixed batch of inputs uniform in [0, 1) and integer labels in [0, 10) (the autoencoder's
target is its input). Every script prints one JSON line per workload:

    {"workload": "mlp", "framework": "zoo", "steps_per_s": ..., "samples_per_s": ...}
"""

from __future__ import annotations

import json
import time

# name: (input shape without the batch, batch, loss, model)
WORKLOADS = {
    "mlp-small": ((64,), 32, "ce", "64-64-10, ReLU, softmax cross-entropy"),
    "mlp": ((784,), 128, "ce", "784-256-128-10, ReLU, softmax cross-entropy"),
    "cnn": ((1, 28, 28), 64, "ce", ("LeNet-5: conv5x5(6, pad 2)-relu-maxpool2-conv5x5(16)-"
                                    "relu-maxpool2-fc120-fc84-fc10")),
    "rnn": ((40, 1), 64, "ce", "tanh RNN, hidden 128, last step -> fc10"),
    "lstm": ((40, 1), 64, "ce", "LSTM, hidden 128, last step -> fc10"),
    "autoencoder": ((784,), 128, "mse", "784-256-32-256-784, ReLU, sigmoid out, MSE"),
}
WARMUP = 5  # steps before timing (compilation, buffers, caches)


def _dense(batch, sizes):
    """Product flops of a Dense stack's step: forward, weight gradients, and input gradients
    for every layer but the first (nobody needs the input's)."""
    macs = sum(i * o for i, o in zip(sizes, sizes[1:]))
    first = sizes[0] * sizes[1]
    return 2 * batch * (3 * macs - first)


def _recurrent(batch, steps, hidden, gates, classes=10):
    """Forward ``h @ U`` per step, backward its weight and hidden-state gradients (the
    1-feature input products are negligible), plus the classifier head."""
    return 2 * batch * steps * hidden * gates * hidden * 3 + _dense(batch, [hidden, classes])


def _lenet5(batch):
    conv1 = 28 * 28 * 6 * 25  # per example: output positions x filters x taps
    conv2 = 10 * 10 * 16 * 150
    fc = 400 * 120 + 120 * 84 + 84 * 10
    return 2 * batch * (3 * (conv1 + conv2 + fc) - conv1)


# Floating-point operations of one step's matrix products (multiply and add counted apart;
# elementwise work left out): what the machine's fp32 GEMM peak bounds.
PRODUCT_FLOPS = {
    "mlp-small": _dense(32, [64, 64, 10]),
    "mlp": _dense(128, [784, 256, 128, 10]),
    "cnn": _lenet5(64),
    "rnn": _recurrent(64, 40, 128, 1),
    "lstm": _recurrent(64, 40, 128, 4),
    "autoencoder": _dense(128, [784, 256, 32, 256, 784]),
}


def time_steps(step, seconds: float, finish=lambda: None) -> float:
    """Steps per second of ``step()`` over about ``seconds``, after ``WARMUP`` steps.

    ``finish()`` waits for work still in flight (JAX dispatches asynchronously).
    """
    for _ in range(WARMUP):
        step()
    finish()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        n += 1
    finish()
    return n / (time.perf_counter() - start)


def report(name: str, framework: str, steps_per_s: float) -> None:
    batch = WORKLOADS[name][1]
    print(json.dumps({"workload": name, "framework": framework, "steps_per_s": steps_per_s,
                      "samples_per_s": steps_per_s * batch}), flush=True)


def names(argv: list[str]) -> list[str]:
    """The workloads named on the command line (all by default); an unknown name exits 2."""
    unknown = [a for a in argv if a not in WORKLOADS]
    if unknown:
        raise SystemExit(f"unknown workload(s) {', '.join(unknown)}; expected some of "
                         f"{', '.join(WORKLOADS)}")
    return argv or list(WORKLOADS)
