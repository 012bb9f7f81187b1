"""Attention kernels: the masked softmax over attention scores and its backward.

The products around them (``Q K^T``, ``P V`` and the projections) are GEMMs and run in numpy's
BLAS; what is not a GEMM runs here. Scores are ``(B, H, T, S)``: B examples, H heads, T queries
and S keys. Two masks, PyTorch's conventions: ``causal`` hides key j from query i when j > i,
and ``key_padding_mask`` ``(B, S)`` hides the keys marked True (padding) from every query. A
query that sees no key at all gets all-zero weights (PyTorch gives NaN there), so padded
examples cannot poison a batch.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import DataError, describe_array
from zoo.kernels._jit import njit


@njit
def _softmax(scores, causal, padding, use_padding, out):
    b_, h_, t_, s_ = scores.shape
    zero, minus_inf = scores.dtype.type(0), scores.dtype.type(-np.inf)
    for b in range(b_):
        for h in range(h_):
            for t in range(t_):
                row, res = scores[b, h, t], out[b, h, t]
                last = min(t + 1, s_) if causal else s_
                top = minus_inf
                for j in range(last):
                    if not (use_padding and padding[b, j]) and row[j] > top:
                        top = row[j]
                if top == minus_inf:  # nothing visible (or every score is -inf)
                    res[:] = zero
                    continue
                total = 0.0
                for j in range(s_):
                    if j < last and not (use_padding and padding[b, j]):
                        e = np.exp(row[j] - top)
                        res[j] = e
                        total += e
                    else:
                        res[j] = zero
                inv = res.dtype.type(1.0 / total)
                for j in range(last):
                    res[j] *= inv


@njit
def _softmax_backward(p, dp, out):
    b_, h_, t_, s_ = p.shape
    for b in range(b_):
        for h in range(h_):
            for t in range(t_):
                pr, dr, res = p[b, h, t], dp[b, h, t], out[b, h, t]
                dot = 0.0
                for j in range(s_):
                    dot += pr[j] * dr[j]
                d = pr.dtype.type(dot)
                for j in range(s_):
                    res[j] = pr[j] * (dr[j] - d)


# -- public wrappers ------------------------------------------------------------------------
def _check4(fn, name, a, like=None):
    if not isinstance(a, np.ndarray) or a.dtype.char not in "fd" or a.ndim != 4 \
            or not a.flags.c_contiguous \
            or (like is not None and (a.shape != like.shape or a.dtype != like.dtype)):
        want = (f"a C-contiguous {like.dtype} array of shape {like.shape}" if like is not None
                else "a C-contiguous float32 or float64 array (batch, heads, queries, keys)")
        raise DataError(f"{fn}: {name} must be {want}; received {describe_array(a)}")


def masked_softmax(scores, causal=False, key_padding_mask=None, out=None):
    """Softmax over the last axis of ``scores`` (B, H, T, S) with the masks above.

    ``key_padding_mask``: None or a boolean ``(B, S)`` array, True where a key is padding.
    ``out`` may be ``scores`` itself.
    """
    _check4("masked_softmax", "scores", scores)
    out = np.empty_like(scores) if out is None else out
    _check4("masked_softmax", "out", out, scores)
    b, _, _, s = scores.shape
    if key_padding_mask is None:
        padding, use = np.zeros((1, 1), np.bool_), False
    else:
        padding, use = np.asarray(key_padding_mask), True
        if padding.dtype != np.bool_ or padding.shape != (b, s):
            raise DataError(f"masked_softmax: key_padding_mask must be a boolean array of shape "
                            f"({b}, {s}); received {describe_array(key_padding_mask)}")
        padding = np.ascontiguousarray(padding)
    _softmax(scores, bool(causal), padding, use, out)
    return out


def masked_softmax_backward(p, grad, out=None):
    """The gradient w.r.t. the scores, ``p * (grad - sum(grad * p))`` row by row, from the
    softmax output ``p`` (masked entries are 0 in ``p``, so they get 0)."""
    _check4("masked_softmax_backward", "p", p)
    _check4("masked_softmax_backward", "grad", grad, p)
    out = np.empty_like(p) if out is None else out
    _check4("masked_softmax_backward", "out", out, p)
    _softmax_backward(p, grad, out)
    return out
