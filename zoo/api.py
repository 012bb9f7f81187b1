"""The Python API for notebooks and scripts: ``fit``, ``load``, ``register_architecture``.

A thin layer over ``zoo.run.Run`` (which owns the ``Trainer`` and the ``StoppingEngine``): no
second training loop. A model built from layers in Python trains with ``model.fit(x, y)``
(``zoo.trainable.Trainable``, which ``Sequential`` inherits); this module does the work.

How a model built in Python is saved and rebuilt: ``fit`` registers it in the process's plugin
host as an architecture (``"sequential"`` unless the model has a ``name``) whose builder returns
a fresh copy of the model's layers. A checkpoint names that architecture, as any checkpoint
does; loading it calls the builder registered *in the loading process*. Nothing is imported
from the file: in a new process, register the same builder first
(``zoo.register_architecture("my_net", lambda spec, options: Sequential([...]))``), then
``zoo.load`` and the in-process CLI (``zoo.cli.main([...])``) rebuild the model by that name.
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from zoo import checks
from zoo.checkpoints.checkpoint import IN_PROCESS  # the owner of in-process registrations
from zoo.errors import ConfigError, DataError, describe_array
from zoo.plugins.host import resolve_host

ALL_TASKS = ("classify", "regress", "reconstruct")
KIND_OF_RANK = {2: "vector", 3: "sequence", 4: "image"}
# The name a model built in Python is registered and saved under when it has none.
DEFAULT_MODEL_NAME = "sequential"


@dataclass
class Trained:
    """What a trained or loaded model knows about its training: task, data, loss.

    ``run`` is the ``zoo.run.Run`` that trained it in this process (``None`` after
    ``zoo.load``); ``checkpoint`` the file it was loaded from.
    """

    task: str
    spec: Any
    loss: Any
    classes: list | None = None
    run: Any = None
    checkpoint: str | None = None


@dataclass
class Fitted:
    """What ``zoo.fit`` returns: the trained ``model`` and the ``result`` (a ``RunResult``).

    Unpacks as a pair: ``model, result = zoo.fit(...)``.
    """

    model: Any
    result: Any

    def __iter__(self):
        return iter((self.model, self.result))


def register_architecture(name: str, build: Callable, *, tasks: tuple = ALL_TASKS,
                          summary: str = "a model built in Python", options: tuple = (),
                          loss: Callable | None = None, defaults: dict | None = None,
                          data_kinds: tuple = ("vector", "sequence", "image"), host=None):
    """Register an architecture in this process, as a plugin's hook would.

    Args:
        name: what ``--arch`` and checkpoints call it.
        build: ``build(spec, options) -> Layer``: a new, unbuilt model for the data.
        tasks, summary, options, loss, defaults, data_kinds: as ``zoo.architecture
            .Architecture`` takes them.
        host: the plugin host (default: the process-wide one, which the CLI uses).

    A name a plugin registered is refused; an earlier in-process registration of the same
    name is replaced (a notebook cell run twice). Returns the ``Architecture``.
    """
    from zoo.architecture import Architecture

    host = resolve_host(host)
    if not isinstance(name, str) or not name.strip() or any(c.isspace() for c in name):
        raise ConfigError(f"an architecture name must be a non-empty word; received {name!r}")
    if not callable(build):
        raise ConfigError(f"architecture {name}: build must be callable as build(spec, "
                          f"options); received {type(build).__name__}")
    owner = host.architectures.taken_by(name)
    if owner is not None and owner != IN_PROCESS:
        raise ConfigError(f"architecture {name!r} is already registered by {owner}; choose "
                          f"another name")
    architecture = Architecture(name=name, summary=summary, tasks=tuple(tasks), build=build,
                                options=tuple(options), loss=loss, data_kinds=tuple(data_kinds),
                                defaults=dict(defaults or {}), plugin=IN_PROCESS)
    if owner == IN_PROCESS:
        host.architectures.replace(name, architecture, IN_PROCESS)
    else:
        problem = host.architectures.conflict(name)  # an alias a plugin holds
        if problem is not None:
            raise ConfigError(f"{problem}; choose another name")
        host.architectures.add(name, architecture, IN_PROCESS)
    return architecture


# -- data from arrays ----------------------------------------------------------------------------

def arrays_dataset(x, y=None, *, task: str | None = None, name: str = "arrays"):
    """A ``Dataset`` of in-memory arrays, and the sentence saying what was guessed (or None).

    The task follows ``y`` unless given: none -> reconstruct, integers -> classify, decimals ->
    regress. The kind follows the rank of ``x``. ``fit`` has no test split: the dataset's test
    arrays are one example, never evaluated (``Run.result(test=False)``).
    """
    from zoo.data.dataset import Dataset
    from zoo.data.spec import TASKS

    if task is not None:
        checks.one_of(None, "task", task, TASKS)
    x = np.asarray(x)
    if x.dtype.kind not in "biuf" or x.ndim not in KIND_OF_RANK:
        raise DataError(f"x must be numbers of shape (N, F), (N, T, F) or (N, C, H, W); "
                        f"received {describe_array(x)}")
    guess = None
    if y is not None:
        y = np.asarray(y)
        if y.dtype.kind not in "biuf":
            raise DataError(f"y must hold numbers (class labels or targets); received "
                            f"{describe_array(y)}")
        if len(y) != len(x):
            raise DataError(f"len(x) = {len(x)} but len(y) = {len(y)}; expected one label "
                            f"per example")
    if task is None:
        if y is None:
            task = "reconstruct"
        elif y.dtype.kind in "biu":
            task = "classify"
            guess = (f"zoo: y holds integers: task classify ({int(y.max()) + 1} classes); "
                     f"pass task='regress' to regress on them")
        else:
            task = "regress"
            guess = "zoo: y holds decimals: task regress; pass task='classify' for class labels"
    if task == "reconstruct":
        y = None
    elif y is None:
        raise DataError(f"task {task} needs y; received none")
    head = None if y is None else y[:1]
    return Dataset(name, KIND_OF_RANK[x.ndim], task, x, y, x[:1], head), guess


# -- training a model built in Python ------------------------------------------------------------

def fit_model(model, x, y=None, *, epochs: int | None = None, batch_size: int | None = None,
              validation_split: float = 0.1, stop=(), optimizer: str | None = None,
              lr: float | None = None, loss: str | None = None, schedule: str | None = None,
              metric: str | None = None, task: str | None = None,
              seed: int = 0, clip_norm: float | None = None, dtype: str | None = None,
              progress: bool | None = None, verbose: bool = False, callbacks=(),
              host=None, stream=None):
    """Train ``model`` (a Layer built in Python) on ``x, y``; see ``Trainable.fit``."""
    from zoo.run import DTYPES, Run, RunConfig
    from zoo.training.progress import progress_callback

    host = resolve_host(host)
    if isinstance(stop, str):
        stop = (stop,)
    if dtype is None:
        dtype = np.dtype(model.dtype).name if model.built else "float32"
    checks.one_of(None, "dtype", dtype, tuple(DTYPES))
    dataset, guess = arrays_dataset(x, y, task=task)
    if guess is not None:
        print(guess, file=stream if stream is not None else sys.stderr)
    name = model.name or DEFAULT_MODEL_NAME
    # What the architecture rebuilds, never the live model; without its last training run.
    template = copy.deepcopy(model, memo={id(model.trained): None})
    register_architecture(name, lambda spec, options: copy.deepcopy(template), host=host)
    config = RunConfig(arch=name, dataset=dataset.name, epochs=epochs, batch_size=batch_size,
                       optimizer=optimizer, lr=lr, loss=loss, schedule=schedule, metric=metric,
                       seed=seed, stop=tuple(stop),
                       validation_split=validation_split, clip_norm=clip_norm, dtype=dtype)
    shown = progress_callback(verbose=verbose, enabled=progress, stream=stream)
    run = Run(config, host=host, dataset=dataset, model=model,
              callbacks=[*([shown] if shown is not None else []), *callbacks])
    check_output_fits(model, run.spec)
    run.fit()
    result = run.result(test=False)
    model.trained = Trained(run.spec.task, run.spec, run.loss, run.dataset.classes, run=run)
    return result


def check_output_fits(model, spec) -> None:
    """The model's output must be what the task needs: one logit per class, one value per
    target, or the input's size for reconstruction."""
    shape = tuple(model.output_shape)
    if spec.task == "reconstruct":
        fits = math.prod(shape) == spec.input_size
        needed = f"{spec.input_size} values (the input's size)"
    else:
        fits = shape == (spec.output_size,)
        needed = (f"({spec.output_size},): one logit per class" if spec.task == "classify"
                  else f"({spec.output_size},): one value per target")
    if not fits:
        raise ConfigError(f"the model's output shape {shape} does not fit task {spec.task}; "
                          f"expected {needed}")


def fit(model_or_arch, x=None, y=None, *, dataset: str | None = None, options: dict | None = None,
        host=None, **settings) -> Fitted:
    """Train and return ``Fitted(model, result)``.

    Either a model built from layers with arrays (``zoo.fit(model, x, y, epochs=5)``, the
    settings of ``Trainable.fit``), or a registered architecture on a dataset, as ``zoo
    train`` runs it (``zoo.fit("mlp", dataset="digits", epochs=5)``, the fields of
    ``RunConfig`` plus ``progress``, ``verbose`` and ``callbacks``).
    """
    from zoo.layers.base import Layer

    if isinstance(model_or_arch, Layer):
        if dataset is not None or options:
            raise ConfigError("a model built in Python trains on arrays: zoo.fit(model, x, y); "
                              "dataset= and options= are for a registered architecture")
        if x is None:
            raise DataError("zoo.fit(model, x, y): x is missing")
        result = fit_model(model_or_arch, x, y, host=host, **settings)
        return Fitted(model_or_arch, result)
    if not isinstance(model_or_arch, str):
        raise ConfigError(f"zoo.fit expects a model built from layers or an architecture name; "
                          f"received {type(model_or_arch).__name__}")
    if x is not None or y is not None:
        raise ConfigError(f"architecture {model_or_arch!r} trains on a dataset: "
                          f"zoo.fit({model_or_arch!r}, dataset=NAME_OR_PATH)")
    return _fit_arch(model_or_arch, dataset, options or {}, host, settings)


def _fit_arch(arch: str, dataset, options: dict, host, settings: dict) -> Fitted:
    from zoo.data import DEFAULT_DATASET
    from zoo.run import Run, RunConfig
    from zoo.training.progress import progress_callback

    shown = progress_callback(verbose=settings.pop("verbose", False),
                              enabled=settings.pop("progress", None),
                              stream=settings.pop("stream", None))
    callbacks = [*([shown] if shown is not None else []), *settings.pop("callbacks", ())]
    if isinstance(settings.get("stop"), str):
        settings["stop"] = (settings["stop"],)
    try:
        config = RunConfig(arch=arch, dataset=dataset or DEFAULT_DATASET, options=options,
                           **settings)
    except TypeError as exc:
        raise ConfigError(f"zoo.fit: {exc}") from None
    run = Run(config, host=host, callbacks=callbacks,
              announce=lambda text: print(text, file=sys.stderr))
    run.fit()
    result = run.result()
    run.model.trained = Trained(run.spec.task, run.spec, run.loss, run.dataset.classes, run=run)
    return Fitted(run.model, result)


def load(path, *, host=None):
    """The trained model in checkpoint ``path`` (as ``zoo train --save`` or ``model.save``
    write them), ready for ``predict``, ``predict_proba`` and ``evaluate``.

    The architecture is rebuilt by the builder registered under its name in ``host``: a
    plugin's, or one registered in this process (``register_architecture``).
    """
    from zoo.checkpoints.checkpoint import load_model

    model, spec, loss, ck = load_model(path, host=host)
    model.trained = Trained(spec.task, spec, loss, ck.classes, checkpoint=ck.path)
    return model
