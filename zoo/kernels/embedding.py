"""Embedding lookup (a gather of rows) and its backward (a scatter-add of rows).

``indices`` are int64 arrays of any shape, already checked to lie in ``[0, num_embeddings)``.
The weight gradient is overwritten: rows no index points at get zero, a row looked up k times
gets the sum of its k output gradients, and the ``padding_idx`` row (if >= 0) stays zero, as
in PyTorch.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import DataError, describe_array
from zoo.kernels._jit import njit


@njit
def _gather(weight, indices, out):
    for i in range(indices.size):
        out[i, :] = weight[indices[i]]


@njit
def _scatter_add(grad, indices, padding_idx, dweight):
    dweight[:] = 0
    for i in range(indices.size):
        row = indices[i]
        if row != padding_idx:
            dweight[row, :] += grad[i]


def _check(fn, name, a, shape, dtype):
    if not isinstance(a, np.ndarray) or a.shape != shape or a.dtype != dtype \
            or not a.flags.c_contiguous:
        raise DataError(f"{fn}: {name} must be a C-contiguous {dtype} array of shape {shape}; "
                        f"received {describe_array(a)}")


def lookup(weight, indices, out=None):
    """``weight[indices]``: shape ``(*indices.shape, embedding_dim)``."""
    if not isinstance(weight, np.ndarray) or weight.ndim != 2 or weight.dtype.char not in "fd":
        raise DataError(f"lookup: weight must be a float32 or float64 matrix; received "
                        f"{describe_array(weight)}")
    flat = np.ascontiguousarray(indices, dtype=np.int64).reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= len(weight)):
        raise DataError(f"lookup: indices must lie in [0, {len(weight)}); received values from "
                        f"{flat.min()} to {flat.max()}")
    shape = (*np.shape(indices), weight.shape[1])
    out = np.empty(shape, weight.dtype) if out is None else out
    _check("lookup", "out", out, shape, weight.dtype)
    _gather(np.ascontiguousarray(weight), flat, out.reshape(flat.size, weight.shape[1]))
    return out


def lookup_backward(grad, indices, num_embeddings, padding_idx=-1, out=None):
    """The weight gradient of ``lookup``: ``grad`` rows summed into the rows they came from."""
    flat = np.ascontiguousarray(indices, dtype=np.int64).reshape(-1)
    if not isinstance(grad, np.ndarray) or grad.dtype.char not in "fd" \
            or grad.shape[:-1] != np.shape(indices):
        raise DataError(f"lookup_backward: grad must be a float array of shape "
                        f"{(*np.shape(indices), 'embedding_dim')}; received "
                        f"{describe_array(grad)}")
    if flat.size and (flat.min() < 0 or flat.max() >= num_embeddings):
        raise DataError(f"lookup_backward: indices must lie in [0, {num_embeddings})")
    dim = grad.shape[-1]
    out = np.empty((num_embeddings, dim), grad.dtype) if out is None else out
    _check("lookup_backward", "out", out, (num_embeddings, dim), grad.dtype)
    g = np.ascontiguousarray(grad).reshape(flat.size, dim)
    _scatter_add(g, flat, int(padding_idx), out)
    return out
