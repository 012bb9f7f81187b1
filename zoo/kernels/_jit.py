"""The one place numba is configured: cache directory, compile flags, compile-time accounting.

Every kernel module does ``from zoo.kernels._jit import njit, prange``.
"""

import hashlib
import os
import tempfile
import time


def _writable_dir(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, delete=True)
        probe.close()
        return True
    except OSError:
        return False


def _choose_cache_dir() -> str:
    """A cache directory that works even when zoo is installed read-only.

    numba's default writes ``__pycache__`` beside the source file; on a read-only install
    (system site-packages, containers) that fails, so zoo keeps its own cache under the user's
    cache home. ``ZOO_CACHE_DIR`` or ``NUMBA_CACHE_DIR`` override it.
    """
    for candidate in (
        os.environ.get("ZOO_CACHE_DIR"),
        os.environ.get("NUMBA_CACHE_DIR"),
        os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                     "zoo", "numba"),
        os.path.join(tempfile.gettempdir(),
                     f"zoo-numba-{os.getuid() if hasattr(os, 'getuid') else 0}"),
    ):
        if candidate and _writable_dir(candidate):
            return candidate
    return tempfile.mkdtemp(prefix="zoo-numba-")


def sources_digest(here: str = os.path.dirname(os.path.abspath(__file__))) -> str:
    """A digest of every kernel module's source (the ``.py`` files in ``here``).

    numba revalidates a cached kernel against its own file only, yet a kernel compiles in the
    kernels it calls from other files (``dense_stack`` calls ``dense``'s): after such a file
    changes (a ``git checkout``, an editable install), the caller's cached machine code would
    still run the old callee, or crash on a changed data layout. One cache directory per
    version of all the kernel sources rules that out; reading them costs about a millisecond.
    """
    digest = hashlib.sha1()
    for name in sorted(os.listdir(here)):
        if name.endswith(".py"):
            digest.update(name.encode())
            with open(os.path.join(here, name), "rb") as source:
                digest.update(source.read())
    return digest.hexdigest()[:16]


CACHE_DIR = os.path.join(_choose_cache_dir(), f"kernels-{sources_digest()}")
os.makedirs(CACHE_DIR, exist_ok=True)
os.environ["NUMBA_CACHE_DIR"] = CACHE_DIR  # numba reads it when first imported

import numba  # noqa: E402
from numba.core import event as _event  # noqa: E402

numba.config.CACHE_DIR = CACHE_DIR  # type: ignore[attr-defined]  # numba read it already

# Fast-math without 'nnan'/'ninf': a NaN must still reach the loss so the non_finite
# criterion can stop the run.
FASTMATH = frozenset({"nsz", "arcp", "contract", "afn", "reassoc"})
# Without 'reassoc' as well: sums as written. With it, LLVM regroups ``a + b + c`` as the code
# around it suggests, and that code changes with inlining: a kernel compiled now inlines its
# callees' IR, one loaded from numba's cache links their cached IR, so the same training
# gave other bits on a cold cache than on a warm one (the lstm's cell, its input projected
# by a GEMM). For kernels inlined into others that compute a model's values.
ORDERED = FASTMATH - {"reassoc"}

prange = numba.prange

_compile_time = [0.0]


class _CompileTimer(_event.Listener):
    """Adds up wall time of outermost compilations (a kernel compiles the ones it calls)."""

    depth = 0

    def on_start(self, event):
        if self.depth == 0:
            self._t0 = time.perf_counter()
        self.depth += 1

    def on_end(self, event):
        self.depth -= 1
        if self.depth == 0:
            _compile_time[0] += time.perf_counter() - self._t0


_TIMER = _CompileTimer()
_event.register("numba:compile", _TIMER)


def _timed_cache_load(load):
    """Count loading a kernel from the on-disk cache as compile time too.

    numba fires no event for cache hits, yet loading dozens of cached kernels is most of a
    warm start's first-step cost, so ``compile_time_s`` includes it.
    """
    def load_overload(self, sig, target_context):
        if _TIMER.depth:
            return load(self, sig, target_context)
        t0 = time.perf_counter()
        try:
            return load(self, sig, target_context)
        finally:
            _compile_time[0] += time.perf_counter() - t0

    return load_overload


try:
    from numba.core.caching import Cache as _Cache

    _Cache.load_overload = _timed_cache_load(_Cache.load_overload)  # type: ignore[method-assign]
except (ImportError, AttributeError):  # a numba without this internal: cache loads go uncounted
    pass


def compile_seconds() -> float:
    return _compile_time[0]


def njit(fn=None, *, parallel=False, fastmath=True):
    """``numba.njit`` with zoo's policy: cached, no GIL, fast-math as above, lazy compile.
    ``fastmath``: True (``FASTMATH``), False, or a set of flags (``ORDERED``)."""
    # error_model="numpy": float division by zero gives inf/nan instead of a Python-style
    # ZeroDivisionError check, whose branch stops LLVM from vectorising any loop that divides.
    options = dict(cache=True, nogil=True, parallel=parallel, error_model="numpy",
                   fastmath=set(FASTMATH if fastmath is True else fastmath or ()) or False)
    if fn is None:
        return lambda f: numba.njit(**options)(f)
    return numba.njit(**options)(fn)
