"""What the training loop tells stopping criteria and callbacks after a step or an epoch."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TrainState:
    """A snapshot of a run, passed to criteria and callbacks.

    Args:
        at: ``"step"`` after an optimizer step, ``"epoch"`` after an epoch and its validation.
        epoch: epochs completed so far (1 after the first epoch ends).
        step: optimizer steps taken so far.
        elapsed: seconds of training so far (excluding time before the first step).
        loss: the last step's loss (``at == "step"``) or the epoch's mean training loss.
        metrics: at epoch ends, ``train_loss`` and ``val_<metric>`` entries such as
            ``val_loss``, ``val_accuracy``, ``val_mse``; empty after a step.
        model: the model being trained (``state_dict()`` / ``load_state_dict()``), so a
            criterion can keep the best weights.
    """

    at: str
    epoch: int
    step: int
    elapsed: float
    loss: float
    metrics: dict = field(default_factory=dict)
    model: object | None = None

    def value(self, monitor: str) -> float | None:
        """The monitored quantity: ``"loss"`` or a metric name such as ``"val_loss"``."""
        if monitor == "loss":
            return self.loss
        return self.metrics.get(monitor)
