"""Checkpoints of training runs: save, load, resume bit-exactly, and load a model to use it.

One checkpoint is one file in the safetensors layout, written through
``zoo.checkpoints.safetensors_io``
(atomic, hashed, validated before anything is allocated; never pickle, never a name imported
from the file). Tensors, readable by any safetensors tool:

- ``model.<name>``: the model's parameters and buffers as the run left them (after early
  stopping put the best epoch's weights back), e.g. ``model.0.weight``;
- ``resume.model.<name>``: only when those differ from the weights training was continuing
  with, the latter (what a resumed run starts from);
- ``optimizer.<slot>``: the optimizer's per-parameter state (moments, velocities);
- ``trainer.permutation``: the current epoch's data order, when saved mid-epoch;
- ``stopping.<key>``: arrays of the stopping engine (early stopping's best weights).

Metadata (JSON values): ``zoo_version``; ``architecture`` (name, options, the plugin that
provides it and its version); ``data`` (the ``DataSpec``, dataset name and source, classes,
number of training examples); ``config`` (the ``RunConfig``); ``training`` (resolved batch
size, optimizer, learning rate, clip norm and loss); ``trainer`` (epoch, step, batch position,
elapsed time, running epoch loss, the data-order generator's state, history); ``generators``
(the state of every layer's ``rng``); ``optimizer`` (name, config, step); ``stopping`` (the
engine's state); ``stop_reason``; ``checkpointing`` (the ``--checkpoint-every`` cadence and the
best value seen so far).

Resume: ``resume_run(path)`` rebuilds the ``Run`` from the stored config, resolving the
architecture only through the installed plugins, and loads every state, so that training k
epochs, saving and resuming to N ends with the same weights as N epochs straight (same machine,
same thread count). To make that hold when early stopping restores its best weights at the end
of a run, the weights training was continuing with are captured just before that restore by a
``Checkpointer`` callback; ``attach(run)`` adds one.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import fields
from pathlib import Path

import numpy as np

import zoo
from zoo.errors import CheckpointError, ConfigError, DataError
from zoo.training.callbacks import Callback

__all__ = [
    "Checkpoint",
    "Checkpointer",
    "attach",
    "best_path_for",
    "load_checkpoint",
    "load_model",
    "parse_every",
    "resume_run",
    "save_run",
]

MODEL = "model."
RESUME_MODEL = "resume.model."
OPTIMIZER = "optimizer."
PERMUTATION = "trainer.permutation"
STOPPING = "stopping."

# Fields of RunConfig a resumed run must share with its checkpoint: they define the model, the
# data or the meaning of the saved optimizer state.
FIXED_ON_RESUME = ("arch", "dataset", "optimizer", "dtype", "validation_split", "seed")
BUDGETS = ("max_epochs", "max_steps", "max_time")


# -- the metadata schema -------------------------------------------------------------------------

_NUMBER = "number"      # int or float, not bool
_OPT = "optional"       # marker: the value may be None


def _schema():
    number, opt = _NUMBER, _OPT
    return {
        "zoo_version": str,
        "architecture": {"name": str, "options": dict, "plugin": str,
                         "plugin_version": (str, opt)},
        "data": {"spec": {"input_shape": list, "kind": str, "task": str, "output_size": int,
                          "num_classes": (int, opt), "name": str},
                 "dataset": str, "source": str, "classes": (list, opt),
                 "train_examples": int},
        "config": {"arch": str, "dataset": str, "options": dict, "epochs": (int, opt),
                   "batch_size": (int, opt), "optimizer": (str, opt), "lr": (number, opt),
                   "seed": int, "stop": list, "validation_split": number,
                   "clip_norm": (number, opt), "dtype": str},
        "training": {"batch_size": int, "optimizer": str, "lr": number,
                     "clip_norm": (number, opt), "loss": str},
        "trainer": {"epoch": int, "step": int, "batch_index": int, "elapsed": number,
                    "epoch_loss_sum": number, "epoch_examples": int, "last_loss": number,
                    "rng": dict, "history": list},
        "generators": dict,
        "optimizer": {"name": str, "config": dict, "step": int},
        "stopping": dict,
        "stop_reason": (str, opt),
        "checkpointing": {"every": (str, opt), "best": (dict, opt)},
    }


def _type_ok(value, kind) -> bool:
    if kind is _NUMBER:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _kind_name(kind) -> str:
    return {_NUMBER: "a number", int: "an integer", str: "a string", list: "a list",
            dict: "an object"}.get(kind, str(kind))


def _check_schema(value, schema, where: str, key: str = "") -> None:
    """Raise one CheckpointError naming the first missing or mistyped metadata field."""
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise CheckpointError(f"{where}: metadata {key or 'root'} must be an object; "
                                  f"received {type(value).__name__}")
        for name, sub in schema.items():
            path = f"{key}.{name}" if key else name
            if name not in value:
                raise CheckpointError(f"{where}: not a zoo training checkpoint: the metadata "
                                      f"lacks {path!r}")
            _check_schema(value[name], sub, where, path)
        return
    kinds = schema if isinstance(schema, tuple) else (schema,)
    if value is None and _OPT in kinds:
        return
    if not any(_type_ok(value, k) for k in kinds if k is not _OPT):
        expected = " or ".join(_kind_name(k) if k is not _OPT else "null" for k in kinds)
        raise CheckpointError(f"{where}: metadata {key!r} must be {expected}; received "
                              f"{type(value).__name__} {_short(value)}")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# -- the loaded file -----------------------------------------------------------------------------

class Checkpoint:
    """A validated checkpoint: decoded metadata plus its tensors, grouped by role.

    Attributes:
        path: the file.
        metadata: the decoded metadata (see the module docstring).
        tensors: every tensor by name (views into one buffer the size of the data area).
        model_state: ``model.*`` without the prefix: the weights to evaluate and predict with.
        resume_state: the weights a resumed run continues from (``resume.model.*`` when the
            file has them, else ``model_state``).
        optimizer_slots, stopping_arrays: by name without their prefix.
        permutation: the saved epoch's data order, or None at an epoch boundary.
    """

    def __init__(self, path, tensors: dict, metadata: dict):
        self.path = os.fspath(path)
        self.metadata = metadata
        self.tensors = tensors
        self.model_state = _strip(tensors, MODEL)
        self.resume_state = _strip(tensors, RESUME_MODEL) or self.model_state
        self.optimizer_slots = _strip(tensors, OPTIMIZER)
        self.stopping_arrays = _strip(tensors, STOPPING)
        self.permutation = tensors.get(PERMUTATION)
        known = (MODEL, RESUME_MODEL, OPTIMIZER, STOPPING)
        unknown = sorted(n for n in tensors
                         if n != PERMUTATION and not n.startswith(known))
        if unknown:
            raise CheckpointError(f"{self.where}: unexpected tensors {unknown[:5]}; expected "
                                  f"names starting with {', '.join(known)}")
        if not self.model_state:
            raise CheckpointError(f"{self.where}: the checkpoint holds no model weights "
                                  f"(no tensors named model.*)")
        try:
            from zoo.data.spec import DataSpec

            self.spec = DataSpec.from_dict(metadata["data"]["spec"])
        except (ConfigError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{self.where}: the data description is invalid: {exc}") \
                from None

    @property
    def where(self) -> str:
        return f"checkpoint {self.path}"

    @property
    def arch(self) -> str:
        return self.metadata["architecture"]["name"]

    @property
    def options(self) -> dict:
        return self.metadata["architecture"]["options"]

    @property
    def config(self) -> dict:
        return self.metadata["config"]

    @property
    def trainer(self) -> dict:
        return self.metadata["trainer"]

    @property
    def epoch(self) -> int:
        return self.trainer["epoch"]

    @property
    def step(self) -> int:
        return self.trainer["step"]

    @property
    def stop_reason(self) -> str | None:
        return self.metadata["stop_reason"]

    @property
    def classes(self) -> list | None:
        return self.metadata["data"]["classes"]

    def notes(self, host) -> list[str]:
        """Differences between what wrote the file and what is installed (zoo, the plugin)."""
        notes = []
        if self.metadata["zoo_version"] != zoo.__version__:
            notes.append(f"{self.path} was written by zoo {self.metadata['zoo_version']}; this "
                         f"is zoo {zoo.__version__}")
        saved = self.metadata["architecture"]
        if self.arch in host.architectures:
            plugin = host.architectures.get(self.arch).plugin
            record = host.records.get(plugin)
            version = record.version if record is not None else None
            if (plugin, version) != (saved["plugin"], saved["plugin_version"]):
                notes.append(f"{self.path}: architecture {self.arch} came from plugin "
                             f"{saved['plugin']} {saved['plugin_version'] or ''}".rstrip()
                             + f"; installed: {plugin} {version or ''}".rstrip())
        return notes

    def summary(self) -> dict:
        """What ``zoo evaluate --json`` reports about the file."""
        return {"path": self.path, "arch": self.arch, "options": self.options,
                "dataset": self.metadata["data"]["dataset"], "task": self.spec.task,
                "epoch": self.epoch, "step": self.step, "stop_reason": self.stop_reason,
                "zoo_version": self.metadata["zoo_version"],
                "plugin": self.metadata["architecture"]["plugin"],
                "plugin_version": self.metadata["architecture"]["plugin_version"]}


def _strip(tensors: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_checkpoint(path) -> Checkpoint:
    """Read and validate a checkpoint file.

    The layout, the content hash and every metadata field (presence and type) are checked;
    anything wrong is one ``CheckpointError`` naming the file and the problem. Nothing is
    imported or executed.
    """
    from zoo.checkpoints.safetensors_io import read_checkpoint

    tensors, metadata = read_checkpoint(path)
    where = f"checkpoint {os.fspath(path)}"
    _check_schema(metadata, _schema(), where)
    stops = metadata["config"]["stop"]
    if not all(isinstance(spec, str) for spec in stops):
        raise CheckpointError(f"{where}: metadata 'config.stop' must be a list of --stop specs "
                              f"(strings); received {_short(stops)}")
    return Checkpoint(path, tensors, metadata)


# -- saving --------------------------------------------------------------------------------------

def save_run(run, path, *, live_state: dict | None = None, checkpointing: dict | None = None,
             check_finite: bool = True) -> Path:
    """Write everything needed to evaluate, predict with and resume ``run`` to one file.

    Args:
        run: a ``zoo.run.Run`` (before, during or after ``fit()``).
        path: the file to create or replace (atomically; the folder must exist).
        live_state: the weights training was continuing with, when the model now holds
            others (early stopping's restored best). ``Checkpointer`` passes it; by default
            the one it captured for this run, if any.
        checkpointing: the ``checkpointing`` metadata (cadence, best so far).
        check_finite: refuse (``CheckpointError``) weights or optimizer state that are not
            finite, so a diverged run never replaces a good checkpoint.

    Returns the path written.
    """
    tensors, metadata = run_state(run, live_state=live_state, checkpointing=checkpointing)
    if check_finite:
        bad = [name for name, value in tensors.items()
               if value.dtype.kind == "f" and not np.isfinite(value).all()]
        if bad:
            raise CheckpointError(f"checkpoint {os.fspath(path)}: not written: {bad[0]}"
                                  f"{f' and {len(bad) - 1} more' if len(bad) > 1 else ''} "
                                  f"holds NaN or Inf (the run diverged)")
    from zoo.checkpoints.safetensors_io import write_checkpoint

    write_checkpoint(path, tensors, metadata)
    return Path(path)


def run_state(run, *, live_state=None, checkpointing=None) -> tuple[dict, dict]:
    """The tensors and metadata ``save_run`` writes."""
    trainer, model = run.trainer, run.model
    if live_state is None:
        live_state = _captured_live_state(run)
    tensors = {MODEL + k: v for k, v in model.state_dict().items()}
    if live_state is not None and any(not np.array_equal(live_state[k], tensors[MODEL + k])
                                      for k in live_state):
        tensors.update({RESUME_MODEL + k: np.asarray(v) for k, v in live_state.items()})
    opt_state = run.optimizer.state_dict()
    tensors.update({OPTIMIZER + k: np.asarray(v) for k, v in opt_state["slots"].items()})
    tstate = trainer.state_dict()
    if tstate["permutation"] is not None:
        tensors[PERMUTATION] = np.asarray(tstate["permutation"], dtype=np.int64)
    tensors.update({STOPPING + k: np.asarray(v) for k, v in run.engine.arrays().items()})

    arch = run.architecture
    record = run.host.records.get(arch.plugin) if arch.plugin else None
    config = run.config.to_dict()
    source = config["dataset"]
    if source not in run.host.datasets and os.path.exists(source):
        # A file: resume and evaluate from another folder still find it.
        source = config["dataset"] = os.path.abspath(source)
    metadata = {
        "zoo_version": zoo.__version__,
        "architecture": {"name": arch.name, "options": _jsonable(run.options),
                         "plugin": arch.plugin or "", "plugin_version":
                         record.version if record is not None else None},
        "data": {"spec": run.spec.to_dict(), "dataset": run.dataset.name, "source": source,
                 "classes": _jsonable(run.dataset.classes),
                 "train_examples": len(run.x_train)},
        "config": _jsonable(config),
        "training": {"batch_size": int(run.batch_size), "optimizer": run.optimizer_name,
                     "lr": float(run.lr),
                     "clip_norm": None if run.clip_norm is None else float(run.clip_norm),
                     "loss": arch.default_loss(run.spec, run.options)},
        "trainer": _jsonable({k: v for k, v in tstate.items() if k != "permutation"}),
        "generators": {name: _jsonable(rng.bit_generator.state)
                       for name, rng in named_generators(model).items()},
        "optimizer": _jsonable({k: v for k, v in opt_state.items() if k != "slots"}),
        "stopping": _jsonable(run.engine.state_dict()),
        "stop_reason": trainer.stop_reason,
        "checkpointing": checkpointing or {"every": None, "best": None},
    }
    return tensors, metadata


def _jsonable(value):
    """Tuples to lists and numpy scalars to Python numbers, so the metadata is plain JSON."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def named_generators(model) -> dict:
    """Every ``numpy.random.Generator`` kept in a layer's ``rng``, by layer path.

    Layers are found as ``zoo.kit.conformance.iter_layers`` finds them: in attributes holding a
    Layer or a list of Layers. ``Sequential``'s ``layers`` list gives paths such as ``"2"``.
    """
    from zoo.layers.base import Layer

    found, seen = {}, set()

    def visit(layer, name):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        rng = getattr(layer, "rng", None)
        if isinstance(rng, np.random.Generator):
            found[name or "model"] = rng
        for attr, value in vars(layer).items():
            if isinstance(value, Layer):
                visit(value, f"{name}.{attr}" if name else attr)
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Layer):
                        sub = str(i) if attr == "layers" else f"{attr}.{i}"
                        visit(item, f"{name}.{sub}" if name else sub)

    visit(model, "")
    return found


def _captured_live_state(run):
    for cb in run.trainer.callbacks:
        if isinstance(cb, Checkpointer) and cb.run is run:
            return cb.live_state
    return None


# -- the callback: periodic, best and final checkpoints ------------------------------------------

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
    replaces a good file. Step checkpoints are taken after the stopping engine has checked the
    step, so a run resumed from one makes exactly the checks the original made.

    With no ``path`` it only captures the weights training was continuing with before early
    stopping restores the best ones, which ``save_run`` stores for an exact resume.

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
        self._wrapped = False

    # -- hooks into the engine -----------------------------------------------------------------
    def on_train_begin(self, trainer):
        if self._wrapped:
            return
        self._wrapped = True
        engine = trainer.engine
        finish = engine.finish

        def finish_capturing(model):
            # Early stopping may now put the best epoch's weights back; keep the weights
            # training was continuing with, which is what a resumed run must start from.
            self.live_state = model.state_dict()
            return finish(model)

        engine.finish = finish_capturing
        if self.every is not None and self.every[0] == "step":
            check, n = engine.check, self.every[1]

            def check_then_save(state):
                stop = check(state)
                if state.at == "step" and not stop and state.step % n == 0:
                    self._save_latest(trainer)
                return stop

            engine.check = check_then_save

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


# -- resuming ------------------------------------------------------------------------------------

def resume_run(path, overrides: dict | None = None, callbacks=(), *, save=None, every="saved",
               host=None):
    """Rebuild the ``Run`` saved in ``path`` and load every state, ready to ``fit()`` on.

    Args:
        path: a checkpoint written by ``save_run``.
        overrides: ``RunConfig`` fields to change, e.g. ``{"epochs": 20}`` (a larger budget)
            or ``{"lr": 1e-4}``. Fields in ``FIXED_ON_RESUME`` (architecture, dataset,
            optimizer, dtype, validation split, seed) must equal the checkpoint's; those that
            differ are refused in one ``ConfigError`` naming them all.
        callbacks: callbacks for the new run's trainer.
        save: where the new run's ``Checkpointer`` writes (None: it writes nothing, but still
            captures what an exact later ``save_run`` needs).
        every: the checkpoint cadence (see ``parse_every``); by default the checkpoint's own.

    Raises ``ConfigError`` when the run has nothing left to do under its (new) budget.
    The run's ``Checkpointer`` is ``run.checkpointer``; the loaded file ``run.resumed_from``.
    """
    from zoo.run import Run, RunConfig

    ck = load_checkpoint(path)
    if host is None:
        from zoo.plugins import get_host

        host = get_host()
    stored = _stored_config(ck, RunConfig)
    overrides = dict(overrides or {})
    names = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ConfigError(f"resume: unknown settings {', '.join(unknown)}; expected RunConfig "
                          f"fields ({', '.join(sorted(names))})")
    _refuse_changes(ck, stored, overrides, host)
    merged = {**stored, **overrides}
    if "options" in overrides:
        merged["options"] = {**stored["options"], **overrides["options"]}
    if merged.get("stop") is not None:
        merged["stop"] = tuple(merged["stop"])
    config = RunConfig(**merged)
    run = Run(config, host=host, callbacks=callbacks)
    _check_data_fits(ck, run.spec, run.dataset, "the dataset")
    if len(run.x_train) != ck.metadata["data"]["train_examples"]:
        raise CheckpointError(f"{ck.where}: the dataset now has {len(run.x_train)} training "
                              f"examples; the checkpoint was trained on "
                              f"{ck.metadata['data']['train_examples']}")
    load_run_state(run, ck, lr=overrides.get("lr"),
                   batch_size_changed="batch_size" in overrides
                   and run.batch_size != ck.metadata["training"]["batch_size"])
    saved = ck.metadata["checkpointing"]
    if every == "saved":
        try:
            every = parse_every(saved["every"]) if save is not None else None
        except ConfigError as exc:
            raise CheckpointError(f"{ck.where}: the saved cadence is invalid: {exc}") from None
    run.checkpointer = attach(run, save, every, best=saved["best"])
    run.resumed_from = ck
    return run


def _stored_config(ck: Checkpoint, RunConfig) -> dict:
    config = dict(ck.config)
    names = {f.name for f in fields(RunConfig)}
    if set(config) - names:
        raise CheckpointError(f"{ck.where}: the stored run config has unexpected fields "
                              f"{sorted(set(config) - names)}")
    config["stop"] = tuple(config["stop"])
    config["arch"] = ck.arch  # the name the file's architecture record gives
    try:
        RunConfig(**config).validate()
    except (ConfigError, TypeError) as exc:
        raise CheckpointError(f"{ck.where}: the stored run config is invalid: {exc}") from None
    return config


def _refuse_changes(ck: Checkpoint, stored: dict, overrides: dict, host) -> None:
    """One ConfigError naming every fixed field the overrides change."""
    differ = []
    training = ck.metadata["training"]
    for name in FIXED_ON_RESUME:
        if name not in overrides or overrides[name] is None:
            continue
        given, saved = overrides[name], stored.get(name)
        if name == "arch":
            saved = ck.arch
            try:
                given = host.architectures.get(given).name
            except ConfigError:
                pass
        elif name == "optimizer":
            saved = training["optimizer"]
        elif name == "dataset" and _same_dataset(given, saved, ck):
            continue
        if given != saved:
            differ.append(f"{name}: checkpoint {saved!r}, given {given!r}")
    if differ:
        raise ConfigError(f"cannot resume {ck.path}: {'; '.join(differ)} (leave these out to "
                          f"continue the checkpoint's run, or start a new run without --resume)")


def _same_dataset(given: str, saved: str, ck: Checkpoint) -> bool:
    if given == saved or given == ck.metadata["data"]["source"]:
        return True
    return os.path.exists(given) and os.path.abspath(given) in (
        os.path.abspath(saved), ck.metadata["data"]["source"])


def _check_data_fits(ck: Checkpoint, spec, dataset, what: str) -> None:
    """The data must have the shape, kind, task and classes the model was built for."""
    saved = ck.spec
    diffs = []
    compared = ("input_shape", "kind", "task", "output_size")
    if saved.task == "classify":
        compared += ("num_classes",)
    for field in compared:
        a, b = getattr(saved, field), getattr(spec, field)
        if a != b:
            diffs.append(f"{field} {tuple(a) if field == 'input_shape' else a!r} "
                         f"(received {tuple(b) if field == 'input_shape' else b!r})")
    if diffs:
        raise DataError(f"{what} {dataset.name} does not fit checkpoint {ck.path}: expected "
                        f"{', '.join(diffs)}")


def load_run_state(run, ck: Checkpoint, *, lr=None, batch_size_changed=False) -> None:
    """Load model, optimizer, trainer, layer generators and stopping state from ``ck``."""
    where = ck.where
    _load_model_state(run.model, ck.resume_state, where)
    _load_optimizer(run, ck, lr)
    _load_trainer(run, ck, batch_size_changed)
    _load_generators(run.model, ck.metadata["generators"], where)
    engine = run.engine
    try:
        engine.load_state_dict(ck.metadata["stopping"])
        engine.load_arrays({k: np.array(v) for k, v in ck.stopping_arrays.items()})
    except CheckpointError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as exc:
        raise CheckpointError(f"{where}: the saved stopping state is malformed: "
                              f"{type(exc).__name__}: {exc}") from None
    _reevaluate_budgets(run)
    if engine.stopped:
        raise ConfigError(f"nothing to resume: the run in {ck.path} stopped at epoch "
                          f"{run.trainer.epoch}, step {run.trainer.step} ({engine.reason}); "
                          f"give a larger budget (--epochs, --stop max_steps=...) to continue")


def _load_model_state(model, state: dict, where: str) -> None:
    targets = {name: p.value for name, p in model.named_parameters()}
    targets.update(dict(model.named_buffers()))
    for name, target in targets.items():
        if name in state and state[name].dtype != target.dtype:
            raise CheckpointError(f"{where}: model.{name} is {state[name].dtype}; expected "
                                  f"{target.dtype}, the dtype of this model")
    try:
        model.load_state_dict(state)
    except CheckpointError as exc:
        raise CheckpointError(f"{where}: {exc}") from None


def _load_optimizer(run, ck: Checkpoint, lr) -> None:
    meta = ck.metadata["optimizer"]
    state = {**meta, "slots": {k: np.array(v) for k, v in ck.optimizer_slots.items()}}
    try:
        run.optimizer.load_state_dict(state)
    except CheckpointError as exc:
        raise CheckpointError(f"{ck.where}: {exc}") from None
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise CheckpointError(f"{ck.where}: the saved optimizer state does not fit: "
                              f"{type(exc).__name__}: {exc}") from None
    if lr is not None:
        run.optimizer.lr = float(lr)


def _load_trainer(run, ck: Checkpoint, batch_size_changed: bool) -> None:
    where, saved, trainer = ck.where, ck.trainer, run.trainer
    n = len(run.x_train)
    perm = ck.permutation
    batches = -(-n // run.batch_size)
    for key in ("epoch", "step", "batch_index", "epoch_examples"):
        if saved[key] < 0:
            raise CheckpointError(f"{where}: trainer {key} must be >= 0; received {saved[key]}")
    if perm is not None:
        if batch_size_changed:
            raise ConfigError(f"cannot resume {ck.path} with another batch size: it was saved "
                              f"in the middle of an epoch (give the same --batch-size, or resume "
                              f"from a checkpoint taken at the end of an epoch)")
        if perm.ndim != 1 or len(perm) != n or perm.dtype != np.int64 \
                or not np.array_equal(np.sort(perm), np.arange(n)):
            raise CheckpointError(f"{where}: trainer.permutation must be a permutation of the "
                                  f"{n} training examples; received {perm.dtype} array of "
                                  f"shape {perm.shape}")
        if saved["batch_index"] > batches:
            raise CheckpointError(f"{where}: batch_index {saved['batch_index']} is past the "
                                  f"{batches} batches of an epoch")
    state = {**saved, "permutation": None if perm is None else np.array(perm)}
    try:
        previous = trainer.rng.bit_generator.state
        trainer.load_state_dict(state)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        trainer.rng.bit_generator.state = previous
        raise CheckpointError(f"{where}: the saved trainer state is malformed: "
                              f"{type(exc).__name__}: {exc}") from None


def _load_generators(model, saved: dict, where: str) -> None:
    generators = named_generators(model)
    if set(generators) != set(saved):
        raise CheckpointError(f"{where}: the model's random generators "
                              f"{sorted(generators) or 'none'} do not match the checkpoint's "
                              f"{sorted(saved) or 'none'}")
    for name, rng in generators.items():
        try:
            rng.bit_generator.state = saved[name]
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise CheckpointError(f"{where}: generator state of layer {name} is malformed: "
                                  f"{type(exc).__name__}: {exc}") from None


def _reevaluate_budgets(run) -> None:
    """Apply the (possibly new) budgets to the saved position before training on.

    Budgets (max_epochs, max_steps, max_time) depend only on the position, so they are
    re-checked now; every other criterion keeps the flag it had, exactly as in an
    uninterrupted run. The engine then stops or not on the combined flags.
    """
    from zoo.training.state import TrainState

    trainer, engine = run.trainer, run.engine
    state = TrainState("epoch", trainer.epoch, trainer.step, trainer.elapsed,
                       trainer.last_loss)
    walked = list(engine.walk())
    for criterion in walked:
        if criterion.name in BUDGETS:
            criterion.update(state)
    for criterion in reversed(walked):  # members before the composites holding them
        if hasattr(criterion, "_combine"):
            criterion._combine()
    for criterion in (*engine.always, *engine.criteria):
        if criterion.stop:
            engine.stopped, engine.reason = True, criterion.reason
            engine.criterion = criterion.fired.name
            return
    engine.stopped, engine.reason, engine.criterion = False, None, None


# -- using a trained model ----------------------------------------------------------------------

def load_model(path, *, host=None):
    """The trained model of a checkpoint, for evaluation and prediction.

    Returns ``(model, spec, loss, checkpoint)``: a built ``Sequential`` holding the saved
    weights, the ``DataSpec`` it was trained for, the loss it was trained with, and the
    ``Checkpoint``. The architecture is resolved through the installed plugins by name.
    """
    from zoo.run import DTYPES, _build

    ck = load_checkpoint(path)
    if host is None:
        from zoo.plugins import get_host

        host = get_host()
    try:
        architecture = host.architectures.get(ck.arch)
    except ConfigError as exc:
        raise CheckpointError(f"{ck.where}: was trained with architecture {ck.arch!r}, which "
                              f"is not installed ({exc})") from None
    try:
        options = architecture.resolve_options(ck.options)
    except ConfigError as exc:
        raise CheckpointError(f"{ck.where}: its options do not fit the installed "
                              f"{ck.arch}: {exc}") from None
    dtype_name = ck.config["dtype"]
    if dtype_name not in DTYPES:
        raise CheckpointError(f"{ck.where}: dtype must be one of {', '.join(DTYPES)}; "
                              f"received {dtype_name!r}")
    model = architecture.build(ck.spec, dict(options))
    _build(model, ck.spec.input_shape, np.random.default_rng(0), DTYPES[dtype_name])
    _load_model_state(model, ck.model_state, ck.where)
    loss_name = ck.metadata["training"]["loss"]
    try:
        loss = host.losses.get(loss_name)()
    except ConfigError as exc:
        raise CheckpointError(f"{ck.where}: {exc}") from None
    return model, ck.spec, loss, ck
