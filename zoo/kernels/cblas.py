"""numpy's own ``cblas_sgemm`` / ``cblas_dgemm``, callable from inside numba kernels.

The recurrent time loops alternate a small GEMM (64 x 128 x 128: ~15 us) with a fused cell
(~5 us). Driven from Python, each step also holds the GIL for a few microseconds (the
``np.matmul`` and kernel dispatch), and two threads running row blocks then keep waking each
other on the GIL, so a second core gained nothing. Calling the very function ``np.matmul``
calls, from a numba kernel that runs a block's whole time loop without the GIL, removes both
costs, and gives the same bits as ``np.matmul`` (checked once per process and dtype: a
product through this path must equal numpy's bit for bit, or the path is not used).

The function is found where numpy's BLAS lives (``threadpoolctl`` reports the library file),
and only in OpenBLAS, whose ``openblas_get_config`` says whether its integers are 64-bit
(numpy's wheels: ``scipy_cblas_sgemm64_``, ILP64) or 32-bit (``cblas_sgemm``, e.g. a Linux
distribution's numpy). Elsewhere (MKL, BLIS, Accelerate) ``gemm`` falls back to plain numba
loops: the same results on any thread count, at about half BLAS's speed.

A kernel receives the function's address and the integer dtype as arguments (``Gemm``), so
numba's cache stays valid across processes; ``gemm(f, a, b, c)`` computes ``c = a @ b`` for
C-contiguous 2-D ``a``, ``b``, ``c`` (row slices of larger arrays included).
"""

from __future__ import annotations

import ctypes

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload
from numba.np.numpy_support import as_dtype

from zoo.kernels import threads
from zoo.kernels._jit import njit

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112  # CBLAS enum values

_FOUND: dict = {}  # {dtype: (address, integer dtype) or None}


@intrinsic
def _call(typingctx, address, order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta,
          c, ldc):
    """Call the C function at ``address`` with these arguments (pointers as integers)."""
    sig = types.void(address, order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta,
                     c, ldc)

    def codegen(context, builder, signature, args):
        fnty = ir.FunctionType(ir.VoidType(),
                               [context.get_value_type(t) for t in signature.args[1:]])
        builder.call(builder.inttoptr(args[0], fnty.as_pointer()), args[1:])
        return context.get_dummy_value()

    return sig, codegen


def _like(sample, x):
    """``x`` as the scalar type of ``sample``, or of an array's elements (kernels only)."""
    return type(sample)(x)


@overload(_like, inline="always")
def _like_typed(sample, x):
    cast = as_dtype(getattr(sample, "dtype", sample)).type
    return lambda sample, x: cast(x)


@njit
def _gemm_loops(a, b, c):
    """``c = a @ b`` in plain loops (vectorised along c's rows), where no BLAS can be called."""
    for r in range(a.shape[0]):
        cr = c[r]
        cr[:] = 0
        for p in range(a.shape[1]):
            arp = a[r, p]
            bp = b[p]
            for j in range(cr.shape[0]):
                cr[j] += arp * bp[j]


@njit
def gemm(f, a, b, c):
    """``c = a @ b``: ``f`` is ``gemm_function(dtype)``, ``(address, an integer of BLAS's
    width)``; rows of ``a``, ``b``, ``c`` may be strided, their elements not."""
    address, i = f
    if address == 0:
        _gemm_loops(a, b, c)
        return
    m, k = a.shape
    n = b.shape[1]
    _call(address, np.int32(ROW_MAJOR), np.int32(NO_TRANS), np.int32(NO_TRANS), _like(i, m),
          _like(i, n), _like(i, k), _like(c, 1), a.ctypes.data,
          _like(i, a.strides[0] // a.itemsize), b.ctypes.data,
          _like(i, b.strides[0] // b.itemsize), _like(c, 0), c.ctypes.data,
          _like(i, c.strides[0] // c.itemsize))


@njit
def gemm_trans(f, a, trans_a, b, trans_b, c):
    """``c = op(a) @ op(b)``, ``op`` transposing where ``trans_*`` is true, as numpy calls BLAS
    for a transposed view (``np.dot(x.T, dz)``): ``a``, ``b``, ``c`` are C-contiguous as
    stored. Only with BLAS (``f``'s address not 0): a caller checks ``gemm_function`` first."""
    address, i = f
    m = a.shape[1] if trans_a else a.shape[0]
    k = a.shape[0] if trans_a else a.shape[1]
    n = b.shape[0] if trans_b else b.shape[1]
    _call(address, np.int32(ROW_MAJOR), np.int32(TRANS if trans_a else NO_TRANS),
          np.int32(TRANS if trans_b else NO_TRANS), _like(i, m), _like(i, n), _like(i, k),
          _like(c, 1), a.ctypes.data, _like(i, a.shape[1]), b.ctypes.data,
          _like(i, b.shape[1]), _like(c, 0), c.ctypes.data, _like(i, c.shape[1]))


def _find(dtype):
    letter = "s" if dtype == np.float32 else "d"
    for lib in threads.blas_libraries():
        if lib.internal_api != "openblas":
            continue
        try:
            dll = ctypes.CDLL(lib.filepath)
        except OSError:
            continue
        configs = [getattr(dll, name, None) for name in (
            "openblas_get_config", "scipy_openblas_get_config64_", "openblas_get_config64_",
            "scipy_openblas_get_config")]
        configs = [fn for fn in configs if fn is not None]
        if not configs:
            continue
        configs[0].restype = ctypes.c_char_p
        wide = b"USE64BITINT" in configs[0]()
        names = ([f"scipy_cblas_{letter}gemm64_", f"cblas_{letter}gemm64_"] if wide
                 else [f"scipy_cblas_{letter}gemm", f"cblas_{letter}gemm"])
        for name in names:
            fn = getattr(dll, name, None)
            if fn is not None:
                address = ctypes.cast(fn, ctypes.c_void_p).value
                return address, (np.int64 if wide else np.int32)(0)
    return None


def gemm_function(dtype) -> tuple:
    """``(address, an integer of BLAS's width)`` of numpy's BLAS GEMM for ``dtype``; the
    address is 0 where zoo cannot call it safely (``gemm`` then runs plain loops). Verified
    once: a product through it must equal ``np.matmul``'s bit for bit."""
    dtype = np.dtype(dtype)
    if dtype not in _FOUND:
        found = _find(dtype)
        if found is not None:
            rng = np.random.default_rng(0)
            a = rng.standard_normal((40, 67)).astype(dtype)
            b = rng.standard_normal((67, 35)).astype(dtype)
            c = np.empty((40, 35), dtype)
            with threads.single_threaded_blas():
                gemm(found, a[3:], b, c[3:])
                if not np.array_equal(c[3:], np.matmul(a[3:], b)):
                    found = None
        _FOUND[dtype] = found or (0, np.int64(0))
    return _FOUND[dtype]


@njit
def gemm_at(address, width, trans_a, trans_b, m, n, k, a, lda, b, ldb, c, ldc, double):
    """``C = op(A) @ op(B)`` through BLAS's GEMM at ``address`` (``gemm_function``), on raw
    row-major data: ``a``, ``b``, ``c`` are addresses, ``lda``... their row strides in
    elements, ``op`` a transpose where ``trans_a``/``trans_b``; ``double``: float64, else
    float32; ``width`` a sample of BLAS's integer type."""
    ta = np.int32(TRANS if trans_a else NO_TRANS)
    tb = np.int32(TRANS if trans_b else NO_TRANS)
    if double:
        one, zero = np.float64(1), np.float64(0)
        _call(address, np.int32(ROW_MAJOR), ta, tb, _like(width, m), _like(width, n),
              _like(width, k), one, a, _like(width, lda), b, _like(width, ldb), zero, c,
              _like(width, ldc))
    else:
        one32, zero32 = np.float32(1), np.float32(0)
        _call(address, np.int32(ROW_MAJOR), ta, tb, _like(width, m), _like(width, n),
              _like(width, k), one32, a, _like(width, lda), b, _like(width, ldb), zero32, c,
              _like(width, ldc))
