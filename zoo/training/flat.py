"""One flat buffer for all parameters, so an optimizer step is one kernel call."""

from __future__ import annotations

import numpy as np


def flatten_parameters(model, key=None) -> tuple[np.ndarray, np.ndarray]:
    """Move every parameter value and gradient of ``model`` into two flat arrays.

    Each ``Parameter.value`` / ``.grad`` becomes a view into the flat arrays, so layers keep
    working unchanged (they reach parameters through their ``Parameter`` at call time) while
    the optimizer, gradient clipping and checkpoints see a single contiguous array each.
    Calling it again on a model that is already flat returns the same buffers. ``key``: a
    function of a ``Parameter`` to order the parameters in the buffers by (a stable sort; the
    trainer puts the weight-decayed ones first).
    """
    params = [p for _, p in model.named_parameters()]
    if key is not None:
        params.sort(key=key)
    if not params:
        dtype = getattr(model, "dtype", np.float32)
        return np.zeros(0, dtype), np.zeros(0, dtype)
    base = params[0].value.base
    if base is not None and base.ndim == 1 and all(p.value.base is base for p in params) \
            and base.size == sum(p.value.size for p in params) and _in_order(params):
        return base, params[0].grad.base
    dtype = params[0].value.dtype
    total = sum(p.value.size for p in params)
    values = np.empty(total, dtype=dtype)
    grads = np.zeros(total, dtype=dtype)
    offset = 0
    for p in params:
        n = p.value.size
        values[offset:offset + n] = p.value.reshape(-1)
        p.value = values[offset:offset + n].reshape(p.value.shape)
        p.grad = grads[offset:offset + n].reshape(p.value.shape)
        offset += n
    return values, grads


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def _in_order(params) -> bool:
    """Whether the parameters already sit in the flat buffer in this order (a model flattened
    before in another order, say without the weight-decay grouping, is laid out again)."""
    addresses = [_address(p.value) for p in params]
    return addresses == sorted(addresses)


# A weight matrix of at least this many elements is updated in two chunks, one per row half.
MIN_OWNED = 1 << 14


def owner_chunks(flat: np.ndarray, params) -> list[int] | None:
    """Chunk bounds for the optimizer's update of ``flat`` (a buffer of ``flatten_parameters``)
    that follow how zoo's threads share the products, or None for the default chunks.

    zoo's products cut a Dense weight ``(in, out)`` by rows in the forward pass, the weight
    gradient and the input gradient alike when ``in`` is the longest size or the weight the
    largest of the layer's arrays (``blas.layer_axes``), and on two threads the caller
    computes the first half and the worker the second (``zoo.kernels.workers``). So every
    matrix of ``params`` (those inside ``flat``, with at least ``MIN_OWNED`` elements) gets two
    chunks: its rows up to ``blas.cut_in_two(in)``, and the rest with whatever small
    parameters follow it; small parameters before the first one join its first chunk. Chunk
    2i is then the caller's and 2i + 1 the worker's, as those rows of the gradient were.
    Bounds are rounded to ``optim.ALIGN`` elements (the update's bits do not depend on the
    chunks); more than ``workers.MAX_NATIVE_BLOCKS`` chunks give None.
    """
    from zoo.kernels import blas, optim, workers

    base, size = _address(flat), flat.size
    inside = []
    for p in params:
        offset = (_address(p.value) - base) // flat.itemsize
        if 0 <= offset < size and p.value.ndim == 2 and p.value.size >= MIN_OWNED:
            inside.append((offset, p.value.shape))
    if not inside or 2 * len(inside) > workers.MAX_NATIVE_BLOCKS:
        return None

    def aligned(i: int) -> int:
        return min(size, round(i / optim.ALIGN) * optim.ALIGN)

    bounds = [0]
    for k, (offset, (rows, cols)) in enumerate(sorted(inside)):
        if k:
            bounds.append(aligned(offset))
        bounds.append(aligned(offset + blas.cut_in_two(rows) * cols))
    bounds.append(size)
    for i in range(1, len(bounds)):  # rounding never moves a bound before the one before
        bounds[i] = max(bounds[i], bounds[i - 1])
    return bounds
