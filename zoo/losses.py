"""Losses: ``forward(pred, target) -> float`` (the batch mean), ``backward() -> grad_pred``.

``pred`` is the model's raw output (logits for the two cross-entropies); ``activate(pred)``
turns it into predictions. Each forward is one fused kernel that also writes the gradient into a
buffer reused while the batch shape stays the same, so ``backward()`` costs nothing; the buffer
is overwritten by the next ``forward``.
"""

from __future__ import annotations

import numpy as np

from zoo import kernels
from zoo.errors import ConfigError, DataError, describe_array


class Loss:
    """Base class: subclasses set ``name`` and implement ``_check`` and ``_compute``.

    The checks run when the shapes or dtypes of ``pred`` and ``target`` change (and on every
    call whose arrays need converting); a training loop feeding same-shaped batches pays for
    them once.
    """

    name = ""

    def __init__(self):
        self._key = None
        self._grad = None

    def forward(self, pred: np.ndarray, target) -> float:
        """The mean loss of a batch; also computes the gradient ``backward()`` returns."""
        key = (getattr(pred, "shape", None), getattr(pred, "dtype", None),
               getattr(target, "shape", None), getattr(target, "dtype", None))
        if key != self._key or not (pred.flags.c_contiguous and target.flags.c_contiguous):
            pred, target = self._accept(pred, target, key)
        return self._compute(pred, target, self._grad)

    def backward(self) -> np.ndarray:
        """The gradient of the last forward's loss w.r.t. ``pred`` (same shape and dtype)."""
        if self._grad is None:
            raise ConfigError(f"{type(self).__name__}.backward() called before forward()")
        return self._grad

    def activate(self, pred: np.ndarray) -> np.ndarray:
        """Raw model outputs -> predictions (identity unless the loss fuses an activation)."""
        return pred

    def get_config(self) -> dict:
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    # -- the slow path, when shapes or dtypes change --------------------------------------------
    def _accept(self, pred, target, key):
        """Check and convert; later calls with arrays like these skip it (``key``)."""
        cls = type(self).__name__
        if not isinstance(pred, np.ndarray) or pred.dtype.char not in "fd":
            raise DataError(f"{cls}: predictions must be a float32 or float64 array; "
                            f"received {describe_array(pred)}")
        if pred.ndim == 0 or pred.size == 0:
            raise DataError(f"{cls}: predictions must be a non-empty batch; "
                            f"received {describe_array(pred)}")
        raw_pred, raw_target = pred, target
        pred = np.ascontiguousarray(pred)
        target = self._check(pred, np.asarray(target))
        if self._grad is None or self._grad.shape != pred.shape \
                or self._grad.dtype != pred.dtype:
            self._grad = np.empty_like(pred)
        # Only arrays used as they are may skip the checks next time.
        self._key = key if pred is raw_pred and target is raw_target else None
        return pred, target

    def _check(self, pred, target):
        """Validate ``target`` against ``pred``; return it in the dtype the kernel wants."""
        raise NotImplementedError

    def _compute(self, pred, target, grad) -> float:
        raise NotImplementedError


class SoftmaxCrossEntropy(Loss):
    """Softmax + cross-entropy on logits, fused and stable for any finite logits.

    ``pred``: logits ``(N, C)``; ``target``: integer class labels ``(N,)`` in [0, C).
    """

    name = "softmax_cross_entropy"

    def _check(self, pred, target):
        if pred.ndim != 2:
            raise DataError(f"SoftmaxCrossEntropy: logits must have shape (N, classes); "
                            f"received {describe_array(pred)}")
        if target.dtype.kind not in "iu" or target.shape != pred.shape[:1]:
            raise DataError(f"SoftmaxCrossEntropy: targets must be integer class labels of "
                            f"shape ({len(pred)},); received {describe_array(target)}")
        return np.ascontiguousarray(target, dtype=np.int64)

    def _compute(self, pred, target, grad):
        loss, _ = kernels.losses.softmax_cross_entropy(pred, target, grad, check=False)
        return loss

    def activate(self, pred):
        """Class probabilities."""
        return kernels.losses.softmax(np.ascontiguousarray(pred))


def _float_target(loss, pred, target):
    """A float target of pred's shape (or the same values per example), in pred's dtype."""
    cls = type(loss).__name__
    if target.dtype.kind not in "fiub":
        raise DataError(f"{cls}: targets must be numbers; received {describe_array(target)}")
    if target.shape != pred.shape:
        if target.ndim == 0 or len(target) != len(pred) or target.size != pred.size:
            raise DataError(f"{cls}: targets must have the predictions' shape {pred.shape}; "
                            f"received {describe_array(target)}")
        target = target.reshape(pred.shape)
    return np.ascontiguousarray(target, dtype=pred.dtype)


class _FloatTargetLoss(Loss):
    def _check(self, pred, target):
        return _float_target(self, pred, target)


class MSE(_FloatTargetLoss):
    """Mean squared error over all elements: ``mean((pred - target) ** 2)``."""

    name = "mse"

    def _compute(self, pred, target, grad):
        loss, _ = kernels.losses.mse(pred, target, grad, check=False)
        return loss


class BinaryCrossEntropy(_FloatTargetLoss):
    """Binary cross-entropy on logits (sigmoid fused in, stable), mean over all elements.

    ``pred``: logits of any shape; ``target``: the same shape, values in [0, 1].
    """

    name = "bce"

    def _compute(self, pred, target, grad):
        loss, _ = kernels.losses.bce_with_logits(pred, target, grad, check=False)
        return loss

    def activate(self, pred):
        """Probabilities ``sigmoid(pred)``."""
        return kernels.activations.sigmoid(np.ascontiguousarray(pred))
