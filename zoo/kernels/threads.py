"""zoo's thread policy, in one place: how many threads, where, and why results never change.

1. The BLAS library (OpenBLAS, MKL, BLIS...; found through ``threadpoolctl``) runs every
   product zoo asks of it on one thread. A threaded BLAS splits a product as it likes, and
   its split can change the rounding (OpenBLAS's threaded driver cuts the inner dimension
   differently from its serial one, and where depends on the CPU's kernel family). So zoo
   splits the work itself instead.
2. zoo's parallel kernels (``zoo.kernels.blas.Gemm``, the recurrent time loops) cut their work
   into blocks chosen from the sizes alone, each computed by one single-threaded call, and
   any sum over blocks is added in a fixed order. Threads only decide who computes which
   block (``zoo.kernels.workers``), so one thread and any number give the same bits, on any
   CPU and BLAS build, with nothing to probe.
3. How many threads: ``threads()``, 1 unless raised. ``ZOO_BLAS_THREADS=N`` fixes it;
   unset or ``auto`` lets a trainer's governor (``zoo.training.governor``) choose between one
   and every available core from the step times, since a second thread pays on an idle core
   and costs on a busy one. The ``zoo`` command starts numpy's BLAS with one thread
   (``prepare_environment``); a user's ``OPENBLAS_NUM_THREADS`` (or ``OMP_``, ``MKL_``) then
   sets zoo's count instead, with BLAS still held to one thread inside zoo's products.
4. ``zoo compare``'s worker processes share the cores: each gets ``cores // workers`` threads,
   fixed (``worker_environment``), so no worker's governor competes for another's core.
5. A worker computes a job's blocks in the floating-point mode of the thread that posted it
   (denormals flushed inside training steps, ``zoo.kernels.fpenv``), so that too is the same
   whichever thread runs a block.

This module imports neither numpy nor numba at import time: the command line calls
``prepare_environment`` before numpy is loaded.
"""

from __future__ import annotations

import os
import threading

from zoo.errors import ConfigError

# Read by OpenBLAS, MKL and OpenMP when numpy (or numba) is first imported.
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
# Set where zoo itself set BLAS_THREAD_VARIABLES to 1 (``prepare_environment``), so that a
# second call, or a child process that inherits them, does not take them for the user's.
DEFAULTS_MARK = "ZOO_BLAS_DEFAULTS"
# What a ``zoo compare`` worker process may use (ZOO_BLAS_THREADS too: a fixed share).
WORKER_THREAD_VARIABLES = (*BLAS_THREAD_VARIABLES, "NUMBA_NUM_THREADS", "ZOO_BLAS_THREADS")

_COUNT = [1]  # threads zoo's parallel kernels may use now
_BLAS: list = []  # [the threadpoolctl controllers of the BLAS libraries numpy loaded]


def prepare_environment(environ=os.environ) -> None:
    """One BLAS thread from the start, unless the user chose a count; before numpy loads.

    BLAS never needs its own threads under zoo (rule 1 above), and an idle OpenBLAS thread
    spins for a while before it sleeps, taking a core from whoever shares the machine; so the
    command starts it with one. If the user set any of the variables they are left alone and,
    unless ``ZOO_BLAS_THREADS`` is set too, the count becomes zoo's: ``OPENBLAS_NUM_THREADS=2
    zoo train ...`` runs zoo's blocks on two threads. ``OPENBLAS_THREAD_TIMEOUT=20`` makes a
    user-started OpenBLAS thread sleep after 2**20 cycles instead of 2**28.

    Calling it again (or in a child process that inherits the variables) changes nothing:
    the 1s it set are marked as zoo's (``DEFAULTS_MARK``), not taken for a user's choice of
    one thread.
    """
    environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "20")
    if environ.get(DEFAULTS_MARK) == "1" and all(
            environ.get(name) == "1" for name in BLAS_THREAD_VARIABLES):
        return
    chosen = [environ[name] for name in BLAS_THREAD_VARIABLES if environ.get(name)]
    if chosen:
        if not environ.get("ZOO_BLAS_THREADS") and chosen[0].strip().isdigit():
            environ["ZOO_BLAS_THREADS"] = chosen[0].strip()
        return
    for name in BLAS_THREAD_VARIABLES:
        environ[name] = "1"
    environ[DEFAULTS_MARK] = "1"


def configured_threads() -> int | None:
    """``ZOO_BLAS_THREADS`` as a thread count, or None for "auto" (unset, empty or "auto")."""
    raw = os.environ.get("ZOO_BLAS_THREADS", "").strip()
    if raw in ("", "auto"):
        return None
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"ZOO_BLAS_THREADS must be 'auto' or a positive integer; "
                          f"received {raw!r}")
    return n


def available_cpus() -> int:
    """The cores this process may run on (its affinity mask, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def worker_environment(workers: int, environ=os.environ) -> dict:
    """The thread variables for one of ``workers`` worker processes: an equal, fixed share.

    Variables the user set are kept as they are.
    """
    share = str(max(1, available_cpus() // max(1, workers)))
    return {name: environ.get(name, share) for name in WORKER_THREAD_VARIABLES}


def threads() -> int:
    """How many threads zoo's parallel kernels use now."""
    return _COUNT[0]


def set_threads(n: int) -> None:
    """Let zoo's parallel kernels use ``n`` threads from now on (1: run blocks in turn)."""
    _COUNT[0] = max(1, int(n))


def make_governor():
    """A trainer's governor if the count is "auto" and more than one core is there, else None.

    With ``ZOO_BLAS_THREADS=N`` it sets N threads and returns None.
    """
    fixed = configured_threads()
    if fixed is not None:
        set_threads(fixed)
        return None
    most = available_cpus()
    set_threads(1)
    if most < 2:
        return None
    from zoo.training.governor import ThreadGovernor

    return ThreadGovernor(most)


def blas_libraries() -> list:
    """threadpoolctl's controllers of the BLAS libraries loaded in this process (maybe none:
    Accelerate, for one, cannot be told a thread count; it then runs as it comes)."""
    if not _BLAS:
        import numpy  # noqa: F401  (the BLAS to find is the one numpy loads)
        from threadpoolctl import ThreadpoolController

        _BLAS.append([lib for lib in ThreadpoolController().lib_controllers
                      if lib.user_api == "blas"])
    return _BLAS[0]


def _per_thread(lib) -> bool:
    """Whether ``lib`` keeps its thread count per thread (OpenMP builds of OpenBLAS); the
    others (pthreads OpenBLAS, MKL, BLIS) keep one count for the process."""
    return getattr(lib, "threading_layer", None) == "openmp"


_HELD = threading.local()  # .depth: how many single_threaded_blas scopes this thread is in


class single_threaded_blas:  # lower case: used as ``with single_threaded_blas():``
    """Inside the block, the BLAS library runs on one thread; restored after it.

    Cheap (a microsecond when BLAS is on one thread already, as under the ``zoo`` command), so
    it wraps every training step and every parallel job. OpenMP builds keep a count per
    thread, so every thread that runs BLAS for zoo enters it. A scope inside another of the
    same thread (a job inside a training step) costs nothing more: the outer one holds BLAS
    until it exits.
    """

    __slots__ = ("changed",)

    def __enter__(self):
        self.changed = None  # [(library, its count before)], made only when one changes
        depth = getattr(_HELD, "depth", 0)
        _HELD.depth = depth + 1
        if depth:
            return self
        try:
            for lib in _BLAS[0] if _BLAS else blas_libraries():
                n = lib.get_num_threads()
                if n != 1:
                    lib.set_num_threads(1)
                    if self.changed is None:
                        self.changed = []
                    self.changed.append((lib, n))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc):
        _HELD.depth -= 1
        if self.changed:
            for lib, n in self.changed:
                if n is not None:
                    lib.set_num_threads(n)
        return False


class step_scope(single_threaded_blas):  # lower case: used as ``with step_scope():``
    """A training step's scope: BLAS on one thread (``single_threaded_blas``), and on more
    than one thread zoo's idle workers keep watching for the next job instead of sleeping
    between the step's products (``zoo.kernels.workers.awake``, which says why). One object
    for both: two scopes cost the mlp-small step (about 16 us) 1.3 us, this one 1.0."""

    __slots__ = ("awake",)

    def __enter__(self):
        single_threaded_blas.__enter__(self)
        self.awake = None
        if _COUNT[0] > 1:
            try:
                self.awake = _modules()[1].awake()
                self.awake.__enter__()
            except BaseException:
                single_threaded_blas.__exit__(self)
                raise
        return self

    def __exit__(self, *exc):
        try:
            if self.awake is not None:
                self.awake.__exit__(*exc)
        finally:
            single_threaded_blas.__exit__(self)
        return False


def run_blocks(fn, blocks: int) -> None:
    """``fn(i)`` for each ``i`` in ``range(blocks)`` on up to ``threads()`` threads, BLAS on one.

    Blocks must write disjoint outputs; which thread runs a block never changes what it
    computes.
    """
    from zoo.kernels.fpenv import current_mode
    from zoo.kernels.workers import run_blocks as run

    # Every thread computes its blocks in the posting thread's floating-point mode (denormals
    # flushed or not, ``zoo.kernels.fpenv``): a block's bits must not depend on who ran it.
    mode = current_mode()

    def block_scope():
        return _BlockScope(mode)

    # Held here for the whole job, not only by each thread around its blocks: where the count
    # is the process's (pthreads OpenBLAS, MKL), a thread restoring it when its own blocks end
    # would hand another thread's running block a threaded BLAS.
    with single_threaded_blas():
        run(fn, blocks, _COUNT[0], block_scope)


_MODULES: list = []  # [(fpenv, workers)], imported on first use (not at import: see above)


def _modules():
    if not _MODULES:
        from zoo.kernels import fpenv, workers

        _MODULES.append((fpenv, workers))
    return _MODULES[0]


def run_gemm(cuts, axis: int, a, ta: int, b, tb: int, out, tiled: bool = False,
             parts=None) -> None:
    """``out = op(a) @ op(b)`` by ``zoo.kernels.workers.run_gemm``: the blocks ``cuts`` along
    ``axis``, each one single-threaded BLAS call (``tiled``: float32 ``sgemm`` products), on
    up to ``threads()`` threads (along the inner dimension, ``axis`` 2, blocks after the first
    write their parts of the sum to ``parts``, for the caller to add)."""
    fpenv, workers = _MODULES[0] if _MODULES else _modules()  # a few us a call: kept cheap
    # As in run_blocks: BLAS held for the whole job, and the workers adopt this thread's mode.
    with single_threaded_blas():
        workers.run_gemm(cuts, axis, a, ta, b, tb, out, _COUNT[0], fpenv.current_mode(),
                         tiled, parts)


def run_call(fn: int, args, cuts) -> None:
    """Every block of a native call job (``zoo.kernels.workers.run_call``: a numba cfunc at
    address ``fn`` per block of the bounds ``cuts``) on up to ``threads()`` threads."""
    fpenv, workers = _MODULES[0] if _MODULES else _modules()
    with single_threaded_blas():
        workers.run_call(fn, args, cuts, _COUNT[0], fpenv.current_mode())


def hold_blas_in_worker() -> None:
    """In a thread of zoo's own (a worker): BLAS libraries that keep their thread count per
    thread (OpenMP builds) run on one thread in it from now on.

    Where the count is the process's (pthreads OpenBLAS), the caller of each job holds it to
    one for the whole job (above), and a worker must not touch it: restoring it after its
    blocks could hand another thread's running block a threaded BLAS.
    """
    for lib in blas_libraries():
        if _per_thread(lib) and lib.get_num_threads() != 1:
            lib.set_num_threads(1)


class _BlockScope:
    """What a thread runs a job's blocks in: BLAS on one thread, the poster's float mode."""

    __slots__ = ("blas", "mode")

    def __init__(self, mode: int):
        from zoo.kernels.fpenv import same_mode

        self.blas = single_threaded_blas()
        self.mode = same_mode(mode)

    def __enter__(self):
        self.blas.__enter__()
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)
        return self.blas.__exit__(*exc)
