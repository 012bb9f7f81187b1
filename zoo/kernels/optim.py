"""Optimizer update kernels: in place, one pass over a parameter, its gradient and its state.

Every array of one call has the same shape and dtype and is C-contiguous; any shape works (the
trainer passes all parameters as one flat array, so a step is one call). Hyperparameters arrive
as Python floats and are cast to the arrays' dtype inside, so float32 stays float32. The
formulas follow PyTorch's (``torch.optim``), so hyperparameters mean the same thing:

- SGD with momentum ``mu``, L2 weight decay ``wd``: ``g += wd p; v = mu v + g;
  p -= lr (g + mu v if nesterov else v)`` (Sutskever et al., ICML 2013);
- RMSProp: ``s = alpha s + (1 - alpha) g^2; u = g / (sqrt(s) + eps);`` with momentum
  ``b = mu b + u; p -= lr b`` else ``p -= lr u`` (Hinton, Coursera lecture 6e, 2012);
- Adam: ``m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
  p -= lr / c1 * m / (sqrt(v) / sqrt(c2) + eps)`` with ``c = 1 - beta^t`` (Kingma and Ba,
  https://arxiv.org/abs/1412.6980), L2 decay added to ``g``, or with ``decoupled=True``
  AdamW's ``p *= 1 - lr wd`` first (Loshchilov and Hutter, https://arxiv.org/abs/1711.05101).
"""

from __future__ import annotations

import contextlib
import math
import threading

import numpy as np
from numba import carray, cfunc, types

from zoo.errors import DataError, describe_array
from zoo.kernels import atomics, threads, workers
from zoo.kernels._jit import njit

# A large update is cut into chunks that zoo's threads share (``zoo.kernels.threads``): at
# least CHUNK elements each (about 20 us of SGD with momentum on one core), a power of two of
# them up to MAX_CHUNKS, bounds on multiples of ALIGN elements. The chunks depend on the size
# alone and one thread runs the very same calls in turn, so the bits never depend on the
# thread count; and every element gets the same arithmetic whichever chunk holds it (ALIGN, a
# multiple of any vector width times unroll, even keeps it in the same part of the compiled
# loop, its vectorised body or its remainder, as in an update in one piece).
# Few large chunks beat many small ones: a gradient is written by the thread that computed
# its block of the product, and a chunk another core updates must first come across from
# that core's cache (the mlp's update on two threads: 4 chunks 122 us, 2 chunks 95 us, in one
# piece 165 us).
CHUNK = 65536
MAX_CHUNKS = 8
ALIGN = 1024


def chunk_bounds(size: int) -> list[int]:
    """The bounds of the chunks a ``size``-element update is cut into: ``[0, ..., size]``
    (unless a ``chunk_plans`` scope gives the array's own)."""
    chunks = 1
    while 2 * chunks <= MAX_CHUNKS and size >= 2 * chunks * CHUNK:
        chunks *= 2
    inner = [size * i // (chunks * ALIGN) * ALIGN for i in range(1, chunks)]
    return [0, *inner, size]


# Without fast-math: the trainer's update runs this kernel directly, inside the chunk cfuncs
# below, and inside the fused Dense step (``zoo.kernels.dense_stack``), and fast-math would
# let LLVM round each compiled copy its own way (``mu * v + g`` fused in one copy and not in
# another). IEEE arithmetic in the order written gives every copy the same bits.
@njit(fastmath=False)
def _sgd(p, g, v, lr, momentum, nesterov, weight_decay):
    pf, gf, vf = p.reshape(p.size), g.reshape(g.size), v.reshape(v.size)
    dt = pf.dtype.type
    lr, mu, wd = dt(lr), dt(momentum), dt(weight_decay)
    if momentum == 0:
        for i in range(pf.size):
            pf[i] -= lr * (gf[i] + wd * pf[i])
    elif nesterov:
        for i in range(pf.size):
            d = gf[i] + wd * pf[i]
            b = mu * vf[i] + d
            vf[i] = b
            pf[i] -= lr * (d + mu * b)
    else:
        for i in range(pf.size):
            b = mu * vf[i] + gf[i] + wd * pf[i]
            vf[i] = b
            pf[i] -= lr * b


@njit
def _rmsprop(p, g, s, b, lr, alpha, eps, momentum, weight_decay):
    pf, gf, sf, bf = p.reshape(p.size), g.reshape(g.size), s.reshape(s.size), b.reshape(b.size)
    dt = pf.dtype.type
    lr, a, a1, eps, mu, wd = dt(lr), dt(alpha), dt(1 - alpha), dt(eps), dt(momentum), \
        dt(weight_decay)
    if momentum == 0:
        for i in range(pf.size):
            d = gf[i] + wd * pf[i]
            sq = a * sf[i] + a1 * d * d
            sf[i] = sq
            pf[i] -= lr * d / (np.sqrt(sq) + eps)
    else:
        for i in range(pf.size):
            d = gf[i] + wd * pf[i]
            sq = a * sf[i] + a1 * d * d
            sf[i] = sq
            u = mu * bf[i] + d / (np.sqrt(sq) + eps)
            bf[i] = u
            pf[i] -= lr * u


@njit
def _adam(p, g, m, v, step_size, beta1, beta2, eps, inv_sqrt_c2, l2, decay):
    pf, gf, mf, vf = p.reshape(p.size), g.reshape(g.size), m.reshape(m.size), v.reshape(v.size)
    dt = pf.dtype.type
    step, b1, b2, eps, r = dt(step_size), dt(beta1), dt(beta2), dt(eps), dt(inv_sqrt_c2)
    c1, c2, l2, keep = dt(1 - beta1), dt(1 - beta2), dt(l2), dt(1 - decay)
    for i in range(pf.size):
        w = pf[i] * keep
        d = gf[i] + l2 * pf[i]
        mi = b1 * mf[i] + c1 * d
        vi = b2 * vf[i] + c2 * d * d
        mf[i] = mi
        vf[i] = vi
        pf[i] = w - step * mi / (np.sqrt(vi) * r + eps)


@njit
def _squared_norm(g):
    gf = g.reshape(g.size)
    total = 0.0
    for i in range(gf.size):
        x = np.float64(gf[i])
        total += x * x
    return total


@njit
def _scale(g, factor):
    gf = g.reshape(g.size)
    f = gf.dtype.type(factor)
    for i in range(gf.size):
        gf[i] *= f


# -- public wrappers ------------------------------------------------------------------------
def _check(fn: str, arrays: dict) -> None:
    """Every array a contiguous float32/float64 array, all of the first one's shape and dtype."""
    first_name, first = next(iter(arrays.items()))
    for name, a in arrays.items():
        ok = isinstance(a, np.ndarray) and a.dtype.char in "fd" and a.flags.c_contiguous \
            and a.shape == first.shape and a.dtype == first.dtype
        if not ok:
            raise DataError(f"{fn}: {name} must be a C-contiguous float32/float64 array of "
                            f"the shape and dtype of {first_name} ({describe_array(first)}); "
                            f"received {describe_array(a)}")
    if not first.flags.writeable:
        raise DataError(f"{fn}: {first_name} must be writeable")


def sgd(param, grad, velocity=None, *, lr, momentum=0.0, nesterov=False, weight_decay=0.0,
        check=True) -> None:
    """One SGD step in place; ``velocity`` is required when ``momentum > 0``."""
    if check:
        arrays = {"param": param, "grad": grad}
        if momentum:
            arrays["velocity"] = velocity
        _check("sgd", arrays)
    v = param if velocity is None else velocity
    if param.size < 2 * CHUNK:  # one chunk: the kernel itself (a small model's step is short)
        _sgd(param, grad, v, lr, momentum, nesterov, weight_decay)
    else:
        _update(_sgd, "sgd", (param, grad, v), (lr, momentum, nesterov, weight_decay))


def rmsprop(param, grad, square_avg, momentum_buffer=None, *, lr, alpha=0.99, eps=1e-8,
            momentum=0.0, weight_decay=0.0, check=True) -> None:
    """One RMSProp step in place; ``momentum_buffer`` is required when ``momentum > 0``."""
    if check:
        arrays = {"param": param, "grad": grad, "square_avg": square_avg}
        if momentum:
            arrays["momentum_buffer"] = momentum_buffer
        _check("rmsprop", arrays)
    b = param if momentum_buffer is None else momentum_buffer
    if param.size < 2 * CHUNK:
        _rmsprop(param, grad, square_avg, b, lr, alpha, eps, momentum, weight_decay)
    else:
        _update(_rmsprop, "rmsprop", (param, grad, square_avg, b),
                (lr, alpha, eps, momentum, weight_decay))


def adam(param, grad, exp_avg, exp_avg_sq, *, lr, step, beta1=0.9, beta2=0.999, eps=1e-8,
         weight_decay=0.0, decoupled=False, check=True) -> None:
    """One Adam step in place (``step`` counts from 1, for the bias corrections).

    ``decoupled=True`` is AdamW: the weights shrink by ``lr * weight_decay`` instead of the
    decay being added to the gradient.
    """
    if check:
        _check("adam", {"param": param, "grad": grad, "exp_avg": exp_avg,
                        "exp_avg_sq": exp_avg_sq})
    c1 = 1.0 - beta1 ** step
    c2 = 1.0 - beta2 ** step
    l2, decay = (0.0, lr * weight_decay) if decoupled else (weight_decay, 0.0)
    if param.size < 2 * CHUNK:
        _adam(param, grad, exp_avg, exp_avg_sq, lr / c1, beta1, beta2, eps,
              1.0 / math.sqrt(c2), l2, decay)
    else:
        _update(_adam, "adam", (param, grad, exp_avg, exp_avg_sq),
                (lr / c1, beta1, beta2, eps, 1.0 / math.sqrt(c2), l2, decay))


def squared_norm(arrays) -> float:
    """Sum of squares of every element of ``arrays`` (a list), accumulated in float64."""
    total = 0.0
    for i, a in enumerate(arrays):
        _check("squared_norm", {f"arrays[{i}]": a})
        total += _squared_norm(a)
    return total


def scale_(arrays, factor: float) -> None:
    """Multiply every array of ``arrays`` by ``factor`` in place."""
    for i, a in enumerate(arrays):
        _check("scale_", {f"arrays[{i}]": a})
        _scale(a, factor)



# -- updates in chunks, on zoo's threads -------------------------------------------------------
# A chunk job's arguments (``zoo.kernels.workers.run_call``): the addresses of up to four
# arrays, their itemsize, and the address of a float64 array of hyperparameters. Each
# optimizer's block is a numba cfunc (made on first use) that runs the kernel above on chunk i
# of every array; one thread runs the same cfunc on each chunk in turn.
_ARG = workers.D_ARGS  # where a call job's arguments start in its description
_ITEMSIZE, _HYPER = 4, 5


@njit
def _job_args(args, a0, a1, a2, a3, hyper):
    args[0], args[1] = a0.ctypes.data, a1.ctypes.data
    args[2], args[3] = a2.ctypes.data, a3.ctypes.data
    args[_ITEMSIZE], args[_HYPER] = a0.itemsize, hyper.ctypes.data


@njit
def _chunk(d, j, lo, hi, sample):
    """Elements ``lo:hi`` of the job's array ``j``, of ``sample``'s type."""
    return carray(atomics.pointer(d[_ARG + j] + lo * d[_ARG + _ITEMSIZE], sample), hi - lo)


@njit
def _sgd_chunk(desc, i, x):
    d = carray(desc, workers.DESC_WORDS)
    lo, hi = d[workers.D_CUTS + i], d[workers.D_CUTS + i + 1]
    h = carray(atomics.pointer(d[_ARG + _HYPER], np.float64(0)), 4)
    _sgd(_chunk(d, 0, lo, hi, x), _chunk(d, 1, lo, hi, x), _chunk(d, 2, lo, hi, x),
         h[0], h[1], h[2] != 0, h[3])


@njit
def _rmsprop_chunk(desc, i, x):
    d = carray(desc, workers.DESC_WORDS)
    lo, hi = d[workers.D_CUTS + i], d[workers.D_CUTS + i + 1]
    h = carray(atomics.pointer(d[_ARG + _HYPER], np.float64(0)), 5)
    _rmsprop(_chunk(d, 0, lo, hi, x), _chunk(d, 1, lo, hi, x), _chunk(d, 2, lo, hi, x),
             _chunk(d, 3, lo, hi, x), h[0], h[1], h[2], h[3], h[4])


@njit
def _adam_chunk(desc, i, x):
    d = carray(desc, workers.DESC_WORDS)
    lo, hi = d[workers.D_CUTS + i], d[workers.D_CUTS + i + 1]
    h = carray(atomics.pointer(d[_ARG + _HYPER], np.float64(0)), 7)
    _adam(_chunk(d, 0, lo, hi, x), _chunk(d, 1, lo, hi, x), _chunk(d, 2, lo, hi, x),
          _chunk(d, 3, lo, hi, x), h[0], h[1], h[2], h[3], h[4], h[5], h[6])


# The cfuncs, one per optimizer and dtype (compiled on first use: only what runs).
def _sgd_block32(desc, i):
    _sgd_chunk(desc, i, np.float32(0))


def _sgd_block64(desc, i):
    _sgd_chunk(desc, i, np.float64(0))


def _rmsprop_block32(desc, i):
    _rmsprop_chunk(desc, i, np.float32(0))


def _rmsprop_block64(desc, i):
    _rmsprop_chunk(desc, i, np.float64(0))


def _adam_block32(desc, i):
    _adam_chunk(desc, i, np.float32(0))


def _adam_block64(desc, i):
    _adam_chunk(desc, i, np.float64(0))


_BLOCKS: dict = {}  # {name: the cfunc}, made on first use


def block_address(kind: str, dtype) -> int:
    """The address of the cfunc that updates one chunk for ``kind`` ("sgd"...) and ``dtype``."""
    name = f"_{kind}_block{np.dtype(dtype).itemsize * 8}"
    if name not in _BLOCKS:
        _BLOCKS[name] = cfunc(types.void(types.CPointer(types.int64), types.int64),
                              cache=True)(globals()[name])
    return _BLOCKS[name].address


_PLANS = threading.local()  # .plans: {id(parameter array): its chunk bounds}, in a scope


@contextlib.contextmanager
def chunk_plans(plans: dict):
    """Within this scope (a trainer's optimizer step), the update of the parameter array whose
    ``id`` is a key of ``plans`` is cut at that key's bounds instead of ``chunk_bounds``.

    Bounds are ``[0, ..., size]``, non-decreasing, inner ones multiples of ``ALIGN`` (so every
    element gets the same arithmetic as in an update in one piece), at most
    ``workers.MAX_NATIVE_BLOCKS`` chunks. A trainer cuts its weights where zoo's products cut
    them (``zoo.training.flat.owner_chunks``): chunk i is taken first by the thread that
    computed those rows of the gradient (``zoo.kernels.workers``), which finds them in its own
    cache. Only speed depends on the plan, never the bits.
    """
    before = getattr(_PLANS, "plans", None)
    _PLANS.plans = plans
    try:
        yield
    finally:
        _PLANS.plans = before


def _update(kernel, kind, arrays, hyper) -> None:
    """``kernel(*arrays, *hyper)``, or the same in chunks on zoo's threads when it is large."""
    plans = getattr(_PLANS, "plans", None)
    planned = plans.get(id(arrays[0])) if plans else None
    bounds = planned if planned is not None else chunk_bounds(arrays[0].size)
    if len(bounds) == 2:
        kernel(*arrays, *hyper)
        return
    values = np.array([float(h) for h in hyper], np.float64)  # alive until the job ends
    args = np.empty(workers.CALL_ARGS, np.int64)
    _job_args(args, *arrays, *[arrays[0]] * (4 - len(arrays)), values)
    threads.run_call(block_address(kind, arrays[0].dtype), args, np.array(bounds, np.int64))
