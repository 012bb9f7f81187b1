"""Task metrics computed on whole splits (numpy; they run once per epoch, not per step)."""

from __future__ import annotations

import numpy as np

# Metrics where larger is better; everything else (loss, mse) is minimised.
MAXIMISED = ("accuracy", "r2", "probe_accuracy")


def is_maximised(name: str) -> bool:
    return any(name.endswith(m) for m in MAXIMISED)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(logits, axis=1) == labels))


def mse(pred: np.ndarray, target: np.ndarray) -> float:
    diff = pred.astype(np.float64) - target
    return float(np.mean(diff * diff))


def r2(pred: np.ndarray, target: np.ndarray) -> float:
    """1 - MSE / variance of the targets (over all elements, as for reconstructions)."""
    target = np.asarray(target, dtype=np.float64)
    var = float(np.var(target))
    return float(1.0 - mse(pred, target) / var) if var > 0 else float("nan")


def task_metrics(task: str, outputs: np.ndarray, target: np.ndarray, loss_value: float,
                 activate=None) -> dict:
    """The metric dict reported for a split: ``{"loss", "accuracy"}`` or ``{"loss", "mse", "r2"}``.

    ``outputs`` are the model's raw outputs; ``activate`` maps them to predictions (softmax,
    sigmoid or identity) for the regression metrics.
    """
    metrics = {"loss": float(loss_value)}
    if task == "classify":
        metrics["accuracy"] = accuracy(outputs, target)
    else:
        pred = activate(outputs) if activate is not None else outputs
        pred = pred.reshape(len(pred), -1)
        target = np.asarray(target).reshape(len(target), -1)
        metrics["mse"] = mse(pred, target)
        metrics["r2"] = r2(pred, target)
    return metrics
