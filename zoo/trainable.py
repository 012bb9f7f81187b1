"""``model.fit``, ``evaluate``, ``predict``, ``predict_proba`` and ``save`` for models built from
layers in Python: the methods ``Sequential`` (and any model class that inherits this) offers.

Each is a few lines over ``zoo.api`` and ``zoo.run.Run``; see docs/python-api.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from zoo.errors import ConfigError
from zoo.layers.base import Layer


class Trainable(Layer):
    """A ``Layer`` that trains and predicts: the base of models built in Python.

    After ``fit`` (or ``zoo.load``) the model knows its task, loss and classes
    (``model.trained``); before, ``predict`` returns the raw outputs.
    """

    trained: Any = None  # a zoo.api.Trained once fitted or loaded

    def fit(self, x, y=None, *, epochs: int | None = None, batch_size: int | None = None,
            validation_split: float = 0.1, stop=(), optimizer: str | None = None,
            lr: float | None = None, loss: str | None = None, schedule: str | None = None,
            metric: str | None = None, task: str | None = None, seed: int = 0,
            clip_norm: float | None = None, dtype: str | None = None,
            progress: bool | None = None, verbose: bool = False, callbacks=(), host=None):
        """Train on arrays until a stopping criterion fires; returns the ``RunResult``.

        Args:
            x: inputs, batch first: ``(N, F)``, ``(N, T, F)`` or ``(N, C, H, W)``.
            y: integer class labels (classify), decimal targets (regress), or None
                (reconstruct ``x``). The guess is printed; ``task=`` chooses instead.
            epochs, batch_size, optimizer, lr, clip_norm, seed: as ``zoo train`` takes them
                (defaults: 50 epochs with early stopping on val_loss, batch 64, adam 1e-3).
            validation_split: fraction of ``x`` held out to validate on (0: none).
            stop: ``--stop`` specs (``["max_epochs=20", "early_stopping(patience=3)"]``);
                when given they replace the default early stopping.
            optimizer, loss: specs as ``--optimizer`` and ``--loss`` take them
                (``"sgd(momentum=0.9)"``; the loss by default softmax cross-entropy for
                classify, MSE otherwise).
            schedule: a learning-rate schedule spec, ``"cosine(warmup_epochs=2)"``.
            metric: what the default early stopping watches, ``"macro_f1"``.
            dtype: ``float32`` or ``float64`` (default: the model's, or float32).
            progress: show a progress bar (default: on a terminal or in a notebook).
            verbose: one line per epoch, also where no bar is shown.
            callbacks: extra ``zoo.training.callbacks.Callback`` observers.
            host: the plugin host (default: the process-wide one).

        A built model keeps its weights and trains on (as Keras does); an unbuilt one is built
        for ``x`` first.
        """
        from zoo.api import fit_model

        return fit_model(self, x, y, epochs=epochs, batch_size=batch_size,
                         validation_split=validation_split, stop=stop, optimizer=optimizer,
                         lr=lr, loss=loss, schedule=schedule, metric=metric, task=task,
                         seed=seed, clip_norm=clip_norm,
                         dtype=dtype, progress=progress, verbose=verbose, callbacks=callbacks,
                         host=host)

    def evaluate(self, x, y=None, *, batch_size: int = 512) -> dict:
        """Loss and metrics on ``(x, y)`` (``y`` unused when reconstructing), as ``zoo train``
        reports them: ``{"loss": ..., "accuracy": ...}`` or ``{"loss", "mse", "r2"}``."""
        from zoo.api import arrays_dataset
        from zoo.training.loop import evaluate

        trained = self._trained("evaluate")
        data, _ = arrays_dataset(x, y, task=trained.task)
        self.check_input(data.x_train)
        if trained.task == "classify" and data.y_train.max() >= trained.spec.output_size:
            raise ConfigError(f"y has label {int(data.y_train.max())}; the model was trained "
                              f"on {trained.spec.output_size} classes")
        x_in = data.x_train.astype(self.dtype, copy=False)
        return evaluate(self, trained.loss, x_in, data.y_train, trained.task, batch_size)

    def raw_outputs(self, x, batch_size: int = 256) -> np.ndarray:
        """The model's raw outputs for ``x`` in inference mode, in batches (logits for a
        classifier: its softmax lives in the loss)."""
        x = np.asarray(x)
        self.check_input(x)
        x = x.astype(self.dtype, copy=False)
        from zoo.kernels.fpenv import flush_denormals
        from zoo.kernels.threads import single_threaded_blas

        # As in training: BLAS on one thread (the same bits whatever the process's BLAS count)
        # and denormals flushed.
        with single_threaded_blas(), flush_denormals():
            outs = [self.forward(np.ascontiguousarray(x[i:i + batch_size]), training=False)
                    for i in range(0, len(x), batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0, *self.output_shape), self.dtype)

    def predict(self, x, batch_size: int = 256) -> np.ndarray:
        """Predictions for ``x``: class labels (int64) for a classifier, values for regression
        and reconstruction (through the loss's output activation). A model not yet trained or
        loaded has no task and returns its raw outputs."""
        if self.trained is None:
            return self.raw_outputs(x, batch_size)
        from zoo.inference import prediction_arrays

        arrays = prediction_arrays(self.raw_outputs(x, batch_size), self.trained.spec,
                                   self.trained.loss)
        return arrays["labels"] if "labels" in arrays else arrays["values"]

    def predict_proba(self, x, batch_size: int = 256) -> np.ndarray:
        """Class probabilities ``(N, classes)`` of a trained classifier."""
        trained = self._trained("predict_proba")
        if trained.task != "classify":
            raise ConfigError(f"predict_proba needs a classifier; this model's task is "
                              f"{trained.task} (use predict)")
        return np.asarray(trained.loss.activate(self.raw_outputs(x, batch_size)))

    def save(self, path) -> Path:
        """Write the checkpoint ``zoo train --save`` writes (``zoo evaluate``, ``zoo predict``,
        ``zoo.load`` and ``--resume`` read it), atomically. Needs a model fitted in this
        process."""
        from zoo.checkpoints.checkpoint import save_run

        trained = self._trained("save")
        if trained.run is None:
            raise ConfigError(f"this model was loaded from {trained.checkpoint}, which holds it "
                              f"already; save() writes a model fitted in this process")
        return save_run(trained.run, path)

    def _trained(self, what: str):
        if self.trained is None:
            raise ConfigError(f"{what}() needs a trained model: call fit(x, y) or load one with "
                              f"zoo.load(path) first")
        return self.trained
