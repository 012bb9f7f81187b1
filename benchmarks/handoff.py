"""How well a second thread takes its share: zoo's parallel jobs on one and two threads.

For a ``Gemm`` of the mlp's first layer (128 x 784 x 256, two column blocks) and the mlp's
SGD update (235,146 parameters, two chunks): microseconds per call (median) on one thread and
on two, right after the previous call (a worker still spinning, as within a training step)
and after a pause of serial work (50 us, 300 us; after 300 us the worker has gone to sleep and
must be woken). Two threads are at best twice as fast; what they lose beyond that is the
hand-off (``docs/threads.md``) and the packing each block repeats.

    python benchmarks/handoff.py
    chrt -f 5 python benchmarks/handoff.py    # on a shared machine: stand for an idle one
"""

from __future__ import annotations

import statistics
import time

from zoo.kernels.threads import prepare_environment

prepare_environment()

import numpy as np  # noqa: E402  (after prepare_environment, on purpose)

from zoo.kernels import blas, fpenv, optim, threads  # noqa: E402


def _pause(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:  # serial work, as a step does between its products
        pass


def median_us(fn, pause: float, calls: int = 300) -> float:
    fn()
    samples = []
    for _ in range(calls):
        if pause:
            _pause(pause)
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e6


def main() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((128, 784)).astype(np.float32)
    b = rng.standard_normal((784, 256)).astype(np.float32)
    out = np.empty((128, 256), np.float32)
    gemm = blas.Gemm(128, 784, 256)
    p = rng.standard_normal(235_146).astype(np.float32)
    g, v = rng.standard_normal(p.size).astype(np.float32), np.zeros_like(p)
    jobs = {
        f"Gemm(128, 784, 256), {gemm.blocks} blocks": lambda: gemm(a, b, out),
        f"SGD update, {len(optim.chunk_bounds(p.size)) - 1} chunks":
            lambda: optim.sgd(p, g, v, lr=1e-6, momentum=0.9, check=False),
    }
    print(f"{'job':34s} {'pause':>6s} {'1 thread':>9s} {'2 threads':>10s} {'speed-up':>9s}")
    with fpenv.flush_denormals(), threads.single_threaded_blas():
        for name, fn in jobs.items():
            for pause in (0.0, 50e-6, 300e-6):
                times = {}
                for count in (1, 2):
                    threads.set_threads(count)
                    times[count] = median_us(fn, pause)
                print(f"{name:34s} {pause * 1e6:4.0f}us {times[1]:7.0f}us {times[2]:8.0f}us "
                      f"{times[1] / times[2]:8.2f}x", flush=True)
    threads.set_threads(1)


if __name__ == "__main__":
    main()
