"""The machine's fp32 limit: the best SGEMM on large matrices, one core and all cores.

The canonical workloads' steps are mostly matrix products (``_workloads.PRODUCT_FLOPS``), so
what the best SGEMM this machine has reaches on a 2048 x 2048 x 2048 product bounds any
framework's steps per second. Two are measured: numpy's BLAS (OpenBLAS, in the kernel family
it picked or ``OPENBLAS_CORETYPE``'s) and zoo's own float32 product (``zoo.kernels.sgemm``,
which ignores ``OPENBLAS_CORETYPE``: under the Haswell family on an AVX-512 machine it is the
faster one). The limit is the larger: numpy's on all cores, or zoo's on one core times the
cores (an upper bound: perfect scaling). Prints one JSON line per thread count:

    {"threads": 2, "gflops": 355.2, "numpy": 340.1, "zoo": 355.2}
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
from threadpoolctl import threadpool_limits

SIZE = 2048


def sgemm_gflops(threads: int, repeats: int = 5, calls: int = 5) -> float:
    """Best GFLOP/s of ``calls`` back-to-back products over ``repeats`` tries."""
    rng = np.random.default_rng(0)
    a = rng.random((SIZE, SIZE), dtype=np.float32)
    b = rng.random((SIZE, SIZE), dtype=np.float32)
    c = np.empty_like(a)
    best = 0.0
    with threadpool_limits(threads, user_api="blas"):
        np.matmul(a, b, out=c)  # warm-up: threads started, pages touched
        for _ in range(repeats):
            start = time.perf_counter()
            for _ in range(calls):
                np.matmul(a, b, out=c)
            best = max(best, 2 * SIZE**3 * calls / (time.perf_counter() - start) / 1e9)
    return best


def zoo_sgemm_gflops(repeats: int = 5) -> float:
    """Best GFLOP/s of zoo's float32 product on one core (it has no threads of its own)."""
    from zoo.kernels import sgemm

    rng = np.random.default_rng(0)
    a = rng.random((SIZE, SIZE), dtype=np.float32)
    b = rng.random((SIZE, SIZE), dtype=np.float32)
    c = np.empty_like(a)
    sgemm.gemm(a, b, c)  # compiled, pages touched
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        sgemm.gemm(a, b, c)
        best = max(best, 2 * SIZE**3 / (time.perf_counter() - start) / 1e9)
    return best


def main() -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    zoo_one = zoo_sgemm_gflops()
    for threads in sorted({1, cores or 1}):
        numpy_rate = sgemm_gflops(threads)
        zoo_rate = zoo_one * threads
        print(json.dumps({"threads": threads, "gflops": round(max(numpy_rate, zoo_rate), 1),
                          "numpy": round(numpy_rate, 1), "zoo": round(zoo_rate, 1)}),
              flush=True)


if __name__ == "__main__":
    main()
