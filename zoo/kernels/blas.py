"""zoo's large GEMMs: several BLAS threads when they pay, the same bits whatever the count.

OpenBLAS spreads a GEMM over threads by splitting its rows and columns, which leaves each
output's sum as it was; but once the inner dimension K passes a few hundred, its threaded
driver also cuts K into blocks differently from its serial driver, and a different blocking
rounds differently (float32 on this project's machines: K <= 448 gives the same bits, K = 464
does not). zoo chooses the thread count while training, by measurement
(``zoo.training.threads``), and promises the same result for the same seed and bit-exact
resume whatever the load; so a ``Gemm`` cuts K itself into chunks short enough that both
drivers keep each chunk whole, and adds the chunks up in a fixed order. How short is found
on this machine, for each dtype, the first time it is needed (``k_chunk``): random products
computed with one thread and with several must agree bit for bit.

The thread count a ``Gemm`` runs with is this module's ``threads()`` (1 unless a trainer's
governor or ``ZOO_BLAS_THREADS`` raised it). It is set for the call and restored after it
with OpenBLAS's ``openblas_set_num_threads_local`` (0.3.27+), which returns the previous
count; in the pthreads builds numpy ships it sets the process's count, which is safe because
zoo runs one training step at a time per process. So every other BLAS call (a plugin's own
``np.dot``) runs with the process's count: 1 under the ``zoo`` command. Without that
function (another BLAS, an older OpenBLAS) GEMMs run as numpy runs them.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os

import numpy as np

from zoo.errors import ConfigError

# Below this many multiply-adds (M*K*N) a GEMM runs as it comes: OpenBLAS would not use a
# second thread for it, and the call's own overhead would show.
MIN_THREADED_WORK = 1 << 20
# Chunk lengths tried by ``k_chunk``, longest first (fewer chunks, fewer additions).
CHUNK_CANDIDATES = (448, 384, 256, 192, 128, 64)

_SETTER = []  # [openblas_set_num_threads_local or None], looked up once
_THREADS = [1]  # threads a Gemm may use now
_CHUNKS: dict = {}  # {dtype: verified chunk length, or 0 if none agrees}


def local_thread_setter():
    """``openblas_set_num_threads_local`` of the OpenBLAS numpy uses, or None.

    It sets the BLAS thread count (of the calling thread in OpenMP builds, of the process in
    pthreads builds) and returns the previous one.
    """
    if _SETTER:
        return _SETTER[0]
    here = os.path.dirname(np.__file__)
    patterns = [os.path.join(here, os.pardir, "numpy.libs", "*openblas*"),
                os.path.join(here, ".dylibs", "*openblas*")]
    try:  # show_config's layout is not a stable API
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        if "openblas" in str(blas.get("name", "")).lower() and blas.get("lib directory"):
            patterns.append(os.path.join(blas["lib directory"], "*openblas*"))
    except (AttributeError, KeyError, TypeError, ValueError):
        pass
    setter = None
    for path in (p for pattern in patterns for p in sorted(glob.glob(pattern))):
        try:
            fn = ctypes.CDLL(path).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        fn.argtypes = [ctypes.c_int]
        fn.restype = ctypes.c_int
        setter = fn
        break
    _SETTER.append(setter)
    return setter


@contextlib.contextmanager
def blas_threads(n: int):
    """Run BLAS calls with ``n`` threads inside the block (if the BLAS lets zoo set it)."""
    setter = local_thread_setter()
    previous = setter(n) if setter is not None else None
    try:
        yield
    finally:
        if setter is not None:
            setter(previous)


def single_threaded():
    """Hold numpy's OpenBLAS to one thread inside the block (a no-op without the means).

    Small LAPACK/BLAS calls (the QR of an orthogonal initialisation) otherwise spin up
    threads that, on a core busy with another process, make them 100x slower.
    """
    return blas_threads(1)


def threads() -> int:
    """How many threads a ``Gemm`` uses now."""
    return _THREADS[0]


def set_threads(n: int) -> None:
    """Let every ``Gemm`` use ``n`` threads from now on (1: single-threaded)."""
    _THREADS[0] = max(1, int(n))


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
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def k_chunk(dtype) -> int:
    """The longest inner dimension whose GEMMs give the same bits on one thread and on several.

    0 if none does (or threads cannot be set per call): then a ``Gemm`` never uses more than
    one thread. The answer depends on the BLAS build and the CPU only, never on timing or
    load, so results stay reproducible on a machine. Measured once per dtype and process.
    """
    dtype = np.dtype(dtype)
    if dtype in _CHUNKS:
        return _CHUNKS[dtype]
    chunk = 0
    if local_thread_setter() is not None:
        rng = np.random.default_rng(20261129)
        counts = sorted({2, max(2, available_cpus())})
        for length in CHUNK_CANDIDATES:
            a = rng.standard_normal((128, length)).astype(dtype)
            b = rng.standard_normal((length, 256)).astype(dtype)
            at = np.ascontiguousarray(a.T).T  # the transposed operand of a weight gradient
            with blas_threads(1):
                want = (a @ b, at @ b)
            agree = True
            for n in counts:
                with blas_threads(n):
                    agree &= all(np.array_equal(w, g) for w, g in zip(want, (a @ b, at @ b)))
            if agree:
                chunk = length
                break
    _CHUNKS[dtype] = chunk
    return chunk


class Gemm:
    """``out = a @ b`` for one shape ``(m, k) @ (k, n)``, the same bits on any thread count.

    Made once per shape by a layer (it keeps a scratch buffer), called every step. ``a`` and
    ``b`` may be transposed views; ``out`` is C-contiguous ``(m, n)``.
    """

    def __init__(self, m: int, k: int, n: int, dtype):
        self.shape = (m, k, n)
        chunk = k_chunk(dtype)
        self.threaded = chunk > 0 and m * k * n >= MIN_THREADED_WORK
        pieces = -(-k // chunk) if chunk and k > chunk else 1
        cuts = [k * i // pieces for i in range(pieces + 1)]
        self.chunks = list(zip(cuts[:-1], cuts[1:]))
        self.scratch = np.empty((m, n), dtype) if pieces > 1 else None

    def __call__(self, a, b, out):
        # Set even for one thread: the process's own count may be higher (zoo as a library).
        setter = _SETTER[0] if self.threaded else None
        previous = setter(_THREADS[0]) if setter is not None else None
        try:
            if self.scratch is None:
                np.matmul(a, b, out=out)
            else:
                (lo, hi), *rest = self.chunks
                np.matmul(a[:, lo:hi], b[lo:hi], out=out)
                for lo, hi in rest:
                    np.matmul(a[:, lo:hi], b[lo:hi], out=self.scratch)
                    np.add(out, self.scratch, out=out)
        finally:
            if setter is not None:
                setter(previous)
        return out


def gemm_or_none(m: int, k: int, n: int, dtype) -> Gemm | None:
    """A ``Gemm`` for this shape, or None where a plain ``np.dot`` is as good and as exact.

    A plain product is exact on any thread count when K fits in one chunk (or threads cannot
    be set per call); and below ``MIN_THREADED_WORK`` a second thread is never used anyway.
    """
    chunk = k_chunk(dtype)
    if chunk == 0 or (k <= chunk and m * k * n < MIN_THREADED_WORK):
        return None
    return Gemm(m, k, n, dtype)
