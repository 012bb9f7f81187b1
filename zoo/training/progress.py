"""Training progress: one live line on a terminal, a display that updates in a notebook,
silence elsewhere (one line per epoch with ``verbose``).

The live line reads ``epoch 3/50 [=====>    ] 12/23  loss 0.4321  ETA 0:42  812 steps/s``
and always fits the terminal's width: fields are dropped, least useful first, rather than
letting the line wrap (a wrapped line leaves a trail of copies when it is redrawn). While the
first steps compile numba kernels it says ``compiling kernels`` with the seconds spent, and
steps/s counts training time only, not compilation. The ETA assumes the run uses its whole
budget (``max_epochs`` or ``max_steps``); early stopping may end it sooner.

``progress_callback`` picks the display: ``NotebookProgress`` inside a Jupyter kernel (through
IPython's display machinery, which a kernel always has; no widgets needed), ``ProgressBar``
on a terminal or when verbose, nothing otherwise.
"""

from __future__ import annotations

import html
import shutil
import sys
import time

from zoo.training.callbacks import Callback

REDRAW_SECONDS = 0.1       # a terminal line is redrawn at most this often
NOTEBOOK_SECONDS = 0.25    # a notebook display is updated at most this often
MIN_BAR = 8
MAX_BAR = 30


def format_metrics(metrics: dict) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))


def format_duration(seconds: float) -> str:
    """``0:42``, ``12:03``, ``1:02:03``."""
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def bar_text(done: int, total: int, width: int) -> str:
    """``[=====>    ]`` with ``width`` characters between the brackets."""
    filled = int(width * done / max(total, 1))
    inner = "=" * width if filled >= width else "=" * filled + ">" + " " * (width - filled - 1)
    return f"[{inner}]"


def fit_line(fields: list[tuple[int, str]], width: int, bar: tuple[int, int] | None) -> str:
    """Join ``(priority, text)`` fields (lower priority number = kept longer) into a line of at
    most ``width - 1`` characters, keeping their order; ``bar = (done, total)`` is drawn after
    the first field with whatever room is left, between ``MIN_BAR`` and ``MAX_BAR``."""
    limit = max(width - 1, 1)
    kept = list(fields)
    while len(kept) > 1 and len("  ".join(t for _, t in kept)) > limit:
        kept.remove(max(kept, key=lambda f: f[0]))
    texts = [t for _, t in kept]
    line = "  ".join(texts)
    if bar is not None:
        room = limit - len(line) - 1 - 2  # a space before it, the brackets
        if room >= MIN_BAR:
            drawn = bar_text(bar[0], bar[1], min(room, MAX_BAR))
            line = " ".join([texts[0], drawn]) + (
                "  " + "  ".join(texts[1:]) if len(texts) > 1 else "")
    return line[:limit]


def terminal_width(stream) -> int:
    """Columns of the terminal (``COLUMNS`` wins, as ``shutil`` reads it), 80 if unknown."""
    return shutil.get_terminal_size((80, 24)).columns


class _Progress:
    """What every display tracks: the budget, compile time, training-only speed, ETA."""

    def begin(self, trainer) -> None:
        from zoo.kernels import compile_seconds

        self._compile0 = self._compile_last = compile_seconds()
        self._t0 = time.perf_counter()
        self._step0 = trainer.step
        self.compiling = True  # until a step adds no compile time
        self.epoch_budget, self.step_budget = _budgets(trainer)
        self._epoch_t0 = self._t0

    def observe(self, trainer) -> None:
        """After a step: did it compile?"""
        from zoo.kernels import compile_seconds

        now = compile_seconds()
        self.compiling = now > self._compile_last
        self._compile_last = now

    @property
    def compile_time(self) -> float:
        return self._compile_last - self._compile0

    def steps_per_second(self, trainer) -> float | None:
        """Steps of this session over its time spent training (compilation left out)."""
        train_time = time.perf_counter() - self._t0 - self.compile_time
        steps = trainer.step - self._step0
        return steps / train_time if steps and train_time > 1e-6 else None

    def eta(self, trainer, rate: float | None) -> float | None:
        if not rate:
            return None
        per_epoch = max(trainer.batches_per_epoch, 1)
        left = []
        if self.epoch_budget is not None:
            left.append((self.epoch_budget - trainer.epoch) * per_epoch - trainer.batch_index)
        if self.step_budget is not None:
            left.append(self.step_budget - trainer.step)
        return max(min(left), 0) / rate if left else None

    def epoch_label(self, epoch: int) -> str:
        return f"epoch {epoch}/{self.epoch_budget}" if self.epoch_budget else f"epoch {epoch}"

    def fields(self, trainer) -> tuple[list[tuple[int, str]], tuple[int, int] | None]:
        """The live line's fields by priority, and the bar's position."""
        label = self.epoch_label(trainer.epoch + 1)
        if self.compiling:
            return [(0, label), (1, f"compiling kernels {self.compile_time:.1f}s")], None
        done, total = trainer.batch_index, trainer.batches_per_epoch
        rate = self.steps_per_second(trainer)
        eta = self.eta(trainer, rate)
        fields = [(0, label), (3, f"{done}/{total}"), (1, f"loss {trainer.last_loss:.4f}")]
        if eta is not None:
            fields.append((2, f"ETA {format_duration(eta)}"))
        if rate is not None:
            fields.append((4, f"{rate:,.0f} steps/s"))
        return fields, (done, total)

    def epoch_line(self, state) -> str:
        now = time.perf_counter()
        line = (f"{self.epoch_label(state.epoch)}  {format_metrics(state.metrics)}  "
                f"({now - self._epoch_t0:.1f}s)")
        self._epoch_t0 = now
        return line


def _budgets(trainer) -> tuple[int | None, int | None]:
    """The run's top-level epoch and step budgets (a budget inside any_of/all_of is not one)."""
    epochs = [c.epochs for c in trainer.engine.criteria if getattr(c, "name", "") == "max_epochs"]
    steps = [c.steps for c in trainer.engine.criteria if getattr(c, "name", "") == "max_steps"]
    return (min(epochs) if epochs else None), (min(steps) if steps else None)


class ProgressBar(_Progress, Callback):
    """The live line on stderr when it is a terminal; epoch lines with ``verbose``.

    Redraws at most ten times a second so it never costs the loop measurable time. When
    stderr is not a terminal (CI, pipes, ``--json`` piped to a file) it stays quiet unless
    ``verbose`` is set, in which case only epoch lines are printed.
    """

    def __init__(self, stream=None, verbose: bool = False, enabled: bool | None = None):
        self.stream = stream or sys.stderr
        self.live = _isatty(self.stream) if enabled is None else enabled
        self.verbose = verbose
        self._last = 0.0

    def on_train_begin(self, trainer):
        self.begin(trainer)
        if self.live:
            self._draw(trainer)

    def on_step_end(self, trainer):
        if not self.live:
            return
        self.observe(trainer)
        now = time.perf_counter()
        if now - self._last < REDRAW_SECONDS:
            return
        self._last = now
        self._draw(trainer)

    def _draw(self, trainer):
        fields, bar = self.fields(trainer)
        line = fit_line(fields, terminal_width(self.stream), bar)
        self.stream.write("\r" + line + "\x1b[K")
        self.stream.flush()

    def on_epoch_end(self, trainer, state):
        if not (self.live or self.verbose):
            return
        # A permanent line, written once: it may wrap without leaving a trail, so it keeps
        # every metric.
        line = self.epoch_line(state)
        self.stream.write(("\r" + line + "\x1b[K\n") if self.live else line + "\n")
        self.stream.flush()

    def on_train_end(self, trainer):
        if self.live:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


class NotebookProgress(_Progress, Callback):
    """A display in a Jupyter notebook, updated in place through an IPython display handle.

    It shows an HTML ``<progress>`` bar with the same text as the terminal line (and that
    text alone to front ends without HTML), and the epochs below it: every epoch with
    ``verbose``, else the latest.
    """

    def __init__(self, verbose: bool = False):
        self.verbose = verbose
        self.handle = None
        self.epochs: list[str] = []
        self._last = 0.0

    def on_train_begin(self, trainer):
        from IPython.display import display

        self.begin(trainer)
        self.status = self._status(trainer)
        self.handle = display(self._bundle(), raw=True, display_id=True)

    def on_step_end(self, trainer):
        self.observe(trainer)
        now = time.perf_counter()
        if now - self._last < NOTEBOOK_SECONDS:
            return
        self._last = now
        self.status = self._status(trainer)
        self._update()

    def on_epoch_end(self, trainer, state):
        line = self.epoch_line(state)
        self.epochs = [*self.epochs, line] if self.verbose else [line]
        self._update()

    def on_train_end(self, trainer):
        stopped = trainer.stop_reason or ""
        self.status = (f"{self.epoch_label(trainer.epoch)}  done in "
                       f"{format_duration(time.perf_counter() - self._t0)}  "
                       f"(compile {self.compile_time:.1f}s): {stopped}")
        self._done = (trainer.step, trainer.step)
        self._update()

    def _status(self, trainer) -> str:
        fields, bar = self.fields(trainer)
        self._done = bar
        return "  ".join(text for _, text in fields)

    def _update(self):
        if self.handle is not None:
            self.handle.update(self._bundle(), raw=True)

    def _bundle(self) -> dict:
        plain = "\n".join([self.status, *self.epochs])
        done = getattr(self, "_done", None)
        bar = "" if done is None else (
            f'<progress value="{done[0]}" max="{max(done[1], 1)}" '
            f'style="width:16em;vertical-align:middle"></progress> ')
        rows = "".join(f"<div>{html.escape(line)}</div>" for line in self.epochs)
        markup = (f'<div style="font-family:monospace;white-space:pre">{bar}'
                  f"{html.escape(self.status)}{rows}</div>")
        return {"text/plain": plain, "text/html": markup}


def in_notebook() -> bool:
    """True inside a Jupyter (IPython) kernel; False in a terminal IPython or plain Python.

    Only looks: IPython is imported by the kernel already, never by this function.
    """
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def progress_callback(*, verbose: bool = False, enabled: bool | None = None, stream=None):
    """The display that fits where the code runs, or None for none.

    ``enabled=None`` decides: a notebook display in a Jupyter kernel, the live line when
    ``stream`` (stderr) is a terminal, epoch lines only with ``verbose``. ``True`` forces a
    display (the live line even off a terminal), ``False`` shows nothing, not even epochs.
    """
    if enabled is False:
        return None
    if in_notebook() and stream is None:
        return NotebookProgress(verbose=verbose)
    bar = ProgressBar(stream=stream, verbose=verbose, enabled=enabled)
    return bar if bar.live or verbose else None


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a file
        return False
