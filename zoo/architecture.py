"""What an architecture plugin registers: a name, a summary, tasks, options and a builder."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zoo.checks import describe_range, in_range
from zoo.errors import ConfigError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
# The run settings an architecture's ``search`` may cover, and their types.
SEARCHED_SETTINGS: dict = {"lr": float, "batch_size": int}


@dataclass(frozen=True)
class Option:
    """One architecture option: ``-o name=value`` on the command line.

    ``type`` is ``int``, ``float``, ``str``, ``bool`` or ``"ints"`` (a comma-separated
    list of integers such as ``channels=16,32``).

    What a value may be is declared, not hand-checked in ``build``, so every plugin's options
    are refused with the same one line (``cnn: option depth must be a positive integer;
    received depth=0``) and tools can read the ranges:

    Args:
        choices: the values it may take (any type).
        minimum, maximum: inclusive bounds of an ``int`` or ``float`` option, or of each item
            of an ``"ints"`` option; ``exclusive_maximum=True`` leaves ``maximum`` out
            (``dropout``: ``minimum=0, maximum=1, exclusive_maximum=True`` is [0, 1)).
            A ``float`` option is always finite.
        min_items: for ``"ints"``, how many items it needs at least (``1``: not empty).
        log: the option spans orders of magnitude (a learning rate, a width): a
            hyper-parameter search should sample it on a log scale. Needs ``minimum > 0``.
            It changes nothing in parsing.
        search: what ``zoo compare --tune`` tries (``None``: the option keeps its value).
            For an ``int`` or ``float`` option without ``choices``: ``(low, high)``, a range
            inside the valid one, drawn uniformly, or log-uniformly when ``log``. For an
            ``"ints"`` option: ``(low, high)`` the range of one width shared by every item,
            and ``search_items`` the range of the number of items (default: the default's).
            For any other option: the values to pick from, e.g. ``("relu", "tanh")``.
        search_items: ``(fewest, most)`` items an ``"ints"`` option's search draws.
    """

    name: str
    type: Any
    default: Any
    help: str
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    exclusive_maximum: bool = False
    min_items: int = 0
    log: bool = False
    search: tuple | None = None
    search_items: tuple | None = None

    def __post_init__(self):
        ranged = (self.minimum, self.maximum) != (None, None) or self.min_items or self.log
        if ranged and self.type not in (int, float, "ints"):
            raise ValueError(f"option {self.name}: minimum, maximum, min_items and log apply to "
                             f"int, float and \"ints\" options; this one is {self.type_name()}")
        if self.minimum is not None and self.maximum is not None \
                and self.minimum > self.maximum:
            raise ValueError(f"option {self.name}: minimum {self.minimum} is above maximum "
                             f"{self.maximum}")
        if self.log and (self.minimum is None or self.minimum <= 0):
            raise ValueError(f"option {self.name}: log=True needs a minimum > 0; "
                             f"received minimum={self.minimum}")
        if self.search is not None or self.search_items is not None:
            self._check_search()

    def searches_range(self) -> bool:
        """Whether ``search`` is a ``(low, high)`` range rather than values to pick from."""
        return self.type == "ints" or (self.type in (int, float) and self.choices is None)

    def _check_search(self) -> None:
        """A plugin author's mistake in ``search`` fails at import, like a bad range."""
        where = f"option {self.name}: search"
        if not isinstance(self.search, tuple) or not self.search:
            raise ValueError(f"{where} must be a non-empty tuple; received {self.search!r}")
        if self.search_items is not None and self.type != "ints":
            raise ValueError(f"option {self.name}: search_items applies to \"ints\" options")
        try:
            if not self.searches_range():
                for value in self.search:
                    self.parse(value)
                return
            if len(self.search) != 2 or self.search[0] > self.search[1]:
                raise ValueError(f"{where} must be (low, high) with low <= high; "
                                 f"received {self.search!r}")
            for bound in self.search:
                self.parse((bound,) if self.type == "ints" else bound)
        except ConfigError as exc:
            raise ValueError(f"{where} {self.search!r} is not valid: {exc}") from None
        items = self.search_items
        if items is not None and not (
                len(items) == 2 and all(isinstance(n, int) for n in items)
                and max(self.min_items, 0) <= items[0] <= items[1]):
            raise ValueError(f"option {self.name}: search_items must be (fewest, most) with "
                             f"{self.min_items} <= fewest <= most; received {items!r}")

    def parse(self, value):
        """Convert a string (or an already typed value) to this option's type, or raise."""
        try:
            if self.type == "ints":
                if isinstance(value, str):
                    parsed = tuple(int(v) for v in value.split(",") if v.strip())
                elif isinstance(value, int) and not isinstance(value, bool):
                    parsed = (value,)  # hidden=64 from Python means hidden=(64,)
                else:
                    parsed = tuple(int(v) for v in value)
            elif self.type is bool:
                if isinstance(value, bool):
                    parsed = value
                elif str(value).lower() in _TRUE:
                    parsed = True
                elif str(value).lower() in _FALSE:
                    parsed = False
                else:
                    raise ValueError
            elif self.type is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            else:
                parsed = self.type(value)
        except (TypeError, ValueError, OverflowError):
            kind = "comma-separated integers" if self.type == "ints" else self.type.__name__
            raise ConfigError(f"option {self.name} expects {kind}; received {value!r}") from None
        if self.choices is not None and parsed not in self.choices:
            self._refuse(parsed, "one of " + ", ".join(map(str, self.choices)))
        if self.type == "ints":
            if len(parsed) < self.min_items or not all(self._fits(v) for v in parsed):
                self._refuse(parsed, self.expected())
        elif self.type in (int, float):
            finite = self.type is int or math.isfinite(parsed)
            if not finite or not self._fits(parsed):
                self._refuse(parsed, self.expected())
        return parsed

    def expected(self) -> str:
        """What a value must be, in words: ``"in [0, 1)"``, ``"a positive integer"``..."""
        if self.type == "ints":
            text = describe_range("integer", self.minimum, self.maximum, plural=True,
                                  exclusive_maximum=self.exclusive_maximum)
            return f"one or more {text}" if self.min_items else f"{text} (or empty)"
        if self.type in (int, float):
            return describe_range("integer" if self.type is int else "number", self.minimum,
                                  self.maximum, exclusive_maximum=self.exclusive_maximum)
        return "one of " + ", ".join(map(str, self.choices)) if self.choices else self.type_name()

    def _fits(self, v) -> bool:
        return in_range(v, self.minimum, self.maximum, self.exclusive_maximum)

    def _refuse(self, parsed, expected: str):
        shown = ",".join(map(str, parsed)) if isinstance(parsed, tuple) else parsed
        raise ConfigError(f"option {self.name} must be {expected}; "
                          f"received {self.name}={shown!r}")

    def type_name(self) -> str:
        return "ints" if self.type == "ints" else getattr(self.type, "__name__", str(self.type))


@dataclass(frozen=True)
class Architecture:
    """An architecture as a plugin registers it.

    Args:
        name: what users type after ``--arch``.
        summary: one line for ``zoo list``.
        tasks: the tasks it supports, a subset of classify / regress / reconstruct.
        build: ``build(spec: DataSpec, options: dict) -> Layer``; returns an unbuilt model whose
            output fits ``spec.output_size`` (logits for classify). The host builds it.
        options: the options ``-o key=value`` accepts, with defaults.
        loss: optional ``loss(spec, options) -> str``, the loss to train with by default (a
            registered name or spec such as ``"huber(delta=0.5)"``); by default softmax
            cross-entropy for classify and MSE otherwise. A run's ``--loss`` overrides it.
        data_kinds: the kinds of data it can be built for.
        defaults: training defaults it trains well with when the user gives none, any of
            ``optimizer`` (a spec: ``"sgd(momentum=0.9)"``), ``lr``, ``batch_size``,
            ``epochs``, ``patience``, ``clip_norm``, ``loss`` and ``schedule`` (specs) and
            ``monitor`` (the metric the default early stopping watches; used when the run
            reports it, else the task's: ``val_accuracy`` for classification, ``val_loss``
            otherwise),
            ``steps`` (a fixed number of optimizer steps instead of the epoch budget),
            ``early_stopping`` (``False``: train the whole budget, keep the last weights),
            ``validation_split`` (the share held out when the user gives none; 0.1 if unset)
            and ``shuffle`` (``False``: every epoch walks the training examples in their
            stored order instead of a fresh random one; ``True`` if unset).
        presets: training defaults that come with a value of the ``preset`` option, laid over
            ``defaults`` when that preset is chosen: ``{"mnist1d": {"lr": 1e-2, ...}}``. A
            preset that reproduces a published model trains the way its authors did.
        search: the run settings ``zoo compare --tune`` searches besides the options'
            ``search``: ``{"lr": (low, high), "batch_size": (low, high)}``, each drawn
            log-uniformly. Without ``"lr"``, the learning rate is still searched, over one
            decade either side of the architecture's default (``zoo.compare.tune``).
    """

    name: str
    summary: str
    tasks: tuple
    build: Callable
    options: tuple = ()
    loss: Callable | None = None
    data_kinds: tuple = ("vector", "sequence", "image")
    defaults: dict = field(default_factory=dict)
    presets: dict = field(default_factory=dict)
    search: dict = field(default_factory=dict)
    plugin: str = field(default="", compare=False)

    def __post_init__(self):
        for name, span in self.search.items():
            kind = SEARCHED_SETTINGS.get(name)
            if kind is None:
                raise ValueError(f"architecture {self.name}: search covers the run settings "
                                 f"{', '.join(SEARCHED_SETTINGS)}; received {name!r}")
            if not (isinstance(span, tuple) and len(span) == 2
                    and all(isinstance(v, kind) and not isinstance(v, bool) for v in span)
                    and 0 < span[0] <= span[1] and math.isfinite(span[1])):
                raise ValueError(f"architecture {self.name}: search[{name!r}] must be "
                                 f"(low, high) with 0 < low <= high ({kind.__name__}s); "
                                 f"received {span!r}")

    def option(self, name: str) -> Option:
        for opt in self.options:
            if opt.name == name:
                return opt
        known = ", ".join(o.name for o in self.options) or "none"
        raise ConfigError(f"architecture {self.name} has no option {name!r}; its options: {known}")

    def resolve_options(self, given: dict | None = None) -> dict:
        """Defaults overlaid with ``given`` (strings or typed values), each checked."""
        resolved = {opt.name: opt.default for opt in self.options}
        for key, value in (given or {}).items():
            option = self.option(key)
            try:
                resolved[key] = option.parse(value)
            except ConfigError as exc:
                raise ConfigError(f"{self.name}: {exc}") from None
        return resolved

    def training_defaults(self, options: dict | None = None) -> dict:
        """``defaults``, overlaid with those of the chosen ``preset`` option if it has any."""
        preset = (options or {}).get("preset")
        return {**self.defaults, **self.presets.get(preset, {})}

    def task_for(self, data_task: str) -> str:
        """The task this architecture performs on data labelled for ``data_task``."""
        if data_task in self.tasks:
            return data_task
        if "reconstruct" in self.tasks:
            return "reconstruct"
        raise ConfigError(
            f"architecture {self.name} supports {', '.join(self.tasks)}; "
            f"the dataset's task is {data_task}"
        )

    def default_loss(self, spec, options: dict) -> str:
        if self.loss is not None:
            return self.loss(spec, options)
        return "softmax_cross_entropy" if spec.task == "classify" else "mse"
