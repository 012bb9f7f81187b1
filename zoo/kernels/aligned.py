"""Arrays whose data starts on a cache-line boundary (64 bytes).

numpy's allocator aligns large arrays to 16 bytes only. A kernel that reads and writes whole
64-byte vectors (AVX-512: ``zoo.kernels.packed``'s register tile, the recurrent cells) along
rows that start 16 bytes into a cache line splits every access over two lines. Measured on
the lstm workload, one core: the step products ran 8-10% faster against packed weights that
start on a line, and the backward cell 16-27% faster on aligned rows. Rows stay aligned when
their length in bytes is a multiple of 64 (128 float32 units, say); otherwise only the first
is, and nothing is lost against numpy's arrays.

The arrays are views of a slightly larger byte buffer: C-contiguous, writeable, the buffer
kept alive by the view.
"""

from __future__ import annotations

import math
import threading

import numpy as np

LINE = 64  # bytes in a cache line on x86-64 and most ARM cores
PAGE = 4096  # bytes in a memory page


def empty(shape, dtype=np.float32, boundary: int = LINE) -> np.ndarray:
    """Like ``np.empty``, with the data starting on a ``boundary``-byte boundary: a cache line,
    or a page for work arrays cut into one row per thread (``zoo.kernels.recurrent_native``)."""
    if not isinstance(shape, tuple):
        shape = tuple(shape) if hasattr(shape, "__len__") else (int(shape),)
    dtype = np.dtype(dtype)
    size = math.prod(shape) * dtype.itemsize
    raw = np.empty(size + boundary, np.uint8)
    # The address through __array_interface__: half the time of ``raw.ctypes.data`` (1 us),
    # which matters to kernels that make their work arrays on every call.
    start = -raw.__array_interface__["data"][0] % boundary
    return raw[start:start + size].view(dtype).reshape(shape)


def zeros(shape, dtype=np.float32) -> np.ndarray:
    """Like ``np.zeros``, aligned as ``empty``."""
    out = empty(shape, dtype)
    out.fill(0)
    return out


_KEPT = threading.local()  # .arrays: {(name, shape, dtype): array}, this thread's
# Arrays a thread keeps at most: past that it forgets them all and starts again (an array in
# use stays alive with its user), so a process that trains model after model of other sizes
# does not keep the arrays of every one.
MOST_KEPT = 32


def kept(name, shape: tuple, dtype=np.float32, boundary: int = LINE) -> np.ndarray:
    """An aligned array this thread keeps for ``name``: the same one on every call with the
    same ``name``, ``shape`` and ``dtype``, its contents whatever the last user left.

    For work arrays a kernel needs on every call and drops at its end. A fresh array of a few
    hundred kilobytes comes from the C library, which grows its heap for it and gives the
    pages back at the next free, so every call paid the page faults again (on the lstm
    workload: two 256 KB recurrent-gradient parts and two packed weight copies a pass, five
    ``brk`` calls a step). One per thread: concurrent blocks never share one. A caller's
    ``name`` says which of its arrays it is (a block's bounds, say), so two arrays in use at
    once never share one either. ``boundary`` as for ``empty``.
    """
    arrays = getattr(_KEPT, "arrays", None)
    if arrays is None:
        arrays = _KEPT.arrays = {}
    key = (name, tuple(shape), np.dtype(dtype).str, boundary)
    out = arrays.get(key)
    if out is None:
        if len(arrays) >= MOST_KEPT:
            arrays.clear()
        out = arrays[key] = empty(tuple(shape), dtype, boundary)
    return out


def copy(a: np.ndarray) -> np.ndarray:
    """An aligned, C-contiguous copy of ``a``."""
    out = empty(a.shape, a.dtype)
    out[...] = a
    return out
