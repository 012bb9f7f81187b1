"""DESIGN.md's ``cnn`` workload: one LeNet-5 training step with zoo, as a JSON line.

LeNet-5 (the ``cnn`` plugin's ``preset=lenet5``: conv5x5(6, pad 2)-relu-maxpool2-conv5x5(16)-
relu-maxpool2-fc120-fc84-fc10) on inputs (1, 28, 28), batch 64, float32, softmax cross-entropy,
SGD with momentum 0.9. One step = forward + loss + backward + update, with the parameters in one
flat buffer as the trainer arranges them, and, like the peers (whose input does not require a
gradient), no gradient for the input of the first layer. Each run prints one line in the format
of ../shared/bench/README.md after 5 warm-up steps and ``--seconds`` of steps:

    {"workload": "cnn", "framework": "zoo", "steps_per_s": ..., "samples_per_s": ...}

``--peer PYTHON`` runs ``../shared/bench/torch_ref.py cnn`` with that interpreter after each zoo
run (back to back, the machine is noisy) and prints the medians and their ratio on stderr.
zoo runs BLAS as the ``zoo`` command does (single-threaded unless OPENBLAS_NUM_THREADS /
OMP_NUM_THREADS say otherwise), the peer with its own default; ``--threads N`` sets the BLAS /
OpenMP thread count of both before they start: on a shared 2-core machine two threads can be
10x slower than one when the other core is busy, for torch as for zoo.

    python benchmarks/cnn_step.py --runs 3 --peer /tmp/peers/bin/python [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

BATCH = 64
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
TORCH_REF = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "bench", "torch_ref.py")


def make_step(seed: int = 0):
    import numpy as np

    from zoo.data.spec import DataSpec
    from zoo.plugins import get_host
    from zoo.training.flat import flatten_parameters

    host = get_host()
    arch = host.architectures.get("cnn")
    spec = DataSpec((1, 28, 28), "image", "classify", 10, 10, "bench")
    model = arch.build(spec, arch.resolve_options({"preset": "lenet5"}))
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


def bench(step, seconds: float) -> dict:
    for _ in range(5):
        step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    dt = time.perf_counter() - t0
    return {"workload": "cnn", "framework": "zoo", "steps_per_s": n / dt,
            "samples_per_s": n * BATCH / dt}


def run_peer(python: str, env: dict) -> dict:
    out = subprocess.run([python, TORCH_REF, "cnn"], capture_output=True, text=True, check=True,
                         env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per run")
    parser.add_argument("--runs", type=int, default=1, help="runs (one JSON line each)")
    parser.add_argument("--peer", metavar="PYTHON",
                        help="also run torch_ref.py cnn with this interpreter after each run")
    parser.add_argument("--threads", type=int,
                        help="BLAS / OpenMP threads for zoo and the peer (default: theirs)")
    args = parser.parse_args()
    # before numpy loads its BLAS (make_step imports it)
    if args.threads:
        for var in THREAD_VARIABLES:
            os.environ[var] = str(args.threads)
    peer_env = dict(os.environ)
    for var in THREAD_VARIABLES:  # zoo's default, as the zoo command sets it
        os.environ.setdefault(var, "1")
    step = make_step()
    zoo_runs, peer_runs = [], []
    for _ in range(args.runs):
        result = bench(step, args.seconds)
        zoo_runs.append(result["steps_per_s"])
        print(json.dumps(result), flush=True)
        if args.peer:
            peer = run_peer(args.peer, peer_env)
            peer_runs.append(peer["steps_per_s"])
            print(json.dumps(peer), flush=True)
    if peer_runs:
        z, p = statistics.median(zoo_runs), statistics.median(peer_runs)
        print(f"cnn: zoo {z:.1f} steps/s, {peer['framework']} {p:.1f} steps/s (medians of "
              f"{args.runs}); zoo / {peer['framework']} = {z / p:.2f}", file=sys.stderr)


if __name__ == "__main__":
    main()
