"""One mlp-small training step by hand with zoo's dense pieces, in a tight loop.

mlp-small (DESIGN.md section 5): Dense(64, relu) -> Dense(10), softmax cross-entropy, SGD with
momentum 0.9, batch 32, float32, inputs of 64 features. The parameters live in one flat buffer
(as the trainer arranges), so the optimizer step is one kernel call. Prints steps/s: the median
of 3 runs of 2 s each, after a warm-up. The best peer (JAX, whole step jitted) measured 13,253
steps/s on this 2-core machine.

    python benchmarks/dense_step.py [--seconds 2] [--runs 3] [--input-grad]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from zoo.layers.dense import Dense
from zoo.losses import SoftmaxCrossEntropy
from zoo.model import Sequential
from zoo.optimizers import SGD

JAX_STEPS_PER_S = 13_253


def flat_parameters(model):
    """Every parameter and gradient as a view of one flat value / gradient buffer."""
    params = model.parameters()
    total = sum(p.value.size for p in params)
    values = np.empty(total, params[0].value.dtype)
    grads = np.zeros(total, params[0].value.dtype)
    offset = 0
    for p in params:
        n = p.value.size
        values[offset:offset + n] = p.value.reshape(-1)
        p.value = values[offset:offset + n].reshape(p.value.shape)
        p.grad = grads[offset:offset + n].reshape(p.value.shape)
        offset += n
    return values, grads


def make_step(batch: int = 32, features: int = 64, classes: int = 10, seed: int = 0,
              input_grad: bool = False):
    rng = np.random.default_rng(seed)
    model = Sequential([Dense(64, activation="relu"), Dense(classes)])
    model.build((features,), rng)
    model.layers[0].needs_input_grad = input_grad  # nothing upstream needs it
    values, grads = flat_parameters(model)
    params, grad_list = [values], [grads]
    loss = SoftmaxCrossEntropy()
    optimizer = SGD(lr=0.01, momentum=0.9)
    x = rng.standard_normal((batch, features)).astype(np.float32)
    y = rng.integers(0, classes, batch)
    layers = model.layers

    def step():
        h = x
        for layer in layers:
            h = layer.forward(h, True)
        value = loss.forward(h, y)
        g = loss.backward()
        for layer in reversed(layers):
            g = layer.backward(g)
        optimizer.step(params, grad_list)
        return value

    return step


def steps_per_second(step, seconds: float) -> float:
    n = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        for _ in range(100):
            step()
        n += 100
        t = time.perf_counter()
        if t >= deadline:
            return n / (t - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--input-grad", action="store_true",
                        help="also compute the first layer's (unused) input gradient")
    args = parser.parse_args()
    step = make_step(input_grad=args.input_grad)
    first = step()
    steps_per_second(step, 0.5)  # warm-up: compiled kernels loaded, caches hot
    runs = [steps_per_second(step, args.seconds) for _ in range(args.runs)]
    median = statistics.median(runs)
    print(f"mlp-small step (zoo dense pieces): {median:,.0f} steps/s "
          f"({1e6 / median:.1f} us/step); runs: {', '.join(f'{r:,.0f}' for r in runs)}")
    print(f"vs JAX {JAX_STEPS_PER_S:,} steps/s: {median / JAX_STEPS_PER_S:.2f}x; "
          f"first loss {first:.4f}")


if __name__ == "__main__":
    main()
