"""The ``zoo`` command line."""

import os

# Read by OpenBLAS, MKL and OpenMP when numpy (or numba) is first imported.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def limit_blas_threads(environ=os.environ) -> None:
    """Run BLAS single-threaded unless the user chose a thread count.

    zoo's GEMMs are small (a batch of 32-128 rows): OpenBLAS's second thread saves little on
    an idle 2-core machine and, when the cores are busy (other processes, or ``zoo compare``'s
    workers), its spin-waiting threads make each step 10-50x slower (benchmarks/README.md has
    the measurements). Must run before numpy is imported. If the user set any of these
    variables, all are left alone (OpenBLAS falls back to ``OMP_NUM_THREADS``), so
    ``OPENBLAS_NUM_THREADS=2 zoo train ...`` or ``OMP_NUM_THREADS=2 zoo train ...`` opts back in.
    """
    if any(environ.get(name) for name in BLAS_THREAD_VARIABLES):
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

        from zoo.errors import ZooError

        if not isinstance(exc, ZooError):
            raise
        print(f"zoo: error: {exc}", file=sys.stderr)
        sys.exit(2)
    cli()
