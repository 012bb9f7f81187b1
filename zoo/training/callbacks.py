"""Callbacks: objects passed to the loop that observe a run (never hooks in the batch loop).

The trainer announces these events, in this order, like Keras callbacks or pytest hook calls:

- ``on_train_begin(trainer)``: before the first step (also of a resumed run);
- ``on_step_end(trainer)``: after each optimizer step, before the stopping engine sees it;
- ``on_step_checked(trainer, state, stop)``: after the engine checked the step (``stop``: its
  verdict); a checkpoint taken here resumes into exactly the checks the original run made;
- ``on_epoch_end(trainer, state)``: after an epoch, its validation and the engine's check;
- ``on_before_finish(trainer)``: training is over, and the engine's ``finish`` (which may put
  early stopping's best weights back) has not yet run: the model holds the weights training
  was continuing with;
- ``on_train_end(trainer)``: after ``finish``, with ``trainer.stop_reason`` set.

The loop calls the per-step events only on callbacks that override them.
"""


class Callback:
    """Override any of these (see the module docstring for when each is called)."""

    def on_train_begin(self, trainer):
        pass

    def on_step_end(self, trainer):
        pass

    def on_step_checked(self, trainer, state, stop):
        pass

    def on_epoch_end(self, trainer, state):
        pass

    def on_before_finish(self, trainer):
        pass

    def on_train_end(self, trainer):
        pass


def overriding(callbacks, event: str) -> list:
    """The callbacks whose class overrides ``event`` (the loop skips the rest per step)."""
    default = getattr(Callback, event)
    return [cb for cb in callbacks if getattr(type(cb), event, default) is not default]


class History(Callback):
    """Keeps one row of metrics per epoch: ``{"epoch", "step", "time", "train_loss", ...}``."""

    def __init__(self):
        self.rows: list[dict] = []

    def on_epoch_end(self, trainer, state):
        self.rows.append({"epoch": state.epoch, "step": state.step,
                          "time": round(state.elapsed, 4), **state.metrics})
