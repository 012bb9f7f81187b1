"""The one training loop every architecture uses: forward -> loss -> backward -> update -> stop?

The seed note's flowchart, with mini-batches. The epoch and batch loop is Python; each batch's
arithmetic is numpy BLAS plus numba kernels inside the layers, loss and optimizer.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time

import numpy as np

from zoo import checks
from zoo.errors import DataError, describe_array
from zoo.kernels.fpenv import flush_denormals
from zoo.kernels.threads import make_governor, single_threaded_blas, step_scope
from zoo.optimizers import SGD, clip_grad_norm
from zoo.training.callbacks import History, overriding
from zoo.training.flat import flatten_parameters, owner_chunks
from zoo.training.metrics import task_metrics
from zoo.training.state import TrainState

INTERRUPTED = "interrupted: stopped by the user (Ctrl-C)"


def evaluate(model, loss, x, y, task: str, batch_size: int = 512, metrics=None,
             outputs_out: list | None = None) -> dict:
    """Loss and task metrics of ``model`` on ``(x, y)``, in inference mode.

    For ``task == "reconstruct"`` the target is ``x`` itself. ``metrics``: the ``Metric``
    objects to report (default: the task's per-epoch ones). ``outputs_out``: a list that
    receives the raw outputs (for a confusion matrix).
    """
    target = x if task == "reconstruct" else y
    outputs = np.empty((len(x), *model.output_shape), dtype=model.dtype)
    total = 0.0
    # As in train_step: BLAS on one thread, so the metrics are the same bits whatever thread
    # count the process (a test runner, a notebook, a compare worker) gave its BLAS library;
    # denormals flushed, as the model was trained.
    with single_threaded_blas(), flush_denormals():
        for i in range(0, len(x), batch_size):
            out = model.forward(np.ascontiguousarray(x[i:i + batch_size]), training=False)
            outputs[i:i + len(out)] = out
            total += loss.forward(out, target[i:i + batch_size]) * len(out)
    if outputs_out is not None:
        outputs_out.append(outputs)
    return task_metrics(task, outputs, target, total / len(x), loss.activate, metrics)


class Trainer:
    """Trains a built model on mini-batches until the stopping engine says stop.

    Args:
        model: a built Layer (usually ``Sequential``).
        loss: a ``Loss``; optimizer: an ``Optimizer``.
        engine: a ``StoppingEngine`` (criteria checked after steps and epochs).
        task: classify / regress / reconstruct (decides metrics and targets).
        batch_size: examples per step; the last batch of an epoch may be smaller.
        rng: the ``numpy.random.Generator`` that orders the data.
        shuffle: draw a new order of the training examples every epoch (the default); with
            ``False`` every epoch walks them in their stored order, batch after batch from the
            first example, as some published protocols do (``rng`` is then never drawn from).
        clip_norm: clip the global gradient norm to this value before each update.
        callbacks: observers (progress, history, checkpoints).
        schedule: a ``zoo.schedules.Schedule`` setting the optimizer's rate before each step
            from ``base_lr`` (default: the optimizer's rate when training starts), or None.
        metrics: the ``Metric`` objects reported after each epoch (default: the task's
            per-epoch built-ins).

    The loop keeps its position (``epoch``, ``step``, the epoch's permutation and the next
    batch) on the object, so ``state_dict()`` taken between steps resumes bit-exactly.
    """

    def __init__(self, model, loss, optimizer, engine, *, task: str, batch_size: int = 32,
                 rng: np.random.Generator | None = None, clip_norm: float | None = None,
                 callbacks=(), eval_batch_size: int = 512, schedule=None,
                 base_lr: float | None = None, metrics=None, shuffle: bool = True):
        checks.positive_int(None, "batch_size", batch_size)
        self.shuffle = checks.boolean(None, "shuffle", shuffle)
        if clip_norm is not None:
            checks.positive_number(None, "clip_norm", clip_norm)
        self.model, self.loss, self.optimizer, self.engine = model, loss, optimizer, engine
        self.task = task
        self.batch_size = int(batch_size)
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.clip_norm = clip_norm
        self.history = History()
        self.callbacks = [self.history, *callbacks]
        self.eval_batch_size = eval_batch_size
        self.schedule = schedule
        self.base_lr = float(base_lr if base_lr is not None else optimizer.lr)
        self.metrics = metrics
        self.schedule_note: str | None = None
        self._values_list, self._grads_list = self._flat_groups(model, optimizer)
        # The update cut where the products cut the weights (loads numba: not at import time)
        from zoo.kernels.optim import chunk_plans

        params = [p for _, p in model.named_parameters()]
        plans = {id(v): bounds for v in self._values_list
                 if (bounds := owner_chunks(v, params)) is not None}
        # (no plan, as for small models whose steps take microseconds: no scope to enter)
        self._update_scope = (lambda: chunk_plans(plans)) if plans else contextlib.nullcontext
        _skip_input_grad(model)
        # A plain stack of Dense layers: forward, loss and backward in one kernel call.
        from zoo.training.fused import dense_stack_step  # loads numba: not at import time

        self._fused = dense_stack_step(model, loss, self.values, self.grads)
        # Position in the run: what a checkpoint needs to resume exactly.
        self.epoch = 0
        self.step = 0
        self.batch_index = 0
        self.batches_per_epoch = 0
        self.elapsed = 0.0
        self.permutation: np.ndarray | None = None
        self.epoch_loss_sum = 0.0
        self.epoch_examples = 0
        self.epoch_correct = 0  # classify: training examples predicted right this epoch
        self.last_loss = float("nan")
        self.stop_reason: str | None = None
        self.finish_note: str | None = None  # e.g. "restored the weights of epoch 12"
        self._interrupted = False
        # How many threads zoo's parallel kernels use, chosen from the step times (same bits).
        self._governor = make_governor()

    # -- the loop ----------------------------------------------------------------------------
    def fit(self, x, y, x_val=None, y_val=None) -> list[dict]:
        """Train until a criterion fires; returns the per-epoch history rows."""
        x, y = self._check_data(x, y, "training")
        has_val = x_val is not None and len(x_val) > 0
        if has_val:
            x_val, y_val = self._check_data(x_val, y_val, "validation")
        target = x if self.task == "reconstruct" else y
        n = len(x)
        self.batches_per_epoch = -(-n // self.batch_size)
        step_callbacks = overriding(self.callbacks, "on_step_end")
        checked_callbacks = overriding(self.callbacks, "on_step_checked")
        for cb in self.callbacks:
            cb.on_train_begin(self)
        if self.step == 0:  # a fresh run: a monitor that will never exist fails now, not later
            self.engine.reset(metrics=self.metric_names(has_val))
        if self.schedule is not None:
            self.schedule_note = self.schedule.resolve(self.metric_names(has_val))
        count_correct = self.task == "classify"
        xbuf = np.empty((self.batch_size, *x.shape[1:]), dtype=x.dtype)
        tbuf = np.empty((self.batch_size, *target.shape[1:]), dtype=target.dtype)
        t_start = time.perf_counter() - self.elapsed
        with _stop_on_sigint(self):
            while not (self.engine.stopped or self._interrupted):
                if self.permutation is None:
                    self.permutation = self.rng.permutation(n) if self.shuffle else np.arange(n)
                    self.batch_index = 0
                    self.epoch_loss_sum, self.epoch_examples = 0.0, 0
                    self.epoch_correct = 0
                while self.batch_index < self.batches_per_epoch:
                    lo = self.batch_index * self.batch_size
                    idx = self.permutation[lo:lo + self.batch_size]
                    m = len(idx)
                    xb = np.take(x, idx, axis=0, out=xbuf[:m])
                    tb = np.take(target, idx, axis=0, out=tbuf[:m])
                    if self.schedule is not None:
                        self.optimizer.lr = self.schedule.lr(self.base_lr, self.step + 1,
                                                             self.epoch)
                    value = self.train_step(xb, tb)
                    if count_correct:
                        self.epoch_correct += int(np.count_nonzero(
                            np.argmax(self._outputs, axis=1) == tb))
                    self.batch_index += 1
                    self.last_loss = value
                    self.epoch_loss_sum += value * m
                    self.epoch_examples += m
                    self.elapsed = time.perf_counter() - t_start
                    for cb in step_callbacks:
                        cb.on_step_end(self)
                    state = TrainState("step", self.epoch, self.step, self.elapsed, value,
                                       model=self.model)
                    stop = self.engine.check(state)
                    for cb in checked_callbacks:
                        cb.on_step_checked(self, state, stop)
                    if stop or self._interrupted:
                        break
                if self.batch_index >= self.batches_per_epoch:
                    self._end_epoch(x_val, y_val, has_val, t_start)
        self.stop_reason = self.engine.reason if self.engine.stopped else INTERRUPTED
        for cb in self.callbacks:
            cb.on_before_finish(self)
        self.finish_note = self.engine.finish(self.model)
        for cb in self.callbacks:
            cb.on_train_end(self)
        return self.history.rows

    def train_step(self, xb: np.ndarray, tb: np.ndarray) -> float:
        """One optimizer step on a batch: forward -> loss -> backward -> (clip) -> update.

        The whole of the per-batch work; ``fit`` adds batching and bookkeeping around it and
        ``benchmarks/steps.py`` times exactly this. Returns the batch's loss. BLAS runs on one
        thread throughout, as the thread policy says (``zoo.kernels.threads``), even where a
        user's program lets it use more: then no product's bits depend on a thread count.
        Denormals are flushed to zero (``zoo.kernels.fpenv``): a fitted batch's tiny gradients
        would otherwise take the CPU's slow path. On more than one thread, zoo's workers keep
        watching for jobs until the step ends (``zoo.kernels.threads.step_scope``).
        """
        governor = self._governor
        start = time.perf_counter() if governor is not None else 0.0
        fused = None
        if self._fused is not None:  # the kernel flushes denormals and holds BLAS itself
            fused = self._fused.step(xb, tb, self._fused_sgd())
        if fused is not None and fused[2]:  # it made SGD's update too
            self._outputs, value, _ = fused
            self.optimizer.count_step()
        else:
            with step_scope(), flush_denormals():
                value = self._layers_step(xb, tb, fused)
        self.step += 1
        if governor is not None and not governor.observe(time.perf_counter() - start):
            self._governor = None  # steps too short for threads to matter: stop timing them
        return value

    def _layers_step(self, xb, tb, fused) -> float:
        """The rest of ``train_step`` where the fused step did not make the update: the
        forward, loss and backward through the layers (unless ``fused`` made them), then
        clipping and the optimizer's step. Returns the batch's loss."""
        if fused is not None:
            self._outputs, value, _ = fused
        else:
            self._outputs = self.model.forward(xb, training=True)
            value = self.loss.forward(self._outputs, tb)
            self.model.backward(self.loss.backward())
        if self.clip_norm is not None:
            clip_grad_norm(self._grads_list, self.clip_norm)
        with self._update_scope():
            self.optimizer.step(self._values_list, self._grads_list)
        return value

    def _fused_sgd(self):
        """``SGD.fused_update``'s arguments where the fused Dense step may make the update
        itself: plain ``SGD`` (a subclass may change the update), no clipping (it needs every
        gradient first), one parameter group. Else None."""
        optimizer = self.optimizer
        if type(optimizer) is not SGD or self.clip_norm is not None \
                or len(self._values_list) != 1 or self._values_list[0] is not self.values \
                or optimizer.decay_mask is not None:
            return None
        return optimizer.fused_update(self._values_list[0], self._grads_list[0])

    def _flat_groups(self, model, optimizer):
        """The flat parameter buffers, as the optimizer gets them: one array, or two when the
        optimizer exempts biases and norm parameters from weight decay (``decay_bias_norm=False``):
        the decayed weights (2 or more dimensions) first, then the 1-D parameters (biases, norm
        scales and shifts), each a contiguous slice, with ``optimizer.decay_mask`` saying which
        is which."""
        exempt = not getattr(optimizer, "decay_bias_norm", True)
        self.values, self.grads = flatten_parameters(
            model, key=(lambda p: p.value.ndim < 2) if exempt else None)
        if not exempt:
            return [self.values], [self.grads]
        split = sum(p.value.size for _, p in model.named_parameters() if p.value.ndim >= 2)
        groups = [(slice(0, split), True), (slice(split, self.values.size), False)]
        groups = [(s, decay) for s, decay in groups if s.stop > s.start]
        optimizer.decay_mask = [decay for _, decay in groups]
        return ([self.values[s] for s, _ in groups], [self.grads[s] for s, _ in groups])

    def metric_names(self, has_val: bool) -> list[str]:
        """The metrics each epoch reports, known before training starts."""
        from zoo.training.metrics import metrics_for

        metrics = self.metrics if self.metrics is not None else \
            metrics_for(self.task, every_epoch=True)
        names = ["loss", *(m.name for m in metrics)]
        train = ["train_loss"] + (["train_accuracy"] if self.task == "classify" else [])
        return train + ([f"val_{n}" for n in names] if has_val else [])

    def _end_epoch(self, x_val, y_val, has_val, t_start) -> None:
        self.epoch += 1
        self.permutation = None
        metrics = {"train_loss": self.epoch_loss_sum / max(self.epoch_examples, 1)}
        if self.task == "classify":  # as Keras: measured on the batches as they trained
            metrics["train_accuracy"] = self.epoch_correct / max(self.epoch_examples, 1)
        if has_val:
            val = evaluate(self.model, self.loss, x_val, y_val, self.task, self.eval_batch_size,
                           self.metrics)
            metrics.update({f"val_{k}": v for k, v in val.items()})
        self.elapsed = time.perf_counter() - t_start
        state = TrainState("epoch", self.epoch, self.step, self.elapsed,
                           metrics["train_loss"], metrics, self.model)
        self.engine.check(state)
        if self.schedule is not None:
            self.schedule.update(self.epoch, metrics, self.base_lr)
        for cb in self.callbacks:
            cb.on_epoch_end(self, state)

    def _check_data(self, x, y, split: str):
        expected = tuple(self.model.input_shape)
        if not isinstance(x, np.ndarray) or x.shape[1:] != expected:
            raise DataError(f"{split} inputs must have shape (N, {', '.join(map(str, expected))})"
                            f"; received {describe_array(x)}")
        if len(x) == 0:
            raise DataError(f"{split} data is empty; expected at least one example")
        x = np.ascontiguousarray(x, dtype=self.model.dtype)
        if self.task == "reconstruct":
            return x, None
        if y is None or len(y) != len(x):
            raise DataError(f"{split} data: len(x) = {len(x)} but len(y) = "
                            f"{None if y is None else len(y)}; expected equal lengths")
        y = np.ascontiguousarray(y, dtype=np.int64 if self.task == "classify"
                                 else self.model.dtype)
        return x, y

    # -- resumable state ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The loop's position: JSON-able fields plus the epoch's permutation (or None)."""
        return {
            "epoch": self.epoch, "step": self.step, "batch_index": self.batch_index,
            "elapsed": self.elapsed, "epoch_loss_sum": self.epoch_loss_sum,
            "epoch_examples": self.epoch_examples, "epoch_correct": self.epoch_correct,
            "last_loss": self.last_loss,
            "rng": self.rng.bit_generator.state, "history": self.history.rows,
            "permutation": self.permutation,
        }

    def position(self) -> TrainState:
        """Where the run stands, as the stopping engine's ``restore`` needs it."""
        return TrainState("epoch", self.epoch, self.step, self.elapsed, self.last_loss)

    def load_state_dict(self, state: dict) -> None:
        for key in ("epoch", "step", "batch_index", "elapsed", "epoch_loss_sum",
                    "epoch_examples", "last_loss"):
            setattr(self, key, state[key])
        self.epoch_correct = int(state.get("epoch_correct", 0))  # absent from older files
        self.rng.bit_generator.state = state["rng"]
        self.history.rows = list(state["history"])
        perm = state.get("permutation")
        self.permutation = None if perm is None else np.asarray(perm, dtype=np.int64)


def _skip_input_grad(model) -> None:
    """Let the model's first layer skip its input gradient: nothing upstream uses it.

    The trainer discards what ``model.backward`` returns, so the first layer's input-gradient
    GEMM (for the mlp workload, a quarter of the step) is wasted work. Only the very first
    layer, reached through nested ``Sequential``s, and only one that offers
    ``needs_input_grad``: a layer in front of it would otherwise receive None.
    """
    first = model
    while isinstance(getattr(first, "layers", None), list) and first.layers:
        first = first.layers[0]
    if hasattr(first, "needs_input_grad"):
        first.needs_input_grad = False


class _stop_on_sigint:
    """Turn the first Ctrl-C into a clean stop after the current step; a second one aborts."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum, frame):
        if self.trainer._interrupted:
            raise KeyboardInterrupt
        self.trainer._interrupted = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False
