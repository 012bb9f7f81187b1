"""The library API behind ``zoo train``: resolve names, build, train, evaluate, report.

Example:
    >>> from zoo.run import RunConfig, train
    >>> result = train(RunConfig(arch="mlp", dataset="digits", seed=0))
    >>> result.test["accuracy"]
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

import zoo
from zoo import checks
from zoo import spec as specs
from zoo.data import DEFAULT_DATASET
from zoo.data.spec import TASKS
from zoo.errors import ConfigError
from zoo.plugins.host import resolve_host
from zoo.spec import parse_spec

DEFAULT_EPOCHS = 50
DEFAULT_PATIENCE = 10
DEFAULT_BATCH_SIZE = 64
DEFAULT_OPTIMIZER = "adam"
DEFAULT_LR = 1e-3
DEFAULT_VALIDATION_SPLIT = 0.1
DTYPES = {"float32": np.float32, "float64": np.float64}


@dataclass
class RunConfig:
    """Everything that defines a training run. ``None`` means "the architecture's default".

    Args:
        arch: a registered architecture name.
        dataset: a registered dataset name or a path to user data.
        options: architecture options (strings as typed after ``-o`` or typed values).
        epochs: the epoch budget (``max_epochs``); a top-level ``--stop max_epochs`` spec may
            give it instead, or the same value again (another value is refused).
        stop: ``--stop`` specs; when given they replace the default early stopping.
        validation_split: fraction of the training split held out for validation (``None``:
            the architecture's default, else 0.1).
        optimizer, loss, schedule: specs (``zoo.spec``), e.g. ``"sgd(momentum=0.9)"``,
            ``"focal(gamma=3)"``, ``"cosine(warmup_epochs=5)"``; the dataset may be one too
            (``"spirals(arms=3)"``). None: the architecture's default (the loss: the one the
            architecture names for the task; the schedule: constant).
        metric: the metric early stopping watches (as ``val_<metric>``) and ``zoo compare``
            ranks by, e.g. ``"macro_f1"``; None: the task's default (accuracy for
            classification, loss for regression).
        label_column: data files: the CSV column holding the label, by name or 0-based index
            (default: the last column, and the guess is stated).
        task: data files: ``classify``, ``regress`` or ``reconstruct`` instead of the task
            guessed from the labels.
        standardize: put a ``Standardize`` layer in front of the model, adapted to the
            training split (saved in the checkpoint, applied by evaluate and predict).
    """

    arch: str
    dataset: str = DEFAULT_DATASET
    options: dict = field(default_factory=dict)
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    seed: int = 0
    stop: tuple = ()
    validation_split: float | None = None
    clip_norm: float | None = None
    dtype: str = "float32"
    loss: str | None = None
    schedule: str | None = None
    metric: str | None = None
    label_column: str | int | None = None
    task: str | None = None
    standardize: bool = False

    def validate(self) -> None:
        """Reject bad values before any data is generated or any kernel compiles."""
        for name in ("epochs", "batch_size"):
            if getattr(self, name) is not None:
                checks.positive_int(None, name, getattr(self, name))
        for name in ("lr", "clip_norm"):
            if getattr(self, name) is not None:
                checks.positive_number(None, name, getattr(self, name))
        if self.validation_split is not None:  # None: the architecture's, else 0.1
            checks.fraction(None, "validation_split", self.validation_split)
        checks.one_of(None, "dtype", self.dtype, tuple(DTYPES))
        checks.integer(None, "seed", self.seed, minimum=0)
        for name in ("optimizer", "loss", "schedule", "metric"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{name} must be a spec string such as 'adam' or "
                                  f"'sgd(momentum=0.9)'; received {value!r}")
        if self.task is not None:
            checks.one_of(None, "task", self.task, TASKS)
        if self.label_column is not None and not isinstance(self.label_column, (str, int)):
            raise ConfigError(f"label_column must be a column name or index; received "
                              f"{self.label_column!r}")
        if not isinstance(self.standardize, bool):
            raise ConfigError(f"standardize must be true or false; received "
                              f"{self.standardize!r}")

    def data_options(self) -> dict:
        """The options of a data file this config gives (``label_column``, ``task``)."""
        return {k: v for k, v in (("label_column", self.label_column), ("task", self.task))
                if v is not None}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stop"] = list(self.stop)
        d["options"] = {k: (list(v) if isinstance(v, tuple) else v)
                        for k, v in self.options.items()}
        return d


@dataclass
class RunResult:
    """What a run reports; ``to_dict()`` is the ``zoo train --json`` object."""

    arch: str
    dataset: str
    task: str
    params: int
    epochs: int
    steps: int
    stop_reason: str
    train_loss: float
    val: dict
    test: dict
    train_time_s: float
    compile_time_s: float
    checkpoint: str | None
    seed: int
    options: dict
    optimizer: str
    lr: float
    batch_size: int
    samples_per_s: float
    history: list
    notes: list = field(default_factory=list)
    train: dict = field(default_factory=dict)
    loss: str = ""
    optimizer_config: dict = field(default_factory=dict)
    schedule: str | None = None
    metric: str | None = None
    zoo_version: str = zoo.__version__

    def to_dict(self) -> dict:
        d = asdict(self)
        d["options"] = {k: (list(v) if isinstance(v, tuple) else v)
                        for k, v in self.options.items()}
        return d


class Run:
    """One training run, set up from a ``RunConfig``: the objects the loop and checkpoints use.

    ``Run(config)`` resolves every name and validates every value before anything heavy
    happens; ``fit()`` trains; ``result()`` evaluates and reports. Every name (architecture,
    dataset, optimizer, loss, stopping criteria) is looked up in ``host`` (default: the
    process-wide one), and nowhere else.

    ``model``: a model built in Python to train instead of a new one from the architecture
    (``model.fit``); kept as it is when already built for this data in this dtype, so a
    second ``fit`` trains on.

    ``announce(text)``, when given, hears at once what was guessed about a data file's labels
    (``data_note``), before anything else can fail.
    """

    def __init__(self, config: RunConfig, *, host=None, dataset=None, callbacks=(), model=None,
                 announce=None):
        from zoo.data.load import is_data_file, load_dataset

        config.validate()
        self.host = resolve_host(host)
        self.architecture = self.host.architectures.get(config.arch)
        self.options = self.architecture.resolve_options(config.options)
        self.defaults = defaults = self.architecture.training_defaults(self.options)
        if config.validation_split is None:  # recorded resolved, for checkpoints and stores
            config = replace(config, validation_split=defaults.get(
                "validation_split", DEFAULT_VALIDATION_SPLIT))
        self.config = config
        self.batch_size = config.batch_size or defaults.get("batch_size", DEFAULT_BATCH_SIZE)
        optimizer_spec = parse_spec(config.optimizer or defaults.get("optimizer",
                                                                    DEFAULT_OPTIMIZER),
                                    self.host.optimizers, specs.OPTIMIZER)
        self.optimizer_name = optimizer_spec.name
        self.lr = config.lr or defaults.get("lr", DEFAULT_LR)
        self.clip_norm = config.clip_norm or defaults.get("clip_norm")
        loss_text = config.loss or defaults.get("loss")
        loss_spec = None if loss_text is None else parse_spec(loss_text, self.host.losses,
                                                              specs.LOSS)
        schedule_text = config.schedule or defaults.get("schedule")
        self.schedule = None
        if schedule_text is not None:
            self.schedule = parse_spec(schedule_text, self.host.schedules, specs.SCHEDULE) \
                .build(specs.SCHEDULE, schedule_text)
        stop_criteria = self._parse_stops()

        from_file = dataset is None and is_data_file(config.dataset, host=self.host)
        if dataset is None:
            data_options = config.data_options()
            if data_options and not from_file:
                given = " and ".join(f"--{k.replace('_', '-')}" for k in data_options)
                verb = "apply" if len(data_options) > 1 else "applies"
                raise ConfigError(f"{given} {verb} to data files (.csv, .npz, IDX folders), "
                                  f"not to dataset {config.dataset}")
            dataset = load_dataset(config.dataset, host=self.host, **data_options)
        self.dataset = dataset
        self.data_note = data_guess(dataset, config) if from_file else None
        if self.data_note and announce is not None:
            announce(self.data_note)
        task = self.architecture.task_for(self.dataset.task)
        if self.dataset.kind not in self.architecture.data_kinds:
            raise ConfigError(f"architecture {config.arch} works on "
                              f"{', '.join(self.architecture.data_kinds)} data; dataset "
                              f"{self.dataset.name} is {self.dataset.kind} data")
        self.spec = self.dataset.spec.with_task(task)
        self.x_train, self.y_train, self.x_val, self.y_val = self.dataset.split_validation(
            config.validation_split, seed=0)
        # A batch larger than the training split is that split: say so, allocate no more.
        self.batch_size_asked = self.batch_size
        self.batch_size = min(self.batch_size, len(self.x_train))

        dtype = DTYPES[config.dtype]
        init_rng = np.random.default_rng([config.seed, 1])
        from zoo.sizing import parameter_budget

        if model is None:
            with parameter_budget(f"architecture {self.architecture.name} on "
                                  f"{self.dataset.name}"):
                model = build_model(self.architecture, self.spec, self.options,
                                    standardize=config.standardize)
                model.build(self.spec.input_shape, init_rng, dtype=dtype)
            if config.standardize:  # statistics of the training split only
                model.layers[0].adapt(self.x_train)
        elif not (model.built and tuple(model.input_shape) == tuple(self.spec.input_shape)
                  and model.dtype == dtype):
            model.build(self.spec.input_shape, init_rng, dtype=dtype)
        self.model = model
        if loss_spec is None:
            loss_text = self.architecture.default_loss(self.spec, self.options)
            loss_spec = parse_spec(loss_text, self.host.losses, specs.LOSS)
        self.loss = loss_spec.build(specs.LOSS, loss_text)
        self.loss_spec = str(loss_spec)
        self.optimizer = optimizer_spec.build(specs.OPTIMIZER, config.optimizer or
                                              defaults.get("optimizer", DEFAULT_OPTIMIZER),
                                              lr=self.lr)
        self.optimizer_spec = str(optimizer_spec)
        self.metrics, self.monitor = self._metrics(task, defaults)
        self.engine = self._engine(stop_criteria)
        if self.schedule is not None:
            self.schedule.start(steps_per_epoch=-(-len(self.x_train) // self.batch_size),
                                epochs=self._epoch_budget())
        from zoo.training.loop import Trainer

        self.trainer = Trainer(self.model, self.loss, self.optimizer, self.engine,
                               task=task, batch_size=self.batch_size,
                               rng=np.random.default_rng([config.seed, 2]),
                               clip_norm=self.clip_norm, callbacks=callbacks,
                               schedule=self.schedule, base_lr=self.lr, metrics=self.metrics,
                               shuffle=defaults.get("shuffle", True))
        self.train_time = 0.0
        self.compile_time = 0.0
        self.checkpoint_path: str | None = None
        # Set by zoo.checkpoints: the Checkpointer writing this run, the checkpoint it resumed.
        self.checkpointer: Any = None
        self.resumed_from: Any = None

    def notes(self) -> list[str]:
        """What the run changed of what it was asked (shown in the header and the result)."""
        if self.batch_size_asked > self.batch_size:
            return [f"batch size {self.batch_size_asked:,} clamped to {self.batch_size}: the "
                    f"training split has {len(self.x_train)} examples"]
        return []

    def _metrics(self, task: str, defaults: dict):
        """The per-epoch metrics and the monitor of the default early stopping.

        ``--metric`` wins; else the architecture's ``monitor`` default when this run reports
        it; else the task's: ``val_accuracy`` for classification, ``val_loss`` otherwise.
        """
        from zoo.training.metrics import metrics_for

        registry = self.host.metrics
        chosen = self.config.metric
        if chosen is not None:
            name = chosen[4:] if chosen.startswith(("val_", "test_")) else chosen
            if name != "loss":
                parse_spec(name, registry, specs.METRIC)  # unknown names: one clear line
                metric = registry.get(name)
                if task not in metric.tasks:
                    raise ConfigError(f"--metric {chosen!r}: {metric.name} applies to "
                                      f"{', '.join(metric.tasks)}; this run's task is {task}")
                name = metric.name
            chosen = name
        metrics = metrics_for(task, registry, every_epoch=True,
                              extra=() if chosen is None else (chosen,))
        reported = {"loss", *(m.name for m in metrics)}
        if chosen is not None:
            return metrics, f"val_{chosen}"
        wanted = defaults.get("monitor")
        if isinstance(wanted, str) and wanted.startswith("val_") and wanted[4:] in reported:
            return metrics, wanted
        return metrics, "val_accuracy" if task == "classify" else "val_loss"

    def _epoch_budget(self) -> int:
        """The smallest top-level ``max_epochs`` of the run (there is always one)."""
        budgets = [c.epochs for c in self.engine.criteria if getattr(c, "name", "") ==
                   "max_epochs"]
        return min(budgets) if budgets else (self.config.epochs or DEFAULT_EPOCHS)

    def _parse_stops(self) -> list:
        from zoo.training.stopspec import parse_stop

        return [parse_stop(spec, self.host.criteria) for spec in self.config.stop]

    def _engine(self, stop_criteria):
        from zoo.training.stopping import StoppingEngine

        criteria = self.host.criteria
        defaults = self.defaults
        has_val = len(self.x_val) > 0
        names = {getattr(c, "name", None) for c in stop_criteria}
        epochs = self.config.epochs or defaults.get("epochs", DEFAULT_EPOCHS)
        if self.config.epochs is not None:  # --epochs and --stop max_epochs=M must agree
            given = [c for c in stop_criteria if getattr(c, "name", None) == "max_epochs"]
            if any(getattr(c, "epochs", None) != self.config.epochs for c in given):
                raise ConfigError(f"the epoch budget is given twice: --epochs "
                                  f"{self.config.epochs} and --stop {given[0]!r}; give one")
        steps = defaults.get("steps")
        if steps and self.config.epochs is None and not names & {"max_epochs", "max_steps"}:
            # A fixed step budget (a published protocol) replaces the default epoch budget.
            stop_criteria = [criteria.get("max_steps")(steps), *stop_criteria]
        elif "max_epochs" not in names:
            stop_criteria = [criteria.get("max_epochs")(epochs), *stop_criteria]
        if not self.config.stop and defaults.get("early_stopping", True):
            monitor = self.monitor if has_val else (
                "train_accuracy" if self.monitor == "val_accuracy" else "train_loss")
            stop_criteria.append(criteria.get("early_stopping")(
                monitor=monitor,
                patience=defaults.get("patience", DEFAULT_PATIENCE), restore_best=True))
        return StoppingEngine(stop_criteria)

    def fit(self) -> None:
        from zoo.kernels import compile_seconds

        compiled_before = compile_seconds()
        t0 = time.perf_counter()
        self.trainer.fit(self.x_train, self.y_train, self.x_val, self.y_val)
        wall = time.perf_counter() - t0
        self.compile_time += compile_seconds() - compiled_before
        self.train_time += wall - (compile_seconds() - compiled_before)

    def evaluate(self, split: str, every: bool = False) -> dict:
        """Loss and metrics of the model on ``"val"`` or ``"test"``: the per-epoch metrics,
        or with ``every`` all the registered metrics of the task."""
        from zoo.training.loop import evaluate
        from zoo.training.metrics import metrics_for

        if split == "val":
            if len(self.x_val) == 0:
                return {}
            x, y = self.x_val, self.y_val
        else:
            x, y = self.dataset.x_test, self.dataset.y_test
        metrics = metrics_for(self.spec.task, self.host.metrics) if every else self.metrics
        return evaluate(self.model, self.loss, x.astype(self.model.dtype, copy=False), y,
                        self.spec.task, metrics=metrics)

    def result(self, *, test: bool = True) -> RunResult:
        """Evaluate and report; ``test=False`` leaves the test split out (arrays given to
        ``model.fit`` have none)."""
        trainer = self.trainer
        history = trainer.history.rows
        train_loss = history[-1]["train_loss"] if history else float(trainer.last_loss)
        train = {k[6:]: v for k, v in (history[-1] if history else {}).items()
                 if k.startswith("train_")} or {"loss": float(train_loss)}
        val = self.evaluate("val", every=True)
        test_metrics = self.evaluate("test", every=True) if test else {}
        if self.spec.task == "reconstruct":  # labelled data: the linear probe of the codes
            from zoo.training.probe import add_probe_accuracy

            add_probe_accuracy(self, val, test_metrics, test_split=test)
        return RunResult(
            arch=self.architecture.name, dataset=self.dataset.name, task=self.spec.task,
            params=int(self.model.num_params), epochs=trainer.epoch, steps=trainer.step,
            stop_reason=trainer.stop_reason or "", train_loss=float(train_loss),
            val=val, test=test_metrics,
            train_time_s=round(self.train_time, 4), compile_time_s=round(self.compile_time, 4),
            checkpoint=self.checkpoint_path, seed=self.config.seed, options=dict(self.options),
            optimizer=self.optimizer_name, lr=float(self.lr), batch_size=self.batch_size,
            samples_per_s=round(trainer.step * self.batch_size / max(self.train_time, 1e-9), 1),
            history=history,
            notes=[*self.notes(), *self.engine.notes,
                   *([trainer.schedule_note] if trainer.schedule_note else []),
                   *([trainer.finish_note] if trainer.finish_note else [])],
            train=train, loss=self.loss_spec, optimizer_config=self.optimizer.get_config(),
            schedule=None if self.schedule is None else repr(self.schedule),
            metric=self.config.metric,
        )


def build_model(architecture, spec, options: dict, *, standardize: bool = False):
    """The architecture's (unbuilt) model for ``spec``; with ``standardize``, behind a
    ``Standardize`` layer: ``Sequential([Standardize(), model])``. Training, resuming and
    loading a checkpoint all build through here, so the weights' names always match."""
    model = architecture.build(spec, dict(options))
    if not standardize:
        return model
    if spec.task == "reconstruct":
        raise ConfigError(f"--standardize applies to classify and regress; architecture "
                          f"{architecture.name} reconstructs its raw input")
    from zoo.layers.standardize import Standardize
    from zoo.model import Sequential

    return Sequential([Standardize(), model])


def data_guess(dataset, config: RunConfig) -> str | None:
    """One sentence stating what was guessed about a data file's labels, or None.

    A CSV's label column (the last, unless ``label_column``) and a file's task (from the
    labels, unless ``task``) are guesses; registered datasets declare both.
    """
    info = dataset.info
    guessed = []
    if "label_column" in info and config.label_column is None:
        guessed.append(f"label column {info['label_column']!r} (the last; --label-column "
                       f"NAME|INDEX to choose)")
    if config.task is None and dataset.task != "reconstruct":
        why = {"classify": "integer or text labels", "regress": "decimal labels"}[dataset.task]
        guessed.append(f"task {dataset.task} ({why}; --task to choose)")
    if not guessed:
        return None
    return f"zoo: {info.get('source', config.dataset)}: guessed {', '.join(guessed)}"


def train(config: RunConfig, *, callbacks=(), host=None, dataset=None) -> RunResult:
    """Train one architecture on one dataset and return its result."""
    run = Run(config, host=host, dataset=dataset, callbacks=callbacks)
    run.fit()
    return run.result()
