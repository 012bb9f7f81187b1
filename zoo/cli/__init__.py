"""The ``zoo`` command line."""

import os

# Read by OpenBLAS, MKL and OpenMP when numpy (or numba) is first imported.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def limit_blas_threads(environ=os.environ) -> None:
    """One BLAS thread for everything but zoo's large GEMMs, unless the user chose a count.

    Must run before numpy is imported. A second OpenBLAS thread pays only for large products,
    and only while the other core is idle; when another process keeps that core busy, each
    product waits for the descheduled thread (steps up to 25x slower, benchmarks/README.md).
    So OpenBLAS starts with one thread, and zoo's large GEMMs
    (``zoo.kernels.blas.Gemm``) get more while training only when the step times say it pays
    (``zoo.training.threads``; ``ZOO_BLAS_THREADS`` fixes their count instead). An idle
    OpenBLAS thread spins 2**20 cycles (under a millisecond) before it sleeps, not OpenBLAS's
    default 2**28, so a failed try of two threads costs the core's other user little.

    If the user set any of the thread variables, they are left alone and, unless
    ``ZOO_BLAS_THREADS`` is set too, that count also applies to zoo's GEMMs:
    ``OPENBLAS_NUM_THREADS=2 zoo train ...`` always uses two threads.
    """
    environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")
    chosen = [environ[name] for name in BLAS_THREAD_VARIABLES if environ.get(name)]
    if chosen:
        if not environ.get("ZOO_BLAS_THREADS") and chosen[0].strip().isdigit():
            environ["ZOO_BLAS_THREADS"] = chosen[0].strip()
        return
    for name in BLAS_THREAD_VARIABLES:
        environ[name] = "1"


def main():
    limit_blas_threads()
    from zoo.cli.main import cli, load_plugin_commands
    from zoo.plugins import get_host

    try:
        load_plugin_commands()
        get_host().report_problems()
    except Exception as exc:  # strict mode: a broken plugin is an error, reported in one line
        import sys

        from zoo.errors import ZooError, printable

        if not isinstance(exc, ZooError):
            raise
        print(f"zoo: error: {printable(exc)}", file=sys.stderr)
        sys.exit(2)
    cli()
