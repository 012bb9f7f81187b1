"""The stopping-criteria engine: small stateful criteria, combined any-of or all-of.

A criterion works like Keras' ``EarlyStopping`` or pytest's ``stepwise`` plugin: the training
loop hands it a :class:`~zoo.training.state.TrainState` after each step or epoch (as its
``every`` declares); it updates its own state and sets ``stop`` plus a one-sentence ``reason``.
It never raises to stop a run.

Flags are levels, not latches: ``stop`` says whether the criterion's condition held at its own
most recent check (``loss_below`` drops its flag again if the loss climbs back). Under any-of
(the engine, ``AnyOf``) that makes no difference, since the first flag ends the run; under
``AllOf`` it means "every member's condition holds as of its latest check".

Monitored metrics (``early_stopping``, ``target``) are looked up by name in the state's
``metrics``, plus ``"loss"`` (the step loss or the epoch's mean training loss). The name is
resolved once, at ``StoppingEngine.reset(metrics=...)`` when the trainer says which metrics
its epochs report, else at the first check:

- a name the run reports is used as is;
- a ``val_*`` name in a run with no validation metrics at all falls back to ``train_*`` (the
  default ``early_stopping`` monitors ``val_loss``, so it monitors ``train_loss`` when the
  validation split is empty); the fallback is announced in ``StoppingEngine.notes`` and in the
  stop reason ("train_loss (in place of val_loss)");
- anything else raises ``ConfigError`` listing the available metrics. It is never a silent
  no-op. Once resolved, an epoch that lacks the metric (validation skipped) is not counted.

Checkpoints: ``state_dict()`` is JSON-serialisable (non-finite floats are stored as None with
the same meaning). The only arrays, the best weights kept by ``early_stopping(restore_best=
true)``, travel separately through ``arrays()`` / ``load_arrays()``.

Example:
    >>> from zoo.training.state import TrainState
    >>> engine = StoppingEngine([max_epochs(50), early_stopping(patience=5)])
    >>> engine.check(TrainState("epoch", 1, 100, 3.2, 0.9, {"val_loss": 0.8}))
    False
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers

from zoo.errors import CheckpointError, ConfigError

CADENCES = ("step", "epoch")
# mode="auto" maximises a monitor whose name ends with one of these, and minimises the rest.
MAX_SUFFIXES = ("accuracy", "acc", "r2", "auc", "f1", "precision", "recall")


# -- small helpers ------------------------------------------------------------------------------
def _fmt(x, other=None) -> str:
    """A short number, with enough digits to differ from ``other`` when they differ."""
    for digits in (4, 6, 9, 17):
        text = f"{x:.{digits}g}"
        if other is None or x == other or text != f"{other:.{digits}g}":
            return text
    return text


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _where(state) -> str:
    # At a step check ``state.epoch`` counts completed epochs; the step belongs to the next one.
    if state.at == "step":
        return f"at step {state.step} (epoch {state.epoch + 1})"
    return f"at epoch {state.epoch}"


def _finite_or_none(x):
    return x if x is not None and math.isfinite(x) else None


def _received(owner, arg, value, expected):
    return ConfigError(f"{owner}: {arg} must be {expected}; received {arg}={value!r}")


def _int(owner, arg, value, minimum):
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        kind = "a positive integer" if minimum == 1 else "a non-negative integer"
        raise _received(owner, arg, value, kind)
    return int(value)


def _number(owner, arg, value, *, lower=None, strict=False, allow_none=False):
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and lower is not None:
        ok = value > lower if strict else value >= lower
    if not ok:
        kind = "a finite number"
        if lower is not None:
            kind = "a positive number" if strict and lower == 0 else \
                f"a number {'>' if strict else '>='} {lower}"
        raise _received(owner, arg, value, kind + (" or None" if allow_none else ""))
    return float(value)


def _choice(owner, arg, value, choices):
    if value not in choices:
        raise _received(owner, arg, value, "one of " + ", ".join(map(repr, choices)))
    return value


def _bool(owner, arg, value):
    if not isinstance(value, bool):
        raise _received(owner, arg, value, "true or false")
    return value


def _name(owner, arg, value):
    if not isinstance(value, str) or not value.strip():
        raise _received(owner, arg, value, "a metric name such as 'val_loss'")
    return value.strip()


def _seconds(owner, value):
    """Seconds from a number, '90s' / '30m' / '2h' / '1d', or Lightning's 'DD:HH:MM:SS'."""
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            if ":" in text:
                parts = [float(p) for p in text.split(":")]
                if len(parts) not in (3, 4):
                    raise ValueError
                units = (1, 60, 3600, 86400)
                value = sum(p * u for p, u in zip(reversed(parts), units, strict=False))
            else:
                unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}.get(text[-1:], None)
                value = float(text[:-1]) * unit if unit else float(text)
        except ValueError:
            raise _received(owner, "seconds", value,
                            "a positive number of seconds, '30m', '2h' or 'DD:HH:MM:SS'") from None
    return _number(owner, "seconds", value, lower=0, strict=True)


def _max_mode(mode: str, monitor: str) -> bool:
    """Whether larger is better for ``monitor`` under ``mode``."""
    if mode == "auto":
        return monitor.lower().endswith(MAX_SUFFIXES)
    return mode == "max"


@functools.cache
def _parameters(cls) -> tuple:
    """The constructor's parameters, in order (what ``get_config`` and ``repr`` show)."""
    return tuple(p for p in inspect.signature(cls).parameters.values()
                 if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD))


class _Monitor:
    """A monitored metric name, resolved once against the metrics the run reports."""

    __slots__ = ("name", "note", "owner", "requested")

    def __init__(self, owner: str, requested: str):
        self.owner, self.requested = owner, requested
        self.name: str | None = None
        self.note: str | None = None

    def reset(self) -> None:
        self.name = self.note = None

    def resolve(self, metrics) -> None:
        available = {"loss", *metrics}
        wanted = self.requested
        self.note = None
        if wanted in available:
            self.name = wanted
            return
        if wanted.startswith("val_") and not any(m.startswith("val_") for m in available):
            stand_in = "train_" + wanted[4:]
            if stand_in in available:
                self.name = stand_in
                self.note = (f"{self.owner}: this run has no validation metrics, so it monitors "
                             f"{stand_in} in place of {wanted}")
                return
        raise ConfigError(f"{self.owner}: monitor {wanted!r} is not a metric of this run; "
                          f"available: {', '.join(sorted(available))}")

    def read(self, state):
        if self.name is None:
            self.resolve(state.metrics)
        value = state.value(self.name)
        return None if value is None else float(value)

    @property
    def label(self) -> str:
        name = self.name or self.requested
        return name if name == self.requested else f"{name} (in place of {self.requested})"


# -- the base ---------------------------------------------------------------------------------
class Criterion:
    """A stopping rule: ``update(state)`` sets ``stop`` and a human-readable ``reason``.

    Subclasses set the class attributes ``name`` (what ``--stop`` calls it) and ``every``
    (``"step"`` or ``"epoch"``), validate their arguments in ``__init__``, extend ``reset()``
    and list in ``_state`` the attributes ``state_dict()`` saves. ``get_config()`` reads the
    constructor's parameters back from attributes of the same names.

    A *budget* (class attribute ``budget = True``: ``max_epochs``, ``max_steps``,
    ``max_time``, or a plugin's criterion that sets it) is a limit on the run's position and
    nothing else: it keeps no state, a resumed run re-checks it at the saved position
    (``restored``), and on resume a new budget may replace the saved one of the same name.
    """

    name = "criterion"
    every = "epoch"
    budget = False
    stop = False  # class defaults, so a subclass that skips super().__init__() still works
    reason: str | None = None
    _state: tuple = ()

    def __init__(self):
        self.stop = False
        self.reason: str | None = None

    def reset(self) -> None:
        """Forget the run: called when training starts."""
        self.stop = False
        self.reason = None

    def prepare(self, metrics) -> None:
        """Learn which metric names the run's epoch checks carry (may raise ConfigError)."""

    def checks_at(self, at: str) -> bool:
        return self.every == at

    def update(self, state) -> None:
        raise NotImplementedError

    def restored(self, state) -> None:
        """A run resumes at ``state`` (its saved position) after ``load_state_dict``.

        A budget checks its (possibly new) limit now; every other criterion keeps the flag it
        saved, exactly as in an uninterrupted run.
        """
        if self.budget:
            self.update(state)

    def _fire(self, reason: str) -> None:
        self.stop = True
        self.reason = f"{self.name}: {reason}"

    def _clear(self) -> None:
        self.stop = False
        self.reason = None

    @property
    def fired(self):
        """The criterion responsible for ``stop`` (itself; a member for ``AnyOf``)."""
        return self if self.stop else None

    def walk(self):
        """This criterion and, for composites, every member, depth first."""
        yield self

    # -- persistence -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {"stop": self.stop, "reason": self.reason}
        for key in self._state:
            state[key] = getattr(self, key)
        return state

    def load_state_dict(self, state: dict) -> None:
        keys = ("stop", "reason", *self._state)
        missing = [k for k in keys if k not in state]
        if missing:
            raise CheckpointError(f"{self.name}: the saved stopping state lacks "
                                  f"{', '.join(missing)}; received keys {sorted(state)}")
        for key in keys:
            setattr(self, key, state[key])

    def arrays(self) -> dict:
        """Arrays to save beside ``state_dict()`` (only ``early_stopping`` has any)."""
        return {}

    def load_arrays(self, arrays: dict) -> None:
        """Take back what ``arrays()`` returned."""

    def get_config(self) -> dict:
        params = _parameters(type(self))  # type: ignore[arg-type]  # mypy: classes as cache keys
        return {p.name: getattr(self, p.name) for p in params}

    def __repr__(self) -> str:
        # The --stop syntax, so a repr can be pasted back on the command line.
        from zoo.training.stopspec import format_value

        config = self.get_config()
        params = _parameters(type(self))  # type: ignore[arg-type]  # mypy: classes as cache keys
        shown = [f"{p.name}={format_value(config[p.name])}"
                 for i, p in enumerate(params)
                 if i == 0 or p.default is p.empty or config[p.name] != p.default]
        return f"{self.name}({', '.join(shown)})"


# -- budgets ----------------------------------------------------------------------------------
class MaxEpochs(Criterion):
    """Stop after ``epochs`` epochs (Lightning's ``max_epochs``)."""

    name = "max_epochs"
    budget = True
    every = "epoch"

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = _int(self.name, "epochs", epochs, 1)

    def update(self, state) -> None:
        if state.epoch >= self.epochs:
            self._fire(f"reached the limit of {_plural(self.epochs, 'epoch')}")
        else:
            self._clear()


class MaxSteps(Criterion):
    """Stop after ``steps`` optimizer steps (Lightning's ``max_steps``)."""

    name = "max_steps"
    budget = True
    every = "step"

    def __init__(self, steps: int):
        super().__init__()
        self.steps = _int(self.name, "steps", steps, 1)

    def update(self, state) -> None:
        if state.step >= self.steps:
            self._fire(f"reached the limit of {_plural(self.steps, 'step')} "
                       f"(epoch {state.epoch + (state.at == 'step')})")
        else:
            self._clear()


class MaxTime(Criterion):
    """Stop once training has run ``seconds`` (a number, '30m', '2h' or 'DD:HH:MM:SS')."""

    name = "max_time"
    budget = True

    def __init__(self, seconds, every: str = "step"):
        super().__init__()
        self.seconds = _seconds(self.name, seconds)
        self.every = _choice(self.name, "every", every, CADENCES)

    def update(self, state) -> None:
        if state.elapsed >= self.seconds:
            self._fire(f"{_fmt(state.elapsed, self.seconds)} s of training reached the limit "
                       f"of {_fmt(self.seconds)} s {_where(state)}")
        else:
            self._clear()


# -- the loss curve ---------------------------------------------------------------------------
def _loss_label(state) -> str:
    return "loss" if state.at == "step" else "mean training loss"


class LossBelow(Criterion):
    """Stop when the loss falls below ``threshold`` (the seed note's first rule).

    Checked after each epoch on the epoch's mean training loss, or after each step on the
    step's loss with ``every="step"``.
    """

    name = "loss_below"

    def __init__(self, threshold: float, every: str = "epoch"):
        super().__init__()
        self.threshold = _number(self.name, "threshold", threshold)
        self.every = _choice(self.name, "every", every, CADENCES)

    def update(self, state) -> None:
        loss = state.loss
        if loss < self.threshold:
            self._fire(f"{_loss_label(state)} {_fmt(loss, self.threshold)} fell below "
                       f"{_fmt(self.threshold)} {_where(state)}")
        else:
            self._clear()


class LossDeltaBelow(Criterion):
    """Stop when the loss has converged: ``|Δloss| < tol`` for ``patience`` checks in a row.

    The seed note's second rule. The first check has no previous loss and counts as a change;
    a non-finite loss breaks the run of small changes.
    """

    name = "loss_delta_below"
    _state = ("previous", "count")

    def __init__(self, tol: float, patience: int = 1, every: str = "epoch"):
        super().__init__()
        self.tol = _number(self.name, "tol", tol, lower=0, strict=True)
        self.patience = _int(self.name, "patience", patience, 1)
        self.every = _choice(self.name, "every", every, CADENCES)
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.previous: float | None = None
        self.count = 0

    def update(self, state) -> None:
        loss = float(state.loss)
        previous, self.previous = self.previous, _finite_or_none(loss)
        delta = abs(loss - previous) if previous is not None else math.inf
        self.count = self.count + 1 if delta < self.tol else 0
        if self.count >= self.patience:
            self._fire(f"|Δloss| stayed below {_fmt(self.tol)} for "
                       f"{_plural(self.count, 'consecutive ' + state.at)} "
                       f"(last {_fmt(delta, self.tol)}) {_where(state)}")
        else:
            self._clear()


class NonFinite(Criterion):
    """Stop as soon as the loss is NaN or infinite: the run has diverged.

    Always on in ``StoppingEngine``. The trainer must not promote the weights of a run stopped
    by it to a "best" checkpoint; ``StoppingEngine.finish`` restores the best weights if an
    ``early_stopping`` kept them.
    """

    name = "non_finite"
    every = "step"

    def update(self, state) -> None:
        if math.isfinite(state.loss):
            self._clear()
        else:
            self._fire(f"loss became {float(state.loss)!r} {_where(state)}")


# -- monitored metrics ------------------------------------------------------------------------
class EarlyStopping(Criterion):
    """Stop when ``monitor`` has not improved for ``patience`` epochs (Keras' EarlyStopping).

    An epoch improves when the monitor beats the best so far by more than ``min_delta``; an
    improvement resets the count only if it also beats ``baseline`` (when given). Unlike
    Keras, an improvement that stays short of the baseline does not postpone the stop. Epochs
    up to ``start_from_epoch`` are a warm-up and not monitored; non-finite values never count
    as improvements. With ``restore_best`` it keeps a copy of the weights of the best epoch
    (``state.model.state_dict()``, which must return copies) and ``StoppingEngine.finish``
    puts them back when training ends, whatever ended it.

    Args:
        monitor: a metric name (``val_loss``, ``val_accuracy``, ``train_loss``, ``loss``...).
        mode: ``min``, ``max``, or ``auto`` (max for accuracy/r2/auc/f1-like names).
        min_delta: the smallest change that counts as an improvement (>= 0).
        patience: epochs without improvement before stopping.
        baseline: a value the monitor must beat within ``patience`` epochs, or None.
        start_from_epoch: epochs of warm-up before monitoring starts.
        restore_best: keep and restore the best epoch's weights.
    """

    name = "early_stopping"
    every = "epoch"
    _state = ("best", "best_epoch", "wait")

    def __init__(self, monitor: str = "val_loss", mode: str = "auto", min_delta: float = 0.0,
                 patience: int = 5, baseline: float | None = None, start_from_epoch: int = 0,
                 restore_best: bool = True):
        super().__init__()
        owner = self.name
        self.monitor = _name(owner, "monitor", monitor)
        self.mode = _choice(owner, "mode", mode, ("auto", "min", "max"))
        self.min_delta = _number(owner, "min_delta", min_delta, lower=0)
        self.patience = _int(owner, "patience", patience, 0)
        self.baseline = _number(owner, "baseline", baseline, allow_none=True)
        self.start_from_epoch = _int(owner, "start_from_epoch", start_from_epoch, 0)
        self.restore_best = _bool(owner, "restore_best", restore_best)
        # Compare sign * value, so smaller is better in both modes.
        self._sign = -1.0 if _max_mode(self.mode, self.monitor) else 1.0
        self._monitor = _Monitor(owner, self.monitor)
        self.reset()

    def reset(self) -> None:
        super().reset()
        self._monitor.reset()
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.wait = 0
        self.best_weights: dict | None = None

    def prepare(self, metrics) -> None:
        self._monitor.resolve(metrics)

    @property
    def note(self) -> str | None:
        return self._monitor.note

    def _beats(self, value: float, reference: float) -> bool:
        return self._sign * (value - reference) < -self.min_delta

    def update(self, state) -> None:
        value = self._monitor.read(state)
        if value is None or state.epoch <= self.start_from_epoch:
            return
        self.wait += 1
        if math.isfinite(value) and (self.best is None or self._beats(value, self.best)):
            self.best, self.best_epoch = value, state.epoch
            if self.restore_best and state.model is not None:
                self.best_weights = state.model.state_dict()
            if self.baseline is None or self._beats(value, self.baseline):
                self.wait = 0
                self._clear()
                return
        if self.wait >= self.patience:
            self._fire(self._explain())
        else:
            self._clear()

    def _explain(self) -> str:
        best = ("no finite value seen" if self.best is None
                else f"best {_fmt(self.best)} at epoch {self.best_epoch}")
        label = self._monitor.label
        if self.baseline is not None and (self.best is None
                                          or not self._beats(self.best, self.baseline)):
            return (f"{label} did not beat the baseline {_fmt(self.baseline)} within "
                    f"{_plural(self.wait, 'epoch')} ({best})")
        by = f" by more than {_fmt(self.min_delta)}" if self.min_delta else ""
        return f"{label} did not improve{by} for {_plural(self.wait, 'epoch')} ({best})"

    def restore(self, model) -> str | None:
        """Load the best epoch's weights into ``model``; returns what it did, or None."""
        if not self.restore_best or self.best_epoch is None:
            return None
        if self.best_weights is None:
            return (f"{self.name}: the weights of the best epoch ({self.best_epoch}) were not "
                    "kept; the model keeps its last weights")
        model.load_state_dict(self.best_weights)
        return (f"{self.name}: restored the weights of epoch {self.best_epoch}, the best "
                f"{self._monitor.label} ({_fmt(self.best)})")

    def arrays(self) -> dict:
        return {f"best/{k}": v for k, v in (self.best_weights or {}).items()}

    def load_arrays(self, arrays: dict) -> None:
        kept = {k[5:]: v for k, v in arrays.items() if k.startswith("best/")}
        self.best_weights = kept or None


class Target(Criterion):
    """Stop when ``monitor`` reaches ``value`` (>= under mode max, <= under mode min)."""

    name = "target"
    every = "epoch"

    def __init__(self, monitor: str, value: float, mode: str = "auto"):
        super().__init__()
        self.monitor = _name(self.name, "monitor", monitor)
        self.value = _number(self.name, "value", value)
        self.mode = _choice(self.name, "mode", mode, ("auto", "min", "max"))
        self._sign = -1.0 if _max_mode(self.mode, self.monitor) else 1.0
        self._monitor = _Monitor(self.name, self.monitor)

    def reset(self) -> None:
        super().reset()
        self._monitor.reset()

    def prepare(self, metrics) -> None:
        self._monitor.resolve(metrics)

    @property
    def note(self) -> str | None:
        return self._monitor.note

    def update(self, state) -> None:
        current = self._monitor.read(state)
        if current is None:
            return
        if self._sign * (current - self.value) <= 0:
            op = ">=" if self._sign < 0 else "<="
            self._fire(f"{self._monitor.label} reached {_fmt(current, self.value)} "
                       f"({op} {_fmt(self.value)}) {_where(state)}")
        else:
            self._clear()


# -- composition ------------------------------------------------------------------------------
class _Composite(Criterion):
    """Members checked together; checked whenever one of its members is."""

    def __init__(self, *criteria):
        super().__init__()
        if len(criteria) == 1 and isinstance(criteria[0], (list, tuple)):
            criteria = tuple(criteria[0])
        if not criteria:
            raise ConfigError(f"{self.name}: expected at least one criterion; received none")
        for i, member in enumerate(criteria):
            if not isinstance(member, Criterion):
                raise ConfigError(f"{self.name}: expected Criterion objects; received "
                                  f"{type(member).__name__} {member!r} at position {i}")
        self.criteria = tuple(criteria)
        cadences = [at for at in CADENCES if self.checks_at(at)]
        self.every = cadences[0] if len(cadences) == 1 else "+".join(cadences)

    def checks_at(self, at: str) -> bool:
        return any(member.checks_at(at) for member in self.criteria)

    def reset(self) -> None:
        super().reset()
        for member in self.criteria:
            member.reset()

    def prepare(self, metrics) -> None:
        for member in self.criteria:
            member.prepare(metrics)

    def update(self, state) -> None:
        at = state.at
        for member in self.criteria:
            if member.checks_at(at):
                member.update(state)
        self._combine()

    def restored(self, state) -> None:
        for member in self.criteria:
            member.restored(state)
        self._combine()

    def _combine(self) -> None:
        """Set this composite's flag from its members' flags."""
        raise NotImplementedError

    def walk(self):
        yield self
        for member in self.criteria:
            yield from member.walk()

    def state_dict(self) -> dict:
        return {"stop": self.stop, "reason": self.reason,
                "criteria": [member.state_dict() for member in self.criteria]}

    def load_state_dict(self, state: dict) -> None:
        members = state.get("criteria")
        if not isinstance(members, list) or len(members) != len(self.criteria):
            raise CheckpointError(f"{self.name}: the saved state has "
                                  f"{'no' if not isinstance(members, list) else len(members)} "
                                  f"members; this one has {len(self.criteria)}")
        for member, saved in zip(self.criteria, members, strict=True):
            member.load_state_dict(saved)
        self.stop, self.reason = state["stop"], state["reason"]

    def arrays(self) -> dict:
        return {f"{i}/{k}": v for i, member in enumerate(self.criteria)
                for k, v in member.arrays().items()}

    def load_arrays(self, arrays: dict) -> None:
        for i, member in enumerate(self.criteria):
            prefix = f"{i}/"
            member.load_arrays({k[len(prefix):]: v for k, v in arrays.items()
                                if k.startswith(prefix)})

    def get_config(self) -> dict:
        return {"criteria": [{"name": m.name, "config": m.get_config()} for m in self.criteria]}

    def __repr__(self) -> str:
        return f"{self.name}({', '.join(map(repr, self.criteria))})"


class AnyOf(_Composite):
    """Stop when any member's condition holds; the reason is that member's."""

    name = "any_of"

    def _combine(self) -> None:
        for member in self.criteria:
            if member.stop:
                self.stop, self.reason = True, member.reason
                return
        self._clear()

    @property
    def fired(self):
        for member in self.criteria:
            if member.stop:
                return member.fired
        return None


class AllOf(_Composite):
    """Stop when every member's condition holds at the same check.

    A member's flag is the state of its condition as of that member's most recent check
    (flags are levels, not latches), so ``all_of(loss_below(0.1), max_epochs(5))`` stops at the
    first epoch from the fifth on whose mean loss is below 0.1, not when a loss once dipped
    below 0.1 in epoch 2. Members checked at steps keep their flag until their next step, so
    at an epoch check they count with the value of the epoch's last step.
    """

    name = "all_of"

    def _combine(self) -> None:
        if all(member.stop for member in self.criteria):
            self.stop = True
            self.reason = "all_of: " + "; ".join(m.reason for m in self.criteria)
        else:
            self._clear()


# Lower-case names, as ``--stop`` spells them: ``StoppingEngine([max_epochs(50)])``.
max_epochs = MaxEpochs
max_steps = MaxSteps
max_time = MaxTime
loss_below = LossBelow
loss_delta_below = LossDeltaBelow
early_stopping = EarlyStopping
target = Target
non_finite = NonFinite
any_of = AnyOf
all_of = AllOf


# -- the engine -------------------------------------------------------------------------------
class StoppingEngine:
    """Any-of over ``criteria``, plus ``always`` (a fresh ``non_finite()`` unless given).

    Args:
        criteria: Criterion objects (or one), checked in order.
        always: criteria that are always on; ``None`` means ``(non_finite(),)`` and ``()``
            turns it off. One whose name is already among ``criteria`` is not added twice.
            They take precedence: when a divergence and a budget coincide, the reason is the
            divergence.

    The trainer calls ``reset(metrics=...)`` when training starts, ``check(state)`` after every
    step and every epoch, and ``finish(model)`` at the end; a resumed run calls
    ``restore(...)`` instead of ``reset``.
    """

    def __init__(self, criteria=(), always=None):
        if isinstance(criteria, Criterion):
            criteria = (criteria,)
        self.criteria = tuple(criteria)
        always = (NonFinite(),) if always is None else tuple(always)
        for i, c in enumerate((*self.criteria, *always)):
            if not isinstance(c, Criterion):
                raise ConfigError(f"StoppingEngine: expected Criterion objects; received "
                                  f"{type(c).__name__} {c!r} at position {i}")
        names = {c.name for c in self.criteria}
        self.always = tuple(c for c in always if c.name not in names)
        self._ordered = (*self.always, *self.criteria)
        self._checks = {at: tuple(c for c in self._ordered if c.checks_at(at)) for at in CADENCES}
        self.stopped = False
        self.reason: str | None = None
        self.criterion: str | None = None

    def reset(self, metrics=None) -> None:
        """Start afresh; ``metrics`` (names the epoch checks will carry) resolves monitors now.

        Giving ``metrics`` reports a wrong monitor before any training, not at the first epoch.
        """
        for c in self._ordered:
            c.reset()
            if metrics is not None:
                c.prepare(tuple(metrics))
        self.stopped, self.reason, self.criterion = False, None, None

    def check(self, state) -> bool:
        """Update the criteria that check at ``state.at``; returns whether to stop."""
        checks = self._checks.get(state.at)
        if checks is None:
            raise ConfigError(f"StoppingEngine: state.at must be 'step' or 'epoch'; "
                              f"received at={state.at!r}")
        hit = False
        for c in checks:
            c.update(state)
            if c.stop:
                hit = True
        if not (hit or self.stopped):
            return False
        return self._settle()

    def _settle(self) -> bool:
        """Stop or not on the criteria's flags; flags of criteria not checked now still hold
        from their own last check."""
        for c in self._ordered:
            if c.stop:
                self.stopped, self.reason, self.criterion = True, c.reason, c.fired.name
                return True
        self.stopped, self.reason, self.criterion = False, None, None
        return False

    def walk(self):
        for c in self._ordered:
            yield from c.walk()

    def find(self, name: str) -> list:
        """Every criterion called ``name``, members of composites included."""
        return [c for c in self.walk() if c.name == name]

    @property
    def notes(self) -> list[str]:
        """Sentences worth showing the user, e.g. that a monitor fell back to train_*."""
        return [c.note for c in self.walk() if getattr(c, "note", None)]

    @property
    def diverged(self) -> bool:
        """Whether the run stopped because the loss became NaN or infinite."""
        return self.stopped and self.criterion == NonFinite.name

    def finish(self, model) -> str | None:
        """Restore the best weights an ``early_stopping(restore_best=true)`` kept.

        Done whatever ended training (the best weights beat the last ones, and after a
        divergence they are the only good ones). With several such criteria, the one that
        fired wins, else the first. Returns a sentence saying what was done, or None.
        """
        keepers = [c for c in self.walk() if isinstance(c, EarlyStopping) and c.restore_best]
        if not keepers:
            return None
        chosen = next((c for c in keepers if c.stop), keepers[0])
        return chosen.restore(model)

    # -- persistence -------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """JSON-serialisable state; the best weights come separately from ``arrays()``."""
        return {
            "stopped": self.stopped, "reason": self.reason, "criterion": self.criterion,
            "criteria": [{"name": c.name, "budget": c.budget, "config": c.get_config(),
                          "state": c.state_dict()} for c in self._ordered],
        }

    def load_state_dict(self, state: dict) -> None:
        """Take back ``state_dict()``: the state of every criterion that keeps one.

        The criteria that are not budgets must have the same names in the same order; their
        arguments may differ (a resumed run may raise ``patience``). Budgets keep no state: they
        are matched by nothing and re-checked by ``restore``, so a resumed run may give other
        budgets than the saved run (a larger ``max_epochs``, a ``max_steps`` added).
        """
        for index, c in self._pair(state):
            c.load_state_dict(state["criteria"][index].get("state") or {})
        self.stopped, self.reason, self.criterion = (
            bool(state["stopped"]), state["reason"], state["criterion"])

    def _pair(self, state: dict) -> list:
        """``(index in the saved list, criterion)`` for every criterion that is not a budget."""
        missing = [k for k in ("stopped", "reason", "criterion", "criteria") if k not in state]
        if missing:
            raise CheckpointError(f"the saved stopping state lacks {', '.join(missing)}")
        saved = state["criteria"]
        if not isinstance(saved, list) or not all(isinstance(s, dict) for s in saved):
            raise CheckpointError("the saved stopping state's criteria must be a list of "
                                  f"objects; received {type(saved).__name__}")
        indices = [i for i, s in enumerate(saved) if s.get("budget") is not True]
        keeping = [c for c in self._ordered if not c.budget]
        saved_names = [saved[i].get("name") for i in indices]
        names = [c.name for c in keeping]
        if saved_names != names:
            raise CheckpointError(
                f"stopping criteria do not match the checkpoint: apart from budgets it has "
                f"{', '.join(map(str, saved_names)) or 'none'}; this run has "
                f"{', '.join(names) or 'none'} (on resume --stop may change the arguments of "
                f"the checkpoint's criteria and replace or add budgets, not add or drop others)")
        return list(zip(indices, keeping, strict=True))

    def restore(self, state: dict, arrays: dict, position) -> bool:
        """Resume from ``state_dict()`` and ``arrays()`` at ``position`` (a ``TrainState``).

        Every criterion hears ``restored(position)``: budgets re-check their limits at the
        saved position, the others keep their saved flags. Returns whether the run is already
        over (a spent budget, or a criterion that had fired).
        """
        self.load_state_dict(state)
        # Arrays are keyed by the saved list's positions, which budgets may shift.
        for index, c in self._pair(state):
            prefix = f"{index}/"
            c.load_arrays({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})
        for c in self._ordered:
            c.restored(position)
        return self._settle()

    def arrays(self) -> dict:
        """Arrays to store beside ``state_dict()``: ``{"<i>/best/<param>": array}``."""
        return {f"{i}/{k}": v for i, c in enumerate(self._ordered)
                for k, v in c.arrays().items()}

    def load_arrays(self, arrays: dict) -> None:
        for i, c in enumerate(self._ordered):
            prefix = f"{i}/"
            c.load_arrays({k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)})

    def describe(self) -> list[str]:
        """One ``--stop``-style line per criterion, always-on ones last."""
        return [repr(c) for c in (*self.criteria, *self.always)]

    def __repr__(self) -> str:
        return f"StoppingEngine({', '.join(self.describe())})"
