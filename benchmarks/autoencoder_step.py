"""DESIGN.md's ``autoencoder`` workload: one 784-256-32-256-784 training step with zoo, as JSON.

The peers' model exactly (Dense layers with ReLU after each of the first three, a sigmoid fused
into the last, mean squared error against the input, SGD with momentum 0.9, batch 128, float32,
inputs uniform in [0, 1)), as ``steps.py`` defines it: this script runs that one workload
(``Trainer.train_step``, what ``zoo train`` runs per batch; BLAS single-threaded, zoo's
default) and, with ``--peer``, the peers' reference right after each run. (The ``autoencoder``
plugin itself trains a linear code and, on data in [0, 1], logits under binary cross-entropy;
this is the workload as the peers define it.) Each run prints one line in the format of
../shared/bench/README.md after 5 warm-up steps and ``--seconds`` of steps:

    {"workload": "autoencoder", "framework": "zoo", "steps_per_s": ..., "samples_per_s": ...}

``--peer PYTHON`` runs ``../shared/bench/torch_ref.py autoencoder`` and ``jax_ref.py
autoencoder`` with that interpreter after each zoo run (back to back, the machine is noisy) and
prints the medians and the ratios on stderr; ``compare_peers.py autoencoder`` does the same with
rotated order and one-thread peers too.

    python benchmarks/autoencoder_step.py --runs 3 --peer /tmp/peers/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

from zoo.cli import limit_blas_threads

limit_blas_threads()  # zoo's default, before numpy is imported

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from steps import bench  # the one definition of the workload

BENCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "bench")


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
        line = bench("autoencoder", args.seconds)
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
