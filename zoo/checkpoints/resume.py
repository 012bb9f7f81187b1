"""Resuming a run from its checkpoint, bit-exactly.

``resume_run(path)`` rebuilds the ``Run`` from the stored config, resolving the architecture
only through the installed plugins, and loads every state, so that training k epochs, saving
and resuming to N ends with the same weights as N epochs straight (same machine, same thread
count). The pieces are restored in the order the trainer would have them: model weights (those
training was continuing with, ``resume.model.*``, when early stopping had put its best ones
back), optimizer state, the trainer's position and data order, every layer's random
generator, then the stopping engine through its ``restore`` call point, which re-checks every
budget at the saved position.

Budgets on resume. A checkpoint stores the run's stopping criteria spelled out (``config.stop``
lists every top-level criterion in ``--stop`` syntax, the epoch budget included). A resumed
run's ``--epochs N`` and ``--stop`` specs are merged into them by name: each replaces the
saved criterion of the same name, or is added. Only budgets (criteria whose class sets
``budget = True``) may be added, since they keep no state; other criteria may get new
arguments (a larger ``patience``) but must be the saved ones, in the saved order.
"""

from __future__ import annotations

import os
from dataclasses import fields

import numpy as np

from zoo.checkpoints.callback import attach, parse_every
from zoo.checkpoints.checkpoint import (
    Checkpoint,
    check_data_fits,
    load_checkpoint,
    load_model_state,
    named_generators,
    stored_size_budget,
)
from zoo.errors import CheckpointError, ConfigError
from zoo.plugins.host import resolve_host

__all__ = ["FIXED_ON_RESUME", "load_run_state", "resume_run", "resumed_stop"]

# Fields of RunConfig a resumed run must share with its checkpoint: they define the model, the
# data or the meaning of the saved optimizer state.
FIXED_ON_RESUME = ("arch", "dataset", "optimizer", "dtype", "validation_split", "seed",
                   "loss", "schedule", "label_column", "task", "standardize")


def resume_run(path, overrides: dict | None = None, callbacks=(), *, save=None, every="saved",
               host=None):
    """Rebuild the ``Run`` saved in ``path`` and load every state, ready to ``fit()`` on.

    Args:
        path: a checkpoint written by ``save_run``.
        overrides: ``RunConfig`` fields to change, e.g. ``{"epochs": 20}`` (a larger budget),
            ``{"stop": ("max_steps=500",)}`` or ``{"lr": 1e-4}``. ``epochs`` and ``stop`` are
            merged into the checkpoint's criteria (see ``resumed_stop``). Fields in
            ``FIXED_ON_RESUME`` (architecture, dataset, optimizer, dtype, validation split,
            seed) must equal the checkpoint's; those that differ are refused in one
            ``ConfigError`` naming them all.
        callbacks: callbacks for the new run's trainer.
        save: where the new run's ``Checkpointer`` writes (None: it writes nothing, but still
            captures what an exact later ``save_run`` needs).
        every: the checkpoint cadence (see ``parse_every``); by default the checkpoint's own.

    Raises ``ConfigError`` when the run has nothing left to do under its (new) budget.
    The run's ``Checkpointer`` is ``run.checkpointer``; the loaded file ``run.resumed_from``.
    """
    from zoo.run import Run, RunConfig

    ck = load_checkpoint(path)
    host = resolve_host(host)
    _check_resumable(ck)
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
    merged["stop"] = resumed_stop(stored["stop"], overrides.get("epochs"),
                                  overrides.get("stop"), host.criteria)
    merged["epochs"] = None  # the epoch budget is among the spelled-out criteria now
    config = RunConfig(**merged)
    with stored_size_budget(ck):
        run = Run(config, host=host, callbacks=callbacks)
    check_data_fits(ck, run.spec, run.dataset, "the dataset")
    if len(run.x_train) != ck.metadata["data"]["train_examples"]:
        raise CheckpointError(f"{ck.where}: the dataset now has {len(run.x_train)} training "
                              f"examples; the checkpoint was trained on "
                              f"{ck.metadata['data']['train_examples']}")
    _load_schedule(run, ck)
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


def resumed_stop(saved, epochs, stop, registry) -> tuple[str, ...]:
    """The stop specs of a resumed run: the saved ones with ``epochs`` and ``stop`` merged in.

    Args:
        saved: the checkpoint's spelled-out specs (``config.stop``).
        epochs: ``--epochs`` given on resume, or None: the same as ``--stop max_epochs=N``.
        stop: ``--stop`` specs given on resume, or None.
        registry: the criteria registry the specs are parsed with.

    Each given criterion replaces every saved top-level criterion of the same name (in the
    first one's place), or is appended. Raises ``ConfigError`` when ``epochs`` and a
    ``max_epochs`` spec disagree.
    """
    from zoo.training.stopspec import parse_stop

    merged = [(parse_stop(spec, registry), spec) for spec in saved]
    given = [parse_stop(spec, registry) for spec in stop or ()]
    if epochs is not None:  # --epochs and --stop max_epochs=M must agree, as on a new run
        twice = [c for c in given if c.name == "max_epochs"]
        if any(getattr(c, "epochs", None) != epochs for c in twice):
            raise ConfigError(f"the epoch budget is given twice: --epochs {epochs} and --stop "
                              f"{twice[0]!r}; give one")
        if not twice:
            given.insert(0, registry.get("max_epochs")(epochs))
    for criterion in given:
        same = [i for i, (old, _) in enumerate(merged) if old.name == criterion.name]
        entry = (criterion, repr(criterion))
        if same:
            merged[same[0]] = entry
            merged = [item for i, item in enumerate(merged) if i not in same[1:]]
        else:
            merged.append(entry)
    return tuple(spec for _, spec in merged)


def _check_resumable(ck: Checkpoint) -> None:
    """Files from before budgets were marked store the criteria as typed, not spelled out:
    their budgets cannot be told apart, so they are evaluated and used, not resumed."""
    saved = ck.metadata["stopping"].get("criteria")
    if isinstance(saved, list) and any(isinstance(c, dict) and "budget" not in c for c in saved):
        raise CheckpointError(f"{ck.where}: written by zoo {ck.metadata['zoo_version']} in an "
                              f"older layout of the stopping state (no 'budget' marks); it can "
                              f"be evaluated and predicted with, but not resumed")


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
            saved = training.get("optimizer_spec", training["optimizer"])
            given = _canonical(given, host.optimizers, "OPTIMIZER")
        elif name == "loss":
            saved = training["loss"]
            given = _canonical(given, host.losses, "LOSS")
        elif name == "schedule":
            saved = (ck.metadata.get("schedule") or {}).get("spec")
            try:
                from zoo.spec import SCHEDULE, parse_spec

                given = repr(parse_spec(given, host.schedules, SCHEDULE).build(SCHEDULE, given))
            except ConfigError:
                pass
        elif name == "dataset" and _same_dataset(given, str(saved), ck):
            continue
        if given != saved:
            differ.append(f"{name}: checkpoint {saved!r}, given {given!r}")
    if differ:
        raise ConfigError(f"cannot resume {ck.path}: {'; '.join(differ)} (leave these out to "
                          f"continue the checkpoint's run, or start a new run without --resume)")


def _canonical(text: str, registry, kind: str) -> str:
    """A spec as stored (``sgd(momentum=0.9)``), or the text itself when it does not parse."""
    from zoo import spec

    try:
        return str(spec.parse_spec(text, registry, getattr(spec, kind)))
    except ConfigError:
        return text


def _same_dataset(given: str, saved: str, ck: Checkpoint) -> bool:
    if given == saved or given == ck.metadata["data"]["source"]:
        return True
    return os.path.exists(given) and os.path.abspath(given) in (
        os.path.abspath(saved), ck.metadata["data"]["source"])


def load_run_state(run, ck: Checkpoint, *, lr=None, batch_size_changed=False) -> None:
    """Load model, optimizer, trainer, layer generators and stopping state from ``ck``."""
    where = ck.where
    load_model_state(run.model, ck.resume_state, where)
    _load_optimizer(run, ck, lr)
    _load_trainer(run, ck, batch_size_changed)
    _load_generators(run.model, ck.metadata["generators"], where)
    engine = run.engine
    try:
        over = engine.restore(ck.metadata["stopping"],
                              {k: np.array(v) for k, v in ck.stopping_arrays.items()},
                              run.trainer.position())
    except CheckpointError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as exc:
        raise CheckpointError(f"{where}: the saved stopping state is malformed: "
                              f"{type(exc).__name__}: {exc}") from None
    if over:
        raise ConfigError(f"nothing to resume: the run in {ck.path} stopped at epoch "
                          f"{run.trainer.epoch}, step {run.trainer.step} ({engine.reason}); "
                          f"give a larger budget (--epochs, --stop max_steps=...) to continue")


def _load_schedule(run, ck: Checkpoint) -> None:
    """The schedule's state (reduce-on-plateau's best, wait, rate); files without one had none."""
    saved = ck.metadata.get("schedule")
    if saved is None:
        if run.schedule is not None:
            raise ConfigError(f"cannot resume {ck.path} with a schedule: it was trained without "
                              f"one (leave out --schedule)")
        return
    if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict):
        raise CheckpointError(f"{ck.where}: metadata 'schedule' must be an object with a "
                              f"'state' object; received {saved!r:.60}")
    try:
        run.schedule.load_state_dict(saved["state"])
    except CheckpointError as exc:
        raise CheckpointError(f"{ck.where}: {exc}") from None


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
