"""The progress display: one live line on a terminal, silence elsewhere."""

from __future__ import annotations

import sys
import time

from zoo.training.callbacks import Callback


def format_metrics(metrics: dict) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))


class ProgressBar(Callback):
    """Shows the current epoch's progress on stderr when it is a terminal.

    Redraws at most ten times a second so it never costs the loop measurable time, and prints
    one summary line per epoch. When stderr is not a terminal (CI, pipes, ``--json`` piped to a
    file) it stays quiet unless ``verbose`` is set, in which case only epoch lines are printed.
    """

    def __init__(self, stream=None, verbose: bool = False, enabled: bool | None = None):
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if enabled is None else enabled
        self.verbose = verbose
        self._last = 0.0

    def on_train_begin(self, trainer):
        self._epoch_t0 = time.perf_counter()

    def on_step_end(self, trainer):
        if not self.live:
            return
        now = time.perf_counter()
        if now - self._last < 0.1:
            return
        self._last = now
        done, total = trainer.batch_index, trainer.batches_per_epoch
        width = 24
        filled = int(width * done / max(total, 1))
        bar = "=" * filled + ">" + " " * (width - filled - 1) if filled < width else "=" * width
        rate = trainer.step / max(trainer.elapsed, 1e-9)
        self.stream.write(f"\repoch {trainer.epoch + 1} [{bar}] {done}/{total}  "
                          f"loss {trainer.last_loss:.4f}  {rate:,.0f} steps/s\x1b[K")
        self.stream.flush()

    def on_epoch_end(self, trainer, state):
        if not (self.live or self.verbose):
            return
        now = time.perf_counter()
        line = (f"epoch {state.epoch:>3}  {format_metrics(state.metrics)}  "
                f"({now - self._epoch_t0:.1f}s)")
        self._epoch_t0 = now
        self.stream.write(("\r" + line + "\x1b[K\n") if self.live else line + "\n")
        self.stream.flush()

    def on_train_end(self, trainer):
        if self.live:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
