"""Learning-rate schedules: the learning rate of every step, from the run's base rate.

A schedule is asked for the rate before each optimizer step: ``lr(base, step, epoch)``, where
``step`` counts from 1 (the step about to be taken) and ``epoch`` from 0 (the epoch it belongs
to); ``base`` is the run's ``--lr``. A schedule declares whether it changes the rate every step
(``per = "step"``: warmup, cosine, one-cycle) or once an epoch (``per = "epoch"``: step,
exponential, reduce-on-plateau); an epoch schedule is a function of ``epoch`` only.

Most schedules are pure functions of the position, so a resumed run recomputes exactly the
rates the original would have used. ``reduce_on_plateau`` keeps state (the best value, the
epochs without improvement, the current rate); ``state_dict``/``load_state_dict`` carry it
through checkpoints. Schedules that need the run's length (cosine, one-cycle) take it from
``start(steps_per_epoch, epochs)``: the epoch budget unless ``epochs=`` is given, so resuming
with a larger budget stretches what is left of the decay (give ``epochs=`` to fix it).

Definitions follow PyTorch's ``torch.optim.lr_scheduler`` (StepLR, ExponentialLR,
CosineAnnealingLR with a linear warmup, OneCycleLR, ReduceLROnPlateau in Keras' form with
``min_delta``). Differences: warmup rises linearly to the base rate over the warmup steps
starting at ``1/warmup_steps`` (PyTorch's LinearLR starts at a third; a first step at rate 0
would be wasted); one-cycle's ``max_lr`` defaults to the run's ``--lr``.
"""

from __future__ import annotations

import math

from zoo import checks
from zoo.errors import CheckpointError, ConfigError


class Schedule:
    """Base class. Subclasses set ``name`` and ``per`` and define ``lr`` and ``get_config``.

    ``get_config()`` returns the keyword arguments of ``__init__``; ``repr()`` is a
    ``--schedule`` spec that parses back to the same schedule.
    """

    name = ""
    per = "epoch"

    def start(self, steps_per_epoch: int, epochs: int) -> None:
        """Called before training with the run's batches per epoch and epoch budget."""
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = int(epochs)

    def resolve(self, metric_names) -> str | None:
        """Check what the schedule monitors against the run's metrics; returns a note or None."""
        return None

    def lr(self, base: float, step: int, epoch: int) -> float:
        raise NotImplementedError

    def update(self, epoch: int, metrics: dict, base: float) -> None:
        """Called after each epoch with its metrics (``reduce_on_plateau`` reacts here)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        if state:
            raise CheckpointError(f"{self.name}: keeps no state; received {sorted(state)}")

    def get_config(self) -> dict:
        return {}

    def __repr__(self) -> str:
        from zoo.spec import format_spec

        return format_spec(self.name, self.get_config())


class Constant(Schedule):
    """The base learning rate throughout."""

    name = "constant"

    def lr(self, base, step, epoch):
        return base


class StepDecay(Schedule):
    """Multiply the rate by ``gamma`` every ``step_size`` epochs (PyTorch's StepLR)."""

    name = "step"

    def __init__(self, step_size: int = 10, gamma: float = 0.1):
        self.step_size = checks.positive_int("step", "step_size", step_size)
        self.gamma = checks.number("step", "gamma", gamma, minimum=0, maximum=1,
                                   exclusive_minimum=True)

    def lr(self, base, step, epoch):
        return base * self.gamma ** (epoch // self.step_size)

    def get_config(self):
        return {"step_size": self.step_size, "gamma": self.gamma}


class Exponential(Schedule):
    """Multiply the rate by ``gamma`` every epoch (PyTorch's ExponentialLR)."""

    name = "exponential"

    def __init__(self, gamma: float = 0.95):
        self.gamma = checks.number("exponential", "gamma", gamma, minimum=0, maximum=1,
                                   exclusive_minimum=True)

    def lr(self, base, step, epoch):
        return base * self.gamma ** epoch

    def get_config(self):
        return {"gamma": self.gamma}


class Cosine(Schedule):
    """Linear warmup over ``warmup_epochs``, then cosine decay to ``min_lr`` at the run's end.

    Step ``k`` of ``W`` warmup steps uses ``base * k / W``; after it the rate is
    ``min_lr + (base - min_lr) * (1 + cos(pi * q)) / 2`` with ``q`` the fraction of the
    remaining steps done, and ``min_lr`` once the horizon (``epochs``, by default the run's
    epoch budget) is passed. Loshchilov and Hutter, SGDR, https://arxiv.org/abs/1608.03983.
    """

    name = "cosine"
    per = "step"

    def __init__(self, warmup_epochs: float = 0.0, min_lr: float = 0.0,
                 epochs: int | None = None):
        self.warmup_epochs = checks.number("cosine", "warmup_epochs", warmup_epochs, minimum=0)
        self.min_lr = checks.number("cosine", "min_lr", min_lr, minimum=0)
        self.horizon = None if epochs is None else checks.positive_int("cosine", "epochs",
                                                                        epochs)

    def lr(self, base, step, epoch):
        total = (self.horizon or self.epochs) * self.steps_per_epoch
        warmup = min(round(self.warmup_epochs * self.steps_per_epoch), total)
        if step <= warmup:
            return base * step / warmup
        q = min((step - warmup) / max(total - warmup, 1), 1.0)
        return self.min_lr + (base - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * q))

    def get_config(self):
        return {"warmup_epochs": self.warmup_epochs, "min_lr": self.min_lr,
                "epochs": self.horizon}


class OneCycle(Schedule):
    """The one-cycle policy (Smith and Topin, https://arxiv.org/abs/1708.07120), as PyTorch's
    OneCycleLR with cosine annealing: from ``max_lr / div_factor`` up to ``max_lr`` over the
    first ``pct_start`` of the run, then down to ``max_lr / (div_factor * final_div_factor)``.
    ``max_lr`` defaults to the run's ``--lr``."""

    name = "one_cycle"
    per = "step"

    def __init__(self, max_lr: float | None = None, pct_start: float = 0.3,
                 div_factor: float = 25.0, final_div_factor: float = 1e4,
                 epochs: int | None = None):
        owner = "one_cycle"
        self.max_lr = None if max_lr is None else checks.positive_number(owner, "max_lr",
                                                                         max_lr)
        self.pct_start = checks.number(owner, "pct_start", pct_start, minimum=0, maximum=1,
                                       exclusive_minimum=True)
        self.div_factor = checks.number(owner, "div_factor", div_factor, minimum=1)
        self.final_div_factor = checks.number(owner, "final_div_factor", final_div_factor,
                                              minimum=1)
        self.horizon = None if epochs is None else checks.positive_int(owner, "epochs", epochs)

    @staticmethod
    def _anneal(start, end, pct):
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)

    def lr(self, base, step, epoch):
        peak = self.max_lr if self.max_lr is not None else base
        initial = peak / self.div_factor
        final = initial / self.final_div_factor
        total = (self.horizon or self.epochs) * self.steps_per_epoch
        i = min(step - 1, total - 1)  # PyTorch counts steps from 0
        up_end = float(self.pct_start * total) - 1
        if i <= up_end:
            return self._anneal(initial, peak, i / up_end if up_end > 0 else 1.0)
        return self._anneal(peak, final, (i - up_end) / max(total - 1 - up_end, 1e-12))

    def get_config(self):
        return {"max_lr": self.max_lr, "pct_start": self.pct_start,
                "div_factor": self.div_factor, "final_div_factor": self.final_div_factor,
                "epochs": self.horizon}


class ReduceOnPlateau(Schedule):
    """Multiply the rate by ``factor`` when ``monitor`` has not improved for ``patience`` epochs.

    As Keras' ReduceLROnPlateau: an epoch improves when the monitor beats the best by more than
    ``min_delta``; after a reduction ``cooldown`` epochs pass before counting again; the rate
    never goes below ``min_lr``. ``mode="auto"`` maximises accuracy-like metrics (names ending
    in accuracy, r2, precision, recall, f1) and minimises the rest. Without a validation split a
    ``val_`` monitor falls back to its ``train_`` counterpart, as early stopping's does.
    """

    name = "reduce_on_plateau"

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 min_lr: float = 0.0, mode: str = "auto", min_delta: float = 1e-4,
                 cooldown: int = 0):
        owner = "reduce_on_plateau"
        if not isinstance(monitor, str) or not monitor:
            raise ConfigError(f"{owner}: monitor must be a metric name such as val_loss; "
                              f"received monitor={monitor!r}")
        self.monitor = monitor
        self.mode = checks.one_of(owner, "mode", mode, ("auto", "min", "max"))
        self.factor = checks.number(owner, "factor", factor, minimum=0, maximum=1,
                                    exclusive_minimum=True, exclusive_maximum=True)
        self.patience = checks.integer(owner, "patience", patience, minimum=0)
        self.min_lr = checks.number(owner, "min_lr", min_lr, minimum=0)
        self.min_delta = checks.number(owner, "min_delta", min_delta, minimum=0)
        self.cooldown = checks.integer(owner, "cooldown", cooldown, minimum=0)
        self._watched = monitor
        self.current: float | None = None  # the reduced rate; None until the first reduction
        self.best: float | None = None
        self.wait = 0
        self.cooling = 0

    def resolve(self, metric_names):
        from zoo.training.metrics import is_maximised

        names = list(metric_names)
        self._watched = self.monitor
        note = None
        if self.monitor not in names:
            fallback = "train_" + self.monitor[4:] if self.monitor.startswith("val_") else None
            if fallback in names and not any(n.startswith("val_") for n in names):
                self._watched = fallback
                note = (f"reduce_on_plateau: this run has no validation metrics, so it "
                        f"monitors {fallback}")
            else:
                raise ConfigError(f"reduce_on_plateau: monitor {self.monitor!r} is not a metric "
                                  f"of this run; its metrics: {', '.join(names)}")
        self._maximise = (self.mode == "max" or
                          (self.mode == "auto" and is_maximised(self._watched)))
        return note

    def lr(self, base, step, epoch):
        return base if self.current is None else self.current

    def update(self, epoch, metrics, base):
        value = metrics.get(self._watched)
        if value is None or not math.isfinite(value):
            return
        signed = -value if getattr(self, "_maximise", False) else value
        if self.cooling > 0:
            self.cooling -= 1
        if self.best is None or signed < self.best - self.min_delta:
            self.best, self.wait = signed, 0
            return
        if self.cooling > 0:
            return
        self.wait += 1
        if self.wait >= self.patience:
            rate = self.lr(base, 0, epoch)
            self.current = max(rate * self.factor, self.min_lr)
            self.wait, self.cooling = 0, self.cooldown

    def state_dict(self):
        return {"current": self.current, "best": self.best, "wait": self.wait,
                "cooling": self.cooling}

    def load_state_dict(self, state):
        try:
            current, best = state["current"], state["best"]
            wait, cooling = state["wait"], state["cooling"]
            for value in (current, best):
                if value is not None and not isinstance(value, (int, float)):
                    raise TypeError(value)
            if not (isinstance(wait, int) and isinstance(cooling, int)):
                raise TypeError(wait)
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"reduce_on_plateau: saved state must have numbers current, "
                                  f"best, wait and cooling; received {state!r} ({exc})") from None
        self.current, self.best, self.wait, self.cooling = current, best, wait, cooling

    def get_config(self):
        return {"monitor": self.monitor, "factor": self.factor, "patience": self.patience,
                "min_lr": self.min_lr, "mode": self.mode, "min_delta": self.min_delta,
                "cooldown": self.cooldown}


BUILTIN_SCHEDULES = (Constant, StepDecay, Exponential, Cosine, OneCycle, ReduceOnPlateau)
