"""The checkpoint callback: periodic, best and final checkpoints of a run as it trains.

It only listens to what the trainer announces (``zoo.training.callbacks``): a step checked by
the stopping engine, an epoch's end, the moment before the engine's ``finish`` and the end of
training. It never rewires the trainer or the engine.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from zoo.checkpoints.checkpoint import save_run
from zoo.errors import ConfigError
from zoo.training.callbacks import Callback

__all__ = ["Checkpointer", "attach", "best_path_for", "format_every", "parse_every"]

_EVERY = re.compile(r"\s*([0-9]+)\s*(steps?|epochs?)?\s*", re.IGNORECASE)


def parse_every(text) -> tuple[str, int] | None:
    """``--checkpoint-every``: ``"N"`` or ``"Nepochs"`` -> ``("epoch", N)``; ``"Nsteps"`` ->
    ``("step", N)``; None stays None."""
    if text is None:
        return None
    match = _EVERY.fullmatch(str(text))
    if match is None or int(match[1]) <= 0:
        raise ConfigError(f"--checkpoint-every expects a positive number of epochs (5 or "
                          f"5epochs) or steps (200steps); received {text!r}")
    unit = (match[2] or "epoch").lower().rstrip("s")
    return unit, int(match[1])


def format_every(every: tuple[str, int] | None) -> str | None:
    return None if every is None else f"{every[1]}{every[0]}s"


def best_path_for(path) -> Path:
    """Where the best checkpoint goes beside ``path``: ``run.ckpt`` -> ``run.best.ckpt``."""
    path = Path(path)
    if path.suffix:
        return path.with_name(f"{path.stem}.best{path.suffix}")
    return path.with_name(path.name + ".best")


class Checkpointer(Callback):
    """Saves a run: the latest to ``path`` every N epochs or steps and at the end, the best
    epoch to ``best_path``.

    "Best" is early stopping's best epoch when the run has an ``early_stopping`` criterion,
    else the lowest ``val_loss`` (``train_loss`` without a validation split). A checkpoint is
    written only from finite weights and a finite loss: a diverged run (``non_finite``) never
    replaces a good file. Step checkpoints are taken at ``on_step_checked``, after the stopping
    engine has checked the step, so a run resumed from one makes exactly the checks the
    original made.

    At ``on_before_finish`` it captures the weights training was continuing with, before early
    stopping restores the best ones; ``save_run`` stores them for an exact resume. With no
    ``path`` that is all it does.

    Args:
        run: the ``Run`` (``attach`` adds the callback to its trainer).
        path: the latest / final checkpoint, or None.
        every: ``("epoch", N)`` or ``("step", N)`` (see ``parse_every``), or None for the
            end of the run only.
        best_path: where the best epoch goes (default ``best_path_for(path)`` when ``every``
            is given; the best is tracked only with a cadence).
        best: the saved ``{"monitor", "value", "epoch"}`` of a resumed run.
    """

    def __init__(self, run, path=None, every=None, best_path=None, best=None):
        self.run = run
        self.path = None if path is None else Path(path)
        self.every = every
        if every is not None and path is None:
            raise ConfigError("--checkpoint-every needs a file to write: give --save PATH")
        self.best_path = (Path(best_path) if best_path is not None
                          else best_path_for(path) if every is not None else None)
        self.best = best
        self.live_state: dict | None = None
        self.written: Path | None = None
        self.best_written: Path | None = None
        self.skipped: str | None = None  # why the final checkpoint was not written
        self.saves = 0

    # -- what the trainer announces --------------------------------------------------------
    def on_step_checked(self, trainer, state, stop):
        every = self.every
        if every is not None and every[0] == "step" and not stop and state.step % every[1] == 0:
            self._save_latest(trainer)

    def on_before_finish(self, trainer):
        # Early stopping may now put the best epoch's weights back; keep the weights training
        # was continuing with, which is what a resumed run must start from.
        self.live_state = trainer.model.state_dict()

    def on_epoch_end(self, trainer, state):
        if self.every is None:
            return
        healthy = self._healthy(trainer)
        if healthy and self._is_best(state):
            self._write(self.best_path, trainer)
            self.best_written = self.best_path
        if self.every[0] == "epoch" and state.epoch % self.every[1] == 0 and healthy:
            self._save_latest(trainer)

    def on_train_end(self, trainer):
        if self.path is None:
            return
        if self.run.engine.diverged or not self._healthy(trainer, live=True):
            kept = "; it keeps the last finite checkpoint" if self.path.exists() else ""
            self.skipped = (f"checkpoint not written to {self.path}: the weights are not "
                            f"finite ({self.run.engine.reason or 'the run diverged'}){kept}")
            return
        self._write(self.path, trainer)
        self.written = self.path
        self.run.checkpoint_path = str(self.path)

    # -- helpers -------------------------------------------------------------------------------
    def _save_latest(self, trainer):
        if self._healthy(trainer):
            self._write(self.path, trainer)

    def _healthy(self, trainer, live: bool = False) -> bool:
        if not math.isfinite(trainer.last_loss) and trainer.step > 0:
            return False
        if not np.isfinite(trainer.values).all():
            return False
        if live and self.live_state is not None:
            return all(np.isfinite(v).all() for v in self.live_state.values()
                       if v.dtype.kind == "f")
        return True

    def _is_best(self, state) -> bool:
        keepers = [c for c in self.run.engine.walk() if c.name == "early_stopping"]
        if keepers:
            keeper = next((c for c in keepers if getattr(c, "restore_best", False)), keepers[0])
            if keeper.best_epoch == state.epoch:
                self.best = {"monitor": keeper.monitor, "value": keeper.best,
                             "epoch": state.epoch}
                return True
            return False
        monitor = "val_loss" if "val_loss" in state.metrics else "train_loss"
        value = state.metrics.get(monitor)
        if value is None or not math.isfinite(value):
            return False
        if self.best is None or self.best.get("monitor") != monitor \
                or value < self.best.get("value", math.inf):
            self.best = {"monitor": monitor, "value": float(value), "epoch": state.epoch}
            return True
        return False

    def _write(self, path, trainer) -> None:
        # Mid-run the model holds the live weights; at the end live_state has them.
        live = self.live_state if trainer.stop_reason is not None else None
        save_run(self.run, path, live_state=live, checkpointing=self.metadata())
        self.saves += 1

    def metadata(self) -> dict:
        return {"every": format_every(self.every), "best": self.best}


def attach(run, path=None, every=None, best_path=None, best=None) -> Checkpointer:
    """Add a ``Checkpointer`` to ``run``'s trainer (before ``fit()``) and return it."""
    checkpointer = Checkpointer(run, path, every, best_path, best)
    run.trainer.callbacks.append(checkpointer)
    return checkpointer
