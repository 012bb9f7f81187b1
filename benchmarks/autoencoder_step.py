"""DESIGN.md's ``autoencoder`` workload: one 784-256-32-256-784 training step with zoo, as JSON.

The peers' model exactly: Dense layers with ReLU after each of the first three and a sigmoid on
the output (fused into the last Dense), mean squared error against the input, SGD with momentum
0.9, batch 128, float32, inputs uniform in [0, 1). One step = forward + loss + backward +
update, with the parameters in one flat buffer as the trainer arranges them and, like the peers
(whose input does not require a gradient), no gradient for the input of the first layer. (The
``autoencoder`` plugin itself trains a linear code and, on data in [0, 1], logits under binary
cross-entropy; this is the workload as the peers define it.) Each run prints one line in the
format of ../shared/bench/README.md after 5 warm-up steps and ``--seconds`` of steps:

    {"workload": "autoencoder", "framework": "zoo", "steps_per_s": ..., "samples_per_s": ...}

``--peer PYTHON`` runs ``../shared/bench/torch_ref.py autoencoder`` and ``jax_ref.py
autoencoder`` with that interpreter after each zoo run (back to back, the machine is noisy) and
prints the medians and the ratios on stderr:

    python benchmarks/autoencoder_step.py --runs 3 --peer /tmp/peers/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

BATCH = 128
SIZES = (784, 256, 32, 256, 784)
BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "bench")


def make_step(seed: int = 0):
    from zoo.layers.dense import Dense
    from zoo.losses import MSE
    from zoo.model import Sequential
    from zoo.optimizers import SGD
    from zoo.training.flat import flatten_parameters

    model = Sequential([Dense(SIZES[1], activation="relu"), Dense(SIZES[2], activation="relu"),
                        Dense(SIZES[3], activation="relu"),
                        Dense(SIZES[4], activation="sigmoid")])
    rng = np.random.default_rng(seed)
    model.build((SIZES[0],), rng)
    model.layers[0].needs_input_grad = False  # nothing upstream of the first layer
    values, grads = flatten_parameters(model)
    loss = MSE()
    optimizer = SGD(lr=0.01, momentum=0.9)
    x = rng.random((BATCH, SIZES[0]), dtype=np.float32)
    layers = model.layers

    def step():
        h = x
        for layer in layers:
            h = layer.forward(h, True)
        value = loss.forward(h, x)
        g = loss.backward()
        for layer in reversed(layers):
            g = layer.backward(g)
        optimizer.step([values], [grads])
        return value

    return step


def measure(seconds: float) -> dict:
    step = make_step()
    for _ in range(5):
        step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    dt = time.perf_counter() - t0
    return {"workload": "autoencoder", "framework": "zoo", "steps_per_s": n / dt,
            "samples_per_s": n * BATCH / dt}


def _peer(python: str, script: str) -> float | None:
    path = os.path.join(BENCH, script)
    done = subprocess.run([python, path, "autoencoder"], capture_output=True, text=True,
                          check=False)
    for line in done.stdout.splitlines():
        try:
            return float(json.loads(line)["steps_per_s"])
        except (ValueError, KeyError):
            continue
    print(f"{script}: no result ({done.stderr.strip().splitlines()[-1:] or 'no output'})",
          file=sys.stderr)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per run")
    parser.add_argument("--runs", type=int, default=1, help="runs (a JSON line each)")
    parser.add_argument("--peer", metavar="PYTHON", default=None,
                        help="an interpreter with torch and jax: run their reference after "
                             "each zoo run and print medians and ratios on stderr")
    args = parser.parse_args()
    results = {"zoo": [], "torch": [], "jax": []}
    for _ in range(args.runs):
        line = measure(args.seconds)
        print(json.dumps(line), flush=True)
        results["zoo"].append(line["steps_per_s"])
        if args.peer:
            for name, script in (("torch", "torch_ref.py"), ("jax", "jax_ref.py")):
                value = _peer(args.peer, script)
                if value is not None:
                    results[name].append(value)
    if args.peer:
        zoo = statistics.median(results["zoo"])
        parts = [f"zoo {zoo:.0f} steps/s"]
        for name in ("torch", "jax"):
            if results[name]:
                peer = statistics.median(results[name])
                parts.append(f"{name} {peer:.0f} (zoo/{name} {zoo / peer:.2f}x)")
        print(f"medians of {args.runs}: " + ", ".join(parts), file=sys.stderr)


if __name__ == "__main__":
    main()
