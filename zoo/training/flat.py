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
