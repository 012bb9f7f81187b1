"""Loss kernels: each computes the mean loss and its gradient in one pass.

- ``softmax_cross_entropy(logits, labels, grad)``: log-sum-exp with the row maximum subtracted
  (stable for any finite logits), ``grad = (softmax - onehot) / N``;
- ``mse(pred, target, grad)``: mean over all elements, ``grad = 2 (pred - target) / size``;
- ``bce_with_logits(logits, target, grad)``: ``max(z, 0) - z t + log(1 + exp(-|z|))`` (no
  overflow for any z), ``grad = (sigmoid(z) - t) / size``;
- ``softmax(logits)`` for predictions.

Sums are accumulated in float64 whatever the array dtype; the two cross-entropies compile
without fast-math, whose reassociation would undo their cancellation-safe ordering. A kernel
that meets an invalid target
(a label out of range, a BCE target outside [0, 1]) returns -1 instead of scanning the targets
beforehand (two extra passes per step); the wrapper then finds it and raises DataError.
"""

from __future__ import annotations

import numpy as np

from zoo.errors import DataError, describe_array
from zoo.kernels._jit import njit
from zoo.kernels.activations import check_float, output, scalar_exp


# No fast-math where a huge term cancels (m - z[label], max(v, 0) - v y): reassociation could
# add it to the running total first and lose everything else (1e30 + 2001 - 1e30 = 0).
@njit(fastmath=False)
def _softmax_ce(z, labels, grad):
    n, c = z.shape
    for i in range(n):
        if labels[i] < 0 or labels[i] >= c:
            return -1.0
    # Three passes over the whole array, so that the exps run as one vectorised loop: each
    # row shifted by its maximum, the exps in place, then each row's sum, loss and scale.
    top = np.empty(n, z.dtype)
    for i in range(n):
        m = z[i, 0]
        for j in range(1, c):
            m = max(m, z[i, j])
        top[i] = m
        for j in range(c):
            grad[i, j] = z[i, j] - m
    flat = grad.reshape(n * c)
    for k in range(n * c):
        flat[k] = scalar_exp(flat[k])
    inv_n = 1.0 / n
    total = 0.0
    for i in range(n):
        s = 0.0
        for j in range(c):
            s += grad[i, j]
        label = labels[i]
        total += np.log(s) + (top[i] - z[i, label])
        scale = inv_n / s
        for j in range(c):
            grad[i, j] *= scale
        grad[i, label] -= inv_n
    return total * inv_n


@njit(fastmath=False)
def _softmax(z, out):
    n, c = z.shape
    for i in range(n):
        m = z[i, 0]
        for j in range(1, c):
            m = max(m, z[i, j])
        s = 0.0
        for j in range(c):
            e = np.exp(np.float64(z[i, j] - m))
            out[i, j] = e
            s += e
        inv = 1.0 / s
        for j in range(c):
            out[i, j] *= inv


_LANES = 32  # _mse's partial sums


@njit(fastmath=False)
def _squared_errors(p, t, grad, with_grad):
    # Without fast-math (the fused Dense step compiles its own copy: see zoo.kernels.dense),
    # so the sum of squares runs in _LANES partial sums, one per i % _LANES, added in a fixed
    # order at the end: the same bits in every copy, and a loop over the lanes that LLVM still
    # vectorises (each lane its own sum, as a bias gradient's columns).
    pf, tf, gf = p.reshape(p.size), t.reshape(t.size), grad.reshape(grad.size)
    scale = pf.dtype.type(2.0 / pf.size)
    whole = pf.size - pf.size % _LANES
    rows = whole // _LANES
    p2, t2 = pf[:whole].reshape(rows, _LANES), tf[:whole].reshape(rows, _LANES)
    g2 = gf[:whole].reshape(rows, _LANES)
    partial = np.zeros(_LANES)
    for i in range(p2.shape[0]):
        for lane in range(_LANES):
            d = p2[i, lane] - t2[i, lane]
            partial[lane] += np.float64(d) * d
            if with_grad:
                g2[i, lane] = scale * d
    total = 0.0
    for lane in range(_LANES):
        total += partial[lane]
    for i in range(whole, pf.size):
        d = pf[i] - tf[i]
        total += np.float64(d) * d
        if with_grad:
            gf[i] = scale * d
    return total / pf.size


@njit(fastmath=False)
def _mse(p, t, grad):
    return _squared_errors(p, t, grad, True)


@njit(fastmath=False)
def mse_value(p, t):
    """The mean squared error alone, summed as ``_mse`` sums it (for a caller that made the
    gradient ``2 (p - t) / size`` itself: ``zoo.kernels.dense_rows``)."""
    return _squared_errors(p, t, p, False)


@njit(fastmath=False)
def _bce_logits(z, t, grad):
    zf, tf, gf = z.reshape(z.size), t.reshape(t.size), grad.reshape(grad.size)
    inv = 1.0 / zf.size
    total = 0.0
    for i in range(zf.size):
        v = np.float64(zf[i])
        y = np.float64(tf[i])
        if not (y >= 0.0 and y <= 1.0):
            return -1.0
        e = np.exp(-abs(v))
        total += max(v, 0.0) - v * y + np.log1p(e)
        # sigmoid(v) from the same e: 1 / (1 + e) for v >= 0, e / (1 + e) below.
        s = 1.0 / (1.0 + e) if v >= 0 else e / (1.0 + e)
        gf[i] = (s - y) * inv
    return total * inv


# -- public wrappers ------------------------------------------------------------------------
def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray,
                          grad: np.ndarray | None = None, check: bool = True):
    """Mean softmax cross-entropy of ``logits (N, C)`` against int64 ``labels (N,)``.

    Returns ``(loss, grad)`` with ``grad = (softmax(logits) - onehot(labels)) / N`` written into
    ``grad`` (allocated if None). ``check=False`` skips the dtype/shape checks for callers that
    made the arrays themselves; label range is always checked.
    """
    fn = "softmax_cross_entropy"
    if check:
        check_float(fn, "logits", logits)
        if logits.ndim != 2 or logits.shape[0] == 0 or logits.shape[1] == 0:
            raise DataError(f"{fn}: logits must have shape (N, C) with N, C > 0; received "
                            f"{describe_array(logits)}")
        if not isinstance(labels, np.ndarray) or labels.dtype != np.int64 \
                or labels.shape != logits.shape[:1] or not labels.flags.c_contiguous:
            raise DataError(f"{fn}: labels must be a contiguous int64 array of shape "
                            f"({logits.shape[0]},); received {describe_array(labels)}")
        grad = output(fn, grad, logits)
    loss = _softmax_ce(logits, labels, grad)
    if loss < 0:
        c = logits.shape[1]
        bad = labels[(labels < 0) | (labels >= c)]
        raise DataError(f"{fn}: labels must be in [0, {c}); received label {int(bad[0])}")
    return loss, grad


def softmax(logits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Row-wise softmax of ``logits (N, C)`` (stable: the row maximum is subtracted)."""
    check_float("softmax", "logits", logits)
    if logits.ndim != 2:
        raise DataError(f"softmax: logits must have shape (N, C); received "
                        f"{describe_array(logits)}")
    out = output("softmax", out, logits)
    if logits.shape[1]:
        _softmax(logits, out)
    return out


def _check_pair(fn, pred, target, grad, check):
    if check:
        check_float(fn, "pred", pred)
        check_float(fn, "target", target, pred)
        if pred.size == 0:
            raise DataError(f"{fn}: pred is empty; expected at least one element")
        grad = output(fn, grad, pred)
    return grad


def mse(pred: np.ndarray, target: np.ndarray, grad: np.ndarray | None = None,
        check: bool = True):
    """Mean squared error over all elements; returns ``(loss, grad)``."""
    grad = _check_pair("mse", pred, target, grad, check)
    return _mse(pred, target, grad), grad


def bce_with_logits(logits: np.ndarray, target: np.ndarray, grad: np.ndarray | None = None,
                    check: bool = True):
    """Mean binary cross-entropy of ``sigmoid(logits)`` against ``target`` in [0, 1].

    Returns ``(loss, grad)``; the sigmoid is fused in, so large logits neither overflow nor
    lose the gradient.
    """
    grad = _check_pair("bce_with_logits", logits, target, grad, check)
    loss = _bce_logits(logits, target, grad)
    if loss < 0:
        bad = target[~((target >= 0) & (target <= 1))]
        raise DataError(f"bce_with_logits: targets must be in [0, 1]; received "
                        f"{float(bad.flat[0])!r}")
    return loss, grad
