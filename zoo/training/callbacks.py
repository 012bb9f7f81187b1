"""Callbacks: objects passed to the loop that observe a run (never hooks in the batch loop)."""


class Callback:
    """Override any of these; the loop calls ``on_step_end`` only on callbacks that define it."""

    def on_train_begin(self, trainer):
        pass

    def on_step_end(self, trainer):
        pass

    def on_epoch_end(self, trainer, state):
        pass

    def on_train_end(self, trainer):
        pass


class History(Callback):
    """Keeps one row of metrics per epoch: ``{"epoch", "step", "time", "train_loss", ...}``."""

    def __init__(self):
        self.rows: list[dict] = []

    def on_epoch_end(self, trainer, state):
        self.rows.append({"epoch": state.epoch, "step": state.step,
                          "time": round(state.elapsed, 4), **state.metrics})
