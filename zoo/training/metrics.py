"""Task metrics computed on whole splits (numpy; they run once per epoch, not per step).

Metrics are registered like criteria (the ``register_metrics`` hook, ``zoo list metrics``):
each ``Metric`` names the tasks it applies to, whether larger is better, and whether it is
reported every epoch (cheap ones, what the progress line and the history show) or only in a
run's final evaluation and ``zoo evaluate``. ``--metric NAME`` makes any metric an epoch metric:
early stopping watches ``val_NAME`` and ``zoo compare`` ranks by the test ``NAME``.

Classification metrics follow scikit-learn's definitions: per-class precision
``TP / (TP + FP)`` and recall ``TP / (TP + FN)`` are 0 where undefined (no predictions, no
examples of the class), F1 is their harmonic mean (0 where both are 0); the macro average
weighs classes equally, the weighted average by their number of true examples. Classes are
the model's outputs ``0..C-1``; the confusion matrix has true classes as rows and predicted
classes as columns (scikit-learn's layout).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

# Metrics where larger is better; everything else (loss, mse) is minimised.
MAXIMISED = ("accuracy", "r2", "probe_accuracy", "f1", "precision", "recall")


def is_maximised(name: str) -> bool:
    return any(name.endswith(m) for m in MAXIMISED)


@dataclass(frozen=True)
class Metric:
    """A metric as a plugin registers it.

    Args:
        name: what ``--metric`` and reports call it (``val_`` / ``test`` prefixes are added).
        summary: one line for ``zoo list metrics``.
        tasks: the tasks it applies to (classify, regress, reconstruct).
        compute: ``compute(outputs, target, activate) -> float | None``; ``outputs`` are the
            model's raw outputs (logits for classify), ``target`` the labels or targets,
            ``activate`` the loss's output map (softmax, sigmoid, identity). None means "not
            defined for this data" (top-5 accuracy with 3 classes) and leaves it out.
        maximise: whether larger is better (early stopping's ``mode="auto"`` and compare).
        every_epoch: reported after each epoch, not only in the final evaluation.
    """

    name: str
    summary: str
    tasks: tuple
    compute: Callable
    maximise: bool = False
    every_epoch: bool = False
    plugin: str = field(default="", compare=False)


# -- classification ------------------------------------------------------------------------------

def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float | None:
    """Fraction of examples whose label is among the ``k`` largest outputs (ties: the label's
    output must be larger than that of all but ``k - 1`` others)."""
    if logits.shape[1] <= k:
        return None
    labels = np.asarray(labels, dtype=np.int64)
    own = logits[np.arange(len(logits)), labels]
    above = (logits > own[:, None]).sum(axis=1)
    return float(np.mean(above < k))


def confusion_matrix(logits: np.ndarray, labels: np.ndarray,
                     num_classes: int | None = None) -> np.ndarray:
    """``C[i, j]``: examples of true class ``i`` predicted as ``j`` (int64)."""
    num_classes = num_classes or logits.shape[1]
    predicted = np.argmax(logits, axis=1)
    labels = np.asarray(labels, dtype=np.int64)
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    return matrix


def _per_class(logits, labels):
    """Per-class precision, recall, F1 and support from the confusion matrix."""
    matrix = confusion_matrix(logits, labels)
    tp = np.diag(matrix).astype(np.float64)
    predicted = matrix.sum(axis=0).astype(np.float64)
    support = matrix.sum(axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        total = precision + recall
        f1 = np.where(total > 0, 2 * precision * recall / total, 0.0)
    return {"precision": precision, "recall": recall, "f1": f1}, support


def _averaged(which: str, average: str):
    def compute(outputs, target, activate=None):
        scores, support = _per_class(outputs, target)
        if average == "macro":
            return float(np.mean(scores[which]))
        return float(np.sum(scores[which] * support) / max(support.sum(), 1.0))
    return compute


# -- regression ----------------------------------------------------------------------------------

def _predictions(outputs, target, activate):
    pred = activate(outputs) if activate is not None else outputs
    pred = np.asarray(pred, dtype=np.float64).reshape(len(pred), -1)
    target = np.asarray(target, dtype=np.float64).reshape(len(target), -1)
    return pred, target


def mse(pred: np.ndarray, target: np.ndarray) -> float:
    diff = pred.astype(np.float64) - target
    return float(np.mean(diff * diff))


def r2(pred: np.ndarray, target: np.ndarray) -> float:
    """1 - MSE / variance of the targets (over all elements, as for reconstructions)."""
    target = np.asarray(target, dtype=np.float64)
    var = float(np.var(target))
    return float(1.0 - mse(pred, target) / var) if var > 0 else float("nan")


def _regression(fn):
    def compute(outputs, target, activate=None):
        return fn(*_predictions(outputs, target, activate))
    return compute


def _mae(pred, target):
    return float(np.mean(np.abs(pred - target)))


def _rmse(pred, target):
    return float(np.sqrt(mse(pred, target)))


CLASSIFY, VALUES = ("classify",), ("regress", "reconstruct")

BUILTIN_METRICS = (
    Metric("accuracy", "fraction of examples whose largest output is the label", CLASSIFY,
           lambda o, t, a=None: accuracy(o, t), maximise=True, every_epoch=True),
    Metric("top5_accuracy", "fraction whose label is among the 5 largest outputs (more than 5 "
           "classes)", CLASSIFY, lambda o, t, a=None: top_k_accuracy(o, t, 5), maximise=True),
    Metric("macro_precision", "precision averaged over classes", CLASSIFY,
           _averaged("precision", "macro"), maximise=True),
    Metric("macro_recall", "recall averaged over classes", CLASSIFY,
           _averaged("recall", "macro"), maximise=True),
    Metric("macro_f1", "F1 averaged over classes", CLASSIFY, _averaged("f1", "macro"),
           maximise=True),
    Metric("weighted_precision", "precision averaged over classes, weighted by support",
           CLASSIFY, _averaged("precision", "weighted"), maximise=True),
    Metric("weighted_recall", "recall averaged over classes, weighted by support", CLASSIFY,
           _averaged("recall", "weighted"), maximise=True),
    Metric("weighted_f1", "F1 averaged over classes, weighted by support", CLASSIFY,
           _averaged("f1", "weighted"), maximise=True),
    Metric("mse", "mean squared error of the predictions", VALUES, _regression(mse),
           every_epoch=True),
    Metric("r2", "coefficient of determination, 1 - MSE / variance of the targets", VALUES,
           _regression(r2), maximise=True, every_epoch=True),
    Metric("mae", "mean absolute error of the predictions", VALUES, _regression(_mae)),
    Metric("rmse", "root mean squared error of the predictions", VALUES, _regression(_rmse)),
)


def metrics_for(task: str, registry=None, *, every_epoch: bool = False, extra=()) -> list:
    """The metrics of ``task``: all of them, or only the per-epoch ones plus ``extra`` names."""
    items = BUILTIN_METRICS if registry is None else [m for _, m in registry.items()]
    chosen = [m for m in items if task in m.tasks
              and (not every_epoch or m.every_epoch or m.name in extra)]
    return chosen


def task_metrics(task: str, outputs: np.ndarray, target: np.ndarray, loss_value: float,
                 activate=None, metrics=None) -> dict:
    """The metric dict reported for a split: ``{"loss", <metric>: value, ...}``.

    ``outputs`` are the model's raw outputs; ``activate`` maps them to predictions (softmax,
    sigmoid or identity) for the regression metrics. ``metrics``: the ``Metric`` objects to
    compute (default: the built-in per-epoch ones of ``task``).
    """
    if metrics is None:
        metrics = metrics_for(task, every_epoch=True)
    result = {"loss": float(loss_value)}
    for metric in metrics:
        value = metric.compute(outputs, target, activate)
        if value is not None:
            result[metric.name] = float(value)
    return result
