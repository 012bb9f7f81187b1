"""A checkpoint of a training run: what it holds, how it is validated, saving and using it.

One checkpoint is one file written and read by ``zoo.checkpoints.format`` (safetensors, with
zoo's JSON metadata and a content hash, written atomically; never pickle, never a name
imported from the file). Tensors, readable by any safetensors tool:

- ``model.<name>``: the model's parameters and buffers as the run left them (after early
  stopping put the best epoch's weights back), e.g. ``model.0.weight``;
- ``resume.model.<name>``: only when those differ from the weights training was continuing
  with, the latter (what a resumed run starts from);
- ``optimizer.<slot>``: the optimizer's per-parameter state (moments, velocities);
- ``trainer.permutation``: the current epoch's data order, when saved mid-epoch;
- ``stopping.<i>/<key>``: arrays of the stopping engine's i-th criterion (early stopping's
  best weights).

Metadata (JSON values): ``zoo_version``; ``architecture`` (name, options, the plugin that
provides it and its version); ``data`` (the ``DataSpec``, dataset name and source, classes,
number of training examples); ``config`` (the ``RunConfig``, with ``stop`` spelled out as the
criteria the run used, see ``zoo.checkpoints.resume``); ``training`` (resolved batch size,
optimizer with its spec and settings, learning rate, clip norm and the loss spec);
``schedule`` (the learning-rate schedule's spec and state, or null; absent from older files);
``trainer`` (epoch, step, batch position,
elapsed time, running epoch loss, the data-order generator's state, history); ``generators``
(the state of every layer's ``rng``); ``optimizer`` (name, config, step); ``stopping`` (the
engine's state); ``stop_reason``; ``checkpointing`` (the ``--checkpoint-every`` cadence and the
best value seen so far). ``load_checkpoint`` checks every field's presence and type.

The callback that writes checkpoints as a run trains is ``zoo.checkpoints.callback``; resuming
is ``zoo.checkpoints.resume``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

import zoo
from zoo.checkpoints.format import read_checkpoint, write_checkpoint
from zoo.errors import CheckpointError, ConfigError, DataError
from zoo.jsonable import jsonable
from zoo.plugins.host import resolve_host

__all__ = [
    "Checkpoint",
    "check_data_fits",
    "load_checkpoint",
    "load_model",
    "load_model_state",
    "named_generators",
    "run_state",
    "save_run",
]

MODEL = "model."
RESUME_MODEL = "resume.model."
OPTIMIZER = "optimizer."
PERMUTATION = "trainer.permutation"
STOPPING = "stopping."
# The plugin name of an architecture registered by Python code (zoo.api.IN_PROCESS).
IN_PROCESS = "in-process"

# -- the metadata schema -------------------------------------------------------------------------

_NUMBER = "number"      # int or float, not bool
_OPT = "optional"       # marker: the value may be None


class _Newer:
    """A field files written before it existed lack: checked when present (may be null when
    ``nullable``)."""

    def __init__(self, schema, nullable: bool = False):
        self.schema, self.nullable = schema, nullable


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
                   "clip_norm": (number, opt), "dtype": str,
                   "loss": _Newer((str, opt)), "schedule": _Newer((str, opt)),
                   "metric": _Newer((str, opt))},
        "training": {"batch_size": int, "optimizer": str, "lr": number,
                     "clip_norm": (number, opt), "loss": str,
                     "optimizer_spec": _Newer(str), "optimizer_config": _Newer(dict)},
        "schedule": _Newer({"spec": str, "per": str, "state": dict}, nullable=True),
        "trainer": {"epoch": int, "step": int, "batch_index": int, "elapsed": number,
                    "epoch_loss_sum": number, "epoch_examples": int, "last_loss": number,
                    "rng": dict, "history": list, "epoch_correct": _Newer(int)},
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
    if isinstance(schema, _Newer):
        if value is None and schema.nullable:
            return
        _check_schema(value, schema.schema, where, key)
        return
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            raise CheckpointError(f"{where}: metadata {key or 'root'} must be an object; "
                                  f"received {type(value).__name__}")
        for name, sub in schema.items():
            path = f"{key}.{name}" if key else name
            if name not in value and isinstance(sub, _Newer):
                continue
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
        tensors: every tensor by name.
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
        shape = metadata["data"]["spec"]["input_shape"]
        if not shape or not all(type(n) is int and n >= 1 for n in shape):
            raise CheckpointError(f"{self.where}: metadata 'data.spec.input_shape' must be a "
                                  f"list of positive integers; received {_short(shape)}")
        try:
            from zoo.data.spec import DataSpec

            self.spec = DataSpec.from_dict(metadata["data"]["spec"])
        except (ConfigError, TypeError, ValueError, OverflowError) as exc:
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
    schedule = getattr(run, "schedule", None)
    if schedule is not None:
        # The schedule sets the rate before every step from the base rate; the base is what
        # the optimizer is rebuilt with (a rate annealed to 0 is no valid constructor value).
        opt_state["config"] = {**opt_state["config"], "lr": float(run.lr)}
    tensors.update({OPTIMIZER + k: np.asarray(v) for k, v in opt_state["slots"].items()})
    tstate = trainer.state_dict()
    if tstate["permutation"] is not None:
        tensors[PERMUTATION] = np.asarray(tstate["permutation"], dtype=np.int64)
    tensors.update({STOPPING + k: np.asarray(v) for k, v in run.engine.arrays().items()})

    arch = run.architecture
    record = run.host.records.get(arch.plugin) if arch.plugin else None
    config = run.config.to_dict()
    # The criteria the run used, spelled out (the epoch budget and defaults included), so a
    # resumed run merges new budgets into them (zoo.checkpoints.resume.resumed_stop).
    config["stop"], config["epochs"] = [repr(c) for c in run.engine.criteria], None
    source = config["dataset"]
    if source not in run.host.datasets and os.path.exists(source):
        # A file: resume and evaluate from another folder still find it.
        source = config["dataset"] = os.path.abspath(source)
    metadata = {
        "zoo_version": zoo.__version__,
        "architecture": {"name": arch.name, "options": metadata_json(run.options),
                         "plugin": arch.plugin or "", "plugin_version":
                         record.version if record is not None else None},
        "data": {"spec": run.spec.to_dict(), "dataset": run.dataset.name, "source": source,
                 "classes": metadata_json(run.dataset.classes),
                 "train_examples": len(run.x_train)},
        "config": metadata_json(config),
        "training": {"batch_size": int(run.batch_size), "optimizer": run.optimizer_name,
                     "lr": float(run.lr),
                     "clip_norm": None if run.clip_norm is None else float(run.clip_norm),
                     "loss": run.loss_spec, "optimizer_spec": run.optimizer_spec,
                     "optimizer_config": metadata_json(run.optimizer.get_config())},
        "schedule": None if schedule is None else {
            "spec": repr(schedule), "per": schedule.per,
            "state": metadata_json(schedule.state_dict())},
        "trainer": metadata_json({k: v for k, v in tstate.items() if k != "permutation"}),
        "generators": {name: metadata_json(rng.bit_generator.state)
                       for name, rng in named_generators(model).items()},
        "optimizer": metadata_json({k: v for k, v in opt_state.items() if k != "slots"}),
        "stopping": metadata_json(run.engine.state_dict()),
        "stop_reason": trainer.stop_reason,
        "checkpointing": checkpointing or {"every": None, "best": None},
    }
    return tensors, metadata


def metadata_json(value):
    """Plain JSON for the metadata; NaN and Infinity are kept (a criterion's best starts at inf
    and Python's json reads them back)."""
    return jsonable(value, keep_nonfinite=True)


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
    """What a ``Checkpointer`` of ``run`` captured before early stopping restored its best."""
    from zoo.checkpoints.callback import Checkpointer

    for cb in run.trainer.callbacks:
        if isinstance(cb, Checkpointer) and cb.run is run:
            return cb.live_state
    return None


# -- using a trained model ----------------------------------------------------------------------

def check_data_fits(ck: Checkpoint, spec, dataset, what: str) -> None:
    """The data must have the shape, kind, task and classes the model was built for."""
    saved = ck.spec
    diffs = []
    compared: tuple[str, ...] = ("input_shape", "kind", "task", "output_size")
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


def load_model_state(model, state: dict, where: str) -> None:
    """Load ``state`` into ``model``, refusing another dtype than the model's."""
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


def stored_size_budget(ck: Checkpoint):
    """Build the model of ``ck`` under a budget of the values its model tensors hold: a model
    its metadata describes as larger (``hidden=40000,40000`` re-signed into a 5 kB file) cannot
    match them, and is refused before it is allocated, whatever ``ZOO_MAX_PARAMS`` allows."""
    from zoo.sizing import parameter_budget

    stored = sum(int(np.size(v)) for v in ck.model_state.values())
    return parameter_budget(f"{ck.where}: the model its metadata describes", limit=stored,
                            hint=f"the file stores {stored:,} model values; a larger model "
                                 f"cannot match them")


def load_model(path, *, host=None):
    """The trained model of a checkpoint, for evaluation and prediction.

    Returns ``(model, spec, loss, checkpoint)``: a built ``Sequential`` holding the saved
    weights, the ``DataSpec`` it was trained for, the loss it was trained with, and the
    ``Checkpoint``. The architecture is resolved through the installed plugins by name.
    """
    from zoo.run import DTYPES, build_model

    ck = load_checkpoint(path)
    host = resolve_host(host)
    try:
        architecture = host.architectures.get(ck.arch)
    except ConfigError as exc:
        if ck.metadata["architecture"]["plugin"] == IN_PROCESS:
            # A model built in Python: only code the user runs can rebuild it, never the file.
            raise CheckpointError(
                f"{ck.where}: holds a model built in Python, architecture {ck.arch!r}, which "
                f"this process has not registered; register its builder first "
                f"(zoo.register_architecture({ck.arch!r}, build)) or install a plugin that "
                f"provides it") from None
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
    standardize = ck.config.get("standardize", False)
    if not isinstance(standardize, bool):
        raise CheckpointError(f"{ck.where}: metadata 'config.standardize' must be true or "
                              f"false; received {_short(standardize)}")
    with stored_size_budget(ck):
        model = build_model(architecture, ck.spec, options, standardize=standardize)
        model.build(ck.spec.input_shape, np.random.default_rng(0), dtype=DTYPES[dtype_name])
    load_model_state(model, ck.model_state, ck.where)
    loss_name = ck.metadata["training"]["loss"]
    try:
        from zoo.spec import LOSS, parse_spec

        loss = parse_spec(loss_name, host.losses, LOSS).build(LOSS, loss_name)
    except ConfigError as exc:
        raise CheckpointError(f"{ck.where}: {exc}") from None
    return model, ck.spec, loss, ck

