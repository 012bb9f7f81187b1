"""DESIGN.md's ``rnn`` and ``lstm`` workloads: one recurrent training step with zoo, as JSON lines.

``rnn``: tanh RNN, hidden 128; ``lstm``: LSTM, hidden 128; both read inputs (40, 1) and feed
the last step to Dense(10); batch 64, float32, softmax cross-entropy, SGD with momentum 0.9.
The models come from the ``rnn`` and ``lstm`` plugins (``hidden=128``, ``readout=last``). One
step = forward + loss + backward + update, with the parameters in one flat buffer as the
trainer arranges them and, like the peers (whose input does not require a gradient), no
gradient for the input of the first layer. Each run prints one line in the format of
../shared/bench/README.md after 5 warm-up steps and ``--seconds`` of steps:

    {"workload": "rnn", "framework": "zoo", "steps_per_s": ..., "samples_per_s": ...}

``--peer PYTHON`` runs ``../shared/bench/torch_ref.py`` and ``jax_ref.py`` for the same
workload with that interpreter after each zoo run (back to back: the machine is noisy) and
prints the medians and the ratios on stderr:

    python benchmarks/recurrent_step.py rnn lstm --runs 3 --peer /tmp/peers/bin/python
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

BATCH = 64
WORKLOADS = ("rnn", "lstm")
BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "bench")
PEERS = {"torch": "torch_ref.py", "jax": "jax_ref.py"}


def make_step(workload: str, seed: int = 0):
    from zoo.data.spec import DataSpec
    from zoo.plugins import get_host
    from zoo.training.flat import flatten_parameters

    host = get_host()
    arch = host.architectures.get(workload)
    spec = DataSpec((40, 1), "sequence", "classify", 10, 10, "bench")
    model = arch.build(spec, arch.resolve_options({"hidden": 128, "readout": "last"}))
    rng = np.random.default_rng(seed)
    model.build(spec.input_shape, rng)
    model.layers[0].needs_input_grad = False  # nothing upstream of the first layer
    values, grads = flatten_parameters(model)
    loss = host.losses.get("softmax_cross_entropy")()
    optimizer = host.optimizers.get("sgd")(lr=0.01, momentum=0.9)
    x = rng.random((BATCH, *spec.input_shape), dtype=np.float32)
    y = rng.integers(0, 10, BATCH)

    def step():
        value = loss.forward(model.forward(x, training=True), y)
        model.backward(loss.backward())
        optimizer.step([values], [grads])
        return value

    return step


def bench(workload: str, step, seconds: float) -> dict:
    for _ in range(5):
        step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    dt = time.perf_counter() - t0
    return {"workload": workload, "framework": "zoo", "steps_per_s": n / dt,
            "samples_per_s": n * BATCH / dt}


def run_peer(python: str, script: str, workload: str) -> dict:
    out = subprocess.run([python, os.path.join(BENCH, script), workload], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workloads", nargs="*", metavar="WORKLOAD",
                        help="rnn and/or lstm (default: both)")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per run")
    parser.add_argument("--runs", type=int, default=1, help="runs (one JSON line each)")
    parser.add_argument("--peer", metavar="PYTHON",
                        help="also run torch_ref.py and jax_ref.py with this interpreter")
    args = parser.parse_args()
    unknown = sorted(set(args.workloads) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workload {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    for workload in args.workloads or WORKLOADS:
        step = make_step(workload)
        results = {"zoo": []}
        for _ in range(args.runs):
            result = bench(workload, step, args.seconds)
            results["zoo"].append(result["steps_per_s"])
            print(json.dumps(result), flush=True)
            for framework, script in PEERS.items() if args.peer else ():
                try:
                    peer = run_peer(args.peer, script, workload)
                except (OSError, subprocess.CalledProcessError) as exc:
                    print(f"{framework}: not run ({exc})", file=sys.stderr)
                    continue
                results.setdefault(framework, []).append(peer["steps_per_s"])
                print(json.dumps(peer), flush=True)
        medians = {k: statistics.median(v) for k, v in results.items() if v}
        if len(medians) > 1:
            ratios = ", ".join(f"zoo / {k} = {medians['zoo'] / m:.2f}"
                               for k, m in medians.items() if k != "zoo")
            summary = ", ".join(f"{k} {m:.1f}" for k, m in medians.items())
            print(f"{workload}: steps/s medians of {args.runs}: {summary}; {ratios}",
                  file=sys.stderr)


if __name__ == "__main__":
    main()
